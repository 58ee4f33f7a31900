"""Which model a request through the router is for, and the answers when none can take it.

A request names its model (`model`), or a traffic split's name, which the router turns into one of the split's
physical models for the request's user (splits.py) and writes into the body, so that the instance answers with
that model; the response says which in its `model` field and the `x-grserve-model` header. A GR request that
names none goes to the GR model every live GR instance answers by default (400 when they differ: name one). A
batch through the router goes to one model: its entries name one, or none (400 otherwise). A model no live
instance serves is a 404 naming it."""
from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import JSONResponse

from grserve.server.protocol import error_body
from grserve.service.registry import InstanceInfo
from grserve.service.splits import Split

MODEL_HEADER = "x-grserve-model"
BATCH = "/v1/recommend/batch"


def serves(inst: InstanceInfo, model: str | None, kind: str | None) -> bool:
    """Whether `inst` serves `model` (None: any) of `kind` (None: either)."""
    if model is None:
        return any(kind is None or m.kind == kind for m in inst.served())
    served = inst.serving(model)
    return served is not None and (kind is None or served.kind == kind)


def not_served(model: str, served: list[str], split: str | None = None) -> JSONResponse:
    via = f" (chosen by split {split!r})" if split else ""
    return JSONResponse(error_body(404, f"model: no live instance serves {model!r}{via}; live models: {served}",
                                   "model", "not_found_error"), status_code=404)


def default_gr(live: list[InstanceInfo]) -> str | JSONResponse:
    """The GR model `live` instances answer requests naming none with, when they agree on one."""
    defaults = sorted({d for i in live if (d := i.default_gr()) is not None})
    if len(defaults) == 1:
        return defaults[0]
    if not defaults:
        return JSONResponse(error_body(503, "no live GR instance", kind="unavailable"), status_code=503,
                            headers={"Retry-After": "1"})
    return JSONResponse(error_body(400, f"model: the live instances serve several GR models by default "
                                        f"({defaults}): name one", "model"), status_code=400)


def _entries(body: dict, path: str) -> list[dict]:
    entries = body.get("requests") if path == BATCH else [body]
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _key(entry: dict, headers) -> str | None:
    user = entry.get("user")
    return user if isinstance(user, str) and user else headers.get("x-session-id")


def named_model(body: dict, path: str, headers, splits: dict[str, Split]) -> tuple[str | None, str | None] | \
        JSONResponse:
    """The physical model the request names (None: none), its split's name when a split chose it (the body then
    names the chosen model); a batch naming several is a 400. A model that is not a string is left for the
    instance to refuse."""
    models, chosen_by = set(), None
    for entry in _entries(body, path):
        name = entry.get("model")
        if isinstance(name, str) and name in splits:
            chosen_by, entry["model"] = name, splits[name].choose(_key(entry, headers))
        models.add(entry["model"] if isinstance(entry.get("model"), str) else None)
    if len(models) > 1:
        named = sorted(m or "(none)" for m in models)
        return JSONResponse(error_body(400, f"requests: a batch through the router goes to one model, and its "
                                            f"entries name {named} (a split may send each user elsewhere): send "
                                            f"one batch per model", "requests"), status_code=400)
    return next(iter(models), None), chosen_by



def model_cards(live: list[InstanceInfo], version_of: Callable[[InstanceInfo, str], int],
                splits: dict[str, Split]) -> list[dict]:
    """The router's /v1/models: every model a live instance serves (how many serve it; a GR model's current
    catalog version among them), then the splits with each model's share."""
    served: dict[str, dict] = {}
    for inst in sorted(live, key=lambda i: i.instance_id):
        for m in inst.served():
            card = served.setdefault(m.name, {"id": m.name, "object": "model", "owned_by": "grserve", "kind": m.kind,
                                              "instances": 0})
            card["instances"] += 1
            if m.kind == "gr":
                card["catalog_version"] = max(card.get("catalog_version", 0), version_of(inst, m.name))
    return list(served.values()) + [{"id": s.name, "object": "model", "owned_by": "grserve", "kind": "split",
                                     "split": s.shares()} for s in splits.values()]
