"""User Behavior Insights (UBI): the query and event records OpenSearch's UBI plugin and
clients write, read from ndjson files or from the engine's `ubi_queries` / `ubi_events` indices,
and written there by the sidecar.

A query says what was asked (`query_id`, `user_query`, `client_id`) and, when the sidecar
served it, how (`query_attributes`: the configuration, the arm, the shopper params used).
An event says what a shopper did with one result (`action_name`: impression, click,
add_to_cart, purchase, ...) at a position (`event_attributes.position.ordinal`, 0-based).

>>> queries, events = read_ndjson("ubi_queries_events.ndjson")   # doctest: +SKIP
>>> events[0].action, events[0].position                          # doctest: +SKIP
('impression', 1)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from esrank.core.errors import InputError

log = logging.getLogger(__name__)

APPLICATION = "esrank"
UNKNOWN_MODEL = "unknown"  # a query no sidecar served: no ranker in its attributes


@dataclass(frozen=True)
class UbiQuery:
    """One search as UBI records it; `attributes` are esrank's serving facts when the sidecar
    served it (configuration, arm, shopper params)."""

    query_id: str
    query: str
    client_id: str | None = None
    session_id: str | None = None
    timestamp: float = 0.0  # seconds since the epoch
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    hit_ids: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        """The model that served it (the sidecar's `ranker` attribute), else UNKNOWN_MODEL."""
        ranker = self.attributes.get("ranker")
        return ranker if isinstance(ranker, str) and ranker else UNKNOWN_MODEL

    def to_doc(self) -> dict:
        return {"query_id": self.query_id, "user_query": self.query,
                "client_id": self.client_id, "session_id": self.session_id,
                "application": APPLICATION, "timestamp": _iso(self.timestamp),
                "query_attributes": self.attributes,
                "query_response_hit_ids": list(self.hit_ids)}


@dataclass(frozen=True)
class UbiEvent:
    """One shopper action on one result; `position` is 1-based (UBI's ordinal + 1)."""

    action: str
    query_id: str | None
    doc_id: str | None
    position: int | None = None
    client_id: str | None = None
    session_id: str | None = None
    timestamp: float = 0.0

    def to_doc(self) -> dict:
        attributes: dict[str, Any] = {}
        if self.doc_id is not None:
            attributes["object"] = {"object_id": self.doc_id, "object_id_field": "id"}
        if self.position is not None:
            attributes["position"] = {"ordinal": self.position - 1}
        return {"action_name": self.action, "query_id": self.query_id,
                "client_id": self.client_id, "session_id": self.session_id,
                "application": APPLICATION, "timestamp": _iso(self.timestamp),
                "event_attributes": attributes}


def parse_record(doc: dict) -> UbiQuery | UbiEvent | None:
    """A UBI document as a query (it has `user_query` and no `action_name`) or an event;
    None for what is neither (a bulk action line, a query without text)."""
    if len(doc) == 1 and next(iter(doc)) in ("index", "create"):
        return None
    qid = doc.get("query_id") if isinstance(doc.get("query_id"), str) else None
    when = _epoch(doc.get("timestamp"))
    action = doc.get("action_name")
    if action is None:
        text = doc.get("user_query")
        if not qid or not isinstance(text, str) or not text.strip():
            return None
        hits = doc.get("query_response_hit_ids") or ()
        attrs = doc.get("query_attributes")
        return UbiQuery(qid, text, _str(doc.get("client_id")), _str(doc.get("session_id")),
                        when, attrs if isinstance(attrs, dict) else {},
                        tuple(str(h) for h in hits) if isinstance(hits, list) else ())
    attrs = doc.get("event_attributes") if isinstance(doc.get("event_attributes"), dict) else {}
    obj = attrs.get("object") if isinstance(attrs.get("object"), dict) else {}
    pos = attrs.get("position") if isinstance(attrs.get("position"), dict) else {}
    ordinal = pos.get("ordinal")
    position = (int(ordinal) + 1 if isinstance(ordinal, int | float)
                and not isinstance(ordinal, bool) else None)
    doc_id = obj.get("object_id")
    return UbiEvent(str(action), qid, None if doc_id is None else str(doc_id), position,
                    _str(doc.get("client_id")), _str(doc.get("session_id")), when)


def read_ndjson(path: str | Path) -> tuple[list[UbiQuery], list[UbiEvent]]:
    """Queries and events from a UBI ndjson file (bulk action lines allowed), in file order.

    An event that also carries `user_query` (some clients write the text on every event)
    yields the query too when its id has not been seen.
    """
    source = str(path)
    queries: dict[str, UbiQuery] = {}
    events: list[UbiEvent] = []
    for line_no, text in _lines(Path(path)):
        if not text.strip():
            continue
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg}", source=source, line=line_no) from None
        if not isinstance(doc, dict):
            raise InputError("expected a JSON object", source=source, line=line_no)
        record = parse_record(doc)
        if isinstance(record, UbiEvent):
            events.append(record)
            text_of = doc.get("user_query")
            if (record.query_id and record.query_id not in queries
                    and isinstance(text_of, str) and text_of.strip()):
                queries[record.query_id] = UbiQuery(record.query_id, text_of,
                                                    record.client_id, record.session_id,
                                                    record.timestamp)
        elif record is not None:
            queries[record.query_id] = record
    return list(queries.values()), events


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file, read as it goes (UBI logs can be large)."""
    try:
        with path.open(encoding="utf-8") as f:
            yield from enumerate(f, start=1)
    except OSError as e:
        raise InputError(f"cannot read UBI log: {e.strerror}", source=str(path)) from e


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch(value: Any) -> float:
    """UBI timestamps come as ISO-8601 text or epoch milliseconds; 0 when absent."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")
