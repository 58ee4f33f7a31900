"""The HTTP server: FastAPI routes over one Recommender (and its GREngine), with admission control.

The event loop only validates, submits and awaits: compute runs on the engine's threads. Every API
answer that is not a 200 is a JSON error body naming the field or the reason; overload is a 429 with
Retry-After, a missed deadline a 504, a draining or loading server a 503, and so is one whose model failed
to load or whose engine died (a thread's death fails the engine: /health says why)."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from grserve.bundle import GRBundle
from grserve.engine.failure import EngineFailed
from grserve.engine.request import DeadlineExceeded, EngineOverloaded
from grserve.errors import InvalidRequest
from grserve.recommender import Recommender
from grserve.server.catalog_api import catalog_router
from grserve.server.catalog_search import search_router
from grserve.server.config import ServerConfig
from grserve.server.demo import add_demo
from grserve.server.errors import ERRORS, ApiError
from grserve.server.gate import Gate
from grserve.server.metrics import ServerMetrics
from grserve.server.openai_api import add_openai_routes
from grserve.server.pd import add_pd_routes
from grserve.server.protocol import BatchRecommendRequest, RecommendRequest, RecommendResponse, error_body

if TYPE_CHECKING:  # the LLM engine loads transformers' tokenizer: imported only when an LLM is served
    from grserve.engine.llm_engine import LLMEngine

log = logging.getLogger("grserve.requests")


@dataclass
class ServerState:
    config: ServerConfig
    model_name: str
    recommender: Recommender | None = None
    llm: "LLMEngine | None" = None
    llm_name: str | None = None
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    draining: bool = False
    inflight: int = 0
    load_error: str | None = None
    _client: httpx.AsyncClient | None = None

    def http_client(self) -> httpx.AsyncClient:
        """One pooled client for the calls this instance makes to others (KV from prefill instances), with this
        instance's API key, which the instances of one deployment share."""
        if self._client is None:
            auth = {"authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
            self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=64), headers=auth)
        return self._client

    @property
    def failure(self) -> str | None:
        """Why this instance cannot serve: a model that failed to load, or an engine whose thread died."""
        engines = [self.recommender.engine if self.recommender else None, self.llm]
        return self.load_error or next((e.failure for e in engines if e is not None and e.failure), None)

    def ready(self) -> Recommender:
        if not self.config.gr_model:
            raise ApiError(404, "no GR model is served here: this server runs an LLM (use /v1/completions)",
                           "model")
        if self.failure is not None:
            raise ApiError(503, self.failure, kind="unavailable")
        if self.recommender is None:
            raise ApiError(503, self.load_error or "model is loading", kind="unavailable")
        return self.recommender

    @property
    def loaded(self) -> bool:
        return ((self.recommender is not None or not self.config.gr_model)
                and (self.llm is not None or self.config.llm_model is None))

    def attach(self, recommender: Recommender) -> None:
        self.metrics.attach(recommender.engine)
        self.metrics.attach_catalog(recommender.catalog)
        self.recommender = recommender


def model_name(path: str | None) -> str:
    return path.rstrip("/").split("/")[-1] if path else "grserve-default-ml-100k"


def load_recommender(config: ServerConfig) -> Recommender:
    return Recommender(GRBundle.load(config.model, device=config.engine.device), config.engine,
                       config.history_overflow, config.state_dir, config.catalog_process)


async def answer(state: ServerState, req: RecommendRequest, prefix: str = "") -> dict:
    rec, cfg = state.ready(), state.config
    if req.beam_width > cfg.engine.max_beam_width:
        raise ApiError(400, f"{prefix}beam_width: {req.beam_width} exceeds the server's maximum of "
                            f"{cfg.engine.max_beam_width}", prefix + "beam_width")
    timeout_ms = req.timeout_ms or cfg.default_timeout_ms
    if timeout_ms > cfg.max_timeout_ms:
        raise ApiError(400, f"{prefix}timeout_ms: {timeout_ms} exceeds {cfg.max_timeout_ms}", prefix + "timeout_ms")
    started = time.perf_counter()
    try:
        out, result = await asyncio.wait_for(
            rec.recommend_async(req.history, req.top_n, req.beam_width, req.exclude_history, req.exclude, req.allow,
                                deadline=started + timeout_ms / 1000, priority=int(req.priority == "offline")),
            timeout_ms / 1000)
    except InvalidRequest as e:
        raise ApiError(400, prefix + str(e), prefix + e.param)
    except EngineOverloaded as e:
        state.metrics.rejected.labels(reason=e.reason).inc()
        # Retry-After is whole seconds (RFC 9110): the predicted time for the queue ahead to clear, rounded up.
        retry = max(1, math.ceil(e.retry_after_s or 1))
        raise ApiError(429, f"server overloaded, request refused at once: {e}", "timeout_ms" if e.reason == "deadline"
                       else None, kind="rate_limit_error", headers={"Retry-After": str(retry)})
    except DeadlineExceeded as e:
        state.metrics.timed_out.inc()
        raise ApiError(504, f"deadline of {timeout_ms} ms cannot be met: {e}", "timeout_ms", kind="timeout_error")
    except asyncio.TimeoutError:
        state.metrics.timed_out.inc()
        raise ApiError(504, f"deadline of {timeout_ms} ms passed before the answer was ready", "timeout_ms",
                       kind="timeout_error")
    total = time.perf_counter() - started
    state.metrics.on_result(result, total)
    body = {"id": req.request_id or f"rec-{uuid.uuid4().hex}", "model": state.model_name,
            "catalog_version": out.catalog_version, "items": [vars(i) for i in out.items], "warnings": out.warnings,
            "usage": {"prompt_tokens": out.prompt_tokens, "beam_width": req.beam_width},
            "timing_ms": {"queue": round(result.queue_ms, 3), "compute": round(result.compute_ms, 3),
                          "total": round(1000 * total, 3)}}
    if cfg.log_requests:
        log.info(json.dumps({"event": "recommend", "id": body["id"], "items": len(out.items),
                             "beam_width": req.beam_width, "prompt_tokens": out.prompt_tokens, **body["timing_ms"]}))
    return body


