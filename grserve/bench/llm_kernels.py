"""`grserve bench llm-kernels`: the two CPU choices of the LLM decode step, each against what it replaced,
on the shapes of `grserve bench llm`'s synthetic Llama.

- Linear weight layout: every linear of every layer once (as a decode step streams them, so weights come
  from memory, not cache), row-major [out, in] against input-major (`model/weight_layout.py`) and against
  oneDNN's packed weights (`model/packed_linear.py`), by rows.
- Decode attention, one layer: the context gathered from the paged store and SDPA over keys expanded to the
  query heads (before), against keys read in place from the dense mirror with each KV head's query heads
  grouped as its query rows (`kv/llm/decode_mirror.py`, `kv/paged_kv.decode_attention`).

Both in `dtype`: float32, or bfloat16 (where the CPU has native bf16; elsewhere slow, and measured as such)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from grserve.bench.attention import median_ms
from grserve.kv.llm.paged_kv import decode_attention
from grserve.model.packed_linear import PackedLinear


def _linear(weight: torch.Tensor) -> torch.nn.Linear:
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data = weight
    return linear


def _linear_layout(layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int,
                   rows: tuple[int, ...], repeats: int, g: torch.Generator, dtype: torch.dtype) -> list[dict]:
    shapes = [(heads * head_dim, hidden), (kv_heads * head_dim, hidden), (kv_heads * head_dim, hidden),
              (hidden, heads * head_dim), (intermediate, hidden), (intermediate, hidden), (hidden, intermediate)]
    row_major = [[torch.randn(shape, generator=g).to(dtype) for shape in shapes] for _ in range(layers)]
    input_major = [[w.t().contiguous().t() for w in layer] for layer in row_major]
    onednn = torch.backends.mkldnn.is_available()
    packed = [[PackedLinear(_linear(w)) for w in layer] for layer in row_major] if onednn else None
    out = []
    for n in rows:
        x = {k: torch.randn(n, k, generator=g).to(dtype) for k in {s[1] for s in shapes}}

        def step(weights):
            return [F.linear(x[w.shape[1]], w) for layer in weights for w in layer]
        before, after = (median_ms(lambda w=w: step(w), repeats, torch.device("cpu")) for w in (row_major, input_major))
        same = all(torch.equal(a, b) for a, b in zip(step(row_major), step(input_major)))
        row = {"rows": n, "row_major_ms": before, "input_major_ms": after, "speedup": before / after,
               "bitwise_equal": same}
        if packed is not None:
            def packed_step():
                return [p(x[p.in_features]) for layer in packed for p in layer]
            row["onednn_packed_ms"] = median_ms(packed_step, repeats, torch.device("cpu"))
            row["packed_speedup_vs_input_major"] = after / row["onednn_packed_ms"]
            row["packed_max_rel_diff"] = max(((a - b).float().abs().max() / b.float().abs().max()).item()
                                             for a, b in zip(packed_step(), step(row_major)))
        out.append(row)
    return out


def _decode_attention_bench(seqs: int, context: int, heads: int, kv_heads: int, head_dim: int, block_size: int,
                            repeats: int, g: torch.Generator, dtype: torch.dtype) -> dict:
    blocks_per_seq = -(-context // block_size)
    num_blocks = 4 * seqs * blocks_per_seq
    store = torch.randn(2, num_blocks * block_size, kv_heads, head_dim, generator=g).to(dtype)
    tables = torch.randperm(num_blocks, generator=g)[:seqs * blocks_per_seq].view(seqs, blocks_per_seq)
    slots = (tables[:, :, None] * block_size + torch.arange(block_size)).view(seqs, -1)[:, :context]
    sees = torch.ones(seqs, 1, 1, context, dtype=torch.bool)
    q = torch.randn(seqs, heads, head_dim, generator=g).to(dtype)

    def gather() -> torch.Tensor:  # [2, seqs, kv_heads, context, head_dim]
        return store.index_select(1, slots.reshape(-1)).view(2, seqs, context, kv_heads,
                                                             head_dim).permute(0, 1, 3, 2, 4)
    # The mirror holds the same keys, in rows with room to grow (as it does: its length doubles).
    mirror = torch.zeros(2, seqs, kv_heads, 2 * context, head_dim, dtype=dtype)
    mirror[..., :context, :] = gather()
    mirror = mirror[..., :context, :]

    def gathered():
        keys, values = gather()
        return F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=sees, enable_gqa=True)[:, :, 0]

    def mirrored():
        return decode_attention(q, mirror[0], mirror[1], sees)
    cpu = torch.device("cpu")
    before, after = median_ms(gathered, repeats, cpu), median_ms(mirrored, repeats, cpu)
    return {"sequences": seqs, "context": context, "gathered_expanded_ms": before, "mirrored_grouped_ms": after,
            "speedup": before / after, "max_abs_diff": (gathered() - mirrored()).float().abs().max().item()}


@torch.inference_mode()
def run_llm_kernel_bench(layers: int = 8, hidden: int = 512, intermediate: int = 1536, heads: int = 8,
                         kv_heads: int = 2, seqs: int = 16, context: int = 320, repeats: int = 20,
                         seed: int = 0, dtype: str = "float32") -> dict:
    g = torch.Generator().manual_seed(seed)
    head_dim = hidden // heads
    dt = getattr(torch, dtype)
    return {"model": f"synthetic llama {layers}x{hidden} (ffn {intermediate}, {heads} heads, {kv_heads} kv heads)",
            "threads": torch.get_num_threads(), "dtype": dtype,
            "linear_layout": _linear_layout(layers, hidden, intermediate, heads, kv_heads, head_dim,
                                            (1, 16, 64, 1024), repeats, g, dt),
            "decode_attention": _decode_attention_bench(seqs, context, heads, kv_heads, head_dim, 16, repeats, g,
                                                        dt)}
