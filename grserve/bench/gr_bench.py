"""`grserve bench gr`: grserve against HF transformers and vLLM on the same weights and requests, with
each xGR technique switched off in turn; open-loop latency at a P99 SLO, peak throughput, agreement of the
answers, and MFU. Writes one JSON per run; `report.py` turns it into plots and a markdown table."""
from __future__ import annotations

import asyncio
import json
import math
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from grserve.bench.flops import peak_matmul_flops, request_flops
from grserve.bench.loadgen import open_loop, saturate, summarize
from grserve.bench.systems import ABLATIONS, GrserveSystem, QueuedBaseline
from grserve.bench.workloads import Workload, movielens_workload, synthetic_model_dir, synthetic_workload
from grserve.bundle import GRBundle

SWEEP = (0.3, 0.5, 0.7, 0.8, 0.9, 1.0)


@dataclass
class BenchOptions:
    slo_ms: float = 200.0
    quick: bool = False
    vllm_python: str | None = None
    out_dir: str = "benchmarks/results"
    duration_s: float = 6.0  # of arrivals per swept rate
    workloads: str = "ab"
    baseline_requests: int = 2
    agreement_requests: int = 8
    timeout_s: float = 120.0
    repeats: int = 3  # peaks per system, taking turns; the median counts


def _prepare(system, workload: Workload, opts: BenchOptions, valid: set) -> dict:
    """What a system answers (for agreement and validity) and how long one request alone takes."""
    prompts = workload.prompts
    # the slow baselines answer fewer agreement prompts: they cost seconds each
    count = opts.agreement_requests if isinstance(system, GrserveSystem) else opts.baseline_requests

    async def agreement_answers():
        return await asyncio.gather(*(system.answer(p) for p in prompts[:count]))

    answers = asyncio.run(agreement_answers())
    alone = summarize(asyncio.run(saturate(_sender(system, workload), 1, opts.timeout_s)))
    return {"single_request_ms": alone["p50_ms"], "agreement_requests": len(answers),
            "answers": [[list(t) for t in a] for a in answers],
            "invalid_share": sum(t not in valid for a in answers for t in a) / max(1, sum(len(a) for a in answers)),
            "peaks": [], "sweep": [], "qps_at_slo": 0.0}


def _sender(system, workload: Workload):
    prompts = workload.prompts

    def send(i: int):
        return system.answer(prompts[i % len(prompts)])
    return send


@contextmanager
def _alive(system, workload: Workload, warmup: int):
    """The system started for one turn and closed after it. Engines alive side by side measured much slower
    here (one GREngine's peak fell by a third with four idle others in the process), so only one lives at a
    time. A fresh grserve first answers `warmup` requests at once: its scheduler learns the step cost from
    the steps it runs, and until it has seen large ones it cuts batches short (a cold engine measured 65
    requests/s, the same engine warm 95)."""
    system.start()
    try:
        if isinstance(system, GrserveSystem):
            asyncio.run(saturate(_sender(system, workload), warmup))
        yield system
    finally:
        system.close()


