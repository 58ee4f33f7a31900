"""The HTTP server on a real uvicorn server on a loopback port: answers, errors, back-pressure,
deadlines, metrics, the OpenAPI spec."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grserve.client import AsyncGRServeClient, GRServeClient, GRServeError
from grserve.recommender import Recommender
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from grserve.server.model_spec import DEFAULT_NAME
from tests.conftest import make_bundle
from tests.server.conftest import running


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(num_items=400, codebook_size=8, seed=11)


@pytest.fixture(scope="module")
def base_url(bundle):
    config = ServerConfig.of(max_beam_width=64, max_body_bytes=20_000, default_timeout_ms=30_000)
    rec = Recommender(bundle, config.engine)
    with running(create_app(config, rec)) as url:
        yield url


def test_health_models_openapi(base_url, bundle):
    with GRServeClient(base_url) as c:
        assert c.health()
        (model,) = c.models()
        assert model["catalog_size"] == 400 and model["max_beam_width"] == 64
    spec = httpx.get(base_url + "/openapi.json").json()
    assert {"/v1/recommend", "/v1/recommend/batch", "/v1/models", "/health", "/metrics"} <= set(spec["paths"])
    schema = spec["components"]["schemas"]["RecommendRequest"]
    assert schema["additionalProperties"] is False
    assert {"model", "user", "history", "top_n", "beam_width", "exclude", "allow", "exclude_history", "timeout_ms",
            "request_id", "priority"} == set(schema["properties"])
    assert {"400", "429", "504"} <= set(spec["paths"]["/v1/recommend"]["post"]["responses"])


def test_200_concurrent_requests_equal_direct_answers(base_url, bundle):
    cases = [([f"i{(7 * n + k) % 400}" for k in range(n % 9)], 1 + n % 4, 4 + n % 29) for n in range(200)]

    async def main():
        async with AsyncGRServeClient(base_url) as c:
            return await asyncio.gather(*(c.recommend(h, top_n=t, beam_width=w) for h, t, w in cases))

    answers = asyncio.run(main())
    rec = Recommender(bundle)
    try:
        for (h, t, w), got in zip(cases, answers):
            want = rec.recommend(h, t, w)
            assert [i["item_id"] for i in got["items"]] == [i.item_id for i in want.items]
            assert [i["score"] for i in got["items"]] == pytest.approx([i.score for i in want.items], abs=1e-5)
    finally:
        rec.close()


def test_batch_is_answered_in_order(base_url, bundle):
    reqs = [{"history": ["i1", "i2"], "top_n": 3, "beam_width": 8}, {"history": [], "top_n": 2, "beam_width": 4},
            {"history": ["i9"], "top_n": 1, "beam_width": 1}]
    with GRServeClient(base_url) as c:
        out = c.recommend_batch(reqs)
        singles = [c.recommend(r["history"], top_n=r["top_n"], beam_width=r["beam_width"]) for r in reqs]
    assert [[i["item_id"] for i in o["items"]] for o in out] == [[i["item_id"] for i in s["items"]] for s in singles]


@pytest.mark.parametrize("body,param", [
    ({"history": ["i1"], "top_n": 0}, "top_n"),
    ({"history": ["i1"], "beam_width": 65}, "beam_width"),
    ({"history": "i1"}, "history"),
    ({"history": [["i1"]]}, "history.0.int"),
    ({"history": ["i1"], "colour": "red"}, "colour"),
    ({"history": ["i1"], "top_n": 20, "beam_width": 8}, None),
    ({"history": ["i1"], "timeout_ms": 0}, "timeout_ms"),
    ({"history": ["i1"], "timeout_ms": 10 ** 9}, "timeout_ms"),
    ({"history": ["i1"], "exclude_history": "maybe"}, "exclude_history"),
])
def test_bad_fields_are_400_naming_the_field(base_url, body, param):
    r = httpx.post(base_url + "/v1/recommend", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == 400
    if param:
        assert err["param"] == param and param.split(".")[0] in err["message"]
    else:
        assert "top_n" in err["message"] and "beam_width" in err["message"]


def test_batch_errors_name_the_entry(base_url):
    r = httpx.post(base_url + "/v1/recommend/batch", json={"requests": [{"history": []}, {"beam_width": 99}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "requests.1.beam_width"


@pytest.mark.parametrize("content,headers,status", [
    (b"{not json", {"content-type": "application/json"}, 400),
    (b"", {"content-type": "application/json"}, 400),
    (b"[1, 2]", {"content-type": "application/json"}, 400),
    (b'{"history": []}', {"content-type": "text/plain"}, 415),
    (b'{"history": []}', {}, 415),
    (b'{"history": ["' + b"x" * 30_000 + b'"]}', {"content-type": "application/json"}, 413),
])
def test_malformed_wrong_type_and_huge_bodies(base_url, content, headers, status):
    r = httpx.post(base_url + "/v1/recommend", content=content, headers=headers)
    assert r.status_code == status and r.json()["error"]["code"] == status


def test_huge_chunked_body_without_length_is_413(base_url):
    def chunks():
        yield b'{"history": ["'
        for _ in range(50):
            yield b"y" * 1000
        yield b'"]}'
    r = httpx.post(base_url + "/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_history_ids_are_warnings(base_url):
    with GRServeClient(base_url) as c:
        out = c.recommend(["i1", "nope"], top_n=2, beam_width=4)
    assert len(out["items"]) == 2 and any("nope" in w for w in out["warnings"])


def test_metrics_parse_and_move(base_url):
    def samples():
        text = httpx.get(base_url + "/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}
    before = samples()
    key = ("grserve:http_requests_total", (("endpoint", "/v1/recommend"), ("status", "200")))
    model = (("model", DEFAULT_NAME),)  # the model a server made with one Recommender serves it as
    e2e = ("grserve:e2e_request_latency_seconds_count", model)
    with GRServeClient(base_url) as c:
        for _ in range(3):
            c.recommend(["i3"], top_n=2, beam_width=4)
    httpx.post(base_url + "/v1/recommend", json={"top_n": 0})
    after = samples()
    assert after[key] - before.get(key, 0) == 3
    assert after[e2e] - before.get(e2e, 0) == 3
    bad = ("grserve:http_requests_total", (("endpoint", "/v1/recommend"), ("status", "400")))
    assert after[bad] - before.get(bad, 0) == 1
    for name in ("grserve:num_requests_waiting", "grserve:kv_cache_usage_bytes", "grserve:batch_size_requests_count",
                 "grserve:request_queue_time_seconds_count", "grserve:request_prefill_time_seconds_count",
                 "grserve:request_decode_time_seconds_count", "grserve:beam_selection_time_seconds_count"):
        assert (name, model) in after
    assert after[("grserve:kv_cache_usage_bytes", model)] > 0


def test_flood_beyond_queue_gets_429_while_admitted_succeed(bundle):
    config = ServerConfig.of(max_beam_width=64, max_queue_requests=4, max_batch_requests=2, default_timeout_ms=60_000)
    rec = Recommender(bundle, config.engine)
    with running(create_app(config, rec)) as url:
        async def one(c, n):
            try:
                return await c.recommend([f"i{n % 400}"] * 40, top_n=5, beam_width=64)
            except GRServeError as e:
                return e

        async def main():
            async with AsyncGRServeClient(url) as c:
                return await asyncio.gather(*(one(c, n) for n in range(120)))

        results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, GRServeError)]
    answered = [r for r in results if not isinstance(r, GRServeError)]
    assert refused and answered
    assert all(e.status == 429 and e.retry_after == 1 and e.body["error"]["type"] == "rate_limit_error"
               for e in refused)
    assert all(len(a["items"]) == 5 for a in answered)


def test_deadline_that_cannot_be_met_is_504(bundle):
    config = ServerConfig.of(max_beam_width=64, max_batch_requests=1, default_timeout_ms=60_000)
    rec = Recommender(bundle, config.engine)
    with running(create_app(config, rec)) as url:
        async def main():
            async with AsyncGRServeClient(url) as c:
                load = [c.recommend(["i1"] * 40, top_n=5, beam_width=64) for _ in range(30)]
                late = c.recommend(["i2"], top_n=5, beam_width=64, timeout_ms=1)
                return await asyncio.gather(*load, late, return_exceptions=True)

        results = asyncio.run(main())
        metrics = httpx.get(url + "/metrics").text
    late = results[-1]
    assert isinstance(late, GRServeError) and late.status == 504
    assert late.body["error"]["type"] == "timeout_error" and late.param == "timeout_ms"
    assert all(isinstance(r, dict) for r in results[:-1])
    assert f'grserve:requests_timed_out_total{{model="{DEFAULT_NAME}"}} 1.0' in metrics


def test_request_the_plan_answers_late_is_refused_at_once_with_429(bundle):
    """A step-cost model of 1 s + 10 ms per unit: any 200 ms deadline is out of reach, so admission refuses at
    once with Retry-After = the predicted step, rounded up; a 60 s deadline is admitted and answered."""
    import math
    config = ServerConfig.of(max_beam_width=64, default_timeout_ms=60_000)
    rec = Recommender(bundle, config.engine)
    cost = rec.engine.scheduler.cost
    cost.fixed, cost.per_unit, cost.margin = 1.0, 0.01, 0.1
    history = ["i1", "i2", "i3"]
    work = 64 + len(rec.prompt([bundle.table.row_of(i) for i in history]))
    with running(create_app(config, rec)) as url:
        with GRServeClient(url) as c:
            with pytest.raises(GRServeError) as refused:
                c.recommend(history, top_n=5, beam_width=64, timeout_ms=200)
            answered = c.recommend(history, top_n=5, beam_width=64)
        metrics = httpx.get(url + "/metrics").text
    e = refused.value
    assert e.status == 429 and e.param == "timeout_ms" and e.body["error"]["type"] == "rate_limit_error"
    assert "after its deadline" in e.body["error"]["message"]
    assert e.retry_after == math.ceil((1.0 + 0.01 * work) * 1.1)
    assert len(answered["items"]) == 5
    assert f'grserve:requests_rejected_total{{model="{DEFAULT_NAME}",reason="deadline"}} 1.0' in metrics
    assert f'grserve:requests_refused_deadline_total{{model="{DEFAULT_NAME}"}} 1.0' in metrics


def test_scheduler_never_starts_an_expired_request(bundle):
    """Below HTTP: a request whose deadline has already passed is answered DeadlineExceeded, unstarted."""
    from grserve.engine.gr.request import DeadlineExceeded
    rec = Recommender(bundle)
    try:
        req = rec.request([1, 2], 3, 8)
        req.deadline = req.arrival - 1
        with pytest.raises(DeadlineExceeded):
            rec.engine.submit(req).result(timeout=30)
        assert not req.future.running()
    finally:
        rec.close()


def test_model_that_fails_to_load_is_503_with_the_reason(tmp_path):
    app = create_app(ServerConfig(model=str(tmp_path)))
    with running(app) as url:
        for _ in range(100):
            r = httpx.get(url + "/health")
            if r.json()["status"] != "loading":
                break
            asyncio.run(asyncio.sleep(0.05))
        assert r.status_code == 503 and "gr_config.json" in r.json()["detail"]
        r = httpx.post(url + "/v1/recommend", json={"history": []})
        assert r.status_code == 503 and "gr_config.json" in r.json()["error"]["message"]
