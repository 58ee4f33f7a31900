"""Plots and a markdown summary generated from a `grserve bench gr` JSON file."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _fmt(x, digits=2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def plot_latency(workload: dict, slo_ms: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in workload["systems"].items():
        points = [p for p in s["sweep"] if p["p99_ms"] != float("inf")]
        if points:
            rates, p99 = [p["offered_rate"] for p in points], [p["p99_ms"] for p in points]
            spread = [[m - p["p99_ms_min"] for m, p in zip(p99, points)], [p["p99_ms_max"] - m for m, p in zip(p99, points)]]
            ax.errorbar(rates, p99, yerr=spread, marker="o", capsize=3, label=f"{name} (median, min–max)")
        elif s.get("single_request_ms"):
            ax.scatter([s["peak"]["throughput"]], [s["peak"]["p99_ms"]], marker="x", label=f"{name} (saturated)")
    ax.axhline(slo_ms, color="red", linestyle="--", label=f"SLO {slo_ms:.0f} ms")
    ax.set(xlabel="offered load (requests/s)", ylabel="P99 latency (ms)", yscale="log", title=workload["name"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ablation(workload: dict, path: Path) -> None:
    names = [n for n in workload["systems"] if n.startswith("grserve")]
    values = [workload["systems"][n]["peak"]["throughput"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(names, values, color=["tab:green" if n == "grserve" else "tab:gray" for n in names])
    ax.set(xlabel="peak throughput (requests/s)", title=f"ablations: {workload['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine(run: dict) -> str:
    m, peak = run["machine"], run["peak_flops"]
    bf16 = f"{peak['bf16'] / 1e9:.0f} GFLOP/s" if peak.get("bf16") else "not measured (no native bf16)"
    return (f"Machine: {m['cpu']} ({', '.join(m['isa']) or 'no ISA flags read'}), {m['cores']} cores, "
            f"{m['threads']} threads; torch {m['torch']}; peak matmul fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, "
            f"bf16 {bf16}.")


def _sweep_lines(name: str, s: dict) -> list[str]:
    lines = [f"### {name}: max QPS at the SLO {_fmt(s['qps_at_slo'])} req/s", "",
             "| offered (req/s) | median P99 (ms) | P99 min–max | median P50 | goodput (req/s) | answered | passed |",
             "|---|---|---|---|---|---|---|"]
    for p in s["sweep"]:
        lines.append(f"| {p['offered_rate']:.2f} | {_fmt(p['p99_ms'], 0)} | {_fmt(p['p99_ms_min'], 0)}–"
                     f"{_fmt(p['p99_ms_max'], 0)} | {_fmt(p['p50_ms'], 0)} | {_fmt(p['goodput'])} | "
                     f"{'all' if p['all_answered'] else 'not all'} | {'yes' if p['passed'] else 'no'} |")
    return lines + [""]


def markdown(run: dict) -> str:
    slo, opts = run["options"]["slo_ms"], run["options"]
    lines = [f"# grserve bench gr — {run['started']}", "", _machine(run), "",
             f"SLO: P99 ≤ {slo:.0f} ms. Max QPS at the SLO: the highest swept rate at which it and every lower "
             f"rate answered every request with a median P99 (over {opts['repeats']} runs) within the SLO. "
             f"Run took {run['seconds']:.0f} s.", ""]
    h = run["headline"]
    lines += ["## Headline (first workload)", "",
              "| | grserve | hf | vllm |", "|---|---|---|---|",
              "| peak throughput (req/s) | " + " | ".join(_fmt(h["throughput"][k]) for k in ("grserve", "hf", "vllm")) + " |",
              "| max QPS at P99 ≤ SLO | " + " | ".join(_fmt(h["qps_at_slo"][k]) for k in ("grserve", "hf", "vllm")) + " |",
              "", f"grserve / hf: **{_fmt(h['ratio_vs_hf'], 1)}x**; grserve / vllm: **{_fmt(h['ratio_vs_vllm'], 1)}x** "
              f"(peak throughput, measured in this run). grserve's goodput at its max QPS at the SLO: "
              f"{_fmt(h.get('goodput_at_slo'))} answers within the SLO per second.", ""]
    for w in run["workloads"]:
        lines += [f"## {w['name']}", "",
                  f"catalog {w['catalog_size']:,} items; model {w['model']['num_hidden_layers']} layers × hidden "
                  f"{w['model']['hidden_size']}; prompt {w['prompt_len']} tokens; beam {w['beam_width']} (live decode "
                  f"rows {w.get('live_decode_rows')}); top {w['top_n']}; {w['flops_per_request'] / 1e9:.2f} GFLOP per "
                  "request over live rows.", "",
                  "| system | peak req/s (median) | peaks | peak requests | one request (ms) | max QPS at SLO | agreement "
                  "(prompts) | invalid | MFU |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, s in w["systems"].items():
            peaks = ", ".join(f"{p['throughput']:.2f}" for p in s["peaks"])
            lines.append(f"| {name} | {_fmt(s['peak']['throughput'])} | {peaks} | {s['peak_requests']} | "
                         f"{_fmt(s['single_request_ms'], 0)} | {_fmt(s['qps_at_slo'])} | {_fmt(s.get('agreement'))} "
                         f"({s['agreement_requests']}) | {_fmt(s['invalid_share'])} | {_fmt(100 * s['mfu'], 1)}% |")
        notes = [f"- {n}: {s['note']}" for n, s in w["systems"].items() if s.get("note") and s["note"] != "not swept"]
        lines += [""] + notes + ([""] if notes else [])
        for name, s in w["systems"].items():
            if s["sweep"]:
                lines += _sweep_lines(name, s)
    return "\n".join(lines) + "\n"


def write_report(json_path: Path) -> list[Path]:
    run = json.loads(Path(json_path).read_text())
    out, stem = Path(json_path).parent, Path(json_path).stem
    written = [out / f"{stem}.md"]
    written[0].write_text(markdown(run))
    for i, w in enumerate(run["workloads"]):
        if any(s["sweep"] for s in w["systems"].values()):
            written.append(out / f"{stem}-latency-{i}.png")
            plot_latency(w, run["options"]["slo_ms"], written[-1])
        if sum(n.startswith("grserve") for n in w["systems"]) > 1:
            written.append(out / f"{stem}-ablation-{i}.png")
            plot_ablation(w, written[-1])
    return written
