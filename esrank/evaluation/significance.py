"""Paired comparison of two configurations' per-query metrics: deltas, wins/ties/losses,
significance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from esrank.judgments.metrics import METRICS, Evaluation


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    mean_a: float
    mean_b: float
    p_ttest: float
    p_randomization: float
    wins: int
    ties: int
    losses: int

    @property
    def delta(self) -> float:
        return self.mean_b - self.mean_a

    @property
    def relative(self) -> float:
        return self.delta / self.mean_a if self.mean_a else math.inf


@dataclass(frozen=True)
class Comparison:
    """B against A over the same queries: a paired test and wins/ties/losses per metric."""

    a: str
    b: str
    queries: int
    metrics: tuple[MetricComparison, ...]

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "queries": self.queries, "metrics": {
            m.metric: {"a": m.mean_a, "b": m.mean_b, "delta": m.delta, "relative": m.relative,
                       "p_ttest": m.p_ttest, "p_randomization": m.p_randomization,
                       "wins": m.wins, "ties": m.ties, "losses": m.losses}
            for m in self.metrics}}


def compare(a: tuple[str, Evaluation], b: tuple[str, Evaluation],
            metrics: Sequence[str] = METRICS, *, permutations: int = 10_000,
            seed: int = 42) -> Comparison:
    """Paired two-sided t-test and randomization test (sign flips) of B - A per metric.

    Wins/ties/losses count queries where B beats, equals (within 1e-9) or trails A.
    """
    from scipy.stats import ttest_rel

    (name_a, ev_a), (name_b, ev_b) = a, b
    queries = sorted(set(ev_a.per_query) & set(ev_b.per_query))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(permutations, len(queries)))
    rows = []
    for metric in metrics:
        xa = np.array([ev_a.per_query[q][metric] for q in queries])
        xb = np.array([ev_b.per_query[q][metric] for q in queries])
        diff = xb - xa
        if len(queries) < 2 or np.allclose(diff, diff[0]):
            p_t = 1.0 if np.allclose(diff, 0) else 0.0
        else:
            p_t = float(ttest_rel(xb, xa).pvalue)
        observed = abs(diff.mean()) if len(queries) else 0.0
        flipped = np.abs((signs * diff).mean(axis=1)) if len(queries) else np.zeros(1)
        p_r = float((np.sum(flipped >= observed - 1e-12) + 1) / (permutations + 1))
        rows.append(MetricComparison(
            metric, float(xa.mean()) if len(queries) else 0.0,
            float(xb.mean()) if len(queries) else 0.0, p_t, p_r,
            int(np.sum(diff > 1e-9)), int(np.sum(np.abs(diff) <= 1e-9)),
            int(np.sum(diff < -1e-9))))
    return Comparison(name_a, name_b, len(queries), tuple(rows))
