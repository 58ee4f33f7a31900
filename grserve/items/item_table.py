"""The item space: internal item id ↔ the dataset's raw id ↔ semantic ID, and its files on disk.

Internal item id = row index. A SID has the same number of codes, its levels, for every item of a table (2 or
more: a 1-level SID would be an item id with no prefix to share). On disk a table is two files in one directory:
`items.bin`, packed xLLM vocab records (`int64 item_id`, then one `int32` per level: `c0, c1, c2` for 3 levels,
little-endian, 8 + 4 × levels bytes each), and `items.json`, the metadata a binary record cannot hold (codebook
size, levels, raw ids, titles).

In memory a table keeps its raw ids and titles in pools it shares with the tables `with_items` makes from it:
pools are only ever appended to, and each table reads its own through integer arrays into them. A live
catalog's new version then costs Python work in proportion to its change, not to the catalog: copying a
1M-entry dict or list holds the GIL for 13-30 ms here, long enough to delay the engine's steps beside it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MIN_LEVELS = 2
FORMAT = "grserve-items-v1"
BIN_NAME = "items.bin"
JSON_NAME = "items.json"


def record_dtype(levels: int) -> np.dtype:
    """xLLM's vocab record for SIDs of `levels` codes: int64 item_id, then int32 c0 … c{levels-1}."""
    return np.dtype([("item_id", "<i8")] + [(f"c{level}", "<i4") for level in range(levels)])


def check_levels(levels: object, what: str) -> int:
    """`levels` when it is a depth a SID may have; ValueError naming `what` otherwise."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < MIN_LEVELS:
        raise ValueError(f"{what}: levels must be an integer >= {MIN_LEVELS} (a 1-level SID is just an item id), "
                         f"got {levels!r}")
    return levels


class _Pool:
    """Values only ever appended to (under a lock: catalogs made from one table may grow it from two threads)."""

    def __init__(self, values: list, index: bool = False):
        self.values = values
        self.key_of = {v: k for k, v in enumerate(values)} if index else None  # raw ids: value → position
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.values)

    def extend(self, values: list) -> int:
        """Appends `values`; returns the first one's position."""
        with self.lock:
            first = len(self.values)
            self.values.extend(values)
            if self.key_of is not None:
                self.key_of.update(zip(values, range(first, len(self.values))))
            return first

    def keys(self, ids: list[str]) -> np.ndarray:
        """The position of each id, appending those not yet in the pool."""
        with self.lock:
            out = np.empty(len(ids), dtype=np.int64)
            for j, raw in enumerate(ids):
                key = self.key_of.get(raw)
                if key is None:
                    key = self.key_of[raw] = len(self.values)
                    self.values.append(raw)
                out[j] = key
            return out


class PoolView(Sequence):
    """A table's raw ids or titles: row i is `pool[index[i]]`. Read-only, compares equal to any sequence with
    the same values."""

    def __init__(self, pool: _Pool, index: np.ndarray):
        self._values, self._index = pool.values, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._values[k] for k in self._index[i].tolist()]
        return self._values[self._index[i]]

    def __iter__(self):
        return map(self._values.__getitem__, self._index.tolist())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"PoolView({list(self[:5])}{'…' if len(self) > 5 else ''}, {len(self)} values)"


