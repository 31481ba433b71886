"""Agreement between two judgment lists on the (query, doc) pairs both judge: Cohen's kappa
(plain and weighted), Spearman and Kendall, overall and per query."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from esrank.judgments.lists import JudgmentList

# --------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[int], b: Sequence[int], *, weights: str | None = None) -> float:
    """Cohen's kappa from a confusion matrix; ``weights="quadratic"`` for weighted kappa.

    Categories span min..max of both raters' grades. NaN when undefined (expected
    disagreement 0, e.g. both raters constant and equal, or no pairs).
    """
    x, y = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if x.size == 0 or x.shape != y.shape:
        return math.nan
    lo = int(min(x.min(), y.min()))
    k = int(max(x.max(), y.max())) - lo + 1
    observed = np.zeros((k, k))
    np.add.at(observed, (x - lo, y - lo), 1)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) / max(k - 1, 1)) ** 2
    else:
        raise ValueError(f"weights must be None or 'quadratic', not {weights!r}")
    denom = float((w * expected).sum())
    if denom == 0.0:
        return math.nan
    return 1.0 - float((w * observed).sum()) / denom


def pair_stats(x: Sequence[int], y: Sequence[int]) -> dict[str, float]:
    """n, exact agreement, kappa, weighted kappa, Spearman and Kendall of paired grades."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y).statistic if len(x) >= 2 else math.nan
        tau = stats.kendalltau(x, y).statistic if len(x) >= 2 else math.nan
    return {
        "n": len(x),
        "exact": float(np.mean(np.asarray(x) == np.asarray(y))) if x else math.nan,
        "kappa": cohen_kappa(x, y),
        "weighted_kappa": cohen_kappa(x, y, weights="quadratic"),
        "spearman": float(rho),
        "kendall": float(tau),
    }


def agreement(a: JudgmentList, b: JudgmentList) -> dict[str, Any]:
    """Agreement over the (query text, doc) pairs both lists judge.

    Returns ``{"n", "exact", "kappa", "weighted_kappa", "spearman", "kendall", "per_query"}``
    where ``per_query`` maps query text -> the same statistics, only for queries with >= 2
    shared pairs. Pairs are matched on query text (qids differ between formats). Undefined
    statistics are NaN.
    """
    grades_b = {(j.query, j.doc_id): j.grade for j in b}
    per: dict[str, tuple[list[int], list[int]]] = {}
    xs: list[int] = []
    ys: list[int] = []
    for j in a:
        other = grades_b.get((j.query, j.doc_id))
        if other is None:
            continue
        xs.append(j.grade)
        ys.append(other)
        qx, qy = per.setdefault(j.query, ([], []))
        qx.append(j.grade)
        qy.append(other)
    result: dict[str, Any] = pair_stats(xs, ys)
    result["per_query"] = {q: pair_stats(qx, qy) for q, (qx, qy) in per.items() if len(qx) >= 2}
    return result
