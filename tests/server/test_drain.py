"""SIGTERM during load: `grserve serve` (a real process) stops admitting, answers every admitted request
and exits 0."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx

from grserve.client import AsyncGRServeClient, GRServeError
from tests.server.conftest import free_port, wait_healthy


def _admitted(url: str) -> float:
    """Recommend requests the server holds or has answered, from its /metrics."""
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in ("grserve:num_requests_waiting", "grserve:num_requests_running") or (
                name.startswith("grserve:http_requests_total{") and "recommend" in name and 'status="200"' in name):
            total += float(value)
    return total


def test_sigterm_during_load_loses_no_admitted_request(tiny_model_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "grserve", "serve", "--model", tiny_model_dir, "--port", str(port),
                             "--max-batch-requests", "2", "--default-timeout-ms", "60000", "--log-requests",
                             # a slow machine must not cut the drain short: the test is about losing nothing
                             "--drain-timeout-s", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 60)

        async def main():
            async with AsyncGRServeClient(url) as c:
                load = [asyncio.create_task(c.recommend([f"i{n % 60}"] * 20, top_n=3, beam_width=40))
                        for n in range(60)]
                # SIGTERM only once all 60 are in the server (waiting, running or answered), however slow the machine
                deadline = time.monotonic() + 60
                while await asyncio.to_thread(_admitted, url) < 60:
                    assert time.monotonic() < deadline, "the load never reached the server"
                    await asyncio.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.05)
                try:
                    await c.recommend(["i1"], top_n=1, beam_width=1)
                    late = None
                except (GRServeError, httpx.HTTPError) as e:
                    late = e
                return await asyncio.gather(*load, return_exceptions=True), late

        answered, late = asyncio.run(main())
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    assert all(isinstance(a, dict) and len(a["items"]) == 3 for a in answered), [a for a in answered if not isinstance(a, dict)][:3]
    # a request arriving while draining is refused (503), or the listener is already closed
    assert isinstance(late, httpx.HTTPError) or (isinstance(late, GRServeError) and late.status == 503)
    assert "draining" in output
    assert sum('"event": "recommend"' in line for line in output.splitlines()) == 60
