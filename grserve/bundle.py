"""A GR model directory: the Hugging Face model files (`config.json`, `model.safetensors`), the item
table (`items.bin`, `items.json`) and grserve's own settings (`gr_config.json`)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from grserve.items.item_table import ItemTable
from grserve.items.trie import SIDTrie
from grserve.items.vocab import GRVocab
from grserve.model.loader import load_model, save_model
from grserve.model.transformer import Transformer

EMBEDDED_MODELS_DIR = Path(__file__).parent / "assets"  # the models shipped in the package, by name
DEFAULT_MODEL_DIR = EMBEDDED_MODELS_DIR / "ml-100k"
SETTINGS_FILE = "gr_config.json"


def model_directory(model: str | Path | None) -> Path:
    """The directory `model` names: a path, or the name of a model shipped in the package (`ml-100k`,
    `beauty`) where no such path exists here; None: the embedded default."""
    if model is None:
        return DEFAULT_MODEL_DIR
    path = Path(model)
    embedded = EMBEDDED_MODELS_DIR / str(model)
    if not path.exists() and path.name == str(model) and embedded.is_dir():
        return embedded
    return path


@dataclass
class GRSettings:
    # Histories longer than this keep their newest items: the prompt is 1 + levels * max_history_items tokens.
    max_history_items: int = 50
    dataset: str = ""


@dataclass
class GRBundle:
    model: Transformer
    table: ItemTable
    trie: SIDTrie
    vocab: GRVocab
    settings: GRSettings
    directory: Path | None = None  # where it was loaded from (its codebooks, for items added by text)

    @classmethod
    def load(cls, directory: str | Path | None = None, device: str = "cpu") -> "GRBundle":
        directory = model_directory(directory)
        if not (directory / SETTINGS_FILE).exists():
            raise FileNotFoundError(f"{directory} is not a GR model directory: no {SETTINGS_FILE}")
        settings = GRSettings(**json.loads((directory / SETTINGS_FILE).read_text()))
        table = ItemTable.load(directory)
        vocab = GRVocab.of(table)
        model = load_model(directory, device=device)
        if model.config.vocab_size != vocab.size:
            raise ValueError(f"{directory}: model vocab_size {model.config.vocab_size} does not match "
                             f"the item table's vocabulary of {vocab.size} tokens ({vocab.num_special} special, "
                             f"{vocab.levels} levels of {vocab.codebook_size} codes)")
        return cls(model, table, SIDTrie.from_table(table), vocab, settings, directory)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, directory)
        self.table.save(directory)
        (directory / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2) + "\n")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