class ItemTable:
    """Rows of item SIDs with their raw ids (and optional titles). Immutable: changes make new tables.

    Row i's raw id is `ids[keys[i]]` and its title `titles[title_at[i]]` (the title pool's entry 0 is None);
    `row_of_key` maps an id's position back to its row (-1: not in this table; past its end: added later)."""

    def __init__(self, codebook_size: int, codes: np.ndarray, raw_ids: list[str], titles: list[str] | None = None):
        if not isinstance(codebook_size, int) or codebook_size < 1:
            raise ValueError(f"codebook_size must be a positive int, got {codebook_size!r}")
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise ValueError(f"codes must have shape [N, levels], got {codes.shape}")
        check_levels(codes.shape[1], f"codes of shape {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        _check_range(codes, codebook_size)
        n = len(codes)
        if len(raw_ids) != n:
            raise ValueError(f"{len(raw_ids)} raw_ids for {n} rows of codes")
        if not all(isinstance(r, str) for r in raw_ids):
            raise ValueError("raw_ids must all be strings")
        if titles is not None and len(titles) != n:
            raise ValueError(f"{len(titles)} titles for {n} rows of codes")
        ids = _Pool(list(raw_ids), index=True)
        if len(ids.key_of) != n:
            raise ValueError(f"raw_ids must be unique: {n - len(ids.key_of)} duplicates")
        keys = np.arange(n, dtype=np.int64)
        title_pool = _Pool([None] + (list(titles) if titles is not None else []))
        self._set(codebook_size, np.ascontiguousarray(codes, dtype=np.int32), ids, title_pool, keys, keys,
                  keys + 1 if titles is not None else None)

    def _set(self, codebook_size, codes, ids, title_pool, keys, row_of_key, title_at) -> ItemTable:
        self.codebook_size, self.codes = codebook_size, codes
        self._ids, self._title_pool = ids, title_pool  # shared by every table made from this one
        self._keys, self._row_of_key, self._title_at = keys, row_of_key, title_at
        return self

    def over(self, codes: np.ndarray, keys: np.ndarray, title_at: np.ndarray | None,
             row_of_key: np.ndarray | None = None) -> ItemTable:
        """A table over this one's pools: row i has SID `codes[i]`, the raw id at `keys[i]` and the title at
        `title_at[i]` (None: no titles). Numpy work only, whatever the catalog's size."""
        if row_of_key is None:
            row_of_key = np.full(len(self._ids), -1, dtype=np.int64)
            row_of_key[keys] = np.arange(len(keys))
        return object.__new__(ItemTable)._set(self.codebook_size, codes, self._ids, self._title_pool, keys,
                                              row_of_key, title_at)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def levels(self) -> int:
        """Codes per SID."""
        return self.codes.shape[1]

    @property
    def raw_ids(self) -> PoolView:
        """The dataset's own item ids, row i ↔ internal item i."""
        return PoolView(self._ids, self._keys)

    @property
    def titles(self) -> PoolView | None:
        return PoolView(self._title_pool, self._title_at) if self._title_at is not None else None

    def row_of(self, raw_id: str) -> int | None:
        """Internal item id of a dataset item id, or None when the item is not in the table."""
        key = self._ids.key_of.get(raw_id)
        if key is None or key >= len(self._row_of_key):
            return None
        row = int(self._row_of_key[key])
        return row if row >= 0 else None

    def keys_of(self, raw_ids: list[str]) -> np.ndarray:
        """Positions of `raw_ids` in the id pool, appending those it lacks (for `with_records`)."""
        return self._ids.keys(list(raw_ids))

    def add_titles(self, titles: list[str | None]) -> np.ndarray:
        """Positions of `titles` in the title pool (None: entry 0), appending the others."""
        at = np.zeros(len(titles), dtype=np.int64)
        given = [i for i, t in enumerate(titles) if t is not None]
        if given:
            at[given] = self._title_pool.extend([titles[i] for i in given]) + np.arange(len(given))
        return at

    def title_pool_value(self, position: int) -> str | None:
        return self._title_pool.values[position]

    def with_items(self, raw_ids: list[str], codes: np.ndarray, titles: list[str | None]) -> ItemTable:
        """A new table: this one with the items `raw_ids` given `codes` and `titles`; known ids keep their rows,
        new ones follow in order."""
        codes = np.asarray(codes)
        if codes.shape != (len(raw_ids), self.levels) or len(titles) != len(raw_ids):
            raise ValueError(f"{len(raw_ids)} raw_ids, codes of shape {codes.shape} and {len(titles)} titles")
        _check_range(codes, self.codebook_size)
        if len(set(raw_ids)) != len(raw_ids) or not all(isinstance(r, str) for r in raw_ids):
            raise ValueError("raw_ids must be unique strings")
        titled = self._title_at is not None or any(t is not None for t in titles)
        return self.with_records(self.keys_of(raw_ids), codes, self.add_titles(titles) if titled else None)

    def with_records(self, keys: np.ndarray, codes: np.ndarray, title_at: np.ndarray | None) -> ItemTable:
        """`with_items` for ids and titles already in the pools (distinct `keys`, checked codes): numpy copies of
        the catalog's arrays and no per-item Python (on a 1M-item table ~5 ms)."""
        held = keys < len(self._row_of_key)
        rows = np.full(len(keys), -1, dtype=np.int64)
        rows[held] = self._row_of_key[keys[held]]
        known, new = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
        n = len(self)
        out_codes = np.concatenate([self.codes, codes[new].astype(np.int32)])
        out_codes[rows[known]] = codes[known]
        row_of_key = np.full(len(self._ids), -1, dtype=np.int64)
        row_of_key[:len(self._row_of_key)] = self._row_of_key
        row_of_key[keys[new]] = np.arange(n, n + len(new))
        out_title_at = None
        if title_at is not None:
            base = self._title_at if self._title_at is not None else np.zeros(n, dtype=np.int64)
            out_title_at = np.concatenate([base, title_at[new]])
            out_title_at[rows[known]] = title_at[known]
        return self.over(out_codes, np.concatenate([self._keys, keys[new]]), out_title_at, row_of_key)

    def arrays(self) -> dict[str, np.ndarray | None]:
        """What `over` needs to make this table again over the same pools (another process's copy of them)."""
        return {"codes": self.codes, "keys": self._keys, "title_at": self._title_at, "row_of_key": self._row_of_key}

    def detached(self) -> ItemTable:
        """This table with pools of its own, holding only its rows' ids and titles, as a load of it would."""
        titles = self.titles
        return ItemTable(self.codebook_size, self.codes, list(self.raw_ids),
                         list(titles) if titles is not None else None)

    def pool_sizes(self) -> tuple[int, int]:
        return len(self._ids), len(self._title_pool)

    def pool_tail(self, sizes: tuple[int, int]) -> tuple[list[str], list]:
        """The ids and titles appended to the pools since they had `sizes`."""
        return self._ids.values[sizes[0]:], self._title_pool.values[sizes[1]:]

    def extend_pools(self, sizes: tuple[int, int], ids: list[str], titles: list) -> None:
        """Appends another process's `pool_tail(sizes)`, keeping the two pools equal (ValueError if they are not)."""
        if self.pool_sizes() != tuple(sizes):
            raise ValueError(f"item pools out of step: {self.pool_sizes()} here, {tuple(sizes)} there")
        self._ids.extend(ids)
        self._title_pool.extend(titles)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        records = np.empty(len(self), dtype=record_dtype(self.levels))
        records["item_id"] = np.arange(len(self))
        for level in range(self.levels):
            records[f"c{level}"] = self.codes[:, level]
        records.tofile(directory / BIN_NAME)
        titles = self.titles
        meta = {
            "format": FORMAT,
            "codebook_size": self.codebook_size,
            "levels": self.levels,
            "raw_ids": list(self.raw_ids),
            "titles": list(titles) if titles is not None else None,
        }
        (directory / JSON_NAME).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> ItemTable:
        directory = Path(directory)
        meta = json.loads((directory / JSON_NAME).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory / JSON_NAME}: format {meta.get('format')!r}, expected {FORMAT!r}")
        levels = check_levels(meta.get("levels"), str(directory / JSON_NAME))
        dtype = record_dtype(levels)
        bin_path = directory / BIN_NAME
        size = bin_path.stat().st_size
        # np.fromfile silently drops a partial trailing record, so a truncated file must be caught here.
        if size % dtype.itemsize:
            raise ValueError(f"{bin_path}: {size} bytes is not a multiple of {dtype.itemsize} (a record of "
                             f"{levels} levels, as {JSON_NAME} says)")
        records = np.fromfile(bin_path, dtype=dtype)
        raw_ids = meta["raw_ids"]
        if len(records) != len(raw_ids):
            raise ValueError(f"{bin_path}: {len(records)} records but {len(raw_ids)} raw_ids in {JSON_NAME}")
        # Records may come in any order (e.g. written by another tool); ids must cover 0..N-1 exactly.
        records = records[np.argsort(records["item_id"], kind="stable")]
        if not np.array_equal(records["item_id"], np.arange(len(records))):
            raise ValueError(f"{bin_path}: item ids are not exactly 0..{len(records) - 1}")
        codes = np.stack([records[f"c{level}"] for level in range(levels)], axis=1)
        return cls(meta["codebook_size"], codes, raw_ids, meta.get("titles"))


def _check_range(codes: np.ndarray, codebook_size: int) -> None:
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
