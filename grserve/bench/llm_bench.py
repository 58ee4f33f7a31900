"""`grserve bench llm`: output tokens/s and TTFT/TPOT percentiles of the LLM engine against transformers
`generate` (and vLLM's offline `LLM.generate`, when its venv is given) on the same model and prompts, as
ratios from one run; grserve both with and without overlap, with and without compiled layers, with and
without oneDNN-packed linears, and with int8 linears (its greedy agreement with grserve's float32 output is
their quality cost).

The model is a synthetic one (`grserve synth`: a LlamaForCausalLM with a word-level tokenizer), used as
a plain LLM: token-id prompts in, greedy continuations out. grserve gets all requests at once and
streams; TTFT is the time to each request's first token, TPOT the mean gap between its later tokens.
transformers runs the same prompts as one batched `generate` (equal lengths: no padding); its TTFT is
that of a 1-token `generate` of the batch and its TPOT the rest of the time over the remaining tokens."""
from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from grserve.bench.machine import machine_info
from grserve.bench.workloads import synthetic_model_dir
from grserve.engine.compute_threads import run_compute, threads_kept_for_compute
from grserve.engine.llm.config import LLMEngineConfig
from grserve.engine.llm.engine import LLMEngine
from grserve.sampling.params import SamplingParams


def _percentiles(values: list[float]) -> dict:
    return {f"p{q}_ms": float(np.percentile(values, q)) * 1000 for q in (50, 90, 99)}


async def _grserve(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> dict:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)

    async def one(prompt):
        sent, times, tokens = time.perf_counter(), [], []
        async for delta in engine.generate(prompt, params):
            times.append(time.perf_counter())
            tokens += delta.token_ids
        return sent, times, tokens

    started = time.perf_counter()
    runs = await asyncio.gather(*(one(p) for p in prompts))
    wall = time.perf_counter() - started
    ttft = [t[0] - s for s, t, _ in runs]
    tpot = [(t[-1] - t[0]) / (len(t) - 1) for _, t, _ in runs if len(t) > 1]
    return {"output_tokens_per_s": sum(len(k) for *_, k in runs) / wall, "seconds": wall,
            "ttft": _percentiles(ttft), "tpot": _percentiles(tpot), "outputs": [k for *_, k in runs]}


class _HF:
    """transformers on the compute thread, as grserve's forwards: this thread keeps one torch thread
    (`engine/compute_threads.py`), so that no idle team of its own slows the compute thread's."""

    def __init__(self, model_dir: Path, dtype: str):
        from transformers import AutoModelForCausalLM
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).eval()

    def _generate(self, ids: torch.Tensor, n: int):
        started = time.perf_counter()
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)
        return out, time.perf_counter() - started

    def close(self) -> None:
        self.model = None

    def run(self, prompts: list[list[int]], max_tokens: int) -> dict:
        return run_compute(self._run, prompts, max_tokens)

    def _run(self, prompts: list[list[int]], max_tokens: int) -> dict:
        ids = torch.tensor(prompts)
        _, first = self._generate(ids, 1)
        out, total = self._generate(ids, max_tokens)
        tpot = (total - first) / (max_tokens - 1)
        return {"output_tokens_per_s": len(prompts) * max_tokens / total, "seconds": total,
                "ttft": {k: first * 1000 for k in ("p50_ms", "p90_ms", "p99_ms")},
                "tpot": {k: tpot * 1000 for k in ("p50_ms", "p90_ms", "p99_ms")},
                "outputs": out[:, ids.shape[1]:].tolist()}


class _VLLM:
    def __init__(self, model_dir: Path, python: str, dtype: str):
        from grserve.bench.baselines import VLLMBeamSearch
        self.worker = VLLMBeamSearch(model_dir, python=python, dtype=dtype)
        self.worker.start()

    def run(self, prompts: list[list[int]], max_tokens: int) -> dict:
        outputs, seconds = self.worker.generate(prompts, max_tokens)
        return {"output_tokens_per_s": sum(len(o) for o in outputs) / seconds, "seconds": seconds,
                "ttft": None, "tpot": None, "outputs": outputs,
                "note": "offline LLM.generate of the whole batch, timed inside the worker; no per-token times"}

    def close(self) -> None:
        self.worker.close()


