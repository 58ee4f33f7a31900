"""The router: the same public API as `grserve serve`, forwarding each request to a live instance found
in etcd. It keeps no state that etcd cannot rebuild (the instance list is read from the registry; only
counters of its own in-flight requests live here), so a restarted router serves at once and several can
run side by side.

Fault tolerance: an instance that refuses the connection, drops it, or answers 502/503 (draining,
loading) is skipped and the request goes to another one, within the request's deadline; GR requests
and non-streamed completions are idempotent. A streamed completion is retried only before its first
byte; after that a failure ends the stream with an error event and `data: [DONE]`.

Cache-aware routing computes the prompt's token ids in the router (`prompts`), hashes them in each
instance's block size, and matches the hashes against the prefix blocks the instances report."""
from __future__ import annotations

import json
import time

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from grserve.server.protocol import PREFILL_HEADER, error_body
from grserve.service.policies import POLICIES, LeastLoaded, affinity, new_inflight
from grserve.service.prompts import request_token_ids
from grserve.service.registry import InstanceCache, Registry

RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError,
             httpx.ConnectTimeout, httpx.PoolTimeout)
LEAST_LOADED = LeastLoaded()
KIND_OF_PATH = {"/v1/recommend": "gr", "/v1/recommend/batch": "gr", "/v1/completions": None,
                "/v1/chat/completions": "llm"}


