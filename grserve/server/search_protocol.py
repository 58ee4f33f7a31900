"""The HTTP schema of the catalog search route (server/catalog_search.py): its query's limits and its answer."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SEARCH_PATH = "/v1/catalog/search"  # the route (catalog_search.py) and the router, which passes it on
MAX_QUERY_CHARS = 200
DEFAULT_LIMIT, MAX_LIMIT = 20, 100


class SearchItemOut(BaseModel):
    item_id: str
    title: str | None = Field(description="null: the item has no title (it is found by its id only)")
    semantic_id: list[int]
    available: bool = Field(description="false: disabled (out of stock): in no answer, yet usable in a history")


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    query: str = Field(description="the query as matched: stripped of surrounding spaces")
    catalog_version: int = Field(description="the catalog version searched")
    data: list[SearchItemOut] = Field(description="the item whose id is the query first, then the items whose "
                                                  "title contains it (case-insensitive), in catalog order")
    more: bool = Field(description="more items match than `limit` returned")
