"""The S3-Rec/SASRec sequence format: one user per line, `user item item ...`, oldest first.

Item descriptions come from an optional JSON file `{item_id: {...}}` whose entries may hold a `title`,
a list of `attributes` (brand, categories) and an `idgenrec_textid` (Amazon Beauty's derived meta)."""
from __future__ import annotations

import json
from pathlib import Path

from grserve.data.dataset import SequenceDataset


def _describe(meta: dict) -> tuple[str, str]:
    title = meta.get("title") or meta.get("idgenrec_textid") or ""
    attributes = meta.get("attributes") or []
    return title, " ".join([title, *attributes]).strip()


def find_item_meta(path: Path) -> Path | None:
    """The one `*item_meta*.json` beside a sequence file, when there is exactly one."""
    found = sorted(path.parent.glob("*item_meta*.json"))
    return found[0] if len(found) == 1 else None


def load_sequence_file(path: str | Path, item_meta: str | Path | None = None) -> SequenceDataset:
    path = Path(path)
    sequences: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{n}: a line needs a user id and at least one item id")
        if fields[0] in sequences:
            raise ValueError(f"{path}:{n}: user {fields[0]} appears twice")
        sequences[fields[0]] = fields[1:]
    meta_path = Path(item_meta) if item_meta else find_item_meta(path)
    meta = json.loads(meta_path.read_text()) if meta_path else {}
    seen = {item for seq in sequences.values() for item in seq}
    item_ids = sorted(seen | meta.keys(), key=lambda s: (len(s), s))
    described = [_describe(meta.get(i, {})) for i in item_ids]
    titles = [t or i for (t, _), i in zip(described, item_ids)]
    texts = [x or i for (_, x), i in zip(described, item_ids)]
    row = {item: i for i, item in enumerate(item_ids)}
    return SequenceDataset(path.stem, item_ids, titles, texts,
                           {u: [row[i] for i in seq] for u, seq in sequences.items()})
