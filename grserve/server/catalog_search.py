"""`GET /v1/catalog/search`: the live catalog's items by title or id, for the demo page and any client.

A public route (the gate asks for the API key when one is set, never for the admin token). It reads the current
catalog version's item table through a title index (items/title_index.py) built on first use and kept until a
search meets another table: a version that only disables or enables items shares its table, so its index too.
Building and searching run on a worker thread: on a 1M-item catalog a build is ~0.2 s of Python and a query
that matches nothing scans every title (~15 ms), neither of which may stall the event loop."""
from __future__ import annotations

import asyncio
import threading
import unicodedata

from fastapi import APIRouter, Query

from grserve.catalog.snapshot import CatalogSnapshot
from grserve.items.item_table import ItemTable
from grserve.items.title_index import TitleIndex
from grserve.server.errors import ApiError
from grserve.server.protocol import ErrorResponse
from grserve.server.search_protocol import (DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY_CHARS, SEARCH_PATH,
                                           SearchResponse)

SEARCH_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 503)}


class IndexCache:
    """The title index of the last table searched. One at a time: the catalog serves one version, and a search
    that still holds an older snapshot rebuilds (rare: only around a change)."""

    def __init__(self):
        self._lock = threading.Lock()  # concurrent first searches of a new version build it once
        self._table: ItemTable | None = None
        self._index: TitleIndex | None = None

    def of(self, table: ItemTable) -> TitleIndex:
        with self._lock:
            if self._table is not table:
                self._index, self._table = TitleIndex(table), table
            return self._index


def checked_query(q: str) -> str:
    """The query stripped; ApiError 400 naming `q` when nothing is left or it holds control characters."""
    query = q.strip()
    if not query:
        raise ApiError(400, "q: must contain a non-space character", "q")
    if any(unicodedata.category(c) == "Cc" for c in query):
        raise ApiError(400, "q: must not contain control characters", "q")
    return query


def search_body(snapshot: CatalogSnapshot, index: TitleIndex, query: str, limit: int) -> dict:
    rows, more = index.search(query, limit)
    table = snapshot.table
    titles = table.titles
    data = [{"item_id": table.raw_ids[r], "title": titles[r] if titles is not None else None,
             "semantic_id": table.codes[r].tolist(), "available": snapshot.available(r)} for r in rows]
    return {"object": "list", "query": query, "catalog_version": snapshot.version, "data": data, "more": more}


def search_router(state) -> APIRouter:
    router = APIRouter(tags=["catalog"])
    indexes = IndexCache()

    @router.get(SEARCH_PATH, response_model=SearchResponse, responses=SEARCH_ERRORS)
    async def search(q: str = Query(max_length=MAX_QUERY_CHARS, description="text to find in titles (case-"
                                    "insensitive), or an item id (exact)"),
                     limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="most items to return"),
                     model: str | None = Query(None, description="the GR model whose catalog to search; "
                                               "default: the first GR model served")) -> dict:
        """Items of the current catalog version whose title contains `q`, or whose id is `q`."""
        query = checked_query(q)
        rec = state.ready(model)  # 404 naming `model` when it is not served
        snapshot = rec.catalog.current  # read once: the answer is wholly of this version
        return await asyncio.to_thread(lambda: search_body(snapshot, indexes.of(snapshot.table), query, limit))

    return router
