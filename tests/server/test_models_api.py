"""Several GR models in one server: each request is answered by the model it names (the first GR model when it
names none), as the reference beam search says for that model; each model keeps its own live catalog; /v1/models
lists them all; metrics carry the model; a model no one serves is a 404 naming it. A model loaded and unloaded
through the admin API while another serves a steady load: no request fails, those in flight on the unloaded one
are answered."""
from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grserve.recommender import Recommender
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from tests.catalog.oracle import CatalogModel, assert_same_answer, reference_answer
from tests.conftest import make_bundle
from tests.server.conftest import running

TOKEN = "admin"
AUTH = {"authorization": f"Bearer {TOKEN}"}
HISTORY, TOP_N, WIDTH = ["i4", "i9", "i2"], 5, 16


@pytest.fixture(scope="module")
def bundles():
    """Two models apart in everything: weights, catalog, codebook."""
    return {"shop": make_bundle(num_items=60, seed=1), "news": make_bundle(num_items=45, codebook_size=6, seed=2)}


def config() -> ServerConfig:
    return ServerConfig.of(max_beam_width=WIDTH, default_timeout_ms=60_000, admin_token=TOKEN)


@pytest.fixture(scope="module")
def served(bundles):
    c = config()
    with running(create_app(c, {name: Recommender(b, c.engine) for name, b in bundles.items()})) as url:
        yield url


def recommend(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/v1/recommend", json={"history": HISTORY, "top_n": TOP_N, "beam_width": WIDTH, **body},
                      timeout=60)


def items(body: dict) -> list[tuple[str, float]]:
    return [(i["item_id"], i["score"]) for i in body["items"]]


def want(bundle, history=HISTORY, catalog: CatalogModel | None = None):
    return reference_answer(bundle, catalog or CatalogModel(bundle.table), history, TOP_N, WIDTH)


def test_each_request_is_answered_by_the_model_it_names(served, bundles):
    for named, answering in ((None, "shop"), ("shop", "shop"), ("news", "news")):
        r = recommend(served, **({"model": named} if named else {}))
        assert r.status_code == 200, r.text
        assert r.json()["model"] == answering
        assert_same_answer(items(r.json()), want(bundles[answering]))
    assert want(bundles["shop"]) != want(bundles["news"])  # the two really answer apart
    batch = httpx.post(served + "/v1/recommend/batch", timeout=60, json={"requests": [
        {"history": ["i1"], "top_n": TOP_N, "beam_width": WIDTH, "model": "news"},
        {"history": ["i1"], "top_n": TOP_N, "beam_width": WIDTH}]}).json()["data"]
    assert [b["model"] for b in batch] == ["news", "shop"]
    for b in batch:
        assert_same_answer(items(b), want(bundles[b["model"]], ["i1"]))
    r = httpx.post(served + "/v1/completions", json={"model": "news", "prompt": [1], "beam_width": 4, "n": 2})
    assert r.status_code == 200 and r.json()["model"] == "news"
    assert all(max(c["semantic_id"]) < 6 for c in r.json()["choices"])  # news' codebook of 6


def test_search_reads_the_catalog_of_the_model_it_names(served):
    """`shop` has items i0..i59, `news` i0..i44: an id only shop holds is found in shop's catalog alone."""
    def found(**params):
        r = httpx.get(served + "/v1/catalog/search", params={"q": "i50", **params}, timeout=60)
        assert r.status_code == 200, r.text
        return [i["item_id"] for i in r.json()["data"]]
    assert found() == found(model="shop") == ["i50"] and found(model="news") == []


