"""The router over a real etcd and 3 real instance processes on loopback: SIGKILL one under a steady GR
load and lose no request; the dead instance leaves routing when its lease expires; a restarted one rejoins
with a new incarnation; session affinity; no instances → 503."""
from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from grserve.recommender import Recommender
from grserve.service.router import create_router_app
from tests.server.conftest import free_port, running
from tests.service.conftest import instance_cpus, start_instance, wait_for


def live(url: str) -> dict:
    return {i["instance_id"]: i for i in httpx.get(url + "/v1/instances").json()["data"]}


@pytest.fixture
def cluster(etcd, tiny_model_dir):
    ports, cpus = [free_port() for _ in range(3)], instance_cpus(3)
    procs = {p: start_instance(tiny_model_dir, etcd.url, "--default-timeout-ms", "20000", port=p, cpus=c)[0]
             for p, c in zip(ports, cpus)}
    try:
        with running(create_router_app(etcd.url, "least-loaded", retries=2, poll_interval=0.2)) as url:
            wait_for(lambda: len(live(url)) == 3, 60, "3 instances registered")
            yield url, ports, procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def test_sigkill_under_load_loses_no_request(cluster, tiny_bundle, etcd, tiny_model_dir):
    url, ports, procs = cluster
    histories = [[f"i{(n * 7 + k) % 60}" for k in range(1 + n % 6)] for n in range(150)]

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            async def one(n):
                await asyncio.sleep(n * 0.02)  # open loop: 50 requests/s for 3 s
                if n == 50:
                    procs[ports[0]].send_signal(signal.SIGKILL)
                r = await client.post(url + "/v1/recommend", json={"history": histories[n], "top_n": 5,
                                                                   "beam_width": 16, "timeout_ms": 20000})
                return r.status_code, r.json()
            return await asyncio.gather(*(one(n) for n in range(150)))

    results = asyncio.run(main())
    rec = Recommender(tiny_bundle)
    try:
        for h, (status, body) in zip(histories, results):
            assert status == 200, body  # every request answered: retried on a live instance when needed
            assert [i["item_id"] for i in body["items"]] == [i.item_id for i in rec.recommend(h, 5, 16).items]
    finally:
        rec.close()
    dead = f"127.0.0.1:{ports[0]}"
    wait_for(lambda: dead not in live(url), 10, "the killed instance to leave routing")
    assert len(live(url)) == 2
    old = {i: v["incarnation"] for i, v in live(url).items()}
    # restarted on the same port: it rejoins, with a new incarnation
    procs[ports[0]], _ = start_instance(tiny_model_dir, etcd.url, "--default-timeout-ms", "20000", port=ports[0],
                                        cpus=instance_cpus(3)[0])
    wait_for(lambda: dead in live(url), 60, "the restarted instance to rejoin")
    assert live(url)[dead]["incarnation"] not in old.values()
    r = httpx.post(url + "/v1/recommend", json={"history": ["i1"], "top_n": 3, "beam_width": 8})
    assert r.status_code == 200


def test_session_affinity(cluster):
    url, ports, procs = cluster
    assert httpx.get(url + "/health").json()["instances"] == 3
    for _ in range(6):
        r = httpx.post(url + "/v1/recommend", json={"history": ["i2"], "top_n": 2, "beam_width": 4},
                       headers={"x-session-id": "user-42"})
        assert r.status_code == 200
    served = {line.split('instance="')[1].split('"')[0] for line in httpx.get(url + "/metrics").text.splitlines()
              if line.startswith("grserve_router:forwarded_total{") and 'status="200"' in line}
    assert len(served) == 1  # the same session always landed on the same instance


def test_no_instances_is_503(etcd):
    with running(create_router_app(etcd.url, "round-robin", poll_interval=0.2, prefix="/grserve-empty/")) as url:
        assert httpx.get(url + "/health").status_code == 503
        r = httpx.post(url + "/v1/recommend", json={"history": []})
        assert r.status_code == 503 and r.json()["error"]["code"] == 503
