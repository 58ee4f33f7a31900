"""A minimal HTTP front end: POST /v1/recommend and GET /health over one Recommender.

Requests go straight to the GREngine, which batches them on its own threads: the event loop only awaits
futures and never blocks on the model."""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from typing import Union

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from grserve.recommender import Recommender

MAX_BEAM_WIDTH = 512
MAX_HISTORY = 10_000


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[Union[int, str]] = Field(default_factory=list, max_length=MAX_HISTORY)
    top_n: int = Field(10, ge=1, le=MAX_BEAM_WIDTH)
    beam_width: int = Field(64, ge=1, le=MAX_BEAM_WIDTH)
    exclude_history: bool = True
    exclude: list[Union[int, str]] = Field(default_factory=list, max_length=MAX_HISTORY)
    allow: list[Union[int, str]] | None = Field(None, max_length=1_000_000)

    @model_validator(mode="after")
    def top_n_within_beam(self) -> "RecommendRequest":
        if self.top_n > self.beam_width:
            raise ValueError(f"top_n ({self.top_n}) must not exceed beam_width ({self.beam_width})")
        return self


def error_body(message: str, param: str | None, code: int) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def create_app(recommender: Recommender, model_name: str) -> FastAPI:
    app = FastAPI(title="grserve", version="0.1.0")

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return JSONResponse(error_body(f"{param or 'body'}: {first['msg']}", param, 400), status_code=400)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.post("/v1/recommend")
    async def recommend(req: RecommendRequest) -> dict:
        started = time.perf_counter()

        result = await recommender.recommend_async(req.history, req.top_n, req.beam_width, req.exclude_history,
                                                   req.exclude, req.allow)
        return {"id": f"rec-{uuid.uuid4().hex}", "model": model_name,
                "items": [asdict(i) for i in result.items], "warnings": result.warnings,
                "usage": {"prompt_tokens": result.prompt_tokens, "beam_width": req.beam_width},
                "timing_ms": {"total": round(1000 * (time.perf_counter() - started), 2)}}

    return app
