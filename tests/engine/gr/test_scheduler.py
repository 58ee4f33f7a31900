"""Batch formation under the beam-row and prompt-token budgets, worked by hand."""
import threading

import pytest

from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.request import GRRequest
from grserve.engine.gr.scheduler import FixedStepScheduler


def req(width, length):
    return GRRequest([1] * length, width, 1)


def test_budgets_by_hand():
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=128, max_batch_prompt_tokens=300))
    for r in [req(32, 10), req(32, 50), req(64, 10), req(8, 200), req(64, 10), req(8, 10)]:
        s.add(r)
    # rows are each request's own: 32 + 32 + 64 = 128 fit; the fourth's 8 more would make 136 > 128
    assert [r.beam_width for r in s.schedule()] == [32, 32, 64]
    # 8 + 64 = 72 rows, but padded to the longest prompt 2 x 200 = 400 prompt tokens > 300
    assert [len(r.prompt) for r in s.schedule()] == [200]
    assert [r.beam_width for r in s.schedule()] == [64, 8]
    assert s.schedule(timeout=0.01) == []


def test_a_lone_request_always_fits():
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=64, max_batch_prompt_tokens=16))
    s.add(req(64, 100))
    assert len(s.schedule()) == 1


def test_earliest_deadline_first_and_expired_never_start():
    import time

    from grserve.engine.gr.request import DeadlineExceeded, EngineOverloaded
    s = FixedStepScheduler(EngineConfig(max_beam_width=8, max_batch_rows=8, max_queue_requests=4))
    now = time.perf_counter()
    late, early, none, expired = req(8, 5), req(8, 5), req(8, 5), req(8, 5)
    late.deadline, early.deadline, expired.deadline = now + 60, now + 30, now - 1
    for r in (none, late, expired, early):
        s.add(r)
    with pytest.raises(EngineOverloaded):
        s.add(req(8, 5))  # 4 waiting: the queue is full
    # one 8-row request per batch: earliest deadline first, no deadline last; the expired one never runs
    assert s.schedule() == [early]
    assert isinstance(expired.future.exception(timeout=0), DeadlineExceeded)
    assert s.schedule() == [late]
    assert s.schedule() == [none]
    assert len(s) == 0


def test_queue_is_bounded_by_beam_rows():
    from grserve.engine.gr.request import EngineOverloaded
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=64, max_queue_rows=100))
    s.add(req(64, 3))
    with pytest.raises(EngineOverloaded, match="beam rows"):
        s.add(req(64, 3))
    s.add(req(36, 3))


def test_online_before_offline():
    s = FixedStepScheduler(EngineConfig(max_beam_width=8, max_batch_rows=8))
    offline, online = req(8, 5), req(8, 5)
    offline.priority = 1
    s.add(offline)
    s.add(online)  # arrives later, starts first
    assert s.schedule() == [online]
    assert s.schedule() == [offline]


def fill(s, online, offline):
    """Queues `online` then `offline` 10-wide, 10-token requests (20 work units each); the first batch's
    (online, offline) counts. The queue is emptied afterwards."""
    reqs = [req(10, 10) for _ in range(online + offline)]
    for r in reqs[online:]:
        r.priority = 1
    for r in reqs:
        s.add(r)
    out = s.schedule()
    while s.schedule(timeout=0):
        pass
    return sum(r.priority == 0 for r in out), sum(r.priority == 1 for r in out)


def test_step_budget_from_fitted_cost_and_offline_share():
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=2048, target_step_ms=120,
                                        offline_step_fraction=0.25))
    for requests in (1, 2, 4):  # 20 work units per request at 1 ms per unit, plus 10 ms fixed per step
        s.observe_step(20 * requests, 0.010 + 0.001 * 20 * requests)
    # (120 - 10) ms / 1 ms = a 110-unit step; every count below sits at least 7.5 units from a boundary
    assert fill(s, 8, 0) == (5, 0)  # 5 x 20 = 100 <= 110 < 120 = 6 x 20
    assert fill(s, 0, 8) == (0, 1)  # offline alone: a quarter step (27.5 units) holds one request (20 < 27.5 < 40)
    assert fill(s, 2, 8) == (2, 1)  # 40 online units + at most 27.5 offline: 60 <= 67.5 < 80


def test_a_step_that_exactly_fills_the_budget_is_admitted():
    """Exact data put the fitted budget a few ulps under (or over) 100 units: 5 requests of 20 still fit."""
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=2048, target_step_ms=100))
    for requests in (1, 2, 4):
        s.observe_step(20 * requests, 0.001 * 20 * requests)
    assert fill(s, 8, 0) == (5, 0)


def test_observe_step_waits_for_the_scheduler_lock():
    """Admission reads the cost model under the lock while the step thread records a step: the record must
    wait for the lock, never change the model under a reader."""
    s = FixedStepScheduler(EngineConfig())
    recorder = threading.Thread(target=s.observe_step, args=(16, 0.01))
    with s.ready:  # a reader holds the lock
        recorder.start()
        recorder.join(0.2)
        assert recorder.is_alive() and len(s.cost.recent) == 0
    recorder.join(10)
    assert list(s.cost.recent) == [(16, 0.01)]


def test_closed_scheduler_fails_the_waiting_and_refuses_new_requests():
    s = FixedStepScheduler(EngineConfig(max_beam_width=8, max_batch_rows=8))
    waiting, cancelled = req(8, 5), req(8, 5)
    s.add(waiting)
    s.add(cancelled)
    cancelled.future.cancel()
    s.close(RuntimeError("engine died: boom"))
    with pytest.raises(RuntimeError, match="boom"):
        waiting.future.result(timeout=0)
    assert cancelled.future.cancelled() and len(s) == 0 and s.waiting_rows == 0
    with pytest.raises(RuntimeError, match="engine died: boom"):
        s.add(req(8, 5))


def test_a_step_never_mixes_catalog_versions():
    """A change cuts the step: requests of another catalog version than the step's first wait for the next."""
    s = FixedStepScheduler(EngineConfig(max_beam_width=8, max_batch_rows=64))
    v0, v1 = object(), object()  # snapshots, compared by identity only
    for version in (v0, v0, v1, v1, v0):
        r = req(8, 5)
        r.catalog = version
        s.add(r)
    assert [[r.catalog for r in s.schedule()] for _ in range(3)] == [[v0, v0], [v1, v1], [v0]]
