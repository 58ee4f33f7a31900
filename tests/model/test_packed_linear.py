"""oneDNN-packed linears: the row buckets (worked by hand), each packed linear against `F.linear` over the
original weight at every row count and input shape, fused ones against their parts, the model's logits
against the unpacked model's, the tied head left alone, a clean refusal where oneDNN is missing or fails, and the LLM engine's switch."""
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grserve.engine.llm.config import LLMEngineConfig
from grserve.engine.llm.engine import LLMEngine
from grserve.model import packed_linear
from grserve.model.packed_linear import PackedLinear, pack_linears, padded_rows
from grserve.model.precision import native_bf16
from tests.kv import ARCHITECTURES, tiny_model

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")
needs_native_bf16 = pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 (avx512_bf16/amx)")


def test_buckets_keep_small_row_counts_and_pad_the_rest_by_under_an_eighth():
    assert [padded_rows(n) for n in (1, 7, 16)] == [1, 7, 16]
    assert [padded_rows(n) for n in (17, 18, 19, 33, 65, 100, 1000, 1024, 1025)] == \
        [18, 18, 20, 36, 72, 104, 1024, 1024, 1152]
    for n in range(1, 5000):
        assert n <= padded_rows(n) < n * 1.125 and padded_rows(padded_rows(n)) == padded_rows(n)
    assert len({padded_rows(n) for n in range(1, 4097)}) == 80  # primitives oneDNN keeps per weight shape


@needs_onednn
@pytest.mark.parametrize("rows", [1, 3, 16, 17, 31, 100, 1000])
def test_packed_linear_equals_f_linear(rows):
    g = torch.Generator().manual_seed(rows)
    linear = nn.Linear(48, 40, bias=False)
    with torch.no_grad():
        linear.weight.normal_(generator=g)
    packed = PackedLinear(linear)
    x = torch.randn(rows, 48, generator=g)
    torch.testing.assert_close(packed(x), F.linear(x, linear.weight), rtol=1e-5, atol=1e-4)
    batched = x.view(1, rows, 48)  # the engine's packed [1, T, hidden] row
    assert packed(batched).shape == (1, rows, 40)
    torch.testing.assert_close(packed(batched)[0], packed(x))


@needs_onednn
def test_several_linears_pack_into_one_gemm_with_their_outputs_side_by_side():
    g = torch.Generator().manual_seed(0)
    parts = [nn.Linear(32, n, bias=False) for n in (24, 8, 8)]
    for p in parts:
        with torch.no_grad():
            p.weight.normal_(generator=g)
    x = torch.randn(5, 32, generator=g)
    fused = PackedLinear(*parts)
    assert fused.out_features == 40
    torch.testing.assert_close(fused(x), torch.cat([F.linear(x, p.weight) for p in parts], -1), rtol=1e-5, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@torch.no_grad()
def test_packed_model_gives_the_unpacked_logits(architecture):
    reference, packed = tiny_model(architecture), tiny_model(architecture)
    if architecture == "Qwen3ForCausalLM":  # tiny_model ties nothing: tie this one, as small Qwen3s are
        packed.lm_head.weight = reference.lm_head.weight = packed.model.embed_tokens.weight
    assert pack_linears(packed)
    layer = packed.model.layers[0]
    assert all(isinstance(m, PackedLinear) for m in (layer.self_attn.qkv_proj, layer.self_attn.o_proj,
                                                      layer.mlp.gate_up_proj, layer.mlp.down_proj))
    assert not hasattr(layer.self_attn, "q_proj") and not hasattr(layer.mlp, "up_proj")  # fused, not copied
    tied = architecture == "Qwen3ForCausalLM"
    assert isinstance(packed.lm_head, nn.Linear if tied else PackedLinear)
    assert not tied or packed.lm_head.weight is packed.model.embed_tokens.weight
    ids = torch.randint(1, 64, (3, 16), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(16).expand(3, 16)
    torch.testing.assert_close(packed(ids, positions)[0], reference(ids, positions)[0], rtol=1e-4, atol=1e-4)


@needs_onednn
@needs_native_bf16
@pytest.mark.parametrize("rows", [1, 16, 100])
@torch.no_grad()
def test_bf16_linears_pack_where_the_cpu_has_native_bf16(rows):
    g = torch.Generator().manual_seed(rows)
    model = tiny_model("LlamaForCausalLM").to(torch.bfloat16)
    assert pack_linears(model)
    fused = model.model.layers[0].mlp.gate_up_proj
    assert isinstance(fused, PackedLinear)
    x = torch.randn(rows, fused.in_features, generator=g).to(torch.bfloat16)
    plain = tiny_model("LlamaForCausalLM").to(torch.bfloat16).model.layers[0].mlp  # same seed, same weights
    want = torch.cat([F.linear(x.float(), plain.gate_proj.weight.float()),
                      F.linear(x.float(), plain.up_proj.weight.float())], -1)
    # One bf16 rounding of the output (both accumulate in float32): within 1/128 of each value, or a near-zero
    # value's absolute share of the largest.
    torch.testing.assert_close(fused(x).float(), want, rtol=2 ** -7, atol=1e-2 * want.abs().max().item())


def test_bf16_stays_plain_without_native_bf16(monkeypatch):
    monkeypatch.setattr(packed_linear, "native_bf16", lambda device="cpu": False)
    model = tiny_model("LlamaForCausalLM").to(torch.bfloat16)
    assert not pack_linears(model)
    assert type(model.model.layers[0].mlp.up_proj) is nn.Linear


def test_without_onednn_nothing_is_packed(monkeypatch):
    model = tiny_model("LlamaForCausalLM")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not pack_linears(model)
    assert type(model.model.layers[0].mlp.up_proj) is nn.Linear


def test_a_failing_pack_leaves_the_model_plain_and_says_why(monkeypatch, caplog):
    def broken(self, linear):
        raise RuntimeError("no packed path on this CPU")
    monkeypatch.setattr(packed_linear.PackedLinear, "__init__", broken)
    model = tiny_model("LlamaForCausalLM")
    with caplog.at_level(logging.WARNING):
        assert not pack_linears(model)
    assert "no packed path on this CPU" in caplog.text
    assert type(model.model.layers[1].self_attn.k_proj) is nn.Linear


@needs_onednn
@pytest.mark.parametrize("packed", [True, False])
def test_engine_switch(llm_dir, packed):
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4, packed_linears=packed))
    try:
        mlp = engine.model.model.layers[0].mlp
        assert isinstance(mlp.gate_up_proj, PackedLinear) == packed
        if not packed:  # the fallback layout: input-major
            assert mlp.gate_up_proj is None and mlp.up_proj.weight.t().is_contiguous()
    finally:
        engine.shutdown()
