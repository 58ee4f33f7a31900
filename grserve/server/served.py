"""The models one server serves, by name: GR models (a Recommender each, with its own live catalog) and at most
one LLM.

A request finds its model here and holds it (`use`) while it is answered. Loading adds a model only once it is
ready; unloading takes it out of the lookup first, so that no new request reaches it, and then waits for the
requests it holds before its engine stops: none in flight fails. Lookups, `use` and `remove` run on the event
loop with no await between them, so a request either holds the model before it leaves the lookup or never
finds it."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from grserve.recommender import Recommender
from grserve.server.model_spec import GR, LLM, Kind

if TYPE_CHECKING:  # the LLM engine loads transformers' tokenizer: imported only when an LLM is served
    from grserve.engine.llm.engine import LLMEngine


class Follower(Protocol):
    """What keeps a GR model's catalog in step with others (service/catalog_sync.CatalogSync)."""

    def report(self) -> dict: ...

    def stop(self) -> None: ...


@dataclass(eq=False)
class ServedModel:
    name: str
    kind: Kind
    directory: str | None
    recommender: Recommender | None = None
    llm: LLMEngine | None = None
    follower: Follower | None = None  # with --register: its catalog follows the model's history in etcd
    inflight: int = 0  # requests holding it

    @contextmanager
    def use(self) -> Iterator[ServedModel]:
        release = self.hold()
        try:
            yield self
        finally:
            release()

    def hold(self) -> Callable[[], None]:
        """Holds the model until the returned function is called (once), e.g. when a stream ends."""
        self.inflight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.inflight -= 1
        return release

    @property
    def failure(self) -> str | None:
        engine = self.recommender.engine if self.recommender is not None else self.llm
        return engine.failure if engine is not None else None

    def catalog_report(self) -> dict:
        """Its catalog's version and whether it is in step (as heartbeats report them); {} for an LLM."""
        if self.follower is not None:
            return self.follower.report()
        return {"catalog_version": self.recommender.catalog.version} if self.recommender is not None else {}

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.recommender is not None:
            self.recommender.close()
        if self.llm is not None:
            self.llm.shutdown()


class ServedModels:
    def __init__(self):
        self._models: dict[str, ServedModel] = {}  # in the order they were added: the first GR one is the default
        # Names being loaded or unloaded at run time: reserved, so that another load of the name waits its turn.
        self.loading: dict[str, Kind] = {}
        self.unloading: set[str] = set()

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._models.values()))

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def of_kind(self, kind: Kind) -> list[ServedModel]:
        return [m for m in self._models.values() if m.kind == kind]

    def default_gr(self) -> ServedModel | None:
        return next(iter(self.of_kind(GR)), None)

    def llm(self) -> ServedModel | None:
        return next(iter(self.of_kind(LLM)), None)

    def add(self, model: ServedModel) -> None:
        if model.name in self._models:
            raise ValueError(f"model: {model.name!r} is served already")
        self._models[model.name] = model

    def remove(self, name: str) -> ServedModel:
        """Takes `name` out of the lookup (KeyError when it is not served); the caller waits for it to be idle,
        then closes it, with its name in `unloading` meanwhile."""
        return self._models.pop(name)


async def idle(model: ServedModel, timeout_s: float) -> None:
    """Returns once no request holds `model`, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while model.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
