"""The changes a live catalog takes, as typed values: read from request bodies (every check that needs no
catalog state, each error naming its field as the HTTP API spells it) and written to and read from the change
log as JSON.

An item id is the dataset's own, an integer or a string, kept as a string as the item table keeps it."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from grserve.errors import InvalidRequest

ITEM_FIELDS = {"item_id", "semantic_id", "text", "title"}
# texts → SIDs int [N, levels], by the model's codebooks; None when the model was trained without them.
TextEncoder = Callable[[list[str]], np.ndarray]


class NewItem(NamedTuple):
    # A named tuple, not a frozen dataclass: an add of 10,000 items made 10,000 of them at ~7 us each (a
    # frozen dataclass's __init__ sets each field through object.__setattr__), 70 ms of a 0.4 s change.
    item_id: str
    semantic_id: tuple[int, ...]
    title: str | None = None


@dataclass(frozen=True)
class AddItems:
    """Adds items, or gives existing ones a new SID (and title) in place."""
    items: tuple[NewItem, ...]
    kind = "add"


@dataclass(frozen=True)
class RemoveItems:
    item_ids: tuple[str, ...]
    kind = "remove"


@dataclass(frozen=True)
class SetAvailability:
    disable: tuple[str, ...]
    enable: tuple[str, ...]
    kind = "availability"


@dataclass(frozen=True)
class Rollback:
    """A new version whose content equals that of `to_version`."""
    to_version: int
    kind = "rollback"


Change = AddItems | RemoveItems | SetAvailability | Rollback
KINDS = tuple(c.kind for c in (AddItems, RemoveItems, SetAvailability, Rollback))


def size(change: Change) -> int:
    """Items the change names (the version for a rollback: none)."""
    if isinstance(change, AddItems):
        return len(change.items)
    if isinstance(change, RemoveItems):
        return len(change.item_ids)
    if isinstance(change, SetAvailability):
        return len(change.disable) + len(change.enable)
    return 0


def to_json(change: Change) -> dict:
    if isinstance(change, AddItems):
        items = [{"item_id": i.item_id, "semantic_id": list(i.semantic_id)} | ({"title": i.title} if i.title else {})
                 for i in change.items]
        return {"kind": change.kind, "items": items}
    if isinstance(change, RemoveItems):
        return {"kind": change.kind, "item_ids": list(change.item_ids)}
    if isinstance(change, SetAvailability):
        return {"kind": change.kind, "disable": list(change.disable), "enable": list(change.enable)}
    return {"kind": change.kind, "to_version": change.to_version}


def from_json(entry: dict) -> Change:
    """The change of a log entry (written by `to_json`); ValueError when it is not one."""
    try:
        kind = entry["kind"]
        if kind == AddItems.kind:
            return AddItems(tuple(NewItem(str(i["item_id"]), tuple(int(c) for c in i["semantic_id"]), i.get("title"))
                                  for i in entry["items"]))
        if kind == RemoveItems.kind:
            return RemoveItems(tuple(entry["item_ids"]))
        if kind == SetAvailability.kind:
            return SetAvailability(tuple(entry["disable"]), tuple(entry["enable"]))
        if kind == Rollback.kind:
            return Rollback(int(entry["to_version"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed {entry.get('kind')!r} change: {e!r}") from None
    raise ValueError(f"unknown change kind {kind!r}")


def item_id(value: object, param: str) -> str:
    # bool is an int to Python, never an item id to a person
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise InvalidRequest(param, f"must be a non-empty string or an integer, got {value!r}")
    return str(value)


def item_ids(values: object, param: str, allow_empty: bool = False) -> tuple[str, ...]:
    """Ids of a list, each once; `param.i` names a bad or repeated one."""
    if not isinstance(values, list) or (not values and not allow_empty):
        raise InvalidRequest(param, "must be a non-empty list of item ids")
    ids = tuple(item_id(v, f"{param}.{i}") for i, v in enumerate(values))
    _no_repeats(ids, lambda i: f"{param}.{i}")
    return ids


def _no_repeats(ids: tuple[str, ...], param_of: Callable[[int], str]) -> None:
    first: dict[str, int] = {}
    for i, v in enumerate(ids):
        if first.setdefault(v, i) != i:
            raise InvalidRequest(param_of(i), f"item id {v!r} appears twice (also {param_of(first[v])})")


def semantic_id(value: object, param: str, codebook_size: int, levels: int) -> tuple[int, ...]:
    """`value` as a SID of the catalog's `levels` codes, each in [0, codebook_size)."""
    if type(value) is list and len(value) == levels and all(type(c) is int and 0 <= c < codebook_size for c in value):
        return tuple(value)  # the common case (a JSON array of ints), checked in one pass
    ok = (isinstance(value, (list, tuple, np.ndarray)) and len(value) == levels
          and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < codebook_size
                  for c in value))
    if not ok:
        raise InvalidRequest(param, f"must be {levels} integer codes in [0, {codebook_size}), got {value!r}")
    return tuple(int(c) for c in value)


