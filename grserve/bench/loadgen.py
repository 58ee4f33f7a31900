"""Open-loop load: Poisson arrivals at a fixed rate, each request sent at its scheduled time whether or not
earlier ones have returned (as vLLM's `bench serve`), bounded in count and time; and latency summaries.

A request is anything awaitable: `send(i)` sends request i and raises on failure. `http_sender` makes
one that posts to a grserve URL with aiohttp (a refusal raises `HTTPStatusError`, so its sample keeps the
status and how long the refusal took); the benchmark also wraps in-process systems the same way."""
from __future__ import annotations

import asyncio
import gc
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np

Send = Callable[[int], Awaitable[object]]


@dataclass
class Sample:
    scheduled: float  # seconds after the start at which the request was due
    sent: float  # seconds after the start at which it was sent
    latency: float | None  # seconds to the answer; for an HTTP refusal, to the refusal; else None when it failed
    status: str  # "ok", "error" or "timeout"
    code: int | None = None  # the HTTP status of a refusal (429, 504, …); None for answers and other failures


class HTTPStatusError(RuntimeError):
    """An HTTP answer other than 200."""

    def __init__(self, code: int, body: str):
        super().__init__(f"HTTP {code}: {body[:200]}")
        self.code = code


async def _one(send: Send, i: int, scheduled: float, t0: float, timeout: float | None) -> Sample:
    sent = time.perf_counter()
    try:
        await asyncio.wait_for(send(i), timeout)
        return Sample(scheduled, sent - t0, time.perf_counter() - sent, "ok")
    except asyncio.TimeoutError:
        return Sample(scheduled, sent - t0, None, "timeout")
    except HTTPStatusError as e:  # a refusal is an answer too: overload benchmarks time it
        return Sample(scheduled, sent - t0, time.perf_counter() - sent, "error", e.code)
    except Exception:
        return Sample(scheduled, sent - t0, None, "error")


def freeze_heap() -> None:
    """Takes what exists now out of the garbage collector's sight: a full collection over the libraries
    loaded (~200k objects) holds the GIL ~100 ms, and a sender stalled that long is no longer open loop (nor
    an in-process engine on time). Called as load starts; what a benchmark made before lives until it ends."""
    gc.collect()
    gc.freeze()


async def open_loop(send: Send, rate: float, max_requests: int, max_seconds: float, seed: int = 0,
                    timeout: float | None = None) -> list[Sample]:
    """Send up to `max_requests` at Poisson arrivals of `rate`/s for at most `max_seconds` of arrivals."""
    freeze_heap()
    rng = random.Random(seed)
    t0 = time.perf_counter()
    tasks, due = [], 0.0
    for i in range(max_requests):
        due += rng.expovariate(rate)
        if due > max_seconds:
            break
        delay = t0 + due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(send, i, due, t0, timeout)))
    return list(await asyncio.gather(*tasks))


async def saturate(send: Send, requests: int, timeout: float | None = None) -> list[Sample]:
    """All requests at once: what the system completes when it never waits for work (peak throughput)."""
    freeze_heap()
    t0 = time.perf_counter()
    return list(await asyncio.gather(*(_one(send, i, 0.0, t0, timeout) for i in range(requests))))


def summarize(samples: list[Sample], offered_rate: float | None = None, slo_ms: float | None = None) -> dict:
    """Counts, throughput (answers per second between the first send and the last answer), latency
    percentiles of the answers, and with `slo_ms` the goodput: answers within the SLO per second."""
    ok = [s for s in samples if s.status == "ok"]
    lat = np.array([s.latency for s in ok]) * 1000 if ok else np.array([])
    span = max((s.sent + s.latency for s in ok), default=0.0) - min((s.sent for s in samples), default=0.0)
    within = None if slo_ms is None else int((lat <= slo_ms).sum())
    return {
        "offered_rate": offered_rate, "requests": len(samples), "ok": len(ok),
        "errors": sum(s.status == "error" for s in samples), "timeouts": sum(s.status == "timeout" for s in samples),
        "throughput": len(ok) / span if span > 0 else 0.0,
        "within_slo": within, "goodput": None if within is None else (within / span if span > 0 else 0.0),
        **{f"p{q}_ms": float(np.percentile(lat, q)) if len(lat) else None for q in (50, 90, 99)},
        "mean_ms": float(lat.mean()) if len(lat) else None,
        # how far behind schedule sends fell: near zero for a true open loop
        "max_send_lag_ms": 1000 * max((s.sent - s.scheduled for s in samples), default=0.0),
    }


def answer_class(sample: Sample) -> str:
    """What came back for a request sent by `http_sender`: "200", the refusal's status ("429", "504", …), or
    "other" (no HTTP answer: a connection error or a client-side timeout)."""
    if sample.status == "ok":
        return "200"  # http_sender raises on every other status
    return str(sample.code) if sample.code is not None else "other"


def http_sender(session, url: str, payloads: list[dict]) -> Send:
    """Posts payload i (cycling) to `url` with an aiohttp session; non-200 raises `HTTPStatusError`."""
    async def send(i: int):
        async with session.post(url, json=payloads[i % len(payloads)]) as r:
            if r.status != 200:
                raise HTTPStatusError(r.status, await r.text())
            return await r.json()
    return send
