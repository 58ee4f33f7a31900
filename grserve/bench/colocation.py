"""`grserve bench colocation`: online latency with and without a saturating offline load on one engine.

Online requests arrive open-loop at a fixed rate; the offline load keeps a backlog of offline-priority
requests queued for the whole run (each one that completes is replaced), which is more than the engine
can serve. Reported: online P50/P99 alone and beside the offline load, their ratio, and how much offline
work still completed."""
from __future__ import annotations

import asyncio
import time

from grserve.bench.loadgen import open_loop, summarize
from grserve.bench.machine import machine_info
from grserve.bench.systems import GrserveSystem
from grserve.bench.workloads import movielens_workload
from grserve.bundle import GRBundle
from grserve.engine.gr.config import step_target_ms
from grserve.engine.gr.request import GRRequest


async def _with_offline(system: GrserveSystem, prompts, online_rate: float, duration: float, backlog: int):
    stop, done = asyncio.Event(), [0]

    async def offline_worker(i: int):
        while not stop.is_set():
            await system.engine.submit_async(GRRequest(prompts[i % len(prompts)], system.beam_width,
                                                       system.top_n, priority=1))
            done[0] += 1
            i += backlog

    workers = [asyncio.create_task(offline_worker(i)) for i in range(backlog)]
    await asyncio.sleep(1.0)  # let the backlog build before measuring
    online = await open_loop(lambda i: system.answer(prompts[i % len(prompts)]), online_rate,
                             int(online_rate * duration) + 1, duration, seed=1)
    stop.set()
    await asyncio.gather(*workers)
    return online, done[0]


def run_colocation(online_rate: float = 20.0, duration_s: float = 8.0, backlog: int = 64,
                   slo_ms: float = 200.0) -> dict:
    workload = movielens_workload()
    system = GrserveSystem("grserve", GRBundle.load(workload.model_dir), workload.beam_width, workload.top_n,
                           target_step_ms=step_target_ms(slo_ms))
    system.start()
    try:
        send = (lambda i: system.answer(workload.prompts[i % len(workload.prompts)]))
        asyncio.run(open_loop(send, online_rate, 20, 1.0))  # warm-up: the step-time model learns
        alone = summarize(asyncio.run(open_loop(send, online_rate, int(online_rate * duration_s) + 1, duration_s,
                                                seed=1)), online_rate)
        started = time.perf_counter()
        samples, offline_done = asyncio.run(_with_offline(system, workload.prompts, online_rate, duration_s, backlog))
        mixed = summarize(samples, online_rate)
        elapsed = time.perf_counter() - started
    finally:
        system.close()
    return {"kind": "colocation", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "workload": workload.name, "online_rate": online_rate, "duration_s": duration_s,
            "offline_backlog": backlog, "online_alone": alone, "online_with_offline": mixed,
            "p99_ratio": mixed["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] and mixed["p99_ms"] else None,
            "offline_completed": offline_done, "offline_per_s": offline_done / elapsed}
