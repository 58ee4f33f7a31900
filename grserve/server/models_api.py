"""/v1/models: the models served (public), loading one and unloading one while serving (admin routes: the gate
asks for the admin token, as for catalog changes).

A model loads on a worker thread (the event loop keeps answering, other models keep computing) and is served
once ready, its catalog caught up with its model's history in etcd first when the instance is registered.
Unloading takes it out of the lookup at once (a request naming it from then on is a 404 naming it; routers
learn from the next heartbeat, sent at once, and try another instance meanwhile), waits for the requests it
holds (up to the drain timeout), then stops its engine: no request in flight fails."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI

from grserve.bundle import GRBundle
from grserve.recommender import Recommender
from grserve.server.config import ServerConfig
from grserve.server.errors import ApiError
from grserve.server.model_spec import GR, LLM, ModelSpec, check_name, model_kind
from grserve.server.models_protocol import DeletedModel, LoadModelRequest, ModelCard, ModelList
from grserve.server.protocol import ErrorResponse
from grserve.server.served import ServedModel, idle

if TYPE_CHECKING:
    from grserve.engine.llm.engine import LLMEngine
    from grserve.server.state import ServerState

log = logging.getLogger("grserve")
# 401/403: no or a wrong admin token / none configured (the gate); 409: the name is taken, or being (un)loaded
ADMIN_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 503)}


def load_recommender(config: ServerConfig, spec: ModelSpec) -> Recommender:
    return Recommender(GRBundle.load(spec.directory, device=config.engine.device), config.engine,
                       config.history_overflow, config.state_dir_of(spec.name), config.catalog_process)


def load_llm(config: ServerConfig, spec: ModelSpec) -> LLMEngine:
    from grserve.engine.llm.engine import LLMEngine
    return LLMEngine(spec.directory, config.llm)


def load_model(state: ServerState, spec: ModelSpec) -> ServedModel:
    """`spec` loaded (on the caller's thread), its catalog following the shared history when registered."""
    model = ServedModel(spec.name, spec.kind, spec.directory)
    try:
        if spec.kind == GR:
            model.recommender = load_recommender(state.config, spec)
            if state.follow is not None:
                model.follower = state.follow(model)
        else:
            model.llm = load_llm(state.config, spec)
    except BaseException:
        model.close()
        raise
    return model


def load_at_start(state: ServerState) -> None:
    """The models to serve at start, in order (on the loading thread); a failure fails the server."""
    try:
        for spec in state.at_start:
            state.attach(load_model(state, spec))
        state.started = True
    except Exception as e:  # reported by /health; `grserve serve` then exits non-zero (serve.py)
        state.load_error = f"model failed to load: {e}"
        # a bad path or config is the user's to fix (the message says it); anything else gets its traceback
        expected = isinstance(e, (FileNotFoundError, ValueError))
        log.error(state.load_error, exc_info=None if expected else e)


def card(state: ServerState, model: ServedModel) -> dict:
    config = state.config
    if model.kind == LLM:
        return {"id": model.name, "kind": "llm", "max_model_len": model.llm.max_model_len}
    rec = model.recommender
    bundle, catalog = rec.bundle, rec.catalog.current
    return {"id": model.name, "kind": "generative-recommendation", "default": model is state.models.default_gr(),
            "catalog_version": catalog.version, "catalog_size": len(catalog.table),
            "catalog_live_items": catalog.live_items, "semantic_ids": catalog.trie.num_leaves,
            "codebook_size": bundle.table.codebook_size, "levels": bundle.table.levels,
            "max_history_items": bundle.settings.max_history_items, "max_beam_width": config.engine.max_beam_width,
            "max_timeout_ms": config.max_timeout_ms, "default_timeout_ms": config.default_timeout_ms,
            "max_batch_items": config.max_batch_items}


def _reserve(state: ServerState, req: LoadModelRequest) -> ModelSpec:
    """The spec of a load, its name reserved; ApiError when it cannot be loaded now."""
    try:
        name = check_name(req.name, "name")
    except ValueError as e:
        raise ApiError(400, str(e), "name")
    if not state.loaded:
        raise ApiError(503, state.failure or "the configured models are still loading", kind="unavailable")
    if state.models.get(name) is not None or name in state.models.loading.keys() | state.models.unloading:
        raise ApiError(409, f"name: a model named {name!r} is served, loading or unloading: unload it first, or "
                            f"give another name", "name", kind="conflict_error")
    spec = ModelSpec(name, req.directory, model_kind(req.directory))
    if spec.kind == LLM and (state.models.llm() is not None or LLM in state.models.loading.values()):
        raise ApiError(409, f"directory: {req.directory} is an LLM, and this server serves one already: one LLM "
                            f"per server", "directory", kind="conflict_error")
    if spec.kind == GR:
        try:
            state.config.state_dir_of(name)
        except ValueError as e:
            raise ApiError(400, str(e), "name")
    state.models.loading[name] = spec.kind
    return spec


def add_models_routes(app: FastAPI, state: ServerState, errors: dict) -> None:
    @app.get("/v1/models", response_model=ModelList, response_model_exclude_none=True, responses=errors)
    async def models() -> dict:
        if not state.loaded:  # (a failed server is refused before: app.serving)
            raise ApiError(503, "the models are loading", kind="unavailable")
        return {"object": "list", "data": [card(state, m) for m in state.models]}

    @app.post("/v1/models", response_model=ModelCard, response_model_exclude_none=True, responses=ADMIN_ERRORS,
              tags=["admin"])
    async def load(req: LoadModelRequest) -> dict:
        """Loads a model from a directory on the server and serves it under `name` once it is ready."""
        spec = _reserve(state, req)
        try:
            model = await asyncio.to_thread(load_model, state, spec)
        except (FileNotFoundError, ValueError) as e:
            raise ApiError(400, f"directory: {e}", "directory")
        finally:
            del state.models.loading[spec.name]
        state.attach(model)
        log.info("loaded %s model %s from %s", spec.kind, spec.name, spec.directory)
        return card(state, model)

    @app.delete("/v1/models/{name}", response_model=DeletedModel, responses=ADMIN_ERRORS, tags=["admin"])
    async def unload(name: str) -> dict:
        """Stops serving `name`: new requests for it are refused (404) at once, those in flight are answered."""
        if name in state.models.loading:
            raise ApiError(409, f"model {name!r} is loading: unload it once it has loaded", "name",
                           kind="conflict_error")
        try:
            model = state.models.remove(name)
        except KeyError:
            raise state.not_served(name) from None
        state.models.unloading.add(name)
        try:
            state.on_models_changed()  # routers stop sending it here
            await idle(model, state.config.drain_timeout_s)
            await asyncio.to_thread(model.close)
            state.metrics.detach(name)
        finally:
            state.models.unloading.discard(name)
        log.info("unloaded model %s", name)
        return {"id": name}
