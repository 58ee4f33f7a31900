"""How the LLM engine loads a model for its steps: int8, oneDNN-packed, or input-major weights.

Decode steps multiply a few rows by every weight: packed for oneDNN, or else laid out input-major, as the
CPU's GEMM reads them fastest; or int8, a quarter of the bytes (repacked by the quantizer, so no layout
first). Compiled layers keep plain weights: dynamo cannot trace oneDNN's opaque tensors."""
from __future__ import annotations

from pathlib import Path

import torch

from grserve.engine.llm.config import LLMEngineConfig
from grserve.model.loader import load_model
from grserve.model.packed_linear import pack_linears
from grserve.model.quantized import quantize_int8
from grserve.model.transformer import Transformer
from grserve.model.weight_layout import lay_out_for_cpu


def load_for_steps(model_dir: str | Path, config: LLMEngineConfig, dtype: torch.dtype) -> Transformer:
    model = load_model(model_dir, device=config.device, dtype=dtype)
    if config.quantization == "int8":
        return quantize_int8(model)
    if config.packed_linears and not config.compile and pack_linears(model):
        return model
    return lay_out_for_cpu(model)
