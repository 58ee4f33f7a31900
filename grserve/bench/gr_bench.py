"""`grserve bench gr`: grserve against HF transformers and vLLM on the same weights and requests, with
each xGR technique switched off in turn; open-loop latency at a P99 SLO, peak throughput, agreement of the
answers, and MFU. Writes one JSON per run; `report.py` turns it into plots and a markdown table."""
from __future__ import annotations

import asyncio
import functools
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from grserve.bench.flops import live_rows, peak_matmul_flops, request_flops
from grserve.bench.loadgen import saturate, summarize
from grserve.bench.machine import machine_info
from grserve.model.precision import native_bf16
from grserve.bench.sweep import SWEEP, Turns, TurnOptions, measure_peaks, qps_at_slo, sweep_rates
from grserve.bench.systems import ABLATIONS, GrserveSystem, QueuedBaseline
from grserve.bench.workloads import Workload, movielens_workload, synthetic_model_dir, synthetic_workload
from grserve.bundle import GRBundle
from grserve.engine.compute_threads import run_compute, threads_kept_for_compute
from grserve.engine.gr.config import step_target_ms


@dataclass
class BenchOptions:
    slo_ms: float = 200.0
    quick: bool = False
    vllm_python: str | None = None
    out_dir: str = "benchmarks/results"
    workloads: str = "ab"
    beam_width: int = 128  # workload (a)'s
    repeats: int = 3  # peaks per system and runs per swept rate, taking turns
    duration_s: float = 6.0  # of arrivals per swept run
    min_requests: int = 30  # per swept run (low rates run longer)
    peak_requests: int = 64  # grserve's peak; also its warm-up after each (re)start
    baseline_requests: int = 32  # HF's and vLLM's peak
    agreement_requests: int = 32  # prompts whose answers every system gives, compared with grserve's
    max_batch: int = 16  # prompts per vLLM beam_search call
    # prompts per HF generate: batched it measured slower per request (0.54 vs 0.71 requests/s at 16 vs 1,
    # benchmarks/results/hf-batching-*.json): its beam reorder copies every prompt's W-fold cache each step
    hf_batch: int = 1
    timeout_s: float = 300.0
    fractions: tuple[float, ...] = SWEEP
    flops_seconds: float = 10.0  # time cap of each peak FLOP/s measurement

    def turns(self) -> TurnOptions:
        return TurnOptions(self.slo_ms, self.repeats, self.duration_s, self.min_requests, self.timeout_s,
                           tuple(self.fractions))


def _sender(system, workload: Workload):
    prompts = workload.prompts

    def send(i: int):
        return system.answer(prompts[i % len(prompts)])
    return send


def _first_turn(workload: Workload, opts: BenchOptions, valid: set):
    """What a system answers on the agreement prompts (all sent at once) and how long a lone request takes
    (the median of three, one after another)."""
    def record(system) -> dict:
        async def answers():
            return await asyncio.gather(*(system.answer(p) for p in workload.prompts[:opts.agreement_requests]))
        got = asyncio.run(answers())
        # a lone request that failed counts as endless: the system is then not swept, and the record says why
        alone = [summarize(asyncio.run(saturate(_sender(system, workload), 1, opts.timeout_s)))["p50_ms"]
                 for _ in range(3)]
        return {"single_request_ms": statistics.median(math.inf if a is None else a for a in alone),
                "single_request_failures": alone.count(None), "agreement_requests": len(got),
                "answers": [[list(t) for t in a] for a in got],
                "invalid_share": sum(t not in valid for a in got for t in a) / max(1, sum(len(a) for a in got))}
    return record


def measure(group: list, workload: Workload, opts: BenchOptions, requests: dict[str, int],
            warmup: dict[str, int], sweep: bool, valid: set) -> dict:
    """Peaks of every system, then the sweep of every system whose lone request meets the SLO (a slower one
    gets 0 without a sweep); the systems take turns throughout."""
    turns = Turns({s.name: _sender(s, workload) for s in group}, warmup, desc=workload.name)
    try:
        out = measure_peaks(group, turns, requests, opts.turns(), _first_turn(workload, opts, valid))
        swept = [s for s in group if sweep and out[s.name]["single_request_ms"] <= opts.slo_ms]
        points = sweep_rates(swept, turns, {s.name: out[s.name]["peak"]["throughput"] for s in swept},
                             opts.turns())
    finally:
        turns.close()
    for system in group:
        m = out[system.name]
        m["sweep"] = points.get(system.name, [])
        m["qps_at_slo"] = qps_at_slo(m["sweep"])
        if system not in swept:
            alone = m["single_request_ms"]
            m["note"] = (f"{m['single_request_failures']} of 3 lone requests failed: max rate at the SLO is 0"
                         if m["single_request_failures"] else
                         f"one request alone takes {alone:.0f} ms > SLO {opts.slo_ms:.0f} ms: max rate at the "
                         f"SLO is 0") if alone > opts.slo_ms else "not swept"
    return out


def _baselines(workload: Workload, opts: BenchOptions) -> list:
    from grserve.bench.baselines import HFBeamSearch, VLLMBeamSearch
    # Each takes up to its batch of waiting prompts per call, as a thin serving wrapper would batch them.
    systems = [QueuedBaseline(HFBeamSearch(workload.model_dir), workload.beam_width, workload.top_n,
                              max_batch=opts.hf_batch)]
    if opts.vllm_python and not opts.quick:
        systems.append(QueuedBaseline(VLLMBeamSearch(workload.model_dir, python=opts.vllm_python),
                                      workload.beam_width, workload.top_n, max_batch=opts.max_batch))
    return systems


