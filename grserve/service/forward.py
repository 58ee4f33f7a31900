"""Forwarding one request to the instances: which instance tries it, when another one may, and what the
client gets when none serves it.

Retry rule, within the request's deadline (its `timeout_ms`, else the router's default):
- an instance that refuses the connection, drops it, or answers 502/503 (draining, loading) is skipped and
  the request goes to another one; GR requests and non-streamed completions are idempotent. A streamed
  completion is retried only before its first byte;
- a 429 (at capacity) may be retried on another instance, but each instance is tried at most once and at most
  `retries` + 1 attempts in all, so a full cluster sees each request a bounded number of times, not a storm;
  when every instance tried refused with 429 the client gets 429 with the smallest Retry-After any sent;
- a 504 (the instance could not meet the deadline) is passed on as is and never retried: the deadline is the
  client's and another instance cannot get the time back;
- a retry starts only while at least `min_retry_s` of the deadline is left: less cannot cover a round trip and
  a step of compute, and the instance would only answer 504.
A request that finds no live instance waits for up to about one poll of the instance cache (within its
deadline) before it is refused: an instance that has just registered, or whose heartbeat a busy machine
delayed, is routed to rather than answered 503. A request goes only to instances serving its model
(model_routing.py: the model it names, the one its traffic split chose, or the default GR model), a GR request
only to those at the model's current catalog version while one is alive (catalog_routes.CatalogVersions); an
instance that answers 404 naming the model (it was unloaded there since its last heartbeat) is skipped like a
503, and the client gets the 404 only when every instance tried said so."""
from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from grserve.server.protocol import PREFILL_HEADER, error_body
from grserve.service.catalog_routes import CatalogVersions
from grserve.service.model_routing import MODEL_HEADER, default_gr, named_model, not_served, serves
from grserve.service.policies import LeastLoaded, affinity
from grserve.service.prompts import request_token_ids
from grserve.service.splits import Split

RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError,
             httpx.ConnectTimeout, httpx.PoolTimeout)
LEAST_LOADED = LeastLoaded()
KIND_OF_PATH = {"/v1/recommend": "gr", "/v1/recommend/batch": "gr", "/v1/completions": None,
                "/v1/chat/completions": "llm"}
MIN_RETRY_S = 0.02
NO_INSTANCE = "no live instance serves this request"


def retry_after_s(headers: httpx.Headers) -> int:
    """An instance's Retry-After in whole seconds (as grserve sends it, rounded up otherwise); 1 when absent
    or an HTTP date."""
    try:
        return max(0, math.ceil(float(headers.get("retry-after", ""))))
    except (ValueError, OverflowError):
        return 1


@dataclass
class Attempts:
    """What the instances tried so far answered, and the answer the client gets when none served it."""
    tried: set[str] = field(default_factory=set)
    busy: dict[str, int] = field(default_factory=dict)  # instance_id -> Retry-After of its 429
    unserved: set[str] = field(default_factory=set)  # instances that answered 404: they no longer serve the model
    not_found: dict | None = None  # the last such 404's body
    last_error: str = NO_INSTANCE

    def refuse(self, out_of_time: bool) -> JSONResponse:
        """429 with the smallest Retry-After when any instance was at capacity (the client should come back,
        not fail); else 404 when every instance tried no longer serves the model; else 504 when the deadline
        left no time to try another instance, else 503 (none live, or every one tried failed)."""
        if self.tried and self.tried == self.unserved:
            return JSONResponse(self.not_found, status_code=404)
        if self.busy:
            wait = min(self.busy.values())
            names = ", ".join(sorted(self.busy))
            return JSONResponse(error_body(429, f"every instance tried is at capacity ({names}): retry after "
                                                f"{wait} s", None, "rate_limit_error"),
                                status_code=429, headers={"Retry-After": str(wait)})
        status = 504 if out_of_time and self.tried else 503
        message = (f"deadline passed before an instance answered; last: {self.last_error}" if status == 504
                   else self.last_error)
        return JSONResponse(error_body(status, message, "timeout_ms" if status == 504 else None,
                                       "timeout_error" if status == 504 else "unavailable"),
                            status_code=status, headers={"Retry-After": "1"} if status == 503 else None)


