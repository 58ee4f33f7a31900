"""Prefill/decode disaggregation through the router, all real: etcd, a prefill and a decode instance process
registered in it, and the router pairing them. Greedy outputs equal those of a single mixed instance, and the
decode instance computed only what the prefill instance's KV did not cover."""
from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from grserve.service.router import create_router_app
from tests.server.conftest import running
from tests.service.conftest import instance_cpus, start_instance, wait_for

PROMPTS = [[(7 * i + k) % 390 + 5 for i in range(n)] for k, n in ((0, 150), (1, 40), (2, 9))]


def counters(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def generate(url: str, prompt: list[int], stream: bool) -> str:
    body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": True, "stream": stream}
    if not stream:
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert all("error" not in e for e in events)
    return "".join(e["choices"][0]["text"] for e in events if e["choices"])


def test_prefill_decode_pair_answers_as_a_mixed_instance(etcd, llm_dir):
    (p_proc, p_url), (d_proc, d_url) = (start_instance(llm_dir, etcd.url, "--role", role, cpus=cpus)
                                        for role, cpus in zip(("prefill", "decode"), instance_cpus(2)))
    try:
        with running(create_app(ServerConfig(model=str(llm_dir)))) as mixed, \
                running(create_router_app(etcd.url, "least-loaded", poll_interval=0.2)) as router:
            wait_for(lambda: {i["role"] for i in httpx.get(router + "/v1/instances").json()["data"]
                              if i["kinds"] == ["llm"]} == {"prefill", "decode"}, 120, "prefill and decode instances")
            wait_for(lambda: httpx.get(mixed + "/health").status_code == 200, 60, "the mixed instance")
            for stream in (False, True):
                assert [generate(router, p, stream) for p in PROMPTS] == [generate(mixed, p, False) for p in PROMPTS]
            decode, prefill = counters(d_url), counters(p_url)
            # Each prompt twice: the KV of its full blocks came from the prefill instance the first time, and the
            # second time the decode instance's cache held them (no pull). 9 + 2 blocks of 16 imported; the
            # 9-token prompt has no full block and is never pulled.
            assert decode["grserve:pd_imported_blocks_total"] == 9 + 2
            assert decode["grserve:pd_pull_failures_total"] == 0
            # The decode instance computed the partial last blocks and the decode steps, never a full block.
            partial = sum(len(p) % 16 or 16 for p in PROMPTS)
            assert decode["grserve:prompt_tokens_computed_total"] == 2 * (partial + 7 * len(PROMPTS))
            assert prefill["grserve:prompt_tokens_computed_total"] == 150 + 40
            paired = counters(router)
            assert sum(v for k, v in paired.items() if k == "grserve_router:pd_paired_total") == 2 * len(PROMPTS)
    finally:
        for proc in (p_proc, d_proc):
            proc.terminate()
            proc.wait(30)