def test_a_model_no_one_serves_is_a_404_naming_it(served):
    r = recommend(served, model="nope")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model" and "'nope'" in r.json()["error"]["message"]
    r = httpx.post(served + "/v1/recommend/batch", json={"requests": [{"top_n": 2, "beam_width": 4},
                                                                  {"model": "nope", "top_n": 2, "beam_width": 4}]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "requests.1.model"
    r = httpx.get(served + "/v1/catalog?model=nope", headers=AUTH)
    assert r.status_code == 404 and "'nope'" in r.json()["error"]["message"]
    r = httpx.post(served + "/v1/completions", json={"model": "nope", "prompt": "hi"})
    assert r.status_code == 404 and "'nope'" in r.json()["error"]["message"]
    r = httpx.post(served + "/v1/completions", json={"model": "shop", "prompt": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model" and "beam_width" in r.text


def test_models_lists_every_model(served, bundles):
    data = httpx.get(served + "/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["shop", "news"]
    for m in data:
        b = bundles[m["id"]]
        assert m["kind"] == "generative-recommendation" and m["catalog_version"] == 0
        assert (m["catalog_size"], m["codebook_size"], m["levels"]) == (len(b.table), b.table.codebook_size, 3)
    assert [m["default"] for m in data] == [True, False]
    health = httpx.get(served + "/health").json()
    assert health["model"] == "shop" and health["models"] == ["shop", "news"]


def test_metrics_carry_the_model(served):
    def counts() -> dict[str, float]:
        text = httpx.get(served + "/metrics").text
        return {s.labels["model"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "grserve:e2e_request_latency_seconds_count"}
    before = counts()
    for model in ("news", "news", "shop"):
        assert recommend(served, model=model).status_code == 200
    after = counts()
    assert after["news"] - before.get("news", 0) == 2 and after["shop"] - before.get("shop", 0) == 1
    text = httpx.get(served + "/metrics").text
    assert 'grserve:catalog_items{model="news"} 45.0' in text and 'grserve:catalog_items{model="shop"} 60.0' in text


def test_each_model_keeps_its_own_catalog(bundles):
    c = config()
    with running(create_app(c, {name: Recommender(b, c.engine) for name, b in bundles.items()})) as url:
        off = [i for i, _ in want(bundles["news"])[:2]]
        r = httpx.post(url + "/v1/catalog/availability?model=news", json={"disable": off}, headers=AUTH)
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        assert httpx.get(url + "/v1/catalog", headers=AUTH).json()["version"] == 0  # the default: shop's
        news = recommend(url, model="news").json()
        assert news["catalog_version"] == 1
        assert_same_answer(items(news), want(bundles["news"], catalog=CatalogModel(bundles["news"].table).disable(*off)))
        shop = recommend(url, model="shop").json()
        assert shop["catalog_version"] == 0
        assert_same_answer(items(shop), want(bundles["shop"]))


@pytest.fixture
def one_model(bundles, tmp_path):
    """A server of `shop` alone, and `news` saved as a directory to load."""
    bundles["news"].save(tmp_path / "news")
    c = config()
    with running(create_app(c, {"shop": Recommender(bundles["shop"], c.engine)})) as url:
        yield url, str(tmp_path / "news")


def steady(url: str, stop: threading.Event, answers: list) -> None:
    """Requests for the default model, four at a time, until `stop`."""
    async def loop():
        async with httpx.AsyncClient(timeout=60) as client:
            async def one():
                while not stop.is_set():
                    r = await client.post(url + "/v1/recommend", json={"history": HISTORY, "top_n": TOP_N,
                                                                       "beam_width": WIDTH})
                    answers.append((r.status_code, r.json()))
            await asyncio.gather(*(one() for _ in range(4)))
    asyncio.run(loop())


async def burst_then_unload(url: str, name: str, n: int) -> tuple[list, httpx.Response]:
    """`n` requests for `name` at once, and its unload once the first is answered (the others in flight)."""
    async with httpx.AsyncClient(timeout=60) as client:
        asks = [asyncio.create_task(client.post(url + "/v1/recommend", json={
            "model": name, "history": HISTORY, "top_n": TOP_N, "beam_width": WIDTH})) for _ in range(n)]
        await asyncio.wait(asks, return_when=asyncio.FIRST_COMPLETED)
        unload = await client.delete(url + f"/v1/models/{name}", headers=AUTH)
        return [await a for a in asks], unload


def test_a_model_loaded_and_unloaded_under_steady_load_fails_no_request(one_model, bundles):
    url, news_dir = one_model
    stop, answers = threading.Event(), []
    load = threading.Thread(target=steady, args=(url, stop, answers))
    load.start()
    try:
        r = httpx.post(url + "/v1/models", json={"name": "news", "directory": news_dir}, headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["catalog_size"], r.json()["default"]) == ("news", 45, False)
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["shop", "news"]
        assert_same_answer(items(recommend(url, model="news").json()), want(bundles["news"]))
        during, unload = asyncio.run(burst_then_unload(url, "news", 12))
    finally:
        stop.set()
        load.join(120)
    assert unload.status_code == 200 and unload.json() == {"id": "news", "object": "model", "deleted": True}
    news = want(bundles["news"])
    print(f"\nwhile news unloaded: {sum(r.status_code == 200 for r in during)} of {len(during)} answered, the rest "
          f"404; {len(answers)} steady requests for shop meanwhile")
    for r in during:  # answered by news, or refused with a 404 naming it once it had left
        assert r.status_code in (200, 404), r.text
        if r.status_code == 200:
            assert_same_answer(items(r.json()), news)
        else:
            assert "'news'" in r.json()["error"]["message"]
    r = recommend(url, model="news")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["shop"]
    scraped = {s.labels["model"] for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)
               for s in f.samples if s.name == "grserve:catalog_items"}
    assert scraped == {"shop"}  # news' gauges went with it
    shop = want(bundles["shop"])
    assert answers and {status for status, _ in answers} == {200}
    for _, body in answers:
        assert_same_answer(items(body), shop)


def test_loading_refusals(one_model):
    url, news_dir = one_model
    for body, status, param in (({"name": "bad name", "directory": news_dir}, 400, "name"),
                                ({"name": "x", "directory": "/nonexistent"}, 400, "directory"),
                                ({"name": "shop", "directory": news_dir}, 409, "name"),
                                ({"name": "x"}, 400, "directory")):
        r = httpx.post(url + "/v1/models", json=body, headers=AUTH, timeout=60)
        assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    assert "not a GR model directory" in httpx.post(url + "/v1/models", json={"name": "x", "directory": "/nonexistent"},
                                                    headers=AUTH).json()["error"]["message"]
    r = httpx.delete(url + "/v1/models/nope", headers=AUTH)
    assert r.status_code == 404 and "'nope'" in r.json()["error"]["message"]
    assert httpx.post(url + "/v1/models", json={"name": "x", "directory": news_dir}).status_code == 401
    assert httpx.delete(url + "/v1/models/shop").status_code == 401
    assert httpx.get(url + "/v1/models").status_code == 200  # listing stays public
    spec = httpx.get(url + "/openapi.json").json()["paths"]
    assert {"400", "401", "404", "409"} <= set(spec["/v1/models"]["post"]["responses"])
    assert {"401", "404"} <= set(spec["/v1/models/{name}"]["delete"]["responses"])