def _not_serving(r: httpx.Response) -> dict | None:
    """The body of an instance's 404 saying it does not serve the model (not one for a route it lacks)."""
    if r.status_code != 404:
        return None
    try:
        body = r.json()
        return body if body["error"]["param"] == "model" else None
    except (ValueError, KeyError, TypeError):
        return None


def request_deadline(body: dict, default_timeout_s: float) -> float:
    """The request's deadline on the monotonic clock: its `timeout_ms`, else the router's default (a
    malformed value is the instance's to refuse with a 400; the router just uses its default)."""
    given = body.get("timeout_ms")
    ok = isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0
    return time.monotonic() + (given / 1000 if ok else default_timeout_s)


class Forwarder:
    """Sends requests to the instances the cache sees alive, as the retry rule above says."""

    def __init__(self, cache, client: httpx.AsyncClient, chooser, inflight, versions: CatalogVersions, metrics: dict,
                 policy: str, tokenizer=None, retries: int = 2, default_timeout_s: float = 30.0,
                 min_retry_s: float = MIN_RETRY_S, poll_interval: float = 0.5, splits: dict[str, Split] | None = None):
        self.cache, self.client, self.chooser, self.inflight = cache, client, chooser, inflight
        self.splits = splits or {}
        self.versions = versions
        self.forwarded, self.retried, self.paired = metrics["forwarded"], metrics["retried"], metrics["paired"]
        self.policy, self.tokenizer, self.retries = policy, tokenizer, retries
        self.default_timeout_s, self.min_retry_s, self.poll_interval = default_timeout_s, min_retry_s, poll_interval

    def candidates(self, kind: str | None, model: str | None, tried: set[str]) -> list:
        live = [i for i in self.cache.alive() if serves(i, model, kind)]
        # The current version among all live instances: one tried already still holds older ones back.
        live = self.versions.routable(live, model) if kind == "gr" and model is not None else live
        return [i for i in live if i.instance_id not in tried]

    async def live_or_wait(self, kind: str | None, model: str | None, deadline: float) -> list:
        """The live instances serving `model` (None: any) of `kind`; with none, waits up to a poll and a half of
        the cache (and never past the deadline) for one to appear."""
        until = min(deadline, time.monotonic() + 1.5 * self.poll_interval)
        while not (live := self.candidates(kind, model, set())) and time.monotonic() < until:
            await asyncio.sleep(min(0.02, self.poll_interval / 4))
        return live

    async def routed(self, request: Request, path: str, body: dict, kind: str | None, deadline: float):
        """(model, live instances serving it, whether the body now names it) for the request, or the answer
        refusing it: 400 for an ambiguous model, 404 for one no live instance serves."""
        named = named_model(body, path, request.headers, self.splits)
        if isinstance(named, JSONResponse):
            return named
        model, split = named
        live = await self.live_or_wait(kind, model, deadline)
        if model is None and kind == "gr" and live:
            # every live GR instance answers it by default (else a 400), so the body need not name it
            model = default_gr(live)
            if isinstance(model, JSONResponse):
                return model
            live = self.candidates(kind, model, set())
        elif not live and model is not None and not any(serves(i, model, kind) for i in self.cache.alive()):
            served = sorted({m.name for i in self.cache.alive() for m in i.served()})
            return not_served(model, served, split)
        return model, live, split is not None

    def pick(self, live, prompt: list[int] | None, session: str | None, kind: str | None):
        """The instance to send the request to, and the prefill instance to pair it with (or None).

        LLM requests go to decode and mixed instances; when the request goes to a decode instance and prefill
        instances are alive, the least-loaded of those computes the prompt's KV, which the decode instance
        pulls. Prefill instances take requests whole only when nothing else is left."""
        prefills = [i for i in live if i.role == "prefill"] if kind == "llm" else []
        serving = [i for i in live if i not in prefills] or live
        inst = affinity(serving, session) if session else self.chooser.choose(serving, self.inflight, prompt)
        if inst.role != "decode" or not prefills:
            return inst, None
        return inst, LEAST_LOADED.choose(prefills, self.inflight, None)

    async def forward(self, request: Request, path: str):
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        deadline = request_deadline(body, self.default_timeout_s)
        kind = KIND_OF_PATH[path] or ("gr" if "beam_width" in body else "llm")
        routed = await self.routed(request, path, body, kind, deadline)
        if isinstance(routed, JSONResponse):
            return routed
        model, live, renamed = routed
        raw = json.dumps(body).encode() if renamed else raw
        # Tokenizing costs the router CPU: done only for the policy that reads the prompt.
        prompt = request_token_ids(path, body, self.tokenizer) if self.policy == "cache-aware" and kind == "llm" \
            else None
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        if "authorization" in request.headers:  # the client's API key, for instances that ask for one
            headers["authorization"] = request.headers["authorization"]
        send = {"raw": raw, "path": path, "streamed": bool(body.get("stream")), "headers": headers, "model": model}
        attempts, out_of_time = Attempts(), False
        for n in range(self.retries + 1):
            live = live if n == 0 else self.candidates(kind, model, attempts.tried)
            remaining = deadline - time.monotonic()
            out_of_time = remaining <= 0 or (n > 0 and remaining < self.min_retry_s)
            if not live or out_of_time:
                break
            inst, prefill = self.pick(live, prompt, request.headers.get("x-session-id"), kind)
            attempts.tried.add(inst.instance_id)
            answer = await self.attempt(inst, prefill, send, remaining, attempts)
            if answer is not None:
                return answer
        return attempts.refuse(out_of_time or time.monotonic() >= deadline)

    async def attempt(self, inst, prefill, send: dict, remaining: float, attempts: Attempts):
        """One try on `inst`: the response to give the client, or None to try another instance (the reason
        recorded in `attempts`)."""
        self.inflight[inst.instance_id] += 1
        relaying = False  # a relayed stream stays in flight until its last byte
        try:
            headers = {**send["headers"], PREFILL_HEADER: prefill.address} if prefill else send["headers"]
            req = self.client.build_request("POST", inst.address + send["path"], content=send["raw"],
                                            headers=headers, timeout=remaining)
            if prefill:
                self.paired.labels(prefill=prefill.instance_id, decode=inst.instance_id).inc()
            # A stream's body is read here only when the instance answered anything but a 200.
            r = await self.client.send(req, stream=send["streamed"])
            if send["streamed"] and r.status_code != 200:
                await r.aread()
            self.forwarded.labels(instance=inst.instance_id, status=str(r.status_code)).inc()
            unserved = _not_serving(r)
            if r.status_code in (429, 502, 503) or unserved:
                self.retried.labels(instance=inst.instance_id).inc()
                if r.status_code == 429:
                    attempts.busy[inst.instance_id] = retry_after_s(r.headers)
                if unserved:
                    attempts.unserved.add(inst.instance_id)
                    attempts.not_found = unserved
                attempts.last_error = f"instance {inst.instance_id} answered {r.status_code}"
                return None
            model = {MODEL_HEADER: send["model"]} if send["model"] else {}
            if send["streamed"] and r.status_code == 200:
                relaying = True
                return StreamingResponse(self.relay(inst.instance_id, r), media_type="text/event-stream",
                                         headers=model)
        except RETRYABLE as e:
            self.retried.labels(instance=inst.instance_id).inc()
            self.cache.mark_suspect(inst.instance_id)
            attempts.last_error = f"instance {inst.instance_id} failed: {type(e).__name__}"
            return None
        except httpx.TimeoutException:
            return JSONResponse(error_body(504, "deadline passed while the instance computed", "timeout_ms",
                                           "timeout_error"), status_code=504)
        finally:
            if not relaying:
                self.inflight[inst.instance_id] -= 1
        keep = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "retry-after")}
        return Response(r.content, status_code=r.status_code, headers={**keep, **model})

    async def relay(self, instance_id: str, upstream: httpx.Response):
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
            self.inflight[instance_id] -= 1  # before the await, which a client hanging up may cancel
            await upstream.aclose()
        if not done:
            err = error_body(502, f"instance {instance_id} failed mid-stream", None, "upstream_error")
            yield f"data: {json.dumps(err)}\n\ndata: [DONE]\n\n".encode()
