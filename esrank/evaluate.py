"""Relevance metrics for rankings against judgments, and paired comparison of configurations.

Metrics come from ir-measures (trec_eval for nDCG/RR/P/Judged, gdeval for ERR). Judgments
are incomplete, so every metric is reported in two views:

- standard: the ranking as served; an unjudged doc counts as grade 0;
- condensed (`<metric>_condensed`): unjudged docs are removed before cutting at k
  (Sakai's condensed lists), which does not punish a ranker for surfacing unjudged docs;

plus `judged@10`, the share of the top 10 that is judged. trec_eval's nDCG uses the grade
as gain (not 2^grade - 1); P@10, RR treat grade >= 1 as relevant; gdeval's ERR assumes grades
0..4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from esrank.engine import Ranked
from esrank.judgments import JudgmentList

MEASURES = {"ndcg@5": "nDCG@5", "ndcg@10": "nDCG@10", "mrr": "RR", "err@10": "ERR@10",
            "p@10": "P@10"}
COVERAGE = "judged@10"
METRICS = (*MEASURES, *(f"{m}_condensed" for m in MEASURES), COVERAGE)

Run = Mapping[str, Sequence[str]]  # query text -> doc ids in rank order


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one configuration: mean over the judged queries, and per query."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        return {"mean": self.mean, "per_query": self.per_query}


class Evaluator:
    """Bound once to judgments, reused for every run.

    >>> ev = Evaluator(read_judgments(Path("judgments.csv")))  # doctest: +SKIP
    >>> ev.evaluate({"bluetooth speaker": ["123", "456"]}).mean["ndcg@10"]  # doctest: +SKIP
    """

    def __init__(self, judgments: JudgmentList):
        import ir_measures

        self._by_query = judgments.by_query()
        self._queries = list(self._by_query)  # qids
        self._text = {qid: js[0].query for qid, js in self._by_query.items()}
        # gdeval (ERR) wants numeric topic ids
        self._num = {qid: str(i) for i, qid in enumerate(self._queries, 1)}
        self._grades = {qid: {j.doc_id: j.grade for j in js}
                        for qid, js in judgments.by_query().items()}
        self._judged = {qid: set(g) for qid, g in self._grades.items()}
        self._qrels = [ir_measures.Qrel(self._num[j.qid], j.doc_id, j.grade) for j in judgments]
        self._measures = {name: ir_measures.parse_measure(m) for name, m in MEASURES.items()}
        self._coverage = ir_measures.parse_measure("Judged@10")
        self._by_text = {text: qid for qid, text in self._text.items()}

    @property
    def queries(self) -> list[str]:
        """The judged queries' texts, in file order."""
        return [self._text[q] for q in self._queries]

    def topics(self) -> list[tuple[str, str, tuple]]:
        """(topic id, query text, judgments) per judged query: the numbering every metric
        computation here uses."""
        return [(self._num[q], self._text[q], tuple(self._by_query[q])) for q in self._queries]

    def calc(self, measure, run: Run, depth: int) -> dict[str, float]:
        """An ir-measures `measure` per topic id for the top `depth` of `run` (a query the
        run lacks scores 0)."""
        import ir_measures

        scored = [ir_measures.ScoredDoc(num, d, float(depth - r)) for num, text, _ in
                  self.topics() for r, d in enumerate(list(run.get(text, ()))[:depth])]
        out = {num: 0.0 for num, _, _ in self.topics()}
        out.update({m.query_id: float(m.value)
                    for m in ir_measures.iter_calc([measure], self._qrels, scored)})
        return out

    def graded(self) -> dict[tuple[str, str], int]:
        """(query text, doc id) -> grade for every judgment."""
        return {(self._text[qid], doc): grade for qid, grades in self._grades.items()
                for doc, grade in grades.items()}

    def grades(self, query: str) -> dict[str, int]:
        """doc id -> grade for one query's judgments (empty for an unjudged query)."""
        qid = self._by_text.get(query)
        return dict(self._grades[qid]) if qid else {}

    def ideal(self, run: Run) -> Run:
        """Each query's docs of `run` in grade order, unjudged last: the best a reranker of
        those docs can do (its ceiling)."""
        out = {}
        for query, docs in run.items():
            grades = self.grades(query)
            out[query] = sorted(docs, key=lambda d: -grades.get(d, -1))
        return out

    def evaluate(self, run: Run) -> Evaluation:
        """Metrics for `run` (query text -> ranked doc ids); a judged query missing from the
        run scores 0 everywhere."""
        import ir_measures

        standard, condensed = [], []
        for qid in self._queries:
            docs = list(dict.fromkeys(run.get(self._text[qid], ())))
            n = len(docs)
            standard += [ir_measures.ScoredDoc(self._num[qid], d, float(n - i))
                         for i, d in enumerate(docs)]
            kept = [d for d in docs if d in self._judged[qid]]
            condensed += [ir_measures.ScoredDoc(self._num[qid], d, float(len(kept) - i))
                          for i, d in enumerate(kept)]
        per_query = {self._text[q]: dict.fromkeys(METRICS, 0.0) for q in self._queries}
        qid_of = {num: qid for qid, num in self._num.items()}
        names = {m: n for n, m in self._measures.items()}
        measures = list(self._measures.values())
        views = (("", standard, [*measures, self._coverage]), ("_condensed", condensed, measures))
        for suffix, docs, wanted in views:
            if not docs:
                continue
            for value in ir_measures.iter_calc(wanted, self._qrels, docs):
                name = (COVERAGE if value.measure == self._coverage
                        else names[value.measure] + suffix)
                per_query[self._text[qid_of[value.query_id]]][name] = float(value.value)
        mean = {m: float(np.mean([pq[m] for pq in per_query.values()])) if per_query else 0.0
                for m in METRICS}
        return Evaluation(mean, per_query)


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


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    mean_a: float
    mean_b: float
    p_ttest: float
    p_randomization: float
    wins: int
    ties: int
    losses: int

    @property
    def delta(self) -> float:
        return self.mean_b - self.mean_a

    @property
    def relative(self) -> float:
        return self.delta / self.mean_a if self.mean_a else math.inf


