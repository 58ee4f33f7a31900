"""Schema-driven fuzzing with hypothesis: arbitrary JSON (and near-valid requests) against a real server
never gets a 5xx, and the server keeps answering."""
from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grserve.recommender import Recommender
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from tests.server.conftest import running

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                           | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
item_ids = st.one_of(st.integers(-5, 500), st.text(max_size=6), st.sampled_from(["i1", "i2", "i399"]))
near_valid = st.fixed_dictionaries({}, optional={
    "history": st.lists(item_ids, max_size=30) | json_values,
    "top_n": st.integers(-3, 600) | json_values,
    "beam_width": st.integers(-3, 600) | json_values,
    "exclude": st.lists(item_ids, max_size=10),
    "allow": st.none() | st.lists(item_ids, max_size=10),
    "exclude_history": st.booleans() | json_values,
    "timeout_ms": st.integers(-1, 10 ** 6) | json_values,
    "request_id": st.text(max_size=200) | json_values,
})


def post(url: str, body) -> httpx.Response:
    return httpx.post(url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=30)


@pytest.fixture(scope="module")
def base_url(tiny_bundle):
    config = ServerConfig.of(max_beam_width=64)
    with running(create_app(config, Recommender(tiny_bundle, config.engine))) as url:
        yield url


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=near_valid | json_values)
def test_recommend_never_5xx(base_url, body):
    r = post(base_url + "/v1/recommend", body)
    assert r.status_code in (200, 400, 429, 504), r.text
    if r.status_code == 200:
        assert len(r.json()["items"]) <= body.get("top_n", 10)
    else:
        assert r.json()["error"]["code"] == r.status_code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries({"requests": st.lists(near_valid, max_size=4)}) | json_values)
def test_batch_never_5xx(base_url, body):
    r = post(base_url + "/v1/recommend/batch", body)
    assert r.status_code in (200, 400), r.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), ctype=st.sampled_from(["application/json", "text/plain", "", "application/x+json"]))
def test_raw_bytes_never_5xx(base_url, raw, ctype):
    r = httpx.post(base_url + "/v1/recommend", content=raw, headers={"content-type": ctype} if ctype else {})
    assert r.status_code in (200, 400, 413, 415), r.text
    assert httpx.get(base_url + "/health").status_code == 200
