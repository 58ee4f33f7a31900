"""One server's state: its config, the models it serves, its metrics, whether it drains, and why it cannot serve.

Routes find their model through `gr` and `llm_of`: a name no model has is a 404 naming it, a model still
loading or a failed server a 503 with the reason."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from grserve.recommender import Recommender
from grserve.server.config import ServerConfig
from grserve.server.errors import ApiError
from grserve.server.metrics import ServerMetrics
from grserve.server.model_spec import GR, LLM, ModelSpec
from grserve.server.served import ServedModel, ServedModels

if TYPE_CHECKING:
    from grserve.engine.llm.engine import LLMEngine


@dataclass
class ServerState:
    config: ServerConfig
    models: ServedModels = field(default_factory=ServedModels)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    draining: bool = False
    inflight: int = 0
    load_error: str | None = None
    at_start: list[ModelSpec] = field(default_factory=list)  # the models loaded as the server starts
    started: bool = False  # they have all loaded
    # With --register (serve.py): a GR model's catalog follower, started before the model is added; and what to
    # call once the models served changed (a heartbeat at once).
    follow: Callable[[ServedModel], object] | None = None
    on_models_changed: Callable[[], None] = lambda: None
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
        """Why this instance cannot serve: a model that failed to load at start, or an engine whose thread died."""
        return self.load_error or next((m.failure for m in self.models if m.failure), None)

    @property
    def loaded(self) -> bool:
        """The models to serve at start have all loaded (and none failed)."""
        return self.load_error is None and self.started

    def _find(self, name: str | None, kind: str) -> ServedModel:
        if self.failure is not None:
            raise ApiError(503, self.failure, kind="unavailable")
        model = self.models.get(name) if name is not None else \
            self.models.default_gr() if kind == GR else self.models.llm()
        if model is not None:
            return model
        # what is still to come: the config's models until they have all loaded, and those loading at run time
        pending = [] if self.started else [m for m in self.at_start if self.models.get(m.name) is None]
        coming = name in {m.name for m in pending} | self.models.loading.keys() if name is not None else \
            any(m.kind == kind for m in pending)
        if coming:
            raise ApiError(503, f"model {name!r} is loading" if name else "model is loading", kind="unavailable")
        if name is None:
            llm_only = kind == GR and self.models.llm() is not None
            raise ApiError(404, f"model: no {'GR model' if kind == GR else 'LLM'} is served here" +
                           (": this server runs an LLM (use /v1/completions)" if llm_only else ""), "model",
                           kind="not_found_error")
        raise self.not_served(name)

    def not_served(self, name: str) -> ApiError:
        return ApiError(404, f"model: {name!r} is not served here (served: {[m.name for m in self.models]})",
                        "model", kind="not_found_error")

    def gr(self, name: str | None = None) -> ServedModel:
        """The GR model `name` (None: the default, the first GR model served)."""
        model = self._find(name, GR)
        if model.kind != GR:
            raise ApiError(400, f"model: {model.name!r} is an LLM: it serves /v1/completions and "
                                f"/v1/chat/completions, not recommendations", "model")
        return model

    def ready(self, name: str | None = None) -> Recommender:
        """The Recommender of GR model `name` (None: the default)."""
        return self.gr(name).recommender

    def llm_of(self, name: str | None = None) -> ServedModel:
        """The LLM `name` (None: the one served)."""
        model = self._find(name, LLM)
        if model.kind != LLM:
            raise ApiError(400, f"model: {model.name!r} is a GR model: give beam_width and a prompt of token ids",
                           "model")
        return model

    @property
    def model_name(self) -> str | None:
        """The default GR model's name (None: none is served)."""
        model = self.models.default_gr()
        return model.name if model is not None else None

    @property
    def llm(self) -> LLMEngine | None:
        model = self.models.llm()
        return model.llm if model is not None else None

    def attach(self, model: ServedModel) -> None:
        """Serves `model` from now on, its metrics with it."""
        self.models.add(model)
        self.metrics.attach(model)
        self.on_models_changed()
