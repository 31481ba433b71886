"""UBI in the engine: the ubi_queries and ubi_events indices, written and read back."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from esrank.core.errors import EngineError
from esrank.engine import Engine
from esrank.engine.cluster import SMALL_INDEX
from esrank.ubi.log import UbiEvent, UbiQuery, parse_record, read_ndjson

log = logging.getLogger(__name__)


QUERIES_INDEX = "ubi_queries"
EVENTS_INDEX = "ubi_events"

_KEYWORD = {"type": "keyword"}
QUERIES_MAPPING = {"dynamic": False, "properties": {
    "query_id": _KEYWORD, "client_id": _KEYWORD, "session_id": _KEYWORD,
    "application": _KEYWORD, "user_query": _KEYWORD, "timestamp": {"type": "date"},
    "query_response_hit_ids": _KEYWORD,
    "query_attributes": {"type": "object", "enabled": False}}}
EVENTS_MAPPING = {"dynamic": False, "properties": {
    "action_name": _KEYWORD, "query_id": _KEYWORD, "client_id": _KEYWORD,
    "session_id": _KEYWORD, "application": _KEYWORD, "timestamp": {"type": "date"},
    "event_attributes": {"properties": {
        "object": {"properties": {"object_id": _KEYWORD, "object_id_field": _KEYWORD}},
        "position": {"properties": {"ordinal": {"type": "integer"}}}}}}}


def ensure_indices(engine: Engine) -> None:
    """Create the UBI indices when missing (the mappings OpenSearch's UBI plugin uses for the
    fields esrank reads)."""
    for index, mapping in ((QUERIES_INDEX, QUERIES_MAPPING), (EVENTS_INDEX, EVENTS_MAPPING)):
        engine.ensure_index(index, {"settings": SMALL_INDEX, "mappings": mapping})


def store(engine: Engine, queries: Iterable[UbiQuery], events: Iterable[UbiEvent]) -> int:
    """Write queries and events into the UBI indices; returns how many documents went in."""
    ensure_indices(engine)
    docs_q = [(q.query_id, q.to_doc()) for q in queries]
    docs_e = [(uuid.uuid4().hex, e.to_doc()) for e in events]
    for index, docs in ((QUERIES_INDEX, docs_q), (EVENTS_INDEX, docs_e)):
        refused = engine.bulk(index, docs) if docs else []
        if refused:
            doc_id, reason = refused[0]
            raise EngineError("store UBI records", f"{len(refused)} refused, the first "
                              f"({doc_id}): {reason}", target=index)
    return len(docs_q) + len(docs_e)


def queries_by_id(engine: Engine, query_ids: Iterable[str]) -> dict[str, UbiQuery]:
    """query id -> its UBI query (the doc ids it showed in `hit_ids`, the model that served it
    in `model`), for those of `query_ids` the engine's ubi_queries holds: one realtime request
    (`store` files a query under its query id, so a query a sidecar just wrote counts before
    a refresh).

    >>> queries_by_id(engine, ["5f0c..."])["5f0c..."].hit_ids   # doctest: +SKIP
    ('B07PXGQC1Q', 'B08L5NP6NG', ...)
    """
    found = engine.get_documents(QUERIES_INDEX, query_ids)
    out = {}
    for query_id, doc in found.items():
        record = parse_record(doc)
        if isinstance(record, UbiQuery):
            out[query_id] = record
    return out


def fetch(engine: Engine, *, page: int = 5000, since: float | None = None,
          until: float | None = None) -> tuple[list[UbiQuery], list[UbiEvent]]:
    """Every query and event in the engine's UBI indices, oldest first (none when absent);
    with `since` / `until` (epoch seconds), those timestamped in [since, until)."""
    events = [r for r in _scan(engine, EVENTS_INDEX, page, _window(since, until))
              if isinstance(r, UbiEvent)]
    return queries_in(engine, since, until, page=page), events


def queries_in(engine: Engine, since: float | None = None, until: float | None = None, *,
               page: int = 5000) -> list[UbiQuery]:
    """The UBI queries timestamped in [since, until) (epoch seconds; None: unbounded), oldest
    first, without the events `fetch` also reads (ten impressions a search)."""
    return [r for r in _scan(engine, QUERIES_INDEX, page, _window(since, until))
            if isinstance(r, UbiQuery)]


def _window(since: float | None, until: float | None) -> dict:
    """The query matching the records timestamped in [since, until)."""
    if since is None and until is None:
        return {"match_all": {}}
    return {"range": {"timestamp": {
        k: round(v * 1000) for k, v in (("gte", since), ("lt", until)) if v is not None}
        | {"format": "epoch_millis"}}}


def _scan(engine: Engine, index: str, page: int, query: dict
          ) -> Iterator[UbiQuery | UbiEvent | None]:
    if not engine.index_exists(index):
        return
    engine.refresh(index)
    after: list | None = None
    while True:
        body: dict = {"size": page, "sort": [{"timestamp": "asc"}, {"_doc": "asc"}],
                      "query": query}
        if after is not None:
            body["search_after"] = after
        hits = engine.search(index, body)["hits"]["hits"]
        for hit in hits:
            yield parse_record(hit["_source"])
        if len(hits) < page:
            return
        after = hits[-1]["sort"]


def load(engine: Engine, path: Path | None = None) -> tuple[list[UbiQuery], list[UbiEvent]]:
    """(queries, events) of a UBI ndjson file, else of the engine's UBI indices."""
    return read_ndjson(path) if path else fetch(engine)


def store_file(engine: Engine, path: Path) -> int:
    """Store a UBI ndjson file in the engine's UBI indices; how many records went in."""
    return store(engine, *read_ndjson(path))
