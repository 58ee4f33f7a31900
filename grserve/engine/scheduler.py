"""Fixed-step scheduling: a request is scheduled once and its whole 3-level beam search runs in one
engine step, so the scheduler only forms batches. A batch takes waiting requests in arrival order while
the padded beam rows (requests x widest beam) and padded prompt tokens (requests x longest prompt)
stay within budget."""
from __future__ import annotations

import threading
from collections import deque

from grserve.engine.config import EngineConfig
from grserve.engine.request import GRRequest


class FixedStepScheduler:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.waiting: deque[GRRequest] = deque()
        self.ready = threading.Condition()

    def add(self, request: GRRequest) -> None:
        with self.ready:
            self.waiting.append(request)
            self.ready.notify()

    def __len__(self) -> int:
        return len(self.waiting)

    def schedule(self, timeout: float | None = None) -> list[GRRequest]:
        """The next batch (waiting up to `timeout` for the first request; [] if none came)."""
        c = self.config
        with self.ready:
            if not self.waiting and not self.ready.wait_for(lambda: self.waiting, timeout):
                return []
            batch: list[GRRequest] = []
            width = length = 0
            while self.waiting and len(batch) < c.max_batch_requests:
                nxt = self.waiting[0]
                w, p = max(width, nxt.beam_width), max(length, len(nxt.prompt))
                if batch and ((len(batch) + 1) * w > c.max_batch_rows
                              or (len(batch) + 1) * p > c.max_batch_prompt_tokens):
                    break
                batch.append(self.waiting.popleft())
                width, length = w, p
            return batch
