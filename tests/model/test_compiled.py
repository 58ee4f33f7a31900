"""Compiled layers against the eager ones: the same outputs in every shape class and at sizes never warmed,
with no compile after the warm-up; a compiler that fails leaves the model eager and correct."""
import logging

import pytest
import torch

from grserve.model import compiled
from grserve.model.compiled import compile_layers, is_compiled, uncompile
from grserve.model.transformer import rope_cos_sin
from tests.model.test_transformer import ARCHITECTURES, random_ids, tiny_config, tiny_model


def layer_inputs(config, rows, tokens, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, tokens, config.hidden_size, generator=g)
    cos, sin = rope_cos_sin(torch.arange(3, 3 + tokens).expand(rows, tokens), config.head_dim, config.rope_theta,
                            x.dtype)
    attended = torch.randn(rows, tokens, config.num_attention_heads * config.head_dim, generator=g)
    return x, cos, sin, attended


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@torch.no_grad()
def test_compiled_layers_equal_eager_at_unwarmed_sizes_without_compiling_again(architecture):
    config = tiny_config(architecture)
    model = tiny_model(config)
    assert compile_layers(model) and is_compiled(model)
    # Any compile from here on would raise: the four warmed classes must cover these sizes.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for rows, tokens in [(1, 1), (1, 9), (5, 1), (3, 7)]:
            x, cos, sin, attended = layer_inputs(config, rows, tokens)
            for layer in model.model.layers:
                eager = type(layer)
                for got, want in zip(layer.attention_inputs(x, cos, sin), eager.attention_inputs(layer, x, cos, sin)):
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(layer.finish(x, attended), eager.finish(layer, x, attended),
                                           rtol=1e-5, atol=1e-5)
        ids = random_ids((3, 6))
        positions = torch.arange(6).expand(3, 6)
        logits, _ = model(ids, positions)
    uncompile(model)
    assert not is_compiled(model)
    torch.testing.assert_close(logits, model(ids, positions)[0], rtol=1e-4, atol=1e-4)


def test_a_second_model_of_the_same_shapes_compiles_nothing_new():
    config = tiny_config("LlamaForCausalLM")
    first, second = tiny_model(config, seed=1), tiny_model(config, seed=2)
    compile_layers(first)
    uncompile(first)
    assert "finish" not in first.model.layers[0].__dict__
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert compile_layers(second)  # its warm-up would raise on any new compile


def test_a_compiler_that_fails_leaves_the_model_eager(monkeypatch, caplog):
    def broken(fn, **_):
        def call(*args, **kwargs):
            raise RuntimeError("InductorError: no working C++ compiler\nmore detail")
        return call
    model = tiny_model(tiny_config("LlamaForCausalLM"), seed=3)
    ids, positions = random_ids((2, 5)), torch.arange(5).expand(2, 5)
    with torch.no_grad():
        expected, _ = model(ids, positions)
    monkeypatch.setattr(compiled, "_compiled", {})
    monkeypatch.setattr(compiled.torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="grserve.model.compiled"):
        assert compile_layers(model) is False
    assert not is_compiled(model)
    assert "no working C++ compiler" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(model(ids, positions)[0], expected)


def test_a_compiled_model_is_freed_once_unreferenced():
    import gc
    import weakref
    model = tiny_model(tiny_config("LlamaForCausalLM"), seed=4)
    compile_layers(model)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # nothing process-wide (the compiled methods) holds on to it
