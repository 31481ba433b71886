"""What a request to the sidecar may hold: the JSON body checked field by field, texts and
names within the OpenAPI spec's bounds. Every refusal is a ClientError naming the field."""

from __future__ import annotations

import json
import re

from flask import request

from esrank.core.errors import InputError
from esrank.personal.shopper import MAX_BRANDS, ShopperContext
from esrank.ubi.log import UbiEvent

# the spec's `pattern: "\S"` as JSON Schema (ECMAScript) reads it: Python's \s also counts
# the control characters \x1c-\x1f and \x85 as space
NON_SPACE = re.compile("[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
                       "\u205f\u3000\ufeff]")


class ClientError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


MAX_DEPTH = 16  # the deepest body the API takes is 3 levels (events[i].field)


def json_value(raw: bytes) -> object:
    """`raw` as JSON: UTF-8, well-formed, at most MAX_DEPTH levels deep, every string Unicode
    text (no lone surrogate such as "\\ud800", which no tokenizer or engine takes); ValueError
    saying what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8 (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON at line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}") from exc
    except RecursionError as exc:
        raise ValueError(f"the JSON is nested too deeply (at most {MAX_DEPTH} levels)") from exc
    pending = [(data, "the body", 1)]
    while pending:
        value, where, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"the JSON is nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(value, dict):
            for key, item in value.items():
                _unicode(key, f"a field name in {where}")
                pending.append((item, key if where == "the body" else f"{where}.{key}",
                                depth + 1))
        elif isinstance(value, list):
            pending += [(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
        else:
            _unicode(value, where)
    return data


def _unicode(value: object, where: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where} holds a lone surrogate ({value[exc.start]!r} at "
                             f"character {exc.start}), not Unicode text") from None


def body(required: dict[str, type], optional: dict[str, type]) -> dict:
    """The request's JSON object, checked field by field (400 naming the field)."""
    raw = request.get_data(cache=True)
    if not request.is_json:
        raise ClientError(415, "send Content-Type: application/json")
    try:
        data = json_value(raw)
    except ValueError as exc:
        raise ClientError(400, str(exc)) from exc
    if not isinstance(data, dict):
        raise ClientError(400, "the body must be a JSON object")
    unknown = set(data) - set(required) - set(optional)
    if unknown:
        raise ClientError(400, f"unknown field(s) {sorted(unknown)}; expected "
                               f"{sorted([*required, *optional])}")
    for name, kind in {**required, **optional}.items():
        if name not in data:
            if name in required:
                raise ClientError(400, f"field {name!r} is required")
            continue
        value = data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ClientError(400, f"field {name!r} must be {kind.__name__}, "
                                   f"got {type(value).__name__}")
    return data


def texts(values: list, field: str, max_texts: int, max_chars: int) -> list[str]:
    """1..max_texts non-blank strings of at most max_chars each."""
    if not values:
        raise ClientError(400, f"field {field!r} must not be empty")
    if len(values) > max_texts:
        raise ClientError(400, f"{len(values)} texts; at most {max_texts} per request")
    for i, t in enumerate(values):
        if not isinstance(t, str):
            raise ClientError(400, f"{field}[{i}] must be a string, got {type(t).__name__}")
        if not NON_SPACE.search(t):
            raise ClientError(400, f"{field}[{i}] is empty (or only whitespace)")
        if len(t) > max_chars:
            raise ClientError(400, f"{field}[{i}] has {len(t)} characters; at most {max_chars}")
    return values


def names(values: list, field: str, max_items: int = 8, max_chars: int = 200) -> list[str]:
    """Configuration (or model, doc) names: 1..max_items non-blank strings of at most
    max_chars (the spec's limits)."""
    if not values or len(values) > max_items:
        raise ClientError(400, f"field {field!r} must hold 1..{max_items} names, got "
                               f"{len(values)}")
    for i, value in enumerate(values):
        where = f"{field}[{i}]" if max_items > 1 else field
        if not isinstance(value, str) or not NON_SPACE.search(value):
            raise ClientError(400, f"{where} must be a non-blank string")
        if len(value) > max_chars:
            raise ClientError(400, f"{where} has {len(value)} characters; at most {max_chars}")
    return values


