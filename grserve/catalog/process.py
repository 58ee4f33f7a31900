"""The live catalog in a process of its own, mirrored in the serving process.

For a 1M-item catalog a change of 10,000 items costs ~60 ms of Python (checking it, the change log's JSON) and
0.1-0.3 s of numpy (the trie and candidate tables). In the serving process, each millisecond of that which
holds the GIL is one the engine's step thread waits for (every torch op hands the GIL back and must take it
again), so steps beside a change took up to ten times their time. Here the catalog (catalog/live.py, the same
code) runs in a child process; each new version comes back as arrays in shared memory (torch.multiprocessing:
no copy to take them), with the ids and titles the child appended to its item pools, which the mirror appends
to its own (items/item_table.py): a version costs the serving process Python work in proportion to its
change's ids only.

Changes go to the child one at a time and are answered with the version they made; a child's error (a bad
field, a conflict) is raised here as it was raised there. An instance that shares its history through etcd
publishes from here: the child asks, while the change waits, and takes the answer (catalog_sync.py)."""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing  # registers the reductions that pass tensors through shared memory

from grserve.catalog.change_log import LogUnavailable, fingerprint
from grserve.catalog.changes import Change
from grserve.catalog.live import LiveCatalog, summary
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.items.item_table import ItemTable

# Catalogs from this size have their own process by default: below it a change costs the step thread little.
PROCESS_MIN_ITEMS = 100_000


class CatalogProcess:
    """A LiveCatalog's interface, served by a child process: `current` is this process's mirror of its current
    version, over `base` (version 0, the engine's own snapshot of the model directory's table)."""

    def __init__(self, base: CatalogSnapshot, model_dir: str | Path, state_dir: str | Path | None = None,
                 recent: int = 20, busy: threading.Event | None = None):
        """`busy` is set while the child works on a change (the engine's `lend_core`: it leaves the child a core)."""
        # The mirror's versions share pools of their own, equal to the child's fresh load: `base.table`'s may
        # hold what other catalogs over it appended.
        self.base = self.current = replace(base, table=base.table.detached())
        self.busy = busy or threading.Event()
        self.recent: tuple[dict, ...] = ()
        self.applied: collections.Counter[str] = collections.Counter()
        self.publisher: Callable[[dict], None] | None = None  # as LiveCatalog's, called while the child waits
        self._lock = threading.Lock()
        ctx = torch.multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(model_dir), state_dir and str(state_dir), recent),
                                 name="grserve-catalog", daemon=True)
        self._proc.start()
        child.close()
        try:
            table_fingerprint, update = self._call("ready")
            if table_fingerprint != fingerprint(base.table):
                raise ValueError(f"{model_dir}: the catalog process loaded another item table than the engine's")
            self._adopt(update)
        except BaseException:
            self.close()
            raise

    @property
    def version(self) -> int:
        return self.current.version

    def add_items(self, items: list[dict]) -> CatalogSnapshot:
        return self._change("add_items", items)

    def apply_body(self, kind: str, body: bytes, max_items: int | None = None) -> CatalogSnapshot:
        return self._change("apply_body", kind, body, max_items)  # read by the child: no JSON work here

    def remove_items(self, item_ids: list) -> CatalogSnapshot:
        return self._change("remove_items", item_ids)

    def set_availability(self, disable: list = (), enable: list = ()) -> CatalogSnapshot:
        return self._change("set_availability", list(disable), list(enable))

    def rollback(self, version: int | None = None) -> CatalogSnapshot:
        return self._change("rollback", version)

    def apply_shared(self, entry: dict) -> CatalogSnapshot | None:
        return self._change("apply_shared", entry)

    def change(self, version: int) -> Change:
        return self._call("change", version)

    def summary(self, snapshot: CatalogSnapshot | None = None) -> dict:
        return summary(snapshot or self.current, self.recent)

    def _change(self, method: str, *args) -> CatalogSnapshot | None:
        with self._lock:  # one at a time, so the mirror takes versions in order
            self.busy.set()
            try:
                update = self._call(method, *args)
            finally:
                self.busy.clear()
            return self._adopt(update) if update is not None else None

    def _call(self, method: str, *args):
        """The child's answer to `method(*args)`; what it raised is raised here."""
        try:
            if method != "ready":
                self._conn.send((method, args))
            while True:
                kind, value = self._conn.recv()
                if kind != "publish":
                    break
                self._conn.send(self._publish(value))
        except (EOFError, OSError) as e:
            raise LogUnavailable(f"the catalog process is gone (exit code {self._proc.exitcode}): {e!r}") from None
        if kind == "error":
            raise value
        return value

    def _publish(self, entry: dict) -> tuple[str, BaseException | None]:
        try:
            if self.publisher is not None:
                self.publisher(entry)
            return "published", None
        except Exception as e:  # refused (409/503): the child raises it, and the change is not made
            return "refused", e

    def _adopt(self, update: dict) -> CatalogSnapshot:
        """The mirror of the child's new version: its pools' new entries appended here, its arrays wrapped."""
        base = self.base.table
        base.extend_pools(*update["pools"])
        if "table" in update:
            arrays = {k: v.numpy() if v is not None else None for k, v in update["table"].items()}
            table, trie, tables = base.over(**arrays), update["trie"], update["tables"]
        else:
            known = self.current if update["same"] == "current" else self.base
            table, trie, tables = known.table, known.trie, known.tables
        disabled = frozenset(update["disabled"].tolist())
        self.current = CatalogSnapshot(update["version"], table, trie, tables, disabled, update["availability"])
        self.recent, self.applied = update["recent"], collections.Counter(update["applied"])
        return self.current

    def close(self) -> None:
        try:
            self._conn.send(("close", ()))
        except OSError:
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()


