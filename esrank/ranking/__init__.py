"""Ranking at query time: the first pass, the sltr rescore with the active model, the
cross-encoder rerank, diversity on the page.

- configuration: configuration names, the one grammar (NAME+rerankN+mmrL+capN)
- search: configurations (bm25, a model, active), their engine requests and results
- diversity: the stage after the model (MMR over the product vectors, a cap per brand)
"""

from __future__ import annotations

from esrank.ranking.configuration import Configuration, parse_configuration
from esrank.ranking.diversity import Diversity
from esrank.ranking.search import (
    Hit,
    Ranker,
    SearchResult,
    resolve_ranker,
    search,
    search_many,
)

__all__ = [
    "Configuration", "Diversity", "Hit", "Ranker", "SearchResult", "parse_configuration",
    "resolve_ranker", "search", "search_many",
]
