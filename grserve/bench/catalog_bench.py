"""`grserve bench catalog`: live catalog changes under a steady load, on the synthetic 1,000,000-item catalog.

A real `grserve serve` (admin token, its own state directory) answers an open-loop load of random histories
at half its measured peak. Meanwhile the benchmark disables 10,000 random items, then adds 10,000 new items
with SIDs, each through the admin API, a few seconds apart. For each change it reports how long the change
took to be acknowledged (after which every new request is answered on the new version), whether any answer
sent after the acknowledgement still used an older version or returned a disabled item, how much longer the
engine steps that ran during the change (and in the half second after, the new version's first steps) took
than steps of the same batch size took under the steady load before it (the issue's bound: no step delayed by
more than one step's time), and how much later the requests in flight were answered than the slowest of the
steady load (queueing behind a slow step and the HTTP work of the change included).

A step answers its whole batch: an answer's `timing_ms.compute` is its step's time and `usage.batch_requests`
its batch size, so the answers give every step once. A step's expected time is a line in its batch size fitted
to the steady load's steps; a step is delayed by more than one step's time when it took over twice that. The
same count over the steady load itself says how often that happens with no change at all."""
from __future__ import annotations

import asyncio
import collections
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import aiohttp
import httpx
import numpy as np
from tqdm import tqdm

from grserve.bench.loadgen import open_loop, saturate
from grserve.bench.machine import machine_info
from grserve.bench.scaling import _wait, stop
from grserve.bench.workloads import synthetic_model_dir
from grserve.items.item_table import ItemTable
from grserve.service.etcd_server import _free_port

TOKEN = "bench-catalog-admin"


@dataclass
class CatalogBenchOptions:
    items: int = 1_000_000  # the synthetic catalog
    layers: int = 4  # a small model: what is measured is the catalog, not the forward
    hidden: int = 128
    changes: int = 10_000  # items disabled, then items added
    beam_width: int = 64
    history: int = 20  # items per request's history
    load_share: float = 0.5  # the steady load, as a share of the measured peak
    gap_s: float = 5.0  # steady load before the first change, between changes, and after the last
    timeout_ms: int = 5000
    peak_requests: int = 32
    seed: int = 0
    # where the catalog's changes run: its own process (the default for large catalogs) and, as the baseline,
    # the serving process (--no-catalog-process)
    modes: tuple[str, ...] = ("process", "in-process")
    repeats: int = 1  # rounds of every mode
    out_dir: str = "benchmarks/results"


@dataclass
class Answer:
    sent: float  # perf_counter seconds
    done: float
    status: int
    version: int | None
    items: list[str]
    compute_ms: float | None
    batch: int | None  # requests its step answered


class Server:
    """One `grserve serve` over the synthetic model, with the admin API on and a throwaway state directory."""

    def __init__(self, model_dir, opts: CatalogBenchOptions, mode: str):
        self.state = tempfile.TemporaryDirectory(prefix="grserve-catalog-bench-")
        self.url = f"http://127.0.0.1:{_free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grserve", "serve", "--model", str(model_dir), "--port", port,
             "--admin-token", TOKEN, "--state-dir", self.state.name, "--default-timeout-ms", str(opts.timeout_ms),
             "--max-beam-width", str(max(opts.beam_width, 64)),
             "--catalog-process" if mode == "process" else "--no-catalog-process"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(self._healthy, 600, "grserve serve to load the synthetic catalog")
        except BaseException:
            self.close()
            raise

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:  # dead: fail now, not after the whole wait
            raise RuntimeError(f"grserve serve exited {self.proc.returncode} before serving")
        return httpx.get(self.url + "/health", timeout=5).status_code == 200

    def close(self) -> None:
        stop(self.proc)
        self.state.cleanup()


def _payloads(table: ItemTable, opts: CatalogBenchOptions, n: int = 256) -> list[dict]:
    rng = random.Random(opts.seed)
    return [{"history": [table.raw_ids[rng.randrange(len(table))] for _ in range(opts.history)],
             "beam_width": opts.beam_width, "top_n": 10} for _ in range(n)]


