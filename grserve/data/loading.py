"""One name for every dataset the CLI accepts: `ml-100k`, a directory of RecBole atomic files, or a
sequence file (`user item item ...` per line)."""
from __future__ import annotations

from pathlib import Path

from grserve.data.dataset import SequenceDataset
from grserve.data.recbole import load_atomic_dir, load_movielens_100k
from grserve.data.sequence_file import load_sequence_file


def load_dataset(spec: str, item_meta: str | None = None) -> SequenceDataset:
    if spec == "ml-100k":
        return load_movielens_100k()
    path = Path(spec)
    if path.is_dir():
        return load_atomic_dir(path)
    if path.is_file():
        return load_sequence_file(path, item_meta)
    raise FileNotFoundError(f"dataset {spec!r}: not 'ml-100k' and no such file or directory")
