"""GREngine: the GR serving engine behind the CLI, the evaluator and the HTTP server.

Requests are accepted from any thread (`submit` returns a Future; `submit_async` awaits it). A step
thread runs batches to completion (fixed step); with overlap on, a second thread forms and prepares the
next batch while the current one computes (torch releases the GIL inside its kernels), handing it over
through a one-slot queue so at most one prepared batch waits. It forms a batch early only when the
waiting requests already fill one; otherwise it waits until the step thread is free, so that requests
arriving meanwhile still join the next batch instead of waiting for the one after.

A thread that dies (an error outside the per-batch handling) fails the engine: `failure` says why, every
waiting and running request fails with EngineFailed, and `submit` raises it (see engine/failure.py)."""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Callable

from grserve.bundle import GRBundle
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.engine.compute_threads import run_compute, thread_count
from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.core_loan import CoreLoan
from grserve.engine.failure import EngineFailed, guarded, settle
from grserve.engine.gr.model_runner import BatchBeams, GRModelRunner, PreparedBatch
from grserve.engine.gr.request import GRRequest, GRResult
from grserve.engine.gr.scheduler import FixedStepScheduler
from grserve.engine.gr.step_plan import step_work
from grserve.errors import InvalidRequest


class GREngine:
    def __init__(self, bundle: GRBundle, config: EngineConfig | None = None):
        self.bundle = bundle
        self.config = config or EngineConfig()
        self.scheduler = FixedStepScheduler(self.config)
        self.runner: GRModelRunner | None = None
        self._runner_ready = threading.Event()
        self._runner_error: Exception | None = None
        self._prepared: queue.Queue[PreparedBatch] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._idle = threading.Event()  # the step thread waits for a batch
        # Called on the step thread after every batch (metrics); must be quick and must not raise.
        self.step_hooks: list[Callable[[PreparedBatch, BatchBeams], None]] = []
        self.running_requests = self.running_rows = 0
        # Set while other CPU work of this server runs (the catalog process building a version): steps then run
        # on one torch thread fewer (engine/gr/core_loan.py).
        self.lend_core = CoreLoan()
        self.failure: str | None = None  # why the engine stopped serving, once a thread died
        self._lock = threading.Lock()  # orders `_die` against requests being taken into `_started`
        self._started: dict[int, GRRequest] = {}  # taken from the queue, not yet answered (by request_id)
        loops = [(self._step_loop, "gr-step")] + ([(self._prepare_loop, "gr-prepare")] if self.config.overlap else [])
        self._threads = [threading.Thread(target=guarded(loop, self._die), name=name, daemon=True)
                         for loop, name in loops]
        for t in self._threads:
            t.start()
        self._runner_ready.wait()
        if self._runner_error is not None or self.failure is not None:
            self.shutdown()
            raise self._runner_error or EngineFailed(self.failure)

    @property
    def catalog(self) -> CatalogSnapshot:
        """Catalog version 0, the bundle's item table (built on the step thread with the runner): what a request
        naming no version is answered on, and the base a live catalog starts from."""
        return self.runner.catalog

    def validate(self, request: GRRequest) -> None:
        if not 1 <= request.beam_width <= self.config.max_beam_width:
            raise InvalidRequest("beam_width", f"must be in [1, {self.config.max_beam_width}], got {request.beam_width}")
        if not 1 <= request.top_n <= request.beam_width:
            raise InvalidRequest("top_n", f"must be in [1, beam_width={request.beam_width}], got {request.top_n}")
        if not request.prompt:
            raise InvalidRequest("prompt", "must hold at least the <bos> token")
        if min(request.prompt) < 0 or max(request.prompt) >= self.bundle.vocab.size:
            raise InvalidRequest("prompt", f"tokens must lie in [0, {self.bundle.vocab.size})")
        if len(request.prompt) > self.config.max_batch_prompt_tokens:
            raise InvalidRequest("prompt", f"{len(request.prompt)} tokens exceed max_batch_prompt_tokens")

    def submit(self, request: GRRequest):
        self.validate(request)
        if self.failure is not None:
            raise EngineFailed(self.failure)
        if self._stop.is_set():
            raise RuntimeError("engine is shut down")
        self.scheduler.add(request)  # raises EngineFailed too when the engine died since
        return request.future

    async def submit_async(self, request: GRRequest) -> GRResult:
        """Awaits the result; if the awaiting task is cancelled (client gone, deadline hit) while the
        request still waits, it is cancelled in the engine too and never starts."""
        future = self.submit(request)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    @property
    def waiting_requests(self) -> int:
        return len(self.scheduler)

    def shutdown(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        # Nothing waits forever on a stopped engine; a request a live thread still computes is left to it.
        self.scheduler.close(RuntimeError("engine is shut down"))
        if not any(t.is_alive() for t in self._threads):
            for r in list(self._started.values()):
                settle(r.future, error=RuntimeError("engine is shut down"))

    def _die(self, reason: str) -> None:
        """A thread died (logged by `guarded`): fail every waiting and running request, refuse new ones, and
        stop the other thread, which would otherwise wait for the dead one."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = reason
            started = list(self._started.values())
        self.scheduler.close(EngineFailed(reason))
        for r in started:
            settle(r.future, error=EngineFailed(reason))
        self._stop.set()
        self._runner_ready.set()

    def _take(self, requests: list[GRRequest]) -> bool:
        """Tracks scheduled requests until answered, so that a dying engine fails them; False (and failed
        already) when the engine died meanwhile."""
        with self._lock:
            if self.failure is not None:
                for r in requests:
                    settle(r.future, error=EngineFailed(self.failure))
                return False
            for r in requests:
                self._started[r.request_id] = r
                r.future.add_done_callback(lambda _, i=r.request_id: self._started.pop(i, None))
        return True

    def _next_batch(self) -> PreparedBatch | None:
        try:
            requests = self.scheduler.schedule(timeout=0.1)
        except Exception:  # logged and retried: the queued requests may still be served (death would fail all)
            logging.getLogger("grserve").exception("forming a batch failed; the requests stay queued")
            time.sleep(0.1)
            return None
        if not requests or not self._take(requests):
            return None
        try:
            return self.runner.prepare(requests)
        except Exception as e:  # a batch that cannot be prepared fails its requests, never the engine
            for r in requests:
                settle(r.future, error=e)
            return None

    def _prepare_loop(self) -> None:
        self._runner_ready.wait()
        while not self._stop.is_set() and self._runner_error is None:
            if not (self._idle.is_set() or self.scheduler.full_batch_waiting()):
                self._idle.wait(0.002)
                continue
            batch = self._next_batch()
            while batch is not None and not self._stop.is_set():
                try:
                    self._prepared.put(batch, timeout=0.1)
                    batch = None
                except queue.Full:
                    continue

    def _step_loop(self) -> None:
        # The runner (its KV and index buffers) is built on the compute thread, which uses it.
        self._step_threads = thread_count()
        try:
            self.runner = run_compute(GRModelRunner, self.bundle, self.config)
        except Exception as e:
            self._runner_error = e
        self._runner_ready.set()
        while not self._stop.is_set() and self._runner_error is None:
            if self.config.overlap:
                self._idle.set()
                try:
                    batch = self._prepared.get(timeout=0.1)
                except queue.Empty:
                    continue
                finally:
                    self._idle.clear()
            else:
                batch = self._next_batch()
                if batch is None:
                    continue
            self._step(batch)

    def _step(self, batch: PreparedBatch) -> None:
        threads = self.lend_core.step_threads(self._step_threads)
        started = time.perf_counter()
        self.running_requests, self.running_rows = len(batch.requests), batch.rows
        try:
            beams = run_compute(self.runner.run, batch, threads=threads)
        except Exception as e:  # a failed batch fails its requests, never the engine
            for r in batch.requests:
                settle(r.future, error=e)
            return
        finally:
            self.running_requests = self.running_rows = 0
            self.lend_core.step_done()
        finished = time.perf_counter()
        compute_ms = 1000 * (finished - started)
        timed = [r for r in batch.requests if r.deadline is not None]
        late = sum(finished > r.deadline for r in timed)
        self.scheduler.observe_step(step_work(batch.requests), compute_ms / 1000, late, len(timed) - late)
        for hook in self.step_hooks:
            hook(batch, beams)
        catalog = batch.catalog
        for r, f, leaves, scores in zip(batch.requests, batch.filters, beams.leaves, beams.scores):
            items = []
            for leaf, score in zip(leaves, scores):
                rows = catalog.tables.items_of_leaf(leaf)
                sid = tuple(int(c) for c in catalog.table.codes[rows[0]])
                items.extend((i, score, sid) for i in rows if catalog.available(i) and (f is None or f.keeps(i)))
                if len(items) >= r.top_n:
                    break
            settle(r.future, GRResult(items[:r.top_n], 1000 * (started - r.arrival), compute_ms,
                                      1000 * beams.prefill_s, 1000 * beams.decode_s, 1000 * beams.select_s,
                                      catalog.version, len(batch.requests)))
