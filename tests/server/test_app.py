"""The HTTP front end on a real uvicorn server on a loopback port."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from grserve.recommender import Recommender
from grserve.server.app import create_app


@pytest.fixture(scope="module")
def base_url(tiny_bundle):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Recommender(tiny_bundle), "tiny"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_health(base_url):
    r = httpx.get(base_url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_recommend_equals_direct_call(base_url, tiny_bundle):
    body = {"history": ["i3", 8, "i9"], "top_n": 5, "beam_width": 16}
    r = httpx.post(base_url + "/v1/recommend", json=body)
    assert r.status_code == 200
    data = r.json()
    direct = Recommender(tiny_bundle).recommend(["i3", "8", "i9"], 5, 16)
    assert [i["item_id"] for i in data["items"]] == [i.item_id for i in direct.items]
    assert [i["score"] for i in data["items"]] == pytest.approx([i.score for i in direct.items], abs=1e-5)
    assert any("8" in w for w in data["warnings"])  # "8" is not a catalog id
    assert data["usage"] == {"prompt_tokens": 7, "beam_width": 16}


@pytest.mark.parametrize("body,field", [
    ({"history": ["i1"], "top_n": 0}, "top_n"),
    ({"history": ["i1"], "beam_width": 10_000}, "beam_width"),
    ({"history": "i1"}, "history"),
    ({"history": ["i1"], "top_n": 20, "beam_width": 8}, None),
    ({"history": ["i1"], "colour": "red"}, "colour"),
])
def test_bad_requests_are_400_naming_the_field(base_url, body, field):
    r = httpx.post(base_url + "/v1/recommend", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    if field:
        assert err["param"] == field and field in err["message"]
    else:
        assert "top_n" in err["message"] and "beam_width" in err["message"]


def test_malformed_json_is_400(base_url):
    r = httpx.post(base_url + "/v1/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
