"""The HTTP server: FastAPI routes over the models it serves (GR models, each a Recommender over its GREngine and
live catalog, and an LLM), with admission control.

The event loop only validates, submits and awaits: compute runs on the engines' threads. Every API answer that
is not a 200 is a JSON error body naming the field or the reason; a model no one serves is a 404 naming it,
overload a 429 with Retry-After, a missed deadline a 504, a draining or loading server a 503, and so is one
whose model failed to load or whose engine died (a thread's death fails the engine: /health says why)."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from grserve.engine.failure import EngineFailed
from grserve.recommender import Recommender
from grserve.server.catalog_api import catalog_router
from grserve.server.catalog_search import search_router
from grserve.server.config import ServerConfig
from grserve.server.demo import add_demo
from grserve.server.errors import ERRORS, ApiError
from grserve.server.gate import Gate
from grserve.server.model_spec import DEFAULT_NAME, GR, LLM
from grserve.server.models_api import add_models_routes, load_at_start
from grserve.server.openai_api import add_openai_routes
from grserve.server.pd import add_pd_routes
from grserve.server.protocol import error_body
from grserve.server.recommend_api import add_recommend_routes
from grserve.server.served import ServedModel
from grserve.server.state import ServerState

if TYPE_CHECKING:  # the LLM engine loads transformers' tokenizer: imported only when an LLM is served
    from grserve.engine.llm.engine import LLMEngine


def _given(config: ServerConfig, recommender: Recommender | dict[str, Recommender] | None,
           llm: LLMEngine | None) -> list[ServedModel]:
    """Models made by the caller, by the names of the config's models they stand for: a single Recommender is the
    first GR model, a dict the GR models by name (the config's own GR models are then not loaded), `llm` the
    LLM."""
    if isinstance(recommender, Recommender):
        recommender = {config.gr_models[0].name if config.gr_models else DEFAULT_NAME: recommender}
    given = [ServedModel(name, GR, None, recommender=r) for name, r in (recommender or {}).items()]
    if llm is not None:
        spec = next((m for m in config.models if m.kind == LLM), None)
        given.append(ServedModel(spec.name if spec else "llm", LLM, spec and spec.directory, llm=llm))
    return given


def add_error_handlers(app: FastAPI) -> None:
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


def create_app(config: ServerConfig, recommender: Recommender | dict[str, Recommender] | None = None,
               llm: LLMEngine | None = None) -> FastAPI:
    """Serves the models given (`recommender`: a Recommender, the first GR model, or a dict of them by name;
    `llm`) at once; the config's other models load on a thread at start-up, answering 503 until they are
    ready."""
    state = ServerState(config)
    for model in _given(config, recommender, llm):
        state.attach(model)
    given_gr = isinstance(recommender, dict)
    state.at_start = [m for m in config.models if state.models.get(m.name) is None and not (given_gr and m.kind == GR)]
    state.started = not state.at_start

    async def lifespan(_app):
        if not state.started:
            threading.Thread(target=load_at_start, args=(state,), name="grserve-load", daemon=True).start()
        yield
        if state._client is not None:
            await state._client.aclose()
        for model in state.models:
            model.close()

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
    add_error_handlers(app)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if state.failure is not None:
            return JSONResponse({"status": "error", "detail": state.failure}, status_code=503)
        if not state.loaded:
            return JSONResponse({"status": "loading", "detail": None}, status_code=503)
        names = [m.name for m in state.models]
        return JSONResponse({"status": "ok", "model": state.model_name or next(iter(names), None), "models": names})

    add_recommend_routes(app, state, ERRORS)
    add_models_routes(app, state, ERRORS)
    add_openai_routes(app, state, ERRORS)
    add_pd_routes(app, state, ERRORS)
    app.include_router(search_router(state))
    app.include_router(catalog_router(state))
    add_demo(app)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
