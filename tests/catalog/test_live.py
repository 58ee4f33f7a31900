"""The live catalog under the engine, against the oracle (tests/catalog/oracle.py): after every kind of change
the answers equal the reference beam search over the changed catalog; disabled and removed items never appear;
a rollback restores the exact earlier answers; a request built before a change is answered on its own version;
availability changes share the trie; a restart replays the log to the latest version. On SIDs of 3 and 4 levels."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from grserve.bundle import GRBundle
from grserve.catalog.process import CatalogProcess
from grserve.engine.gr.config import EngineConfig
from grserve.recommender import Recommender
from tests.catalog.oracle import CatalogModel, assert_same_answer, reference_answer
from tests.conftest import make_bundle

CONFIG = EngineConfig(max_beam_width=32, max_batch_rows=128)
HISTORIES = [["i3", "i17"], ["i40"], []]
TOP_N, WIDTH = 6, 16


def answers(rec, model: CatalogModel, version: int) -> list[list[tuple[str, float]]]:
    """The engine's answers to HISTORIES, each checked against the oracle on `model` and to be on `version`."""
    out = []
    for history in HISTORIES:
        got = rec.recommend(history, TOP_N, WIDTH)
        assert got.catalog_version == version
        pairs = [(i.item_id, i.score) for i in got.items]
        assert_same_answer(pairs, reference_answer(rec.bundle, model, history, TOP_N, WIDTH))
        out.append(pairs)
    return out


def ids(answer_sets) -> set[str]:
    return {i for answer in answer_sets for i, _ in answer}


@pytest.fixture(scope="module", params=[3, 4], ids=["3-levels", "4-levels"])
def bundle(request):
    return make_bundle(num_items=200, codebook_size=6, seed=5, levels=request.param)


@pytest.fixture(scope="module")
def saved_bundle(bundle, tmp_path_factory):
    """The bundle loaded from a directory, as a catalog process loads it."""
    directory = tmp_path_factory.mktemp("model")
    bundle.save(directory)
    return GRBundle.load(directory)


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "catalog-process"])
def test_every_kind_of_change_answers_as_the_reference(bundle, saved_bundle, in_process):
    """The same changes, made by the catalog in the serving process and by one in its own process
    (catalog/process.py), whose versions the serving process mirrors."""
    bundle = bundle if in_process else saved_bundle
    rec = Recommender(bundle, CONFIG, catalog_process=not in_process)
    assert isinstance(rec.catalog, CatalogProcess) is not in_process
    model = CatalogModel(bundle.table)
    try:
        base = answers(rec, model, 0)
        top = base[1][0][0]  # the best answer to ["i40"]: a new item on its SID is recommended beside it
        fresh = next(t for t in itertools.product(range(6), repeat=bundle.table.levels)
                     if t not in set(model.sids.values()))
        rec.catalog.add_items([{"item_id": "new-1", "semantic_id": list(model.sids[top])},
                               {"item_id": "new-2", "semantic_id": list(fresh), "title": "fresh"}])
        model.add("new-1", model.sids[top]).add("new-2", fresh)
        assert "new-1" in ids([answers(rec, model, 1)[1]])
        only = rec.recommend([], 1, WIDTH, allow=["new-2"]).items  # a fresh SID is in the trie at once
        assert [(i.item_id, i.title, tuple(i.semantic_id)) for i in only] == [("new-2", "fresh", fresh)]

        rec.catalog.add_items([{"item_id": "i7", "semantic_id": list(fresh)}])  # an update keeps its place
        model.add("i7", fresh)
        v2 = answers(rec, model, 2)
        assert rec.catalog.current.table.row_of("i7") == 7

        gone = [v2[0][0][0], "new-2"]
        rec.catalog.remove_items(gone)
        model.remove(*gone)
        assert not set(gone) & ids(answers(rec, model, 3))

        off = sorted(ids(answers(rec, model, 3)))[:8]
        rec.catalog.set_availability(disable=off)
        model.disable(*off)
        v4 = answers(rec, model, 4)
        assert not set(off) & ids(v4)
        slow, fast = (rec.recommend([], TOP_N, WIDTH, reference=r).items for r in (True, False))
        assert_same_answer([(i.item_id, i.score) for i in fast], [(i.item_id, i.score) for i in slow])

        rec.catalog.set_availability(enable=off[:3])
        answers(rec, model.enable(*off[:3]), 5)

        rec.catalog.rollback()  # to version 4
        model.disable(*off[:3])
        assert_each_equal(answers(rec, model, 6), v4)
        rec.catalog.rollback(0)
        assert_each_equal(answers(rec, CatalogModel(bundle.table), 7), base)
    finally:
        rec.close()


def assert_each_equal(got, want) -> None:
    for g, w in zip(got, want, strict=True):
        assert_same_answer(g, w)


