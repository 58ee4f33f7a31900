"""Prometheus metrics of one server, named like vLLM's where they overlap (`vllm:` → `grserve:`).

Every metric of a model's engine, catalog or requests carries a `model` label (its served name); the HTTP
counters go by endpoint, counted at the gate before the body names a model. Each server has its own registry,
so several apps in one process (tests) never collide."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from grserve.catalog.changes import KINDS
from grserve.engine.gr.model_runner import BatchBeams, PreparedBatch
from grserve.engine.gr.request import GRResult
from grserve.server.model_spec import GR
from grserve.server.served import ServedModel

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("grserve:http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.rejected = Counter("grserve:requests_rejected", "Requests refused by back-pressure or draining (model "
                                "\"\" while draining: refused before a model is read)", ["model", "reason"],
                                registry=r)
        self.timed_out = Counter("grserve:requests_timed_out", "Requests answered 504: deadline passed", ["model"],
                                 registry=r)
        self.pd_pull_failures = Counter("grserve:pd_pull_failures", "KV pulls from prefill instances that failed "
                                        "(the prompt was computed here instead)", registry=r)
        self.kv_bytes = Gauge("grserve:kv_cache_usage_bytes", "KV bytes held by the last batch", ["model"],
                              registry=r)
        self.batch_size = Histogram("grserve:batch_size_requests", "Requests per engine step", ["model"], registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_rows = Histogram("grserve:batch_beam_rows", "Beam rows per engine step (each request's own)",
                                    ["model"], registry=r, buckets=(64, 128, 256, 512, 1024, 2048, 4096, 8192))

        def latency(name, doc):
            return Histogram(name, doc, ["model"], registry=r, buckets=LATENCY_BUCKETS)

        self.queue = latency("grserve:request_queue_time_seconds", "Time waiting before the engine step")
        self.prefill = latency("grserve:request_prefill_time_seconds", "Prefill time of the request's step")
        self.decode = latency("grserve:request_decode_time_seconds", "Decode time of the request's step")
        self.select = latency("grserve:beam_selection_time_seconds", "Beam selection time of the request's step")
        self.e2e = latency("grserve:e2e_request_latency_seconds", "End-to-end latency of answered requests")
        self._models: dict[str, ServedModel] = {}  # the models scraped, by name
        r.register(_GRCollector(self._models))
        r.register(_LLMCollector(self._models))

    def attach(self, model: ServedModel) -> None:
        """Scrape `model`'s engine and catalog, and observe every step of its GR engine."""
        self._models[model.name] = model
        if model.recommender is not None:
            model.recommender.engine.step_hooks.append(lambda batch, beams: self.on_step(model.name, batch, beams))

    def detach(self, name: str) -> None:
        """Stops scraping an unloaded model: its gauges go; its counters and histograms stay, as cumulative
        series do (one that vanished and came back would read as a reset)."""
        self._models.pop(name, None)
        try:
            self.kv_bytes.remove(name)
        except KeyError:  # it never ran a step
            pass

    def on_step(self, model: str, batch: PreparedBatch, beams: BatchBeams) -> None:
        self.batch_size.labels(model).observe(len(batch.requests))
        self.batch_rows.labels(model).observe(batch.rows)
        self.kv_bytes.labels(model).set(beams.kv_bytes)

    def on_result(self, model: str, result: GRResult, total_s: float) -> None:
        self.queue.labels(model).observe(result.queue_ms / 1000)
        self.prefill.labels(model).observe(result.prefill_ms / 1000)
        self.decode.labels(model).observe(result.decode_ms / 1000)
        self.select.labels(model).observe(result.select_ms / 1000)
        self.e2e.labels(model).observe(total_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _gauges(models: Iterable[ServedModel], family: str, doc: str, value: Callable) -> GaugeMetricFamily:
    metric = GaugeMetricFamily(family, doc, labels=["model"])
    for m in models:
        metric.add_metric([m.name], value(m))
    return metric


def _counters(models: Iterable[ServedModel], family: str, doc: str, value: Callable) -> CounterMetricFamily:
    metric = CounterMetricFamily(family, doc, labels=["model"])
    for m in models:
        metric.add_metric([m.name], value(m))
    return metric


class _GRCollector:
    """Each GR model's queue, admission counters and live catalog, read when scraped."""

    def __init__(self, models: dict[str, ServedModel]):
        self.models = models

    def collect(self):
        models = [m for m in list(self.models.values()) if m.kind == GR]
        for name, doc, value in (
                ("grserve:num_requests_waiting", "Requests in the admission queue",
                 lambda m: m.recommender.engine.waiting_requests),
                ("grserve:num_requests_running", "Requests in the batch computing now",
                 lambda m: m.recommender.engine.running_requests),
                ("grserve:beam_rows_running", "Beam rows in the batch computing now",
                 lambda m: m.recommender.engine.running_rows),
                ("grserve:step_cost_margin", "Safety margin on the step-cost model's predictions",
                 lambda m: m.recommender.engine.scheduler.cost.margin),
                ("grserve:catalog_version", "Version of the live catalog requests are answered on",
                 lambda m: m.recommender.catalog.current.version),
                ("grserve:catalog_items", "Items in the catalog, disabled ones included",
                 lambda m: len(m.recommender.catalog.current.table)),
                ("grserve:catalog_disabled_items", "Items disabled (out of stock): in no answer",
                 lambda m: len(m.recommender.catalog.current.disabled))):
            yield _gauges(models, name, doc, value)
        for name, doc, value in (
                ("grserve:requests_refused_deadline", "GR requests refused at admission (429): the queue ahead "
                 "would answer them after their deadline", lambda m: m.recommender.engine.scheduler.refused),
                ("grserve:requests_dropped_early", "Waiting GR requests answered 504 at once: their deadline can no "
                 "longer be met", lambda m: m.recommender.engine.scheduler.dropped),
                ("grserve:requests_admitted_late", "Admitted GR requests whose step ended after their deadline "
                 "(the step-cost model widens its margin on each)", lambda m: m.recommender.engine.scheduler.cost.late)):
            yield _counters(models, name, doc, value)
        changes = CounterMetricFamily("grserve:catalog_changes", "Catalog changes applied by this process, by kind",
                                      labels=["model", "kind"])
        for m in models:
            for kind in KINDS:
                changes.add_metric([m.name, kind], m.recommender.catalog.applied[kind])
        yield changes


class _LLMCollector:
    """The LLM engine's counters and cache use, read when scraped (the engine keeps them as plain ints)."""

    def __init__(self, models: dict[str, ServedModel]):
        self.models = models

    def collect(self):
        models = [m for m in list(self.models.values()) if m.llm is not None]
        if not models:
            return
        for name, doc, value in (
                ("grserve:prompt_tokens_computed", "LLM tokens whose KV this instance computed",
                 lambda m: m.llm.num_computed_tokens),
                ("grserve:prefix_cache_hit_blocks", "Prompt blocks served by the prefix cache",
                 lambda m: m.llm.blocks.hits),
                ("grserve:prefix_cache_miss_blocks", "Prompt blocks computed afresh", lambda m: m.llm.blocks.misses),
                ("grserve:pd_imported_blocks", "KV blocks adopted from prefill instances",
                 lambda m: m.llm.num_imported_blocks),
                ("grserve:spec_decode_num_draft_tokens", "Speculative tokens proposed",
                 lambda m: m.llm.num_draft_tokens),
                ("grserve:spec_decode_num_accepted_tokens", "Speculative tokens accepted",
                 lambda m: m.llm.num_accepted_tokens)):
            yield _counters(models, name, doc, value)
        yield _gauges(models, "grserve:gpu_cache_usage_perc", "Share of KV blocks in use (as vLLM names it)",
                      lambda m: m.llm.blocks.blocks_in_use / m.llm.blocks.num_blocks)
