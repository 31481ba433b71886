"""Configurations side by side for one query, the queries that moved most, and why a product
moved: what the comparison page (/compare) and `esrank compare --html` show.

A configuration is "bm25", "bm25-title" (BM25 over the title alone, a plainer baseline), a
fused baseline over the recall stage's two lists ("knn", "rrf", "linear") or a deployed
model. "Why it moved" is the model's per-feature contribution to that product's score (XGBoost
`pred_contribs`, SHAP values in margin space, plus the bias), computed on the feature values
the plugin logged for it in the same search.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import InputError, NotFoundError
from esrank.engine import Engine
from esrank.judgments.llm_judge import MachineGrade
from esrank.judgments.metrics import Evaluation, Evaluator
from esrank.ranking.configuration import parse_configuration
from esrank.ranking.fusion import FUSED
from esrank.ranking.search import BASELINES, Ranker, resolve_ranker, search

# the comparison page: the sidecar serves it, `static_page` writes it with its data built in
PAGE = Path(__file__).parents[1] / "serve" / "static" / "compare.html"


@dataclass
class Side:
    """One configuration's answer to one query."""

    config: str
    hits: list[dict]  # rank, doc_id, title, score, grade, moved (rank change vs the first)
    metrics: dict[str, float]
    degraded: str | None = None


def rankers(engine: Engine, set_name: str, names: Sequence[str], window: int, knn: int = 0,
            weight: float = 0.5) -> list[Ranker]:
    """Rankers for the configuration names that exist (see `resolve_ranker`; the fused
    baselines with the `knn` nearest products and `linear`'s BM25 `weight`); a malformed
    name, a fused one without `knn`, or "active" when no model is active, is left out."""
    out = []
    for label in names:
        try:
            ranker = resolve_ranker(engine, set_name, label, window, knn, weight)
        except InputError:
            continue  # not a configuration name
        if ranker.model is None and parse_configuration(label).name not in (*BASELINES, *FUSED):
            continue  # "active" without an active model
        out.append(ranker)
    return out


def side_by_side(engine: Engine, index: str, query: str, configs: Sequence[Ranker], encoder,
                 evaluator: Evaluator | None, *, size: int = 10, reranker=None,
                 machine: Mapping[tuple[str, str], MachineGrade] | None = None) -> list[Side]:
    """Each configuration's top `size` for `query`, grades coloured in by the judgments (and,
    marked as such, the `machine` grades of products no person judged), each product's rank
    change against the first configuration, and the query's metrics (human grades only)."""
    grades = evaluator.grades(query) if evaluator else {}
    machine = machine or {}
    sides = []
    for ranker in configs:
        result = search(engine, index, query, ranker, encoder, size=size, reranker=reranker)
        hits = [{"rank": h.rank, "doc_id": h.doc_id, "title": h.title, "score": h.score,
                 "grade": grades.get(h.doc_id),
                 "machine": _machine(machine.get((query, h.doc_id)), h.doc_id in grades)}
                for h in result.hits]
        metrics = {}
        if evaluator is not None and query in evaluator.queries:
            per_query = evaluator.evaluate({query: [h["doc_id"] for h in hits]}).per_query
            metrics = {k: per_query[query][k] for k in ("ndcg@10", "ndcg@10_condensed",
                                                        "judged@10")}
        sides.append(Side(result.ranker, hits, metrics, result.degraded))
    first = {h["doc_id"]: h["rank"] for h in sides[0].hits} if sides else {}
    for side in sides:
        for h in side.hits:
            before = first.get(h["doc_id"])
            h["moved"] = None if before is None else before - h["rank"]  # + means up
    return sides


def _machine(grade: MachineGrade | None, judged: bool) -> dict | None:
    """A machine grade as the page shows it, for a product no person judged."""
    if grade is None or judged:
        return None
    return {"grade": grade.grade, "model": grade.model, "prompt": grade.prompt,
            "calibration": grade.calibration}


def delta_table(run) -> dict:
    """What the comparison page lists from an EvaluationRun of A and B (B may be A: one
    result), without machine grades: every judged query's NDCG@10 under each and B - A,
    worst losses of B first, and each one's figures (EvaluationRun.figures: mean NDCG@10
    beside its candidates' ceiling@10 and the gap it closes)."""
    labels = list(run.results)
    a, b = labels[0], labels[-1]
    return {"a": a, "b": b, "metric": "ndcg@10",
            "queries": delta_rows(run.results[a], run.results[b]),
            "configs": {label: run.figures(label) for label in (a, b)}}


def delta_rows(ea: Evaluation, eb: Evaluation, metric: str = "ndcg@10") -> list[dict]:
    """Per query: `metric` under A and B and B - A, worst losses of B first."""
    rows = [{"query": q, "a": ea.per_query[q][metric], "b": eb.per_query[q][metric],
             "delta": eb.per_query[q][metric] - ea.per_query[q][metric]} for q in ea.per_query]
    return sorted(rows, key=lambda r: (r["delta"], r["query"]))


def why(engine: Engine, index: str, query: str, ranker: Ranker, doc_id: str, encoder,
        artifact, reranker=None) -> dict:
    """The model's score for `doc_id` under `query`, split into per-feature contributions
    (largest magnitude first) plus the bias; the values are the ones the plugin logged
    (`reranker`: the cross-encoder a cross-encoder feature needs)."""
    result = search(engine, index, query, ranker, encoder, size=ranker.window, features=True,
                    reranker=reranker)
    logged = (result.features or {}).get(doc_id)
    if logged is None:
        raise NotFoundError(f"{doc_id} is not in {ranker.name}'s top {ranker.window} for "
                          f"{query!r}")
    import numpy as np

    names = artifact.feature_names
    values = np.array([[logged[n] for n in names]], dtype=np.float32)
    contributions = artifact.contributions(values)[0]
    score = next(h.score for h in result.hits if h.doc_id == doc_id)
    features = sorted(({"feature": n, "value": None if v != v else float(v),
                        "contribution": float(c)}
                       for n, v, c in zip(names, values[0], contributions[:-1], strict=True)),
                      key=lambda f: -abs(f["contribution"]))
    return {"config": ranker.name, "query": query, "doc_id": doc_id, "score": score,
            "bias": float(contributions[-1]), "features": features}


def static_page(data: dict) -> str:
    """The comparison page with `data` ({"configs", "deltas", "sides": {query: [Side]}})
    built in: a single file that opens without the sidecar (no explanations)."""
    page = PAGE.read_text()
    # Inside <script> the HTML parser still reacts to "</script", "<!--" and "<script" (a
    # product titled "<!--<script" would swallow the rest of the page): no "<", ">" or "&"
    # reaches it. JSON only has them in strings, where unicode escapes mean the same.
    payload = json.dumps(data)
    for char in "<>&\u2028\u2029":
        payload = payload.replace(char, f"\\u{ord(char):04x}")
    return page.replace("/*ESRANK_DATA*/null", payload, 1)
