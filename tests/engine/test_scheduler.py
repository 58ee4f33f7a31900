"""Batch formation under the beam-row and prompt-token budgets, worked by hand."""
import pytest

from grserve.engine.config import EngineConfig
from grserve.engine.request import GRRequest
from grserve.engine.scheduler import FixedStepScheduler


def req(width, length):
    return GRRequest([1] * length, width, 1)


def test_budgets_by_hand():
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=128, max_batch_prompt_tokens=300))
    for r in [req(32, 10), req(32, 50), req(64, 10), req(8, 200), req(8, 10)]:
        s.add(r)
    # 32+32 rows fit; the 64-wide third makes 3 x 64 = 192 > 128 rows
    assert [r.beam_width for r in s.schedule()] == [32, 32]
    # 64 then 8 (2 x 64 = 128 rows) but 2 x 200 = 400 prompt tokens > 300
    assert [r.beam_width for r in s.schedule()] == [64]
    # padding to the longest prompt: 2 x 200 = 400 prompt tokens > 300
    assert [len(r.prompt) for r in s.schedule()] == [200]
    assert [len(r.prompt) for r in s.schedule()] == [10]
    assert s.schedule(timeout=0.01) == []


def test_a_lone_request_always_fits():
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=64, max_batch_prompt_tokens=16))
    s.add(req(64, 100))
    assert len(s.schedule()) == 1


def test_earliest_deadline_first_and_expired_never_start():
    import time

    from grserve.engine.request import DeadlineExceeded, EngineOverloaded
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
    from grserve.engine.request import EngineOverloaded
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


def test_step_budget_from_fitted_cost_and_offline_share():
    s = FixedStepScheduler(EngineConfig(max_beam_width=64, max_batch_rows=2048, target_step_ms=100,
                                        offline_step_fraction=0.25))
    for requests in (1, 2, 4):  # 20 work units per request, 1 ms per unit, no fixed cost: 100 units per step
        s.observe_step(requests, 10, 10, 0.001 * 20 * requests)

    def fill(online, offline):
        reqs = [req(10, 10) for _ in range(online + offline)]
        for r in reqs[online:]:
            r.priority = 1
        for r in reqs:
            s.add(r)
        out = s.schedule()
        while s.schedule(timeout=0):
            pass
        return sum(r.priority == 0 for r in out), sum(r.priority == 1 for r in out)

    assert fill(8, 0) == (5, 0)  # 5 x 20 units = the 100-unit step
    assert fill(0, 8) == (0, 1)  # offline alone: a quarter step holds one request
    assert fill(2, 8) == (2, 1)  # 40 online units + at most 25 offline units