def _take_turns(group: list, workload: Workload, opts: BenchOptions, requests: dict, sweep: bool, valid: set,
                progress) -> dict:
    """Measures a group of systems taking turns: each peak (all requests at once) `opts.repeats` times,
    system after system, and each swept rate system after system. This machine's speed drifts by tens of
    percent over minutes; turns put every system under the same drift, and each system's peak is its
    median."""
    out = {}
    for turn in range(opts.repeats):
        for system in group:
            with _alive(system, workload, requests[system.name]):
                if turn == 0:
                    out[system.name] = _prepare(system, workload, opts, valid)
                out[system.name]["peaks"].append(summarize(asyncio.run(
                    saturate(_sender(system, workload), requests[system.name], opts.timeout_s))))
    for m in out.values():
        m["peak"] = sorted(m["peaks"], key=lambda p: p["throughput"])[len(m["peaks"]) // 2]
    swept = [s for s in group if sweep and isinstance(s, GrserveSystem)
             and out[s.name]["single_request_ms"] is not None and out[s.name]["single_request_ms"] <= opts.slo_ms]
    for fraction in SWEEP if swept else ():
        for system in swept:
            rate = fraction * out[system.name]["peak"]["throughput"]
            with _alive(system, workload, requests[system.name]):
                samples = asyncio.run(open_loop(_sender(system, workload), rate,
                                                max(4, math.ceil(rate * opts.duration_s)), opts.duration_s,
                                                timeout=opts.timeout_s))
            point = summarize(samples, rate)
            out[system.name]["sweep"].append(point)
            if point["ok"] == point["requests"] and point["p99_ms"] <= opts.slo_ms:
                out[system.name]["qps_at_slo"] = max(out[system.name]["qps_at_slo"], rate)
    for system in group:
        if system not in swept:
            alone = out[system.name]["single_request_ms"]
            out[system.name]["note"] = (f"one request alone takes {alone:.0f} ms > SLO {opts.slo_ms:.0f} ms: max "
                                        f"rate at the SLO is 0") if alone and alone > opts.slo_ms else "not swept"
        progress.update(1)
    return out


def _baselines(workload: Workload, opts: BenchOptions) -> list:
    from grserve.bench.baselines import HFBeamSearch, VLLMBeamSearch
    systems = [QueuedBaseline(HFBeamSearch(workload.model_dir), workload.beam_width, workload.top_n)]
    if opts.vllm_python and not opts.quick:
        systems.append(QueuedBaseline(VLLMBeamSearch(workload.model_dir, python=opts.vllm_python),
                                      workload.beam_width, workload.top_n, max_batch=16))
    return systems


def run_workload(workload: Workload, opts: BenchOptions, systems: dict, baselines: bool, sweep: bool,
                 grserve_requests: int, progress) -> dict:
    bundle = GRBundle.load(workload.model_dir)
    valid = {tuple(c) for c in bundle.table.codes.tolist()}
    result = {"name": workload.name, "model_dir": str(workload.model_dir), "beam_width": workload.beam_width,
              "top_n": workload.top_n, "prompt_len": workload.prompt_len,
              "model": {k: getattr(bundle.model.config, k) for k in ("architecture", "hidden_size", "num_hidden_layers",
                                                                     "num_attention_heads", "num_key_value_heads",
                                                                     "intermediate_size", "vocab_size")},
              "catalog_size": len(bundle.table),
              "flops_per_request": request_flops(bundle.model.config, workload.prompt_len, workload.beam_width),
              "systems": {}}
    # Steps of at most half the SLO: a request then waits at most about one step before its own.
    ours = [GrserveSystem(name, bundle, workload.beam_width, workload.top_n, switches, opts.slo_ms / 2)
            for name, switches in systems.items()]
    theirs = _baselines(workload, opts) if baselines else []
    requests = {s.name: grserve_requests for s in ours} | {s.name: opts.baseline_requests for s in theirs}
    progress.set_postfix_str(workload.name)
    result["systems"].update(_take_turns(ours + theirs, workload, opts, requests, sweep, valid, progress))
    reference = [[tuple(t) for t in a] for a in result["systems"]["grserve"]["answers"]]
    for m in result["systems"].values():
        pairs = list(zip([[tuple(t) for t in a] for a in m["answers"]], reference))
        m["agreement"] = sum(len(set(a[:len(r)]) & set(r)) / max(1, len(r)) for a, r in pairs) / len(pairs)
    return result


def run_bench(opts: BenchOptions) -> dict:
    started = time.perf_counter()
    run = {"kind": "gr", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": asdict(opts),
           "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpus": torch.get_num_threads(), "python": platform.python_version()},
           "versions": {"torch": torch.__version__},
           "workloads": []}
    plan = []
    if "a" in opts.workloads:
        a = movielens_workload()
        plan.append((a, ABLATIONS if not opts.quick else {"grserve": {}}, True, True, 64))
    if "b" in opts.workloads and not opts.quick:
        model_dir = synthetic_model_dir()
        for P in (256, 1024, 2048):
            for W in (128, 256, 512):
                first = (P, W) == (256, 128)
                plan.append((synthetic_workload(model_dir, P, W, requests=16),
                             ABLATIONS if first else {"grserve": {}}, first, first, 8))
    baselines = 2 if opts.vllm_python and not opts.quick else 1
    total = sum(len(s) + (baselines if b else 0) for _, s, b, _, _ in plan)
    with tqdm(total=total, desc="bench gr") as progress:
        for workload, systems, baselines, sweep, requests in plan:
            run["workloads"].append(run_workload(workload, opts, systems, baselines, sweep, requests, progress))
    # Measured last: its large matmuls change how this process's allocator serves the engines afterwards
    # (grserve measured about 30% slower for the rest of a process that had run them first).
    run["peak_flops"] = {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)}
    for w in run["workloads"]:
        for s in w["systems"].values():
            s["mfu"] = s["peak"]["throughput"] * w["flops_per_request"] / run["peak_flops"]["fp32"]
    run["seconds"] = round(time.perf_counter() - started, 1)
    run["headline"] = headline(run)
    return run


def headline(run: dict) -> dict:
    """Peak throughput and max QPS at the SLO of grserve, hf and vllm on the first workload, with ratios."""
    systems = run["workloads"][0]["systems"]

    def get(name, key):
        s = systems.get(name)
        return None if s is None else (s["peak"]["throughput"] if key == "peak" else s["qps_at_slo"])

    g, h, v = (get(n, "peak") for n in ("grserve", "hf", "vllm"))
    return {"throughput": {"grserve": g, "hf": h, "vllm": v},
            "qps_at_slo": {n: get(n, "slo") for n in ("grserve", "hf", "vllm")},
            "ratio_vs_hf": g / h if g and h else None, "ratio_vs_vllm": g / v if g and v else None}


def save(run: dict, out_dir: str, suffix: str = "") -> Path:
    """`<kind>-<time><suffix>.json` under `out_dir` (every bench run's record)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run['kind']}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}.json"
    path.write_text(json.dumps(run, indent=1) + "\n")
    return path