def name(data: dict, field: str, default: str | None = None, max_chars: int = 200) -> str:
    """One name field of the body (see `names`)."""
    return names([data.get(field, default)], field, 1, max_chars)[0]


def bounded(data: dict, field: str, default: int, low: int, high: int) -> int:
    """An integer field within the spec's bounds (rejected, never clamped)."""
    value = data.get(field, default)
    if not low <= value <= high:
        raise ClientError(400, f"field {field!r} must be {low}..{high}, got {value}")
    return value


def ids(values: list, field: str, max_items: int) -> list[str]:
    """0..max_items ids: non-blank strings of at most 200 characters (the spec's Id)."""
    if len(values) > max_items:
        raise ClientError(400, f"field {field!r} holds at most {max_items} items, got "
                               f"{len(values)}")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not NON_SPACE.search(value) or len(value) > 200:
            raise ClientError(400, f"{field}[{i}] must be a non-blank string of at most 200 "
                                   "characters")
    return values


def optional_id(data: dict, field: str, where: str) -> str | None:
    """An optional Id field (absent: None; present: a non-blank string)."""
    if field not in data:
        return None
    value = data[field]
    if not isinstance(value, str) or not NON_SPACE.search(value) or len(value) > 200:
        raise ClientError(400, f"{where}.{field} must be a non-blank string of at most 200 "
                               "characters")
    return value


def shopper(value: dict) -> ShopperContext:
    """The request's `shopper` object (the spec's Shopper; `body` checked it is an object)
    as a ShopperContext."""
    unknown = set(value) - {"user_id", "session_id", "brands", "price_band"}
    if unknown:
        raise ClientError(400, f"shopper: unknown field(s) {sorted(unknown)}; expected "
                               "user_id, session_id, brands, price_band")
    brands = value.get("brands", [])
    if not isinstance(brands, list):
        raise ClientError(400, "shopper.brands must be a list of brand names")
    band = value.get("price_band")
    if "price_band" in value and (not isinstance(band, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in band)):
        raise ClientError(400, "shopper.price_band must be [low, high] in euros")
    try:
        return ShopperContext(optional_id(value, "user_id", "shopper"),
                              optional_id(value, "session_id", "shopper"),
                              tuple(ids(brands, "shopper.brands", MAX_BRANDS)),
                              tuple(float(x) for x in band) if band is not None else None)
    except InputError as exc:
        raise ClientError(400, str(exc)) from exc


EVENT_FIELDS = ("action", "query_id", "doc_id", "position", "user_id", "session_id")


def events(values: list, now: float) -> list[UbiEvent]:
    """The /events body's events (the spec's items; `body` checked they are a list) as UBI
    events stamped `now`."""
    if not 1 <= len(values) <= 100:
        raise ClientError(400, "field 'events' must hold 1..100 events")
    out = []
    for i, e in enumerate(values):
        where = f"events[{i}]"
        if not isinstance(e, dict):
            raise ClientError(400, f"{where} must be an object")
        unknown = set(e) - set(EVENT_FIELDS)
        if unknown:
            raise ClientError(400, f"{where}: unknown field(s) {sorted(unknown)}; expected "
                                   f"{sorted(EVENT_FIELDS)}")
        for required in ("action", "query_id", "doc_id"):
            if required not in e:
                raise ClientError(400, f"{where}.{required} is required")
        action = e["action"]
        if not isinstance(action, str) or not NON_SPACE.search(action) or len(action) > 50:
            raise ClientError(400, f"{where}.action must be a non-blank string of at most 50 "
                                   "characters")
        position = e.get("position")
        if "position" in e and (not isinstance(position, int) or isinstance(position, bool)
                                or not 1 <= position <= 10_000):
            raise ClientError(400, f"{where}.position must be an integer in 1..10000")
        out.append(UbiEvent(action, optional_id(e, "query_id", where),
                            optional_id(e, "doc_id", where), position,
                            optional_id(e, "user_id", where), optional_id(e, "session_id", where),
                            now))
    return out
