"""Attention microbenchmark: staged attention against the expanded (HF) path, one decode round of one request.

Times one layer of the second decode round (each beam row has 2 decode tokens) for a request of `prompt_len`
prompt tokens and `beam_width` beams. The expanded path is timed with the repeat of the prompt KV per beam and
the concatenation with the decode KV, since HF pays that copy every round (its cache reorder and append); the
copy alone and the SDPA alone on already-expanded tensors are reported too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from grserve.ops.staged_attention import expand_prompt_kv, expanded_attention, staged_attention


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    # One untimed call first: allocator growth and kernel selection are not the steady state.
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@torch.inference_mode()
def run_attention_bench(prompt_len: int = 1024, beam_width: int = 256, num_heads: int = 4, num_kv_heads: int = 2,
                        head_dim: int = 32, repeats: int = 10, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu", seed: int = 0) -> dict[str, float | int | str]:
    """Median milliseconds per layer: staged_ms, expanded_ms (copy included), expand_ms (the copy alone),
    expanded_sdpa_ms (SDPA on expanded tensors); two ratios, speedup = expanded_ms / staged_ms (what HF pays,
    copy included) and speedup_kernels = expanded_sdpa_ms / staged_ms (the attention kernels alone); and
    max_abs_diff between the two outputs as a check that both compute the same attention."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    W, steps = beam_width, 2

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=dtype)

    q = randn(W, num_heads, head_dim)
    k_s, v_s = randn(1, num_kv_heads, prompt_len, head_dim), randn(1, num_kv_heads, prompt_len, head_dim)
    k_u, v_u = randn(W, num_kv_heads, steps, head_dim), randn(W, num_kv_heads, steps, head_dim)
    valid = torch.ones(1, prompt_len, dtype=torch.bool, device=device)
    inputs = (q, k_s, v_s, valid, k_u, v_u)

    staged_ms = median_ms(lambda: staged_attention(*inputs), repeats, device)
    expanded_ms = median_ms(lambda: expanded_attention(*inputs), repeats, device)
    expand_ms = median_ms(lambda: expand_prompt_kv(k_s, v_s, valid, k_u, v_u), repeats, device)
    k, v, mask = expand_prompt_kv(k_s, v_s, valid, k_u, v_u)
    sdpa_ms = median_ms(lambda: F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask,
                                                                 enable_gqa=True), repeats, device)
    diff = (staged_attention(*inputs).float() - expanded_attention(*inputs).float()).abs().max().item()
    return {"prompt_len": prompt_len, "beam_width": beam_width, "num_heads": num_heads,
            "num_kv_heads": num_kv_heads, "head_dim": head_dim, "dtype": str(dtype).removeprefix("torch."),
            "device": str(device), "threads": torch.get_num_threads(), "staged_ms": staged_ms,
            "expanded_ms": expanded_ms, "expand_ms": expand_ms, "expanded_sdpa_ms": sdpa_ms,
            "speedup": expanded_ms / staged_ms, "speedup_kernels": sdpa_ms / staged_ms, "max_abs_diff": diff}