def _changes(table: ItemTable, opts: CatalogBenchOptions) -> tuple[list[str], list[dict]]:
    """Items to disable (random existing ones) and items to add (new ids; SIDs of random existing items, so
    they share the trie's paths the model already ranks, and random third codes)."""
    rng = np.random.default_rng(opts.seed + 1)
    disable = [table.raw_ids[i] for i in rng.choice(len(table), opts.changes, replace=False)]
    like = rng.choice(len(table), opts.changes)
    codes = table.codes[like].copy()
    codes[:, -1] = rng.integers(0, table.codebook_size, opts.changes)
    added = [{"item_id": f"new-{i}", "semantic_id": [int(c) for c in sid]} for i, sid in enumerate(codes)]
    return disable, added


async def _load(session, url: str, payloads: list[dict], rate: float, seconds: float, answers: list[Answer]):
    async def send(i: int):
        sent = time.perf_counter()
        async with session.post(url + "/v1/recommend", json=payloads[i % len(payloads)]) as r:
            body = await r.json()
        ok = r.status == 200
        answers.append(Answer(sent, time.perf_counter(), r.status, body.get("catalog_version") if ok else None,
                              [i["item_id"] for i in body["items"]] if ok else [],
                              body["timing_ms"]["compute"] if ok else None,
                              body["usage"]["batch_requests"] if ok else None))
    await open_loop(send, rate, int(3 * rate * seconds) + 10, seconds, timeout=60)


async def _admin(session, url: str, method: str, path: str, body: bytes) -> dict:
    sent = time.perf_counter()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with session.request(method, url + path, data=body, headers=headers) as r:
        answer = await r.json()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.status}: {answer}")
    return {"sent": sent, "acked": time.perf_counter(), "version": answer["version"]}


async def _timeline(url: str, payloads, rate: float, disable, added, opts: CatalogBenchOptions):
    answers: list[Answer] = []
    # Encoded before the load starts: the load generator shares the server's cores here, and encoding 10,000
    # items at the moment of sending took a core from a running step (an admin client runs elsewhere).
    disable_body, add_body = json.dumps({"disable": disable}).encode(), json.dumps({"items": added}).encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        load = asyncio.create_task(_load(session, url, payloads, rate, 3 * opts.gap_s, answers))
        await asyncio.sleep(opts.gap_s)
        changes = {"disable": await _admin(session, url, "POST", "/v1/catalog/availability", disable_body)}
        await asyncio.sleep(max(0.0, opts.gap_s - (time.perf_counter() - changes["disable"]["sent"])))
        changes["add"] = await _admin(session, url, "POST", "/v1/catalog/items", add_body)
        await load
    return answers, changes


def _window(answers: list[Answer], start: float, end: float) -> list[Answer]:
    """Answers in flight at some moment of [start, end]."""
    return [a for a in answers if a.sent <= end and a.done >= start]


