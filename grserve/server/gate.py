"""The server's front gate, as plain ASGI middleware: every HTTP request passes it before FastAPI.

It checks who may call what before anything else is read: the admin routes (/v1/catalog..., and loading or
unloading models: POST /v1/models, DELETE /v1/models/NAME) need the admin token (401 without it; 403 while none
is configured: they are off), and with an API key configured every other /v1/* route needs it (401), the
catalog search among them; /health, /metrics and the demo page stay open. Then it refuses API calls while
draining (503), bodies that are not JSON (415) or too large (413, counted as they stream in, so a lying or
absent Content-Length cannot get past), counts the requests in flight (what a drain waits for) and the status
of every answer by endpoint."""
from __future__ import annotations

import hmac
import json

ADMIN_PREFIX = "/v1/catalog"
SEARCH = ADMIN_PREFIX + "/search"  # under the prefix, yet public: reading the catalog changes nothing
MODELS = "/v1/models"  # listing them is public; loading (POST) and unloading (DELETE /v1/models/NAME) are not
KNOWN = {"/v1/recommend", "/v1/recommend/batch", "/v1/completions", "/v1/chat/completions", MODELS,
         "/health", "/metrics", ADMIN_PREFIX, ADMIN_PREFIX + "/items", ADMIN_PREFIX + "/availability",
         ADMIN_PREFIX + "/rollback", SEARCH, "/"}
WITH_BODY = ("POST", "PUT", "PATCH", "DELETE")


async def _send_error(send, status: int, message: str, kind: str) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bearer_is(scope, secret: str) -> bool:
    given = dict(scope["headers"]).get(b"authorization", b"")
    # compare_digest: the time taken says nothing about how much of the secret a guess got right
    return hmac.compare_digest(given, b"Bearer " + secret.encode())


def _with_body(scope) -> bool:
    """A request that carries a JSON body (a DELETE may carry none: DELETE /v1/models/NAME)."""
    if scope["method"] != "DELETE":
        return scope["method"] in WITH_BODY
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


def _admin(path: str, method: str) -> bool:
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return path != SEARCH
    return (path == MODELS or path.startswith(MODELS + "/")) and method not in ("GET", "HEAD")


class Gate:
    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in KNOWN else MODELS + "/{name}" if path.startswith(MODELS + "/") else "other"
        status = {"code": 500}

        async def send_and_count(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._unauthorized(scope) or self._refusal(scope)
            if refusal is not None:
                return await _send_error(send_and_count, *refusal)
            if _with_body(scope):
                body = await self._read_body(receive)
                if body is None:
                    return await _send_error(send_and_count, 413, f"body exceeds {self.state.config.max_body_bytes} bytes",
                                             "invalid_request_error")
                receive = _replay(body, receive)
            self.state.inflight += 1
            try:
                await self.app(scope, receive, send_and_count)
            finally:
                self.state.inflight -= 1
        finally:
            self.state.metrics.requests.labels(endpoint=endpoint, status=str(status["code"])).inc()

    def _unauthorized(self, scope) -> tuple[int, str, str] | None:
        path, config = scope["path"], self.state.config
        if _admin(path, scope["method"]):
            if not config.admin_token:
                return 403, "the admin routes (catalog changes, loading models) are off: start the server with " \
                            "--admin-token or GRSERVE_ADMIN_TOKEN set", "permission_error"
            if not _bearer_is(scope, config.admin_token):
                return 401, "the admin routes (catalog changes, loading models) need Authorization: Bearer " \
                            "<admin token>", "authentication_error"
        elif path.startswith("/v1/") and config.api_key and not _bearer_is(scope, config.api_key):
            return 401, "this server needs an API key: Authorization: Bearer <key>", "authentication_error"
        return None

    def _refusal(self, scope) -> tuple[int, str, str] | None:
        api = scope["path"].startswith("/v1/")
        if api and self.state.draining:
            self.state.metrics.rejected.labels(model="", reason="draining").inc()
            return 503, "server is draining: retry on another instance", "unavailable"
        if _with_body(scope):
            headers = dict(scope["headers"])
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if not (ctype == b"application/json" or ctype.endswith(b"+json")):
                return 415, f"content-type must be application/json, got {ctype.decode(errors='replace') or 'none'}", \
                    "invalid_request_error"
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.state.config.max_body_bytes):
                return 413, f"body exceeds {self.state.config.max_body_bytes} bytes", "invalid_request_error"
        return None

    async def _read_body(self, receive) -> bytes | None:
        chunks, size, limit = [], 0, self.state.config.max_body_bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive):
    """The body already read, then the real channel: a streaming response listens on it for the client
    going away, so it must block until that really happens."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
