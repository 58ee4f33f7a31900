"""The `openai` client against a real `grserve serve --model DIR` process on loopback: completions, chat,
streaming (with usage), n > 1, stop strings, logprobs and OpenAI-shaped 400s; and a GR model through
/v1/completions with token ids and beam_width."""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest

from grserve.engine.llm.engine import LLMEngine
from grserve.sampling.params import SamplingParams
from tests.server.conftest import free_port


def start(model_dir) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "grserve", "serve", "--model", str(model_dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(llm_dir):
    proc, url = start(f"m={llm_dir}")  # served as "m": what the requests below name
    yield url, openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    proc.terminate()
    proc.wait(30)


def direct(llm_dir, prompt_ids, **kw):
    engine = LLMEngine(llm_dir)
    try:
        return engine.generate_sync(prompt_ids, SamplingParams(**kw))
    finally:
        engine.shutdown()


def test_models_lists_the_llm(server):
    url, client = server
    (model,) = client.models.list().data
    assert model.id == "m"


def test_completion_equals_engine(server, llm_dir):
    url, client = server
    out = client.completions.create(model="m", prompt="the quick brown", max_tokens=10, temperature=0,
                                    extra_body={"ignore_eos": True})
    from grserve.model.tokenizer import load_tokenizer
    ids = load_tokenizer(llm_dir).encode("the quick brown")
    ((tokens, text, reason),) = direct(llm_dir, ids, temperature=0, max_tokens=10, ignore_eos=True)
    assert out.choices[0].text == text and out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == 10


def test_streaming_completion_with_usage(server):
    url, client = server
    full = client.completions.create(model="m", prompt="hello world", max_tokens=8, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    chunks = list(client.completions.create(model="m", prompt="hello world", max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].choices == []
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat_and_chat_streaming(server):
    url, client = server
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    out = client.chat.completions.create(model="m", messages=msgs, max_tokens=6, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert out.choices[0].message.role == "assistant" and out.usage.completion_tokens == 6
    stream = client.chat.completions.create(model="m", messages=msgs, max_tokens=6, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == out.choices[0].message.content


def test_n_stop_and_logprobs(server):
    url, client = server
    out = client.completions.create(model="m", prompt="the cat", max_tokens=6, n=3, temperature=1.0, seed=7,
                                    extra_body={"ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    base = client.completions.create(model="m", prompt="the cat", max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    if len(base) > 6:
        cut = client.completions.create(model="m", prompt="the cat", max_tokens=12, temperature=0, stop=[base[4:6]],
                                        extra_body={"ignore_eos": True}).choices[0]
        assert cut.finish_reason == "stop" and cut.text == base[:base.find(base[4:6])]
    lp = client.completions.create(model="m", prompt="the cat", max_tokens=3, temperature=0, logprobs=2,
                                   extra_body={"ignore_eos": True}).choices[0].logprobs
    assert len(lp.token_logprobs) == 3 and all(len(t) == 2 for t in lp.top_logprobs)


def test_beam_search_through_the_api(server):
    url, client = server
    out = client.completions.create(model="m", prompt="the cat", max_tokens=5, n=2, temperature=0,
                                    extra_body={"use_beam_search": True, "best_of": 4, "ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1] and out.usage.completion_tokens == 10
    assert all(c.finish_reason == "length" for c in out.choices)


@pytest.mark.parametrize("kwargs,param", [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                                          ({"max_tokens": 100000}, "max_tokens"), ({"n": 0}, "n")])
def test_bad_requests_are_openai_400s(server, kwargs, param):
    url, client = server
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="m", prompt="hi", **kwargs)
    assert e.value.status_code == 400 and e.value.body["param"].startswith(param)


def test_gr_model_through_completions(tiny_bundle, tiny_model_dir):
    proc, url = start(tiny_model_dir)
    try:
        prompt = tiny_bundle.vocab.prompt(tiny_bundle.table.codes[[1, 2]])
        r = httpx.post(url + "/v1/completions", json={"prompt": prompt, "beam_width": 8, "max_tokens": 3, "n": 4})
        assert r.status_code == 200
        choices = r.json()["choices"]
        valid = {tuple(c) for c in tiny_bundle.table.codes.tolist()}
        assert 1 <= len(choices) <= 4 and all(tuple(c["semantic_id"]) in valid for c in choices)
        assert [c["score"] for c in choices] == sorted((c["score"] for c in choices), reverse=True)
        bad = httpx.post(url + "/v1/completions", json={"prompt": prompt, "beam_width": 8, "max_tokens": 5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"
    finally:
        proc.terminate()
        proc.wait(30)


def test_timeout_ms_ends_generation_with_504(server):
    """A deadline far shorter than 400 tokens take: 504 naming timeout_ms (an error event when streaming), the
    sequences are aborted in the engine (its KV use drops back to none), and a later request is served."""
    url, _ = server
    body = {"prompt": "the cat", "max_tokens": 400, "ignore_eos": True, "timeout_ms": 1}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 504 and r.json()["error"]["param"] == "timeout_ms"
    with httpx.stream("POST", url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "ignore_eos": True,
            "timeout_ms": 1, "stream": True}, timeout=60) as s:
        lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert '"code": 504' in lines[-2] and lines[-1] == "data: [DONE]"
    deadline = time.monotonic() + 30
    while 'grserve:gpu_cache_usage_perc{model="m"} 0.0' not in httpx.get(url + "/metrics").text:
        assert time.monotonic() < deadline, "the timed-out sequences still hold KV"
        time.sleep(0.1)
    too_long = httpx.post(url + "/v1/completions", json={**body, "timeout_ms": 10 ** 9})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "timeout_ms"
    ok = httpx.post(url + "/v1/completions", json={**body, "max_tokens": 3, "timeout_ms": 60000}, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
