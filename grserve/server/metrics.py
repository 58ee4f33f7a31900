"""Prometheus metrics of one server, named like vLLM's where they overlap (`vllm:` → `grserve:`).

Each server has its own registry, so several apps in one process (tests) never collide."""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from grserve.catalog.changes import KINDS
from grserve.catalog.live import LiveCatalog
from grserve.engine.gr_engine import GREngine
from grserve.engine.model_runner import BatchBeams, PreparedBatch
from grserve.engine.request import GRResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("grserve:http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.rejected = Counter("grserve:requests_rejected", "Requests refused by back-pressure or draining",
                                ["reason"], registry=r)
        self.timed_out = Counter("grserve:requests_timed_out", "Requests answered 504: deadline passed",
                                 registry=r)
        self.pd_pull_failures = Counter("grserve:pd_pull_failures", "KV pulls from prefill instances that failed "
                                        "(the prompt was computed here instead)", registry=r)
        self.waiting = Gauge("grserve:num_requests_waiting", "Requests in the admission queue", registry=r)
        self.running = Gauge("grserve:num_requests_running", "Requests in the batch computing now", registry=r)
        self.running_rows = Gauge("grserve:beam_rows_running", "Beam rows in the batch computing now", registry=r)
        self.kv_bytes = Gauge("grserve:kv_cache_usage_bytes", "KV bytes held by the last batch", registry=r)
        self.batch_size = Histogram("grserve:batch_size_requests", "Requests per engine step", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_rows = Histogram("grserve:batch_beam_rows", "Beam rows per engine step (each request's own)", registry=r,
                                    buckets=(64, 128, 256, 512, 1024, 2048, 4096, 8192))

        def latency(name, doc):
            return Histogram(name, doc, registry=r, buckets=LATENCY_BUCKETS)

        self.queue = latency("grserve:request_queue_time_seconds", "Time waiting before the engine step")
        self.prefill = latency("grserve:request_prefill_time_seconds", "Prefill time of the request's step")
        self.decode = latency("grserve:request_decode_time_seconds", "Decode time of the request's step")
        self.select = latency("grserve:beam_selection_time_seconds", "Beam selection time of the request's step")
        self.e2e = latency("grserve:e2e_request_latency_seconds", "End-to-end latency of answered requests")

    def watch_llm(self, engine: Callable[[], object]) -> None:
        """Export the LLM engine's own counters at scrape time; `engine()` is None until it has loaded."""
        self.registry.register(_LLMCollector(engine))

    def attach(self, engine: GREngine) -> None:
        """Read the engine's gauges at scrape time and observe every engine step (once it has loaded)."""
        self.waiting.set_function(lambda: engine.waiting_requests)
        self.running.set_function(lambda: engine.running_requests)
        self.running_rows.set_function(lambda: engine.running_rows)
        engine.step_hooks.append(self.on_step)
        self.registry.register(_AdmissionCollector(engine))

    def attach_catalog(self, catalog: LiveCatalog) -> None:
        """Read the live catalog's version, size and changes at scrape time."""
        self.registry.register(_CatalogCollector(catalog))

    def on_step(self, batch: PreparedBatch, beams: BatchBeams) -> None:
        self.batch_size.observe(len(batch.requests))
        self.batch_rows.observe(batch.rows)
        self.kv_bytes.set(beams.kv_bytes)

    def on_result(self, result: GRResult, total_s: float) -> None:
        self.queue.observe(result.queue_ms / 1000)
        self.prefill.observe(result.prefill_ms / 1000)
        self.decode.observe(result.decode_ms / 1000)
        self.select.observe(result.select_ms / 1000)
        self.e2e.observe(total_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LLMCollector:
    """The LLM engine's counters and cache use, read when scraped (the engine keeps them as plain ints)."""

    def __init__(self, engine: Callable[[], object]):
        self.engine = engine

    def collect(self):
        engine = self.engine()
        if engine is None:
            return
        blocks = engine.blocks
        for name, doc, value in (
                ("grserve:prompt_tokens_computed", "LLM tokens whose KV this instance computed",
                 engine.num_computed_tokens),
                ("grserve:prefix_cache_hit_blocks", "Prompt blocks served by the prefix cache", blocks.hits),
                ("grserve:prefix_cache_miss_blocks", "Prompt blocks computed afresh", blocks.misses),
                ("grserve:pd_imported_blocks", "KV blocks adopted from prefill instances",
                 engine.num_imported_blocks),
                ("grserve:spec_decode_num_draft_tokens", "Speculative tokens proposed", engine.num_draft_tokens),
                ("grserve:spec_decode_num_accepted_tokens", "Speculative tokens accepted",
                 engine.num_accepted_tokens)):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("grserve:gpu_cache_usage_perc", "Share of KV blocks in use (as vLLM names it)",
                                value=blocks.blocks_in_use / blocks.num_blocks)


class _AdmissionCollector:
    """The GR scheduler's admission counters, read when scraped."""

    def __init__(self, engine: GREngine):
        self.engine = engine

    def collect(self):
        s = self.engine.scheduler
        for name, doc, value in (
                ("grserve:requests_refused_deadline", "GR requests refused at admission (429): the queue ahead "
                 "would answer them after their deadline", s.refused),
                ("grserve:requests_dropped_early", "Waiting GR requests answered 504 at once: their deadline can no "
                 "longer be met", s.dropped),
                ("grserve:requests_admitted_late", "Admitted GR requests whose step ended after their deadline "
                 "(the step-cost model widens its margin on each)", s.cost.late)):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("grserve:step_cost_margin", "Safety margin on the step-cost model's predictions",
                                value=s.cost.margin)


class _CatalogCollector:
    """The live catalog's current version and size, and the changes this process applied, read when scraped."""

    def __init__(self, catalog: LiveCatalog):
        self.catalog = catalog

    def collect(self):
        current = self.catalog.current
        for name, doc, value in (
                ("grserve:catalog_version", "Version of the live catalog requests are answered on", current.version),
                ("grserve:catalog_items", "Items in the catalog, disabled ones included", len(current.table)),
                ("grserve:catalog_disabled_items", "Items disabled (out of stock): in no answer",
                 len(current.disabled))):
            yield GaugeMetricFamily(name, doc, value=value)
        changes = CounterMetricFamily("grserve:catalog_changes", "Catalog changes applied by this process, by kind",
                                      labels=["kind"])
        for kind in KINDS:
            changes.add_metric([kind], self.catalog.applied[kind])
        yield changes
