"""int8 linear weights (`--quantization int8`, CPU, both engines): every linear of the decoder layers stored
as int8, one scale per output channel, through PyTorch's own dynamic quantized linear (fbgemm on x86,
qnnpack on Arm), which quantizes each call's activations to 8 bits at run time and multiplies in integers.

A quarter of fp32's weight bytes, and integer GEMMs: a decode step, which streams every weight for a few
rows, runs ~2x faster on an AVX2 CPU (`benchmarks/results/llm-linear-kernels-avx2-20261204.json`). The
embeddings, norms and the LM head stay float32, so the head still ranks tokens from unquantized hidden states.
Quality is not free, and activations are quantized per call, over all rows of a step, so an answer depends a
little on what else shares its batch: `grserve bench llm` reports the LLM's greedy agreement with float32,
`grserve eval --quantization int8` a GR model's recall and NDCG. torch's own int8 matmul (`torch._int_mm`,
what torchao's int8 configs call on the CPU) measured 10-20x slower than fp32 on that CPU, and the
weight-only kernel `_weight_int8pack_mm` 10x slower on an AVX-512 one, so neither is used."""
from __future__ import annotations

import warnings

import torch
from torch import nn

QUANTIZATIONS = ("none", "int8")


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replaces the decoder layers' linears of `model` (fp32, CPU) by int8 dynamic quantized ones, in place;
    returns the model."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if next(model.parameters()).device.type != "cpu":
        raise ValueError("quantization: int8 runs on the CPU only (PyTorch's quantized linear has no CUDA kernel)")
    names = {name: per_channel_dynamic_qconfig for name, module in model.model.layers.named_modules()
             if isinstance(module, nn.Linear)}
    with warnings.catch_warnings():  # torch.ao.quantization warns of its move to torchao on every call
        warnings.simplefilter("ignore")
        model.model.layers = quantize_dynamic(model.model.layers.float(), names, dtype=torch.qint8)
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
