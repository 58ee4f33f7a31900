"""Shared fixtures: a tiny random GR model over a small catalog with SID collisions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grserve.bundle import GRBundle, GRSettings
from grserve.items.item_table import ItemTable
from grserve.items.trie import SIDTrie
from grserve.items.vocab import BOS, EOS, PAD, GRVocab
from grserve.model.config import ModelConfig
from grserve.model.transformer import Transformer


def make_bundle(num_items: int = 60, codebook_size: int = 5, seed: int = 0,
                architecture: str = "LlamaForCausalLM") -> GRBundle:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, codebook_size, size=(num_items, 3)).astype(np.int32)
    codes[1] = codes[0]  # at least one collision: two items share a triple
    table = ItemTable(codebook_size, codes, [f"i{n}" for n in range(num_items)],
                      [f"title {n}" for n in range(num_items)])
    vocab = GRVocab(codebook_size)
    torch.manual_seed(seed)
    config = ModelConfig(architecture=architecture, vocab_size=vocab.size, hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, bos_token_id=BOS,
                         eos_token_id=EOS, pad_token_id=PAD)
    model = Transformer(config).eval()
    # Larger weights than the default init, so the logits (and item scores) are far from uniform.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return GRBundle(model, table, SIDTrie.from_table(table), vocab, GRSettings(max_history_items=20,
                                                                               dataset="tiny"))


@pytest.fixture(scope="session")
def tiny_bundle() -> GRBundle:
    return make_bundle()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_bundle) -> str:
    directory = tmp_path_factory.mktemp("tiny-gr")
    tiny_bundle.save(directory)
    return str(directory)
