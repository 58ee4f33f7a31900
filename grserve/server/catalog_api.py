"""The catalog admin routes: show the live catalog, add or update items, remove them, disable or enable them,
roll back to an earlier version, of the GR model `?model=` names (default: the first). The gate lets only
callers with the admin token this far (gate.py).

A change is built (trie and candidate tables, or only the availability masks) on a worker thread, never on
the event loop or the engine's step thread; the catalog applies changes one at a time, in order, and answers
with the version the change made. On an instance registered in etcd the change is published to its model's
shared history before it is committed (service/catalog_sync.py): 409 when another instance published that
version first, 503 when etcd cannot be reached; either way nothing changed."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Depends, Query, Request

from grserve.catalog.change_log import LogConflict, LogUnavailable
from grserve.catalog.live import LiveCatalog
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.errors import InvalidRequest
from grserve.server.catalog_protocol import (AddItemsRequest, AvailabilityRequest, CatalogResponse,
                                             RemoveItemsRequest, RollbackRequest)
from grserve.server.errors import ApiError
from grserve.server.protocol import MAX_LIST, ErrorResponse, json_body

# 401/403: no or a wrong admin token / none configured (the gate); 409: another process writes the state directory,
# or another instance published the version first
ADMIN_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 503)}


def catalog_router(state) -> APIRouter:
    router = APIRouter(prefix="/v1/catalog", tags=["catalog"], responses=ADMIN_ERRORS)

    async def live(model: str | None = Query(None, description="the GR model whose catalog (404: not served "
                                                               "here); default: the first GR model")):
        """The model's live catalog, the model held (server/served.py) until the route has answered."""
        served = state.gr(model)
        with served.use():
            yield served.recommender.catalog

    async def change(apply: Callable[[LiveCatalog], CatalogSnapshot], catalog: LiveCatalog) -> dict:
        try:
            snapshot = await asyncio.to_thread(apply, catalog)
        except InvalidRequest as e:
            raise ApiError(400, str(e), e.param)
        except LogConflict as e:
            raise ApiError(409, str(e), kind="conflict_error")
        except LogUnavailable as e:
            raise ApiError(503, str(e), kind="unavailable")
        return catalog.summary(snapshot)

    @router.get("", response_model=CatalogResponse, response_model_exclude_none=True)
    async def show(catalog=Depends(live)) -> dict:
        """The current version, its size, and the last changes."""
        return catalog.summary()

    # A change's body goes to the catalog unread (changes.read_body checks it as the schema says): in a catalog
    # process, the JSON of 10,000 items then costs this process's GIL nothing.
    @router.post("/items", response_model=CatalogResponse, response_model_exclude_none=True,
                 openapi_extra=json_body(AddItemsRequest))
    async def add_items(request: Request, catalog=Depends(live)) -> dict:
        """Adds items by SID or by text, or gives existing ones a new SID (and title) in place."""
        body = await request.body()
        return await change(lambda c: c.apply_body("add", body, MAX_LIST), catalog)

    @router.delete("/items", response_model=CatalogResponse, response_model_exclude_none=True,
                   openapi_extra=json_body(RemoveItemsRequest))
    async def remove_items(request: Request, catalog=Depends(live)) -> dict:
        body = await request.body()
        return await change(lambda c: c.apply_body("remove", body, MAX_LIST), catalog)

    @router.post("/availability", response_model=CatalogResponse, response_model_exclude_none=True,
                 openapi_extra=json_body(AvailabilityRequest))
    async def availability(request: Request, catalog=Depends(live)) -> dict:
        """Takes items out of every answer (out of stock) or back in, without removing them."""
        body = await request.body()
        return await change(lambda c: c.apply_body("availability", body, MAX_LIST), catalog)

    @router.post("/rollback", response_model=CatalogResponse, response_model_exclude_none=True)
    async def rollback(req: RollbackRequest, catalog=Depends(live)) -> dict:
        """A new version whose content equals an earlier one's (by default the one before the current)."""
        return await change(lambda c: c.rollback(req.version), catalog)

    return router
