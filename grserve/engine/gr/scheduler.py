"""Fixed-step scheduling and deadline-aware admission: a request is scheduled once and its whole beam search
runs in one engine step, so the scheduler forms batches and decides what to admit.

Waiting requests are ordered by priority (online before offline: offline work only fills capacity online
requests leave), then deadline (earliest first; no deadline last), then arrival; a step takes them in that
order as `step_plan` cuts it. A request's deadline is when it must be answered. With admission control on,
`add` plans the steps ahead by the fitted step-cost model (the step computing now, the work queued ahead of
the request in its class, then its own step) and refuses at once a request that would miss its deadline, or
would make one admitted before it miss its own; a waiting request that can no longer make its deadline even
alone is dropped early. Requests past their deadline, or cancelled, never start. Every field is read and
written under `ready` (the step and prepare threads both schedule; the step thread also records step times)."""
from __future__ import annotations

import heapq
import math
import threading
import time

from grserve.engine.gr.config import EngineConfig
from grserve.engine.failure import settle
from grserve.engine.gr.request import DeadlineExceeded, EngineOverloaded, GRRequest
from grserve.engine.gr.step_cost import StepCostModel
from grserve.engine.gr.step_plan import StepCut, plan_finishes, step_budget, step_work


class FixedStepScheduler:
    def __init__(self, config: EngineConfig, clock=time.perf_counter):
        self.config, self.clock = config, clock
        self.waiting: list[tuple[int, float, int, GRRequest]] = []
        self.waiting_rows = 0
        self.ready = threading.Condition()
        self.cost = StepCostModel()
        self.inflight_end: float | None = None  # predicted end of the step computing now
        self.refused = self.dropped = 0  # refused at admission / dropped early, for missing their deadlines
        self.closed: Exception | None = None  # once set, `add` raises it: the engine can no longer run requests

    @property
    def target_s(self) -> float:
        return math.inf if self.config.target_step_ms is None else self.config.target_step_ms / 1000

    def observe_step(self, work: int, seconds: float, late: int = 0, on_time: int = 0) -> None:
        """A step finished: its work and time (the cost model's data), and how many of its requests with a
        deadline were answered after it (and in time). Under the lock: admission reads the model meanwhile."""
        with self.ready:
            self.cost.observe(work, seconds)
            self.cost.observe_deadlines(late, on_time)
            self.inflight_end = None

    def full_batch_waiting(self) -> bool:
        """Whether the waiting requests already fill a batch: forming it early then delays nobody."""
        with self.ready:
            front = [e[-1] for e in heapq.nsmallest(self.config.max_batch_requests + 1, self.waiting)]
            return bool(front) and self._cut(front, self.clock()) < len(front)

    def add(self, request: GRRequest) -> None:
        c = self.config
        with self.ready:
            if self.closed is not None:
                raise type(self.closed)(*self.closed.args)  # a fresh one: each raise would grow a shared traceback
            if len(self.waiting) >= c.max_queue_requests or self.waiting_rows + request.beam_width > c.max_queue_rows:
                raise EngineOverloaded(f"queue full: {len(self.waiting)} requests, {self.waiting_rows} beam rows")
            entry = (request.priority, math.inf if request.deadline is None else request.deadline,
                     request.request_id, request)
            if c.admission_control and request.deadline is not None and self.cost.known:
                self._admit(entry)
            heapq.heappush(self.waiting, entry)
            self.waiting_rows += request.beam_width
            self.ready.notify()

    def _admit(self, entry: tuple) -> None:
        """Raises EngineOverloaded when the planned steps would answer the request after its deadline, or an
        admitted request of its class after its own (one that was late already does not count against it)."""
        now, request = self.clock(), entry[-1]
        queue = sorted(e for e in self.waiting + [entry] if e[0] == request.priority)
        mine = queue.index(entry)
        behind = [e[-1] for e in queue[mine:]]
        start = max(now, self.inflight_end or now)
        finishes = plan_finishes([e[-1] for e in queue], start, self.cost, self.config, self.target_s)[mine:]
        late = [r for r, f in zip(behind, finishes) if r.deadline is not None and f > r.deadline]
        if late and late[0] is not request:
            without = plan_finishes([e[-1] for e in queue if e is not entry], start, self.cost, self.config,
                                    self.target_s)[mine:]
            already = {r.request_id for r, f in zip(behind[1:], without) if r.deadline is not None and f > r.deadline}
            late = [r for r in late if r.request_id not in already]
        if late:
            self.refused += 1
            reason = (f"it would be answered {1000 * (finishes[0] - request.deadline):.0f} ms after its deadline "
                      f"({1000 * (request.deadline - now):.0f} ms from now) behind {mine} queued requests"
                      if late[0] is request else
                      f"admitting it would make {len(late)} admitted requests miss their deadlines")
            raise EngineOverloaded(reason, reason="deadline", retry_after_s=max(finishes[-1] - now, 0.001))

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

    def _hopeless(self, request: GRRequest, now: float) -> bool:
        if request.deadline is None:
            return False
        if now > request.deadline:
            return True
        # Admission control drops early what cannot finish even alone: its client gets a 504 now, not later.
        return self.config.admission_control and now + self.cost.predict(step_work([request])) > request.deadline

    def _drop_unstartable(self, now: float) -> None:
        # Hopeless or cancelled requests are dropped wherever they wait (the heap is rebuilt only then).
        dead = [e for e in self.waiting if self._hopeless(e[-1], now) or e[-1].future.cancelled()]
        if not dead:
            return
        gone = {e[2] for e in dead}
        self.waiting = [e for e in self.waiting if e[2] not in gone]
        heapq.heapify(self.waiting)
        for *_, request in dead:
            self.waiting_rows -= request.beam_width
            if request.future.cancelled():
                continue
            self.dropped += 1
            when = f"passed {1000 * (now - request.deadline):.1f} ms ago" if now > request.deadline else \
                f"is {1000 * (request.deadline - now):.1f} ms away, less than its own step takes"
            request.future.set_exception(DeadlineExceeded(f"deadline {when}"))

    def _cut(self, front: list[GRRequest], now: float) -> int:
        """How many of `front` (in scheduling order) the step starting now takes."""
        cut = StepCut(self.config, step_budget(self.cost, self.target_s, front[0], now))
        for r in front:
            if not cut.fits(r):
                break
            cut.add(r)
        return cut.requests

    def schedule(self, timeout: float | None = None) -> list[GRRequest]:
        """The next batch (waiting up to `timeout` for the first request; [] if none came)."""
        with self.ready:
            if not self.waiting and not self.ready.wait_for(lambda: self.waiting, timeout):
                return []
            now = self.clock()
            self._drop_unstartable(now)
            if not self.waiting:
                return []
            front = [e[-1] for e in heapq.nsmallest(self.config.max_batch_requests, self.waiting)]
            batch = []
            for _ in range(self._cut(front, now)):
                request = self._pop()
                if request.future.set_running_or_notify_cancel():
                    batch.append(request)  # else cancelled while waiting (its client went away)
            if batch:
                self.inflight_end = now + self.cost.predict(step_work(batch))
            return batch
