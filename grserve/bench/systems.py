"""The systems a benchmark compares, behind one request path: `await system.answer(prompt)` returns the
top-N SIDs, best first.

grserve runs its own GREngine (its own queue and batching, as the server does). The library baselines
(HF transformers, vLLM) have no server of their own here, so each gets a queue and one worker thread that
takes up to `max_batch` waiting prompts per call, which is how a thin serving wrapper would run them."""
from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field

from grserve.bundle import GRBundle
from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.engine import GREngine
from grserve.engine.gr.request import GRRequest

SIDs = list[tuple[int, ...]]

ABLATIONS = {
    "grserve": {},
    "grserve -separated_kv": {"separated_kv": False},
    "grserve -early_topk": {"early_topk": False},
    "grserve -trie_candidates": {"trie_candidates": False},
    "grserve +overlap": {"overlap": True},  # the engine's default is off on the CPU: measure it on
    "grserve +compile": {"compile": True},
}


def distinct_sids(items: list[tuple[int, float, tuple[int, ...]]]) -> SIDs:
    seen: dict[tuple[int, ...], None] = {}
    for _, _, sid in items:
        seen.setdefault(tuple(sid), None)
    return list(seen)


@dataclass
class GrserveSystem:
    name: str
    bundle: GRBundle
    beam_width: int
    top_n: int
    switches: dict = field(default_factory=dict)
    target_step_ms: float | None = None

    def start(self) -> None:
        rows = max(2048, self.beam_width * 4)
        self.engine = GREngine(self.bundle, EngineConfig(max_beam_width=max(512, self.beam_width),
                                                         max_batch_rows=rows, max_batch_prompt_tokens=65536,
                                                         max_queue_requests=100_000, max_queue_rows=10 ** 8,
                                                         target_step_ms=self.target_step_ms, **self.switches))

    async def answer(self, prompt: list[int]) -> SIDs:
        result = await self.engine.submit_async(GRRequest(prompt, self.beam_width, self.top_n))
        return distinct_sids(result.items)

    def close(self) -> None:
        self.engine.shutdown()
        self.engine = None  # its buffers go now, not when the next start replaces it


class QueuedBaseline:
    """A blocking `rank(prompts, W, N)` baseline behind a queue and one worker thread."""

    def __init__(self, baseline, beam_width: int, top_n: int, max_batch: int = 1):
        self.baseline, self.beam_width, self.top_n, self.max_batch = baseline, beam_width, top_n, max_batch
        self.name = baseline.name
        self.queue: queue.Queue = queue.Queue()

    def start(self) -> None:
        self.baseline.start()
        self.worker = threading.Thread(target=self._work, name=f"bench-{self.name}", daemon=True)
        self.worker.start()

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                batch.append(nxt)
            try:
                results = self.baseline.rank([p for p, _, _ in batch], self.beam_width, self.top_n)
                for (_, loop, fut), ranking in zip(batch, results):
                    loop.call_soon_threadsafe(fut.set_result, [tuple(t) for t, _ in ranking])
            except Exception as e:
                for _, loop, fut in batch:
                    loop.call_soon_threadsafe(fut.set_exception, e)

    async def answer(self, prompt: list[int]) -> SIDs:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.queue.put((prompt, loop, fut))
        return await fut

    def close(self) -> None:
        self.queue.put(None)
        self.worker.join(timeout=30)
        self.baseline.close()


def recommend_body(history: list[str], beam_width: int, top_n: int, timeout_ms: float = 60000) -> dict:
    """A /v1/recommend request of the benchmark: the history kept, so the plain constrained beam search runs."""
    return {"history": history, "top_n": top_n, "beam_width": beam_width, "exclude_history": False,
            "timeout_ms": timeout_ms}


class HttpSystem:
    """grserve behind HTTP (one instance, or a router over many): the workload's histories are posted to
    /v1/recommend with the history kept (the same plain beam search as the in-process systems)."""

    def __init__(self, name: str, url: str, beam_width: int, top_n: int, histories: list[list[str]]):
        self.name, self.url, self.beam_width, self.top_n = name, url.rstrip("/"), beam_width, top_n
        self.by_prompt: dict[tuple, list[str]] = {}
        self.histories = histories

    def start(self) -> None:
        self.clients: dict = {}  # one client per event loop: the benchmark runs each phase in a fresh loop

    def bind(self, prompts: list[list[int]]) -> None:
        self.by_prompt = {tuple(p): h for p, h in zip(prompts, self.histories)}

    async def answer(self, prompt: list[int]) -> SIDs:
        body = recommend_body(self.by_prompt[tuple(prompt)], self.beam_width, self.top_n)
        import httpx
        loop = asyncio.get_running_loop()
        if loop not in self.clients:
            self.clients[loop] = httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=256))
        r = await self.clients[loop].post(self.url + "/v1/recommend", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        return distinct_sids([(0, 0.0, tuple(i["semantic_id"])) for i in r.json()["items"]])

    def close(self) -> None:
        self.clients.clear()  # their loops are closed already; the sockets go with them
