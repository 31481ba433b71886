"""What a configuration could reach and how much of it it reaches: the ceiling of the
candidates it ranks (their perfect reordering), the share of the BM25 -> ceiling gap it closes,
and the `linear` baseline with its weight tuned by query-grouped CV (as the model's are).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from esrank.catalogue.recall import Candidates, Recall, retrieve
from esrank.core.batches import batched
from esrank.core.query_text import bounded_query
from esrank.judgments.metrics import Evaluation, Evaluator, Run
from esrank.learn.train import grouped_folds
from esrank.ranking.fusion import LINEAR_GRID, fuse

SHOWN = ("ndcg@10", "ndcg@10_condensed")  # the metrics a ceiling is reported for
FOLDS = 5


def candidate_sets(engine, index: str, queries: Sequence[str], recall: Recall, encoder,
                   fields: Sequence[str], batch: int = 32) -> dict[str, Candidates]:
    """Query text -> its candidates under `recall` (msearch batches; `encoder` embeds the
    queries when `recall.knn` > 0)."""
    out: dict[str, Candidates] = {}
    for chunk in batched(list(dict.fromkeys(queries)), batch):
        cut = [bounded_query(q)[0] for q in chunk]
        vectors = encoder.encode(cut) if recall.knn else None
        out.update(zip(chunk, retrieve(engine, index, cut, recall, vectors, fields),
                       strict=True))
    return out


def ceiling(evaluator: Evaluator, found: dict[str, Candidates]) -> dict[str, float]:
    """NDCG@10 (standard, condensed) of each query's candidates in grade order."""
    mean = evaluator.evaluate(evaluator.ideal({q: c.ids for q, c in found.items()})).mean
    return {m: round(mean[m], 4) for m in SHOWN}


def gap_closed(value: dict[str, float], bm25: dict[str, float], top: dict[str, float]
               ) -> dict[str, float | None]:
    """Per metric, (value - BM25) / (ceiling - BM25): 1 is the perfect reordering, 0 BM25,
    below 0 worse than BM25; None where the ceiling is no higher than BM25."""
    return {m: round((value[m] - bm25[m]) / (top[m] - bm25[m]), 4) if top[m] > bm25[m] else None
            for m in SHOWN}


def tuned_linear(evaluator: Evaluator, found: dict[str, Candidates], folds: int = FOLDS,
                 seed: int = 42) -> tuple[Run, list[float]]:
    """The `linear` baseline's run with its BM25 weight tuned over LINEAR_GRID by
    query-grouped CV: each fold's queries ranked with the weight that scores best (mean
    NDCG@10) on the other folds' queries; and each fold's weight."""
    queries = list(found)
    runs = {w: {q: [d for d, _ in fuse("linear", found[q], w)] for q in queries}
            for w in LINEAR_GRID}
    scores = {w: evaluator.evaluate(run).per_query for w, run in runs.items()}
    run: dict[str, list[str]] = {}
    weights = []
    for train, test in grouped_folds(tuple(queries), min(folds, len(queries)), seed):
        best = max(LINEAR_GRID, key=lambda w: np.mean(
            [scores[w][queries[i]]["ndcg@10"] for i in train if queries[i] in scores[w]]))
        weights.append(best)
        run.update({queries[i]: runs[best][queries[i]] for i in test})
    return run, weights


def with_ceilings(results: dict[str, Evaluation], candidates: dict[str, str],
                  ceilings: dict[str, dict[str, float]], bm25: dict[str, float]
                  ) -> dict[str, dict]:
    """Per configuration label: its candidate set, that set's ceiling@10 and the share of
    the BM25 -> ceiling gap the configuration closes (`candidates`: label -> candidate-set
    label; `ceilings`: candidate-set label -> ceiling; `bm25`: BM25's means)."""
    out = {}
    for label, evaluation in results.items():
        name = candidates.get(label)
        if name is None:
            continue
        top = ceilings[name]
        out[label] = {"candidates": name, "ceiling@10": top,
                      "gap_closed": gap_closed(evaluation.mean, bm25, top)}
    return out
