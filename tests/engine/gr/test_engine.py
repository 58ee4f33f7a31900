"""The engine against the reference beam search: same items, same scores, only valid items, for random
models, catalogs, beam widths, prompt lengths, mixed batches and filters, with every ablation switch;
a thread that dies fails the engine loudly."""
from __future__ import annotations

import collections
import random
import threading

import pytest

from grserve.engine.gr.config import EngineConfig
from grserve.engine.failure import EngineFailed
from grserve.engine.gr.engine import GREngine
from grserve.engine.gr.request import GRRequest
from grserve.reference import reference_beam_search
from tests.conftest import make_bundle

SWITCHES = {
    "all-on": {},
    "expanded-kv": {"separated_kv": False},
    "full-sort": {"early_topk": False},
    "dense-mask": {"trie_candidates": False},
    "overlap-on": {"overlap": True},
    "compiled": {"compile": True},
}


def random_cases(bundle, rng, count, max_width, max_prompt, filters=True):
    n, triples = len(bundle.table), bundle.trie.num_leaves
    cases = []
    for _ in range(count):
        width = rng.randint(1, min(max_width, triples + 3))
        prompt = [1] + [rng.randrange(3, bundle.vocab.size) for _ in range(rng.randint(0, max_prompt - 1))]
        exclude, allow = set(), None
        if filters and rng.random() < 0.5:
            exclude = set(rng.sample(range(n), rng.randint(1, n // 3)))
        if filters and rng.random() < 0.25:
            allow = set(rng.sample(range(n), rng.randint(1, n // 2)))
        cases.append(GRRequest(prompt, width, rng.randint(1, width), exclude, allow))
    return cases


def assert_matches_reference(bundle, engine, cases):
    """Each case's answer is the reference's over the bundle's items, less its catalog's disabled ones."""
    futures = [engine.submit(c) for c in cases]  # submitted together: batched with mixed widths/lengths
    valid = {tuple(c) for c in bundle.table.codes.tolist()}
    results = [f.result(timeout=120) for f in futures]
    for case, result in zip(cases, results):
        got = result.items
        disabled = case.catalog.disabled if case.catalog is not None else frozenset()
        ref = reference_beam_search(bundle.model, case.prompt, case.beam_width, case.top_n, bundle.trie,
                                    bundle.vocab, case.exclude | disabled, case.allow)
        assert [i for i, _, _ in got] == [r.item for r in ref], (case.beam_width, len(case.prompt))
        for (item, score, sid), r in zip(got, ref):
            assert score == pytest.approx(r.score, abs=2e-4)
            assert sid == r.semantic_id and sid in valid
            assert item not in case.exclude | disabled and (case.allow is None or item in case.allow)
    return results


@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("seed", [0, 1])
def test_engine_equals_reference(switch, seed):
    bundle = make_bundle(num_items=250, codebook_size=6, seed=seed)
    engine = GREngine(bundle, EngineConfig(max_beam_width=128, max_batch_rows=256,
                                           max_batch_prompt_tokens=2048, **SWITCHES[switch]))
    try:
        assert_matches_reference(bundle, engine, random_cases(bundle, random.Random(seed), 10, 128, 120))
    finally:
        engine.shutdown()


def test_small_batches_split_by_budget():
    bundle = make_bundle(num_items=200, codebook_size=6, seed=3)
    engine = GREngine(bundle, EngineConfig(max_beam_width=32, max_batch_rows=40, max_batch_prompt_tokens=64,
                                           max_batch_requests=3))
    try:
        results = assert_matches_reference(bundle, engine, random_cases(bundle, random.Random(3), 12, 32, 30))
        # Each answer says how many requests its step answered: the answers sharing a step's compute time.
        steps = collections.Counter(r.compute_ms for r in results)
        assert all(1 <= r.batch_requests <= 3 and r.batch_requests == steps[r.compute_ms] for r in results)
        assert len(steps) >= 4  # 12 requests, 3 a step at most
    finally:
        engine.shutdown()


def test_rejects_invalid_requests(tiny_bundle):
    engine = GREngine(tiny_bundle, EngineConfig(max_beam_width=16, max_batch_rows=32))
    try:
        for bad, field in [(GRRequest([1], 17, 1), "beam_width"), (GRRequest([1], 8, 9), "top_n"),
                           (GRRequest([1], 0, 1), "beam_width"), (GRRequest([], 4, 1), "prompt"),
                           (GRRequest([1, tiny_bundle.vocab.size], 4, 1), "prompt")]:
            with pytest.raises(ValueError, match=field):
                engine.submit(bad)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("width,prompt_len", [(512, 64), (300, 300), (16, 2048), (1, 1)])
def test_extremes_equal_reference(width, prompt_len):
    bundle = make_bundle(num_items=3000, codebook_size=16, seed=7)
    engine = GREngine(bundle, EngineConfig(max_beam_width=512, max_batch_rows=1024,
                                           max_batch_prompt_tokens=8192))
    rng = random.Random(width)
    cases = [GRRequest([1] + [rng.randrange(3, bundle.vocab.size) for _ in range(prompt_len - 1)], width,
                       min(width, 50))]
    try:
        assert_matches_reference(bundle, engine, cases)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("separated,expected", [(True, lambda p, w: p + 2 * w), (False, lambda p, w: w * (p + 2))])
def test_kv_accounting_prompt_once_plus_two_tokens_per_beam(separated, expected):
    """From the engine's own accounting: a request with prompt P and beam W holds P + 2W tokens of KV per
    layer with the separated cache (the HF-style expanded cache: W(P + 2))."""
    bundle = make_bundle(num_items=400, codebook_size=8, seed=5)
    engine = GREngine(bundle, EngineConfig(max_beam_width=64, max_batch_rows=64, separated_kv=separated))
    prompt = [1] + [3 + i % (bundle.vocab.size - 3) for i in range(3 * 40)]
    try:
        engine.submit(GRRequest(prompt, 64, 5)).result(timeout=60)
        tokens = engine.runner.kv.kv_tokens()
        assert tokens["shared"] + tokens["unshared"] == expected(len(prompt), 64)
    finally:
        engine.shutdown()


class Boom(BaseException):
    """Not an Exception: it passes the engine's per-batch handlers, as a bug outside them would."""


def test_dead_step_thread_fails_every_request_and_refuses_new_ones(tiny_bundle, caplog):
    engine = GREngine(tiny_bundle, EngineConfig(max_beam_width=8, max_batch_rows=8, max_batch_requests=1))
    entered, release = threading.Event(), threading.Event()

    def run(batch):
        entered.set()
        release.wait(30)
        raise Boom("kaput")

    engine.runner.run = run
    try:
        running = engine.submit(GRRequest([1], 8, 1))
        assert entered.wait(30)
        waiting = [engine.submit(GRRequest([1], 8, 1)) for _ in range(3)]  # one request per batch: these wait
        release.set()
        for future in [running, *waiting]:
            with pytest.raises(EngineFailed, match="gr-step died: Boom: kaput"):
                future.result(timeout=30)
        assert engine.failure == "engine thread gr-step died: Boom: kaput"
        with pytest.raises(EngineFailed, match="Boom: kaput"):
            engine.submit(GRRequest([1], 8, 1))
        (record,) = [r for r in caplog.records if r.levelname == "ERROR" and "Boom" in r.getMessage()]
        assert record.exc_info and record.exc_info[0] is Boom  # logged with its traceback
    finally:
        engine.shutdown()


def test_dead_prepare_thread_fails_the_engine_not_hangs_it(tiny_bundle):
    """With overlap on the prepare thread forms and prepares batches; its death must not leave the step
    thread waiting for batches that never come."""
    engine = GREngine(tiny_bundle, EngineConfig(max_beam_width=8, max_batch_rows=8, overlap=True))

    def prepare(requests):
        raise Boom("prepare bug")

    engine.runner.prepare = prepare
    try:
        with pytest.raises(EngineFailed, match="gr-prepare died: Boom: prepare bug"):
            engine.submit(GRRequest([1], 8, 1)).result(timeout=30)
        with pytest.raises(EngineFailed, match="prepare bug"):
            engine.submit(GRRequest([1], 8, 1))
        for t in engine._threads:  # both threads end: the step thread is stopped, not left polling
            t.join(30)
            assert not t.is_alive()
    finally:
        engine.shutdown()


def test_failed_batch_fails_only_its_requests(tiny_bundle):
    engine = GREngine(tiny_bundle, EngineConfig(max_beam_width=8, max_batch_rows=8))
    real_run, calls = engine.runner.run, []

    def run(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("bad batch")
        return real_run(batch)

    engine.runner.run = run
    try:
        with pytest.raises(RuntimeError, match="bad batch"):
            engine.submit(GRRequest([1], 8, 2)).result(timeout=30)
        assert len(engine.submit(GRRequest([1], 8, 2)).result(timeout=30).items) == 2
        assert engine.failure is None
    finally:
        engine.shutdown()
