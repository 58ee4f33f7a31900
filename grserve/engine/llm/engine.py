"""LLMEngine: open-ended text generation over a Hugging Face model directory.

Requests (token ids + SamplingParams) are accepted from any thread; a step thread runs the loop
schedule → prepare → forward → sample → postprocess (stop conditions, detokenized deltas) and hands each
request's outputs to its own queue, which `generate` (async) or `generate_sync` read. `n > 1` runs n
sequences that share the prompt's KV blocks through the prefix cache.

With overlap on, the loop is split over two threads: the host thread schedules and prepares step i+1 and
postprocesses step i while the compute thread runs step i+1's forward; step i+1 takes its decode tokens from
step i's sampled ones on the device, and samples only once step i is postprocessed (its penalties and
finished sequences depend on it). A sequence that step i finishes wastes its row in step i+1, as in vLLM's
async scheduling. Speculation needs each step's accepted count before the next is scheduled, so it runs
without overlap.

A failed step fails its requests only; a thread that dies (an error outside that handling) fails the engine:
`failure` says why, every request fails with EngineFailed, new ones are refused (see engine/failure.py)."""
from __future__ import annotations

import asyncio
import functools
import itertools
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from grserve.engine.compute_threads import run_compute
from grserve.engine.llm.config import LLMEngineConfig
from grserve.engine.failure import EngineFailed, guarded, settle
from grserve.engine.llm.beam import beam_search
from grserve.engine.llm.output import CompletionDelta, LLMRequest, next_delta
from grserve.engine.llm.prefix_transfer import PrefixTransfer
from grserve.engine.llm.model_runner import LLMModelRunner, PreparedStep
from grserve.engine.llm.scheduler import LLMScheduler, LLMSchedulerConfig
from grserve.engine.llm.step_sampling import StepResult, next_draft, sample_step, speculable
from grserve.engine.llm.sequence import ONLINE, Sequence
from grserve.engine.llm.weights import load_for_steps
from grserve.kv.llm.block_manager import BlockManager
from grserve.kv.llm.transfer import KVBlocks
from grserve.model.compiled import compile_layers
from grserve.model.loader import stored_dtype
from grserve.model.precision import compute_dtype
from grserve.model.tokenizer import IncrementalDetokenizer, load_tokenizer
from grserve.sampling.params import SamplingParams
from grserve.sampling.sampler import Sampler, make_generator

_request_ids = itertools.count()


@dataclass
class _InFlight:
    step: PreparedStep
    computed: threading.Event = field(default_factory=threading.Event)
    postprocessed: threading.Event = field(default_factory=threading.Event)
    result: StepResult | None = None


