"""The first-pass query over the catalogue's text fields (BM25)."""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_FIELDS = ("title^2", "short_description", "supplier", "attributes")


def bm25_query(query: str, fields: Sequence[str] = DEFAULT_FIELDS) -> dict:
    """The BM25 first pass for `query` over `fields` (best field wins)."""
    return {"multi_match": {"query": query, "fields": list(fields), "type": "best_fields"}}