class _Grserve:
    def __init__(self, model_dir: Path, dtype: str, **switches):
        self.engine = LLMEngine(model_dir, LLMEngineConfig(max_num_batched_tokens=1024, dtype=dtype, **switches))

    def run(self, prompts: list[list[int]], max_tokens: int) -> dict:
        return asyncio.run(_grserve(self.engine, prompts, max_tokens))

    def close(self) -> None:
        self.engine.shutdown()


def run_llm_bench(requests: int = 16, prompt_len: int = 256, max_tokens: int = 64, layers: int = 8,
                  hidden: int = 512, seed: int = 0, vllm_python: str | None = None, repeats: int = 3,
                  dtype: str = "float32") -> dict:
    """Each system runs `repeats` batches, the systems taking turns on each batch, and is reported by its
    median run: this machine's speed drifts by tens of percent over minutes, and turns put every system
    under the same drift. Every batch has prompts of its own, so no run finds them in a prefix cache. A
    system is built for its turn, warmed up, and closed after it, so that only one is alive at a time: with
    three idle grserve engines beside it, one ran ~15% slower on an AVX2 EPYC
    (`benchmarks/results/llm-idle-engines-20261204.json`). vLLM takes its turns after the others, kept alive
    across them: its worker process takes a minute to start. Every system computes in `dtype`, on this
    process's torch threads; this thread, which only orchestrates, keeps one (`engine/compute_threads.py`)."""
    with threads_kept_for_compute():
        return _run(requests, prompt_len, max_tokens, layers, hidden, seed, vllm_python, repeats, dtype)


def _systems(model_dir: Path, dtype: str, default: LLMEngineConfig) -> dict:
    """A maker of each system by name: grserve with its defaults, each switch of it flipped, transformers."""
    makers = {"grserve": functools.partial(_Grserve, model_dir, dtype),
              "grserve_other_overlap": functools.partial(_Grserve, model_dir, dtype, overlap=not default.overlap),
              "grserve_other_compile": functools.partial(_Grserve, model_dir, dtype, compile=not default.compile),
              "grserve_other_packed": functools.partial(_Grserve, model_dir, dtype,
                                                        packed_linears=not default.packed_linears),
              "hf": functools.partial(_HF, model_dir, dtype)}
    if dtype == "float32":  # int8 linears take float32 activations
        makers["grserve_int8"] = functools.partial(_Grserve, model_dir, dtype, quantization="int8")
    return makers


def _take_turns(group: dict, batches: list, max_tokens: int, runs: dict, restart: bool) -> None:
    """Every batch after the first (the warm-up's) through each system of `group` in turn, into `runs`;
    with `restart`, each system is built for its turn and closed after it."""
    live: dict = {}
    try:
        for batch in batches[1:]:
            for name, make in group.items():
                if name not in live:
                    live[name] = make()
                    live[name].run(batches[0][:2], 4)  # warm-up
                runs[name].append(live[name].run(batch, max_tokens))
                if restart:
                    live.pop(name).close()
    finally:
        for system in live.values():
            system.close()


def _pairs(runs: dict, name: str) -> list[tuple[list[int], list[int]]]:
    """(grserve's output, `name`'s output) for every prompt of every run."""
    return [(a, b) for ours, theirs in zip(runs["grserve"], runs[name])
            for a, b in zip(ours["outputs"], theirs["outputs"])]


def _agreement(runs: dict, name: str) -> float:
    both = _pairs(runs, name)
    return sum(a == b for a, b in both) / len(both)


def _prefix_agreement(runs: dict, name: str) -> float:
    """Mean share of each output that equals grserve's up to the first token that differs."""
    shares = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))) / max(len(a), 1)
              for a, b in _pairs(runs, name)]
    return sum(shares) / len(shares)


