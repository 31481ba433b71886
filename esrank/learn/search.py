"""Model selection at any size: how much search a table gets (`Plan`), the serving-CV scores
of fits, and the search itself, by successive halving over the grid.

A fit trains the largest round count of the grid once; the smaller counts are read off it
(`iteration_range`), so the grid's rounds cost nothing. Small tables (the ~100 queries of a
demo) get every fold and 4 bagged trees per round, which steady them; a large table (LARGE
queries or more) gets one held-out fold, 1 tree per round and successive halving: every
configuration on a quarter of the training queries (scored on a quarter of the held-out
ones), the better half on all of them. Where the
data lives is a `Data` (in this process: `LocalData`; on a Dask cluster:
esrank.learn.distributed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from esrank.learn.fit import (
    CONDENSED,
    METRIC,
    TrainParams,
    fit,
    in_table_score,
    predict,
    query_folds,
    query_shares,
)
from esrank.learn.served import judged_evaluator, served_runs
from esrank.learn.table import FeatureMatrix

log = logging.getLogger(__name__)

LARGE = 1000  # queries from which a table is searched by holdout and successive halving
HALVING = (0.25, 1.0)  # the share of the training queries each rung trains on


@dataclass(frozen=True)
class Plan:
    """How much search a table gets; meta.json and `esrank train --json` record it."""

    queries: int
    folds: int  # k of the query-grouped split
    folds_evaluated: int  # the folds trained and scored: all, or the first (a holdout)
    parallel_trees: int
    rungs: tuple[float, ...]  # successive halving: share of training queries per rung

    def to_dict(self) -> dict:
        return {"queries": self.queries, "folds": self.folds,
                "folds_evaluated": self.folds_evaluated, "parallel_trees": self.parallel_trees,
                "rungs": list(self.rungs), "large_from_queries": LARGE}


def plan_for(queries: int, folds: int | None = None, parallel_trees: int | None = None
             ) -> Plan:
    """Every fold and 4 bagged trees below LARGE queries; from there one held-out fold of 5, 1
    tree per round and successive halving. An explicit `folds` or `parallel_trees` wins."""
    large = queries >= LARGE
    return Plan(queries, folds or 5, 1 if large and folds is None else folds or 5,
                parallel_trees or (1 if large else 4), HALVING if large else (1.0,))


@dataclass(frozen=True)
class CVScore:
    """One configuration's cross-validated NDCG@10 per fold, standard and condensed, and the
    first pass's (BM25's) on the same folds; `view` is "served" or "in-table"."""

    view: str
    folds: tuple[float, ...]
    condensed: tuple[float, ...] = ()
    bm25: tuple[float, ...] = ()
    bm25_condensed: tuple[float, ...] = ()
    # served view, in this process: each held-out query's run, every fold's
    runs: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    def to_dict(self) -> dict:
        def stats(values: tuple[float, ...]) -> dict | None:
            return {"mean": round(float(np.mean(values)), 5),
                    "folds": [round(v, 5) for v in values]} if values else None

        return {"view": self.view, "metric": METRIC, "mean": round(self.mean, 5),
                "folds": [round(v, 5) for v in self.folds],
                "std": round(float(np.std(self.folds)), 5), "condensed": stats(self.condensed),
                "bm25": stats(self.bm25), "bm25_condensed": stats(self.bm25_condensed)}


class Data(Protocol):
    """A table where fits run: in this process, or on a cluster's workers."""

    served: bool

    def fit(self, fold: int | None, share: float, params: TrainParams, candidates: str):
        """A booster on the rows outside `fold` (all: None) of the first `share` queries."""

    def score(self, booster, fold: int, share: float, rounds: Sequence[int]
              ) -> dict[int, tuple]:
        """rounds -> (NDCG@10, condensed or None, runs) on the first `share` of `fold`'s
        held-out queries."""

    def first_pass(self, fold: int, share: float) -> tuple[float, float]:
        """The first pass's (NDCG@10, condensed) on the queries `score` scores."""


def served_evaluation(matrix: FeatureMatrix, rows: np.ndarray, scores: np.ndarray | None,
                      evaluator):
    """(Evaluation, runs) of `rows`' windows reordered by `scores`; evaluated on each run's
    top only (down to its 10th doc and its 10th judged one: all NDCG@10 reads), on NDCG@10
    alone."""
    runs = served_runs(matrix, rows, scores)
    top = {}
    for query, docs in runs.items():
        grades, judged = evaluator.grades(query), 0
        for k, doc in enumerate(docs):
            judged += doc in grades
            if k >= 9 and judged >= 10:
                break
        top[query] = docs[: k + 1]
    return evaluator.evaluate(top, ("ndcg@10",)), runs


