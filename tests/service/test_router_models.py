"""Several models behind one router, with a real etcd and real `grserve serve --register` processes: one instance
serves `shop`, the other `news` and `shop`. Every request goes to an instance of the model it names and is
answered as that model's reference beam search says; a traffic split keeps each user on one side and the
answer says which; a model loaded on an instance joins routing, and leaves it once unloaded (404 naming it)."""
from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grserve.service.router import create_router_app
from grserve.service.splits import parse_split
from tests.catalog.oracle import CatalogModel, assert_same_answer, reference_answer
from tests.conftest import make_bundle
from tests.server.conftest import running
from tests.service.conftest import instance_cpus, start_instance, wait_for

TOKEN = "admin"
TOP_N, WIDTH = 4, 8
HISTORIES = [["i3", "i7"], ["i0"], ["i12", "i4", "i30"]]


@pytest.fixture(scope="module")
def cluster(etcd, tmp_path_factory):
    """Models of their own names (their histories in etcd are too), instance A serving shop, B news and shop,
    and a round-robin router with the split `home` = shop 50 : news 50."""
    root, tag = tmp_path_factory.mktemp("models-cluster"), uuid.uuid4().hex[:8]
    names = {"shop": f"shop-{tag}", "news": f"news-{tag}", "extra": f"extra-{tag}"}
    bundles = {"shop": make_bundle(num_items=60, seed=1), "news": make_bundle(num_items=45, codebook_size=6, seed=2),
               "extra": make_bundle(num_items=40, codebook_size=5, seed=3)}
    for key, bundle in bundles.items():
        bundle.save(root / key)
    cpus = instance_cpus(2)

    def start(n: int, first: str, *more: str):
        flags = [f for m in more for f in ("--model", f"{names[m]}={root / m}")]
        return start_instance(f"{names[first]}={root / first}", etcd.url, *flags, "--admin-token", TOKEN,
                              "--state-dir", str(root / f"state{n}" / "{model}"), "--default-timeout-ms", "30000",
                              cpus=cpus[n])
    (a, a_url), (b, b_url) = start(0, "shop"), start(1, "news", "shop")
    split = parse_split(f"home={names['shop']}:50,{names['news']}:50")
    try:
        with running(create_router_app(etcd.url, "round-robin", poll_interval=0.2, splits=[split])) as router:
            instances = wait_for(lambda: registered(router, a_url, b_url), 90, "both instances registered")
            assert instances[a_url] == [names["shop"]] and instances[b_url] == [names["news"], names["shop"]]
            yield router, names, bundles, {"a": a_url, "b": b_url, "extra": str(root / "extra")}
    finally:
        for proc in (a, b):
            proc.terminate()
            proc.wait(30)


def registered(router: str, *urls: str) -> dict[str, list[str]] | None:
    """The models each instance at `urls` registered, once the router sees them all alive."""
    seen = {i["address"]: [m["name"] for m in i["models"]] for i in httpx.get(router + "/v1/instances").json()["data"]
            if not i["suspect"] and i["address"] in urls}
    return seen if len(seen) == len(urls) else None


def listed(router: str) -> set[str]:
    return {m["id"] for m in httpx.get(router + "/v1/models").json()["data"]}


def forwarded(router: str, instance_url: str) -> float:
    """Requests the router forwarded to the instance at `instance_url` (its id is host:port)."""
    text = httpx.get(router + "/metrics").text
    instance = instance_url.removeprefix("http://")
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "grserve_router:forwarded_total" and s.labels["instance"] == instance)


def ask(router: str, history: list[str], headers: dict | None = None, **body) -> httpx.Response:
    return httpx.post(router + "/v1/recommend", json={"history": history, "top_n": TOP_N, "beam_width": WIDTH,
                                                      **body}, headers=headers, timeout=60)


def expected(bundles, key: str, history: list[str]):
    return reference_answer(bundles[key], CatalogModel(bundles[key].table), history, TOP_N, WIDTH)


