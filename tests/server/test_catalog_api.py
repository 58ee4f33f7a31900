"""The catalog admin API on a real uvicorn server: auth (admin token, API key), every change visible in the
very next answer and equal to the reference over the changed catalog, 400s naming the field, a request in
flight during a swap answered on its own version, a restart over the same state directory, metrics, OpenAPI."""
from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grserve.client import GRServeClient, GRServeError
from grserve.recommender import Recommender
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from grserve.server.model_spec import DEFAULT_NAME
from tests.catalog.oracle import CatalogModel, assert_same_answer, reference_answer
from tests.conftest import make_bundle
from tests.server.conftest import running

TOKEN = "s3cret-admin"
TOP_N, WIDTH = 5, 16


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(num_items=150, codebook_size=6, seed=21)


def serve(bundle, **settings):
    config = ServerConfig.of(max_beam_width=32, default_timeout_ms=30_000, **settings)
    return running(create_app(config, Recommender(bundle, config.engine)))


def answer(client, history) -> tuple[int, list[tuple[str, float]]]:
    out = client.recommend(history, top_n=TOP_N, beam_width=WIDTH)
    return out["catalog_version"], [(i["item_id"], i["score"]) for i in out["items"]]


def test_admin_routes_are_off_without_a_token(bundle):
    with serve(bundle) as url:
        for method, path in (("GET", ""), ("POST", "/items"), ("DELETE", "/items"), ("POST", "/availability"),
                             ("POST", "/rollback")):
            r = httpx.request(method, url + "/v1/catalog" + path, json={}, headers={"authorization": "Bearer x"})
            assert r.status_code == 403, (method, path)
            assert r.json()["error"]["type"] == "permission_error" and "--admin-token" in r.json()["error"]["message"]
        # and the public API is open: no API key is set
        assert httpx.post(url + "/v1/recommend", json={"top_n": 2, "beam_width": 8}).status_code == 200


