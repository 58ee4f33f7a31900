"""A GR request as the engine sees it (item rows and prompt tokens, no dataset ids) and its result."""
from __future__ import annotations

import itertools
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from grserve.catalog.snapshot import CatalogSnapshot

_ids = itertools.count()


class DeadlineExceeded(Exception):
    """The request cannot be answered by its deadline: it passed, or the request's own step would end after it."""


class EngineOverloaded(Exception):
    """Refused at admission: the queue is full (by requests or by beam rows; `reason` "queue_full"), or the work
    queued ahead would answer the request after its deadline ("deadline"). `retry_after_s`: when the queue ahead
    is predicted to have cleared (None: unknown)."""

    def __init__(self, message: str, reason: str = "queue_full", retry_after_s: float | None = None):
        super().__init__(message)
        self.reason, self.retry_after_s = reason, retry_after_s


@dataclass
class GRRequest:
    prompt: list[int]
    beam_width: int
    top_n: int
    exclude: set[int] = field(default_factory=set)  # item rows never returned (history included)
    allow: set[int] | None = None  # when given, only these item rows may be returned
    deadline: float | None = None  # time.perf_counter() by which it must be answered, or None
    priority: int = 0  # 0 online, 1 offline: offline waits while any online request can start
    # The catalog version the request is answered on, wholly (its item rows are that version's); None: the
    # engine's own, its bundle's item table.
    catalog: CatalogSnapshot | None = field(default=None, repr=False)
    request_id: int = field(default_factory=lambda: next(_ids))
    arrival: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future, repr=False)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline


@dataclass
class GRResult:
    items: list[tuple[int, float, tuple[int, ...]]]  # (item row, score, SID), best first
    queue_ms: float
    compute_ms: float
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    select_ms: float = 0.0
    catalog_version: int = 0
    batch_requests: int = 1  # requests the same step answered (its compute_ms is theirs too)
