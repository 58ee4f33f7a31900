"""An instance's live catalog kept in step with its model's catalog history in etcd (catalog_history.py).

At start the sync reconciles: the changes the history and this catalog both have are compared (a state
directory may hold changes from before), those it lacks are applied in order through LiveCatalog.apply_shared
(so its own change log records them too), and those it holds beyond the history (made while it ran alone) are
published. Then a thread polls the history's version every `poll_s` seconds and applies what is new.

A change made through this instance's own admin API is published first, by a compare-and-swap at its version
+ 1, and committed here only once published: an instance that loses the race (it had not caught up yet)
refuses the change (409) rather than keep a version the others never get. A catalog whose history differs
(another item table under the model's name, or a state directory of changes made elsewhere) is out of step:
`error` says why, its heartbeats report it, routers send it requests only while no instance is in step, and it
takes no changes."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from grserve.catalog import changes
from grserve.catalog.change_log import LogUnavailable, fingerprint
from grserve.catalog.live import LiveCatalog
from grserve.service.catalog_history import CatalogConflict, CatalogHistory
from grserve.service.registry import RegistryError

log = logging.getLogger("grserve")


class CatalogSync:
    def __init__(self, history: CatalogHistory, catalog: LiveCatalog, poll_s: float = 0.25):
        self.history, self.catalog, self.poll_s = history, catalog, poll_s
        self.error = ""  # why the catalog is out of step with the history ("": in step)
        self.on_change: Callable[[], None] = lambda: None  # after the version moved: e.g. heartbeat at once
        self._checked = False  # reconciled with the history once
        self._reported = catalog.version
        self._stopping, self._wake = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CatalogSync:
        """Publishes the changes made here from now on, catches up with the history (before it returns), then
        polls it on a daemon thread. RegistryError when etcd cannot be reached."""
        self.catalog.publisher = self._publish
        self.step()
        self._thread = threading.Thread(target=self._run, name="grserve-catalog-sync", daemon=True)
        self._thread.start()
        return self

    def report(self) -> dict:
        """The heartbeat's catalog fields."""
        return {"catalog_version": self.catalog.version, "catalog_error": self.error}

    def step(self) -> None:
        """One poll: applies what the history has beyond this catalog; reconciles the first time, and when the
        history is behind it (etcd lost its data)."""
        if self.error:
            return
        # The version first: a change committed here in between then reads as one to skip, not a history behind.
        version, head = self.catalog.version, self.history.head()
        try:
            if not self._checked or head < version:
                self._reconcile(head, version)
            elif head > version:
                self._apply(self.history.entries(version, head))
        except CatalogConflict as e:  # another instance wrote meanwhile: the next poll sees what it wrote
            log.warning("catalog sync: %s", e)
        if self.catalog.version != self._reported:
            self._reported = self.catalog.version
            self.on_change()

    def _reconcile(self, head: int, version: int) -> None:
        table = fingerprint(self.catalog.base.table)
        if self.history.claim_table(table) != table:
            return self._out_of_step(f"etcd's catalog history of {self.history.model} is over another item table: "
                                     f"a different model shares the name (its directory's); rename one")
        common = min(head, version)
        for entry in self.history.entries(0, common):
            if changes.to_json(changes.from_json(entry)) != changes.to_json(self.catalog.change(entry["version"])):
                return self._out_of_step(f"its catalog differs from etcd's history at version {entry['version']} "
                                         f"(its state directory holds changes made elsewhere): start it with a fresh "
                                         f"--state-dir to follow the history")
        for v in range(head + 1, version + 1):  # changes made while it ran alone, or before etcd lost its data
            self.history.publish({"version": v, "at": round(time.time(), 3),
                                  **changes.to_json(self.catalog.change(v))})
        self._checked = True
        if head > common:
            self._apply(self.history.entries(common, head))

    def _apply(self, entries: list[dict]) -> None:
        for entry in entries:
            try:
                self.catalog.apply_shared(entry)
            except ValueError as e:  # InvalidRequest among them: the change does not fit this catalog
                return self._out_of_step(f"version {entry['version']} of etcd's history does not apply to its "
                                         f"catalog: {e}")

    def _out_of_step(self, why: str) -> None:
        self.error = why
        log.error("catalog sync: this instance stops following etcd's catalog history, and takes no changes: %s", why)

    def _publish(self, entry: dict) -> None:
        if self.error or not self._checked:
            raise CatalogConflict("this instance's catalog is not in step with etcd's history, so it takes no "
                                  "changes: " + (self.error or "it has not compared them yet; retry in a moment"))
        try:
            self.history.publish(entry)
        except CatalogConflict:
            self._wake.set()  # catch up now rather than at the next poll
            raise
        except RegistryError as e:
            raise LogUnavailable(f"the change is not applied: the shared catalog history cannot be "
                                 f"written: {e}") from e

    def _run(self) -> None:
        while True:
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.step()
            except RegistryError as e:  # an etcd blip: keep serving the version held, and poll again
                log.warning("catalog sync: %s", e)
            except Exception:  # one bad poll must not end the sync
                log.exception("catalog sync failed; retrying")

    def stop(self) -> None:
        """Stops polling; changes made here are still published (or refused), never kept unshared."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
