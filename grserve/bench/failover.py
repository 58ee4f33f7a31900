"""`grserve bench scaling --failover`: open-loop load through the router at a fixed rate while one instance
is SIGKILLed, and what the clients got: answers by HTTP status, requests lost (no answer at all), whether
every refusal was a clear JSON error, and latency percentiles. Issue 13's bar: at half the instances' combined
capacity, at least 99% answered 200, none lost, the rest clear errors."""
from __future__ import annotations

import asyncio
import signal
import subprocess

import httpx
import numpy as np

from grserve.bench.loadgen import open_loop
from grserve.bench.systems import recommend_body

# Past its deadline the router answers 504 at once; a request still unanswered this long after its deadline
# is counted lost (the router hung or dropped it), not merely late.
LOST_AFTER_DEADLINE_S = 5.0


def _clear_error(response: httpx.Response) -> bool:
    """A refusal a client can act on: a JSON error body with a message (and Retry-After on 429)."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(message) and (response.status_code != 429 or "retry-after" in response.headers)


def summarize_failover(statuses: dict[int, tuple[int, bool]], samples, timeout_ms: float) -> dict:
    """Counts by status from `statuses` (request index -> (HTTP status, clear error)) and the loadgen's
    `samples` (a sample with no status was lost: the client timed out or the connection to the router failed)."""
    by_status: dict[str, int] = {}
    for code, _ in statuses.values():
        by_status[str(code)] = by_status.get(str(code), 0) + 1
    lost = [s for i, s in enumerate(samples) if i not in statuses]
    ok_lat = np.array([s.latency for i, s in enumerate(samples) if statuses.get(i, (0,))[0] == 200]) * 1000
    all_lat = np.array([s.latency for i, s in enumerate(samples) if i in statuses]) * 1000
    unclear = sum(1 for code, clear in statuses.values() if code != 200 and not clear)
    requests = len(samples)
    return {"requests": requests, "by_status": dict(sorted(by_status.items())), "lost": len(lost),
            "lost_timeouts": sum(s.status == "timeout" for s in lost),
            "lost_errors": sum(s.status == "error" for s in lost), "unclear_errors": unclear,
            "fraction_200": by_status.get("200", 0) / requests if requests else 0.0,
            "late_200": int((ok_lat > timeout_ms).sum()),
            "p50_ms_200": float(np.percentile(ok_lat, 50)) if len(ok_lat) else None,
            "p99_ms_200": float(np.percentile(ok_lat, 99)) if len(ok_lat) else None,
            "p99_ms_all_answers": float(np.percentile(all_lat, 99)) if len(all_lat) else None}


async def _load(url: str, payloads: list[dict], rate: float, duration_s: float, timeout_ms: float,
                victim: subprocess.Popen, kill_at_s: float, seed: int):
    statuses: dict[int, tuple[int, bool]] = {}
    limit = timeout_ms / 1000 + LOST_AFTER_DEADLINE_S
    async with httpx.AsyncClient(timeout=limit, limits=httpx.Limits(max_connections=1024)) as client:
        async def send(i: int) -> None:
            r = await client.post(url + "/v1/recommend", json=payloads[i % len(payloads)])
            statuses[i] = (r.status_code, r.status_code == 200 or _clear_error(r))

        async def kill() -> None:
            await asyncio.sleep(kill_at_s)
            victim.send_signal(signal.SIGKILL)

        killer = asyncio.create_task(kill())
        samples = await open_loop(send, rate, max_requests=int(rate * duration_s * 2) + 10,
                                  max_seconds=duration_s, seed=seed, timeout=limit)
        await killer
    return statuses, samples


def run_failover(url: str, histories: list[list[str]], beam_width: int, top_n: int, victim: subprocess.Popen,
                 rate: float, duration_s: float = 20.0, kill_at_s: float = 2.0, timeout_ms: float = 1000.0,
                 seed: int = 0) -> dict:
    """Poisson arrivals at `rate`/s for `duration_s` seconds to the router at `url`, each request with
    `timeout_ms` as its deadline; `victim` (an instance process) is SIGKILLed `kill_at_s` seconds in."""
    payloads = [recommend_body(h, beam_width, top_n, timeout_ms) for h in histories]
    statuses, samples = asyncio.run(_load(url, payloads, rate, duration_s, timeout_ms, victim,
                                          min(kill_at_s, duration_s), seed))
    return {"rate": rate, "duration_s": duration_s, "kill_at_s": kill_at_s, "timeout_ms": timeout_ms,
            "victim_exit": victim.wait(30), **summarize_failover(statuses, samples, timeout_ms)}
