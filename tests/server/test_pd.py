"""Prefill/decode disaggregation between two real servers on loopback: a decode server told (by header) of a
prefill server pulls the prompt's KV from it, computes only the remainder, and answers exactly what
transformers' greedy search gives; a dead prefill server costs only the transfer."""
from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grserve.model.tokenizer import load_tokenizer
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from grserve.server.protocol import PREFILL_HEADER
from tests.engine.llm.test_engine import hf_greedy
from tests.server.conftest import free_port, running

PROMPT = [(13 * i) % 390 + 5 for i in range(100)]  # 6 full blocks of 16 + 4 tokens


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def wait_ready(url: str) -> None:
    for _ in range(300):
        if httpx.get(url + "/health").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("server did not load")


@pytest.fixture(scope="module")
def pair(llm_dir):
    with running(create_app(ServerConfig(model=str(llm_dir), role="prefill"))) as p, \
            running(create_app(ServerConfig(model=str(llm_dir), role="decode"))) as d:
        wait_ready(p)
        wait_ready(d)
        yield p, d


def complete(url: str, headers: dict, stream: bool = False, prompt: list[int] = PROMPT) -> str:
    body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    if not stream:
        r = httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, headers=headers,
                      timeout=60) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        return "".join(e["choices"][0]["text"] for e in events if e["choices"])


def test_decode_pulls_the_prompt_kv_and_computes_only_the_remainder(pair, llm_dir):
    p, d = pair
    expected = hf_greedy(llm_dir, [PROMPT], 6)[0]
    before = metric(d, "grserve:prompt_tokens_computed_total")
    got = complete(d, {PREFILL_HEADER: p})
    assert got == load_tokenizer(llm_dir).decode(expected, skip_special_tokens=True)
    assert metric(d, "grserve:pd_imported_blocks_total") == 6
    # the 4 tokens of the partial block and 5 decode tokens (the 6th is sampled, never computed)
    assert metric(d, "grserve:prompt_tokens_computed_total") - before == 4 + 5
    assert metric(p, "grserve:prompt_tokens_computed_total") >= 100


def test_a_dead_prefill_instance_costs_only_the_transfer(pair, llm_dir):
    _, d = pair
    failures = metric(d, "grserve:pd_pull_failures_total")
    prompt = PROMPT[::-1]  # not cached there yet
    got = complete(d, {PREFILL_HEADER: f"http://127.0.0.1:{free_port()}"}, stream=True, prompt=prompt)
    assert got == load_tokenizer(llm_dir).decode(hf_greedy(llm_dir, [prompt], 6)[0], skip_special_tokens=True)
    assert metric(d, "grserve:pd_pull_failures_total") == failures + 1


def test_prefill_route_validates(pair):
    p, _ = pair
    r = httpx.post(p + "/v1/pd/prefill", json={"prompt_token_ids": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_token_ids"
    r = httpx.post(p + "/v1/pd/prefill", json={"prompt_token_ids": [10 ** 7]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