def run_workload(workload: Workload, opts: BenchOptions, systems: dict, baselines: bool, sweep: bool,
                 grserve_requests: int) -> dict:
    bundle = GRBundle.load(workload.model_dir)
    codes = bundle.table.codes
    valid = {tuple(c) for c in codes.tolist()}
    rows = live_rows(codes, workload.beam_width)
    result = {"name": workload.name, "model_dir": str(workload.model_dir), "beam_width": workload.beam_width,
              "top_n": workload.top_n, "prompt_len": workload.prompt_len,
              "model": {k: getattr(bundle.model.config, k) for k in ("architecture", "hidden_size", "num_hidden_layers",
                                                                     "num_attention_heads", "num_key_value_heads",
                                                                     "intermediate_size", "vocab_size")},
              "catalog_size": len(bundle.table), "live_decode_rows": rows,
              # MFU counts live rows only: with 64 first-level codes, at most 64 of W=128 rows decode usefully
              "flops_per_request": request_flops(bundle.model.config, workload.prompt_len, rows),
              "systems": {}}
    # Steps fit the SLO as the server fits them to its default deadline (step_target_ms).
    ours = [GrserveSystem(name, bundle, workload.beam_width, workload.top_n, switches, step_target_ms(opts.slo_ms))
            for name, switches in systems.items()]
    theirs = _baselines(workload, opts) if baselines else []
    requests = {s.name: grserve_requests for s in ours} | {s.name: opts.baseline_requests for s in theirs}
    warmup = {s.name: grserve_requests for s in ours}
    result["systems"] = measure(ours + theirs, workload, opts, requests, warmup, sweep, valid)
    reference = [[tuple(t) for t in a] for a in result["systems"]["grserve"]["answers"]]
    for m in result["systems"].values():
        pairs = list(zip([[tuple(t) for t in a] for a in m["answers"]], reference))
        m["agreement"] = sum(len(set(a[:len(r)]) & set(r)) / max(1, len(r)) for a, r in pairs) / len(pairs)
    return result


def _plan(opts: BenchOptions) -> list:
    """(workload, grserve variants, with baselines, with a sweep, grserve's peak requests) per workload."""
    plan = []
    if "a" in opts.workloads:
        a = movielens_workload(beam_width=opts.beam_width)
        quick = {name: ABLATIONS[name] for name in ("grserve", "grserve +compile")}
        plan.append((a, ABLATIONS if not opts.quick else quick, True, True, opts.peak_requests))
    if "b" in opts.workloads and not opts.quick:
        model_dir = synthetic_model_dir()
        for P in (256, 1024, 2048):
            for W in (128, 256, 512):
                first = (P, W) == (256, 128)
                # ablations also at the widest beam: where a technique does not pay at W=128, W=512 shows
                # whether it does at scale
                ablate = first or (P, W) == (256, 512)
                plan.append((synthetic_workload(model_dir, P, W, requests=16),
                             ABLATIONS if ablate else {"grserve": {}}, first, first, 8))
    return plan


# On workload (b) HF answers about one request in 15 s here: its peak and agreement use this many requests
# (each system's record says how many it got).
SLOW_BASELINE_REQUESTS = 4


def run_bench(opts: BenchOptions) -> dict:
    """Every system's forwards run on the compute thread, this thread, which only orchestrates, on one torch
    thread: an OpenMP team of its own, even idle, slows the compute thread's (`engine/compute_threads.py`)."""
    with threads_kept_for_compute():
        return _run_bench(opts)


def _run_bench(opts: BenchOptions) -> dict:
    started = time.perf_counter()
    run = {"kind": "gr", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": asdict(opts),
           "machine": machine_info(), "versions": {"torch": torch.__version__}, "workloads": []}
    plan = _plan(opts)
    for workload, systems, baselines, sweep, requests in tqdm(plan, desc="bench gr", unit="workload"):
        wopts = opts if workload.name.startswith("a") else replace(
            opts, baseline_requests=min(opts.baseline_requests, SLOW_BASELINE_REQUESTS),
            agreement_requests=min(opts.agreement_requests, SLOW_BASELINE_REQUESTS))
        run["workloads"].append(run_workload(workload, wopts, systems, baselines, sweep, requests))
    # Measured last: its large matmuls change how this process's allocator serves the engines afterwards
    # (grserve measured about 30% slower for the rest of a process that had run them first). bf16 only where
    # the CPU has it natively: elsewhere one 2048³ bf16 matmul took 106 s.
    cap = opts.flops_seconds
    run["peak_flops"] = {"fp32": run_compute(functools.partial(peak_matmul_flops, torch.float32, max_seconds=cap)),
                         "bf16": run_compute(functools.partial(peak_matmul_flops, torch.bfloat16, max_seconds=cap))
                         if native_bf16() else None}
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
    ours = systems["grserve"]
    at_slo = [p for p in ours["sweep"] if p["offered_rate"] == ours["qps_at_slo"]]
    return {"throughput": {"grserve": g, "hf": h, "vllm": v},
            "qps_at_slo": {n: get(n, "slo") for n in ("grserve", "hf", "vllm")},
            "goodput_at_slo": at_slo[0]["goodput"] if at_slo else 0.0,
            "single_request_ms": {n: s["single_request_ms"] for n, s in systems.items()
                                  if n in ("grserve", "hf", "vllm")},
            "ratio_vs_hf": g / h if g and h else None, "ratio_vs_vllm": g / v if g and v else None}


def save(run: dict, out_dir: str, suffix: str = "") -> Path:
    """`<kind>-<time><suffix>.json` under `out_dir` (every bench run's record)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run['kind']}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}.json"
    path.write_text(json.dumps(run, indent=1) + "\n")
    return path
