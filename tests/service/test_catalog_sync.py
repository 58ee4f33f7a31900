"""Live catalogs kept in step through a real etcd: the history is a compare-and-swap sequence; a change made on
one catalog reaches the others in order; one that lost the race, or that etcd cannot take, is refused and nothing
changes; a catalog starts by catching up, and publishes the changes it made alone; one whose history differs is
out of step and says why."""
from __future__ import annotations

import pytest

from grserve.catalog.change_log import LogUnavailable
from grserve.catalog.live import LiveCatalog
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.errors import InvalidRequest
from grserve.service.catalog_history import MAX_CHANGE_BYTES, CatalogConflict, CatalogHistory
from grserve.service.catalog_sync import CatalogSync
from grserve.service.registry import Registry
from tests.conftest import make_bundle
from tests.server.conftest import free_port
from tests.service.conftest import wait_for


@pytest.fixture
def history(registry, prefix) -> CatalogHistory:
    return CatalogHistory(registry, "tiny", root=prefix)


def catalog(table, state_dir=None) -> LiveCatalog:
    return LiveCatalog(CatalogSnapshot.build(0, table), state_dir)


def content(c: LiveCatalog) -> tuple:
    s = c.current
    return s.version, list(s.table.raw_ids), s.table.codes.tolist(), sorted(s.table.raw_ids[r] for r in s.disabled)


@pytest.fixture
def synced(history, tiny_bundle):
    """Catalogs over `history`, each with its sync started (`poll_s` seconds between polls)."""
    syncs = []

    def make(state_dir=None, poll_s=0.05, table=tiny_bundle.table):
        syncs.append(CatalogSync(history, catalog(table, state_dir), poll_s).start())
        return syncs[-1]
    yield make
    for s in syncs:
        s.stop()


def test_the_history_is_a_compare_and_swap_sequence(history):
    first = {"version": 1, "at": 1.0, "kind": "remove", "item_ids": ["i1"]}
    history.publish(first)
    for entry in (first, {**first, "version": 3}):  # taken already; not the next one
        with pytest.raises(CatalogConflict):
            history.publish(entry)
    history.publish({**first, "version": 2, "item_ids": ["i2"]})
    assert history.head() == 2 and [e["item_ids"] for e in history.entries(0, 2)] == [["i1"], ["i2"]]
    assert history.entries(1, 2)[0]["version"] == 2 and history.key(2).endswith("/changes/000000000002")
    huge = {"version": 3, "at": 1.0, "kind": "add", "items": [{"item_id": "x" * MAX_CHANGE_BYTES}]}
    with pytest.raises(InvalidRequest) as e:
        history.publish(huge)
    assert e.value.param == "items" and history.head() == 2


def test_a_change_on_one_catalog_reaches_the_others_in_order(synced):
    a, b = synced(), synced()
    beats = []
    b.on_change = lambda: beats.append(b.catalog.version)
    a.catalog.set_availability(disable=["i3", "i7"])
    wait_for(lambda: b.catalog.version == 1, 5, "b at version 1")
    b.catalog.add_items([{"item_id": "new", "semantic_id": [1, 2, 3]}])
    wait_for(lambda: a.catalog.version == 2, 5, "a at version 2")
    a.catalog.rollback()
    wait_for(lambda: b.catalog.version == 3, 5, "b at version 3")
    assert content(a.catalog) == content(b.catalog)
    assert content(b.catalog)[3] == ["i3", "i7"] and "new" not in content(b.catalog)[1]
    assert beats[-1] == 3 and a.report() == {"catalog_version": 3, "catalog_error": ""}


def test_a_catalog_that_lost_the_race_refuses_and_catches_up(synced, tmp_path):
    a, b = synced(), synced(tmp_path, poll_s=60)  # b reads the history only when told to
    a.catalog.set_availability(disable=["i1"])
    with pytest.raises(CatalogConflict, match="version 1 .* already in etcd"):
        b.catalog.remove_items(["i2"])
    assert b.catalog.version == 0 and not (tmp_path / "changes.jsonl").exists()  # nothing kept, not even logged
    wait_for(lambda: b.catalog.version == 1, 5, "b to catch up (the refusal wakes its sync)")
    b.catalog.remove_items(["i2"])
    wait_for(lambda: a.catalog.version == 2, 5, "a at version 2")
    assert content(a.catalog) == content(b.catalog)
    assert catalog(b.catalog.base.table, tmp_path).version == 2  # b's own log recorded both


def test_a_catalog_publishes_what_it_did_alone_and_a_new_one_catches_up(synced, tiny_bundle, tmp_path):
    alone = catalog(tiny_bundle.table, tmp_path / "a")
    alone.add_items([{"item_id": "n1", "semantic_id": [0, 1, 2]}])
    alone.set_availability(disable=["i5"])
    a = synced(tmp_path / "a")  # restarted, now registered: its two versions become the history
    assert a.history.head() == 2
    late = synced(tmp_path / "late")
    assert content(late.catalog) == content(a.catalog) and late.catalog.version == 2
    assert catalog(tiny_bundle.table, tmp_path / "late").version == 2


def test_a_catalog_with_another_history_is_out_of_step(synced, tiny_bundle, tmp_path):
    synced().catalog.set_availability(disable=["i1"])
    other = catalog(tiny_bundle.table, tmp_path)
    other.set_availability(disable=["i2"])
    diverged = synced(tmp_path)
    assert "differs from etcd's history at version 1" in diverged.error
    assert diverged.report()["catalog_error"] == diverged.error
    with pytest.raises(CatalogConflict, match="not in step"):
        diverged.catalog.set_availability(enable=["i2"])
    assert content(diverged.catalog)[:1] + content(diverged.catalog)[3:] == (1, ["i2"])
    foreign = synced(table=make_bundle(seed=5).table)  # another model's items under the same name
    assert "another item table" in foreign.error and foreign.catalog.version == 0


def test_a_change_etcd_cannot_take_is_not_applied(synced):
    a = synced(poll_s=60)
    a.history = CatalogHistory(Registry(f"http://127.0.0.1:{free_port()}", timeout=0.5), "tiny")  # nothing there
    with pytest.raises(LogUnavailable, match="not applied"):
        a.catalog.set_availability(disable=["i1"])
    assert a.catalog.version == 0
