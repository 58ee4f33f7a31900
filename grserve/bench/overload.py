"""`grserve bench overload`: goodput past capacity, with and without deadline-aware admission.

A real `grserve serve` subprocess (the embedded MovieLens model) answers the MovieLens workload over HTTP,
each request with `timeout_ms` = the SLO. First its capacity at the SLO is measured (admission on): its peak,
then a short sweep of open-loop rates under the monotone rule of `sweep.py`, where a rate passes when nearly
every request is answered 200 within its deadline and the P99 of the 200s is within the SLO. Then offered load
at multiples of that capacity, the two variants (admission on, off) taking turns at each level on the same
requests, one server alive at a time. Optionally a soak at 1.2x capacity samples the server's resident memory
and goodput per minute. The plot is `overload_plot.py`'s."""
from __future__ import annotations

import asyncio
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass

import aiohttp
import httpx
import numpy as np
from tqdm import tqdm

from grserve.bench.loadgen import Sample, answer_class, http_sender, open_loop, saturate, summarize
from grserve.bench.machine import machine_info
from grserve.bench.scaling import _wait, stop
from grserve.bench.sweep import Turns, qps_at_slo, rate_point
from grserve.bench.systems import recommend_body
from grserve.bench.workloads import movielens_workload
from grserve.service.etcd_server import _free_port

ON, OFF = "admission on", "admission off"


