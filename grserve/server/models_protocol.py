"""The HTTP schema of /v1/models: the models served, loading one and unloading one (server/models_api.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelCard(BaseModel):
    id: str = Field(description="the model's name: what requests give as `model`")
    object: Literal["model"] = "model"
    owned_by: str = "grserve"
    kind: Literal["generative-recommendation", "llm"]
    default: bool = Field(False, description="the GR model that answers requests naming none")
    catalog_version: int | None = Field(None, description="GR: the live catalog's current version")
    catalog_size: int | None = Field(None, description="GR: items in the catalog, disabled ones included")
    catalog_live_items: int | None = Field(None, description="GR: items not disabled")
    semantic_ids: int | None = Field(None, description="GR: distinct semantic IDs (several items may share one)")
    codebook_size: int | None = None
    levels: int | None = Field(None, description="GR: codes per semantic ID")
    max_history_items: int | None = None
    max_beam_width: int | None = None
    max_timeout_ms: int | None = None
    default_timeout_ms: int | None = None
    max_batch_items: int | None = None
    max_model_len: int | None = Field(None, description="LLM: the longest prompt plus completion")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(description="every model served, in the order they were loaded")


class LoadModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="what requests will call it: letters, digits, '.', '_', '-'")
    directory: str = Field(description="the model directory on the server: a GR model (gr_config.json) or an LLM "
                                       "(a Hugging Face config.json without it)")


class DeletedModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: Literal[True] = True
