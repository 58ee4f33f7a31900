"""The compute dtype: bf16 only where the CPU computes it natively (hand-set CPU flags), a bf16 checkpoint's
own dtype read from its safetensors header, and an LLM engine whose `auto` follows both."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from grserve.model import precision
from grserve.model.loader import stored_dtype
from grserve.model.precision import compute_dtype


@pytest.fixture
def cpu(monkeypatch):
    def flags(*names):
        monkeypatch.setattr(precision, "cpu_info", lambda: ("test cpu", frozenset(names)))
    return flags


@pytest.mark.parametrize("flags, stored, want", [
    (("avx2", "fma"), torch.bfloat16, torch.float32),  # no native bf16: a bf16 checkpoint computes in fp32
    (("avx512f", "avx512_bf16"), torch.bfloat16, torch.bfloat16),
    (("amx_tile", "amx_bf16"), torch.float16, torch.bfloat16),  # fp16 has no fast CPU path: bf16
    (("amx_tile", "amx_bf16"), torch.float32, torch.float32),  # never below the checkpoint's own precision
    (("asimd", "bf16"), torch.bfloat16, torch.bfloat16),  # Arm's bf16 extension
])
def test_auto_is_bf16_only_where_native(cpu, flags, stored, want):
    cpu(*flags)
    assert compute_dtype("auto", stored) == want


def test_explicit_settings(cpu, caplog):
    cpu("avx2")
    assert compute_dtype("float32", torch.bfloat16) == torch.float32
    assert compute_dtype("bfloat16", torch.float32) == torch.bfloat16
    assert "far slower" in caplog.text
    with pytest.raises(ValueError, match="dtype must be one of"):
        compute_dtype("int4", torch.float32)


def test_stored_dtype_reads_the_header(tmp_path):
    save_file({"a": torch.zeros(2, dtype=torch.int64), "b": torch.zeros(2, dtype=torch.bfloat16)},
              tmp_path / "model.safetensors")
    assert stored_dtype(tmp_path) == torch.bfloat16


def test_engine_auto_follows_the_checkpoint(cpu, llm_dir):
    from grserve.engine.llm.engine import LLMEngine
    cpu("avx512_bf16")
    engine = LLMEngine(llm_dir)  # the test model is saved in float32: it stays so
    try:
        assert engine.dtype == torch.float32 and next(engine.model.parameters()).dtype == torch.float32
    finally:
        engine.shutdown()
