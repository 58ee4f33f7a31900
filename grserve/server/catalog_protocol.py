"""The HTTP schema of the catalog admin routes: their request bodies and the catalog's summary.

Types only: what a change must satisfy against the catalog (SIDs in the codebook's range, known ids, no
repeats) is checked by the catalog itself (grserve/catalog/changes.py), for every caller alike."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from grserve.server.protocol import MAX_LIST, ItemId


class CatalogItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: ItemId
    semantic_id: list[int] | None = Field(None, description="[c0, c1, ...], one code per level of the catalog's "
                                                            "SIDs, each in [0, codebook_size); or text")
    text: str | None = Field(None, description="the item's text: its SID comes from the model's codebooks")
    title: str | None = Field(None, description="unset on an update: the item keeps its title")


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[CatalogItemIn] = Field(max_length=MAX_LIST,
                                       description="new items, or existing ones given a new SID in place")


class RemoveItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[ItemId] = Field(max_length=MAX_LIST)


class AvailabilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disable: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST, description="out of every answer")
    enable: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST, description="back in")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, description="an earlier version; default: the one before the current")


class CatalogChangeOut(BaseModel):
    version: int
    kind: str
    items: int
    at: float = Field(description="Unix time in seconds")
    to_version: int | None = None


class CatalogResponse(BaseModel):
    version: int
    items: int = Field(description="items in the catalog, disabled ones included")
    disabled: int
    semantic_ids: int = Field(description="distinct semantic IDs of the catalog's items (several may share one)")
    changes: list[CatalogChangeOut] = Field(description="the last changes, oldest first")
