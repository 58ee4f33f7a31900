"""The physical limit: the machine's peak matmul FLOP/s, and the FLOPs a GR request needs, so achieved
throughput can be reported as a fraction of the peak (MFU)."""
from __future__ import annotations

import time

import torch

from grserve.model.config import ModelConfig


def peak_matmul_flops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                      max_seconds: float = 10.0) -> float:
    """Best FLOP/s of an n x n x n matmul over `repeats` (after a warm-up), on this process's threads. A
    256³ matmul first estimates the cost; n is halved until the whole measurement fits in `max_seconds`
    (a 2048³ bf16 matmul took 106 s on a CPU without native bf16)."""
    probe = torch.randn(256, 256, dtype=dtype)
    started = time.perf_counter()
    probe @ probe
    per_256 = time.perf_counter() - started
    while n > 256 and per_256 * (n / 256) ** 3 * (repeats + 1) > max_seconds:
        n //= 2
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best


def linear_flops(config: ModelConfig, tokens: int, logit_rows: int) -> float:
    """Projections and MLP of `tokens` tokens through every layer, plus the lm_head for `logit_rows`."""
    d, f, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    return 2 * L * (d * q + 2 * d * kv + q * d + 3 * d * f) * tokens + 2 * d * config.vocab_size * logit_rows


def attention_flops(config: ModelConfig, query_key_pairs: float) -> float:
    """QK^T and PV over `query_key_pairs` (query, key) pairs in every layer and head."""
    return 2 * 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * query_key_pairs


def live_rows(codes, beam_width: int) -> list[int]:
    """Beam rows that can be alive in each decode round: no more than the catalog's distinct SID prefixes of
    that length (with 64 first-level codes, at most 64 of W=128 rows enter the first decode round)."""
    return [min(beam_width, len({tuple(c[:level]) for c in codes.tolist()})) for level in range(1, codes.shape[1])]


def request_flops(config: ModelConfig, prompt_len: int, rows: list[int]) -> float:
    """Model FLOPs of one GR request done the xGR way: the prompt prefilled once (causal: P²/2 pairs;
    logits at its last position only), then one decode round per entry of `rows` with that many beam rows,
    each attending to the prompt and its own decode tokens."""
    pairs = prompt_len * prompt_len / 2 + sum(r * (prompt_len + i + 1) for i, r in enumerate(rows))
    return linear_flops(config, prompt_len + sum(rows), 1 + sum(rows)) + attention_flops(config, pairs)
