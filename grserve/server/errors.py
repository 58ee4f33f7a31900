"""The HTTP error every route raises, and the error responses the OpenAPI spec lists: below the route modules
(app.py, openai_api.py, pd.py, catalog_api.py), so they share it without importing each other."""
from __future__ import annotations

from grserve.server.protocol import ErrorResponse, error_body

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 429, 503, 504)}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.headers = status, message, param, kind, headers

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.kind)
