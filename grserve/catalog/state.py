"""What a catalog version holds, in a form a change updates in time proportional to the change, not to the
catalog: the item ids in catalog order, each pointing at its record (SID, title) in a store every version
shares, and the ids disabled. Turning that into an item table (`ItemStore.table`) is the one catalog-sized
step, taken once per version that changes items.

Catalog order is the model directory's, then items in the order they were added. A Python dict keeps
insertion order and an assignment to an existing key keeps its place, so an updated item keeps its row."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grserve.catalog.changes import AddItems, Change, NewItem, RemoveItems, SetAvailability
from grserve.errors import InvalidRequest
from grserve.items.item_table import ItemTable


class ItemStore:
    """Every item record any version holds, append-only: the model directory's rows, then each added item. A
    record is its SID and its id's and title's positions in the pools of the model directory's table, which
    every version's table shares (items/item_table.py), so a version's table is made of arrays alone."""

    def __init__(self, table: ItemTable):
        self.base = table
        self.codes = table.codes
        arrays = table.arrays()
        self.keys = arrays["keys"]
        self.title_at = arrays["title_at"] if arrays["title_at"] is not None else np.zeros(len(table), np.int64)
        self.has_titles = table.titles is not None

    def __len__(self) -> int:
        return len(self.codes)

    def append(self, items: tuple[NewItem, ...]) -> int:
        """Stores the items' records; returns the first one's index (the others follow it)."""
        first = len(self.codes)
        titles = [i.title for i in items]
        self.codes = np.concatenate([self.codes, np.array([i.semantic_id for i in items], dtype=np.int32)])
        self.keys = np.concatenate([self.keys, self.base.keys_of([i.item_id for i in items])])
        self.title_at = np.concatenate([self.title_at, self.base.add_titles(titles)])
        self.has_titles = self.has_titles or any(t is not None for t in titles)
        return first

    def title(self, record: int) -> str | None:
        return self.base.title_pool_value(int(self.title_at[record]))

    def records(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Keys, codes and title positions of `count` records from `first` (for ItemTable.with_records)."""
        at = slice(first, first + count)
        return self.keys[at], self.codes[at], self.title_at[at] if self.has_titles else None

    def table(self, order: dict[str, int]) -> ItemTable:
        records = np.fromiter(order.values(), dtype=np.int64, count=len(order))
        return self.base.over(self.codes[records], self.keys[records],
                              self.title_at[records] if self.has_titles else None)


@dataclass
class CatalogState:
    order: dict[str, int]  # item id → its record in the store, in catalog order
    disabled: set[str]
    items_version: int = 0  # the version whose change last set the items (equal: the same items, in order)

    @classmethod
    def of(cls, table: ItemTable) -> CatalogState:
        return cls(dict(zip(table.raw_ids, range(len(table)))), set())

    def copy(self) -> CatalogState:
        return CatalogState(dict(self.order), set(self.disabled), self.items_version)

    def check(self, change: Change) -> None:
        """InvalidRequest naming the first id the change needs in the catalog and that is not there."""
        named = {RemoveItems: ("item_ids",), SetAvailability: ("disable", "enable")}.get(type(change), ())
        for param in named:
            for i, v in enumerate(getattr(change, param)):
                if v not in self.order:
                    raise InvalidRequest(f"{param}.{i}", f"item id {v!r} is not in the catalog")

    def with_titles(self, change: AddItems, store: ItemStore) -> AddItems:
        """An update that gives no title keeps the item's own."""
        if not store.has_titles:  # no item has a title to keep
            return change
        def title(item: NewItem) -> str | None:
            if item.title is not None or item.item_id not in self.order:
                return item.title
            return store.title(self.order[item.item_id])
        return AddItems(tuple(NewItem(i.item_id, i.semantic_id, title(i)) for i in change.items))

    def apply(self, change: Change, version: int, first_record: int | None = None,
              in_place: bool = False) -> CatalogState:
        """The state after `change` (checked already), the new version `version`; an AddItems' records start
        at `first_record` in the store. A copy unless `in_place` (a replay's own working state): the order is
        copied only when the change touches items, as published versions never change."""
        touches_items = isinstance(change, (AddItems, RemoveItems))
        state = self if in_place else CatalogState(dict(self.order) if touches_items else self.order,
                                                   set(self.disabled), self.items_version)
        if touches_items:
            state.items_version = version
        if isinstance(change, AddItems):
            for n, item in enumerate(change.items):
                state.order[item.item_id] = first_record + n
        elif isinstance(change, RemoveItems):
            for v in change.item_ids:
                del state.order[v]
            state.disabled.difference_update(change.item_ids)
        elif isinstance(change, SetAvailability):
            state.disabled.update(change.disable)
            state.disabled.difference_update(change.enable)
        return state

    def disabled_rows(self, table: ItemTable) -> frozenset[int]:
        return frozenset(table.row_of(v) for v in self.disabled)
