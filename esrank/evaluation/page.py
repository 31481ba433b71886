"""The comparison page's use cases (/compare and `esrank compare --html`): the configurations
it can show, side by side for a query, the queries that moved, why a product moved, and the
page as one file."""

from __future__ import annotations

import contextlib
from pathlib import Path

from esrank.core.errors import InputError, NotFoundError
from esrank.core.files import write_file
from esrank.deploy.registry import listing, version_of
from esrank.evaluation import comparison
from esrank.evaluation.runs import HISTORY_METRICS, run_history
from esrank.ranking.search import BASELINES, Ranker, parse_configuration


def rankers(app, names) -> list[Ranker]:
    """The configurations the page names; NotFoundError naming them when one is unknown."""
    for name in names:  # a malformed name is an InputError before any engine call
        parse_configuration(name)
    found = comparison.rankers(app.engine, app.settings.active_set, list(names), app.window())
    if len(found) != len(names):
        raise NotFoundError(f"unknown configuration among {list(names)}; see /compare/configs")
    app.require_reranker(any(r.rerank for r in found))
    return found


def configurations(app) -> dict:
    """What the page can compare: baselines, deployed models (the active one first), a
    rerank stage when a cross-encoder is loaded; notes and CV figures per model."""
    doc, _ = listing(app.engine, app.settings.active_set)
    models = sorted(doc.models, key=lambda m: (m != doc.active, -(version_of(m)[1] or 0)))
    reranked = [f"{doc.active or 'bm25'}+rerank20"] if app.reranker else []
    return {"configs": [*BASELINES, *models, *reranked], "active": doc.active,
            "notes": {m: text for m in models if (text := doc.models[m].note)},
            "cv": {m: doc.models[m].cv_text for m in models}}


def side_by_side(app, query: str, names, size: int = 10) -> list:
    configs = rankers(app, names)
    return comparison.side_by_side(app.engine, app.settings.index, query, configs,
                                   app.query_encoder(configs), app.evaluator(), size=size,
                                   reranker=app.reranker, machine=app.machine_grades())


def query_deltas(app, a: str, b: str, slot: contextlib.AbstractContextManager | None = None
                 ) -> tuple[str, str, list[dict]]:
    """Every judged query's NDCG@10 under A and B; reused from `app.deltas` (a TtlCache) for
    the same two configurations as resolved (a deploy that moves "active" is a new pair).
    `slot` is held while they are computed, not while they are reused."""
    evaluator = app.evaluator()
    if evaluator is None:
        raise InputError("no judgments configured (ESRANK_JUDGMENTS)")
    ra, rb = rankers(app, [a, b])

    def compute() -> list[dict]:
        with slot or contextlib.nullcontext():
            return comparison.query_deltas(app.engine, app.settings.index, evaluator, ra, rb,
                                           app.query_encoder([ra, rb]), reranker=app.reranker)

    return ra.label, rb.label, app.deltas.get((ra.label, rb.label), compute)


def why(app, config: str, query: str, doc_id: str) -> dict:
    """The model's per-feature contributions to `doc_id`'s score for `query`."""
    (ranker,) = rankers(app, [config])
    if ranker.model is None:
        raise InputError(f"{ranker.name} has no model to explain")
    return comparison.why(app.engine, app.settings.index, query, ranker, doc_id,
                          app.query_encoder([ranker]), app.artifact(ranker.name), app.reranker)


def write_page(app, path: Path, judgments: Path, configs, window: int | None, deltas: dict,
               fmt: str | None = None, machine: Path | None = None) -> None:
    """The comparison page as one file with these configurations' data built in."""
    configured = [app.ranker(w, window) for w in configs]
    evaluator = app.evaluator(judgments, fmt)
    encoder = app.query_encoder(configured)
    sides = {q: [s.__dict__ for s in comparison.side_by_side(
        app.engine, app.settings.index, q, configured, encoder, evaluator,
        reranker=app.reranker, machine=app.machine_grades(machine))]
        for q in evaluator.queries}
    write_file(path, comparison.static_page({
        "configs": [r.label for r in configured], "deltas": deltas, "sides": sides,
        "runs": {"metrics": list(HISTORY_METRICS), "runs": run_history(app.engine)}}))
