"""The HTTP schema: pydantic models for /v1/recommend, /v1/recommend/batch and the error body."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

ItemId = Union[int, str]
MAX_LIST = 100_000

# Router → decode instance: the address of the prefill instance to pull the prompt's KV from (server/pd.py).
PREFILL_HEADER = "x-grserve-prefill"


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=128, description="the GR model to ask (GET /v1/models lists them); "
                                                               "through a router, also a traffic split's name; "
                                                               "default: the first GR model served")
    user: str | None = Field(None, max_length=256, description="who asks: a router's traffic split keeps each user "
                                                              "on one side (X-Session-Id when absent)")
    history: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST,
                                  description="item ids, oldest first; unknown ids are ignored with a warning")
    top_n: int = Field(10, ge=1)
    beam_width: int = Field(64, ge=1)
    exclude: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST)
    allow: list[ItemId] | None = Field(None, max_length=MAX_LIST)
    exclude_history: bool = True
    timeout_ms: int | None = Field(None, ge=1, description="deadline; default from the server config")
    request_id: str | None = Field(None, max_length=128)
    priority: Literal["online", "offline"] = Field("online", description="offline waits behind online work")

    @model_validator(mode="after")
    def top_n_within_beam(self) -> "RecommendRequest":
        if self.top_n > self.beam_width:
            raise ValueError(f"top_n ({self.top_n}) must not exceed beam_width ({self.beam_width})")
        return self


class BatchRecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RecommendRequest] = Field(min_length=1)


class RecommendedItemOut(BaseModel):
    item_id: str
    score: float
    semantic_id: list[int]
    title: str | None = None


class RecommendResponse(BaseModel):
    id: str
    model: str = Field(description="the model that answered (through a router's split: the physical model)")
    catalog_version: int = Field(description="the catalog version the whole answer was computed on")
    items: list[RecommendedItemOut]
    warnings: list[str]
    usage: dict[str, int] = Field(description="prompt_tokens, beam_width, and batch_requests: the requests answered "
                                              "by the same engine step (timing_ms.compute is that step's)")
    timing_ms: dict[str, float] = Field(description="queue (waiting for a step), compute (the step), total")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def json_body(model: type[BaseModel]) -> dict:
    """`openapi_extra` of a route that reads its body itself, as `model` describes it: the schema inline, with
    the models it refers to inlined too (FastAPI lists in the components only the models routes take)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
