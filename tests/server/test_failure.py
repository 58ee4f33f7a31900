"""A server whose engine dies, or whose model cannot load, says so: /health answers 503 with the reason and
API calls get 503 with it (never a 500, never a hang); `grserve serve` exits non-zero when the model cannot
load, and reports loading while a good one loads."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from grserve.recommender import Recommender
from grserve.server import models_api
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from tests.server.conftest import free_port, running


class Boom(BaseException):
    """Not an Exception: it passes the engine's per-batch handlers, as a bug outside them would."""


def explode(*_):
    raise Boom("kaput")


def test_dead_gr_engine_is_503_with_the_reason(tiny_bundle):
    config = ServerConfig.of(max_beam_width=8, default_timeout_ms=30_000)
    rec = Recommender(tiny_bundle, config.engine)
    rec.engine.runner.run = explode
    with running(create_app(config, rec)) as url:
        r = httpx.post(url + "/v1/recommend", json={"history": ["i1"], "top_n": 2, "beam_width": 4}, timeout=30)
        # the request whose batch killed the step thread: failed with the engine, not left waiting
        assert r.status_code == 503 and "gr-step died: Boom: kaput" in r.json()["error"]["message"]
        health = httpx.get(url + "/health")
        assert health.status_code == 503
        assert health.json() == {"status": "error", "detail": "engine thread gr-step died: Boom: kaput"}
        for path, body in [("/v1/recommend", {"history": []}), ("/v1/recommend/batch", {"requests": [{}]})]:
            r = httpx.post(url + path, json=body, timeout=30)
            assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable"
            assert "gr-step died" in r.json()["error"]["message"]
        assert httpx.get(url + "/metrics").status_code == 200  # still observable


def test_dead_llm_engine_is_503_for_plain_and_streaming_requests(llm_dir):
    from grserve.engine.llm.engine import LLMEngine
    config = ServerConfig(model=f"m={llm_dir}")  # the LLM the requests below name
    llm = LLMEngine(llm_dir, config.llm)
    llm.runner.execute = explode
    body = {"model": "m", "prompt": [5, 6, 7], "max_tokens": 4}
    with running(create_app(config, llm=llm)) as url:
        r = httpx.post(url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 503 and "llm-step died: Boom: kaput" in r.json()["error"]["message"]
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and "llm-step died: Boom: kaput" in health.json()["detail"]
        r = httpx.post(url + "/v1/completions", json={**body, "stream": True}, timeout=30)
        assert r.status_code == 503 and "llm-step died" in r.json()["error"]["message"]
        chat = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
        assert httpx.post(url + "/v1/chat/completions", json=chat, timeout=30).status_code == 503


def test_health_reports_loading_while_a_good_model_loads(tiny_bundle, monkeypatch):
    release = threading.Event()

    def slow_load(config, spec):
        assert release.wait(30)
        return Recommender(tiny_bundle, config.engine)

    monkeypatch.setattr(models_api, "load_recommender", slow_load)
    with running(create_app(ServerConfig())) as url:
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json() == {"status": "loading", "detail": None}
        release.set()
        deadline = time.monotonic() + 30
        while (r := httpx.get(url + "/health")).status_code != 200:
            assert time.monotonic() < deadline, r.json()
            time.sleep(0.05)
        assert r.json()["status"] == "ok"


@pytest.mark.parametrize("model", ["/nonexistent", "tmp"])
def test_serve_exits_non_zero_when_the_model_cannot_load(model, tmp_path):
    """A real `grserve serve`: a missing directory, or one without a model, is logged and the process exits 1."""
    model = str(tmp_path) if model == "tmp" else model
    proc = subprocess.run([sys.executable, "-m", "grserve", "serve", "--model", model, "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"model failed to load: {model} is not a GR model directory" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("grserve serve: model failed to load")
