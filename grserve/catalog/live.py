"""The live catalog: versioned snapshots, changed one at a time and published whole.

Version 0 is the model directory's item table; every change (add or update items, remove items, disable or
enable them, roll back to an earlier version) makes the next version. A change is checked against the current
version, built into a new snapshot (the trie and candidate tables, or for availability only the masks), made
durable in the change log when there is a state directory, and only then published as `current`: requests
that read `current` before see the old version whole, those after the new one whole. Changes run one at a time
under a lock, on the caller's thread (the HTTP handler's worker thread), never on the engine's step thread.

A rollback to version N replays the changes up to N over version 0 (cheap: a change costs its own size, see
state.py), so every version stays reachable without keeping old snapshots in memory.

Instances that share a history (grserve/service/catalog_sync.py) set `publisher`: a change made here is
published before it is committed, and one made elsewhere arrives through `apply_shared`."""
from __future__ import annotations

import collections
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from grserve.catalog import changes
from grserve.catalog.change_log import ChangeLog, fingerprint
from grserve.catalog.changes import AddItems, Change, RemoveItems, Rollback
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.catalog.state import CatalogState, ItemStore
from grserve.items.item_table import ItemTable


class LiveCatalog:
    def __init__(self, base: CatalogSnapshot, state_dir: str | Path | None = None,
                 model_dir: str | Path | None = None, recent: int = 20, busy: threading.Event | None = None):
        """`base`: version 0. `state_dir`: where the change log lives (None: in memory only, lost on exit).
        `model_dir`: where the codebooks of items added by text are (None: none). `busy` is set while a change
        is made (the engine's `lend_core`: it leaves the change a core)."""
        if base.version != 0 or base.disabled:
            raise ValueError("the base of a live catalog is version 0, with nothing disabled")
        self.base = self.current = base
        self.model_dir = model_dir
        self.log = ChangeLog(state_dir, fingerprint(base.table)) if state_dir is not None else None
        self.recent: tuple[dict, ...] = ()  # the last changes, newest last; replaced whole, so readers need no lock
        self._keep_recent = recent
        self.applied: collections.Counter[str] = collections.Counter()  # changes this process made, by kind
        self._store = ItemStore(base.table)
        self._base_state = CatalogState.of(base.table)
        self._state = self._base_state.copy()  # an addition changes the current state in place
        self._changes: list[Change] = []  # change v is _changes[v - 1]
        self._first_record: dict[int, int] = {}  # version of an AddItems → its first record in the store
        self._lock = threading.Lock()
        self.busy = busy or threading.Event()
        # Called with the log entry of each change made here, once it is built and before it is committed;
        # raising refuses the change, and nothing has changed.
        self.publisher: Callable[[dict], None] | None = None
        if self.log is not None:
            self._load()

    @property
    def version(self) -> int:
        return self.current.version

    def add_items(self, items: list[dict]) -> CatalogSnapshot:
        """Adds `{"item_id", "semantic_id": [c0, c1, ...]}` (as many codes as the table's levels) or `{"item_id",
        "text"}` items (each with an optional `title`); an existing id gets the new SID in its place."""
        table = self.base.table
        return self.apply(changes.parse_add(items, table.codebook_size, table.levels, self._text_encoder()))

    def apply_body(self, kind: str, body: bytes, max_items: int | None = None) -> CatalogSnapshot:
        """The change a request's JSON body asks for, read here (changes.read_body): "add" (`{"items"}`), "remove"
        (`{"item_ids"}`) or "availability" (`{"disable", "enable"}`)."""
        data = changes.read_body(kind, body, max_items)
        if kind == AddItems.kind:
            return self.add_items(data["items"])
        if kind == RemoveItems.kind:
            return self.remove_items(data["item_ids"])
        return self.set_availability(data.get("disable", []), data.get("enable", []))

    def remove_items(self, item_ids: list) -> CatalogSnapshot:
        return self.apply(changes.RemoveItems(changes.item_ids(item_ids, "item_ids")))

    def set_availability(self, disable: list = (), enable: list = ()) -> CatalogSnapshot:
        return self.apply(changes.parse_availability(list(disable), list(enable)))

    def rollback(self, version: int | None = None) -> CatalogSnapshot:
        """A new version equal to `version` (default: the one before the current)."""
        with self._changing():  # the default reads the current version: no change may land in between
            return self._apply(changes.parse_rollback(version, self.version))

    def apply(self, change: Change) -> CatalogSnapshot:
        """Publishes the next version; InvalidRequest (naming the field) when the change does not fit the
        current one, and nothing changes."""
        with self._changing():
            return self._apply(change)

    def apply_shared(self, entry: dict) -> CatalogSnapshot | None:
        """The change of a shared history's `entry` (a log entry, as a publisher got it), applied as the next
        version and not published again; None when this catalog holds that version already."""
        with self._changing():
            if entry["version"] <= self.version:
                return None
            if entry["version"] != self.version + 1:
                raise ValueError(f"version {entry['version']} of the shared history follows {self.version + 1}, "
                                 f"which this catalog has not got")
            return self._apply(changes.from_json(entry), entry.get("at"), publish=False)

    @contextlib.contextmanager
    def _changing(self):
        """One change at a time, with `busy` set while it is made."""
        with self._lock:
            self.busy.set()
            try:
                yield
            finally:
                self.busy.clear()

    def change(self, version: int) -> Change:
        """The change that made `version` (1 or later)."""
        return self._changes[version - 1]

    def _apply(self, change: Change, at: float | None = None, publish: bool = True) -> CatalogSnapshot:
        version, state, first = self.version + 1, None, None
        if isinstance(change, Rollback):
            changes.parse_rollback(change.to_version, self.version)
            state = self._replay(change.to_version)
            snapshot = self._snapshot(state, version)
        elif isinstance(change, AddItems):
            # Known ids keep their rows, so the disabled rows stay; the state is changed in place once the change
            # is committed, as copying its order (1M entries) would hold the GIL ~30 ms beside the step thread.
            change = self._state.with_titles(change, self._store)
            first = self._store.append(change.items)
            snapshot = CatalogSnapshot.build(version, self._added(first, len(change.items)),
                                             self.current.disabled)
        else:
            self._state.check(change)
            state = self._state.apply(change, version)
            snapshot = self._snapshot(state, version)
        entry = {"version": version, "at": round(time.time() if at is None else at, 3), **changes.to_json(change)}
        if publish and self.publisher is not None:
            self.publisher(entry)
        if self.log is not None:
            self.log.append(entry)
        if state is None:
            state = self._state.apply(change, version, first, in_place=True)
        self._record(change, version, first, entry["at"])
        self._state, self.current = state, snapshot
        self.applied[change.kind] += 1
        return snapshot

    def _record(self, change: Change, version: int, first: int | None, at: float) -> None:
        self._changes.append(change)
        if first is not None:
            self._first_record[version] = first
        entry = {"version": version, "kind": change.kind, "items": changes.size(change), "at": round(at, 3)}
        if isinstance(change, Rollback):
            entry["to_version"] = change.to_version
        self.recent = (*self.recent, entry)[-self._keep_recent:]

    def _added(self, first: int, count: int) -> ItemTable:
        """The current table with the `count` records from `first` (an AddItems'): what the store would give, in
        numpy copies alone (additions are what a catalog takes most, and most often in bulk)."""
        return self.current.table.with_records(*self._store.records(first, count))

    def _snapshot(self, state: CatalogState, version: int) -> CatalogSnapshot:
        """The snapshot of `state`: table, trie and tables shared with the current version or version 0 when
        the items are theirs, built afresh otherwise."""
        for known, items_version in ((self.current, self._state.items_version), (self.base, 0)):
            if state.items_version == items_version:
                return known.with_disabled(version, state.disabled_rows(known.table))
        table = self._store.table(state.order)
        return CatalogSnapshot.build(version, table, state.disabled_rows(table))

    def _replay(self, upto: int) -> CatalogState:
        """The state of version `upto`, from version 0 and the changes since."""
        targets = {c.to_version for c in self._changes[:upto] if isinstance(c, Rollback)}
        state, saved = self._base_state.copy(), {}
        for version, change in enumerate(self._changes[:upto], 1):
            if version - 1 in targets:
                saved[version - 1] = state.copy()
            if isinstance(change, Rollback):
                state = saved[change.to_version].copy()
            else:
                state = state.apply(change, version, self._first_record.get(version), in_place=True)
        return state

    def _load(self) -> None:
        """Replays the change log: the catalog comes back at its last acknowledged version."""
        entries = self.log.load()
        for version, entry in enumerate(entries, 1):
            change = changes.from_json(entry)
            first = self._store.append(change.items) if isinstance(change, AddItems) else None
            self._record(change, version, first, entry.get("at", 0.0))
        if entries:
            try:
                state = self._replay(len(entries))
            except KeyError as e:  # a log that was edited by hand, or belongs to another history
                raise ValueError(f"{self.log.path}: a change names item {e} that its version does not hold") from None
            self.current = self._snapshot(state, len(entries))
            self._state = state

    @functools.cached_property
    def _codebooks(self):
        from grserve.items.codebooks import Codebooks  # only a catalog that receives text needs them
        return Codebooks.load(self.model_dir) if self.model_dir is not None else None

    def _text_encoder(self) -> changes.TextEncoder | None:
        return self._codebooks.encode_texts if self._codebooks is not None else None

    def summary(self, snapshot: CatalogSnapshot | None = None) -> dict:
        """Version, size and the last changes, of `snapshot` (a version a change returned) or the current one."""
        return summary(snapshot or self.current, self.recent)


def summary(s: CatalogSnapshot, recent: tuple[dict, ...]) -> dict:
    return {"version": s.version, "items": len(s.table), "disabled": len(s.disabled),
            "semantic_ids": s.trie.num_leaves, "changes": list(recent)}
