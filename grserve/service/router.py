"""The router: the same public API as `grserve serve`, forwarding each request to a live instance found
in etcd. It keeps no state that etcd cannot rebuild (the instance list is read from the registry; only
counters of its own in-flight requests live here), so a restarted router serves at once and several can
run side by side.

Fault tolerance and refusals (which instance tries a request, when another may, within its deadline; what the
client gets when none serves it) are `forward.py`'s. `/health` is 503 while the router sees no live instance:
its instance cache is read from etcd before the router accepts a connection, so once `/health` says 200 the
requests behind it find the instances it counted.

Each request goes only to instances serving its model (a 404 naming it when none does); a traffic split sends a
logical name's requests to its physical models in set proportions, sticky per user (`model_routing`,
`splits`). GR requests go only to instances at their model's current catalog version while one is alive, and the
catalog admin routes are forwarded to one instance of the model (`catalog_routes`).

Cache-aware routing computes the prompt's token ids in the router (`prompts`), hashes them in each
instance's block size, and matches the hashes against the prefix blocks the instances report."""
from __future__ import annotations

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from grserve.service.catalog_routes import CatalogVersions, add_catalog_routes
from grserve.service.forward import KIND_OF_PATH, MIN_RETRY_S, Forwarder
from grserve.service.model_routing import model_cards
from grserve.service.policies import POLICIES, new_inflight
from grserve.service.registry import InstanceCache, Registry
from grserve.service.splits import Split, by_name


def router_metrics(registry: CollectorRegistry) -> dict[str, Counter]:
    """The router's own counters, by the name `Forwarder` knows them by."""
    return {"forwarded": Counter("grserve_router:forwarded", "Requests forwarded, by instance and status",
                                 ["instance", "status"], registry=registry),
            "paired": Counter("grserve_router:pd_paired", "LLM requests sent to a decode instance with a prefill "
                              "instance to pull the prompt's KV from", ["prefill", "decode"], registry=registry),
            "retried": Counter("grserve_router:retried", "Attempts refused (429, 502, 503) or failed (connection "
                               "refused or dropped): the request may go on to another instance", ["instance"],
                               registry=registry)}


def create_router_app(etcd_url: str, policy: str = "least-loaded", retries: int = 2,
                      default_timeout_s: float = 30.0, poll_interval: float = 0.5,
                      prefix: str = "/grserve/instances/", tokenizer=None, min_retry_s: float = MIN_RETRY_S,
                      splits: list[Split] = ()) -> FastAPI:
    """`tokenizer` (the served LLM's, from `load_tokenizer`) lets cache-aware routing match text prompts and
    chats; without it only token-id prompts are matched, the rest go by load. `retries`: other instances tried
    after a failure or a 429; `min_retry_s`: the least time left of a request's deadline for a retry to start.
    `splits`: the traffic splits, by their logical names."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {policy!r}")
    named_splits = by_name(list(splits))
    cache = InstanceCache(Registry(etcd_url, prefix=prefix), interval=poll_interval)
    chooser, inflight, versions = POLICIES[policy](), new_inflight(), CatalogVersions()
    registry = CollectorRegistry()
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))

    async def lifespan(_app):
        cache.start()
        yield
        cache.stop()
        await client.aclose()

    app = FastAPI(title="grserve router", lifespan=lifespan)
    forwarder = Forwarder(cache, client, chooser, inflight, versions, router_metrics(registry), policy, tokenizer,
                          retries, default_timeout_s, min_retry_s, poll_interval, named_splits)

    def route(path: str):
        async def endpoint(request: Request):
            return await forwarder.forward(request, path)
        return endpoint

    for path in KIND_OF_PATH:
        app.add_api_route(path, route(path), methods=["POST"])
    add_catalog_routes(app, cache, client, versions, default_timeout_s)

    @app.get("/health")
    async def health():
        live = cache.alive()
        body = {"status": "ok" if live else "no instances", "instances": len(live)}
        return JSONResponse(body, status_code=200 if live else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": model_cards(cache.alive(), versions.of, named_splits)}

    @app.get("/v1/instances")
    async def instances():
        return {"data": [{**i.to_dict(), "suspect": cache.is_suspect(i.instance_id),
                          "inflight": inflight[i.instance_id]} for i in cache.instances().values()]}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
