"""The independent oracle of a changed catalog: a test keeps its own account of what the catalog should hold
(ids in order with their SIDs, and the disabled ids), and the answers are those of the reference beam search
over a fresh item table of exactly the live, enabled items, with a fresh trie."""
from __future__ import annotations

import numpy as np
import pytest

from grserve.items.item_table import ItemTable
from grserve.items.trie import SIDTrie
from grserve.reference import reference_beam_search


class CatalogModel:
    """What the catalog should hold: item id → SID in catalog order (the model directory's, then as added; an
    update keeps its place), and the disabled ids."""

    def __init__(self, table: ItemTable):
        self.codebook_size, self.levels = table.codebook_size, table.levels
        self.sids = {raw: tuple(int(c) for c in table.codes[row]) for row, raw in enumerate(table.raw_ids)}
        self.disabled: set[str] = set()

    def copy(self) -> CatalogModel:
        other = object.__new__(CatalogModel)
        other.codebook_size, other.levels = self.codebook_size, self.levels
        other.sids, other.disabled = dict(self.sids), set(self.disabled)
        return other

    def add(self, item_id: str, sid) -> CatalogModel:
        self.sids[item_id] = tuple(sid)
        return self

    def remove(self, *item_ids: str) -> CatalogModel:
        for i in item_ids:
            del self.sids[i]
            self.disabled.discard(i)
        return self

    def disable(self, *item_ids: str) -> CatalogModel:
        self.disabled.update(item_ids)
        return self

    def enable(self, *item_ids: str) -> CatalogModel:
        self.disabled.difference_update(item_ids)
        return self

    def live_table(self) -> ItemTable:
        live = [i for i in self.sids if i not in self.disabled]
        codes = np.array([self.sids[i] for i in live], dtype=np.int32).reshape(-1, self.levels)
        return ItemTable(self.codebook_size, codes, live)


def reference_answer(bundle, model: CatalogModel, history: list[str], top_n: int, beam_width: int):
    """(item id, score) best first: the reference beam search over the live, enabled items; the prompt is the
    SIDs of the history's items still in the catalog (disabled ones too), and the history is excluded."""
    table = model.live_table()
    known = [h for h in history if h in model.sids]
    prompt = bundle.vocab.prompt(np.array([model.sids[h] for h in known], dtype=np.int64).reshape(-1, model.levels))
    exclude = {table.row_of(h) for h in known if table.row_of(h) is not None}
    ranked = reference_beam_search(bundle.model, prompt, beam_width, top_n, SIDTrie.from_table(table), bundle.vocab,
                                   exclude)
    return [(table.raw_ids[r.item], r.score) for r in ranked]


def assert_same_answer(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=2e-4)