def _latency_ms(answers: list[Answer]) -> dict:
    lat = np.array([1000 * (a.done - a.sent) for a in answers]) if answers else np.zeros(0)
    return {"requests": len(answers), **({"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                          "max": float(lat.max())} if len(lat) else {})}


def _steps(answers: list[Answer]) -> list[tuple[float, int]]:
    """(compute ms, batch size) of every step the answers came from, once each."""
    return sorted({(a.compute_ms, a.batch) for a in answers if a.compute_ms is not None and a.batch})


def step_delays(steps: list[tuple[float, int]], fit: np.ndarray | None) -> dict:
    """How the steps compare with `fit` (ms = fit[0] * batch + fit[1]): the longest, the largest ratio to the
    expected time, and the steps delayed by more than one step's time (over twice the expected); with no fit
    (no steady steps to fit), the longest only."""
    if not steps or fit is None:
        return {"steps": len(steps), "max_step_ms": max((ms for ms, _ in steps), default=None), "max_ratio": None,
                "delayed_over_one_step": None}
    ms, batch = np.array(steps).T
    ratio = ms / np.maximum(np.polyval(fit, batch), 1e-3)
    return {"steps": len(steps), "max_step_ms": float(ms.max()), "max_ratio": round(float(ratio.max()), 2),
            "delayed_over_one_step": int((ratio > 2).sum())}


def step_fit(steps: list[tuple[float, int]]) -> np.ndarray | None:
    """A step's expected ms as a line in its batch size, least squares over `steps` (flat when one size only;
    None when there are none)."""
    if not steps:
        return None
    ms, batch = np.array(steps).T
    return np.polyfit(batch, ms, 1) if len(set(batch)) > 1 else np.array([0.0, float(np.median(ms))])


def analyse(answers: list[Answer], changes: dict, disabled: set[str], added: set[str], settle_s: float = 0.5) -> dict:
    first = min(c["sent"] for c in changes.values())
    steady = [a for a in answers if a.done < first and a.status == 200]
    step_ms = float(np.median([a.compute_ms for a in steady])) if steady else None
    base = _latency_ms(steady)
    steady_steps = _steps(steady)
    fit = step_fit(steady_steps)
    out = {"failed": sum(a.status != 200 for a in answers), "answers": len(answers),
           "failed_by_status": dict(collections.Counter(str(a.status) for a in answers if a.status != 200)),
           "steady": base, "step_ms_median": step_ms,
           "step_fit_ms": {"per_request": round(float(fit[0]), 3), "fixed": round(float(fit[1]), 3)}
           if fit is not None else None,
           "steady_steps": step_delays(steady_steps, fit), "changes": {}}
    out["steady"]["max_step_ms"] = max((a.compute_ms for a in steady), default=None)
    for name, c in changes.items():
        after = [a for a in answers if a.sent >= c["acked"] and a.status == 200]
        window = _window(answers, c["sent"], c["acked"])
        during = _latency_ms(window)
        steps = step_delays(_steps(_window(answers, c["sent"], c["acked"] + settle_s)), fit)
        out["changes"][name] = {
            "ack_ms": 1000 * (c["acked"] - c["sent"]), "version": c["version"],
            "answers_after_ack": len(after),
            "older_version_after_ack": sum(a.version < c["version"] for a in after),
            "in_flight": during, "max_delay_over_steady_ms": during.get("max", 0.0) - base.get("max", 0.0),
            "steps": steps, "delay_within_one_step": steps["delayed_over_one_step"] == 0 if fit is not None else None,
        }
    after_disable = [a for a in answers if a.sent >= changes["disable"]["acked"]]
    out["changes"]["disable"]["disabled_items_returned"] = sum(bool(disabled & set(a.items)) for a in after_disable)
    after_add = [a for a in answers if a.sent >= changes["add"]["acked"]]
    out["changes"]["add"]["answers_with_new_items"] = sum(bool(added & set(a.items)) for a in after_add)
    return out


def run_catalog_bench(opts: CatalogBenchOptions) -> dict:
    """Each catalog mode in turn (`repeats` times), under the same load: the rate is half the peak measured on
    the first server."""
    started = time.perf_counter()
    model_dir = synthetic_model_dir(opts.items, opts.layers, opts.hidden)
    table = ItemTable.load(model_dir)
    payloads = _payloads(table, opts)
    disable, added = _changes(table, opts)
    runs, rate = {mode: [] for mode in opts.modes}, None
    for _ in tqdm(range(opts.repeats), desc="catalog bench rounds"):
        for mode in opts.modes:
            server = Server(model_dir, opts, mode)
            try:
                if rate is None:
                    peak_rate = asyncio.run(_peak(server.url, payloads, opts))
                    rate = opts.load_share * peak_rate
                answers, changes = asyncio.run(_timeline(server.url, payloads, rate, disable, added, opts))
                final = httpx.get(server.url + "/v1/catalog", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            finally:
                server.close()
            runs[mode].append({"catalog_after": {k: final.get(k) for k in ("version", "items", "disabled")},
                               **analyse(answers, changes, set(disable), {a["item_id"] for a in added})})
    return {"kind": "catalog", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
            "options": asdict(opts), "peak_rate": peak_rate, "load_rate": rate, "modes": runs,
            "seconds": round(time.perf_counter() - started, 1)}


async def _peak(url: str, payloads: list[dict], opts: CatalogBenchOptions) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def send(i):
            async with session.post(url + "/v1/recommend", json=payloads[i % len(payloads)]) as r:
                r.raise_for_status()
        await saturate(send, opts.peak_requests)  # warm-up: the cost model learns the steps
        t = time.perf_counter()
        await saturate(send, opts.peak_requests)
        return opts.peak_requests / (time.perf_counter() - t)
