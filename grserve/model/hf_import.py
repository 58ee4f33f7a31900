"""A GR model directory from a causal LM trained elsewhere: a Hugging Face `LlamaForCausalLM` or
`Qwen3ForCausalLM` directory (config.json + safetensors) and its item → SID map (items/sid_map.py).

grserve reads a GR model's tokens in one layout (items/vocab.py): <pad> 0, <bos> 1, <eos> 2, then one range of
`codebook_size` tokens per SID level, so `vocab_size = 3 + levels × codebook_size`. The model must have been
trained in that layout; what can be checked is checked against the map before anything is written: the
vocabulary splits into the map's levels, every code fits its level's range, the special tokens the config names
are grserve's, and the context holds a history. The weights are loaded as grserve serves them (every tensor
named and shaped as the config says) and written with the item table and gr_config.json; the word-level
tokenizer `grserve synth` writes lets transformers and vLLM read the directory too."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from grserve.bundle import GRBundle, GRSettings
from grserve.items.codebooks import FILE_NAME as CODEBOOKS_FILE
from grserve.items.sid_map import SIDMap
from grserve.items.synthetic import write_tokenizer
from grserve.items.trie import SIDTrie
from grserve.items.vocab import BOS, EOS, PAD, SPECIAL_TOKENS, GRVocab
from grserve.model.config import ModelConfig
from grserve.model.loader import load_model

DEFAULT_HISTORY = 50  # as `grserve train`'s max_history_items
LAYOUT = f"<pad> {PAD}, <bos> {BOS}, <eos> {EOS}, then one range of codes per level"


@dataclass
class ImportReport:
    out: str
    architecture: str
    items: int
    levels: int
    codebook_size: int
    shared_sids: int  # items whose SID another item has too: each such SID answers with all of them
    max_history_items: int
    titles: bool


def codebook_of(config: ModelConfig, levels: int, codebook_size: int | None, where: str) -> int:
    """The codebook size the model's vocabulary implies for `levels`-level SIDs (or `codebook_size`, checked)."""
    special, size = len(SPECIAL_TOKENS), config.vocab_size
    if codebook_size is None:
        if size <= special or (size - special) % levels:
            raise ValueError(f"{where}: vocab_size {size} is not {special} special tokens + {levels} levels × a "
                             f"codebook ({size} - {special} = {size - special} does not split into {levels} equal "
                             f"ranges): the model's vocabulary does not fit the map's {levels}-level SIDs "
                             f"(grserve's layout: {LAYOUT})")
        return (size - special) // levels
    if size != special + levels * codebook_size:
        raise ValueError(f"{where}: vocab_size {size}, but {special} special tokens + {levels} levels × "
                         f"{codebook_size} codes = {special + levels * codebook_size}")
    return codebook_size


def check_special_tokens(config: ModelConfig, where: str) -> ModelConfig:
    """`config` naming grserve's special tokens (those it leaves unset set); ValueError for others."""
    layout = {"pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS}
    for name, token in layout.items():
        given = getattr(config, name)
        if given is not None and given != token:
            raise ValueError(f"{where}: {name} is {given}, but a GR model's vocabulary has it at {token} ({LAYOUT}): "
                             f"a model trained with its special tokens elsewhere reads grserve's prompts wrong")
    return replace(config, **layout)


def history_items(config: ModelConfig, levels: int, wanted: int | None, where: str) -> int:
    """The most history items a prompt may hold: <bos>, a SID per item, and the SID decoded must fit the context."""
    fits = (config.max_position_embeddings - 1) // levels - 1
    if fits < 1:
        raise ValueError(f"{where}: max_position_embeddings {config.max_position_embeddings} holds no history: a "
                         f"prompt of one item takes 1 + {levels} + {levels} positions")
    if wanted is not None and wanted > fits:
        raise ValueError(f"--max-history-items {wanted}: max_position_embeddings {config.max_position_embeddings} "
                         f"holds {fits} items of {levels} codes (1 + {levels} × (items + 1) positions)")
    return wanted or min(DEFAULT_HISTORY, fits)


def import_model(hf_dir: str | Path, sids: SIDMap, out: str | Path, codebook_size: int | None = None,
                 max_history_items: int | None = None, dataset: str = "") -> ImportReport:
    """Checks `sids` against the model in `hf_dir`, then writes the GR model directory `out`."""
    hf_dir, out = Path(hf_dir), Path(out)
    where = str(hf_dir / "config.json")
    if not (hf_dir / "config.json").exists():
        raise FileNotFoundError(f"{hf_dir} is not a Hugging Face model directory: no config.json")
    try:
        config = ModelConfig.from_hf_dict(json.loads((hf_dir / "config.json").read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None
    size = codebook_of(config, sids.levels, codebook_size, where)
    sids.check_codebook(size, f"{where} (vocab_size {config.vocab_size} = {len(SPECIAL_TOKENS)} special tokens + "
                              f"{sids.levels} levels × {size} codes): the model's vocabulary is too small for them")
    config = check_special_tokens(config, where)
    history = history_items(config, sids.levels, max_history_items, where)
    try:
        model = load_model(hf_dir)  # every tensor named as its config says, or ValueError
    except RuntimeError as e:  # torch's: a tensor shaped otherwise
        raise ValueError(f"{hf_dir}: the weights do not fit {where}: {e}") from None
    model.config = config
    table = sids.table(size)
    bundle = GRBundle(model, table, SIDTrie.from_table(table), GRVocab.of(table),
                      GRSettings(max_history_items=history, dataset=dataset))
    bundle.save(out)
    write_tokenizer(out, bundle.vocab)
    (out / CODEBOOKS_FILE).unlink(missing_ok=True)  # left from another model: wrong for this one's SIDs
    return ImportReport(str(out), config.architecture, len(table), sids.levels, size, sids.shared, history,
                        sids.titles is not None)
