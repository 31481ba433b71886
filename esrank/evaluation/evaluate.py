"""Configurations measured on judgments: each configuration's metrics over every judged query
beside the ceiling of the candidates it ranks (stored as a run on request), two configurations
compared (and written as the comparison page with the comparison built in), and the unjudged
docs they show."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from esrank.catalogue.lookup import product_facts
from esrank.core.errors import InputError
from esrank.core.feature_set import needs_cross_encoder
from esrank.core.files import write_file
from esrank.core.stamps import COMPACT, utc, utc_ms
from esrank.evaluation.ceilings import (
    SHOWN,
    candidate_sets,
    ceiling,
    tuned_linear,
    with_ceilings,
)
from esrank.evaluation.comparison import delta_table, side_by_side, static_page
from esrank.evaluation.exposure import Exposure, docs_to_look_up, exposure_of
from esrank.evaluation.rank_eval import rank_eval_check
from esrank.evaluation.runs import (
    HISTORY_METRICS,
    new_run_id,
    push_comparison,
    push_evaluation,
    run_history,
)
from esrank.evaluation.significance import compare as paired
from esrank.features.params import query_params
from esrank.judgments.metrics import Evaluation, Evaluator, Run
from esrank.ranking.search import Ranker, ranked_request, run_of, search, search_many

BM25 = "bm25"


@dataclass(frozen=True)
class EvaluationRun:
    """What `evaluate` measured: label -> Evaluation (with machine grades, also
    "label +machine"), label -> esrank's metrics beside the engine's `_rank_eval`, and the
    stored run's id (None: not stored); label -> its candidate set, that set's ceiling@10
    and the share of the BM25 -> ceiling gap it closes (`ceilings`), the `linear`
    baseline's weight per CV fold (`weights`), and label -> its exposure by supplier
    against relevance (`exposures`, exposure.py)."""

    results: dict[str, Evaluation]
    checks: dict[str, dict]
    run_id: str | None = None
    ceilings: dict[str, dict] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)
    exposures: dict[str, Exposure] = field(default_factory=dict)

    def to_dict(self, judgments: Path, machine: Path | None = None) -> dict:
        """The run as `esrank evaluate --json` prints it (`judgments`, `machine`: the files
        it was measured on)."""
        return {"judgments": str(judgments), "run_id": self.run_id,
                "machine_grades": str(machine) if machine else None,
                "configs": {name: ev.to_dict() | ({"rank_eval": self.checks[name]}
                                                  if self.checks else {})
                            | self.beside(name) for name, ev in self.results.items()}}

    def beside(self, label: str) -> dict:
        """What `label` is reported beside: its candidate set, that set's ceiling@10 and the
        share of the BM25 -> ceiling gap it closes, `linear`'s weight per fold and its
        exposure by supplier (empty for a "+machine" column)."""
        return self.ceilings.get(label, {}) | (
            {"linear_weights": self.weights[label]} if label in self.weights else {}) | (
            {"exposure": self.exposures[label].to_dict()} if label in self.exposures else {})

    def figures(self, label: str) -> dict:
        """`label`'s mean NDCG@10 (both views) and what it is reported beside: one
        configuration as `esrank compare`, the comparison page and the report show it.

        >>> run.figures("bm25")  # doctest: +SKIP
        {'ndcg@10': 0.588, 'ndcg@10_condensed': 0.701, 'candidates': 'bm25@100',
         'ceiling@10': {...}, 'gap_closed': {'ndcg@10': 0.0, 'ndcg@10_condensed': 0.0}}
        """
        mean = self.results[label].mean
        return {m: mean[m] for m in SHOWN} | self.beside(label)


def evaluate(app, judgments: Path | None, configs, *, fmt: str | None = None,
             window: int | None = None, depth: int = 100, rank_eval: bool = False,
             push: bool = False, shopper_params: dict | None = None,
             machine: Path | None = None) -> EvaluationRun:
    """Each configuration over every judged query (`judgments` None: ESRANK_JUDGMENTS), with
    `app`'s engine and encoders. With `machine`, also against the human and machine grades
    together; with `rank_eval`, beside the engine's `_rank_eval`; with `push`, each
    configuration's metrics and top 10 (with feature values) are stored under a new run id
    once every configuration ran. `shopper_params` rank every query for that shopper."""
    personal = shopper_params or {}
    evaluator = app.evaluator(judgments, fmt)
    rankers = [app.ranker(w, window) for w in configs]
    encoder = app.query_encoder(rankers)
    results, checks, pushes, weights, runs = {}, {}, [], {}, {}
    found = _Candidates(app, evaluator.queries)
    for ranker in rankers:
        if ranker.label in results:
            continue
        if ranker.name == "linear" and not ranker.rerank and not ranker.diversity.on:
            run, weights[ranker.label] = tuned_linear(evaluator, found(ranker))
        else:
            run = run_of(search_many(app.engine, app.settings.index, evaluator.queries, ranker,
                                     encoder, size=depth, source=False, reranker=app.reranker,
                                     shopper=personal))
        runs[ranker.label], measured = run, {ranker.label: evaluator.evaluate(run)}
        if machine is not None:
            measured[f"{ranker.label} +machine"] = app.evaluator(judgments, fmt,
                                                                 machine).evaluate(run)
        results.update(measured)
        if push:
            pushes += _stored(app, judgments, evaluator, ranker, encoder, personal, machine,
                              measured)
        # the engine cannot run the cross-encoder, the diversity stage, nor the recall stage's
        # two steps in one
        if rank_eval and not ranker.rerank and not ranker.diversity.on and not ranker.knn and not (
                ranker.model and needs_cross_encoder(ranker.model.params)):
            checks[ranker.label] = _rank_eval(app, evaluator, ranker, encoder, personal, run)
    run_id = new_run_id() if push else None
    for args in pushes:  # written only once every configuration ran: no half-stored runs
        push_evaluation(app.engine, run_id, *args)
    return EvaluationRun(results, checks, run_id, _ceilings(app, evaluator, rankers, results,
                                                            found, depth), weights,
                         _exposures(app, evaluator, runs))


def _exposures(app, evaluator: Evaluator, runs: dict[str, Run]) -> dict[str, Exposure]:
    """Each configuration's exposure by supplier, the suppliers of every shown and judged
    doc read in one lookup."""
    facts = product_facts(app.engine, app.settings.index, set().union(
        *(docs_to_look_up(run, evaluator) for run in runs.values())))
    supplier = {doc: f.brand for doc, f in facts.items()}
    return {label: exposure_of(run, evaluator, supplier) for label, run in runs.items()}


class _Candidates:
    """Each candidate set's lists for every judged query, fetched once per set."""

    def __init__(self, app, queries: list[str]):
        self.app, self.queries, self._sets = app, queries, {}

    def __call__(self, ranker: Ranker) -> dict:
        key = (ranker.recall, ranker.fields)
        if key not in self._sets:
            self._sets[key] = candidate_sets(
                self.app.engine, self.app.settings.index, self.queries, ranker.recall,
                self.app.encoder if ranker.knn else None, ranker.fields)
        return self._sets[key]


