"""The load generator is open loop: against a deliberately slow fake server that answers nothing until
every request has arrived, a closed loop would deadlock after one request; an open loop sends them all."""
from __future__ import annotations

import asyncio
import contextlib
import math

import aiohttp
from aiohttp import web

from grserve.bench.loadgen import Sample, answer_class, http_sender, open_loop, summarize
from tests.server.conftest import free_port

N = 12


@contextlib.asynccontextmanager
async def fake_server(handler):
    """An aiohttp server on a free loopback port answering POST /v1/recommend with `handler`; yields its URL."""
    app = web.Application()
    app.router.add_post("/v1/recommend", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1/recommend"
    finally:
        await runner.cleanup()


async def run_against_stalling_server():
    arrived, release = 0, asyncio.Event()
    peak_in_flight = 0

    async def handler(request):
        nonlocal arrived, peak_in_flight
        arrived += 1
        peak_in_flight = max(peak_in_flight, arrived)
        if arrived == N:
            release.set()
        await asyncio.wait_for(release.wait(), 30)  # fail rather than hang if the loop were closed
        return web.json_response({"ok": True})

    async with fake_server(handler) as url, aiohttp.ClientSession() as session:
        send = http_sender(session, url, [{"history": []}])
        samples = await open_loop(send, rate=50.0, max_requests=N, max_seconds=60.0, timeout=40)
    return samples, peak_in_flight


def test_open_loop_sends_on_schedule_against_a_stalling_server():
    samples, peak = asyncio.run(run_against_stalling_server())
    assert len(samples) == N and all(s.status == "ok" for s in samples)
    assert peak == N  # every request was in flight at once: none waited for an earlier answer
    assert [s.scheduled for s in samples] == sorted(s.scheduled for s in samples)


def test_summary_by_hand():
    samples = [Sample(0.0, 0.0, 0.1, "ok"), Sample(0.5, 0.5, 0.3, "ok"), Sample(1.0, 1.0, None, "error"),
               Sample(1.2, 1.25, None, "timeout")]
    s = summarize(samples, offered_rate=3.0)
    assert (s["requests"], s["ok"], s["errors"], s["timeouts"]) == (4, 2, 1, 1)
    assert math.isclose(s["throughput"], 2 / 0.8)  # 2 answers between the first send and the last answer
    assert math.isclose(s["p50_ms"], 200.0) and math.isclose(s["max_send_lag_ms"], 50.0)
    assert s["goodput"] is None
    within = summarize(samples, offered_rate=3.0, slo_ms=200.0)
    assert within["within_slo"] == 1 and math.isclose(within["goodput"], 1 / 0.8)  # only the 100 ms answer


async def run_against_refusing_server(statuses: list[int]):
    """A server that answers payload {"status": s} with HTTP status s."""
    async def handler(request):
        status = (await request.json())["status"]
        return web.json_response({"error": {"code": status}}, status=status)

    async with fake_server(handler) as url, aiohttp.ClientSession() as session:
        send = http_sender(session, url, [{"status": s} for s in statuses])
        return await open_loop(send, rate=200.0, max_requests=len(statuses), max_seconds=60.0, timeout=30)


def test_refusals_keep_their_status_and_latency():
    statuses = [200, 429, 504, 503, 429, 200]
    samples = asyncio.run(run_against_refusing_server(statuses))
    assert [answer_class(s) for s in samples] == [str(s) for s in statuses]
    assert all(s.latency is not None for s in samples)  # a refusal is timed like an answer
    assert summarize(samples)["ok"] == 2  # only the 200s count as answered, as before
    assert answer_class(Sample(0.0, 0.0, None, "timeout")) == answer_class(Sample(0.0, 0.0, None, "error")) == "other"
