"""The router's side of the live catalog: which instances are at their model's current catalog version (the
only ones GR requests go to while any is), and the admin routes, each forwarded to one instance of the model.

An instance's version is the larger of what its heartbeat says and what a change through this router answered:
versions only grow within an incarnation, so the router routes to the instance that made a change from its
200 on, and the next request through this router is answered on the new version, not a heartbeat later.

A change goes to the model's leader: the live instance in step with the history, at the current version, with
the smallest instance id. Every router computes the same one from the registry, so changes through any of them
meet at one instance, whose lock orders them; it publishes each to etcd (catalog_sync.py) and the others
follow. The router checks nothing itself: the instance's answer (400 naming the field, 401, 403, 409) passes
on unchanged, and the admin token with the Authorization header, as the API key does."""
from __future__ import annotations

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from grserve.server.protocol import error_body
from grserve.service.registry import InstanceCache, InstanceInfo

ADMIN_ROUTES = {"/v1/catalog": ["GET"], "/v1/catalog/items": ["POST", "DELETE"],
                "/v1/catalog/availability": ["POST"], "/v1/catalog/rollback": ["POST"]}
PASSED_ON = ("content-type", "www-authenticate", "retry-after")


class CatalogVersions:
    def __init__(self):
        self._answered: dict[str, tuple[str, int]] = {}  # instance_id -> (incarnation, version a change answered)

    def note(self, inst: InstanceInfo, version: int) -> None:
        if version > self.of(inst):
            self._answered[inst.instance_id] = (inst.incarnation, version)

    def of(self, inst: InstanceInfo) -> int:
        incarnation, version = self._answered.get(inst.instance_id, ("", 0))
        return max(inst.catalog_version, version) if incarnation == inst.incarnation else inst.catalog_version

    def current(self, instances: list[InstanceInfo]) -> list[InstanceInfo]:
        """The instances in step with their model's history and at its highest version among them."""
        in_step = [i for i in instances if not i.catalog_error]
        top: dict[str, int] = {}
        for i in in_step:
            top[i.model] = max(top.get(i.model, 0), self.of(i))
        return [i for i in in_step if self.of(i) == top[i.model]]

    def routable(self, instances: list[InstanceInfo]) -> list[InstanceInfo]:
        """GR instances to send requests to: of each model those at its current version, or all of the model's
        while none is in step."""
        current = self.current(instances)
        models = {i.model for i in current}
        return current + [i for i in instances if i.model not in models]


def _gr_model(request: Request, live: list[InstanceInfo]) -> str | JSONResponse:
    """The model the change is for: `?model=`, else the one GR model served."""
    models = sorted({i.model for i in live})
    wanted = request.query_params.get("model")
    if wanted is not None and wanted not in models:
        return JSONResponse(error_body(400, f"model: no live instance serves {wanted!r} (live: {models})", "model"),
                            status_code=400)
    if wanted is None and len(models) > 1:
        return JSONResponse(error_body(400, f"model: several GR models are served ({models}): name one with "
                                            f"?model=", "model"), status_code=400)
    return wanted or models[0]


def add_catalog_routes(app: FastAPI, cache: InstanceCache, client: httpx.AsyncClient, versions: CatalogVersions,
                       timeout_s: float) -> None:
    async def forward(request: Request):
        live = [i for i in cache.alive() if "gr" in i.kinds]
        if not live:
            return JSONResponse(error_body(503, "no live GR instance", kind="unavailable"), status_code=503,
                                headers={"Retry-After": "1"})
        model = _gr_model(request, live)
        if isinstance(model, JSONResponse):
            return model
        ours = [i for i in live if i.model == model]
        headers = {k: request.headers[k] for k in ("content-type", "authorization") if k in request.headers}
        body = await request.body()
        for leader in sorted(versions.current(ours) or ours, key=lambda i: i.instance_id):
            try:
                r = await client.request(request.method, leader.address + request.url.path, content=body,
                                         headers=headers, timeout=timeout_s)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout):  # never reached it: the next one in line may lead
                cache.mark_suspect(leader.instance_id)
            except httpx.TransportError as e:
                # Not sent on: the leader may have published the change before it failed, and a change sent
                # twice (a default rollback) is not the same change.
                cache.mark_suspect(leader.instance_id)
                return JSONResponse(error_body(502, f"instance {leader.instance_id} failed during the change "
                                                    f"({type(e).__name__}): GET /v1/catalog says whether it applied",
                                               kind="upstream_error"), status_code=502)
        else:
            return JSONResponse(error_body(503, f"no instance of {model} could be reached", kind="unavailable"),
                                status_code=503, headers={"Retry-After": "1"})
        if r.status_code == 200:
            versions.note(leader, r.json()["version"])
        return Response(r.content, status_code=r.status_code,
                        headers={k: v for k, v in r.headers.items() if k.lower() in PASSED_ON})

    for path, methods in ADMIN_ROUTES.items():
        app.add_api_route(path, forward, methods=methods)