def load_llm(config: ServerConfig) -> "LLMEngine":
    from grserve.engine.llm_engine import LLMEngine
    return LLMEngine(config.llm_model, config.llm)


def create_app(config: ServerConfig, recommender: Recommender | None = None, llm=None) -> FastAPI:
    """With `recommender` (and `llm`) given the app serves at once; otherwise it loads the configured
    models on a thread at start-up and answers 503 until they are ready."""
    state = ServerState(config, model_name(config.model), llm=llm, llm_name=model_name(config.llm_model))
    if recommender is not None:
        state.attach(recommender)
    state.metrics.watch_llm(lambda: state.llm)

    def load() -> None:
        try:
            if config.gr_model and state.recommender is None:
                state.attach(load_recommender(config))
            if config.llm_model and state.llm is None:
                state.llm = load_llm(config)
        except Exception as e:  # reported by /health; `grserve serve` then exits non-zero (serve.py)
            state.load_error = f"model failed to load: {e}"
            # a bad path or config is the user's to fix (the message says it); anything else gets its traceback
            expected = isinstance(e, (FileNotFoundError, ValueError))
            logging.getLogger("grserve").error(state.load_error, exc_info=None if expected else e)

    async def lifespan(_app):
        if not state.loaded:
            threading.Thread(target=load, name="grserve-load", daemon=True).start()
        yield
        if state._client is not None:
            await state._client.aclose()
        if state.recommender is not None:
            state.recommender.close()
        if state.llm is not None:
            state.llm.shutdown()

    async def serving(request: Request) -> None:
        """Every API route first: a failed instance refuses at once with the reason (a stream too, before it
        starts), as a draining one does."""
        failure = state.failure
        if failure is not None and request.url.path.startswith("/v1/"):
            raise ApiError(503, failure, kind="unavailable")

    app = FastAPI(title="grserve", version="0.1.0", lifespan=lifespan, dependencies=[Depends(serving)],
                  description="Generative recommendation serving: SID beam search over a catalog trie.")
    app.state.grserve = state
    app.add_middleware(Gate, state=state)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(EngineFailed)
    async def engine_failed(_: Request, e: EngineFailed) -> JSONResponse:  # it died while the request waited
        return JSONResponse(error_body(503, str(e), kind="unavailable"), status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = first["loc"][1:] if tuple(first["loc"][:1]) == ("query",) else first["loc"]  # ?limit=0: "limit"
        param = ".".join(str(p) for p in loc if p != "body") or None
        return JSONResponse(error_body(400, f"{param or 'body'}: {first['msg']}", param), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("grserve").exception("unexpected error")
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}", kind="internal_error"),
                            status_code=500)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if state.failure is not None:
            return JSONResponse({"status": "error", "detail": state.failure}, status_code=503)
        if not state.loaded:
            return JSONResponse({"status": "loading", "detail": None}, status_code=503)
        return JSONResponse({"status": "ok", "model": state.model_name if config.gr_model else state.llm_name})

    @app.get("/v1/models")
    async def models() -> dict:
        data = []
        if config.gr_model:
            rec = state.ready()
            b, catalog = rec.bundle, rec.catalog.current
            data.append({
                "id": state.model_name, "object": "model", "owned_by": "grserve", "kind": "generative-recommendation",
                "catalog_version": catalog.version, "catalog_size": len(catalog.table),
                "catalog_live_items": catalog.live_items, "semantic_ids": catalog.trie.num_leaves,
                "codebook_size": b.table.codebook_size, "levels": b.table.levels,
                "max_history_items": b.settings.max_history_items,
                "max_beam_width": config.engine.max_beam_width, "max_timeout_ms": config.max_timeout_ms,
                "default_timeout_ms": config.default_timeout_ms, "max_batch_items": config.max_batch_items})
        if config.llm_model:
            if state.llm is None:
                raise ApiError(503, state.load_error or "LLM is loading", kind="unavailable")
            data.append({"id": state.llm_name, "object": "model", "owned_by": "grserve", "kind": "llm",
                         "max_model_len": state.llm.max_model_len})
        return {"object": "list", "data": data}

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=ERRORS)
    async def recommend(req: RecommendRequest) -> dict:
        return await answer(state, req)

    @app.post("/v1/recommend/batch", responses=ERRORS)
    async def recommend_batch(req: BatchRecommendRequest) -> dict:
        """Many histories in one call, answered in order; an entry that is refused (429) or misses its
        deadline (504) carries its own error while the others are answered."""
        if len(req.requests) > config.max_batch_items:
            raise ApiError(400, f"requests: {len(req.requests)} entries exceed {config.max_batch_items}", "requests")
        for i, r in enumerate(req.requests):
            if r.beam_width > config.engine.max_beam_width:
                raise ApiError(400, f"requests.{i}.beam_width: exceeds {config.engine.max_beam_width}",
                               f"requests.{i}.beam_width")
        results = await asyncio.gather(*(answer(state, r, f"requests.{i}.") for i, r in enumerate(req.requests)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, ApiError):
                raise r
            if isinstance(r, ApiError) and r.status == 400:
                raise r
        return {"object": "list", "data": [r.body() if isinstance(r, ApiError) else r for r in results]}

    add_openai_routes(app, state, ERRORS)
    add_pd_routes(app, state, ERRORS)
    app.include_router(search_router(state))
    app.include_router(catalog_router(state))
    add_demo(app)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