def _run(requests: int, prompt_len: int, max_tokens: int, layers: int, hidden: int, seed: int,
         vllm_python: str | None, repeats: int, dtype: str) -> dict:
    model_dir = synthetic_model_dir(items=1000, layers=layers, hidden=hidden)
    default = LLMEngineConfig()
    makers = _systems(model_dir, dtype, default)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    batches = [[[1] + [random.Random(seed + r * requests + i).randrange(3, vocab) for _ in range(prompt_len - 1)]
                for i in range(requests)] for r in range(repeats + 1)]  # the first one warms up
    runs: dict[str, list[dict]] = {name: [] for name in list(makers) + (["vllm"] if vllm_python else [])}
    _take_turns(makers, batches, max_tokens, runs, restart=True)
    if vllm_python:
        _take_turns({"vllm": functools.partial(_VLLM, model_dir, vllm_python, dtype)}, batches, max_tokens, runs,
                    restart=False)
    agree = {name: _agreement(runs, name) for name in runs if name != "grserve"}
    int8_prefix = _prefix_agreement(runs, "grserve_int8") if "grserve_int8" in runs else None
    result = {name: sorted(r, key=lambda x: x["output_tokens_per_s"])[len(r) // 2] for name, r in runs.items()}
    for name, r in result.items():
        r["all_tokens_per_s"] = [x["output_tokens_per_s"] for x in runs[name]]
        r.pop("outputs")
    workload = {"model": f"synthetic llama {layers}x{hidden}", "requests": requests, "prompt_len": prompt_len,
                "max_tokens": max_tokens, "greedy": True, "repeats": repeats, "dtype": dtype}
    return _report(result, agree, int8_prefix, workload, default)


def _report(result: dict, agree: dict, int8_prefix: float | None, workload: dict,
            default: LLMEngineConfig) -> dict:
    """The result file: each system's median run, grserve's switches (`default`'s) on against off, the ratios to
    the baselines."""
    ours, hf, vllm = result["grserve"], result["hf"], result.get("vllm")
    other, other_compile = result["grserve_other_overlap"], result["grserve_other_compile"]
    other_packed = result["grserve_other_packed"]

    def on_vs_off(switch: bool, flipped: dict) -> float:
        on, off = (ours, flipped) if switch else (flipped, ours)
        return on["output_tokens_per_s"] / off["output_tokens_per_s"]
    return {"kind": "llm", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "versions": {"torch": torch.__version__},
            "workload": workload,
            "grserve": {**ours, "overlap": default.overlap, "compile": default.compile},
            "grserve_other_overlap": {**other, "overlap": not default.overlap},
            "ratio_tokens_per_s_overlap_on_vs_off": on_vs_off(default.overlap, other),
            "overlap_agreement": agree["grserve_other_overlap"],
            "grserve_other_compile": {**other_compile, "compile": not default.compile},
            "ratio_tokens_per_s_compile_on_vs_off": on_vs_off(default.compile, other_compile),
            "compile_agreement": agree["grserve_other_compile"],
            "grserve_other_packed": {**other_packed, "packed_linears": not default.packed_linears},
            "ratio_tokens_per_s_packed_linears_on_vs_off": on_vs_off(default.packed_linears, other_packed),
            "packed_linears_agreement": agree["grserve_other_packed"],
            "grserve_int8": result.get("grserve_int8"),
            "int8_agreement": agree.get("grserve_int8"),
            "int8_prefix_agreement": int8_prefix,
            "ratio_tokens_per_s_int8_vs_grserve": (result["grserve_int8"]["output_tokens_per_s"]
                                                   / ours["output_tokens_per_s"] if "grserve_int8" in result else None),
            "hf": hf, "vllm": vllm, "greedy_agreement": agree["hf"], "greedy_agreement_vllm": agree.get("vllm"),
            "ratio_tokens_per_s_vs_hf": ours["output_tokens_per_s"] / hf["output_tokens_per_s"],
            "ratio_tokens_per_s_vs_vllm": ours["output_tokens_per_s"] / vllm["output_tokens_per_s"] if vllm else None}