def test_admin_token_and_api_key(bundle, monkeypatch):
    monkeypatch.setenv("GRSERVE_ADMIN_TOKEN", TOKEN)  # the environment's, as a deployment would pass it
    with serve(bundle, api_key="pub-key") as url:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN},
                        {"authorization": "Bearer pub-key"}):
            r = httpx.get(url + "/v1/catalog", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["type"] == "authentication_error"
        assert GRServeClient(url, admin_token=TOKEN).catalog()["version"] == 0
        for path in ("/v1/recommend", "/v1/models"):
            r = httpx.request("POST" if path == "/v1/recommend" else "GET", url + path, json={})
            assert r.status_code == 401, path
        with GRServeClient(url, api_key="pub-key") as c:
            assert c.recommend([], top_n=2, beam_width=4)["catalog_version"] == 0 and c.models()
        with pytest.raises(GRServeError) as e:
            GRServeClient(url, api_key="nope").recommend([])
        assert e.value.status == 401
        assert httpx.get(url + "/health").status_code == 200 and httpx.get(url + "/metrics").status_code == 200


def test_each_change_is_answered_at_once_as_the_reference_says(bundle):
    model = CatalogModel(bundle.table)
    history = ["i4", "i9"]
    with serve(bundle, admin_token=TOKEN) as url, GRServeClient(url, admin_token=TOKEN) as c:
        version, base = answer(c, history)
        assert version == 0
        assert_same_answer(base, reference_answer(bundle, model, history, TOP_N, WIDTH))
        top = base[0][0]
        out = c.add_items([{"item_id": "fresh", "semantic_id": list(model.sids[top]), "title": "Fresh"}])
        assert out["version"] == 1 and out["items"] == 151 and out["changes"][-1]["kind"] == "add"
        model.add("fresh", model.sids[top])
        version, added = answer(c, history)
        assert version == 1 and "fresh" in [i for i, _ in added]
        assert_same_answer(added, reference_answer(bundle, model, history, TOP_N, WIDTH))

        off = [i for i, _ in added[:3]]
        assert c.set_availability(disable=off)["disabled"] == 3
        version, disabled = answer(c, history)
        assert version == 2 and not set(off) & {i for i, _ in disabled}
        assert_same_answer(disabled, reference_answer(bundle, model.copy().disable(*off), history, TOP_N, WIDTH))

        gone = [i for i, _ in disabled[:2]]
        c.remove_items(gone)
        version, removed = answer(c, history)
        assert version == 3 and not set(gone + off) & {i for i, _ in removed}
        assert_same_answer(removed, reference_answer(bundle, model.copy().disable(*off).remove(*gone), history,
                                                     TOP_N, WIDTH))

        assert c.rollback(1)["version"] == 4
        version, back = answer(c, history)
        assert version == 4 and [i for i, _ in back] == [i for i, _ in added]
        assert [s for _, s in back] == pytest.approx([s for _, s in added], abs=1e-5)
        shown = c.catalog()
        assert [ch["kind"] for ch in shown["changes"]] == ["add", "availability", "remove", "rollback"]
        assert shown["changes"][-1]["to_version"] == 1 and shown["disabled"] == 0
        (listed,) = c.models()
        assert listed["catalog_version"] == 4 and listed["catalog_size"] == 151
        batch = c.recommend_batch([{"history": history, "top_n": 2, "beam_width": 4}])
        assert batch[0]["catalog_version"] == 4


@pytest.mark.parametrize("method,path,body,param", [
    ("POST", "/items", {"items": [{"item_id": "x", "semantic_id": [1, 2, 6]}]}, "items.0.semantic_id"),
    ("POST", "/items", {"items": [{"item_id": "x", "semantic_id": [1, 2]}]}, "items.0.semantic_id"),
    ("POST", "/items", {"items": [{"item_id": "x", "semantic_id": [1, 2, "a"]}]}, "items.0.semantic_id"),
    ("POST", "/items", {"items": [{"item_id": "x", "semantic_id": [1, 2, 3]}], "colour": 1}, "colour"),
    ("POST", "/items", [{"item_id": "x", "semantic_id": [1, 2, 3]}], "body"),
    ("POST", "/items", {"items": [{"item_id": "x", "semantic_id": [1, 2, 3], "colour": 1}]}, "items.0.colour"),
    ("POST", "/items", {"items": [{"item_id": "x", "text": "red running shoes"}]}, "items.0.text"),
    ("POST", "/items", {"items": []}, "items"),
    ("POST", "/items", {"item": []}, "items"),
    ("DELETE", "/items", {"item_ids": ["i1", "nope"]}, "item_ids.1"),
    ("DELETE", "/items", {"item_ids": [["i1"]]}, "item_ids.0"),
    ("DELETE", "/items", {}, "item_ids"),
    ("POST", "/availability", {"disable": ["i1"], "out": ["i2"]}, "out"),
    ("POST", "/availability", {"disable": ["i1"], "enable": ["nope"]}, "enable.0"),
    ("POST", "/availability", {}, "disable"),
    ("POST", "/rollback", {"version": 0}, "version"),
    ("POST", "/rollback", {"version": "latest"}, "version"),
])
def test_bad_changes_are_400_naming_the_field(bundle, method, path, body, param):
    with serve(bundle, admin_token=TOKEN) as url:
        r = httpx.request(method, url + "/v1/catalog" + path, json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        assert GRServeClient(url, admin_token=TOKEN).catalog()["version"] == 0


def test_malformed_bodies(bundle):
    auth = {"authorization": f"Bearer {TOKEN}"}
    with serve(bundle, admin_token=TOKEN) as url:
        r = httpx.post(url + "/v1/catalog/items", content=b"{nope",
                       headers={**auth, "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == 400
        r = httpx.request("DELETE", url + "/v1/catalog/items", content=b'{"item_ids": []}', headers=auth)
        assert r.status_code == 415


def test_a_request_in_flight_during_a_swap_is_answered_on_its_version(bundle):
    """The step thread is held after a first request's step; a second request is built on version 0 and waits;
    the change to version 1 lands; a third is built on version 1. Released, each is answered on its own."""
    config = ServerConfig.of(max_beam_width=32, default_timeout_ms=30_000, admin_token=TOKEN)
    rec = Recommender(bundle, config.engine)
    hold, held = threading.Event(), threading.Event()

    def block(*_):
        if not held.is_set():
            held.set()
            hold.wait(30)
    rec.engine.step_hooks.append(block)
    model, history = CatalogModel(bundle.table), ["i11"]
    results = {}
    with running(create_app(config, rec)) as url, GRServeClient(url, admin_token=TOKEN) as admin:
        def ask(name):
            with GRServeClient(url) as c:
                results[name] = answer(c, history)
        threads = [threading.Thread(target=ask, args=("first",))]
        threads[0].start()
        held.wait(30)
        threads.append(threading.Thread(target=ask, args=("in_flight",)))
        threads[1].start()
        wait_for(lambda: rec.engine.waiting_requests == 1)
        old_top = reference_answer(bundle, model, history, TOP_N, WIDTH)[0][0]
        assert admin.set_availability(disable=[old_top])["version"] == 1
        threads.append(threading.Thread(target=ask, args=("after",)))
        threads[2].start()
        wait_for(lambda: rec.engine.waiting_requests == 2)
        hold.set()
        for t in threads:
            t.join(30)
    assert results["in_flight"][0] == 0 and results["after"][0] == 1
    assert_same_answer(results["in_flight"][1], reference_answer(bundle, model, history, TOP_N, WIDTH))
    assert_same_answer(results["after"][1], reference_answer(bundle, model.disable(old_top), history, TOP_N, WIDTH))


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_restart_over_the_state_directory_keeps_the_version(tiny_model_dir, tmp_path):
    config = ServerConfig.of(model=tiny_model_dir, state_dir=str(tmp_path), admin_token=TOKEN, max_beam_width=32)
    with running(create_app(config)) as url:
        with GRServeClient(url, admin_token=TOKEN) as c:
            wait_for(c.health)
            c.add_items([{"item_id": "n1", "semantic_id": [1, 2, 3]}])
            c.set_availability(disable=["i2"])
            before = c.recommend(["i1"], top_n=4, beam_width=8)
    with running(create_app(config)) as url, GRServeClient(url, admin_token=TOKEN) as c:
        wait_for(c.health)
        assert c.catalog()["version"] == 2 and c.catalog()["disabled"] == 1
        after = c.recommend(["i1"], top_n=4, beam_width=8)
        assert after["catalog_version"] == 2 and after["items"] == before["items"]


def test_metrics_and_openapi(bundle):
    with serve(bundle, admin_token=TOKEN) as url, GRServeClient(url, admin_token=TOKEN) as c:
        c.set_availability(disable=["i1", "i2"])
        c.add_items([{"item_id": "z", "semantic_id": [0, 0, 0]}])
        samples = {(s.name, tuple(s.labels.items())): s.value
                   for f in text_string_to_metric_families(httpx.get(url + "/metrics").text) for s in f.samples}
        spec = httpx.get(url + "/openapi.json").json()
    model = ("model", DEFAULT_NAME)  # the name a server made with one Recommender serves it by
    assert samples[("grserve:catalog_version", (model,))] == 2
    assert samples[("grserve:catalog_items", (model,))] == 151
    assert samples[("grserve:catalog_disabled_items", (model,))] == 2
    assert samples[("grserve:catalog_changes_total", (("kind", "availability"), model))] == 1
    assert samples[("grserve:catalog_changes_total", (("kind", "rollback"), model))] == 0
    assert samples[("grserve:http_requests_total", (("endpoint", "/v1/catalog/items"), ("status", "200")))] == 1
    paths = spec["paths"]
    assert {"/v1/catalog", "/v1/catalog/items", "/v1/catalog/availability", "/v1/catalog/rollback"} <= set(paths)
    assert set(paths["/v1/catalog/items"]) == {"post", "delete"}
    assert {"400", "401", "403"} <= set(paths["/v1/catalog/items"]["post"]["responses"])
    # the route reads its body itself (the catalog checks it), and the schema still says what it takes
    body = paths["/v1/catalog/items"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    item = body["properties"]["items"]["items"]
    assert body["required"] == ["items"] and {"item_id", "semantic_id", "text", "title"} == set(item["properties"])
    assert "catalog_version" in spec["components"]["schemas"]["RecommendResponse"]["properties"]
