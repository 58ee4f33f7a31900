"""int8 linears against the float32 model they came from: the layers' linears become int8 ones, the head
stays, and the logits stay close to float32's; the LLM engine serves with them and refuses what they cannot
take."""
import pytest
import torch

from grserve.engine.llm.config import LLMEngineConfig
from grserve.engine.llm.engine import LLMEngine
from grserve.model.quantized import is_quantized, quantize_int8
from grserve.sampling.params import SamplingParams
from tests.model.test_transformer import ARCHITECTURES, random_ids, tiny_config, tiny_model


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@torch.no_grad()
def test_int8_layers_keep_the_logits_close_to_float32(architecture):
    model = tiny_model(tiny_config(architecture))
    ids, positions = random_ids((3, 9)), torch.arange(9).expand(3, 9)
    expected, _ = model(ids, positions)
    quantize_int8(model)
    assert is_quantized(model)
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight.dtype == torch.float32
    got, _ = model(ids, positions)
    # 8-bit weights and activations: errors of a few percent of the logits' range, not of their size
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


def test_llm_engine_serves_int8(llm_dir):
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4, quantization="int8"))
    try:
        assert is_quantized(engine.model) and engine.dtype == torch.float32
        [(tokens, _, reason)] = engine.generate_sync([5, 17, 42, 99], SamplingParams(temperature=0, max_tokens=6,
                                                                                   ignore_eos=True))
        assert len(tokens) == 6 and reason == "length"
        assert all(0 <= t < engine.model.config.vocab_size for t in tokens)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("settings,field", [({"quantization": "int4"}, "quantization must be one of"),
                                            ({"quantization": "int8", "compile": True}, "quantization: int8"),
                                            ({"quantization": "int8", "dtype": "bfloat16"}, "quantization: int8")])
def test_settings_int8_cannot_take_are_refused(settings, field):
    with pytest.raises(ValueError, match=field):
        LLMEngineConfig(**settings)


def test_gr_engine_serves_int8_items_of_its_catalog_only():
    from grserve.engine.gr.config import EngineConfig
    from grserve.engine.gr.engine import GREngine
    from grserve.engine.gr.request import GRRequest
    from tests.conftest import make_bundle
    bundle = make_bundle(num_items=120, codebook_size=5, seed=7)
    engine = GREngine(bundle, EngineConfig(max_beam_width=32, max_batch_rows=256, quantization="int8"))
    try:
        assert is_quantized(bundle.model)
        exclude = {0, 1, 2}
        result = engine.submit(GRRequest([1, 5, 9, 14], 16, 8, exclude)).result(timeout=120)
        valid = {tuple(c) for c in bundle.table.codes.tolist()}
        scores = [score for _, score, _ in result.items]
        assert len(result.items) == 8 and scores == sorted(scores, reverse=True)
        assert all(tuple(sid) in valid and item not in exclude for item, _, sid in result.items)
    finally:
        engine.shutdown()
