"""A GR request as the engine sees it (item rows and prompt tokens, no dataset ids) and its result."""
from __future__ import annotations

import itertools
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

_ids = itertools.count()


@dataclass
class GRRequest:
    prompt: list[int]
    beam_width: int
    top_n: int
    exclude: set[int] = field(default_factory=set)  # item rows never returned (history included)
    allow: set[int] | None = None  # when given, only these item rows may be returned
    request_id: int = field(default_factory=lambda: next(_ids))
    arrival: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future, repr=False)


@dataclass
class GRResult:
    items: list[tuple[int, float, tuple[int, int, int]]]  # (item row, score, SID), best first
    queue_ms: float
    compute_ms: float
