"""Which instances GR requests go to, by catalog version: those at their model's current version, as their
heartbeats or a change's answer through this router say; all of a model's while none is in step. An instance
serving several models is at a version of each."""
from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from grserve.server.search_protocol import SEARCH_PATH
from grserve.service.catalog_routes import CatalogVersions, add_catalog_routes
from grserve.service.registry import InstanceInfo, ModelInfo


def inst(name: str, model: str, version: int, error: str = "") -> InstanceInfo:
    return InstanceInfo(instance_id=name, address=f"http://{name}", model=model, catalog_version=version,
                        catalog_error=error)


def test_only_instances_at_their_models_current_version():
    a, b, c = inst("a", "shop", 2), inst("b", "shop", 1), inst("c", "shop", 5, "differs at version 1")
    d, e = inst("d", "news", 0), inst("e", "lost", 3, "another item table")
    versions = CatalogVersions()
    everyone = [a, b, c, d, e]
    assert versions.routable(everyone, "shop") == [a] and versions.routable(everyone, "news") == [d]
    assert versions.routable(everyone, "lost") == [e]  # no instance of its model is in step: all of them
    versions.note(b, "shop", 3)  # a change through this router answered version 3 from b
    assert versions.routable(everyone, "shop") == [b] and versions.current([a, b], "shop") == [b]
    versions.note(b, "shop", 2)  # an older answer never lowers it
    assert versions.of(b, "shop") == 3 and versions.of(replace(b, catalog_version=4), "shop") == 4
    assert versions.of(replace(b, incarnation="restarted"), "shop") == 1  # a restart is known by its heartbeat alone


def test_each_model_of_an_instance_has_its_own_version():
    both = InstanceInfo(instance_id="x", address="http://x", model="shop",
                        models=[ModelInfo("shop", "gr", 4), ModelInfo("news", "gr", 1), ModelInfo("chat", "llm")])
    news = inst("y", "news", 2)
    versions = CatalogVersions()
    assert versions.routable([both, news], "shop") == [both]
    assert versions.routable([both, news], "news") == [news]  # x is behind on news, though ahead on shop
    versions.note(both, "news", 2)
    assert versions.routable([both, news], "news") == [both, news] and versions.of(both, "shop") == 4
    assert versions.routable([both, news], "chat") == [both] and versions.routable([news], "shop") == []


class _Cache:
    """The router's instance cache as these routes use it: the live instances, and which were marked suspect."""

    def __init__(self, instances: list[InstanceInfo]):
        self.instances, self.suspects = instances, []

    def alive(self) -> list[InstanceInfo]:
        return [i for i in self.instances if i.instance_id not in self.suspects]

    def mark_suspect(self, instance_id: str) -> None:
        self.suspects.append(instance_id)


def _router(failing: str):
    """A router app whose requests to instance `failing` break after being sent (the connection drops before the
    answer); the other instance answers with its name."""
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == failing:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json={"version": 0, "answered_by": request.url.host})
    cache = _Cache([inst("a", "shop", 0), inst("b", "shop", 0)])
    app = FastAPI()
    add_catalog_routes(app, cache, httpx.AsyncClient(transport=httpx.MockTransport(answer)), CatalogVersions(), 5.0)
    return TestClient(app), cache


@pytest.mark.parametrize("path", ["/v1/catalog", f"{SEARCH_PATH}?q=lipstick"])
def test_a_read_that_breaks_after_sending_goes_to_the_next_instance(path):
    client, cache = _router(failing="a")  # a leads (the smallest id), and its connection drops
    r = client.get(path)
    assert r.status_code == 200 and r.json()["answered_by"] == "b"
    assert cache.suspects == ["a"]


def test_a_change_that_breaks_after_sending_is_not_sent_again():
    client, cache = _router(failing="a")
    r = client.post("/v1/catalog/rollback", json={})
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
    assert "GET /v1/catalog says whether it applied" in r.json()["error"]["message"]
    assert cache.suspects == ["a"]
