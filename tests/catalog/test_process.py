"""The catalog in its own process (catalog/process.py): what the serving process mirrors equals what an
in-process catalog holds after the same changes (a hand-checked table: ids, SIDs, titles, disabled rows), a
child's error is raised in the parent with its field, the etcd publisher is asked before a change is committed
and can refuse it, a restart replays the change log in the child, and a dead child answers 503-style errors."""
from __future__ import annotations

import numpy as np
import pytest

from grserve.bundle import GRBundle
from grserve.catalog.change_log import LogConflict, LogUnavailable
from grserve.catalog.process import CatalogProcess
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.errors import InvalidRequest
from tests.conftest import make_bundle


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    make_bundle(num_items=30, codebook_size=5, seed=2).save(directory)
    return directory


def start(model_dir, state_dir=None) -> CatalogProcess:
    table = GRBundle.load(model_dir).table
    return CatalogProcess(CatalogSnapshot.build(0, table), model_dir, state_dir)


def test_the_mirror_holds_what_each_change_made(model_dir):
    catalog = start(model_dir)
    try:
        catalog.add_items([{"item_id": "n1", "semantic_id": [4, 4, 4], "title": "New"},
                           {"item_id": "i3", "semantic_id": [0, 1, 2]}])
        t = catalog.current.table
        assert len(t) == 31 and t.row_of("n1") == 30 and t.row_of("i3") == 3
        assert t.codes[30].tolist() == [4, 4, 4] and t.codes[3].tolist() == [0, 1, 2]
        assert t.titles[30] == "New" and t.raw_ids[30] == "n1"
        assert 30 in catalog.current.trie.items_of(4, 4, 4)
        catalog.set_availability(disable=["i5", "n1"])
        assert catalog.current.disabled == {5, 30} and catalog.current.table is t
        assert bool(catalog.current.availability.disabled[30]) and catalog.version == 2
        catalog.remove_items(["i0"])
        t = catalog.current.table
        assert len(t) == 30 and t.row_of("i0") is None and t.row_of("n1") == 29 and t.raw_ids[0] == "i1"
        assert catalog.current.disabled == {4, 29}  # i5 and n1, one row up each
        back = catalog.rollback(1)
        assert back.version == 4 and len(back.table) == 31 and back.disabled == frozenset()
        assert catalog.summary()["version"] == 4 and [c["kind"] for c in catalog.summary()["changes"]] == \
            ["add", "availability", "remove", "rollback"]
        assert catalog.change(1).items[0].item_id == "n1"
    finally:
        catalog.close()


def test_errors_come_back_with_their_field_and_change_nothing(model_dir):
    catalog = start(model_dir)
    try:
        with pytest.raises(InvalidRequest) as e:
            catalog.add_items([{"item_id": "x", "semantic_id": [0, 0, 9]}])
        assert e.value.param == "items.0.semantic_id"
        with pytest.raises(InvalidRequest, match="not in the catalog") as e:
            catalog.set_availability(disable=["nope"])
        assert e.value.param == "disable.0" and catalog.version == 0
    finally:
        catalog.close()


def test_the_publisher_is_asked_first_and_may_refuse(model_dir):
    catalog = start(model_dir)
    asked = []

    def publish(entry):
        asked.append(entry)
        if len(asked) == 2:
            raise LogConflict("another instance published version 2 first")

    catalog.publisher = publish
    try:
        catalog.set_availability(disable=["i1"])
        with pytest.raises(LogConflict, match="first"):
            catalog.add_items([{"item_id": "n", "semantic_id": [1, 1, 1]}])
        assert [(a["version"], a["kind"]) for a in asked] == [(1, "availability"), (2, "add")]
        assert catalog.version == 1 and catalog.current.table.row_of("n") is None
        catalog.publisher = None
        assert catalog.add_items([{"item_id": "n", "semantic_id": [1, 1, 1]}]).table.row_of("n") == 30
    finally:
        catalog.close()


def test_a_restart_replays_the_log_in_the_child(model_dir, tmp_path):
    catalog = start(model_dir, tmp_path)
    try:
        catalog.add_items([{"item_id": "n1", "semantic_id": [2, 2, 2], "title": "T"}])
        catalog.set_availability(disable=["i2"])
    finally:
        catalog.close()
    again = start(model_dir, tmp_path)
    try:
        s = again.current
        assert s.version == 2 and s.table.row_of("n1") == 30 and s.table.titles[30] == "T"
        assert s.disabled == {2} and np.array_equal(s.table.codes[30], [2, 2, 2])
    finally:
        again.close()


def test_a_dead_child_is_an_unavailable_catalog(model_dir):
    catalog = start(model_dir)
    try:
        catalog._proc.kill()
        catalog._proc.join()
        with pytest.raises(LogUnavailable, match="catalog process is gone"):
            catalog.set_availability(disable=["i1"])
    finally:
        catalog.close()
