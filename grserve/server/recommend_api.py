"""/v1/recommend and /v1/recommend/batch: histories in, ranked items out, each from the GR model it names (the
default GR model when it names none), which it holds until answered."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI

from grserve.engine.gr.request import DeadlineExceeded, EngineOverloaded
from grserve.errors import InvalidRequest
from grserve.server.errors import ApiError
from grserve.server.protocol import BatchRecommendRequest, RecommendRequest, RecommendResponse

if TYPE_CHECKING:
    from grserve.server.served import ServedModel
    from grserve.server.state import ServerState

log = logging.getLogger("grserve.requests")


def _checked_timeout_ms(state: ServerState, req: RecommendRequest, prefix: str) -> int:
    cfg = state.config
    if req.beam_width > cfg.engine.max_beam_width:
        raise ApiError(400, f"{prefix}beam_width: {req.beam_width} exceeds the server's maximum of "
                            f"{cfg.engine.max_beam_width}", prefix + "beam_width")
    timeout_ms = req.timeout_ms or cfg.default_timeout_ms
    if timeout_ms > cfg.max_timeout_ms:
        raise ApiError(400, f"{prefix}timeout_ms: {timeout_ms} exceeds {cfg.max_timeout_ms}", prefix + "timeout_ms")
    return timeout_ms


def _model(state: ServerState, req: RecommendRequest, prefix: str) -> ServedModel:
    try:
        return state.gr(req.model)
    except ApiError as e:  # a batch's entry names its place
        raise ApiError(e.status, prefix + e.message, e.param and prefix + e.param, e.kind) from None


async def answer(state: ServerState, req: RecommendRequest, prefix: str = "") -> dict:
    timeout_ms = _checked_timeout_ms(state, req, prefix)
    model = _model(state, req, prefix)
    started = time.perf_counter()
    with model.use():
        try:
            out, result = await asyncio.wait_for(model.recommender.recommend_async(
                req.history, req.top_n, req.beam_width, req.exclude_history, req.exclude, req.allow,
                deadline=started + timeout_ms / 1000, priority=int(req.priority == "offline")), timeout_ms / 1000)
        except InvalidRequest as e:
            raise ApiError(400, prefix + str(e), prefix + e.param)
        except EngineOverloaded as e:
            state.metrics.rejected.labels(model.name, e.reason).inc()
            # Retry-After is whole seconds (RFC 9110): the predicted time for the queue ahead to clear, rounded up.
            retry = max(1, math.ceil(e.retry_after_s or 1))
            raise ApiError(429, f"server overloaded, request refused at once: {e}",
                           "timeout_ms" if e.reason == "deadline" else None, kind="rate_limit_error",
                           headers={"Retry-After": str(retry)})
        except DeadlineExceeded as e:
            state.metrics.timed_out.labels(model.name).inc()
            raise ApiError(504, f"deadline of {timeout_ms} ms cannot be met: {e}", "timeout_ms", kind="timeout_error")
        except asyncio.TimeoutError:
            state.metrics.timed_out.labels(model.name).inc()
            raise ApiError(504, f"deadline of {timeout_ms} ms passed before the answer was ready", "timeout_ms",
                           kind="timeout_error")
    total = time.perf_counter() - started
    state.metrics.on_result(model.name, result, total)
    body = {"id": req.request_id or f"rec-{uuid.uuid4().hex}", "model": model.name,
            "catalog_version": out.catalog_version, "items": [vars(i) for i in out.items], "warnings": out.warnings,
            "usage": {"prompt_tokens": out.prompt_tokens, "beam_width": req.beam_width,
                      "batch_requests": result.batch_requests},
            "timing_ms": {"queue": round(result.queue_ms, 3), "compute": round(result.compute_ms, 3),
                          "total": round(1000 * total, 3)}}
    if state.config.log_requests:
        log.info(json.dumps({"event": "recommend", "id": body["id"], "model": model.name, "items": len(out.items),
                             "beam_width": req.beam_width, "prompt_tokens": out.prompt_tokens, **body["timing_ms"]}))
    return body


def add_recommend_routes(app: FastAPI, state: ServerState, errors: dict) -> None:
    @app.post("/v1/recommend", response_model=RecommendResponse, responses=errors)
    async def recommend(req: RecommendRequest) -> dict:
        return await answer(state, req)

    @app.post("/v1/recommend/batch", responses=errors)
    async def recommend_batch(req: BatchRecommendRequest) -> dict:
        """Many histories in one call, answered in order; an entry that is refused (429) or misses its
        deadline (504) carries its own error while the others are answered."""
        config = state.config
        if len(req.requests) > config.max_batch_items:
            raise ApiError(400, f"requests: {len(req.requests)} entries exceed {config.max_batch_items}", "requests")
        for i, r in enumerate(req.requests):  # every entry is checked before any is submitted
            _checked_timeout_ms(state, r, f"requests.{i}.")
            _model(state, r, f"requests.{i}.")
        results = await asyncio.gather(*(answer(state, r, f"requests.{i}.") for i, r in enumerate(req.requests)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, ApiError):
                raise r
            if isinstance(r, ApiError) and r.status == 400:
                raise r
        return {"object": "list", "data": [r.body() if isinstance(r, ApiError) else r for r in results]}
