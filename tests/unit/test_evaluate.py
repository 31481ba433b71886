"""Metrics against hand-computed values; the comparison's counts and tests."""

from __future__ import annotations

import math

import pytest

from esrank.evaluation.significance import compare
from esrank.judgments.lists import Judgment, JudgmentList
from esrank.judgments.metrics import METRICS, Evaluation, Evaluator

LOG2 = math.log2


def _judgments() -> JudgmentList:
    rows = [("q1", "shoes", "d1", 2), ("q1", "shoes", "d2", 0), ("q1", "shoes", "d3", 1),
            ("q2", "hat", "h1", 1)]
    return JudgmentList(tuple(Judgment(q, t, d, g) for q, t, d, g in rows))


def test_standard_and_condensed_by_hand():
    ev = Evaluator(_judgments())
    # dx is unjudged: standard counts it as 0, condensed drops it
    result = ev.evaluate({"shoes": ["dx", "d3", "d1"], "hat": ["h1"]})
    shoes = result.per_query["shoes"]
    idcg = 2 + 1 / LOG2(3)  # gain = grade (trec_eval)
    assert shoes["ndcg@10"] == pytest.approx((1 / LOG2(3) + 2 / LOG2(4)) / idcg)
    assert shoes["ndcg@10_condensed"] == pytest.approx((1 + 2 / LOG2(3)) / idcg)
    assert shoes["mrr"] == pytest.approx(0.5)
    assert shoes["mrr_condensed"] == pytest.approx(1.0)
    assert shoes["p@10"] == pytest.approx(0.2)
    assert shoes["judged@10"] == pytest.approx(2 / 3)  # of the docs returned in the top 10
    # ERR (gdeval, grades out of 4): R(g) = (2^g - 1) / 16
    r1, r2 = 1 / 16, 3 / 16
    assert shoes["err@10"] == pytest.approx(r1 / 2 + (1 - r1) * r2 / 3, abs=1e-5)
    assert result.per_query["hat"]["ndcg@10"] == pytest.approx(1.0)
    assert result.mean["ndcg@10"] == pytest.approx((shoes["ndcg@10"] + 1.0) / 2)
    assert set(result.mean) == set(METRICS)


def test_a_query_without_results_scores_zero():
    result = Evaluator(_judgments()).evaluate({"hat": ["h1"]})
    assert all(v == 0.0 for v in result.per_query["shoes"].values())
    assert result.mean["ndcg@10"] == pytest.approx(0.5)


def test_the_ideal_order_of_a_run_is_its_ceiling():
    ev = Evaluator(_judgments())
    run = {"shoes": ["dx", "d2", "d3", "d1"], "hat": ["hy"]}
    ideal = ev.ideal(run)
    # its own docs in grade order, unjudged last; a doc the run lacks is not added
    assert ideal == {"shoes": ["d1", "d3", "d2", "dx"], "hat": ["hy"]}
    shoes = ev.evaluate(ideal).per_query["shoes"]
    assert shoes["ndcg@10"] == pytest.approx(1.0) == shoes["ndcg@10_condensed"]
    assert ev.evaluate(ideal).mean["ndcg@10"] == pytest.approx(0.5)  # "hat" found nothing
    # what the run missed caps it: without d1, the best is d3 first
    best = ev.evaluate(ev.ideal({"shoes": ["d2", "d3"]})).per_query["shoes"]["ndcg@10"]
    assert best == pytest.approx(1 / (2 + 1 / LOG2(3)))


def test_compare_counts_wins_ties_losses():
    def ev(values):
        return Evaluation({}, {f"q{i}": dict.fromkeys(METRICS, v) for i, v in enumerate(values)})

    a = ev([0.5, 0.5, 0.5, 0.2, 0.1, 0.3])
    b = ev([0.9, 0.5, 0.4, 0.6, 0.5, 0.7])
    report = compare(("a", a), ("b", b), ["ndcg@10"], permutations=2000)
    m = report.metrics[0]
    assert (m.wins, m.ties, m.losses) == (4, 1, 1)
    assert m.delta == pytest.approx(0.25)
    # t = 0.25 / (0.2345 / sqrt(6)) = 2.611 with 5 df; exactly 8 of the 64 sign flips reach
    # |mean| >= 0.25 (the four 0.4s agreeing; the -0.1 and the 0 either way)
    assert m.p_ttest == pytest.approx(0.0476, abs=5e-4)
    assert m.p_randomization == pytest.approx(8 / 64, abs=0.02)
    same = compare(("a", a), ("a2", a), ["ndcg@10"], permutations=200).metrics[0]
    assert (same.wins, same.ties, same.losses) == (0, 6, 0)
    assert same.p_ttest == 1.0 and same.p_randomization == 1.0