class LocalData:
    """A FeatureMatrix in this process, split into `folds` query-grouped folds."""

    def __init__(self, matrix: FeatureMatrix, folds: int, seed: int, device: str,
                 normalizers: dict, personal: Sequence[str] = (), first=None):
        self.matrix, self.device, self.normalizers = matrix, device, normalizers
        self.personal, self.first = personal, first
        self.served = matrix.ranks is not None
        queries = list(dict.fromkeys(matrix.qids))
        fold_of, share_of = query_folds(queries, folds, seed), query_shares(queries, seed)
        self.fold = np.array([fold_of[q] for q in matrix.qids])
        self.share = np.array([share_of[q] for q in matrix.qids])
        self._evaluators: dict[tuple[int, float], object] = {}
        self._first: dict[tuple[int, float], tuple[float, float]] = {}

    def fit(self, fold: int | None, share: float, params: TrainParams, candidates: str):
        rows = np.flatnonzero((self.fold != (-1 if fold is None else fold))
                              & (self.share < share))
        return fit(self.matrix, rows, params, self.device, self.normalizers, candidates,
                   self.personal, self.first)

    def _evaluator(self, fold: int, share: float):
        if (fold, share) not in self._evaluators:
            self._evaluators[fold, share] = judged_evaluator(self.matrix,
                                                             self._test(fold, share))
        return self._evaluators[fold, share]

    def _test(self, fold: int, share: float) -> np.ndarray:
        return np.flatnonzero((self.fold == fold) & (self.share < share))

    def score(self, booster, fold: int, share: float, rounds: Sequence[int]
              ) -> dict[int, tuple]:
        test, out = self._test(fold, share), {}
        for r in rounds:
            if not self.served:
                out[r] = (in_table_score(booster, self.matrix, test, self.normalizers, r),
                          None, {})
                continue
            evaluation, runs = served_evaluation(
                self.matrix, test, predict(booster, self.matrix, test, self.normalizers, r),
                self._evaluator(fold, share))
            out[r] = (evaluation.mean[METRIC], evaluation.mean[CONDENSED], runs)
        return out

    def first_pass(self, fold: int, share: float) -> tuple[float, float]:
        if (fold, share) not in self._first:
            mean = served_evaluation(self.matrix, self._test(fold, share), None,
                                     self._evaluator(fold, share))[0].mean
            self._first[fold, share] = (mean[METRIC], mean[CONDENSED])
        return self._first[fold, share]


def search(data: Data, grid: Sequence[TrainParams], candidates: Sequence[str], plan: Plan,
           bar=None) -> list[dict]:
    """Serving CV of every candidate set with every grid point, by successive halving over
    the fits (a fit: a candidate set and the grid's params but rounds); `bar` (tqdm) counts
    the fits. Each entry records its rung; the last rung's are the finalists."""
    groups: dict[TrainParams, list[int]] = {}
    for point in grid:
        groups.setdefault(replace(point, num_rounds=0), []).append(point.num_rounds)
    alive = [(rows, key) for rows in candidates for key in groups]
    tried: list[dict] = []
    for rung, share in enumerate(plan.rungs):
        results = [_cross_validate(data, rows, key, groups[key], share, plan, bar)
                   for rows, key in alive]
        tried += [{**e, "rung": rung, "share": share} for entries in results for e in entries]
        if rung + 1 < len(plan.rungs):  # the better half goes on
            order = sorted(range(len(alive)), key=lambda i: -max(
                e["cv_mean"] for e in results[i]))
            alive = [alive[i] for i in sorted(order[: math.ceil(len(alive) / 2)])]
    return tried


def _cross_validate(data: Data, rows: str, key: TrainParams, rounds: list[int], share: float,
                    plan: Plan, bar) -> list[dict]:
    """One fit per evaluated fold, scored at each of `rounds`: a search entry per round."""
    params = replace(key, num_rounds=max(rounds))
    scores: dict[int, list[tuple]] = {r: [] for r in rounds}
    first: list[tuple[float, float]] = []
    seconds = 0.0
    for fold in range(plan.folds_evaluated):
        started = time.monotonic()
        booster = data.fit(fold, share, params, rows)
        seconds += time.monotonic() - started
        # a personal model's trees sit on its first stage's: the grid's rounds count after them
        below = max(0, booster.num_boosted_rounds() - params.num_rounds)
        best = int(booster.attr("best_iteration") or max(rounds) - 1) + 1 - below
        values = data.score(booster, fold, share,
                            sorted({below + min(r, best) for r in rounds}))
        for r in rounds:
            scores[r].append(values[below + min(r, best)])
        if data.served:
            first.append(data.first_pass(fold, share))
        if bar is not None:
            bar.set_postfix_str(f"{rows} eta={key.eta} share={share:g}", refresh=False)
            bar.update()
    log.info("%s eta=%g share=%g: %d fits in %.1fs", rows, key.eta, share,
             plan.folds_evaluated, seconds)
    entries = []
    for r in rounds:
        per_fold = scores[r]
        score = CVScore("served" if data.served else "in-table",
                        tuple(s[0] for s in per_fold),
                        tuple(s[1] for s in per_fold) if data.served else (),
                        tuple(f[0] for f in first), tuple(f[1] for f in first),
                        runs={q: d for s in per_fold for q, d in s[2].items()})
        entries.append({"candidates": rows, "eta": key.eta, "num_rounds": r,
                        "cv_mean": round(score.mean, 5), "score": score,
                        "params": replace(key, num_rounds=r), "fit_seconds": round(seconds, 2)})
    return entries
