"""What machine a benchmark ran on (CPU model, the ISA flags that decide kernels and dtypes, threads), and
whether it computes bf16 natively: without it (AVX2 only) a bf16 matmul measured ~200x slower than fp32."""
from __future__ import annotations

import os
import platform

import torch

from grserve.engine.compute_threads import compute_threads
from grserve.model.precision import cpu_info, native_bf16

# The flags that change which kernels run fast: vector width, native bf16/fp16 dot products, matrix units.
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "asimd", "sve", "bf16")


def machine_info() -> dict:
    """The record every benchmark result carries."""
    name, flags = cpu_info()
    return {"cpu": name, "isa": [f for f in ISA_FLAGS if f in flags], "native_bf16": native_bf16(),
            # the threads the engines compute on, where the caller keeps one for itself
            "cores": os.cpu_count(), "threads": compute_threads() or torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
