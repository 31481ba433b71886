"""Configurations measured on judgments: each configuration's metrics over every judged query
beside the ceiling of the candidates it ranks (stored as a run on request), two configurations
compared, and the unjudged docs they show."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from esrank.core.errors import InputError
from esrank.core.feature_set import needs_cross_encoder
from esrank.core.stamps import COMPACT, utc
from esrank.evaluation.ceilings import candidate_sets, ceiling, tuned_linear, with_ceilings
from esrank.evaluation.comparison import delta_rows
from esrank.evaluation.page import write_page
from esrank.evaluation.rank_eval import rank_eval_check
from esrank.evaluation.runs import new_run_id, push_comparison, push_evaluation
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
    and the share of the BM25 -> ceiling gap it closes (`ceilings`), and the `linear`
    baseline's weight per CV fold (`weights`)."""

    results: dict[str, Evaluation]
    checks: dict[str, dict]
    run_id: str | None = None
    ceilings: dict[str, dict] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self, judgments: Path, machine: Path | None = None) -> dict:
        """The run as `esrank evaluate --json` prints it (`judgments`, `machine`: the files
        it was measured on)."""
        return {"judgments": str(judgments), "run_id": self.run_id,
                "machine_grades": str(machine) if machine else None,
                "configs": {name: ev.to_dict() | ({"rank_eval": self.checks[name]}
                                                  if self.checks else {})
                            | self.ceilings.get(name, {})
                            | ({"linear_weights": self.weights[name]}
                               if name in self.weights else {})
                            for name, ev in self.results.items()}}


def evaluate(app, judgments: Path, configs, *, fmt: str | None = None,
             window: int | None = None, depth: int = 100, rank_eval: bool = False,
             push: bool = False, shopper_params: dict | None = None,
             machine: Path | None = None) -> EvaluationRun:
    """Each configuration over every judged query, with `app`'s engine and encoders. With
    `machine`, also against the human and machine grades together; with `rank_eval`, beside
    the engine's `_rank_eval`; with `push`, each configuration's metrics and top 10 (with
    feature values) are stored under a new run id once every configuration ran.
    `shopper_params` rank every query for that shopper."""
    personal = shopper_params or {}
    evaluator = app.evaluator(judgments, fmt)
    rankers = [app.ranker(w, window) for w in configs]
    encoder = app.query_encoder(rankers)
    results, checks, pushes, weights = {}, {}, [], {}
    found = _Candidates(app, evaluator.queries)
    for ranker in rankers:
        if ranker.label in results:
            continue
        if ranker.name == "linear" and not ranker.rerank:
            run, weights[ranker.label] = tuned_linear(evaluator, found(ranker))
        else:
            run = run_of(search_many(app.engine, app.settings.index, evaluator.queries, ranker,
                                     encoder, size=depth, source=False, reranker=app.reranker,
                                     shopper=personal))
        measured = {ranker.label: evaluator.evaluate(run)}
        if machine is not None:
            measured[f"{ranker.label} +machine"] = app.evaluator(judgments, fmt,
                                                                 machine).evaluate(run)
        results.update(measured)
        if push:
            pushes += _stored(app, judgments, evaluator, ranker, encoder, personal, machine,
                              measured)
        # the engine cannot run the cross-encoder, nor the recall stage's two steps in one
        if rank_eval and not ranker.rerank and not ranker.knn and not (
                ranker.model and needs_cross_encoder(ranker.model.params)):
            checks[ranker.label] = _rank_eval(app, evaluator, ranker, encoder, personal, run)
    run_id = new_run_id() if push else None
    for args in pushes:  # written only once every configuration ran: no half-stored runs
        push_evaluation(app.engine, run_id, *args)
    return EvaluationRun(results, checks, run_id, _ceilings(app, evaluator, rankers, results,
                                                            found, depth), weights)


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
    bm25 = next((r for r in rankers if r.name == BM25 and not r.rerank), None)
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
            "judgments": str(judgments), "timestamp": utc()}
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
    """B against A on every judged query (significance.compare), optionally stored as a
    comparison and written as the comparison page with its data built in (`machine`:
    machine grades the page marks)."""
    results = evaluate(app, judgments, (a, b), fmt=fmt, window=window, depth=depth).results
    if len(results) < 2:
        raise InputError(f"{a} and {b} are the same configuration")
    (na, ea), (nb, eb) = results.items()
    data = paired((na, ea), (nb, eb)).to_dict()
    if push:
        data["comparison_id"] = f"{utc(COMPACT)}-{na}-vs-{nb}"
        push_comparison(app.engine, data["comparison_id"],
                        {"judgments": str(judgments), "timestamp": utc()}, (na, ea), (nb, eb))
    if html:
        write_page(app, html, judgments, (a, b), window, {
            "a": na, "b": nb, "metric": "ndcg@10", "queries": delta_rows(ea, eb)}, fmt,
            machine)
    return data


