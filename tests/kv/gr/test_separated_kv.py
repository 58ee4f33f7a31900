"""SeparatedKVCache: beam decoding through the model equals plain forwards; P + 2W tokens of KV per request."""

import pytest
import torch

from grserve.kv.gr.separated_kv import SeparatedKVCache
from tests.kv import ARCHITECTURES, check_beam_rounds, prefill, tiny_model


def separated_cache(model, max_rows: int, rounds: int = 2) -> SeparatedKVCache:
    c = model.config
    return SeparatedKVCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, max_rows, rounds)


@pytest.mark.parametrize("rounds", [1, 2, 3])  # SIDs of 2, 3 and 4 levels
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_beam_rounds_match_full_forward(architecture, rounds):
    model = tiny_model(architecture)
    cache = separated_cache(model, max_rows=12, rounds=rounds)
    check_beam_rounds(model, cache, lengths=[5, 2, 7], width=4, seed=0)
    # The same buffers serve the next batch, narrower and with other prompts.
    check_beam_rounds(model, cache, lengths=[3, 6], width=3, seed=1)


def run_two_rounds(cache: SeparatedKVCache, model, prompt_len: int, width: int) -> None:
    shared, valid, _ = prefill(model, [torch.arange(1, prompt_len + 1)])
    cache.begin(shared, valid, width)
    for i in range(2):
        model(torch.ones(width, 1, dtype=torch.long), torch.full((width, 1), prompt_len + i), past=cache)


@torch.no_grad()
def test_one_request_holds_prompt_plus_two_tokens_per_beam():
    model = tiny_model("LlamaForCausalLM")
    c = model.config
    P, W = 7, 4
    cache = separated_cache(model, max_rows=W)
    run_two_rounds(cache, model, P, W)
    per_token = c.num_key_value_heads * c.head_dim
    for layer in range(c.num_hidden_layers):
        # Counted from the tensors actually held: the prefill's [1, n_kv, P, d] and the slots in use.
        shared_k, shared_v = cache.shared[layer]
        unshared_k, unshared_v = cache.unshared_kv(layer)
        assert shared_k.numel() // per_token == shared_v.numel() // per_token == P
        assert unshared_k.numel() // per_token == unshared_v.numel() // per_token == 2 * W
    assert SeparatedKVCache.request_kv_tokens(P, W, 2) == P + 2 * W < W * P
    assert cache.kv_tokens() == {"shared": P, "unshared": 2 * W}
    assert cache.kv_bytes() == {"shared": c.num_hidden_layers * 2 * P * per_token * 4,
                                "unshared": c.num_hidden_layers * 2 * 2 * W * per_token * 4}


def test_reorder_gathers_decode_kv_and_leaves_prompt_kv_alone():
    L, n_kv, d, W = 2, 2, 4, 3
    cache = SeparatedKVCache(L, n_kv, d, max_rows=2 * W, max_steps=2)
    shared = [(torch.randn(2, n_kv, 5, d), torch.randn(2, n_kv, 5, d)) for _ in range(L)]
    before = [(k.clone(), v.clone()) for k, v in shared]
    cache.begin(shared, torch.ones(2, 5, dtype=torch.bool), W)
    for layer in range(L):
        cache.attend(layer, torch.randn(2 * W, 2 * n_kv, 1, d), torch.randn(2 * W, n_kv, 1, d),
                     torch.randn(2 * W, n_kv, 1, d))
    old = [tuple(t.clone() for t in cache.unshared_kv(layer)) for layer in range(L)]
    parent = torch.tensor([2, 2, 0, 4, 3, 3])
    cache.reorder(parent)
    for layer in range(L):
        for new, prev in zip(cache.unshared_kv(layer), old[layer]):
            assert torch.equal(new, prev[parent])
        assert cache.shared[layer][0] is shared[layer][0]
        assert torch.equal(cache.shared[layer][0], before[layer][0])
        assert torch.equal(cache.shared[layer][1], before[layer][1])


def test_rejects_a_batch_wider_than_the_buffer_and_a_mask():
    model = tiny_model("LlamaForCausalLM")
    cache = separated_cache(model, max_rows=8)
    with torch.no_grad():
        shared, valid, _ = prefill(model, [torch.arange(1, 4), torch.arange(1, 6)])
        with pytest.raises(ValueError, match="max_rows 8"):
            cache.begin(shared, valid, width=5)
        cache.begin(shared, valid, width=4)
        with pytest.raises(ValueError, match="mask"):
            model(torch.ones(8, 1, dtype=torch.long), torch.zeros(8, 1, dtype=torch.long),
                  torch.ones(8, 1, 1, 6, dtype=torch.bool), past=cache)