def test_availability_shares_the_trie_and_rollback_to_base_reuses_it(bundle):
    rec = Recommender(bundle, CONFIG)
    try:
        base = rec.catalog.current
        off = rec.catalog.set_availability(disable=["i1", "i2"])
        assert off.trie is base.trie and off.tables is base.tables and off.table is base.table
        added = rec.catalog.add_items([{"item_id": "x", "semantic_id": [0] * bundle.table.levels}])
        assert added.trie is not base.trie and added.disabled == {1, 2}
        back = rec.catalog.rollback(0)
        assert back.trie is base.trie and back.disabled == frozenset() and back.version == 3
    finally:
        rec.close()


def test_a_request_built_before_a_change_is_answered_on_its_version(bundle):
    """Requests of two versions waiting together are answered each on its own, never in one step."""
    rec = Recommender(bundle, CONFIG)
    versions_per_step = []
    rec.engine.step_hooks.append(lambda batch, _: versions_per_step.append({r.catalog.version for r in batch.requests}))
    try:
        model = CatalogModel(bundle.table)
        old = rec.catalog.current
        before = [rec.request([old.table.row_of(h) for h in history], TOP_N, WIDTH) for history in HISTORIES]
        first = reference_answer(bundle, model, HISTORIES[0], TOP_N, WIDTH)
        rec.catalog.remove_items([first[0][0]])
        rec.catalog.set_availability(disable=[first[1][0]])
        new_model = model.copy().remove(first[0][0]).disable(first[1][0])
        new = rec.catalog.current
        after = [rec.request([new.table.row_of(h) for h in history], TOP_N, WIDTH) for history in HISTORIES]
        futures = [rec.engine.submit(r) for r in before + after]  # waiting together, versions in turn
        for n, (request, future) in enumerate(zip(before + after, futures)):
            result = future.result(timeout=60)
            assert result.catalog_version == request.catalog.version == (0 if n < 3 else 2)
            got = [(request.catalog.table.raw_ids[row], score) for row, score, _ in result.items]
            want = reference_answer(bundle, model if n < 3 else new_model, HISTORIES[n % 3], TOP_N, WIDTH)
            assert_same_answer(got, want)
        assert all(len(v) == 1 for v in versions_per_step)
    finally:
        rec.close()


def test_restart_replays_the_log_and_never_writes_the_model_directory(tiny_model_dir, tmp_path):
    model_files = {p.name: p.read_bytes() for p in Path(tiny_model_dir).iterdir()}
    bundle = GRBundle.load(tiny_model_dir)
    rec = Recommender(bundle, CONFIG, state_dir=tmp_path)
    models = [CatalogModel(bundle.table)]

    def change(apply, new_model):
        apply()
        models.append(new_model(models[-1].copy()))
    try:
        change(lambda: rec.catalog.add_items([{"item_id": "n1", "semantic_id": [4, 4, 4], "title": "N"}]),
               lambda m: m.add("n1", (4, 4, 4)))
        change(lambda: rec.catalog.remove_items(["i0", "i5"]), lambda m: m.remove("i0", "i5"))
        change(lambda: rec.catalog.rollback(1), lambda _: models[1].copy())
        change(lambda: rec.catalog.set_availability(disable=["i9", "n1"]), lambda m: m.disable("i9", "n1"))
        change(lambda: rec.catalog.rollback(3), lambda _: models[3].copy())
        change(lambda: rec.catalog.add_items([{"item_id": "i5", "semantic_id": [0, 1, 2]}]),
               lambda m: m.add("i5", (0, 1, 2)))
        latest = answers(rec, models[6], 6)
    finally:
        rec.close()
    again = Recommender(GRBundle.load(tiny_model_dir), CONFIG, state_dir=tmp_path)
    try:
        assert again.catalog.version == 6
        assert [c["version"] for c in again.catalog.summary()["changes"]] == list(range(1, 7))
        assert again.catalog.current.table.titles[again.catalog.current.table.row_of("n1")] == "N"
        assert_each_equal(answers(again, models[6], 6), latest)
        again.catalog.rollback(2)  # across the restart: replayed from the log
        answers(again, models[2], 7)
    finally:
        again.close()
    assert {p.name: p.read_bytes() for p in Path(tiny_model_dir).iterdir()} == model_files


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "catalog-process"])
def test_the_engine_lends_a_core_while_a_change_is_made(bundle, saved_bundle, in_process):
    """The engine's lend_core is set while the change is made (seen from the publisher, which runs mid-change)
    and cleared once it is answered."""
    rec = Recommender(bundle if in_process else saved_bundle, CONFIG, catalog_process=not in_process)
    seen = []
    rec.catalog.publisher = lambda entry: seen.append(rec.engine.lend_core.is_set())
    try:
        rec.catalog.set_availability(disable=["i1"])
        assert seen == [True] and not rec.engine.lend_core.is_set()
    finally:
        rec.close()