def _ceilings(app, evaluator: Evaluator, rankers: list[Ranker], results: dict, found,
              depth: int) -> dict[str, dict]:
    """Per configuration: its candidate set's ceiling@10 and the share of the BM25 -> ceiling
    gap it closes (BM25 over the same window, measured here when not asked for)."""
    bm25 = next((r for r in rankers if r.label == BM25), None)
    if bm25 is None:
        bm25 = app.ranker(BM25, rankers[0].window)
        base = evaluator.evaluate(run_of(search_many(
            app.engine, app.settings.index, evaluator.queries, bm25, None, size=depth,
            source=False))).mean
    else:
        base = results[bm25.label].mean
    sets = {r.label: r.recall.label for r in rankers}
    tops = {r.recall.label: ceiling(evaluator, found(r)) for r in rankers}
    return with_ceilings(results, sets, tops, base)


def _stored(app, judgments: Path, evaluator: Evaluator, ranker: Ranker, encoder,
            personal: dict, machine: Path | None, measured: dict[str, Evaluation]
            ) -> list[tuple]:
    """`push_evaluation`'s arguments for one configuration's evaluations (the +machine one
    with the hits marked the same): its top 10 per query, with their feature values."""
    served = {q: search(app.engine, app.settings.index, q, ranker, encoder, size=10,
                        features=ranker.model is not None, reranker=app.reranker,
                        shopper=personal)
              for q in evaluator.queries}
    meta = {"model": ranker.model.name if ranker.model else None,
            "feature_set": ranker.model.feature_set if ranker.model else None,
            "judgments": str(judgments), "timestamp": utc_ms()}
    hits = {q: r.hits for q, r in served.items()}
    features = {q: r.features or {} for q, r in served.items()}
    graded = app.machine_grades(machine) if machine is not None else None
    return [(meta, label, evaluation, hits, evaluator.graded(), features, graded)
            for label, evaluation in measured.items()]


