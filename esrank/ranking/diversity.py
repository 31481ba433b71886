"""Diversity on the page: a stage after the model (and after the cross-encoder rerank) that
re-orders the top of a ranking so one page is not ten near-identical products of one brand.

Two knobs, off by default, named in the configuration (esrank.ranking.configuration):
- `+mmrL`: maximal marginal relevance over the products' vectors: the pool is rebuilt one
  product at a time, each time the one with the highest L * relevance - (1 - L) * (its
  highest cosine to a product already placed); relevance is the ranking's score min-max
  normalised over the pool. L = 1 is the ranking's own order; lower trades relevance for
  products unlike the ones above.
- `+capN`: at most N products per brand (the catalogue's `supplier`) in the top of the page;
  a product past its brand's cap moves below the capped products, all in their order. It
  runs last, so the cap holds whatever MMR did.

The stage reorders the top POOL hits (fewer where scores change scale: see
esrank.ranking.search) and leaves the rest of the ranking as it was. Each hit keeps its score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from esrank.catalogue.index import VECTOR_FIELD
from esrank.catalogue.lookup import fetch_sources
from esrank.engine import Engine

POOL = 50  # the top hits the stage reorders: a page of 10 picks from five pages' worth
BRAND_FIELD = "supplier"


@dataclass(frozen=True)
class Diversity:
    """The stage's knobs: `cap` products per brand at most (0: no cap), MMR's `mmr` = λ in
    (0, 1] (None: no MMR; 1: the ranking's order)."""

    cap: int = 0
    mmr: float | None = None

    @property
    def on(self) -> bool:
        return bool(self.cap) or self.mmr is not None

    @property
    def suffix(self) -> str:
        """Its part of a configuration name, e.g. "+mmr0.7+cap2" ("" when off)."""
        return ((f"+mmr{self.mmr:g}" if self.mmr is not None else "")
                + (f"+cap{self.cap}" if self.cap else ""))


@dataclass(frozen=True)
class Pooled:
    """What the stage knows of one pooled hit."""

    doc_id: str
    score: float
    brand: str | None  # brand_key of its supplier
    vector: np.ndarray | None


def brand_key(supplier: str | None) -> str | None:
    """The brand a cap counts: the supplier, case and outer spaces ignored (None: no brand,
    never capped)."""
    key = (supplier or "").strip().casefold()
    return key or None


def reordered(pool: Sequence[Pooled], diversity: Diversity) -> list[int]:
    """The pool's positions in their new order: MMR, then the cap.

    >>> reordered([Pooled("a", 3.0, "x", None), Pooled("b", 2.0, "x", None),
    ...            Pooled("c", 1.0, "y", None)], Diversity(cap=1))
    [0, 2, 1]
    """
    order = list(range(len(pool)))
    if diversity.mmr is not None and pool:
        order = mmr_order([p.score for p in pool], _unit_rows([p.vector for p in pool]),
                          diversity.mmr)
    if diversity.cap:
        order = capped(order, [p.brand for p in pool], diversity.cap)
    return order


def mmr_order(scores: Sequence[float], vectors: np.ndarray, lam: float) -> list[int]:
    """Maximal marginal relevance: positions picked greedily by lam * relevance - (1 - lam) *
    (highest cosine to the picked ones), relevance = `scores` min-max normalised; ties go to
    the earlier position, so lam = 1 keeps an order sorted by score. `vectors`: unit rows."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.max() - scores.min()
    relevance = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    similar = vectors @ vectors.T
    left, order, closest = list(range(len(scores))), [], np.zeros(len(scores))
    while left:
        gain = lam * relevance[left] - (1 - lam) * closest[left]
        pick = left.pop(int(np.argmax(gain)))  # argmax: the first of equal gains
        closest = similar[pick] if not order else np.maximum(closest, similar[pick])
        order.append(pick)
    return order


def capped(order: Sequence[int], brands: Sequence[str | None], cap: int) -> list[int]:
    """`order` with each brand's products past its first `cap` moved below the rest, both
    parts in their order (a product without a brand is never moved)."""
    seen: dict[str, int] = {}
    kept, moved = [], []
    for i in order:
        brand = brands[i]
        if brand is not None and seen.get(brand, 0) >= cap:
            moved.append(i)
            continue
        if brand is not None:
            seen[brand] = seen.get(brand, 0) + 1
        kept.append(i)
    return kept + moved


def diversify(engine: Engine, index: str, pages: list[list[dict]], diversity: Diversity,
              pool: int) -> list[list[dict]]:
    """Each query's engine hits (rank order) with the stage applied to its top `pool`; the
    brands and vectors it needs that the hits' `_source` lacks are read for every query's
    pool in one search (per 500 products)."""
    if not diversity.on:
        return pages
    fields = [BRAND_FIELD] * bool(diversity.cap) + [VECTOR_FIELD] * (diversity.mmr is not None)
    shown = {h["_id"]: h.get("_source") or {} for p in pages for h in p[:pool]}
    missing = {d for d, src in shown.items() if any(f not in src for f in fields)}
    facts = fetch_sources(engine, index, missing, fields) if missing else {}
    out = []
    for page in pages:
        head = page[:pool]
        known = [shown[h["_id"]] | facts.get(h["_id"], {}) for h in head]
        order = reordered([Pooled(h["_id"], float(h["_score"]), brand_key(k.get(BRAND_FIELD)),
                                  _vector(k.get(VECTOR_FIELD))) for h, k in zip(head, known,
                                                                                strict=True)],
                          diversity)
        out.append([head[i] for i in order] + page[pool:])
    return out


def intra_list(brands: Sequence[str | None], vectors: Sequence[np.ndarray | None]
               ) -> tuple[int, float]:
    """A list's diversity: its distinct brands (brand_key; no brand does not count) and the
    mean cosine distance (1 - cosine) over its pairs of products (0.0 under two products).

    >>> intra_list(["A", "a", "B"], [np.array([1.0, 0]), np.array([1.0, 0]), np.array([0, 1.0])])
    (2, 0.6666666666666666)
    """
    distinct = len({b for b in map(brand_key, brands) if b is not None})
    rows = _unit_rows(list(vectors))
    pairs = [1.0 - float(rows[i] @ rows[j]) for i, j in combinations(range(len(rows)), 2)]
    return distinct, float(np.mean(pairs)) if pairs else 0.0


def _vector(value) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)


def _unit_rows(vectors: Sequence[np.ndarray | None]) -> np.ndarray:
    """The vectors as unit rows; a missing (or zero) one is a zero row: like nothing."""
    dims = next((len(v) for v in vectors if v is not None), 1)
    rows = np.array([v if v is not None else np.zeros(dims) for v in vectors],
                    dtype=np.float64).reshape(len(vectors), dims)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
