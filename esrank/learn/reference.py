"""Reference bins: what each feature looked like on the pages a model serves, stored with the
model so that live traffic can be compared with it later (esrank.monitoring.drift).

The population is the one live traffic shows: each training query's top `top` (10) rows as
the model orders its candidates (the window rows; every row of a table logged without a
window), which is what a served page holds. Per feature: up to BINS (10) quantile bins of
the finite values, fewer when they are under half the rows so that each holds about
MIN_SHARE (5%) of them (edges are the distinct quantiles, each a value the feature took; bin
i holds edges[i-1] < x <= edges[i], the first and last bins are open), and the share of
missing (NaN) values as a bin of its own. Shares are of all rows, so a feature's bins and its
missing share sum to 1.

    {"population": "...", "top": 10, "rows": 970, "queries": 97,
     "features": {"title_bm25": {"edges": [1.2, ...], "shares": [0.1, ...], "missing": 0.0}}}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from esrank.core.errors import InputError, ModelError

BINS = 10
MIN_SHARE = 0.05  # of the rows, in each finite bin (about: the quantiles of the finite values)
TOP = 10  # a served page


@dataclass(frozen=True)
class FeatureBins:
    """One feature's reference: the bins' inner edges, each finite bin's share of the rows
    (len(edges) + 1 of them) and the missing share."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    missing: float

    def shares_of(self, values: np.ndarray) -> tuple[np.ndarray, float]:
        """How `values` (NaN = missing) fall into these bins: (each finite bin's share of the
        values, the missing share); all zero for no values."""
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            return np.zeros(len(self.edges) + 1), 0.0
        finite = values[~np.isnan(values)]
        counts = np.bincount(np.searchsorted(self.edges, finite, side="left"),
                             minlength=len(self.edges) + 1)
        return counts / len(values), 1.0 - len(finite) / len(values)

    def to_dict(self) -> dict:
        return {"edges": [float(e) for e in self.edges],
                "shares": [round(float(s), 6) for s in self.shares],
                "missing": round(float(self.missing), 6)}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureBins:
        return cls(tuple(d["edges"]), tuple(d["shares"]), d["missing"])


def feature_bins(values: np.ndarray, bins: int = BINS) -> FeatureBins:
    """The reference bins of one feature's values (NaN = missing).

    >>> feature_bins(np.array([0.0, 0, 0, 1, 1, float("nan")])).to_dict()
    {'edges': [0.0, 1.0], 'shares': [0.5, 0.333333, 0.0], 'missing': 0.166667}
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    # a bin holds at least MIN_SHARE of the rows: a mostly-missing feature gets fewer finite
    # bins (tiny bins make a live sample's PSI noise, not drift)
    count = max(1, min(bins, int(len(finite) / max(len(values), 1) / MIN_SHARE + 1e-9)))
    # "lower": each edge is a value the feature took, so a discrete feature's bins are its
    # values, not points interpolated between them
    quantiles = np.linspace(0, 1, count + 1)[1:-1]
    edges = (tuple(float(e) for e in np.unique(np.quantile(finite, quantiles, method="lower")))
             if len(finite) else ())
    base = FeatureBins(edges, (), 0.0)
    shares, missing = base.shares_of(values)
    return FeatureBins(edges, tuple(float(s) for s in shares), missing)


@dataclass(frozen=True)
class Reference:
    """Every feature's reference bins (feature-set order) and the population they describe."""

    features: dict[str, FeatureBins]
    rows: int
    queries: int
    top: int = TOP
    population: str = "each training query's top rows as the model orders its candidates"

    def to_dict(self) -> dict:
        return {"population": self.population, "top": self.top, "rows": self.rows,
                "queries": self.queries,
                "features": {n: b.to_dict() for n, b in self.features.items()}}

    @classmethod
    def from_dict(cls, d: dict, source: str = "meta.json") -> Reference:
        """Read `to_dict`'s form; ModelError naming `source` and the field when malformed."""
        try:
            return cls({n: FeatureBins.from_dict(b) for n, b in d["features"].items()},
                       int(d["rows"]), int(d["queries"]), int(d.get("top", TOP)),
                       d.get("population", cls.population))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: reference bins are malformed ({exc!r})") from exc


def served_rows(qids: Sequence[str], ranks: Sequence[int] | None, scores: np.ndarray,
                top: int = TOP) -> np.ndarray:
    """The rows a served page holds: per query, its `top` candidate rows (rank > 0; all rows
    without ranks) by descending model score (ties: table order)."""
    by_query: dict[str, list[int]] = {}
    for i, qid in enumerate(qids):
        if ranks is None or ranks[i] > 0:
            by_query.setdefault(qid, []).append(i)
    chosen = [i for rows in by_query.values()
              for i in sorted(rows, key=lambda r: -scores[r])[:top]]
    return np.asarray(sorted(chosen), dtype=np.int64)


def reference_of(values: np.ndarray, names: Sequence[str], qids: Sequence[str],
                 ranks: Sequence[int] | None, scores: np.ndarray, *, top: int = TOP,
                 skip: Sequence[str] = ()) -> Reference:
    """The reference bins of a table's served rows (`served_rows`) for each feature of
    `names` but `skip` (features the model does not use: excluded ones)."""
    rows = served_rows(qids, ranks, scores, top)
    if len(rows) == 0:
        raise InputError("no candidate rows to take reference bins from")
    return Reference({n: feature_bins(values[rows, i]) for i, n in enumerate(names)
                      if n not in skip}, len(rows), len({qids[i] for i in rows}), top)
