"""A small Python client for a grserve server, sync (`GRServeClient`) and async (`AsyncGRServeClient`).

Errors come back as `GRServeError` carrying the HTTP status and the server's JSON error body, so callers
can tell back-pressure (429, with `retry_after`) from a deadline (504) from a bad field (400, `param`).
`api_key` is sent to the public routes of a server started with one; `admin_token` to the catalog admin routes
(`catalog`, `add_items`, `remove_items`, `set_availability`, `rollback`), each of which answers the catalog's
summary: its version, size and last changes."""
from __future__ import annotations

from typing import Any

import httpx


class GRServeError(Exception):
    def __init__(self, status: int, body: dict, headers: httpx.Headers):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {error.get('message', body)}")
        self.status, self.body = status, body
        self.param = error.get("param")
        retry = headers.get("retry-after")
        self.retry_after = float(retry) if retry else None


def _payload(history: list, **options: Any) -> dict:
    return {"history": list(history), **{k: v for k, v in options.items() if v is not None}}


def _bearer(secret: str | None) -> dict:
    return {"authorization": f"Bearer {secret}"} if secret else {}


def _catalog_call(call: str, *args) -> dict:
    """The HTTP request of a catalog admin call, as `httpx.Client.request` arguments."""
    if call == "add_items":
        return {"method": "POST", "url": "/v1/catalog/items", "json": {"items": list(args[0])}}
    if call == "remove_items":
        return {"method": "DELETE", "url": "/v1/catalog/items", "json": {"item_ids": list(args[0])}}
    if call == "set_availability":
        return {"method": "POST", "url": "/v1/catalog/availability",
                "json": {"disable": list(args[0]), "enable": list(args[1])}}
    if call == "rollback":
        return {"method": "POST", "url": "/v1/catalog/rollback", "json": {"version": args[0]}}
    return {"method": "GET", "url": "/v1/catalog"}


def _search_params(query: str, limit: int | None, model: str | None) -> dict:
    return {"q": query, **({"limit": limit} if limit is not None else {}), **({"model": model} if model else {})}


def _check(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text}}
    if response.status_code != 200:
        raise GRServeError(response.status_code, body, response.headers)
    return body


class GRServeClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0, api_key: str | None = None,
                 admin_token: str | None = None):
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=_bearer(api_key))
        self.admin_token = admin_token

    def recommend(self, history: list, **options: Any) -> dict:
        """options: top_n, beam_width, exclude, allow, exclude_history, timeout_ms, request_id."""
        return _check(self.http.post("/v1/recommend", json=_payload(history, **options)))

    def recommend_batch(self, requests: list[dict]) -> list[dict]:
        return _check(self.http.post("/v1/recommend/batch", json={"requests": requests}))["data"]

    def models(self) -> list[dict]:
        return _check(self.http.get("/v1/models"))["data"]

    def health(self) -> bool:
        return self.http.get("/health").status_code == 200

    def search(self, query: str, limit: int | None = None, model: str | None = None) -> dict:
        """The catalog's items by id or title (`GET /v1/catalog/search`): `data`, `more`, `catalog_version`."""
        return _check(self.http.get("/v1/catalog/search", params=_search_params(query, limit, model)))

    def _admin(self, call: str, *args) -> dict:
        return _check(self.http.request(**_catalog_call(call, *args), headers=_bearer(self.admin_token)))

    def catalog(self) -> dict:
        return self._admin("catalog")

    def add_items(self, items: list[dict]) -> dict:
        """items: `{"item_id", "semantic_id": [c0, c1, ...]}` (one code per level) or `{"item_id", "text"}`, each with
        an optional title."""
        return self._admin("add_items", items)

    def remove_items(self, item_ids: list) -> dict:
        return self._admin("remove_items", item_ids)

    def set_availability(self, disable: list = (), enable: list = ()) -> dict:
        return self._admin("set_availability", disable, enable)

    def rollback(self, version: int | None = None) -> dict:
        """To `version`; by default the one before the current."""
        return self._admin("rollback", version)

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncGRServeClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0,
                 max_connections: int = 256, api_key: str | None = None, admin_token: str | None = None):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, headers=_bearer(api_key))
        self.admin_token = admin_token

    async def recommend(self, history: list, **options: Any) -> dict:
        return _check(await self.http.post("/v1/recommend", json=_payload(history, **options)))

    async def recommend_batch(self, requests: list[dict]) -> list[dict]:
        return _check(await self.http.post("/v1/recommend/batch", json={"requests": requests}))["data"]

    async def models(self) -> list[dict]:
        return _check(await self.http.get("/v1/models"))["data"]

    async def health(self) -> bool:
        return (await self.http.get("/health")).status_code == 200

    async def search(self, query: str, limit: int | None = None, model: str | None = None) -> dict:
        return _check(await self.http.get("/v1/catalog/search", params=_search_params(query, limit, model)))

    async def _admin(self, call: str, *args) -> dict:
        return _check(await self.http.request(**_catalog_call(call, *args), headers=_bearer(self.admin_token)))

    async def catalog(self) -> dict:
        return await self._admin("catalog")

    async def add_items(self, items: list[dict]) -> dict:
        return await self._admin("add_items", items)

    async def remove_items(self, item_ids: list) -> dict:
        return await self._admin("remove_items", item_ids)

    async def set_availability(self, disable: list = (), enable: list = ()) -> dict:
        return await self._admin("set_availability", disable, enable)

    async def rollback(self, version: int | None = None) -> dict:
        return await self._admin("rollback", version)

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
