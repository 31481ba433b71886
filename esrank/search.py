"""The query-time pipeline. For now: a BM25 first pass over the catalogue fields."""

from __future__ import annotations

from dataclasses import dataclass

from esrank.engine import Engine

DEFAULT_FIELDS = ("title^2", "short_description", "supplier", "attributes")


@dataclass(frozen=True)
class Hit:
    rank: int
    doc_id: str
    score: float
    title: str
    supplier: str | None
    price: float | None


def bm25_query(query: str, fields: tuple[str, ...] = DEFAULT_FIELDS) -> dict:
    return {"multi_match": {"query": query, "fields": list(fields), "type": "best_fields"}}


def search(engine: Engine, index: str, query: str, *, size: int = 10,
           fields: tuple[str, ...] = DEFAULT_FIELDS) -> list[Hit]:
    """Rank products for a shopper's query.

    >>> search(engine, "products", "bluetooth speaker")[0].title  # doctest: +SKIP
    """
    body = {"size": size, "query": bm25_query(query, fields),
            "_source": ["title", "supplier", "price"]}
    hits = engine.search(index, body)["hits"]["hits"]
    return [Hit(rank, h["_id"], float(h["_score"]), h["_source"].get("title", ""),
                h["_source"].get("supplier"), h["_source"].get("price"))
            for rank, h in enumerate(hits, 1)]
