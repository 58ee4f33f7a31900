"""What machine a benchmark ran on (CPU model, the ISA flags that decide kernels and dtypes, threads), and
whether it computes bf16 natively: without it (AVX2 only) a bf16 matmul measured ~200x slower than fp32."""
from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

import torch

# The flags that change which kernels run fast: vector width, native bf16/fp16 dot products, matrix units.
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "asimd", "sve", "bf16")
NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX) and Arm (the bf16 extension)


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.exists() else ""
    fields: dict[str, str] = {}
    for line in text.splitlines():  # the first processor's lines are enough: all cores are alike
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    return name, frozenset((fields.get("flags") or fields.get("Features") or "").split())


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matmuls run natively on `device` (any CUDA device counts; a CPU needs the ISA flag)."""
    if torch.device(device).type == "cuda":
        return True
    return bool(_cpuinfo()[1] & NATIVE_BF16)


def machine_info() -> dict:
    """The record every benchmark result carries."""
    name, flags = _cpuinfo()
    return {"cpu": name, "isa": [f for f in ISA_FLAGS if f in flags], "native_bf16": native_bf16(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
