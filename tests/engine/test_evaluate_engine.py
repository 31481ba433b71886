"""Evaluation of a real BM25 run (no LTR plugin needed): both views and the JSON shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.chorus_slice import write_slice_judgments

from esrank.judgments.lists import read_judgments
from esrank.judgments.metrics import Evaluator
from esrank.ranking.search import Ranker, run_of, search_many

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture()
def slice_judgments(tmp_path) -> Path:
    return write_slice_judgments(tmp_path / "j.csv")


def test_bm25_run_in_both_views(engine, slice_alias, slice_judgments):
    evaluator = Evaluator(read_judgments(slice_judgments))
    run = search_many(engine, slice_alias, evaluator.queries, Ranker("bm25"), None, size=50,
                      source=False)
    result = evaluator.evaluate({q: [h.doc_id for h in hits] for q, hits in run.items()})
    assert len(result.per_query) == len(evaluator.queries) >= 10
    for q, m in result.per_query.items():
        # dropping unjudged (gain 0) docs only moves judged ones up
        assert m["ndcg@10_condensed"] >= m["ndcg@10"] - 1e-12, q
        top = [h.doc_id for h in run[q][:10]]
        judged = {j.doc_id for j in read_judgments(slice_judgments) if j.query == q}
        expected = sum(d in judged for d in top) / len(top) if top else 0.0
        assert m["judged@10"] == pytest.approx(expected)
    assert 0 < result.mean["ndcg@10"] < result.mean["ndcg@10_condensed"] <= 1


def test_evaluate_json_shape(engine, slice_alias, slice_judgments, cli_env):
    out = subprocess.run([sys.executable, "-m", "esrank.cli", "evaluate", "--judgments",
                          str(slice_judgments), "--config", "bm25", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**cli_env, "ESRANK_INDEX": slice_alias})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    bm25 = data["configs"]["bm25"]
    assert {"ndcg@10", "ndcg@10_condensed", "judged@10", "mrr", "err@10", "p@10",
            "ndcg@5"} <= set(bm25["mean"])
    assert 0 < bm25["exposure"]["disparity"] <= 1  # the toy's figures: test_exposure_engine
    query, metrics = next(iter(bm25["per_query"].items()))
    assert set(metrics) == set(bm25["mean"]) and isinstance(query, str)


def test_esrank_metrics_equal_the_engines_rank_eval(engine, slice_alias, slice_judgments):
    from esrank.evaluation.rank_eval import rank_eval_check
    from esrank.ranking.search import ranked_request

    judged = read_judgments(slice_judgments)
    evaluator = Evaluator(judged)
    ranker = Ranker("bm25")
    run = {q: [h.doc_id for h in hits] for q, hits in search_many(
        engine, slice_alias, evaluator.queries, ranker, None, size=10, source=False).items()}

    def body(q):
        return ranked_request(q, ranker, None, 10, source=False)

    check = rank_eval_check(engine, slice_alias, evaluator, body, run)
    if engine.dialect.name == "elasticsearch":  # the integ-test node has no rank-eval module
        assert check == {"unavailable": "the engine (elasticsearch) has no _rank_eval (its "
                                        "rank-eval module is not installed)"}
        return
    for name, c in check.items():
        assert c["queries"] == len(evaluator.queries)
        assert c["max_abs_diff"] < 1e-9, (name, c)
        assert 0 < c["engine"] < 1
    # the check is sensitive: a different ranking on esrank's side no longer agrees
    flipped = rank_eval_check(engine, slice_alias, evaluator, body,
                              {q: d[::-1] for q, d in run.items()})
    assert max(c["max_abs_diff"] for c in flipped.values()) > 0.01


def test_push_stores_the_run_with_explicit_mappings(engine, slice_alias, slice_judgments,
                                                   run_tag):
    from esrank.evaluation.runs import EVAL_HITS, EVAL_QUERIES, push_evaluation

    judged = read_judgments(slice_judgments)
    evaluator = Evaluator(judged)
    hits = {q: r[:10] for q, r in search_many(engine, slice_alias, evaluator.queries,
                                              Ranker("bm25"), None, size=50).items()}
    result = evaluator.evaluate(run_of(hits))
    grades = {(j.query, j.doc_id): j.grade for j in judged}
    features = {q: {hs[0].doc_id: {"title_bm25": 1.5, "price": float("nan")}}
                for q, hs in hits.items() if hs}
    written = push_evaluation(engine, run_tag, {"model": None, "feature_set": None,
                                                "judgments": "slice.csv",
                                                "timestamp": "2026-11-24T00:00:00Z"},
                              "bm25", result, hits, grades, features)
    n_hits = sum(len(hs) for hs in hits.values())
    assert written == len(evaluator.queries) + n_hits
    query = {"query": {"term": {"run_id": run_tag}}}
    assert engine.search(EVAL_QUERIES, {**query, "size": 0})["hits"]["total"]["value"] \
        == len(evaluator.queries)
    docs = engine.search(EVAL_HITS, {**query, "size": 1000})["hits"]["hits"]
    assert len(docs) == n_hits
    first = next(d["_source"] for d in docs if d["_source"]["rank"] == 1)
    assert first["features"] == {"title_bm25": 1.5}  # NaN stays absent
    assert first["judged"] == (first["grade"] is not None)
    mapping = engine.mapping(EVAL_HITS)[EVAL_HITS]["mappings"]["properties"]
    assert mapping["features"]["properties"]["title_bm25"]["type"] == "float"
    metrics = engine.mapping(EVAL_QUERIES)[EVAL_QUERIES]["mappings"]["properties"]
    assert metrics["ndcg@10_condensed"]["type"] == "float"


def test_compare_push_stores_deltas_that_match_the_report(engine, slice_alias,
                                                         slice_judgments, run_tag):
    from esrank.evaluation.runs import EVAL_DELTAS, push_comparison
    from esrank.evaluation.significance import compare

    evaluator = Evaluator(read_judgments(slice_judgments))
    evals = {}
    for ranker in (Ranker("bm25"), Ranker("title-only", fields=("title",))):
        run = search_many(engine, slice_alias, evaluator.queries, ranker, None, size=50,
                          source=False)
        evals[ranker.name] = evaluator.evaluate(run_of(run))
    a, b = ("bm25", evals["bm25"]), ("title-only", evals["title-only"])
    assert push_comparison(engine, run_tag, {"judgments": "slice.csv",
                                             "timestamp": "2026-11-24T00:00:00Z"}, a, b) \
        == len(evaluator.queries)
    docs = [h["_source"] for h in engine.search(EVAL_DELTAS, {
        "size": 1000, "query": {"term": {"comparison_id": run_tag}}})["hits"]["hits"]]
    report = {m.metric: m for m in compare(a, b, ["ndcg@10"]).metrics}["ndcg@10"]
    outcomes = [d["outcome"] for d in docs]
    assert (outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss")) == (
        report.wins, report.ties, report.losses)
    assert sum(d["ndcg@10_delta"] for d in docs) / len(docs) == pytest.approx(
        report.delta, abs=1e-6)


def test_run_history_is_each_runs_mean_per_configuration_oldest_first(engine, run_tag,
                                                                      cli_env):
    import time

    import numpy as np

    from esrank.core.errors import InputError
    from esrank.evaluation.runs import push_evaluation, run_history
    from esrank.judgments.metrics import METRICS, Evaluation

    rng = np.random.default_rng(7)
    pushed = {}
    for i, config in enumerate((f"shop{run_tag}-v1", f"shop{run_tag}-v2")):
        run_id = f"{run_tag}-{i}"
        per_query = {f"q{n}": {m: float(rng.random()) for m in METRICS} for n in range(12)}
        mean = {m: sum(v[m] for v in per_query.values()) / 12 for m in METRICS}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + i))
        for label, ev in (("bm25", Evaluation(mean, per_query)),
                          (config, Evaluation(mean, per_query))):
            push_evaluation(engine, run_id, {"model": None if label == "bm25" else config,
                                             "feature_set": None, "judgments": "j.csv",
                                             "timestamp": stamp}, label, ev, {}, {})
        pushed[run_id] = (config, mean)
    rows = [r for r in run_history(engine, ["ndcg@10", "mrr_condensed"]) if r["run_id"] in pushed]
    assert [r["run_id"] for r in rows] == [*[f"{run_tag}-0"] * 2, *[f"{run_tag}-1"] * 2]
    for row in rows:
        config, mean = pushed[row["run_id"]]
        assert row["config"] in ("bm25", config) and row["queries"] == 12
        assert row["ndcg@10"] == pytest.approx(mean["ndcg@10"], abs=1e-6)
        assert row["mrr_condensed"] == pytest.approx(mean["mrr_condensed"], abs=1e-6)
        # a model's versions share one series: the page draws them as one line
        assert row["series"] == ("bm25" if row["config"] == "bm25" else f"shop{run_tag}")
        assert row["version"] == (None if row["config"] == "bm25" else config[-2:])
        assert row["model"] == (None if row["config"] == "bm25" else config)
    with pytest.raises(InputError, match="unknown metric 'ndcg@11'"):
        run_history(engine, ["ndcg@11"])
    cli = subprocess.run([sys.executable, "-m", "esrank.cli", "runs", "--json", "--metric",
                          "ndcg@10"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env=cli_env)
    assert cli.returncode == 0, cli.stderr
    ours = [r for r in json.loads(cli.stdout)["runs"] if r["run_id"] in pushed]
    assert [(r["run_id"], r["config"], r["ndcg@10"]) for r in ours] == [
        (r["run_id"], r["config"], r["ndcg@10"]) for r in rows]


def test_every_configuration_is_reported_beside_its_ceiling(engine, slice_alias,
                                                            slice_judgments, engine_settings,
                                                            encoder):
    from esrank.app import App
    from esrank.evaluation.evaluate import evaluate
    from esrank.evaluation.page import configurations, query_deltas

    settings = engine_settings(index=slice_alias, active_set="no-models-here",
                               judgments=slice_judgments)
    app = App(settings, engine=engine, encoder=encoder)
    configs = ("bm25", "knn", "rrf", "linear")
    run = evaluate(app, slice_judgments, configs)
    k = settings.recall_knn
    assert {c: run.ceilings[c]["candidates"] for c in configs} == {
        "bm25": "bm25@100", "knn": f"knn@{k}", "rrf": f"bm25@100+knn@{k}",
        "linear": f"bm25@100+knn@{k}"}
    for config in configs:
        figures = run.figures(config)
        for view in ("ndcg@10", "ndcg@10_condensed"):  # a reordering cannot pass its ceiling
            assert figures["ceiling@10"][view] >= figures[view] - 1e-4, (config, view)
    assert run.ceilings["bm25"]["gap_closed"] == {"ndcg@10": 0.0, "ndcg@10_condensed": 0.0}
    # the joined set holds BM25's: its ceiling is no lower
    joined, bm25 = run.ceilings["rrf"]["ceiling@10"], run.ceilings["bm25"]["ceiling@10"]
    assert all(joined[v] >= bm25[v] for v in bm25)
    assert len(run.weights["linear"]) == 5 and run.figures("linear")["linear_weights"]
    # the comparison page offers the fused baselines and lists the same figures
    assert configurations(app)["configs"][-3:] == list(configs[1:])
    table = query_deltas(app, "bm25", "rrf")
    assert (table["a"], table["b"]) == ("bm25", "rrf")
    assert table["configs"]["rrf"] == run.figures("rrf")
    assert len(table["queries"]) == len(run.results["rrf"].per_query)
