"""GET /v1/catalog/search on a real uvicorn server: answers equal a plain Python filter over the current version's
item table, before and after catalog changes (items added with and without titles, disabled); 400s naming the
field; public (the API key, never the admin token); one index per table; the OpenAPI spec."""
from __future__ import annotations

import threading

import httpx
import pytest

from grserve.client import GRServeClient
from grserve.items import title_index
from grserve.recommender import Recommender
from grserve.server.app import create_app
from grserve.server.catalog_search import IndexCache
from grserve.server.config import ServerConfig
from tests.conftest import make_bundle
from tests.server.conftest import running

TOKEN = "admin-s3cret"


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(num_items=150, codebook_size=6, seed=5)


@pytest.fixture(scope="module")
def served(bundle):
    config = ServerConfig.of(max_beam_width=16, default_timeout_ms=30_000, admin_token=TOKEN)
    rec = Recommender(bundle, config.engine)
    with running(create_app(config, rec)) as url:
        yield url, rec


def expected(rec: Recommender, q: str, limit: int) -> dict:
    """The oracle: a plain filter over the current version's table (the id match first, then titles containing
    the query, case-insensitive, in row order)."""
    snapshot = rec.catalog.current
    table, query = snapshot.table, q.strip()
    titles = list(table.titles) if table.titles is not None else [None] * len(table)
    ids = list(table.raw_ids)
    rows = [r for r in range(len(table)) if ids[r] == query]
    rows += [r for r in range(len(table)) if titles[r] and query.casefold() in titles[r].casefold() and r not in rows]
    data = [{"item_id": ids[r], "title": titles[r], "semantic_id": [int(c) for c in table.codes[r]],
             "available": r not in snapshot.disabled} for r in rows[:limit]]
    return {"object": "list", "query": query, "catalog_version": snapshot.version, "data": data,
            "more": len(rows) > limit}


def search(url: str, **params) -> httpx.Response:
    return httpx.get(url + "/v1/catalog/search", params=params)


QUERIES = ["title 1", "TITLE 7", "  title 14 ", "i5", "i149", "title", "e 3", "nothing like it", "itle 9"]


def test_answers_equal_a_plain_filter(served):
    url, rec = served
    for q in QUERIES:
        for limit in (1, 5, 20, 100):
            r = search(url, q=q, limit=limit)
            assert r.status_code == 200, r.text
            assert r.json() == expected(rec, q, limit), (q, limit)
    assert search(url, q="title 1").json() == expected(rec, "title 1", 20)  # the default limit


def test_the_current_version_is_searched(served):
    """Added items (one without a title: found by its id only), a disabled one, then a rollback: each answer is
    of the version current when it was asked, and equal to the filter over that version's table."""
    url, rec = served
    sid = [int(c) for c in rec.catalog.current.table.codes[3]]
    with GRServeClient(url, admin_token=TOKEN) as c:
        c.add_items([{"item_id": "fresh-1", "semantic_id": sid, "title": "A Fresh Title"},
                     {"item_id": "fresh-2", "semantic_id": sid}])
        c.set_availability(disable=["i12", "fresh-1"])
        for q in ("fresh", "FRESH-2", "fresh-2", "title 12", "title 1"):
            got = search(url, q=q, limit=50).json()
            assert got == expected(rec, q, 50), q
            assert got["catalog_version"] == 2
        assert [i["item_id"] for i in search(url, q="fresh-2").json()["data"]] == ["fresh-2"]
        assert [i["available"] for i in search(url, q="fresh title").json()["data"]] == [False]
        c.rollback(0)
        assert search(url, q="fresh").json() == expected(rec, "fresh", 20)
        assert search(url, q="fresh").json()["data"] == []


@pytest.mark.parametrize("params,param", [
    ({}, "q"),
    ({"q": ""}, "q"),
    ({"q": "   "}, "q"),
    ({"q": "a\tb"}, "q"),
    ({"q": "x" * 201}, "q"),
    ({"q": "title", "limit": 0}, "limit"),
    ({"q": "title", "limit": 101}, "limit"),
    ({"q": "title", "limit": "ten"}, "limit"),
    ({"q": "title", "limit": "2.5"}, "limit"),
])
def test_bad_queries_are_400_naming_the_field(served, params, param):
    url, _ = served
    r = search(url, **params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["code"] == 400
    assert error["message"].startswith(param + ":")


def test_model_names_the_served_one(served):
    url, rec = served
    name = GRServeClient(url).models()[0]["id"]
    assert search(url, q="title 2", model=name).json() == expected(rec, "title 2", 20)
    r = search(url, q="title 2", model="another")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_public_route_needs_the_api_key_not_the_admin_token(bundle):
    config = ServerConfig.of(max_beam_width=16, api_key="pub-key")  # and no admin token: admin routes are off
    with running(create_app(config, Recommender(bundle, config.engine))) as url:
        assert httpx.get(url + "/v1/catalog").status_code == 403
        assert search(url, q="title 3").status_code == 401
        r = httpx.get(url + "/v1/catalog/search", params={"q": "title 3"}, headers={"authorization": "Bearer pub-key"})
        assert r.status_code == 200 and r.json()["data"]


def test_one_index_per_table(monkeypatch, bundle):
    """Built on first use and reused while the table is the same (a disable-only version shares it); concurrent
    first searches build it once."""
    built = []
    real = title_index.TitleIndex

    class Counting(real):
        def __init__(self, table):
            built.append(table)
            super().__init__(table)

    monkeypatch.setattr("grserve.server.catalog_search.TitleIndex", Counting)
    cache, rec = IndexCache(), Recommender(bundle)
    try:
        first = rec.catalog.current
        threads = [threading.Thread(target=cache.of, args=(first.table,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert built == [first.table]
        disabled = rec.catalog.set_availability(disable=["i1"])
        assert disabled.table is first.table and cache.of(disabled.table) is cache.of(first.table)
        added = rec.catalog.add_items([{"item_id": "n1", "semantic_id": [0, 0, 0], "title": "new"}])
        assert cache.of(added.table).search("new", 5)[0] == [added.table.row_of("n1")]
        assert built == [first.table, added.table]
    finally:
        rec.close()


def test_openapi_says_what_it_takes_and_answers(served):
    url, _ = served
    op = httpx.get(url + "/openapi.json").json()["paths"]["/v1/catalog/search"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"q", "limit", "model"} and params["q"]["required"]
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["maximum"] == 100
    assert {"200", "400", "401", "404", "503"} <= set(op["responses"])
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SearchResponse")
    assert op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
