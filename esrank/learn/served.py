"""What serving shows for a table's queries, and how it is scored: each query's window docs in
the order a model (or the first pass) puts them, and an Evaluator over the judged rows.

Training's cross-validation (esrank.learn.train) and the benchmarks score models with these.
"""

from __future__ import annotations

import numpy as np

from esrank.learn.table import FeatureMatrix


def _topics(matrix: FeatureMatrix) -> tuple[str, ...]:
    """What a run is keyed by: the query text, or the qid in a table with shopper rows (one
    query asked by many shoppers is many topics)."""
    return matrix.qids if matrix.shoppers else matrix.queries


def served_runs(matrix: FeatureMatrix, rows: np.ndarray, scores: np.ndarray | None = None
                ) -> dict[str, list[str]]:
    """Query (qid with shopper rows) -> its window docs among `rows`, reordered by `scores`
    (by first-pass rank when None, or on ties): what serving shows for those queries."""
    ranks = np.asarray(matrix.ranks)
    topics = _topics(matrix)
    runs: dict[str, list[tuple[float, int, str]]] = {}
    for k, i in enumerate(rows):
        if ranks[i] > 0:
            score = -float(scores[k]) if scores is not None else 0.0
            runs.setdefault(topics[i], []).append((score, int(ranks[i]), matrix.doc_ids[i]))
    return {q: [d for _, _, d in sorted(docs)] for q, docs in runs.items()}


def judged_evaluator(matrix: FeatureMatrix, rows: np.ndarray | None = None):
    """An Evaluator over the judged rows among `rows` (all when None): the held-out
    queries' judgments."""
    from esrank.judgments.lists import Judgment, JudgmentList
    from esrank.judgments.metrics import Evaluator

    judged = matrix.judged or (True,) * len(matrix)
    topics = _topics(matrix)
    return Evaluator(JudgmentList(tuple(
        Judgment(matrix.qids[i], topics[i], matrix.doc_ids[i], matrix.grades[i])
        for i in (range(len(matrix)) if rows is None else rows) if judged[i])))