def parse_add(items: object, codebook_size: int, levels: int, encode_texts: TextEncoder | None) -> AddItems:
    """`items` of a request body: each `{"item_id", "semantic_id": [c0, c1, ...]}` (the catalog's `levels` codes)
    or `{"item_id", "text"}`, with an optional `title`. Texts are encoded together, once every other field has
    passed."""
    if not isinstance(items, list) or not items:
        raise InvalidRequest("items", "must be a non-empty list of items")
    new, texts = [], {}
    for i, item in enumerate(items):
        new.append(_item(i, item, codebook_size, levels, texts))
    _no_repeats(tuple(n[0] for n in new), lambda i: f"items.{i}.item_id")
    for i, sid in _encode(texts, codebook_size, levels, encode_texts):
        new[i][1] = sid
    return AddItems(tuple(NewItem(*fields) for fields in new))


# The fields of each change's request body: (all it may have, those it must have).
BODY_FIELDS = {AddItems.kind: ({"items"}, {"items"}), RemoveItems.kind: ({"item_ids"}, {"item_ids"}),
               SetAvailability.kind: ({"disable", "enable"}, set())}


def read_body(kind: str, body: bytes, max_items: int | None = None) -> dict:
    """The JSON body of a `kind` change's request ("add", "remove" or "availability"), its fields checked (the
    values are checked by parse_add, item_ids and parse_availability). The HTTP routes hand bodies over unread:
    for a catalog in its own process (catalog/process.py) that keeps the decoding and checks of 10,000 items
    (~5-15 ms) off the serving process's GIL, which its engine's steps need."""
    allowed, required = BODY_FIELDS[kind]
    try:
        data = json.loads(body)
    except ValueError as e:  # not JSON, or not UTF-8
        raise InvalidRequest("body", f"is not JSON: {e}") from None
    if type(data) is not dict:
        raise InvalidRequest("body", f"must be an object with {' and '.join(sorted(allowed))}")
    missing, unknown = sorted(required - set(data)), sorted(set(data) - allowed)
    if missing:
        raise InvalidRequest(missing[0], "required")
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field (the body has {', '.join(sorted(allowed))})")
    for name, value in data.items():
        if max_items is not None and isinstance(value, list) and len(value) > max_items:
            raise InvalidRequest(name, f"at most {max_items} a change, got {len(value)}")
    return data


def _item(i: int, item: object, codebook_size: int, levels: int, texts: dict[int, str]) -> list:
    """[item_id, SID or None (a text item, recorded in `texts`), title] of items[i]."""
    if type(item) is not dict:
        raise InvalidRequest(f"items.{i}", f"must be an object with item_id and semantic_id or text, got {item!r}")
    if not ITEM_FIELDS.issuperset(item):
        unknown = sorted(set(item) - ITEM_FIELDS)
        raise InvalidRequest(f"items.{i}.{unknown[0]}", f"unknown field (an item has {sorted(ITEM_FIELDS)})")
    if "item_id" not in item:
        raise InvalidRequest(f"items.{i}.item_id", "required")
    raw = item["item_id"]
    raw = raw if type(raw) is str and raw else item_id(raw, f"items.{i}.item_id")
    sid, text, title = item.get("semantic_id"), item.get("text"), item.get("title")
    if (sid is None) == (text is None):
        raise InvalidRequest(f"items.{i}.semantic_id", "give exactly one of semantic_id and text")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest(f"items.{i}.text", "must be a non-empty string")
        texts[i] = text
    else:
        sid = semantic_id(sid, f"items.{i}.semantic_id", codebook_size, levels)
    if title is not None and not isinstance(title, str):
        raise InvalidRequest(f"items.{i}.title", f"must be a string, got {title!r}")
    return [raw, sid, title]


def _encode(texts: dict[int, str], codebook_size: int, levels: int, encode_texts: TextEncoder | None):
    """(position, SID) of every text item."""
    if not texts:
        return []
    first = f"items.{min(texts)}.text"
    if encode_texts is None:
        raise InvalidRequest(first, "this model was trained without codebooks, so an item cannot be added by its "
                                    "text: give its semantic_id")
    try:
        codes = encode_texts(list(texts.values()))
    except (ImportError, ValueError) as e:  # no encoder installed, or codebooks of another encoder
        raise InvalidRequest(first, f"the text cannot be encoded here: {e}") from None
    return [(i, semantic_id(c, f"items.{i}.text", codebook_size, levels)) for i, c in zip(texts, codes)]


def parse_availability(disable: object, enable: object) -> SetAvailability:
    change = SetAvailability(item_ids(disable, "disable", True), item_ids(enable, "enable", True))
    if not change.disable and not change.enable:
        raise InvalidRequest("disable", "give at least one item id to disable or enable")
    both = set(change.disable) & set(change.enable)
    for i, v in enumerate(change.enable):
        if v in both:
            raise InvalidRequest(f"enable.{i}", f"item id {v!r} is in disable too")
    return change


def parse_rollback(version: object, current: int) -> Rollback:
    """To `version`, by default the one before the current."""
    if version is None:
        version = current - 1
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < current:
        raise InvalidRequest("version", f"must be an earlier version, in [0, {current}), got {version!r}"
                             + (" (nothing has changed yet)" if current == 0 else ""))
    return Rollback(version)
