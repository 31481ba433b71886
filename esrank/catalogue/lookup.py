"""Reading products back from a built index: their texts, and the facts profiles need."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from esrank.catalogue.products import text_of
from esrank.core.batches import batched
from esrank.engine import Engine

log = logging.getLogger(__name__)


def fetch_sources(engine: Engine, index: str, doc_ids: Iterable[str], fields: list[str]
                  ) -> dict[str, dict]:
    """doc id -> those fields of its source, for the ids the index holds."""
    ids, out = sorted(set(doc_ids)), {}
    for chunk in batched(ids, 500):
        result = engine.search(index, {"size": len(chunk), "query": {"ids": {"values": chunk}},
                                       "_source": fields})
        out.update({h["_id"]: h["_source"] for h in result["hits"]["hits"]})
    return out


def fetch_texts(engine: Engine, index: str, doc_ids: Iterable[str]) -> dict[str, str]:
    """doc id -> the text a cross-encoder reads (`text_of`), for the ids the index holds."""
    return {d: text_of(src) for d, src in fetch_sources(
        engine, index, doc_ids, ["title", "short_description"]).items()}


def product_facts(engine: Engine, index: str, doc_ids: Iterable[str]
                  ) -> dict[str, ProductFacts]:
    """doc id -> its brand (supplier) and price, for the ids the index holds (profiles)."""
    return {d: ProductFacts(src.get("supplier"), src.get("price")) for d, src in
            fetch_sources(engine, index, doc_ids, ["supplier", "price"]).items()}


@dataclass(frozen=True)
class ProductFacts:
    """What a profile needs to know of a product."""

    brand: str | None
    price: float | None  # euros
