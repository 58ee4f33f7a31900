"""A small Python client for a grserve server, sync (`GRServeClient`) and async (`AsyncGRServeClient`).

Errors come back as `GRServeError` carrying the HTTP status and the server's JSON error body, so callers
can tell back-pressure (429, with `retry_after`) from a deadline (504) from a bad field (400, `param`)."""
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


def _check(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text}}
    if response.status_code != 200:
        raise GRServeError(response.status_code, body, response.headers)
    return body


class GRServeClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0):
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def recommend(self, history: list, **options: Any) -> dict:
        """options: top_n, beam_width, exclude, allow, exclude_history, timeout_ms, request_id."""
        return _check(self.http.post("/v1/recommend", json=_payload(history, **options)))

    def recommend_batch(self, requests: list[dict]) -> list[dict]:
        return _check(self.http.post("/v1/recommend/batch", json={"requests": requests}))["data"]

    def models(self) -> list[dict]:
        return _check(self.http.get("/v1/models"))["data"]

    def health(self) -> bool:
        return self.http.get("/health").status_code == 200

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncGRServeClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0,
                 max_connections: int = 256):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits)

    async def recommend(self, history: list, **options: Any) -> dict:
        return _check(await self.http.post("/v1/recommend", json=_payload(history, **options)))

    async def recommend_batch(self, requests: list[dict]) -> list[dict]:
        return _check(await self.http.post("/v1/recommend/batch", json={"requests": requests}))["data"]

    async def models(self) -> list[dict]:
        return _check(await self.http.get("/v1/models"))["data"]

    async def health(self) -> bool:
        return (await self.http.get("/health")).status_code == 200

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
