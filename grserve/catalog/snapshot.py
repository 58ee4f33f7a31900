"""One version of the live catalog, as requests are answered on it: the item table of the items in the catalog,
its SID trie and candidate tables, and which of its items are disabled (out of stock).

A snapshot never changes once published. A request holds the snapshot it started on, so a change that lands
meanwhile cannot reach it; a version that only disables or enables items shares table, trie and tables with the
one before and builds only its availability masks."""
from __future__ import annotations

from dataclasses import dataclass, replace

from grserve.beam.availability import Availability
from grserve.beam.candidates import CandidateTables
from grserve.items.item_table import ItemTable
from grserve.items.trie import SIDTrie
from grserve.items.vocab import GRVocab


@dataclass(frozen=True, eq=False)
class CatalogSnapshot:
    version: int
    table: ItemTable  # every item in the catalog, disabled ones included (they keep their SIDs for histories)
    trie: SIDTrie
    tables: CandidateTables
    disabled: frozenset[int]  # rows of `table` no request may return
    availability: Availability | None  # the disabled rows as closed trie nodes; None when there are none

    @classmethod
    def build(cls, version: int, table: ItemTable, disabled: frozenset[int] = frozenset(),
              trie: SIDTrie | None = None) -> CatalogSnapshot:
        """Builds the trie (unless given) and the candidate tables: the expensive part, run off the step thread."""
        trie = trie or SIDTrie.from_table(table)
        tables = CandidateTables.build(trie, GRVocab.of(table))
        return cls(version, table, trie, tables, disabled, Availability.build(tables, disabled))

    def with_disabled(self, version: int, disabled: frozenset[int]) -> CatalogSnapshot:
        """The same items with another set disabled: table, trie and tables shared, only the masks built."""
        return replace(self, version=version, disabled=disabled,
                       availability=Availability.build(self.tables, disabled))

    def available(self, row: int) -> bool:
        return row not in self.disabled

    @property
    def live_items(self) -> int:
        """Items a request may be answered with: in the catalog and enabled."""
        return len(self.table) - len(self.disabled)