def _rank_eval(app, evaluator: Evaluator, ranker: Ranker, encoder, personal: dict,
               run: Run) -> dict:
    """esrank's metrics of `run` beside the engine's `_rank_eval` of the same requests."""
    params = (query_params(ranker.model.params, encoder) if ranker.model
              else lambda qs: [None] * len(qs))
    return rank_eval_check(app.engine, app.settings.index, evaluator, lambda q: ranked_request(
        q, ranker, {**(params([q])[0] or {}), **personal} if ranker.model else None, 10,
        source=False), run)


def compare(app, judgments: Path, a: str, b: str, *, fmt: str | None = None,
            window: int | None = None, depth: int = 100, push: bool = False,
            html: Path | None = None, machine: Path | None = None) -> dict:
    """B against A on every judged query (significance.compare), each beside its candidates'
    ceiling@10 and the share of the BM25 -> ceiling gap it closes ("configs":
    EvaluationRun.figures); optionally stored as a comparison and written as the comparison
    page with its data built in (`machine`: machine grades the page marks)."""
    run = evaluate(app, judgments, (a, b), fmt=fmt, window=window, depth=depth)
    if len(run.results) < 2:
        raise InputError(f"{a} and {b} are the same configuration")
    (na, ea), (nb, eb) = run.results.items()
    data = paired((na, ea), (nb, eb)).to_dict() | {"configs": {n: run.figures(n)
                                                               for n in (na, nb)}}
    if push:
        data["comparison_id"] = f"{utc(COMPACT)}-{na}-vs-{nb}"
        push_comparison(app.engine, data["comparison_id"],
                        {"judgments": str(judgments), "timestamp": utc()}, (na, ea), (nb, eb))
    if html:
        _write_page(app, html, judgments, (a, b), window, delta_table(run), fmt, machine)
    return data


def _write_page(app, path: Path, judgments: Path, configs, window: int | None, deltas: dict,
                fmt: str | None = None, machine: Path | None = None) -> None:
    """The comparison page as one file with these configurations' data built in (`deltas`:
    comparison.delta_table)."""
    configured = [app.ranker(w, window) for w in configs]
    evaluator = app.evaluator(judgments, fmt)
    encoder = app.query_encoder(configured)
    sides = {q: [s.__dict__ for s in side_by_side(
        app.engine, app.settings.index, q, configured, encoder, evaluator,
        reranker=app.reranker, machine=app.machine_grades(machine))]
        for q in evaluator.queries}
    write_file(path, static_page({
        "configs": [r.label for r in configured], "deltas": deltas, "sides": sides,
        "runs": {"metrics": list(HISTORY_METRICS), "runs": run_history(app.engine)}}))
