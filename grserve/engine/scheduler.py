"""Fixed-step scheduling: a request is scheduled once and its whole 3-level beam search runs in one
engine step, so the scheduler only forms batches. Waiting requests are ordered by deadline (earliest
first; no deadline last, then arrival); a batch takes them in that order while the padded beam rows
(requests x widest beam) and padded prompt tokens (requests x longest prompt) stay within budget.
Requests whose deadline has passed, or that were cancelled, are never started."""
from __future__ import annotations

import heapq
import math
import threading
import time

from grserve.engine.config import EngineConfig
from grserve.engine.request import DeadlineExceeded, EngineOverloaded, GRRequest


class FixedStepScheduler:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.waiting: list[tuple[float, int, GRRequest]] = []
        self.waiting_rows = 0
        self.ready = threading.Condition()

    def add(self, request: GRRequest) -> None:
        c = self.config
        with self.ready:
            if len(self.waiting) >= c.max_queue_requests or self.waiting_rows + request.beam_width > c.max_queue_rows:
                raise EngineOverloaded(f"queue full: {len(self.waiting)} requests, {self.waiting_rows} beam rows")
            deadline = request.deadline if request.deadline is not None else math.inf
            heapq.heappush(self.waiting, (deadline, request.request_id, request))
            self.waiting_rows += request.beam_width
            self.ready.notify()

    def __len__(self) -> int:
        return len(self.waiting)

    def _pop(self) -> GRRequest:
        request = heapq.heappop(self.waiting)[2]
        self.waiting_rows -= request.beam_width
        return request

    def _drop_unstartable(self) -> None:
        # Heap order is deadline order: once the head can start, every request behind it can too.
        now = time.perf_counter()
        while self.waiting and (self.waiting[0][2].expired(now) or self.waiting[0][2].future.cancelled()):
            request = self._pop()
            if not request.future.cancelled():
                request.future.set_exception(DeadlineExceeded(f"deadline passed {1000 * (now - request.deadline):.1f} ms ago"))

    def schedule(self, timeout: float | None = None) -> list[GRRequest]:
        """The next batch (waiting up to `timeout` for the first request; [] if none came)."""
        c = self.config
        with self.ready:
            if not self.waiting and not self.ready.wait_for(lambda: self.waiting, timeout):
                return []
            batch: list[GRRequest] = []
            width = length = 0
            self._drop_unstartable()
            while self.waiting and len(batch) < c.max_batch_requests:
                nxt = self.waiting[0][2]
                w, p = max(width, nxt.beam_width), max(length, len(nxt.prompt))
                if batch and ((len(batch) + 1) * w > c.max_batch_rows
                              or (len(batch) + 1) * p > c.max_batch_prompt_tokens):
                    break
                request = self._pop()
                if not request.future.set_running_or_notify_cancel():
                    continue  # cancelled while waiting (its client went away)
                batch.append(request)
                width, length = w, p
                self._drop_unstartable()
            return batch
