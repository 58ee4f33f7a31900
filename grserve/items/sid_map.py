"""An item → semantic ID map made outside grserve (`grserve import`): item ids, their codes, optional titles, and
where in its file each row came from, so that every error names the file, the line (or record) and the field.

Maps come as CSV/TSV or JSON-lines rows (read by the catalog CLI's reader, which the importer passes in), or as
xLLM's binary vocab records (`record_dtype`: int64 item_id, then one int32 per level). Checks here need no
model: one depth for every row, codes that are integers >= 0, item ids given once. Several items may share a
SID, as in any grserve catalog (each such SID answers with all its items): `shared` counts them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grserve.items.item_table import ItemTable, check_levels, record_dtype

XLLM_LEVELS = 3  # xLLM's records hold c0, c1, c2: the depth of a binary map unless told otherwise


@dataclass
class SIDMap:
    name: str  # its file, as errors name it
    raw_ids: list[str]
    codes: np.ndarray  # int64 [items, levels]
    titles: list[str | None] | None
    where: list[str]  # each row's place in the file: "line 7", "record 3"

    def at(self, row: int, message: str) -> str:
        return f"{self.name} {self.where[row]}: {message}"

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    @property
    def shared(self) -> int:
        """Items whose SID another item has too."""
        _, inverse, counts = np.unique(self.codes, axis=0, return_inverse=True, return_counts=True)
        return int((counts[inverse.reshape(-1)] > 1).sum())

    @classmethod
    def from_items(cls, name: str, items: list[dict], lines: list[int]) -> SIDMap:
        """From rows as the catalog CLI reads them (`{"item_id", "semantic_id", "title"?}`, one per line): every
        row of the first row's depth, integer codes."""
        if not items:
            raise ValueError(f"{name}: no items")
        where = [f"line {n}" for n in lines]
        depth = None
        for item, place in zip(items, where):
            sid = item.get("semantic_id")
            if not isinstance(sid, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in sid):
                raise ValueError(f"{name} {place}: semantic_id: expected a list of integer codes, got {sid!r}")
            if depth is None:
                depth = check_levels(len(sid), f"{name} {place}: semantic_id")
            elif len(sid) != depth:
                raise ValueError(f"{name} {place}: {len(sid)} codes, but {where[0]} has {depth}: every SID of a "
                                 f"model has the same number of levels")
        titles = [item.get("title") for item in items]
        return cls(name, [str(item["item_id"]) for item in items], np.array([i["semantic_id"] for i in items],
                                                                            dtype=np.int64),
                   titles if any(t is not None for t in titles) else None, where).checked()

    @classmethod
    def from_records(cls, path: str | Path, levels: int = XLLM_LEVELS) -> SIDMap:
        """xLLM's binary vocab records of `levels` codes each."""
        path = Path(path)
        dtype = record_dtype(check_levels(levels, "--levels"))
        size = path.stat().st_size
        if size % dtype.itemsize or not size:
            raise ValueError(f"{path}: {size} bytes is not a whole number of {dtype.itemsize}-byte records (int64 "
                             f"item_id + {levels} int32 codes, little-endian): a truncated file, or records of "
                             f"another depth (--levels)")
        records = np.fromfile(path, dtype=dtype)
        codes = np.stack([records[f"c{level}"].astype(np.int64) for level in range(levels)], axis=1)
        return cls(str(path), [str(i) for i in records["item_id"].tolist()], codes, None,
                   [f"record {n}" for n in range(1, len(records) + 1)]).checked()

    def checked(self) -> SIDMap:
        """Itself; ValueError at the first negative code or repeated item id."""
        negative = np.argwhere(self.codes < 0)
        if len(negative):
            row, level = negative[0]
            raise ValueError(self.at(row, f"c{level}: code {self.codes[row, level]} is negative"))
        first: dict[str, int] = {}
        for row, raw in enumerate(self.raw_ids):
            if raw in first:
                raise ValueError(self.at(row, f"item_id {raw!r} again (first at {self.where[first[raw]]}): each item "
                                              f"has one SID"))
            first[raw] = row
        return self

    def check_codebook(self, codebook_size: int, why: str) -> None:
        """ValueError at the first code outside [0, codebook_size), saying `why` that is the codebook."""
        over = np.argwhere(self.codes >= codebook_size)
        if len(over):
            row, level = over[0]
            needed = int(self.codes.max()) + 1
            raise ValueError(self.at(row, f"c{level}: code {self.codes[row, level]} is outside the codebook [0, "
                                          f"{codebook_size}) of {why}; these codes need a codebook of "
                                          f"{needed} or more"))

    def with_titles(self, name: str, titles: list[tuple[str, str, int]]) -> SIDMap:
        """Titles from another file: (item_id, title, line) rows, each of an item of the map, once."""
        row_of = {raw: row for row, raw in enumerate(self.raw_ids)}
        out: list[str | None] = [None] * len(self.raw_ids)
        seen: dict[str, int] = {}
        for raw, title, line in titles:
            if raw not in row_of:
                raise ValueError(f"{name} line {line}: item_id {raw!r} is not in the SID map {self.name}")
            if raw in seen:
                raise ValueError(f"{name} line {line}: item_id {raw!r} again (first on line {seen[raw]})")
            seen[raw], out[row_of[raw]] = line, title
        return SIDMap(self.name, self.raw_ids, self.codes, out, self.where)

    def table(self, codebook_size: int) -> ItemTable:
        return ItemTable(codebook_size, self.codes.astype(np.int32), self.raw_ids, self.titles)

