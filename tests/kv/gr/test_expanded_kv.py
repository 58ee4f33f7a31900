"""ExpandedKVCache (the HF layout): same answers as the separated cache, with W copies of the prompt KV."""

import pytest
import torch

from grserve.kv.gr.expanded_kv import ExpandedKVCache
from grserve.kv.gr.separated_kv import SeparatedKVCache
from tests.kv import ARCHITECTURES, check_beam_rounds, prefill, tiny_model


@pytest.mark.parametrize("rounds", [1, 2, 3])  # SIDs of 2, 3 and 4 levels
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_beam_rounds_match_full_forward(architecture, rounds):
    model = tiny_model(architecture)
    cache = ExpandedKVCache(model.config.num_hidden_layers, max_rows=12, max_steps=rounds)
    check_beam_rounds(model, cache, lengths=[5, 2, 7], width=4, seed=0)


@torch.no_grad()
def test_same_attention_as_separated_cache_with_w_times_the_prompt_kv():
    model = tiny_model("LlamaForCausalLM")
    c = model.config
    P, W, per_token = 7, 4, c.num_key_value_heads * c.head_dim
    shared, valid, _ = prefill(model, [torch.arange(1, P + 1)])
    expanded = ExpandedKVCache(c.num_hidden_layers, max_rows=W, max_steps=2)
    separated = SeparatedKVCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, max_rows=W, max_steps=2)
    expanded.begin(shared, valid, W)
    separated.begin(shared, valid, W)
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        parent = torch.randint(0, W, (W,), generator=g)
        expanded.reorder(parent)
        separated.reorder(parent)
        for layer in range(c.num_hidden_layers):
            q = torch.randn(W, c.num_attention_heads, 1, c.head_dim, generator=g)
            k, v = torch.randn(2, W, c.num_key_value_heads, 1, c.head_dim, generator=g)
            torch.testing.assert_close(expanded.attend(layer, q, k, v), separated.attend(layer, q, k, v),
                                       atol=1e-5, rtol=1e-5)
    for k, v in expanded.kv:
        assert k.numel() // per_token == v.numel() // per_token == W * (P + 2)
    assert expanded.kv_tokens() == {"shared": W * P, "unshared": 2 * W}
    assert expanded.kv_bytes()["shared"] == W * separated.kv_bytes()["shared"]
    assert expanded.kv_bytes()["unshared"] == separated.kv_bytes()["unshared"]
