"""The comparison page's use cases (/compare; `esrank compare --html` writes it as one file,
esrank.evaluation.evaluate): the configurations it can show, side by side for a query, the
queries that moved with each configuration beside its ceiling, and why a product moved."""

from __future__ import annotations

import contextlib

from esrank.core.errors import InputError, NotFoundError
from esrank.deploy.registry import listing, version_of
from esrank.evaluation import comparison
from esrank.evaluation.evaluate import evaluate
from esrank.ranking.fusion import FUSED
from esrank.ranking.search import BASELINES, Ranker, parse_configuration

SHOWN_DIVERSITY = ("+mmr0.7", "+cap2")  # the diversity stages the page offers (docs/diversity.md)


def rankers(app, names) -> list[Ranker]:
    """The configurations the page names; NotFoundError naming them when one is unknown."""
    for name in names:  # a malformed name is an InputError before any engine call
        parse_configuration(name)
    s = app.settings
    found = comparison.rankers(app.engine, s.active_set, list(names), app.window(),
                               s.recall_knn, s.linear_weight)
    if len(found) != len(names):
        raise NotFoundError(f"unknown configuration among {list(names)}; see /compare/configs")
    app.require_reranker(any(r.rerank for r in found))
    return found


def configurations(app) -> dict:
    """What the page can compare: the BM25 baselines, deployed models (the active one first),
    a rerank stage when a cross-encoder is loaded, the active model with a diversity stage
    (SHOWN_DIVERSITY), then the fused baselines when the recall stage has a kNN list; which
    of them have no model to explain; notes and CV figures per model."""
    doc, _ = listing(app.engine, app.settings.active_set)
    models = sorted(doc.models, key=lambda m: (m != doc.active, -(version_of(m)[1] or 0)))
    reranked = [f"{doc.active or 'bm25'}+rerank20"] if app.reranker else []
    diverse = [doc.active + stage for stage in SHOWN_DIVERSITY] if doc.active else []
    fused = list(FUSED) if app.settings.recall_knn else []
    return {"configs": [*BASELINES, *models, *reranked, *diverse, *fused], "active": doc.active,
            "baselines": [*BASELINES, *fused],
            "notes": {m: text for m in models if (text := doc.models[m].note)},
            "cv": {m: doc.models[m].cv_text for m in models}}


def side_by_side(app, query: str, names, size: int = 10) -> list:
    configs = rankers(app, names)
    return comparison.side_by_side(app.engine, app.settings.index, query, configs,
                                   app.query_encoder(configs), app.evaluator(), size=size,
                                   reranker=app.reranker, machine=app.machine_grades())


def query_deltas(app, a: str, b: str, slot: contextlib.AbstractContextManager | None = None
                 ) -> dict:
    """Every judged query's NDCG@10 under A and B and each one's figures beside its ceiling
    (comparison.delta_table of `evaluate` on ESRANK_JUDGMENTS, as `esrank compare --html`
    builds it in); reused from `app.deltas` (a TtlCache) for the same two configurations
    as resolved (a deploy that moves "active" is a new pair). `slot` is held while they are
    computed, not while they are reused."""
    if app.evaluator() is None:
        raise InputError("no judgments configured (ESRANK_JUDGMENTS)")
    ra, rb = rankers(app, [a, b])

    def compute() -> dict:
        with slot or contextlib.nullcontext():
            return comparison.delta_table(evaluate(app, None, (ra.label, rb.label)))

    return app.deltas.get((ra.label, rb.label), compute)


def why(app, config: str, query: str, doc_id: str) -> dict:
    """The model's per-feature contributions to `doc_id`'s score for `query`."""
    (ranker,) = rankers(app, [config])
    if ranker.model is None:
        raise InputError(f"{ranker.name} has no model to explain")
    return comparison.why(app.engine, app.settings.index, query, ranker, doc_id,
                          app.query_encoder([ranker]), app.artifact(ranker.name), app.reranker)