@dataclass(frozen=True)
class Comparison:
    """B against A over the same queries: a paired test and wins/ties/losses per metric."""

    a: str
    b: str
    queries: int
    metrics: tuple[MetricComparison, ...]

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "queries": self.queries, "metrics": {
            m.metric: {"a": m.mean_a, "b": m.mean_b, "delta": m.delta, "relative": m.relative,
                       "p_ttest": m.p_ttest, "p_randomization": m.p_randomization,
                       "wins": m.wins, "ties": m.ties, "losses": m.losses}
            for m in self.metrics}}


def compare(a: tuple[str, Evaluation], b: tuple[str, Evaluation],
            metrics: Sequence[str] = METRICS, *, permutations: int = 10_000,
            seed: int = 42) -> Comparison:
    """Paired two-sided t-test and randomization test (sign flips) of B - A per metric.

    Wins/ties/losses count queries where B beats, equals (within 1e-9) or trails A.
    """
    from scipy.stats import ttest_rel

    (name_a, ev_a), (name_b, ev_b) = a, b
    queries = sorted(set(ev_a.per_query) & set(ev_b.per_query))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(permutations, len(queries)))
    rows = []
    for metric in metrics:
        xa = np.array([ev_a.per_query[q][metric] for q in queries])
        xb = np.array([ev_b.per_query[q][metric] for q in queries])
        diff = xb - xa
        if len(queries) < 2 or np.allclose(diff, diff[0]):
            p_t = 1.0 if np.allclose(diff, 0) else 0.0
        else:
            p_t = float(ttest_rel(xb, xa).pvalue)
        observed = abs(diff.mean()) if len(queries) else 0.0
        flipped = np.abs((signs * diff).mean(axis=1)) if len(queries) else np.zeros(1)
        p_r = float((np.sum(flipped >= observed - 1e-12) + 1) / (permutations + 1))
        rows.append(MetricComparison(
            metric, float(xa.mean()) if len(queries) else 0.0,
            float(xb.mean()) if len(queries) else 0.0, p_t, p_r,
            int(np.sum(diff > 1e-9)), int(np.sum(np.abs(diff) <= 1e-9)),
            int(np.sum(diff < -1e-9))))
    return Comparison(name_a, name_b, len(queries), tuple(rows))
