"""Shared fixtures: a tiny random GR model over a small catalog with SID collisions; the data in ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from grserve.bundle import GRBundle, GRSettings
from grserve.items.item_table import ItemTable
from grserve.items.trie import SIDTrie
from grserve.items.vocab import BOS, EOS, PAD, GRVocab
from grserve.model.config import ModelConfig
from grserve.model.transformer import Transformer


# Real data sets (Amazon Beauty) are not part of the project: they lie in ../shared beside a checkout, which a
# user's clone has not. Tests that need them skip with the reason; CI sets GRSERVE_REQUIRE_SHARED_DATA=1, which
# turns that skip into a failure, so the data tests always run there.
SHARED_DIR = Path(os.environ.get("GRSERVE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def shared_data(relative: str) -> Path:
    """`relative` under the shared directory; skips the test (fails it under CI's variable) when absent."""
    path = SHARED_DIR / relative
    if not path.exists():
        reason = f"needs {path} (the shared data beside the checkout; set GRSERVE_SHARED_DIR to point elsewhere)"
        if os.environ.get("GRSERVE_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"GRSERVE_REQUIRE_SHARED_DATA=1: {reason}")
        pytest.skip(reason)
    return path


def make_bundle(num_items: int = 60, codebook_size: int = 5, seed: int = 0,
                architecture: str = "LlamaForCausalLM", levels: int = 3) -> GRBundle:
    """A tiny random GR model over `num_items` random SIDs of `levels` codes."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, codebook_size, size=(num_items, levels)).astype(np.int32)
    codes[1] = codes[0]  # at least one collision: two items share a SID
    table = ItemTable(codebook_size, codes, [f"i{n}" for n in range(num_items)],
                      [f"title {n}" for n in range(num_items)])
    vocab = GRVocab.of(table)
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


CORPUS = [
    "the quick brown fox jumps over the lazy dog", "a user watched star wars and then the empire strikes back",
    "recommendation systems rank items for users", "hello world, this is a tiny tokenizer for tests",
    "generative retrieval decodes semantic ids with beam search", "paged attention stores keys and values in blocks",
    "the cat sat on the mat while the dog slept", "numbers 0 1 2 3 4 5 6 7 8 9 and symbols ! ? . ,",
] * 20
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_llm_dir(directory, architecture: str = "LlamaForCausalLM", seed: int = 0, layers: int = 2,
                 max_positions: int = 2048, tie: bool = False):
    """A tiny random causal LM with a byte-level BPE tokenizer trained here, a chat template, in HF format."""
    import json
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from grserve.model.loader import save_model
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|eos|>",
        "pad_token": "<|pad|>", "chat_template": CHAT_TEMPLATE, "model_max_length": max_positions}))
    torch.manual_seed(seed)
    config = ModelConfig(architecture=architecture, vocab_size=tok.get_vocab_size(), hidden_size=64,
                         intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=max_positions, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0, tie_word_embeddings=tie)
    model = Transformer(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    save_model(model, directory)
    return directory


@pytest.fixture(scope="session")
def llm_dir(tmp_path_factory):
    return make_llm_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    return make_llm_dir(tmp_path_factory.mktemp("tiny-qwen3"), "Qwen3ForCausalLM", seed=1, tie=True)


def make_hf(directory, architecture: str, vocab_size: int, seed: int = 0, **extra):
    """A tiny random causal LM made by transformers itself and saved with save_pretrained (config.json +
    safetensors), as a model trained elsewhere comes; `extra`: more of its config."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
    config_cls, model_cls = {"LlamaForCausalLM": (LlamaConfig, LlamaForCausalLM),
                             "Qwen3ForCausalLM": (Qwen3Config, Qwen3ForCausalLM)}[architecture]
    torch.manual_seed(seed)
    # a wide init, so that item scores are far apart (no near-ties for float rounding to reorder)
    config = config_cls(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                        initializer_range=0.3, **extra)
    model = model_cls(config).eval()
    model.save_pretrained(directory)
    return model
