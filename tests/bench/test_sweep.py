"""The SLO rule on hand-made sweeps: a rate counts only when it and every lower rate passed."""
import math

from grserve.bench.sweep import qps_at_slo, rate_point


def run(p99_ms, ok=10, requests=10, goodput=5.0):
    return {"p99_ms": p99_ms, "p50_ms": None if p99_ms is None else p99_ms / 2, "ok": ok, "requests": requests,
            "goodput": goodput, "throughput": goodput}


def test_zig_zag_counts_only_the_passing_prefix():
    # P99s as the issue saw them while the rate rose: 111, 142, 359, 437, 193, 697 ms
    points = [rate_point(r, [run(p)], 200.0) for r, p in zip((2, 4, 6, 8, 10, 12), (111, 142, 359, 437, 193, 697))]
    assert [p["passed"] for p in points] == [True, True, False, False, True, False]
    assert qps_at_slo(points) == 4  # not 10: the rates between failed
    assert qps_at_slo(list(reversed(points))) == 4  # order of measurement does not matter


def test_median_and_spread_over_repeats():
    point = rate_point(5.0, [run(150), run(250), run(190)], 200.0)
    assert (point["p99_ms"], point["p99_ms_min"], point["p99_ms_max"]) == (190, 150, 250)
    assert point["passed"]  # the median run is within the SLO


def test_an_unanswered_request_fails_the_rate():
    point = rate_point(5.0, [run(100), run(100, ok=9), run(100)], 200.0)
    assert not point["passed"] and not point["all_answered"]
    assert qps_at_slo([point]) == 0.0


def test_a_run_with_no_answer_has_infinite_p99():
    point = rate_point(5.0, [run(None, ok=0), run(None, ok=0), run(120)], 200.0)
    assert math.isinf(point["p99_ms"]) and not point["passed"]


class FakeSystem:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def start(self):
        self.log.append(("start", self.name))

    def close(self):
        self.log.append(("close", self.name))


def test_turns_keep_one_system_alive_and_count_runs():
    import asyncio

    from grserve.bench.sweep import Turns, TurnOptions, measure_peaks

    async def send(i):
        await asyncio.sleep(0)
    log = []
    a, b = FakeSystem("a", log), FakeSystem("b", log)
    turns = Turns({"a": send, "b": send}, {})
    out = measure_peaks([a, b], turns, {"a": 3, "b": 2}, TurnOptions(repeats=2), lambda s: {})
    assert turns.progress.n == 4  # two turns of two systems
    turns.close()
    # started and closed in turn, never two alive at once
    assert log == [("start", "a"), ("close", "a"), ("start", "b"), ("close", "b"),
                   ("start", "a"), ("close", "a"), ("start", "b"), ("close", "b")]
    assert [p["requests"] for p in out["a"]["peaks"]] == [3, 3] and out["b"]["peak_requests"] == 2
