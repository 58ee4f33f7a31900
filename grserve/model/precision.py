"""Which dtype a model computes in on this machine, and what the CPU can do natively.

bf16 runs natively only where the hardware has bf16 dot products (x86 AVX-512 BF16 or AMX, Arm's bf16
extension, any CUDA device): on an AVX2-only CPU a bf16 matmul measured ~200x slower than fp32 here, on an AMX
Xeon ~6x faster. So `auto` computes a bf16 (or fp16) checkpoint in bf16 only where that is native, and
everything else in fp32; an explicit `bfloat16` is honoured everywhere, with a warning where it is slow."""
from __future__ import annotations

import logging
import platform
from functools import cache
from pathlib import Path

import torch

DTYPES = ("auto", "float32", "bfloat16")
NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX) and Arm (the bf16 extension)


@cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.exists() else ""
    fields: dict[str, str] = {}
    for line in text.splitlines():  # the first processor's lines are enough: all cores are alike
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    return name, frozenset((fields.get("flags") or fields.get("Features") or "").split())


def check_dtype(field: str, value: str) -> None:
    """A ValueError naming `field` unless `value` is one of DTYPES."""
    if value not in DTYPES:
        raise ValueError(f"{field} must be one of {', '.join(DTYPES)}, got {value!r}")


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matmuls run natively on `device` (any CUDA device counts; a CPU needs the ISA flag)."""
    if torch.device(device).type == "cuda":
        return True
    return bool(cpu_info()[1] & NATIVE_BF16)


def compute_dtype(setting: str, stored: torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """The dtype to compute in for `setting` (one of DTYPES) and a checkpoint stored in `stored`."""
    if setting == "float32":
        return torch.float32
    if setting == "bfloat16":
        if not native_bf16(device):
            logging.getLogger("grserve").warning(
                "dtype bfloat16 on a CPU without native bf16 (%s): matmuls run far slower than in float32",
                cpu_info()[0])
        return torch.bfloat16
    check_dtype("dtype", setting)
    half = stored in (torch.bfloat16, torch.float16)
    return torch.bfloat16 if half and native_bf16(device) else torch.float32
