"""How the LLM engine's linear weights lie in memory on the CPU.

`nn.Linear` keeps its weight as [out, in] and computes x @ W.T. On the CPU, for the few rows of a decode step
(16 sequences), the GEMM is faster when W.T is the contiguous one, i.e. W stored as [in, out] and seen through
a transposed view: 1.23x for a whole step's weights streamed from memory
(`benchmarks/results/llm-kernels-20261203-140354.json`). From 16 rows on the result is bit-for-bit the
same, and at 64 and 1,024 rows so is the speed. The GR engine's steps run hundreds of beam rows, so it keeps
nn.Linear's layout. bf16 weights keep it too: in bf16 the input-major step was 0.82x the row-major one at 16
rows on an AVX-512 BF16 EPYC (`benchmarks/results/llm-kernels-20261207-225934.json`). Names, shapes and
values of the state dict are unchanged (only strides differ), and `save_model` writes the tensors contiguous
as before."""
from __future__ import annotations

import torch
from torch import nn


def lay_out_for_cpu(model: nn.Module) -> nn.Module:
    """Stores every float32 linear weight of `model` (on the CPU) input-major, in place; returns the model. A
    weight shared with an embedding (a tied head) is left alone: the embedding's row lookups want it row-major."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        if (isinstance(module, nn.Linear) and module.weight.device.type == "cpu"
                and module.weight.dtype == torch.float32 and id(module.weight) not in embeddings
                and module.weight.is_contiguous()):
            with torch.no_grad():
                module.weight.data = module.weight.data.t().contiguous().t()
    return model
