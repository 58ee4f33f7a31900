"""`grserve bench llm`: output tokens/s and TTFT/TPOT percentiles of the LLM engine against transformers
`generate` (and vLLM's offline `LLM.generate`, when its venv is given) on the same model and prompts, as
ratios from one run.

The model is a synthetic one (`grserve synth`: a LlamaForCausalLM with a word-level tokenizer), used as
a plain LLM: token-id prompts in, greedy continuations out. grserve gets all requests at once and
streams; TTFT is the time to each request's first token, TPOT the mean gap between its later tokens.
transformers runs the same prompts as one batched `generate` (equal lengths: no padding); its TTFT is
that of a 1-token `generate` of the batch and its TPOT the rest of the time over the remaining tokens."""
from __future__ import annotations

import asyncio
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

from grserve.bench.workloads import synthetic_model_dir
from grserve.engine.llm_engine import LLMEngine, LLMEngineConfig
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


def _hf(model_dir: Path, prompts: list[list[int]], max_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)

    def generate(n):
        started = time.perf_counter()
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0)
        return out, time.perf_counter() - started

    _, first = generate(1)
    out, total = generate(max_tokens)
    tpot = (total - first) / (max_tokens - 1)
    return {"output_tokens_per_s": len(prompts) * max_tokens / total, "seconds": total,
            "ttft": {k: first * 1000 for k in ("p50_ms", "p90_ms", "p99_ms")},
            "tpot": {k: tpot * 1000 for k in ("p50_ms", "p90_ms", "p99_ms")},
            "outputs": out[:, ids.shape[1]:].tolist()}


def _vllm(model_dir: Path, prompts: list[list[int]], max_tokens: int, python: str) -> dict:
    from grserve.bench.baselines import VLLMBeamSearch
    vllm = VLLMBeamSearch(model_dir, python=python)
    vllm.start()
    try:
        vllm.generate(prompts[:2], 4)  # warm-up
        outputs, seconds = vllm.generate(prompts, max_tokens)
    finally:
        vllm.close()
    return {"output_tokens_per_s": sum(len(o) for o in outputs) / seconds, "seconds": seconds,
            "ttft": None, "tpot": None, "outputs": outputs,
            "note": "offline LLM.generate of the whole batch, timed inside the worker; no per-token times"}


def run_llm_bench(requests: int = 16, prompt_len: int = 256, max_tokens: int = 64, layers: int = 8,
                  hidden: int = 512, seed: int = 0, vllm_python: str | None = None) -> dict:
    model_dir = synthetic_model_dir(items=1000, layers=layers, hidden=hidden)
    runs = {}
    for overlap in (False, True):  # the engine as configured for this device, and with the other overlap setting
        engine = LLMEngine(model_dir, LLMEngineConfig(max_num_batched_tokens=1024, overlap=overlap))
        vocab = engine.model.config.vocab_size
        prompts = [[1] + [random.Random(seed + i).randrange(3, vocab) for _ in range(prompt_len - 1)]
                   for i in range(requests)]
        try:
            asyncio.run(_grserve(engine, prompts[:2], 4))  # warm-up
            runs[overlap] = asyncio.run(_grserve(engine, prompts, max_tokens))
        finally:
            engine.shutdown()
    default = LLMEngineConfig().overlap
    ours, other = runs[default], runs[not default]
    hf = _hf(model_dir, prompts, max_tokens)
    vllm = _vllm(model_dir, prompts, max_tokens, vllm_python) if vllm_python else None
    ours_out, other_out, hf_out = ours.pop("outputs"), other.pop("outputs"), hf.pop("outputs")
    agree = sum(a == b for a, b in zip(ours_out, hf_out)) / requests
    vllm_agree = sum(a == b for a, b in zip(ours_out, vllm.pop("outputs"))) / requests if vllm else None
    return {"kind": "llm", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
            "versions": {"torch": torch.__version__},
            "workload": {"model": f"synthetic llama {layers}x{hidden}", "requests": requests, "prompt_len": prompt_len,
                         "max_tokens": max_tokens, "greedy": True},
            "grserve": {**ours, "overlap": default}, "grserve_other_overlap": {**other, "overlap": not default},
            "ratio_tokens_per_s_overlap_on_vs_off": (runs[True]["output_tokens_per_s"]
                                                     / runs[False]["output_tokens_per_s"]),
            "overlap_agreement": sum(a == b for a, b in zip(ours_out, other_out)) / requests,
            "hf": hf, "vllm": vllm, "greedy_agreement": agree, "greedy_agreement_vllm": vllm_agree,
            "ratio_tokens_per_s_vs_hf": ours["output_tokens_per_s"] / hf["output_tokens_per_s"],
            "ratio_tokens_per_s_vs_vllm": ours["output_tokens_per_s"] / vllm["output_tokens_per_s"] if vllm else None}

