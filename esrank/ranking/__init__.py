"""Ranking at query time: the first pass, the sltr rescore with the active model, the
cross-encoder rerank.

- search: configurations (bm25, a model, active), their engine requests and results
"""

from __future__ import annotations

from esrank.ranking.search import (
    Hit,
    Ranker,
    SearchResult,
    parse_configuration,
    resolve_ranker,
    search,
    search_many,
)

__all__ = [
    "Hit", "Ranker", "SearchResult", "parse_configuration", "resolve_ranker", "search",
    "search_many",
]