def _serve(conn, model_dir: str, state_dir: str | None, recent: int) -> None:
    """The child: a LiveCatalog over the model directory's table, answering the parent's calls until closed."""
    torch.set_num_threads(1)  # its numpy and torch work must not start a thread team beside the engine's
    try:
        table = ItemTable.load(model_dir)
        live = LiveCatalog(CatalogSnapshot.build(0, table), state_dir, model_dir, recent)
    except Exception as e:
        conn.send(("error", e))
        return
    live.publisher = lambda entry: _ask_publish(conn, entry)
    export = _Exporter(live)
    conn.send(("ready", (fingerprint(table), export.update(live.current, live.base))))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:  # the parent is gone
            return
        if method == "close":
            return
        before = live.current
        try:
            result = getattr(live, method)(*args)
            conn.send(("ok", export.update(result, before) if isinstance(result, CatalogSnapshot) else result))
        except Exception as e:
            conn.send(("error", e))


def _ask_publish(conn, entry: dict) -> None:
    conn.send(("publish", entry))
    answer, error = conn.recv()
    if answer != "published":
        raise error


class _Exporter:
    """What the mirror needs of each new version: only what it has not got."""

    def __init__(self, live: LiveCatalog):
        self.live = live
        self.sizes = _loaded_sizes(live.base.table)  # the parent's pools: its own load of the table

    def update(self, snapshot: CatalogSnapshot, before: CatalogSnapshot) -> dict:
        base = self.live.base.table
        ids, titles = base.pool_tail(self.sizes)
        pools = (self.sizes, ids, titles)
        self.sizes = base.pool_sizes()
        update = {"version": snapshot.version, "pools": pools, "availability": snapshot.availability,
                  "disabled": torch.from_numpy(np.fromiter(snapshot.disabled, np.int64, len(snapshot.disabled))),
                  "recent": self.live.recent, "applied": dict(self.live.applied)}
        if snapshot.table is before.table:
            update["same"] = "current"
        elif snapshot.table is self.live.base.table:
            update["same"] = "base"
        else:
            update["table"] = {k: torch.from_numpy(v) if v is not None else None
                               for k, v in snapshot.table.arrays().items()}
            update["trie"], update["tables"] = snapshot.trie, snapshot.tables
        return update


def _loaded_sizes(table: ItemTable) -> tuple[int, int]:
    """The pool sizes of a table as ItemTable.load made it (what the parent's copy holds before any change)."""
    titles = table.titles
    return len(table), 1 + (len(titles) if titles is not None else 0)


def process_wanted(table: ItemTable, setting: bool | None) -> bool:
    """Whether a catalog over `table` gets its own process: `setting`, or by size when None."""
    if setting is None:
        return len(table) >= PROCESS_MIN_ITEMS
    return setting

