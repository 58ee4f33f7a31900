"""Synthetic codes against their intended statistics; a written synthetic directory against grserve's own
loader and against transformers (model logits and tokenizer)."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grserve.bundle import GRBundle
from grserve.items.synthetic import synthetic_bundle, synthetic_codes, write_synthetic
from grserve.items.vocab import BOS, EOS, PAD

TINY = dict(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, codebook_size=16,
            max_history_items=10)


def _keys(codes: np.ndarray, k: int) -> np.ndarray:
    return (codes[:, 0].astype(np.int64) * k + codes[:, 1]) * k + codes[:, 2]


@pytest.mark.parametrize("n, k", [(1, 1), (1000, 7), (20_000, 256)])
def test_codes_shape_range_dtype(n, k):
    codes = synthetic_codes(n, k)
    assert codes.shape == (n, 3) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < k


@pytest.mark.parametrize("levels", [2, 4, 5])
def test_other_depths_extend_the_same_draws(levels):
    """Each level's draws follow the levels before, so a deeper SID adds codes after the 3-level ones (and a
    shallower one is their prefix); deeper levels still share prefixes, with codes in range."""
    n, k = 20_000, 64
    codes, three = synthetic_codes(n, k, seed=1, levels=levels), synthetic_codes(n, k, seed=1)
    assert codes.shape == (n, levels) and codes.dtype == np.int32 and codes.min() >= 0 and codes.max() < k
    shared = min(levels, 3)
    assert np.array_equal(codes[:, :shared], three[:, :shared])
    if levels > 3:  # the fourth code, drawn per distinct 3-code prefix: items under one prefix spread out
        prefixes = len(np.unique(codes[:, :3], axis=0))
        assert prefixes < len(np.unique(codes[:, :4], axis=0)) <= n


def test_synthetic_bundle_of_four_levels():
    bundle = synthetic_bundle(300, levels=4, **TINY)
    assert bundle.table.levels == bundle.vocab.levels == bundle.trie.levels == 4
    assert bundle.model.config.vocab_size == 3 + 4 * 16
    assert bundle.model.config.max_position_embeddings >= 1 + 4 * (10 + 1)


def test_codes_deterministic_per_seed():
    assert np.array_equal(synthetic_codes(5000, 32, seed=3), synthetic_codes(5000, 32, seed=3))
    assert not np.array_equal(synthetic_codes(5000, 32, seed=3), synthetic_codes(5000, 32, seed=4))


def test_first_level_is_skewed():
    k, n = 256, 20_000
    counts = np.sort(np.bincount(synthetic_codes(n, k)[:, 0], minlength=k))[::-1]
    # Uniform codes would put ~10% of the items on the top 10% of codes.
    assert counts[: k // 10].sum() > 0.25 * n


def test_prefixes_shared_more_than_uniform():
    # Fewer items than pairs, so that neither draw saturates the K*K possible pairs.
    k, n = 128, 20_000
    pairs = len(np.unique(_keys(synthetic_codes(n, k), k) // k))
    uniform = np.random.default_rng(0).integers(0, k, size=(n, 3))
    assert pairs < 0.95 * len(np.unique(_keys(uniform, k) // k))


def test_some_triples_hold_several_items():
    k, n = 16, 20_000
    _, counts = np.unique(_keys(synthetic_codes(n, k), k), return_counts=True)
    assert counts.max() > 1 and counts.sum() == n


def test_bundle_contents():
    bundle = synthetic_bundle(300, **TINY)
    assert bundle.table.raw_ids[:3] == ["1", "2", "3"] and bundle.table.raw_ids[-1] == "300"
    assert bundle.table.titles is None
    assert bundle.settings.dataset == "synthetic-300" and bundle.settings.max_history_items == 10
    config = bundle.model.config
    assert config.vocab_size == bundle.vocab.size == 3 + 3 * 16
    assert config.intermediate_size == 3 * 32
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (BOS, EOS, PAD)
    assert bundle.trie.num_leaves == len(np.unique(_keys(bundle.table.codes, 16)))


def test_item_scores_are_not_flat():
    bundle = synthetic_bundle(300, **TINY)
    prompt = torch.tensor([bundle.vocab.prompt(bundle.table.codes[:5])])
    with torch.no_grad():
        logits, _ = bundle.model(prompt, torch.arange(prompt.shape[1])[None])
    first_level = logits[0, -1, bundle.vocab.offset(0) : bundle.vocab.offset(1)]
    assert first_level.std() > 0.1


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    assert write_synthetic(directory, num_items=500, seed=1, **TINY) == directory
    return directory


def test_written_directory_loads_in_grserve(written):
    loaded, built = GRBundle.load(written), synthetic_bundle(500, seed=1, **TINY)
    assert np.array_equal(loaded.table.codes, built.table.codes)
    assert loaded.table.raw_ids == built.table.raw_ids and loaded.settings == built.settings
    for name, tensor in built.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_written_model_matches_transformers(written):
    bundle = GRBundle.load(written)
    theirs = AutoModelForCausalLM.from_pretrained(written, attn_implementation="eager").eval()
    prompt = torch.tensor([bundle.vocab.prompt(bundle.table.codes[:10])])
    with torch.no_grad():
        ours, _ = bundle.model(prompt, torch.arange(prompt.shape[1])[None])
        expected = theirs(prompt).logits
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_written_tokenizer_round_trips(written):
    vocab = GRBundle.load(written).vocab
    tokenizer = AutoTokenizer.from_pretrained(written)
    names = vocab.names()
    assert len(tokenizer) == vocab.size
    assert tokenizer.convert_tokens_to_ids("<a_5>") == vocab.offset(0) + 5
    assert tokenizer.convert_tokens_to_ids(names) == list(range(vocab.size))
    assert tokenizer.convert_ids_to_tokens(list(range(vocab.size))) == names
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, PAD)
    codes = np.array([[1, 2, 3], [15, 0, 7]])
    text = " ".join(names[t] for t in vocab.tokens(codes).reshape(-1))
    assert tokenizer(text).input_ids == vocab.prompt(codes)
    assert tokenizer.decode(vocab.prompt(codes), skip_special_tokens=True) == text
