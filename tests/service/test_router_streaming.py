"""Streamed completions through the router, over fake instances in a real etcd: a failure before the first byte
is retried on another instance; one after it ends the stream with an error event and `data: [DONE]`, at once;
a relayed stream counts as in flight until it ends."""
from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack

import httpx
import pytest

from grserve.service.router import create_router_app
from tests.server.conftest import running
from tests.service.fake_instance import FakeInstance, answer_json, answer_stream, drop, forwarded, sse_data

EVENTS = [b'data: {"choices": [{"index": 0, "text": "one"}]}\n\n',
          b'data: {"choices": [{"index": 0, "text": "two"}]}\n\n']
PAYLOADS = [e.decode()[len("data: "):-2] for e in EVENTS]
REQUEST = {"prompt": [1, 2, 3], "max_tokens": 8, "stream": True}


@pytest.fixture
def instances(registry):
    """Starts FakeInstances in the test's registry; all are closed after the test."""
    with ExitStack() as stack:
        def start(name, answer):
            fake = FakeInstance(registry, name, answer)
            stack.callback(fake.close)
            return fake
        yield start


def router(etcd, prefix, policy="round-robin"):
    return running(create_router_app(etcd.url, policy, retries=2, poll_interval=0.2, prefix=prefix))


@pytest.mark.parametrize("failure", ["refuses", "drops", "answers 503"])
def test_a_failure_before_the_first_byte_is_retried_elsewhere(etcd, prefix, instances, failure):
    # round-robin in instance-id order: "a" is tried first
    bad = instances("a", {"refuses": None, "drops": drop,
                          "answers 503": answer_json({"error": {"code": 503}}, status=503)}[failure])
    good = instances("b", answer_stream(EVENTS, "done"))
    with router(etcd, prefix) as url, httpx.stream("POST", url + "/v1/completions", json=REQUEST, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert sse_data(r.iter_lines()) == PAYLOADS + ["[DONE]"]
    assert good.requests == [("/v1/completions", REQUEST)]
    assert bad.requests == ([] if failure == "refuses" else good.requests)


@pytest.mark.parametrize("end", ["fin", "reset"])
def test_an_instance_dying_mid_stream_ends_it_with_an_error_then_done(etcd, prefix, instances, end):
    die = threading.Event()
    half = b'data: {"choices": [{"index": 0, "te'  # a third event, cut off by the death
    dying = instances("a", answer_stream(EVENTS + [half], end, before_end=die))
    other = instances("b", answer_stream(EVENTS, "done"))
    with router(etcd, prefix) as url:
        started = time.monotonic()
        with httpx.stream("POST", url + "/v1/completions", json=REQUEST, timeout=10) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(line for line in lines if line.startswith("data: ")) for _ in EVENTS]
            die.set()  # the client holds both events before the instance dies
            got += [line for line in lines if line.startswith("data: ")]
        assert time.monotonic() - started < 5  # no hang: the death ends the stream at once
    data = [line[len("data: "):] for line in got]
    assert data[:2] == PAYLOADS and data[3:] == ["[DONE]"] and len(data) == 4  # the half event is dropped
    error = json.loads(data[2])["error"]
    assert error == {"message": "instance a failed mid-stream", "type": "upstream_error", "param": None, "code": 502}
    assert len(dying.requests) == 1 and other.requests == []  # bytes were sent: no retry


def test_a_stalled_stream_ends_at_the_deadline(etcd, prefix, instances):
    release = threading.Event()
    instances("a", answer_stream(EVENTS[:1], "done", before_end=release))
    try:
        with router(etcd, prefix) as url:
            started = time.monotonic()
            r = httpx.post(url + "/v1/completions", json={**REQUEST, "timeout_ms": 1000}, timeout=10)
            elapsed = time.monotonic() - started
    finally:
        release.set()
    data = sse_data(r.text.splitlines())
    assert data[0] == PAYLOADS[0] and "error" in json.loads(data[1]) and data[2:] == ["[DONE]"]
    assert 0.9 < elapsed < 5


def inflight(url: str) -> dict[str, int]:
    """The router's own in-flight requests, by instance."""
    return {i["instance_id"]: i["inflight"] for i in httpx.get(url + "/v1/instances").json()["data"]}


def test_a_relayed_stream_is_in_flight_until_it_ends(etcd, prefix, instances):
    release = {name: threading.Event() for name in "ab"}
    for name in "ab":
        instances(name, answer_stream(EVENTS[:1], "done", before_end=release[name]))
    seen, streams = [], []
    try:
        with router(etcd, prefix, policy="least-loaded") as url, ExitStack() as stack:
            def open_stream():
                lines = stack.enter_context(httpx.stream("POST", url + "/v1/completions", json=REQUEST,
                                                         timeout=10)).iter_lines()
                assert next(lines) == "data: " + PAYLOADS[0]
                seen.append(forwarded(url))
                streams.append(lines)  # kept: a line iterator dropped closes its response, and ends the stream

            open_stream()  # a tie: "a"
            open_stream()  # "a" has a stream in flight: "b"
            release["b"].set()
            assert sse_data(streams[1]) == ["[DONE]"]  # read to its end
            open_stream()  # "a" still streams, "b" is free again
    finally:
        release["a"].set()
    assert seen == [{"a": 1}, {"a": 1, "b": 1}, {"a": 1, "b": 2}]


def test_a_client_leaving_mid_stream_ends_it_in_flight(etcd, prefix, instances):
    release = threading.Event()
    try:
        for name in "ab":
            instances(name, answer_stream(EVENTS[:1], "done", before_end=release))
        with router(etcd, prefix, policy="least-loaded") as url:
            with httpx.stream("POST", url + "/v1/completions", json=REQUEST, timeout=10) as r:
                lines = r.iter_lines()
                assert next(lines) == "data: " + PAYLOADS[0]
                assert inflight(url) == {"a": 1, "b": 0}
            # the client hung up mid-stream: the router ends the stream and its count
            deadline = time.monotonic() + 5
            while inflight(url)["a"]:
                assert time.monotonic() < deadline, "the stream stayed in flight after its client left"
                time.sleep(0.02)
    finally:
        release.set()