@dataclass
class OverloadOptions:
    slo_ms: float = 200.0  # also every request's timeout_ms and the server's default timeout
    beam_width: int = 128  # as bench gr's workload (a)
    top_n: int = 10
    levels: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)  # offered load, multiples of the capacity
    level_s: float = 30.0  # seconds of arrivals per level and variant
    fractions: tuple[float, ...] = (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # capacity sweep, of the peak
    repeats: int = 3  # runs per swept rate
    sweep_s: float = 6.0  # seconds of arrivals per swept run ...
    min_requests: int = 30  # ... and per level: low rates run until this many arrive
    min_good_share: float = 0.99  # a swept rate passes with this share of 200s within the deadline (median run)
    peak_requests: int = 64  # the peak that the swept rates are fractions of; also each start's warm-up
    soak_s: float | None = None  # None: no soak
    soak_level: float = 1.2
    rss_every_s: float = 5.0
    threads: int | None = None  # None: the server sizes its threads to its CPUs
    target_step_ms: float | None = None  # None: the server's default
    timeout_s: float = 30.0  # client side: a request unanswered this long counts as "other"
    out_dir: str = "benchmarks/results"


def _session() -> aiohttp.ClientSession:
    # No connection limit: aiohttp's default of 100 would hold requests back client-side under overload, and
    # the load would no longer be open loop.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def at_once(url: str, payloads: list[dict], requests: int, timeout_s: float) -> list[Sample]:
    async def run():
        async with _session() as session:
            return await saturate(http_sender(session, url + "/v1/recommend", payloads), requests, timeout_s)
    return asyncio.run(run())


def offered(url: str, payloads: list[dict], rate: float, seconds: float, seed: int, timeout_s: float,
            beside=None) -> list[Sample]:
    """Poisson arrivals at `rate` for `seconds` (the count bound is far above what arrives); `beside()` is a
    coroutine run alongside, cancelled when every answer is in."""
    async def run():
        task = asyncio.create_task(beside()) if beside else None
        try:
            async with _session() as session:
                send = http_sender(session, url + "/v1/recommend", payloads)
                return await open_loop(send, rate, math.ceil(2 * rate * seconds) + 10, seconds, seed, timeout_s)
        finally:
            if task:
                task.cancel()
    return asyncio.run(run())


class ServerProcess:
    """One `grserve serve` on a free loopback port, started for its turn (see `Turns`) and warmed up: its
    scheduler and admission learn the step cost from the steps it runs."""

    def __init__(self, name: str, admission: bool, opts: OverloadOptions, warmup_payloads: list[dict]):
        self.name, self.admission, self.opts, self.warmup_payloads = name, admission, opts, warmup_payloads

    def command(self, port: int) -> list[str]:
        o = self.opts
        cmd = [sys.executable, "-m", "grserve", "serve", "--port", str(port),
               "--default-timeout-ms", str(round(o.slo_ms)),
               "--admission-control" if self.admission else "--no-admission-control",
               # queue limits far above any backlog here: what refuses must be admission, not the queue length
               "--max-queue-requests", "1000000", "--max-queue-rows", str(10 ** 9),
               # an empty catalog state: the shipped catalog, whatever changes the user's default log holds
               "--state-dir", tempfile.mkdtemp(prefix="grserve-bench-state-")]
        if o.threads is not None:
            cmd += ["--threads", str(o.threads)]
        if o.target_step_ms is not None:
            cmd += ["--target-step-ms", str(o.target_step_ms)]
        return cmd

    def start(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()  # its stderr, shown if it dies before serving
        self.proc = subprocess.Popen(self.command(port), stdout=subprocess.DEVNULL, stderr=self.log)
        try:
            _wait(self._healthy, 180, f"{self.name} to serve")
            at_once(self.url, self.warmup_payloads, self.opts.peak_requests, self.opts.timeout_s)
        except BaseException:  # not yet live in Turns, so nobody else would stop it
            self.close()
            raise

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name}: grserve serve exited {self.proc.returncode}:\n{tail}")
        return httpx.get(self.url + "/health", timeout=5).status_code == 200

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


def vm_rss_kib(pid: int) -> int | None:
    """The process's resident memory in KiB (VmRSS of /proc/<pid>/status); None where there is none."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _percentile(values_ms: list[float], q: float) -> float | None:
    return float(np.percentile(values_ms, q)) if values_ms else None


def level_summary(samples: list[Sample], rate: float, deadline_ms: float) -> dict:
    """One variant at one offered rate: goodput (200s within the deadline per second, as `summarize`), P99 of
    the 200s and of the 429s, counts by what came back, and 504s as a share of all requests."""
    base = summarize(samples, rate, deadline_ms)
    counts = Counter(answer_class(s) for s in samples)
    refused = [1000 * s.latency for s in samples if s.code == 429]
    n = len(samples)
    main = {k: counts.get(k, 0) for k in ("200", "429", "504")}
    return {"offered_rate": rate, "requests": n, "goodput": base["goodput"], "throughput": base["throughput"],
            "within_deadline": base["within_slo"], "p50_200_ms": base["p50_ms"], "p99_200_ms": base["p99_ms"],
            "p50_429_ms": _percentile(refused, 50), "p99_429_ms": _percentile(refused, 99),
            "counts": main | {"other": n - sum(main.values())}, "statuses": dict(counts),
            "share_504": main["504"] / n if n else 0.0, "max_send_lag_ms": base["max_send_lag_ms"]}


def _arrivals_s(rate: float, seconds: float, opts: OverloadOptions) -> float:
    """`seconds` of arrivals, longer at low rates until about `opts.min_requests` arrive."""
    return max(seconds, opts.min_requests / rate) if rate > 0 else seconds


def measure_capacity(turns: Turns, server: ServerProcess, payloads: list[dict], opts: OverloadOptions) -> dict:
    """The peak (all at once, long deadlines), then swept rates as fractions of it, each `opts.repeats` times,
    stopping at the first that fails: past it the monotone rule has settled the capacity."""
    turns.use(server)
    peak = summarize(at_once(server.url, server.warmup_payloads, opts.peak_requests, opts.timeout_s))
    if not peak["ok"]:
        raise RuntimeError(f"{server.name}: none of the peak's {peak['requests']} requests was answered 200")
    points = []
    for fraction in opts.fractions:
        rate = fraction * peak["throughput"]
        seconds = _arrivals_s(rate, opts.sweep_s, opts)
        runs = []
        for repeat in range(opts.repeats):
            samples = offered(server.url, payloads, rate, seconds, repeat, opts.timeout_s)
            runs.append(summarize(samples, rate, opts.slo_ms))
            turns.ran(f"capacity at {rate:.1f}/s, {repeat + 1}/{opts.repeats}")
        point = rate_point(rate, runs, opts.slo_ms)
        # This bench's pass rule: goodput ≈ offered, i.e. a few refusals or late answers are allowed (rate_point's
        # own rule asks every request to be answered); the P99 of the 200s (median run) within the SLO.
        point["good_share"] = statistics.median(r["within_slo"] / r["requests"] if r["requests"] else 0.0
                                                for r in runs)
        point["passed"] = point["p99_ms"] <= opts.slo_ms and point["good_share"] >= opts.min_good_share
        points.append(point)
        if not point["passed"]:
            break
    return {"peak": peak, "sweep": points, "qps_at_slo": qps_at_slo(points)}


def run_levels(turns: Turns, servers: list[ServerProcess], reference: float, payloads: list[dict],
               opts: OverloadOptions) -> list[dict]:
    """Each level for both variants on the same arrivals (the level's seed) and requests. The variant alive
    from the last turn goes first, so each level restarts one server, not two."""
    rows = []
    for k, level in enumerate(opts.levels):
        rate = level * reference
        order = servers if k % 2 == 0 else servers[::-1]
        row = {"level": level, "offered_rate": rate, "order": [s.name for s in order], "variants": {}}
        for server in order:
            turns.use(server)
            samples = offered(server.url, payloads, rate, _arrivals_s(rate, opts.level_s, opts), 1000 + k,
                              opts.timeout_s)
            row["variants"][server.name] = level_summary(samples, rate, opts.slo_ms)
            turns.ran(f"{server.name} at {level:g}x")
        rows.append(row)
    return rows


def soak_summary(samples: list[Sample], rss: list[tuple[float, int]], rate: float, opts: OverloadOptions) -> dict:
    """Goodput per minute of arrivals (the last minute may be partial), and resident memory growth after the
    first minute: the last and the largest sample against the first at or after 60 s (the first sample if
    the soak is shorter), in %."""
    minutes = max(1, math.ceil(opts.soak_s / 60))
    good = Counter(int(s.scheduled // 60) for s in samples
                   if s.status == "ok" and 1000 * s.latency <= opts.slo_ms)
    per_minute = [good.get(m, 0) / min(60.0, opts.soak_s - 60 * m) for m in range(minutes)]
    after = [kib for t, kib in rss if t >= min(60.0, rss[-1][0])] if rss else []
    base = after[0] if after else None
    return {"offered_rate": rate, "seconds": opts.soak_s, "overall": level_summary(samples, rate, opts.slo_ms),
            "goodput_per_minute": per_minute, "rss_kib": [[round(t, 1), kib] for t, kib in rss],
            "rss_growth_pct": 100 * (after[-1] - base) / base if base else None,
            "rss_max_growth_pct": 100 * (max(after) - base) / base if base else None}


def run_soak(turns: Turns, server: ServerProcess, reference: float, payloads: list[dict],
             opts: OverloadOptions) -> dict:
    """`opts.soak_s` of arrivals at `opts.soak_level` x the capacity, admission on, the server's VmRSS sampled
    every `opts.rss_every_s` seconds."""
    turns.use(server)
    rate = opts.soak_level * reference
    rss: list[tuple[float, int]] = []
    bar = tqdm(total=math.ceil(opts.soak_s), desc=f"soak at {rate:.1f}/s", unit="s")

    async def sample_rss():
        started = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - started
            kib = vm_rss_kib(server.proc.pid)
            if kib is not None:
                rss.append((elapsed, kib))
            bar.update(min(bar.total, math.floor(elapsed)) - bar.n)
            await asyncio.sleep(opts.rss_every_s)

    try:
        samples = offered(server.url, payloads, rate, opts.soak_s, 2000, opts.timeout_s, beside=sample_rss)
    finally:
        bar.close()
    return soak_summary(samples, rss, rate, opts)


def run_overload(opts: OverloadOptions) -> dict:
    started = time.perf_counter()
    workload = movielens_workload(beam_width=opts.beam_width, top_n=opts.top_n)
    payloads = [recommend_body(h, opts.beam_width, opts.top_n, round(opts.slo_ms)) for h in workload.histories]
    long = [recommend_body(h, opts.beam_width, opts.top_n) for h in workload.histories]  # peak, warm-up
    servers = [ServerProcess(ON, True, opts, long), ServerProcess(OFF, False, opts, long)]
    run = {"kind": "overload", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
           "options": asdict(opts), "workload": workload.name, "soak": None}
    turns = Turns({}, {}, desc="bench overload")  # servers warm themselves up in start()
    try:
        capacity = run["capacity"] = measure_capacity(turns, servers[0], payloads, opts)
        reference = capacity["qps_at_slo"]
        run["reference"] = "capacity at the SLO"
        if reference <= 0:  # not even the lowest swept rate passed: levels are multiples of it instead
            reference = capacity["sweep"][0]["offered_rate"]
            run["reference"] = "the lowest swept rate (no swept rate passed)"
        run["reference_rate"] = reference
        run["levels"] = run_levels(turns, servers, reference, payloads, opts)
        if opts.soak_s:
            run["soak"] = run_soak(turns, servers[0], reference, payloads, opts)
    finally:
        turns.close()
    run["seconds"] = round(time.perf_counter() - started, 1)
    return run


def headline(run: dict) -> dict:
    """Capacity, and per level the goodput of each variant; the soak's memory growth and goodput."""
    out = {"capacity": run["capacity"]["qps_at_slo"], "reference_rate": run["reference_rate"],
           "levels": [{"level": r["level"], **{name: {"goodput": v["goodput"], "counts": v["counts"]}
                                               for name, v in r["variants"].items()}} for r in run["levels"]]}
    if run["soak"]:
        out["soak"] = {k: run["soak"][k] for k in ("rss_growth_pct", "rss_max_growth_pct", "goodput_per_minute")}
    return out
