"""The engine's own _rank_eval as a cross-check of esrank's metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from esrank.engine import Ranked
from esrank.judgments.metrics import Evaluator, Run

# esrank measure -> the engine's `_rank_eval` metric computing the same thing; the engine's
# DCG uses gain 2^grade - 1, so esrank's side uses those gains for this check
RANK_EVAL = {
    "ndcg@10 (gain 2^g-1)": {"dcg": {"k": 10, "normalize": True}},
    "mrr@10": {"mean_reciprocal_rank": {"k": 10, "relevant_rating_threshold": 1}},
}


def rank_eval_check(engine, index: str, evaluator: Evaluator,
                    request_for: Callable[[str], Ranked], run: Run) -> dict:
    """esrank's metrics next to the engine's `_rank_eval` for one configuration.

    `request_for(query)` is the configuration's search (size 10); `run` is esrank's ranking
    for it (query text -> doc ids). Returns, per metric, both means and the largest per-query
    difference; {"unavailable": why} when the engine has no `_rank_eval` (Elasticsearch
    without its rank-eval module).

    >>> rank_eval_check(engine, "products", Evaluator(judged),
    ...                 lambda q: ranked_request(q, Ranker(), None, 10), run
    ...                 )["mrr@10"]["max_abs_diff"]   # doctest: +SKIP
    0.0
    """
    import ir_measures

    concrete = engine.alias_targets(index) or [index]  # ratings must name the real index
    topics = evaluator.topics()
    grades = {j.grade for _, _, js in topics for j in js}
    measures = {"ndcg@10 (gain 2^g-1)": ir_measures.nDCG(gains={g: 2 ** g - 1 for g in grades})
                @ 10, "mrr@10": ir_measures.RR(rel=1) @ 10}
    bodies = engine.ranked_bodies(index, [request_for(text) for _, text, _ in topics])
    requests = [{"id": num, "request": body,
                 "ratings": [{"_index": concrete[0], "_id": j.doc_id, "rating": j.grade}
                             for j in js]}
                for (num, _, js), body in zip(topics, bodies, strict=True)]
    out = {}
    for name, metric in RANK_EVAL.items():
        answer = engine.rank_eval(index, requests, metric)
        if answer is None:
            return {"unavailable": f"the engine ({engine.dialect.name}) has no _rank_eval "
                                   "(its rank-eval module is not installed)"}
        theirs = {num: float(d["metric_score"]) for num, d in answer["details"].items()}
        ours = evaluator.calc(measures[name], run, 10)
        diffs = [abs(ours[num] - theirs[num]) for num in ours]
        out[name] = {"esrank": float(np.mean(list(ours.values()))),
                     "engine": float(np.mean(list(theirs.values()))),
                     "max_abs_diff": max(diffs), "queries": len(diffs)}
    return out