def create_router_app(etcd_url: str, policy: str = "least-loaded", retries: int = 2,
                      default_timeout_s: float = 30.0, poll_interval: float = 0.5,
                      prefix: str = "/grserve/instances/", tokenizer=None) -> FastAPI:
    """`tokenizer` (the served LLM's, from `load_tokenizer`) lets cache-aware routing match text prompts and
    chats; without it only token-id prompts are matched, the rest go by load."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {policy!r}")
    cache = InstanceCache(Registry(etcd_url, prefix=prefix), interval=poll_interval)
    chooser, inflight = POLICIES[policy](), new_inflight()
    registry = CollectorRegistry()
    forwarded = Counter("grserve_router:forwarded", "Requests forwarded, by instance and status",
                        ["instance", "status"], registry=registry)
    paired_total = Counter("grserve_router:pd_paired", "LLM requests sent to a decode instance with a prefill "
                           "instance to pull the prompt's KV from", ["prefill", "decode"], registry=registry)
    retried = Counter("grserve_router:retried", "Attempts that failed over to another instance", ["instance"],
                      registry=registry)
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))

    async def lifespan(_app):
        cache.start()
        yield
        cache.stop()
        await client.aclose()

    app = FastAPI(title="grserve router", lifespan=lifespan)

    def candidates(kind: str | None, tried: set[str]):
        live = [i for i in cache.alive() if i.instance_id not in tried and (kind is None or kind in i.kinds)]
        return live

    def pick(live, prompt: list[int] | None, session: str | None, kind: str | None):
        """The instance to send the request to, and the prefill instance to pair it with (or None).

        LLM requests go to decode and mixed instances; when the request goes to a decode instance and prefill
        instances are alive, the least-loaded of those computes the prompt's KV, which the decode instance
        pulls. Prefill instances take requests whole only when nothing else is left."""
        prefills = [i for i in live if i.role == "prefill"] if kind == "llm" else []
        serving = [i for i in live if i not in prefills] or live
        inst = affinity(serving, session) if session else chooser.choose(serving, inflight, prompt)
        if inst.role != "decode" or not prefills:
            return inst, None
        return inst, LEAST_LOADED.choose(prefills, inflight, None)

    async def forward(request: Request, path: str):
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        timeout = (body.get("timeout_ms") or default_timeout_s * 1000) / 1000 if isinstance(
            body.get("timeout_ms"), (int, float, type(None))) else default_timeout_s
        deadline = time.monotonic() + max(timeout, 0.001)
        kind = KIND_OF_PATH[path] or ("gr" if "beam_width" in body else "llm")
        session = request.headers.get("x-session-id")
        # Tokenizing costs the router CPU: done only for the policy that reads the prompt.
        prompt = request_token_ids(path, body, tokenizer) if policy == "cache-aware" and kind == "llm" else None
        streamed = bool(body.get("stream"))
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        tried: set[str] = set()
        last_error = "no live instance serves this request"
        for _ in range(retries + 1):
            live = candidates(kind, tried)
            remaining = deadline - time.monotonic()
            if not live or remaining <= 0:
                break
            inst, prefill = pick(live, prompt, session, kind)
            tried.add(inst.instance_id)
            inflight[inst.instance_id] += 1
            relaying = False  # a relayed stream stays in flight until its last byte
            try:
                paired = {**headers, PREFILL_HEADER: prefill.address} if prefill else headers
                req = client.build_request("POST", inst.address + path, content=raw, headers=paired,
                                           timeout=remaining)
                if prefill:
                    paired_total.labels(prefill=prefill.instance_id, decode=inst.instance_id).inc()
                # A stream's body is read here only when the instance answered anything but a 200.
                r = await client.send(req, stream=streamed)
                if streamed and r.status_code != 200:
                    await r.aread()
                forwarded.labels(instance=inst.instance_id, status=str(r.status_code)).inc()
                if r.status_code in (502, 503):
                    retried.labels(instance=inst.instance_id).inc()
                    last_error = f"instance {inst.instance_id} answered {r.status_code}"
                    continue
                if streamed and r.status_code == 200:
                    relaying = True
                    return StreamingResponse(relay(inst.instance_id, r), media_type="text/event-stream")
            except RETRYABLE as e:
                retried.labels(instance=inst.instance_id).inc()
                cache.mark_suspect(inst.instance_id)
                last_error = f"instance {inst.instance_id} failed: {type(e).__name__}"
                continue
            except httpx.TimeoutException:
                return JSONResponse(error_body(504, "deadline passed while the instance computed", "timeout_ms",
                                               "timeout_error"), status_code=504)
            finally:
                if not relaying:
                    inflight[inst.instance_id] -= 1
            keep = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "retry-after")}
            return Response(r.content, status_code=r.status_code, headers=keep)
        status = 504 if time.monotonic() >= deadline else 503
        return JSONResponse(error_body(status, last_error, None, "unavailable"), status_code=status,
                            headers={"Retry-After": "1"})

    async def relay(instance_id: str, upstream: httpx.Response):
        """The instance's server-sent events, passed on whole: an event cut by a failure is dropped, and a
        stream that ends any way but with `data: [DONE]` ends with an error event and its own [DONE]."""
        pending, done = b"", False
        try:
            async for chunk in upstream.aiter_raw():
                events, sep, pending = (pending + chunk).rpartition(b"\n\n")
                if sep:
                    done = events.endswith(b"data: [DONE]")
                    yield events + sep
        except httpx.TransportError:
            pass  # the instance died or stalled: said below, unless its [DONE] already went out
        finally:
            inflight[instance_id] -= 1  # before the await, which a client hanging up may cancel
            await upstream.aclose()
        if not done:
            err = error_body(502, f"instance {instance_id} failed mid-stream", None, "upstream_error")
            yield f"data: {json.dumps(err)}\n\ndata: [DONE]\n\n".encode()

    def route(path: str):
        async def endpoint(request: Request):
            return await forward(request, path)
        return endpoint

    for path in KIND_OF_PATH:
        app.add_api_route(path, route(path), methods=["POST"])

    @app.get("/health")
    async def health():
        live = cache.alive()
        body = {"status": "ok" if live else "no instances", "instances": len(live)}
        return JSONResponse(body, status_code=200 if live else 503)

    @app.get("/v1/models")
    async def models():
        data, seen = [], set()
        for inst in cache.alive():
            if inst.model not in seen:
                seen.add(inst.model)
                data.append({"id": inst.model, "object": "model", "owned_by": "grserve", "kinds": inst.kinds})
        return {"object": "list", "data": data}

    @app.get("/v1/instances")
    async def instances():
        return {"data": [{**i.to_dict(), "suspect": cache.is_suspect(i.instance_id),
                          "inflight": inflight[i.instance_id]} for i in cache.instances().values()]}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