class LLMEngine:
    def __init__(self, model_dir: str | Path, config: LLMEngineConfig | None = None):
        self.config = c = config or LLMEngineConfig()
        # int8 linears take float32 activations: `auto` then means float32.
        self.dtype = dtype = (torch.float32 if c.quantization == "int8"
                              else compute_dtype(c.dtype, stored_dtype(model_dir), c.device))
        self.model = load_for_steps(model_dir, c, dtype)
        self.tokenizer = load_tokenizer(model_dir)
        mc = self.model.config
        self.draft_model = load_for_steps(c.draft_model, c, dtype) if c.draft_model else None
        if self.draft_model is not None and self.draft_model.config.vocab_size != mc.vocab_size:
            raise ValueError(f"draft_model: vocabulary of {self.draft_model.config.vocab_size} tokens differs from "
                             f"the model's {mc.vocab_size}")
        self.max_model_len = c.max_model_len or mc.max_position_embeddings
        self.eos_token_id = mc.eos_token_id if mc.eos_token_id is not None else self.tokenizer.eos_token_id
        self.blocks = BlockManager.from_budget(c.kv_cache_bytes, c.block_size, mc.num_hidden_layers,
                                               mc.num_key_value_heads, mc.head_dim, dtype, c.prefix_caching)
        self.scheduler = LLMScheduler(LLMSchedulerConfig(c.max_num_batched_tokens, c.max_num_seqs, c.chunked_prefill),
                                      self.blocks)
        self.runner: LLMModelRunner | None = None
        self._runner_ready = threading.Event()
        self.sampler = Sampler()
        self.requests: dict[int, LLMRequest] = {}  # by seq_id
        self.beam_requests: list[LLMRequest] = []  # use_beam_search: each runs whole in one step
        self.lock = threading.Lock()
        self.transfer = PrefixTransfer(self.blocks, self.lock)  # KV from prefill instances, adopted between steps
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.failure: str | None = None  # why the engine stopped serving, once a thread died
        self.open_beams: dict[int, LLMRequest] = {}  # beam searches not yet answered (by id)
        # counters the tests and metrics read
        self.num_computed_tokens = self.num_draft_tokens = self.num_accepted_tokens = 0
        self._compute_queue: queue.Queue = queue.Queue(maxsize=2)  # with overlap: steps and beam requests
        self._start_threads()

    def _start_threads(self) -> None:
        loops = [(self._compute_loop, "llm-compute"), (self._host_loop, "llm-host")] if self.config.overlap \
            else [(self._loop, "llm-step")]
        self.threads = [threading.Thread(target=guarded(loop, self._die), name=name, daemon=True)
                        for loop, name in loops]
        for t in self.threads:
            t.start()
        self._runner_ready.wait()
        if self.failure is not None:  # the runner could not be built
            self.shutdown()
            raise EngineFailed(self.failure)

    def _refuse_if_stopped(self) -> None:
        """Raises for a dead (EngineFailed) or shut-down engine; called with the lock held."""
        if self.failure is not None:
            raise EngineFailed(self.failure)
        if self.stopped.is_set():
            raise RuntimeError("engine is shut down")

    def _die(self, reason: str) -> None:
        """A thread died (logged by `guarded`): fail every request and import, refuse new ones, and stop the
        other thread, which would otherwise wait for the dead one."""
        with self.lock:
            if self.failure is not None:
                return
            self.failure = reason
            requests = {id(r): r for r in self.requests.values()} | self.open_beams
            imports = list(self.transfer.open)
            self.requests, self.beam_requests, self.open_beams, self.transfer.pending = {}, [], {}, []
        self.stopped.set()
        self.wake.set()
        self._runner_ready.set()
        for req in requests.values():
            try:
                req.emit(EngineFailed(reason))
            except Exception:  # its consumer is gone (a closed event loop): nobody waits on it
                pass
        for future in imports:
            settle(future, error=EngineFailed(reason))

    def check(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raises ValueError ("field: reason") when the request cannot run on this model and cache."""
        if not prompt_token_ids:
            raise ValueError("prompt: must hold at least one token")
        if max(prompt_token_ids) >= self.model.config.vocab_size or min(prompt_token_ids) < 0:
            raise ValueError(f"prompt: token ids must lie in [0, {self.model.config.vocab_size})")
        if len(prompt_token_ids) + params.max_tokens > self.max_model_len:
            raise ValueError(f"max_tokens: prompt ({len(prompt_token_ids)}) + max_tokens ({params.max_tokens}) "
                             f"exceeds the model's context of {self.max_model_len}")
        blocks_needed = -(-(len(prompt_token_ids) + params.max_tokens) // self.blocks.block_size)
        if blocks_needed > self.blocks.num_blocks:
            raise ValueError(f"prompt: needs {blocks_needed} KV blocks, the cache holds {self.blocks.num_blocks}")

    def add_request(self, prompt_token_ids: list[int], params: SamplingParams, priority: int = ONLINE,
                    request_id: str | None = None, emit: Callable[[object], None] | None = None) -> LLMRequest:
        """Queues a request; its outputs go to `emit`, or to `request.outputs` (a queue) when none is given."""
        self.check(prompt_token_ids, params)
        # Beam search keeps one Sequence per returned hypothesis only as the request's bookkeeping.
        seqs = [Sequence(list(prompt_token_ids), params, priority) for _ in range(params.n)]
        gens = [make_generator(None if params.seed is None else params.seed + i) for i in range(params.n)]
        outputs = queue.Queue() if emit is None else None
        req = LLMRequest(request_id or f"req-{next(_request_ids)}", seqs, emit or outputs.put,
                         [IncrementalDetokenizer(self.tokenizer) for _ in seqs], ["" for _ in seqs], gens,
                         sent=[0 for _ in seqs], outputs=outputs)
        with self.lock:  # checked under the lock: `_die` fails exactly the requests added before it
            self._refuse_if_stopped()
            if params.use_beam_search:
                self.beam_requests.append(req)
                self.open_beams[id(req)] = req
            else:
                for s in seqs:
                    self.requests[s.seq_id] = req
                    self.scheduler.add(s)
        self.wake.set()
        return req

    def export_prefix(self, token_ids: list[int]) -> KVBlocks:
        """The KV of the leading full blocks of `token_ids` that the prefix cache holds (a prefill instance's
        answer: run the prompt first)."""
        return run_compute(self.transfer.export, self.runner.kv.kv, token_ids)

    def import_prefix(self, blocks: KVBlocks) -> Future:
        """Adopts KV blocks from a prefill instance into the prefix cache, so that a prompt starting with
        them computes only its remainder. The future gives the number of blocks written (those not held
        already). Raises ValueError ("field: reason") for blocks of another shape."""
        mc = self.model.config
        self.transfer.check(blocks, self.runner.kv.kv, mc.num_hidden_layers, mc.num_key_value_heads, mc.head_dim)
        with self.lock:
            self._refuse_if_stopped()
            future = self.transfer.add(blocks)
        self.wake.set()
        return future

    @property
    def num_imported_blocks(self) -> int:
        return self.transfer.num_imported_blocks

    def abort(self, req: LLMRequest) -> None:
        with self.lock:
            for s in req.seqs:
                if s.finish_reason is None:
                    s.cancelled = True
                    self.scheduler.finish(s, "abort")
                    self.requests.pop(s.seq_id, None)

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams, priority: int = ONLINE,
                       request_id: str | None = None):
        """Async iterator of CompletionDelta; cancelling the consumer aborts the request (client gone)."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()
        req = self.add_request(prompt_token_ids, params, priority, request_id,
                               emit=lambda d: loop.call_soon_threadsafe(deltas.put_nowait, d))
        remaining = len(req.seqs)
        try:
            while remaining:
                delta = await deltas.get()
                if isinstance(delta, Exception):
                    raise delta
                remaining -= delta.finish_reason is not None
                yield delta
        finally:
            if remaining:
                self.abort(req)

    def generate_sync(self, prompt_token_ids: list[int], params: SamplingParams) -> list[tuple[list[int], str, str]]:
        """Blocking: per sequence (token ids, text, finish reason)."""
        req = self.add_request(prompt_token_ids, params)
        tokens = [[] for _ in req.seqs]
        texts = ["" for _ in req.seqs]
        reasons: list[str | None] = [None] * len(req.seqs)
        while any(r is None for r in reasons):
            delta = req.outputs.get(timeout=600)
            if isinstance(delta, Exception):
                raise delta
            tokens[delta.index] += delta.token_ids
            texts[delta.index] += delta.text
            reasons[delta.index] = reasons[delta.index] or delta.finish_reason
        return [(t, x, r) for t, x, r in zip(tokens, texts, reasons)]

    def shutdown(self) -> None:
        self.stopped.set()
        self.wake.set()
        for t in self.threads:
            t.join(timeout=10)

    def _run_beam_search(self, req: LLMRequest) -> None:
        p = req.seqs[0].params
        try:
            hypotheses = run_compute(beam_search, self.model, req.seqs[0].prompt_token_ids, p.best_of or p.n, p.n,
                                     p.max_tokens, self.eos_token_id, p.ignore_eos, p.length_penalty)
        except Exception as e:
            hypotheses = e
        with self.lock:
            if self.open_beams.pop(id(req), None) is None:
                return  # the engine died meanwhile and failed it
        if isinstance(hypotheses, Exception):
            req.emit(hypotheses)
            return
        for index in range(len(req.seqs)):
            tokens, _, reason = hypotheses[index] if index < len(hypotheses) else ([], 0.0, "stop")
            req.emit(CompletionDelta(index, self.tokenizer.decode(tokens, skip_special_tokens=True), tokens, [],
                                     reason))

    def _build_runner(self) -> None:
        # On the compute thread, which allocates the KV storage it computes with (as the GR engine's runner).
        self.runner = run_compute(self._make_runner)
        self._runner_ready.set()

    def _make_runner(self) -> LLMModelRunner:
        if self.config.compile:
            for model in filter(None, (self.model, self.draft_model)):
                compile_layers(model)
        return LLMModelRunner(self.model, self.blocks, self.config.device, self.config.decode_mirror_bytes)

    def _next_beam_request(self) -> LLMRequest | None:
        with self.lock:
            return self.beam_requests.pop(0) if self.beam_requests else None

    def _schedule(self, previous: _InFlight | None) -> _InFlight | None:
        """Schedules and prepares the next step (on the host); `previous` is the step still computing."""
        with self.lock:
            step = self.scheduler.schedule() if self.scheduler.has_work() else None
            if not step or not step.seqs:
                return None
            self.num_computed_tokens += sum(step.num_tokens)
            return _InFlight(self.runner.prepare(step.seqs, step.num_tokens, previous and previous.step))

    def _idle(self) -> None:
        self.wake.wait(0.05)
        self.wake.clear()

    def _loop(self) -> None:
        """Without overlap: one thread, each step whole before the next is scheduled."""
        self._build_runner()
        while not self.stopped.is_set():
            for write in self.transfer.adopt(self.runner.kv.kv):
                run_compute(write)
            beam = self._next_beam_request()
            if beam is not None:
                self._run_beam_search(beam)
                continue
            work = self._schedule(None)
            if work is None:
                self._idle()
                continue
            self._compute(work, None)
            self._postprocess(work)

    def _host_loop(self) -> None:
        self._runner_ready.wait()
        in_flight: _InFlight | None = None
        while not self.stopped.is_set():
            for write in self.transfer.adopt(self.runner.kv.kv):
                self._put(write)
            beam = self._next_beam_request()
            if beam is not None:
                self._put(beam)
            work = self._schedule(in_flight)
            if work is not None and not self._put(work):
                return
            if in_flight is not None:
                while not in_flight.computed.wait(0.1):
                    if self.stopped.is_set():
                        return
                self._postprocess(in_flight)
            elif work is None and beam is None:
                self._idle()
            in_flight = work

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self._compute_queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _compute_loop(self) -> None:
        self._build_runner()
        previous: _InFlight | None = None
        while not self.stopped.is_set():
            try:
                item = self._compute_queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, LLMRequest):
                self._run_beam_search(item)
            elif isinstance(item, functools.partial):
                run_compute(item)
            else:
                self._compute(item, previous)
                previous = item

    def _compute(self, work: _InFlight, previous: _InFlight | None) -> None:
        """Forward and sampling of one step (on the compute thread); sets `work.computed`."""
        try:
            if work.step.fill_at and (previous is None or previous.result.sampled is None):
                raise RuntimeError("the step this one continues failed")
            logits = run_compute(self.runner.execute, work.step, previous.result.sampled if previous else None)
            if previous is not None:  # sampling reads the histories and finish states that step completes
                while not previous.postprocessed.wait(0.1):
                    if self.stopped.is_set():
                        return
            work.result = run_compute(sample_step, work.step, logits, self.sampler, self.requests, self.eos_token_id)
            self.num_draft_tokens += work.result.drafted
            self.num_accepted_tokens += work.result.accepted
        except Exception as e:  # a failed step fails its requests, never the engine
            work.result = StepResult(error=e)
        # Not in a `finally`: a death here (BaseException) must leave the step unfinished, so the host thread
        # waits until the engine has failed with this thread's reason, instead of postprocessing no result.
        work.computed.set()

    def _postprocess(self, work: _InFlight) -> None:
        """Appends each ready sequence's tokens, checks its stop conditions, emits deltas and proposes the next
        drafts (on the host); sets `work.postprocessed`."""
        step, result = work.step, work.result
        with self.lock:
            for seq in step.ready:
                seq.num_pending -= 1  # the next step, in flight, may hold one more
            if result.error is not None:
                for seq in step.seqs:
                    req = self.requests.pop(seq.seq_id, None)
                    if seq.finish_reason is None:
                        self.scheduler.finish(seq, "error")
                    if req:
                        req.emit(result.error)
            else:
                for seq, draft, tokens, lp, top in zip(step.ready, step.drafts, result.tokens, result.logprobs,
                                                       result.tops):
                    if draft:  # KV of the rejected draft tail stays until overwritten: not counted as computed
                        seq.draft = []
                        seq.num_computed_tokens -= len(draft) - (len(tokens) - 1)
                    req = self.requests.get(seq.seq_id)
                    for token in tokens:
                        if req is None or seq.finish_reason is not None:
                            break  # aborted or finished while computing
                        self._append(seq, req, token, lp, top)
                k = self.config.speculative_tokens
                for seq in step.ready:
                    if seq.finish_reason is None and speculable(seq, k):
                        seq.draft = next_draft(seq, k, self.draft_model, self.max_model_len)
        work.postprocessed.set()

    def _append(self, seq: Sequence, req: LLMRequest, token: int, logprob: float, top: list) -> None:
        delta = next_delta(seq, req, token, logprob, top, self.eos_token_id, self.max_model_len)
        if delta.finish_reason:
            self.scheduler.finish(seq, delta.finish_reason)
            self.requests.pop(seq.seq_id, None)
        req.emit(delta)
