"""Metrics against hand-computed values; the comparison's counts and tests; the ceilings, the
gap closed, the tuned `linear` baseline and how they print."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from esrank.catalogue.recall import Candidates
from esrank.evaluation.ceilings import ceiling, gap_closed, tuned_linear, with_ceilings
from esrank.evaluation.evaluate import EvaluationRun
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


def test_narrowed_to_ndcg_the_values_are_the_full_evaluations():
    ev, run = Evaluator(_judgments()), {"shoes": ["dx", "d3", "d1"], "hat": ["h1"]}
    full, narrow = ev.evaluate(run), ev.evaluate(run, ("ndcg@10",))
    assert set(narrow.mean) == {"ndcg@10", "ndcg@10_condensed", "judged@10"}
    assert narrow.mean == {m: full.mean[m] for m in narrow.mean}


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


def test_gap_closed_is_the_share_of_the_bm25_to_ceiling_gap():
    bm25 = {"ndcg@10": 0.6, "ndcg@10_condensed": 0.8}
    top = {"ndcg@10": 0.8, "ndcg@10_condensed": 0.8}
    assert gap_closed({"ndcg@10": 0.7, "ndcg@10_condensed": 0.9}, bm25, top) == {
        "ndcg@10": 0.5, "ndcg@10_condensed": None}  # no gap to close on the condensed view
    assert gap_closed(bm25, bm25, top)["ndcg@10"] == 0.0
    assert gap_closed(top, bm25, top)["ndcg@10"] == 1.0
    assert gap_closed({"ndcg@10": 0.5, "ndcg@10_condensed": 0.8}, bm25, top)["ndcg@10"] == -0.5


def test_the_ceiling_is_the_candidates_in_grade_order():
    ev = Evaluator(_judgments())
    # the nearest products bring d1 (grade 2), which BM25 missed
    joined = Candidates((("d2", 3.0), ("d3", 2.0)), (("d1", 0.9),))
    bm25_only = Candidates((("d2", 3.0), ("d3", 2.0)))
    assert ceiling(ev, {"shoes": joined, "hat": Candidates((("h1", 1.0),))}) == {
        "ndcg@10": 1.0, "ndcg@10_condensed": 1.0}
    best = 1 / (2 + 1 / LOG2(3))  # d3 first: what the BM25 list allows
    capped = ceiling(ev, {"shoes": bm25_only, "hat": Candidates((("h1", 1.0),))})
    assert capped == {"ndcg@10": round((best + 1) / 2, 4),
                      "ndcg@10_condensed": round((best + 1) / 2, 4)}
    # a judged query with no candidates counts 0
    assert ceiling(ev, {"shoes": joined})["ndcg@10"] == 0.5


def _linear_case() -> tuple[Evaluator, dict[str, Candidates]]:
    """8 queries whose relevant doc r BM25 ranks first and the kNN list last (r leads the
    linear mix for BM25 weights >= 0.7), and 2 the other way round (r leads for <= 0.3)."""
    bm25_side = Candidates((("r", 10.0), ("x", 5.0), ("y", 0.0)),
                           (("x", 0.9), ("y", 0.8), ("r", 0.1)))
    knn_side = Candidates((("x", 10.0), ("y", 5.0), ("r", 0.0)),
                          (("r", 0.9), ("x", 0.5), ("y", 0.1)))
    found = {f"b{i}": bm25_side for i in range(8)} | {"k0": knn_side, "k1": knn_side}
    rows = [Judgment(q, q, d, 2 if d == "r" else 0) for q in found for d in "rxy"]
    return Evaluator(JudgmentList(tuple(rows))), found


def test_linear_takes_the_weight_that_wins_on_the_training_folds():
    ev, found = _linear_case()
    run, weights = tuned_linear(ev, found, folds=5)
    assert len(weights) == 5
    # every training fold holds at least 6 of the 8 BM25-side queries: a BM25-side weight
    # wins there (0.7, the lowest of the tied ones); none is tuned on its own test queries
    assert weights == [0.7] * 5
    assert set(run) == set(found)
    assert all(run[q][0] == "r" for q in found if q.startswith("b"))
    assert all(run[q][0] == "x" for q in ("k0", "k1"))  # ranked with the others' weight


def test_with_ceilings_reports_each_configuration_beside_its_candidates():
    def ev(v):
        return Evaluation(dict.fromkeys(METRICS, v), {})

    top = {"ndcg@10": 0.9, "ndcg@10_condensed": 0.9}
    out = with_ceilings({"bm25": ev(0.5), "rrf": ev(0.7), "rrf +machine": ev(0.8)},
                        {"bm25": "bm25@100", "rrf": "bm25@100+knn@50"},
                        {"bm25@100": {"ndcg@10": 0.8, "ndcg@10_condensed": 0.8},
                         "bm25@100+knn@50": top}, ev(0.5).mean)
    assert set(out) == {"bm25", "rrf"}  # a +machine column has no candidate set of its own
    assert out["bm25"]["gap_closed"] == {"ndcg@10": 0.0, "ndcg@10_condensed": 0.0}
    assert out["rrf"] == {"candidates": "bm25@100+knn@50", "ceiling@10": top,
                          "gap_closed": {"ndcg@10": 0.5, "ndcg@10_condensed": 0.5}}


def _run() -> EvaluationRun:
    def ev(v):
        return Evaluation(dict.fromkeys(METRICS, v), {"shoes": dict.fromkeys(METRICS, v)})

    top = {"ndcg@10": 0.8, "ndcg@10_condensed": 0.9}
    return EvaluationRun(
        {"bm25": ev(0.6), "linear": ev(0.7), "linear +machine": ev(0.72)}, {},
        ceilings={"bm25": {"candidates": "bm25@100", "ceiling@10": top,
                           "gap_closed": {"ndcg@10": 0.0, "ndcg@10_condensed": 0.0}},
                  "linear": {"candidates": "bm25@100+knn@50", "ceiling@10": top,
                             "gap_closed": {"ndcg@10": 0.5, "ndcg@10_condensed": None}}},
        weights={"linear": [0.3, 0.4, 0.3]})


def test_each_configuration_prints_beside_its_ceiling_and_the_gap_it_closes():
    from esrank.cli.evaluation import evaluate_text

    run = _run()
    assert run.figures("linear") == {"ndcg@10": 0.7, "ndcg@10_condensed": 0.7,
                                     **run.ceilings["linear"], "linear_weights": [0.3, 0.4, 0.3]}
    lines = evaluate_text(run, per_query=False).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("config"))
    assert "candidates" in lines[header] and "(standard / condensed)" in lines[header]
    bm25, linear = lines[header + 1].split(), lines[header + 2].split()
    assert bm25 == ["bm25", "bm25@100", "0.6000", "/", "0.6000", "0.8000", "/", "0.9000",
                    "0.0%", "/", "0.0%"]
    assert linear == ["linear", "bm25@100+knn@50", "0.7000", "/", "0.7000", "0.8000", "/",
                      "0.9000", "50.0%", "/", "n/a", "BM25", "weight", "per", "fold", "0.3",
                      "0.4", "0.3"]
    assert len(lines) == header + 3  # the +machine column has no line of its own
    json_configs = run.to_dict(Path("j.csv"))["configs"]
    assert json_configs["linear"]["linear_weights"] == [0.3, 0.4, 0.3]
    assert json_configs["linear"]["ceiling@10"] == {"ndcg@10": 0.8, "ndcg@10_condensed": 0.9}
    assert "candidates" not in json_configs["linear +machine"]


def test_compare_prints_each_side_beside_its_ceiling():
    from esrank.cli.evaluation import compare_text
    from esrank.evaluation.comparison import delta_table

    run = _run()
    table = delta_table(EvaluationRun({n: run.results[n] for n in ("bm25", "linear")}, {},
                                      ceilings=run.ceilings, weights=run.weights))
    assert (table["a"], table["b"]) == ("bm25", "linear")
    assert table["queries"] == [{"query": "shoes", "a": 0.6, "b": 0.7, "delta": pytest.approx(0.1)}]
    assert table["configs"]["linear"]["gap_closed"]["ndcg@10"] == 0.5
    data = compare(("bm25", run.results["bm25"]), ("linear", run.results["linear"]),
                   ["ndcg@10"], permutations=10).to_dict() | {"configs": table["configs"]}
    text = compare_text(data, None, push=False)
    assert "linear vs bm25 over 1 queries" in text
    assert "\nbm25" in text and "bm25@100+knn@50" in text and "50.0% / n/a" in text
