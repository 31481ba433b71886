"""Exposure fairness: does each supplier get the attention its relevance earns?

In the spirit of the TREC Fair Ranking track's expected exposure (Diaz et al. 2020): a
configuration's top 10 gives its products attention by position, and the judgments say how
much relevance each supplier (the catalogue's `supplier` field: the brand) brings to a query.

- exposure: rank r of the top 10 gets the weight 1/log2(1 + r), the discount NDCG@10 already
  assumes (1, 0.631, 0.5, 0.431, ...); each query shares one unit of exposure among the
  suppliers of the products it shows, in proportion to their weights;
- relevance: each query shares one unit of relevance among the suppliers of its judged
  products, in proportion to their grades (all judged products, shown or not);
- both are averaged over the queries with a grade above 0 (the same queries for every
  configuration), so each query counts once; a query that shows nothing gives its unit of
  exposure to nobody (its suppliers are under-exposed); a product with no supplier counts
  as "(none)";
- disparity: half the L1 distance between the two distributions (their total variation), 0
  when every supplier's exposure share equals its relevance share, 1 when exposure goes only
  to suppliers with no relevance (or nowhere). `per_query` is the mean of the same distance
  per query, where a supplier's over- and under-exposure on different queries do not
  cancel.

Unjudged products shown still take exposure (a shopper sees them) but earn no relevance;
`judged_share` says how much of the exposure fell on judged products (mean over the queries
that show something).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from esrank.judgments.metrics import Evaluator, Run

DEPTH = 10  # the page whose exposure is shared
TOP = 5  # the most over- and under-exposed suppliers reported
NO_SUPPLIER = "(none)"


@dataclass(frozen=True)
class SupplierShare:
    """One supplier's mean share of the exposure and of the relevance."""

    supplier: str
    exposure: float
    relevance: float

    def to_dict(self) -> dict:
        return {"supplier": self.supplier, "exposure": self.exposure,
                "relevance": self.relevance}


@dataclass(frozen=True)
class Exposure:
    """A configuration's exposure against relevance over a query set: the disparity (0:
    exposure proportional to relevance), its per-query mean, the queries counted (those
    with a grade above 0) and how many of them showed nothing, the suppliers counted, the
    share of exposure on judged products, and the `TOP` most over-exposed (exposure -
    relevance, largest first) and under-exposed (relevance - exposure) suppliers.

    >>> exposure_of(run, evaluator, {"1": "Acme", "2": "Bolt"}).disparity  # doctest: +SKIP
    0.1414
    """

    disparity: float
    per_query: float
    queries: int
    empty: int
    suppliers: int
    judged_share: float
    over: tuple[SupplierShare, ...]
    under: tuple[SupplierShare, ...]

    def to_dict(self) -> dict:
        return {"disparity": self.disparity, "per_query_disparity": self.per_query,
                "queries": self.queries, "empty_queries": self.empty,
                "suppliers": self.suppliers,
                "judged_share": self.judged_share, "depth": DEPTH,
                "over_exposed": [s.to_dict() for s in self.over],
                "under_exposed": [s.to_dict() for s in self.under]}


def weight(rank: int) -> float:
    """The attention rank `rank` (from 1) gets: the DCG discount."""
    return 1.0 / math.log2(1 + rank)


def docs_to_look_up(run: Run, evaluator: Evaluator) -> set[str]:
    """The doc ids whose supplier `exposure_of` reads: each query's top 10 and judged docs."""
    return ({d for docs in run.values() for d in list(docs)[:DEPTH]}
            | {d for q in evaluator.queries for d in evaluator.grades(q)})


def exposure_of(run: Run, evaluator: Evaluator, supplier: Mapping[str, str | None]
                ) -> Exposure:
    """`run`'s exposure by supplier against the relevance the judgments give each supplier
    (`supplier`: doc id -> its supplier, None or absent: NO_SUPPLIER)."""
    exposed: dict[str, float] = defaultdict(float)
    earned: dict[str, float] = defaultdict(float)
    distances, judged, empty = [], [], 0
    for query in evaluator.queries:
        grades = evaluator.grades(query)
        if not any(g > 0 for g in grades.values()):
            continue
        shown = list(dict.fromkeys(run.get(query, ())))[:DEPTH]
        e = _shares((supplier.get(d), weight(r)) for r, d in enumerate(shown, 1))
        rel = _shares((supplier.get(d), g) for d, g in grades.items() if g > 0)
        distances.append(_distance(e, rel))
        if shown:
            judged.append(sum(weight(r) for r, d in enumerate(shown, 1) if d in grades)
                          / sum(map(weight, range(1, len(shown) + 1))))
        empty += not shown
        for name, share in e.items():
            exposed[name] += share
        for name, share in rel.items():
            earned[name] += share
    n = len(distances) or 1
    shares = [SupplierShare(s, exposed[s] / n, earned[s] / n) for s in {*exposed, *earned}]
    over = sorted((s for s in shares if s.exposure > s.relevance),
                  key=lambda s: (s.relevance - s.exposure, s.supplier))
    under = sorted((s for s in shares if s.relevance > s.exposure),
                   key=lambda s: (s.exposure - s.relevance, s.supplier))
    return Exposure(
        disparity=_distance({s.supplier: s.exposure for s in shares},
                            {s.supplier: s.relevance for s in shares}),
        per_query=sum(distances) / n, queries=len(distances), empty=empty,
        suppliers=len(shares), judged_share=sum(judged) / (len(judged) or 1),
        over=tuple(over[:TOP]), under=tuple(under[:TOP]))


def _shares(weighted: Iterable[tuple[str | None, float]]) -> dict[str, float]:
    """Supplier -> its share of the weights (one unit in all)."""
    out: dict[str, float] = defaultdict(float)
    for name, w in weighted:
        out[name or NO_SUPPLIER] += w
    total = sum(out.values())
    return {name: w / total for name, w in out.items()}


def _distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Half the L1 distance between two distributions over suppliers; exposure a query did
    not give (nothing shown) counts as given to nobody relevant."""
    return (sum(abs(a.get(s, 0.0) - b.get(s, 0.0)) for s in {*a, *b})
            + abs(sum(a.values()) - sum(b.values()))) / 2
