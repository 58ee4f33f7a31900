"""Which instances GR requests go to, by catalog version: those at their model's current version, as their
heartbeats or a change's answer through this router say; all of a model's while none is in step."""
from __future__ import annotations

from dataclasses import replace

from grserve.service.catalog_routes import CatalogVersions
from grserve.service.registry import InstanceInfo


def inst(name: str, model: str, version: int, error: str = "") -> InstanceInfo:
    return InstanceInfo(instance_id=name, address=f"http://{name}", model=model, catalog_version=version,
                        catalog_error=error)


def test_only_instances_at_their_models_current_version():
    a, b, c = inst("a", "shop", 2), inst("b", "shop", 1), inst("c", "shop", 5, "differs at version 1")
    d, e = inst("d", "news", 0), inst("e", "lost", 3, "another item table")
    versions = CatalogVersions()
    assert versions.routable([a, b, c, d, e]) == [a, d, e]  # e: no instance of its model is in step
    versions.note(b, 3)  # a change through this router answered version 3 from b
    assert versions.routable([a, b, c, d]) == [b, d] and versions.current([a, b]) == [b]
    versions.note(b, 2)  # an older answer never lowers it
    assert versions.of(b) == 3 and versions.of(replace(b, catalog_version=4)) == 4
    assert versions.of(replace(b, incarnation="restarted")) == 1  # a restart is known by its heartbeat alone
