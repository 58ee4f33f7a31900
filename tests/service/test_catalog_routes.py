"""Which instances GR requests go to, by catalog version: those at their model's current version, as their
heartbeats or a change's answer through this router say; all of a model's while none is in step. An instance
serving several models is at a version of each."""
from __future__ import annotations

from dataclasses import replace

from grserve.service.catalog_routes import CatalogVersions
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
