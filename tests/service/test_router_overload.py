"""The router when instances refuse, over fake GR instances in a real etcd: 429s from every instance tried are one
429 with the smallest Retry-After, each instance asked once and no more than `retries` + 1 in all; a 429 beside
a 200 is the 200; an instance's 504 is passed on and never retried; retries stop at the deadline; /health is 503
with no instance, then 200, and the requests right after it are answered."""
from __future__ import annotations

import threading
from contextlib import ExitStack

import httpx
import pytest

from grserve.server.protocol import error_body
from grserve.service.router import create_router_app
from tests.server.conftest import running
from tests.service.conftest import wait_for
from tests.service.fake_instance import FakeInstance, answer_after, answer_json, forwarded

REQUEST = {"history": ["1", "2"], "top_n": 2, "beam_width": 4, "timeout_ms": 5000}
ANSWER = {"id": "rec-1", "items": [{"item_id": "7", "score": -1.0}]}


def busy(retry_after: int):
    """An instance at capacity, as grserve serve refuses: 429, a JSON error, Retry-After in whole seconds."""
    return answer_json(error_body(429, "server overloaded, request refused at once", None, "rate_limit_error"), 429,
                       {"Retry-After": str(retry_after)})


@pytest.fixture
def instances(registry):
    """Starts fake GR instances in the test's registry; all are closed after the test."""
    with ExitStack() as stack:
        def start(name, answer):
            fake = FakeInstance(registry, name, answer, kinds=("gr",))
            stack.callback(fake.close)
            return fake
        yield start


def router(etcd, prefix, retries=2, poll_interval=0.2, **kw):
    # round-robin in instance-id order: "a" is tried first
    return running(create_router_app(etcd.url, "round-robin", retries=retries, poll_interval=poll_interval,
                                     prefix=prefix, **kw))


def post(url, body=REQUEST):
    return httpx.post(url + "/v1/recommend", json=body, timeout=30)


def test_every_instance_at_capacity_is_one_429_with_the_smallest_retry_after(etcd, prefix, instances):
    fakes = [instances(name, busy(after)) for name, after in (("a", 3), ("b", 1), ("c", 2))]
    with router(etcd, prefix, retries=5) as url:  # more retries than instances: still each asked once
        r = post(url)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert error["code"] == 429 and error["type"] == "rate_limit_error" and "capacity" in error["message"]
        assert forwarded(url) == {"a": 1, "b": 1, "c": 1}
    assert [len(f.requests) for f in fakes] == [1, 1, 1]


def test_429s_ask_at_most_retries_plus_one_instances(etcd, prefix, instances):
    after = {"a": 4, "b": 2, "c": 1, "d": 3}
    fakes = {name: instances(name, busy(s)) for name, s in after.items()}
    with router(etcd, prefix, retries=1) as url:
        r = post(url)
    asked = [name for name, fake in fakes.items() if fake.requests]
    assert len(asked) == 2 and all(len(fakes[n].requests) == 1 for n in asked)
    assert r.status_code == 429 and r.headers["retry-after"] == str(min(after[n] for n in asked))


def test_a_429_beside_a_200_is_the_200(etcd, prefix, instances):
    full, free = instances("a", busy(2)), instances("b", answer_json(ANSWER))
    with router(etcd, prefix) as url:
        r = post(url)
    assert r.status_code == 200 and r.json() == ANSWER
    assert full.requests == free.requests == [("/v1/recommend", REQUEST)]


def test_an_instances_504_is_passed_on_never_retried(etcd, prefix, instances):
    late = error_body(504, "deadline of 5000 ms cannot be met", "timeout_ms", "timeout_error")
    first, other = instances("a", answer_json(late, 504)), instances("b", answer_json(ANSWER))
    with router(etcd, prefix) as url:
        r = post(url)
    assert r.status_code == 504 and r.json() == late
    assert len(first.requests) == 1 and other.requests == []


def test_no_retry_once_the_deadline_has_passed(etcd, prefix, instances):
    release = threading.Event()
    stalled = instances("a", answer_after(release, busy(1)))
    other = instances("b", answer_json(ANSWER))
    try:
        with router(etcd, prefix) as url:
            r = post(url, {**REQUEST, "timeout_ms": 300})
    finally:
        release.set()
    assert r.status_code == 504 and r.json()["error"]["param"] == "timeout_ms"
    assert len(stalled.requests) == 1 and other.requests == []


def test_no_retry_when_too_little_of_the_deadline_is_left(etcd, prefix, instances):
    # a retry needs min_retry_s of the deadline left: 60 s is more than the whole 5 s deadline
    full, free = instances("a", busy(2)), instances("b", answer_json(ANSWER))
    with router(etcd, prefix, min_retry_s=60.0) as url:
        r = post(url)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert len(full.requests) == 1 and free.requests == []


def test_health_is_503_until_an_instance_lives_then_requests_are_answered(etcd, prefix, instances):
    with router(etcd, prefix) as url:
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["instances"] == 0
        r = post(url)
        assert r.status_code == 503 and r.json()["error"]["message"] == "no live instance serves this request"
        instances("a", answer_json(ANSWER))
        wait_for(lambda: httpx.get(url + "/health").status_code == 200, 10, "the router to see the instance")
        assert [post(url).status_code for _ in range(3)] == [200, 200, 200]


def test_a_request_finds_an_instance_that_registered_just_before_it(etcd, prefix, instances):
    # a slow poll: the instance registers between two; the request waits for the next rather than get 503
    with router(etcd, prefix, poll_interval=1.0) as url:
        assert httpx.get(url + "/health").status_code == 503
        fake = instances("a", answer_json(ANSWER))
        r = post(url)
    assert r.status_code == 200 and fake.requests == [("/v1/recommend", REQUEST)]
