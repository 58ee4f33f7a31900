"""The router's side of the live catalog: which instances are at their model's current catalog version (the
only ones GR requests go to while any is), and the admin routes and the catalog search, each forwarded to one
instance of the model (for the search, the one a change would go to: it is at the current version).

An instance serves several models, each with its own catalog and version. An instance's version of a model is
the larger of what its heartbeat says and what a change through this router answered: versions only grow
within an incarnation, so the router routes to the instance that made a change from its 200 on, and the next
request through this router is answered on the new version, not a heartbeat later.

A change goes to the model's leader: the live instance in step with the model's history, at the current version,
with the smallest instance id. Every router computes the same one from the registry, so changes through any of
them meet at one instance, whose lock orders them; it publishes each to etcd (catalog_sync.py) and the others
follow. The model is `?model=` (passed on, so the instance changes that model's catalog), else the one GR model
the live instances answer by default. The router checks nothing else itself: the instance's answer (400 naming
the field, 401, 403, 409) passes on unchanged, and the admin token with the Authorization header, as the API
key does."""
from __future__ import annotations

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from grserve.server.protocol import error_body
from grserve.server.search_protocol import SEARCH_PATH
from grserve.service.model_routing import default_gr, not_served
from grserve.service.registry import InstanceCache, InstanceInfo

# The admin routes, and the public search (the instance checks the API key as it checks the admin token)
CATALOG_ROUTES = {"/v1/catalog": ["GET"], "/v1/catalog/items": ["POST", "DELETE"],
                  "/v1/catalog/availability": ["POST"], "/v1/catalog/rollback": ["POST"],
                  SEARCH_PATH: ["GET"]}
PASSED_ON = ("content-type", "www-authenticate", "retry-after")


class CatalogVersions:
    def __init__(self):
        # (instance_id, model) -> (incarnation, the version a change through this router answered)
        self._answered: dict[tuple[str, str], tuple[str, int]] = {}

    def note(self, inst: InstanceInfo, model: str, version: int) -> None:
        if version > self.of(inst, model):
            self._answered[inst.instance_id, model] = (inst.incarnation, version)

    def of(self, inst: InstanceInfo, model: str) -> int:
        served = inst.serving(model)
        heartbeat = served.catalog_version if served is not None else 0
        incarnation, version = self._answered.get((inst.instance_id, model), ("", 0))
        return max(heartbeat, version) if incarnation == inst.incarnation else heartbeat

    def current(self, instances: list[InstanceInfo], model: str) -> list[InstanceInfo]:
        """The instances serving `model` in step with its history, at its highest version among them."""
        in_step = [i for i in instances if (m := i.serving(model)) is not None and not m.catalog_error]
        top = max((self.of(i, model) for i in in_step), default=0)
        return [i for i in in_step if self.of(i, model) == top]

    def routable(self, instances: list[InstanceInfo], model: str) -> list[InstanceInfo]:
        """The instances to send `model`'s requests to: those at its current version, or all that serve it while
        none is in step."""
        return self.current(instances, model) or [i for i in instances if i.serving(model) is not None]


def _gr_model(request: Request, live: list[InstanceInfo]) -> str | JSONResponse:
    """The model the change is for: `?model=`, else the GR model the live instances answer by default."""
    wanted = request.query_params.get("model")
    if wanted is not None:
        if not any((m := i.serving(wanted)) is not None and m.kind == "gr" for i in live):
            return not_served(wanted, sorted({m.name for i in live for m in i.served() if m.kind == "gr"}))
        return wanted
    return default_gr(live)


def add_catalog_routes(app: FastAPI, cache: InstanceCache, client: httpx.AsyncClient, versions: CatalogVersions,
                       timeout_s: float) -> None:
    async def forward(request: Request):
        live = [i for i in cache.alive() if i.default_gr() is not None]
        if not live:
            return JSONResponse(error_body(503, "no live GR instance", kind="unavailable"), status_code=503,
                                headers={"Retry-After": "1"})
        model = _gr_model(request, live)
        if isinstance(model, JSONResponse):
            return model
        headers = {k: request.headers[k] for k in ("content-type", "authorization") if k in request.headers}
        body = await request.body()
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        for leader in sorted(versions.routable(live, model), key=lambda i: i.instance_id):
            try:
                r = await client.request(request.method, leader.address + url, content=body, headers=headers,
                                         timeout=timeout_s)
                break
            except httpx.TransportError as e:
                cache.mark_suspect(leader.instance_id)
                # Never reached (the next one in line may lead), or a read (the catalog, a search): the next one
                # in line answers. A change that failed once sent is not sent on: the leader may have published
                # it before it failed, and a change sent twice (a default rollback) is not the same change.
                if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)) or request.method == "GET":
                    continue
                return JSONResponse(error_body(502, f"instance {leader.instance_id} failed during the change "
                                                    f"({type(e).__name__}): GET /v1/catalog says whether it applied",
                                               kind="upstream_error"), status_code=502)
        else:
            return JSONResponse(error_body(503, f"no instance of {model} could be reached", kind="unavailable"),
                                status_code=503, headers={"Retry-After": "1"})
        if r.status_code == 200 and request.url.path != SEARCH_PATH:  # a change, or the catalog: its version
            versions.note(leader, model, r.json()["version"])
        return Response(r.content, status_code=r.status_code,
                        headers={k: v for k, v in r.headers.items() if k.lower() in PASSED_ON})

    for path, methods in CATALOG_ROUTES.items():
        app.add_api_route(path, forward, methods=methods)
