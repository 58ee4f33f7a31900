"""Synthetic GR models of any size: SID codes shaped like RQ-KMeans output, a random-weight transformer over
the GR vocabulary, and the word-level tokenizer that lets transformers and vLLM load a GR model directory.

For benchmarks at catalog sizes no shipped dataset reaches; the scores mean nothing, the shapes are real.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

from grserve.bundle import GRBundle, GRSettings
from grserve.items.item_table import ItemTable, check_levels
from grserve.items.trie import SIDTrie
from grserve.items.vocab import BOS, EOS, PAD, SPECIAL_TOKENS, GRVocab
from grserve.model.config import ModelConfig
from grserve.model.transformer import Transformer

# Zipf exponent of each level's code popularity (levels past the last take the last). RQ-KMeans' first level
# splits the catalog into clusters of uneven size; later levels quantize residuals, which k-means spreads more
# evenly, so the skew falls with depth. With these, 1M items at K=256 give ~6% duplicate triples, against ~3%
# for uniform codes.
ZIPF_EXPONENTS = (0.5, 0.35, 0.2)
INIT_STD = 0.02  # HF's initializer_range


def synthetic_codes(num_items: int, codebook_size: int = 256, seed: int = 0, levels: int = 3) -> np.ndarray:
    """int32 `[num_items, levels]` SIDs: each code is drawn given the codes before it, so prefixes are
    shared and some SIDs hold several items, as with RQ-KMeans."""
    if num_items < 1 or codebook_size < 1:
        raise ValueError(f"num_items and codebook_size must be positive, got {num_items}, {codebook_size}")
    k, levels = codebook_size, check_levels(levels, "synthetic codes")
    rng = np.random.default_rng(seed)
    # Every prefix ranks the codes by its own permutation rank -> (a*rank + b) mod K, a coprime to K: one pair
    # of ints per prefix instead of a [K**level, K] table, which at level 2 would be K**3 entries.
    units = np.array([a for a in range(1, max(k, 2)) if math.gcd(a, k) == 1])
    codes = np.empty((num_items, levels), dtype=np.int32)
    prefix = np.zeros(num_items, dtype=np.int64)  # the index of each item's prefix so far
    for level in range(levels):
        exponent = ZIPF_EXPONENTS[min(level, len(ZIPF_EXPONENTS) - 1)]
        cdf = np.cumsum(np.arange(1, k + 1, dtype=np.float64) ** -exponent)
        # Inverse-CDF sampling; cdf[-1] / cdf[-1] is exactly 1 and draws are < 1, so every rank is < K.
        rank = np.searchsorted(cdf / cdf[-1], rng.random(num_items), side="right")
        # A pair per prefix value up to level 2; deeper, K**level values would not fit (16M pairs at level 3 for
        # K=256), so the pairs go to the items' distinct prefixes, numbered.
        prefixes = k**level
        if level > 2:
            _, prefix = np.unique(prefix, return_inverse=True)
            prefixes = int(prefix.max()) + 1
        scale, shift = rng.choice(units, prefixes), rng.integers(0, k, prefixes)
        code = (scale[prefix] * rank + shift[prefix]) % k
        codes[:, level] = code
        prefix = prefix * k + code
    return codes


def synthetic_bundle(num_items: int, num_layers: int = 4, hidden_size: int = 128, num_heads: int = 4,
                     num_kv_heads: int = 2, intermediate_size: int | None = None, codebook_size: int = 256,
                     max_history_items: int = 50, architecture: str = "LlamaForCausalLM",
                     seed: int = 0, levels: int = 3) -> GRBundle:
    """A random-weight GR model over `synthetic_codes`; raw item ids are "1".."N".

    intermediate_size defaults to 3 * hidden_size, the ratio of Qwen3-0.6B (Llama's is about 2.7).
    """
    table = ItemTable(codebook_size, synthetic_codes(num_items, codebook_size, seed, levels),
                      [str(n) for n in range(1, num_items + 1)])
    vocab = GRVocab.of(table)
    # Room for the longest prompt (<bos> + a SID's tokens per history item) and the SID generated.
    positions = 1 + levels * (max_history_items + 1)
    config = ModelConfig(architecture=architecture, vocab_size=vocab.size, hidden_size=hidden_size,
                         intermediate_size=intermediate_size or 3 * hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         max_position_embeddings=max(ModelConfig.max_position_embeddings, positions),
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    # Built on the meta device, then filled once: PyTorch's default init would be overwritten anyway.
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            # Matrices as HF initializes them; vectors are RMSNorm gains, which start at one.
            if param.dim() == 2:
                param.normal_(0.0, INIT_STD, generator=generator)
            else:
                param.fill_(1.0)
    settings = GRSettings(max_history_items=max_history_items, dataset=f"synthetic-{num_items}")
    return GRBundle(model, table, SIDTrie.from_table(table), vocab, settings)


def write_synthetic(out_dir: str | Path, **kwargs) -> Path:
    """Build `synthetic_bundle(**kwargs)` and save it, with its tokenizer, as a GR model directory."""
    out_dir = Path(out_dir)
    bundle = synthetic_bundle(**kwargs)
    bundle.save(out_dir)
    write_tokenizer(out_dir, bundle.vocab)
    return out_dir


def write_tokenizer(directory: str | Path, vocab: GRVocab) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json`: a word-level `PreTrainedTokenizerFast` with one
    whitespace-separated word per token, named as in `GRVocab.names()`.

    Encoding text prepends `<bos>`, so `"<a_1> <b_2> <c_3>"` encodes to `vocab.prompt([[1, 2, 3]])`. There is
    no unknown token: a word outside the vocabulary is an error rather than a silent substitute.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = vocab.names()
    tokenizer = Tokenizer(models.WordLevel({name: i for i, name in enumerate(names)}))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Marked special so that decoding with skip_special_tokens drops them; their ids stay those of the vocab.
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in SPECIAL_TOKENS])
    bos = names[BOS]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, BOS)])
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": names[EOS],
              "pad_token": names[PAD], "add_bos_token": True, "clean_up_tokenization_spaces": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
