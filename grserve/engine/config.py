"""What both engines' configurations share: config fields that carry their one-line help, the help of the
settings both have (device, overlap, compile, quantization) and the quantization check. The GR engine's
configuration is engine/gr/config.py, the LLM engine's engine/llm/config.py."""
from __future__ import annotations

from dataclasses import field

from grserve.model.quantized import QUANTIZATIONS


def setting(default, help: str):
    """A config field with its one-line help (what `grserve serve --help` and `grserve train --help` show)."""
    return field(default=default, metadata={"help": help})


DEVICE_HELP = "torch device: cpu, cuda or cuda:N"
# Overlap's default: on for accelerators, where the host would otherwise leave the device idle; off on the CPU,
# where the preparing thread competes with the compute for the same cores (see benchmarks/README.md).
COMPILE_HELP = ("compile each decoder layer's dense work (norms, projections, RoPE, MLP) with torch.compile, "
                "warmed for every shape class at start (tens of seconds the first time, seconds once inductor's "
                "cache has it); the model runs eager where compiling fails")
QUANTIZATION_HELP = ("linear weights of the decoder layers: none (the dtype's) or int8 (int8 per output channel, "
                     "activations quantized per call: PyTorch's dynamic quantized linear; CPU, float32; answers "
                     "then depend slightly on what else is in their batch)")
PACKED_LINEARS_HELP = ("float32 linears (and bf16 ones where the CPU has native bf16) on oneDNN's prepacked weights "
                      "on the CPU (measured 1.19x a decode step on AVX2); off: PyTorch's linear over input-major "
                      "weights")
OVERLAP_HELP = ("prepare the next batch on a second thread while the current one computes; unset: on for "
                "accelerators, off on the CPU")


def check_quantization(quantization: str, compile: bool, dtype: str = "float32") -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization != "none" and (compile or dtype == "bfloat16"):
        raise ValueError(f"quantization: int8 takes float32 activations, without compile; got dtype {dtype}, "
                         f"compile {compile}")
