"""Deadline-aware admission, worked by hand on a fake clock and a fitted step cost of 10 ms + 1 ms per unit.

Every request is 10 beams and 10 prompt tokens (20 units: a 30 ms step alone); with a 100 ms step target a step
holds 4 of them (80 units, 90 ms; a fifth would make 100 > 90 units)."""
import pytest

from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.request import DeadlineExceeded, EngineOverloaded, GRRequest
from grserve.engine.gr.scheduler import FixedStepScheduler


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scheduler(clock, **overrides):
    s = FixedStepScheduler(EngineConfig(**{"max_beam_width": 64, "max_batch_rows": 4096, "target_step_ms": 100,
                                           **overrides}), clock=clock)
    for units in (20, 40, 80):
        s.observe_step(units, 0.010 + 0.001 * units)
    s.cost.margin = 0.0  # exact predictions, so the boundaries below are the hand-worked ones
    return s


def req(deadline, priority=0):
    return GRRequest([1] * 10, 10, 1, deadline=deadline, priority=priority)


def test_admits_what_fits_and_refuses_what_the_plan_answers_late():
    clock = Clock()
    s = scheduler(clock)
    for _ in range(8):  # steps of 4 end at 90 and 180 ms: all within 200 ms
        s.add(req(0.2))
    with pytest.raises(EngineOverloaded, match="after its deadline") as refused:
        s.add(req(0.2))  # a third step, alone: 180 + 30 = 210 ms > 200 ms
    assert refused.value.reason == "deadline"
    assert refused.value.retry_after_s == pytest.approx(0.21)
    assert len(s) == 8 and s.refused == 1
    s.add(req(0.25))  # a later deadline fits the same plan: 210 <= 250 ms


def test_the_step_in_flight_counts():
    clock = Clock()
    s = scheduler(clock)
    for _ in range(4):
        s.add(req(0.2))
    assert len(s.schedule()) == 4  # computing until 90 ms
    clock.now = 0.05
    for _ in range(4):  # one step after the one in flight: 90 + 90 = 180 ms <= 200
        s.add(req(0.2))
    with pytest.raises(EngineOverloaded):
        s.add(req(0.2))  # 180 + 30 = 210 ms
    s.observe_step(80, 0.09)  # the step ended: nothing in flight, the plan starts now (50 ms)
    s.add(req(0.17))  # the four queued end at 50 + 90 = 140 ms, it at 140 + 30 = 170 ms


def test_refuses_a_request_that_would_make_an_admitted_one_late():
    clock = Clock()
    s = scheduler(clock)
    for _ in range(8):
        s.add(req(0.2))
    with pytest.raises(EngineOverloaded, match="would make 1 admitted"):
        s.add(req(0.1))  # first by its deadline (done at 90 ms), but the eighth would end at 210 ms


def test_offline_is_never_refused_for_online_work():
    clock = Clock()
    s = scheduler(clock)
    for _ in range(8):
        s.add(req(0.2))
    s.add(req(0.2, priority=1))  # the online queue is full up to its deadlines; the offline one's is empty


def test_without_admission_control_every_request_is_queued():
    clock = Clock()
    s = scheduler(clock, admission_control=False)
    for _ in range(12):
        s.add(req(0.2))
    assert len(s) == 12


def test_a_request_that_cannot_make_it_even_alone_is_dropped_early():
    clock = Clock()
    s = scheduler(clock)
    doomed, fine = req(0.2), req(0.5)
    s.add(doomed)
    s.add(fine)
    clock.now = 0.18  # 20 ms left, its own step takes 30 ms: dropped now, not answered late
    assert s.schedule() == [fine]
    with pytest.raises(DeadlineExceeded, match="less than its own step"):
        doomed.future.result(timeout=0)
    assert s.dropped == 1


def test_a_late_answer_widens_the_margin():
    s = scheduler(Clock())
    before = s.cost.predict(20)
    s.observe_step(20, 0.03, late=1, on_time=0)
    assert s.cost.predict(20) > before * 1.04


def test_short_deadlines_make_short_steps():
    """A step is cut to end by its head's deadline: with 60 ms left, (60 - 10) ms / 1 ms = 50 units hold two
    requests (40), not the target's four."""
    clock = Clock()
    s = scheduler(clock, admission_control=False)
    for _ in range(6):
        s.add(req(0.06))
    assert len(s.schedule()) == 2
