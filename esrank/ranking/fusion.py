"""The baselines a search team would run instead of learned ranking, computed by esrank from the
recall stage's two lists (so they run the same on both engines):

- `knn`: vector search alone, the kNN list in its order;
- `rrf`: reciprocal rank fusion, score = sum over the lists of 1 / (60 + rank);
- `linear`: min-max normalised scores, weight * BM25 + (1 - weight) * cosine, a doc absent
  from a list scoring 0 there (the normalisation OpenSearch's hybrid search applies).

Ties keep the candidate set's order (BM25's, then kNN's).
"""

from __future__ import annotations

from collections.abc import Sequence

from esrank.catalogue.recall import Candidates

FUSED = ("knn", "rrf", "linear")  # configuration names
RRF_K = 60  # the rank constant of reciprocal rank fusion (both engines' default)
LINEAR_GRID = tuple(i / 10 for i in range(11))  # BM25 weights the linear mix is tuned over


def fuse(kind: str, candidates: Candidates, weight: float = 0.5) -> list[tuple[str, float]]:
    """The candidates ranked by baseline `kind` (FUSED): (doc id, fused score) in rank order.

    >>> fuse("rrf", Candidates((("a", 9.0), ("b", 4.0)), (("b", 0.9), ("c", 0.8))))[0][0]
    'b'
    """
    if kind == "knn":
        return list(candidates.knn)
    if kind == "rrf":
        scores = _summed([{d: 1 / (RRF_K + r) for r, (d, _) in enumerate(listed, 1)}
                          for listed in (candidates.bm25, candidates.knn)], (1.0, 1.0))
    elif kind == "linear":
        scores = _summed([_min_max(candidates.bm25), _min_max(candidates.knn)],
                         (weight, 1 - weight))
    else:
        raise ValueError(f"unknown fusion {kind!r}")
    order = {d: i for i, d in enumerate(candidates.ids)}
    return sorted(scores.items(), key=lambda ds: (-ds[1], order[ds[0]]))


def _min_max(listed: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores scaled to 0..1 over the list (all 1 when they are equal)."""
    if not listed:
        return {}
    low, high = min(s for _, s in listed), max(s for _, s in listed)
    return {d: (s - low) / (high - low) if high > low else 1.0 for d, s in listed}


def _summed(parts: Sequence[dict[str, float]], weights: Sequence[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part, weight in zip(parts, weights, strict=True):
        for doc, score in part.items():
            out[doc] = out.get(doc, 0.0) + weight * score
    return out
