"""`grserve bench gr`: grserve against HF transformers and vLLM on the same weights and requests, with
each xGR technique switched off in turn; open-loop latency at a P99 SLO, peak throughput, agreement of the
answers, and MFU. Writes one JSON per run; `report.py` turns it into plots and a markdown table."""
from __future__ import annotations

import asyncio
import json
import math
import platform
import time
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


def _measure(system, workload: Workload, opts: BenchOptions, saturate_requests: int, sweep: bool,
             reference: list | None, valid: set) -> dict:
    prompts = workload.prompts

    def send(i: int):
        return system.answer(prompts[i % len(prompts)])

    # the slow baselines answer fewer agreement prompts: they cost seconds each
    count = opts.agreement_requests if isinstance(system, GrserveSystem) else opts.baseline_requests

    async def agreement_answers():
        return await asyncio.gather(*(system.answer(p) for p in prompts[:count]))

    answers = asyncio.run(agreement_answers())
    alone = summarize(asyncio.run(saturate(send, 1, opts.timeout_s)))
    # a baseline's peak reuses the agreement answers' cost: its worker runs one call at a time anyway
    peak = summarize(asyncio.run(saturate(send, saturate_requests, opts.timeout_s)))
    out = {"peak": peak, "single_request_ms": alone["p50_ms"], "agreement_requests": len(answers), "answers": [[list(t) for t in a] for a in answers],
           "invalid_share": sum(t not in valid for a in answers for t in a) / max(1, sum(len(a) for a in answers))}
    if reference is not None:
        pairs = list(zip(answers, reference))
        out["agreement"] = sum(len(set(a[:len(r)]) & set(r)) / max(1, len(r)) for a, r in pairs) / len(pairs)
    out["sweep"], out["qps_at_slo"] = [], 0.0
    if not sweep or alone["p50_ms"] is None or alone["p50_ms"] > opts.slo_ms:
        out["note"] = (f"one request alone takes {alone['p50_ms']:.0f} ms > SLO {opts.slo_ms:.0f} ms: max rate at "
                       f"the SLO is 0") if alone["p50_ms"] and alone["p50_ms"] > opts.slo_ms else "not swept"
        return out
    for fraction in SWEEP:
        rate = fraction * peak["throughput"]
        samples = asyncio.run(open_loop(send, rate, max(4, math.ceil(rate * opts.duration_s)), opts.duration_s,
                                        timeout=opts.timeout_s))
        point = summarize(samples, rate)
        out["sweep"].append(point)
        if point["ok"] == point["requests"] and point["p99_ms"] <= opts.slo_ms:
            out["qps_at_slo"] = max(out["qps_at_slo"], rate)
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
    reference = None
    # Steps of at most half the SLO: a request then waits at most about one step before its own.
    candidates = [GrserveSystem(name, bundle, workload.beam_width, workload.top_n, switches, opts.slo_ms / 2)
                  for name, switches in systems.items()]
    candidates += _baselines(workload, opts) if baselines else []
    for system in candidates:
        progress.set_postfix_str(f"{workload.name} / {system.name}")
        started = time.perf_counter()
        system.start()
        try:
            grserve_kind = isinstance(system, GrserveSystem)
            m = _measure(system, workload, opts, grserve_requests if grserve_kind else opts.baseline_requests,
                         sweep and grserve_kind, reference, valid)
        finally:
            system.close()
        m["seconds"] = round(time.perf_counter() - started, 1)
        if system.name == "grserve":
            reference = [[tuple(t) for t in a] for a in m["answers"]]
            m["agreement"] = 1.0
        result["systems"][system.name] = m
        progress.update(1)
    return result


def run_bench(opts: BenchOptions) -> dict:
    started = time.perf_counter()
    run = {"kind": "gr", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": asdict(opts),
           "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpus": torch.get_num_threads(), "python": platform.python_version()},
           "versions": {"torch": torch.__version__},
           "peak_flops": {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)},
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
    total = sum(len(s) + (2 if b else 0) for _, s, b, _, _ in plan)
    with tqdm(total=total, desc="bench gr") as progress:
        for workload, systems, baselines, sweep, requests in plan:
            run["workloads"].append(run_workload(workload, opts, systems, baselines, sweep, requests, progress))
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
