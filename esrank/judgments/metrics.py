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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from esrank.judgments.lists import JudgmentList

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

    def evaluate(self, run: Run, measures: Sequence[str] = tuple(MEASURES)) -> Evaluation:
        """Metrics for `run` (query text -> ranked doc ids); a judged query missing from the
        run scores 0 everywhere. `measures` (names of MEASURES) narrows what is computed, both
        views, with coverage: training's CV reads nDCG@10 only (ERR runs gdeval, a process)."""
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
        metrics = (*measures, *(f"{m}_condensed" for m in measures), COVERAGE)
        per_query = {self._text[q]: dict.fromkeys(metrics, 0.0) for q in self._queries}
        qid_of = {num: qid for qid, num in self._num.items()}
        names = {self._measures[n]: n for n in measures}
        views = (("", standard, [*names, self._coverage]), ("_condensed", condensed, [*names]))
        for suffix, docs, asked in views:
            if not docs:
                continue
            for value in ir_measures.iter_calc(asked, self._qrels, docs):
                name = (COVERAGE if value.measure == self._coverage
                        else names[value.measure] + suffix)
                per_query[self._text[qid_of[value.query_id]]][name] = float(value.value)
        mean = {m: float(np.mean([pq[m] for pq in per_query.values()])) if per_query else 0.0
                for m in metrics}
        return Evaluation(mean, per_query)


