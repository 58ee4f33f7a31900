"""Fixed-step scheduling: a request is scheduled once and its whole 3-level beam search runs in one
engine step, so the scheduler only forms batches. Waiting requests are ordered by priority (online
before offline: offline work only fills capacity online requests leave), then deadline (earliest first;
no deadline last), then arrival; a batch takes them in that order while the padded beam rows
(requests x widest beam) and padded prompt tokens (requests x longest prompt) stay within budget.
Requests whose deadline has passed, or that were cancelled, are never started. Every field is read and
written under `ready` (the step and prepare threads both schedule; the step thread also records step times)."""
from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque

import numpy as np

from grserve.engine.config import EngineConfig
from grserve.engine.failure import settle
from grserve.engine.request import DeadlineExceeded, EngineOverloaded, GRRequest


class FixedStepScheduler:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.waiting: list[tuple[int, float, int, GRRequest]] = []
        self.waiting_rows = 0
        self.ready = threading.Condition()
        # (work, seconds) of recent steps: step time is modelled as fixed + per-unit cost, where a unit is
        # a padded beam row or a padded prompt token, fitted by least squares.
        self.recent_steps: deque[tuple[int, float]] = deque(maxlen=64)
        self.closed: Exception | None = None  # once set, `add` raises it: the engine can no longer run requests

    @staticmethod
    def work(requests: int, width: int, length: int) -> int:
        return requests * (width + length)

    def observe_step(self, requests: int, width: int, length: int, seconds: float) -> None:
        # Under the lock: the prepare thread reads recent_steps (in _work_budget) while the step thread appends.
        with self.ready:
            self.recent_steps.append((self.work(requests, width, length), seconds))

    def _work_budget(self) -> float:
        """Work that fits in `target_step_ms` by the fitted model (infinite when off or not yet known).
        Called with `ready` held."""
        target = self.config.target_step_ms
        works = {w for w, _ in self.recent_steps}
        if target is None or len(works) < 3:
            return float("inf")
        per_unit, fixed = np.polyfit(*zip(*self.recent_steps), 1)
        if per_unit <= 0:
            return float("inf")
        # The fit of exact data lands a few ulps either side of the exact budget: a relative slack far
        # above rounding (1e-15) and far below any real step difference admits a step that exactly fills it.
        return max(target / 1000 - max(fixed, 0.0), 0.0) / per_unit * (1 + 1e-9)

    def full_batch_waiting(self) -> bool:
        """Whether the waiting requests already fill a batch: forming it early then delays nobody."""
        with self.ready:
            # work in the step budget's units (beam rows + prompt tokens), as the batch would be cut
            waiting_work = sum(e[-1].beam_width + len(e[-1].prompt) for e in self.waiting)
            return self.waiting_rows >= self.config.max_batch_rows or \
                len(self.waiting) >= self.config.max_batch_requests or \
                waiting_work >= self._work_budget()

    def add(self, request: GRRequest) -> None:
        c = self.config
        with self.ready:
            if self.closed is not None:
                raise type(self.closed)(*self.closed.args)  # a fresh one: each raise would grow a shared traceback
            if len(self.waiting) >= c.max_queue_requests or self.waiting_rows + request.beam_width > c.max_queue_rows:
                raise EngineOverloaded(f"queue full: {len(self.waiting)} requests, {self.waiting_rows} beam rows")
            deadline = request.deadline if request.deadline is not None else math.inf
            heapq.heappush(self.waiting, (request.priority, deadline, request.request_id, request))
            self.waiting_rows += request.beam_width
            self.ready.notify()

    def close(self, error: Exception) -> None:
        """Fails every waiting request with `error` and refuses new ones with it (the engine stopped or died).
        Under the lock, so a request is either failed here or refused by `add`, never left waiting."""
        with self.ready:
            self.closed = error
            waiting, self.waiting, self.waiting_rows = self.waiting, [], 0
        for *_, request in waiting:
            settle(request.future, error=error)  # a cancelled one stays cancelled

    def __len__(self) -> int:
        return len(self.waiting)

    def _pop(self) -> GRRequest:
        request = heapq.heappop(self.waiting)[-1]
        self.waiting_rows -= request.beam_width
        return request

    def _drop_unstartable(self) -> None:
        # Expired or cancelled requests are dropped wherever they wait (the heap is rebuilt only then).
        now = time.perf_counter()
        dead = [e for e in self.waiting if e[-1].expired(now) or e[-1].future.cancelled()]
        if not dead:
            return
        self.waiting = [e for e in self.waiting if not (e[-1].expired(now) or e[-1].future.cancelled())]
        heapq.heapify(self.waiting)
        for *_, request in dead:
            self.waiting_rows -= request.beam_width
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
            budget = self._work_budget()
            online = 0  # requests of the batch that are online (heap order: they come first)
            while self.waiting and len(batch) < c.max_batch_requests:
                nxt = self.waiting[0][-1]
                w, p = max(width, nxt.beam_width), max(length, len(nxt.prompt))
                # Offline work adds at most a share of the step budget on top of the online work, so an
                # online request arriving meanwhile never waits behind a long offline step.
                limit = budget if nxt.priority == 0 else \
                    self.work(online, w, p) + c.offline_step_fraction * budget
                if batch and ((len(batch) + 1) * w > c.max_batch_rows
                              or (len(batch) + 1) * p > c.max_batch_prompt_tokens
                              or self.work(len(batch) + 1, w, p) > limit):
                    break
                online += nxt.priority == 0
                request = self._pop()
                if not request.future.set_running_or_notify_cancel():
                    continue  # cancelled while waiting (its client went away)
                batch.append(request)
                width, length = w, p
            return batch
