"""The Grafana dashboard (deploy/grafana/) queries only metrics a real `grserve serve` exposes: every `grserve:` name
in its queries is a sample of a family on the server's /metrics, with a GR model and an LLM served (the LLM's
metrics appear only then); the dashboard is well formed and the Prometheus example scrapes /metrics."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import grserve_serve

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
METRIC = re.compile(r"grserve:[A-Za-z0-9_:]+")
# the samples a family of each type exposes (prometheus_client names a counter's family without _total)
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "unknown": ("",)}


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row holds its panels
    return out


def queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


@pytest.fixture(scope="module")
def dashboard() -> dict:
    (path,) = DEPLOY.glob("*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def exposed(tiny_model_dir, llm_dir, tmp_path_factory) -> set[str]:
    """Every sample name the families on a real server's /metrics may have, after one GR request."""
    with grserve_serve("--model", tiny_model_dir, "--llm-model", str(llm_dir),
                       "--state-dir", str(tmp_path_factory.mktemp("state"))) as url:
        assert httpx.post(url + "/v1/recommend", json={"history": ["i1"], "top_n": 2, "beam_width": 4},
                          timeout=60).status_code == 200
        text = httpx.get(url + "/metrics").text
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in SUFFIXES[family.type]} | {s.name for s in family.samples}
    return names


def test_every_metric_the_dashboard_queries_is_exposed(dashboard, exposed):
    used = {m for q in queries(dashboard) for m in METRIC.findall(q)}
    assert len(used) >= 20  # throughput, latency, queue, rejections, KV, catalog, LLM
    missing = sorted(used - exposed)
    assert not missing, f"the dashboard queries metrics no server exposes: {missing}"
    for q in queries(dashboard):
        assert METRIC.search(q), f"{q}: queries no grserve metric"


def test_the_dashboard_covers_what_operators_watch(dashboard):
    used = " ".join(queries(dashboard))
    for needed in ("histogram_quantile(0.99, sum by (le, model) (rate(grserve:e2e_request_latency_seconds_bucket",
                   "sum by (reason) (rate(grserve:requests_rejected_total", "grserve:num_requests_waiting",
                   "grserve:kv_cache_usage_bytes", "grserve:gpu_cache_usage_perc",
                   "sum by (endpoint, status) (rate(grserve:http_requests_total"):
        assert needed in used, needed
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance", "model"} <= variables
    for p in panels(dashboard):
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            # every query is scoped by the dashboard's variables, so its drop-downs apply to every panel
            assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], p["title"]


def test_prometheus_example_scrapes_metrics():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert "grserve" in jobs
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
    (static,) = jobs["grserve"]["static_configs"]
    assert all(re.fullmatch(r"[\w.-]+:\d+", t) for t in static["targets"])
