"""Measuring systems that take turns: each system's peak (all requests at once) several times, then a sweep
of offered rates, each rate several times, system after system, so that every system runs under the same
drift of this machine's speed. And the SLO rule: a system's max QPS at the SLO is the highest swept rate at
which that rate and every lower one answered every request with a median P99 within the SLO."""
from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import dataclass

from tqdm import tqdm

from grserve.bench.loadgen import open_loop, saturate, summarize

# Offered rates as fractions of each system's own peak throughput.
SWEEP = (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)


@dataclass
class TurnOptions:
    slo_ms: float = 200.0
    repeats: int = 3  # peaks per system, and runs per swept rate
    duration_s: float = 6.0  # of arrivals per swept run ...
    min_requests: int = 30  # ... extended at low rates until this many requests arrive
    timeout_s: float = 120.0
    fractions: tuple[float, ...] = SWEEP


def rate_point(rate: float, runs: list[dict], slo_ms: float) -> dict:
    """One swept rate over its repeated runs: the median P99 and its spread, median goodput and throughput,
    and whether it passed (every request of every run answered, median P99 within the SLO)."""
    p99 = [math.inf if r["p99_ms"] is None else r["p99_ms"] for r in runs]
    median = statistics.median(p99)
    answered = all(r["ok"] == r["requests"] for r in runs)
    return {"offered_rate": rate, "p99_ms": median, "p99_ms_min": min(p99), "p99_ms_max": max(p99),
            "p50_ms": statistics.median(math.inf if r["p50_ms"] is None else r["p50_ms"] for r in runs),
            "goodput": statistics.median(r["goodput"] for r in runs),
            "throughput": statistics.median(r["throughput"] for r in runs),
            "all_answered": answered, "passed": answered and median <= slo_ms, "runs": runs}


def qps_at_slo(points: list[dict]) -> float:
    """The highest offered rate that passed with every lower swept rate passing too (0 if the lowest failed)."""
    best = 0.0
    for point in sorted(points, key=lambda p: p["offered_rate"]):
        if not point["passed"]:
            break
        best = point["offered_rate"]
    return best


class Turns:
    """Keeps one system alive at a time: engines alive side by side measured much slower here (one GREngine's
    peak fell by a third with four idle others in the process). A system (re)started for its turn first
    answers `warmup[name]` requests at once, when it has a warm-up: grserve's scheduler learns the step cost
    from the steps it runs, and cold it cuts batches short."""

    def __init__(self, senders: dict, warmup: dict[str, int], desc: str = "turns"):
        self.senders, self.warmup, self.live = senders, warmup, None
        self.progress = tqdm(desc=desc, unit="run")  # the runs' count grows as systems pass rates

    def ran(self, what: str) -> None:
        self.progress.set_postfix_str(what, refresh=False)
        self.progress.update(1)

    def use(self, system):
        if self.live is not system:
            self._stop_live()
            system.start()
            self.live = system
            if self.warmup.get(system.name):
                asyncio.run(saturate(self.senders[system.name], self.warmup[system.name]))
        return system

    def _stop_live(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live = None

    def close(self) -> None:
        self._stop_live()
        self.progress.close()


def measure_peaks(group: list, turns: Turns, requests: dict[str, int], opts: TurnOptions, first_turn) -> dict:
    """Each system's peak `opts.repeats` times, system after system; `first_turn(system)` runs once per
    system on its first turn (answers, a lone request) and returns its record."""
    out: dict[str, dict] = {}
    for turn in range(opts.repeats):
        for system in group:
            turns.use(system)
            if turn == 0:
                out[system.name] = first_turn(system) | {"peaks": [], "peak_requests": requests[system.name]}
            out[system.name]["peaks"].append(summarize(asyncio.run(
                saturate(turns.senders[system.name], requests[system.name], opts.timeout_s))))
            turns.ran(f"{system.name} peak {turn + 1}/{opts.repeats}")
    for m in out.values():
        m["peak"] = sorted(m["peaks"], key=lambda p: p["throughput"])[len(m["peaks"]) // 2]
    return out


def sweep_rates(swept: list, turns: Turns, peaks: dict[str, float], opts: TurnOptions) -> dict[str, list[dict]]:
    """Each system's swept rates (fractions of its own peak), each rate `opts.repeats` times, system after
    system. A system's sweep stops one rate after the first that fails: past it, its max QPS at the SLO is
    settled, and the extra rate shows the trend."""
    points: dict[str, list[dict]] = {s.name: [] for s in swept}
    for fraction in opts.fractions:
        active = [s for s in swept if _failures(points[s.name]) < 2]
        runs: dict[str, list[dict]] = {s.name: [] for s in active}
        for repeat in range(opts.repeats):
            for system in active:
                turns.use(system)
                rate = fraction * peaks[system.name]
                count = max(opts.min_requests, math.ceil(rate * opts.duration_s))
                # bounded by the count: about duration_s of arrivals, longer at low rates
                samples = asyncio.run(open_loop(turns.senders[system.name], rate, count, 2 * count / rate,
                                                seed=repeat, timeout=opts.timeout_s))
                runs[system.name].append(summarize(samples, rate, opts.slo_ms))
                turns.ran(f"{system.name} at {rate:.1f}/s, {repeat + 1}/{opts.repeats}")
        for system in active:
            points[system.name].append(rate_point(fraction * peaks[system.name], runs[system.name], opts.slo_ms))
    return points


def _failures(points: list[dict]) -> int:
    """Rates failed since (and including) the first failure."""
    first = next((i for i, p in enumerate(points) if not p["passed"]), None)
    return 0 if first is None else len(points) - first
