"""The error every layer raises for a bad field of a request or of a catalog change, below them all, so that the
engine, the catalog and the HTTP routes share it without importing each other."""
from __future__ import annotations


class InvalidRequest(ValueError):
    """A request field is out of bounds; `param` names the field (as the HTTP API spells it)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message

    def __reduce__(self):  # pickled with its fields (the catalog process raises it in the serving process)
        return type(self), (self.param, self.message)