def items(body: dict) -> list[tuple[str, float]]:
    return [(i["item_id"], i["score"]) for i in body["items"]]


def test_each_request_goes_to_an_instance_of_its_model(cluster):
    router, names, bundles, urls = cluster
    a_before = forwarded(router, urls["a"])
    for key in ("news", "shop"):
        for history in HISTORIES:
            r = ask(router, history, model=names[key])
            assert r.status_code == 200, r.text
            assert r.json()["model"] == names[key] and r.headers["x-grserve-model"] == names[key]
            assert_same_answer(items(r.json()), expected(bundles, key, history))
        if key == "news":  # A serves no news: none of them went there
            assert forwarded(router, urls["a"]) == a_before
    assert forwarded(router, urls["a"]) > a_before  # round-robin shared shop's between A and B
    r = ask(router, HISTORIES[0], model="nobody-serves-this")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model" and "'nobody-serves-this'" in r.text
    r = ask(router, HISTORIES[0])  # A answers shop by default, B news: the router cannot choose
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_a_split_keeps_each_user_on_one_side(cluster):
    router, names, bundles, _ = cluster
    users, history = [f"user-{n}" for n in range(200)], HISTORIES[2]
    key_of = {names[k]: k for k in ("shop", "news")}
    want = {k: expected(bundles, k, history) for k in ("shop", "news")}

    async def round_(by_header: bool) -> dict[str, str]:
        async with httpx.AsyncClient(timeout=60) as client:
            gate = asyncio.Semaphore(8)

            async def one(user: str) -> str:
                body = {"model": "home", "history": history, "top_n": TOP_N, "beam_width": WIDTH}
                async with gate:
                    r = await client.post(router + "/v1/recommend", json=body if by_header else {**body, "user": user},
                                          headers={"x-session-id": user} if by_header else None)
                assert r.status_code == 200, r.text
                model = r.json()["model"]
                assert r.headers["x-grserve-model"] == model and model in key_of
                assert_same_answer(items(r.json()), want[key_of[model]])
                return model
            return dict(zip(users, await asyncio.gather(*(one(u) for u in users))))

    by_user, by_session = asyncio.run(round_(False)), asyncio.run(round_(True))
    assert by_user == by_session  # the same side every time, by `user` or by X-Session-Id
    share = sum(m == names["shop"] for m in by_user.values()) / len(users)
    assert 0.4 <= share <= 0.6, share  # 50 : 50 (200 users: a standard deviation of 3.5 points)
    split = next(m for m in httpx.get(router + "/v1/models").json()["data"] if m["id"] == "home")
    assert split["kind"] == "split" and split["split"] == {names["shop"]: 0.5, names["news"]: 0.5}


def test_a_model_loaded_on_an_instance_joins_routing_and_leaves_it(cluster):
    router, names, bundles, urls = cluster
    auth, extra = {"authorization": f"Bearer {TOKEN}"}, names["extra"]
    r = httpx.post(urls["a"] + "/v1/models", json={"name": extra, "directory": urls["extra"]}, headers=auth,
                   timeout=120)
    assert r.status_code == 200, r.text
    wait_for(lambda: extra in listed(router), 10, "the router to see the loaded model")
    for history in HISTORIES:
        r = ask(router, history, model=extra)
        assert r.status_code == 200 and r.json()["model"] == extra, r.text
        assert_same_answer(items(r.json()), expected(bundles, "extra", history))
    r = httpx.delete(urls["a"] + f"/v1/models/{extra}", headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    r = ask(router, HISTORIES[0], model=extra)  # the router may not have seen it go: A's 404 is passed on
    assert r.status_code == 404 and f"'{extra}'" in r.json()["error"]["message"]
    wait_for(lambda: extra not in listed(router), 10, "the router to see the model gone")
    r = ask(router, HISTORIES[0], model=extra)
    assert r.status_code == 404 and f"'{extra}'" in r.json()["error"]["message"]
