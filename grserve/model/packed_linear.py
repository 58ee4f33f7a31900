"""Linear layers on oneDNN's prepacked weights, for the LLM engine on the CPU in float32, and in bf16 where the
CPU has native bf16.

A decode step multiplies a few rows by every weight of the model, and there the GEMM's own overhead and
the way it walks the weight decide the step: oneDNN, with the weight reordered once into its blocked
layout, ran a 16-row decode step of the bench's model 1.19x faster than PyTorch's `F.linear` over the same
weights, paired step by step in one engine (`benchmarks/results/llm-packed-linear-20261204.json`); vLLM's
CPU backend takes the same path. oneDNN builds a primitive for every row count it meets (~0.6 ms each,
cached), so rows are padded up to a bucket (`padded_rows`): a server meets a few dozen row counts, not
thousands, and never rebuilds after warm-up. In bf16, on an AVX-512 BF16 EPYC, a decode step's 16-row GEMMs
ran 1.40x faster packed than through `F.linear`, and 1,024 rows at the same speed
(`benchmarks/results/llm-kernels-20261207-225934.json`; in float32 there, 1.99x and 1.44x:
`llm-kernels-20261207-230155.json`).

The packed weight is an opaque oneDNN tensor: `PackedLinear` holds it in place of the module's parameter,
so the model keeps no second copy; such a model serves, it is not saved or moved."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from grserve.model.precision import native_bf16

log = logging.getLogger(__name__)

# The row count oneDNN is told to expect when it picks the packed layout; measured equal or faster than
# smaller hints at 1 to 1,024 rows on AVX2 (`llm-packed-linear-20261204.json`).
_LAYOUT_ROWS = 1024


def padded_rows(rows: int) -> int:
    """`rows` itself up to 16 (a lone decode row must not pay for eight); above, rounded up to a multiple of
    a sixteenth of the power of two at or above it: under 12.5% padding, 8 buckets an octave."""
    step = 1 << max((rows - 1).bit_length() - 4, 0)
    return -(-rows // step) * step


class PackedLinear(nn.Module):
    """`nn.Linear` without bias over a oneDNN-packed copy of its weight; the plain weight is dropped. Given
    several linears of one input, it is all of them as one GEMM, their outputs side by side."""

    def __init__(self, *linears: nn.Linear):
        super().__init__()
        weight = torch.cat([linear.weight.detach() for linear in linears])
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), _LAYOUT_ROWS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        n = rows.shape[0]
        padded = padded_rows(n)
        if padded != n:
            rows = F.pad(rows, (0, 0, 0, padded - n))
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, None, "none", [], "")
        return out[:n].view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, onednn packed"


# How far a packed product may be from `F.linear`'s, relative to its largest entry: float32's rounding, or
# one bf16 rounding of the output (both accumulate in float32).
_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def _packable(linear: nn.Module, embeddings: set[int]) -> bool:
    if type(linear) is not nn.Linear or linear.bias is not None or linear.weight.device.type != "cpu":
        return False
    dtype = linear.weight.dtype
    fast = dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16())
    return fast and id(linear.weight) not in embeddings


def _works(linear: nn.Linear) -> bool:
    """Whether this build of PyTorch packs and multiplies a weight like `linear`'s, to its dtype's tolerance."""
    try:
        probe = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(0)).to(linear.weight.dtype)
        got, want = PackedLinear(linear)(probe).float(), F.linear(probe, linear.weight).float()
        return bool((got - want).abs().max() <= _TOLERANCE[linear.weight.dtype] * want.abs().max())
    except RuntimeError as e:  # no oneDNN in this build, or one without this path
        log.warning("oneDNN packed linears unavailable (%s); linears stay PyTorch's", e)
        return False


# Linears of one input that a module computes as one GEMM when it has the fused attribute (`Attention`,
# `MLP` in model/transformer.py): fewer, wider GEMMs ran the bench model's linears 1.15x faster at 16 rows and
# 1.12x at 1,024 (`llm-packed-linear-20261204.json`).
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _fuse(module: nn.Module, embeddings: set[int]) -> None:
    for fused, names in FUSED.items():
        parts = [getattr(module, name, None) for name in names]
        if hasattr(module, fused) and all(p is not None and _packable(p, embeddings) for p in parts):
            setattr(module, fused, PackedLinear(*parts))
            for name in names:
                delattr(module, name)


def pack_linears(model: nn.Module) -> bool:
    """Replaces every bias-free float32 (or natively bf16) CPU `nn.Linear` of `model` by a `PackedLinear`, in
    place, and q/k/v and gate/up by one each where the module computes them fused (`FUSED`); a head tied to
    the embedding is left alone (the embedding's lookups read that weight). Returns whether it packed."""
    if not torch.backends.mkldnn.is_available():
        return False
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    first = next((m for m in model.modules() if _packable(m, embeddings)), None)
    if first is None or not _works(first):
        return False
    with torch.no_grad():
        for module in list(model.modules()):
            _fuse(module, embeddings)
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if _packable(child, embeddings):
                    setattr(parent, name, PackedLinear(child))
    return True
