from __future__ import annotations

import json

import numpy as np
import pytest
from support.tables import synthetic

from esrank.core.errors import InputError
from esrank.judgments.lists import Judgment, JudgmentList
from esrank.judgments.metrics import Evaluator
from esrank.learn.served import served_runs
from esrank.learn.table import FeatureMatrix
from esrank.learn.train import TrainParams, cross_validate, grouped_folds, train


def test_grouped_folds_never_split_a_query():
    m = synthetic()
    folds = grouped_folds(m.qids, 5)
    seen = []
    for train_rows, test_rows in folds:
        train_q = {m.qids[i] for i in train_rows}
        test_q = {m.qids[i] for i in test_rows}
        assert not train_q & test_q
        seen += sorted(test_q)
    assert sorted(seen) == sorted(set(m.qids))
    with pytest.raises(InputError, match="3 queries cannot make 5"):
        grouped_folds(("a", "b", "c"), 5)


def test_cv_learns_the_signal_and_beats_a_noise_only_model():
    m = synthetic()
    good = cross_validate(m, TrainParams(num_rounds=50), 3)
    noise_only = FeatureMatrix(m.feature_set, ("noise",), m.qids, m.queries, m.doc_ids,
                               m.grades, m.values[:, [1]])
    bad = cross_validate(noise_only, TrainParams(num_rounds=50), 3)
    assert good.view == "in-table"  # no first-pass ranks: the table's own rows
    assert good.mean > 0.95 and good.mean > bad.mean + 0.1


def test_artifact_meta_traces_the_model(tmp_path):
    m = synthetic()
    result = train(m, tmp_path / "model", folds=3, search=True, device="cpu",
                   params=TrainParams(num_rounds=30, objective="rank:pairwise"))
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert (tmp_path / "model" / "model.json").exists()
    assert meta["feature_set"] == "syn@0123456789" and meta["feature_set_hash"] == "0123456789"
    assert meta["feature_names"] == ["signal", "noise", "sparse"]
    assert meta["params"]["objective"] == "rank:pairwise"
    assert len(meta["cv"]["folds"]) == 3 and len(meta["search"]) == 4
    assert meta["cv"]["mean"] == max(s["cv_mean"] for s in meta["search"])
    assert meta["cv"]["view"] == "in-table" and meta["training_rows"] == "window+judged"
    assert next(iter(meta["importance_gain"])) == "signal"
    assert meta["data"]["rows"] == len(m) and len(meta["data"]["sha256"]) == 16
    assert result.cv_mean == pytest.approx(meta["cv"]["mean"], abs=1e-5)


def test_an_excluded_feature_is_never_split_on_and_is_recorded(tmp_path):
    import xgboost as xgb

    m = synthetic()
    train(m, tmp_path / "without", folds=3, search=False, device="cpu",
          params=TrainParams(num_rounds=20), exclude=["signal"])
    meta = json.loads((tmp_path / "without" / "meta.json").read_text())
    booster = xgb.Booster(model_file=str(tmp_path / "without" / "model.json"))
    used = set(booster.get_score(importance_type="weight"))
    assert used and "signal" not in used  # the strongest feature, and no tree uses it
    assert meta["excluded_features"] == ["signal"] and meta["cv"]["mean"] < 0.9
    assert meta["feature_names"] == ["signal", "noise", "sparse"]  # the set's order is kept
    assert np.isfinite(m.values[:, 0]).all()  # the caller's table is untouched
    with pytest.raises(InputError, match="cannot exclude feature 'sigal': syn@0123456789 has "
                                         "signal, noise, sparse"):
        train(m, tmp_path / "x", device="cpu", exclude=["sigal"])
    with pytest.raises(InputError, match="every feature is excluded"):
        train(m, tmp_path / "x", device="cpu", exclude=list(m.feature_names))


def test_unknown_objective_and_empty_table_are_refused(tmp_path):
    with pytest.raises(InputError, match="objective 'reg:squarederror'"):
        TrainParams(objective="reg:squarederror")
    m = synthetic()
    empty = FeatureMatrix(m.feature_set, m.feature_names, (), (), (), (),
                          np.zeros((0, 3), dtype=np.float32))
    with pytest.raises(InputError, match="empty"):
        train(empty, tmp_path / "x", device="cpu")


def test_missing_values_train_as_the_largest_float_like_the_plugin_serves_them(tmp_path):
    import xgboost as xgb

    from esrank.learn.artifact import MISSING_AS

    # relevance is "the feature is missing": only learnable if missing is a consistent value
    rng = np.random.default_rng(1)
    qids, values, grades = [], [], []
    for q in range(20):
        for _ in range(10):
            missing = rng.random() < 0.5
            values.append([np.nan if missing else rng.random() * 10])
            grades.append(3 if missing else 0)
            qids.append(str(q))
    n = len(values)
    m = FeatureMatrix("syn@0123456789", ("f",), tuple(qids), tuple(qids),
                      tuple(f"d{i}" for i in range(n)), tuple(grades),
                      np.array(values, dtype=np.float32))
    train(m, tmp_path / "m", folds=3, search=False, device="cpu",
          params=TrainParams(num_rounds=20))
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["missing_as"] == MISSING_AS
    booster = xgb.Booster(model_file=str(tmp_path / "m" / "model.json"))
    served = np.nan_to_num(m.values, nan=MISSING_AS)  # what the plugin's routing amounts to
    scores = booster.predict(xgb.DMatrix(served, feature_names=["f"]))
    is_missing = np.isnan(m.values[:, 0])
    assert scores[is_missing].min() > scores[~is_missing].max()


def pooled(queries: int = 40, window: int = 30, outside: int = 15, seed: int = 0
           ) -> FeatureMatrix:
    """A table like a collection judged by pooling other systems: the first pass is right at
    its top, but most judged positives are docs it missed, logged from outside the window with
    low first-pass scores; "other" is a weak relevance signal everywhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(queries):
        for rank in range(1, window + 1):
            relevant = rng.random() < (0.4 if rank <= 5 else 0.02)
            judged = relevant or rng.random() < 0.3
            rows.append((q, 10 - 0.2 * rank + rng.normal(0, 0.3),
                         rng.normal(0.7 if relevant else 0.0, 1.0),
                         int(rng.integers(2, 4)) if relevant else 0, rank, judged))
        for _ in range(outside):
            rows.append((q, rng.normal(5.0, 1.0), rng.normal(0.7, 1.0),
                         int(rng.integers(2, 4)), 0, True))
    return FeatureMatrix("pool@0123456789", ("first_pass_score", "other"),
                         tuple(str(r[0]) for r in rows), tuple(f"query {r[0]}" for r in rows),
                         tuple(f"d{i}" for i in range(len(rows))), tuple(r[3] for r in rows),
                         np.array([[r[1], r[2]] for r in rows], dtype=np.float32),
                         tuple(r[4] for r in rows), tuple(r[5] for r in rows))


def _served_ndcg(matrix: FeatureMatrix, model_dir) -> tuple[float, float]:
    """(model, first pass) NDCG@10 on the served windows of `matrix`, all judgments counted."""
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(model_dir / "model.json"))
    scores = booster.predict(xgb.DMatrix(matrix.values, feature_names=list(
        matrix.feature_names)))
    rows = np.arange(len(matrix))
    evaluator = Evaluator(JudgmentList(tuple(
        Judgment(q, t, d, g) for q, t, d, g, j in zip(matrix.qids, matrix.queries,
                                                       matrix.doc_ids, matrix.grades,
                                                       matrix.judged, strict=True) if j)))
    return (evaluator.evaluate(served_runs(matrix, rows, scores)).mean["ndcg@10"],
            evaluator.evaluate(served_runs(matrix, rows)).mean["ndcg@10"])


def test_the_default_does_not_learn_the_bias_of_pooled_judgments(tmp_path):
    table = pooled()
    half = [i for i, q in enumerate(table.qids) if int(q) < 20]
    train_part = table.take(half)
    unseen = table.take([i for i in range(len(table)) if i not in set(half)])
    # the bias is real: trained on every judged row, as before serving CV, the model puts
    # low-BM25 docs first and loses to the first pass on queries it never saw
    train(train_part, tmp_path / "all", folds=4, search=False, device="cpu",
          params=TrainParams(num_rounds=30), candidates=("window+judged",))
    biased, first_pass = _served_ndcg(unseen, tmp_path / "all")
    assert biased < first_pass - 0.05
    # the default selects on what serving does and trains on the window
    result = train(train_part, tmp_path / "default", folds=4, search=False, device="cpu",
                   params=TrainParams(num_rounds=30))
    model, first_pass = _served_ndcg(unseen, tmp_path / "default")
    assert result.candidates == "window" and model >= first_pass
    meta = json.loads((tmp_path / "default" / "meta.json").read_text())
    assert meta["training_rows"] == "window" and meta["cv"]["view"] == "served"
    # serving CV saw it too: the window+judged candidate lost to the first pass in CV
    by_rows = {s["candidates"]: s["cv_mean"] for s in meta["search"]}
    assert by_rows["window+judged"] < meta["cv"]["bm25"]["mean"] - 0.1 < by_rows["window"]
    assert meta["data"]["trained_rows"] == sum(r > 0 for r in train_part.ranks)


def test_serving_cv_scores_the_window_against_every_judgment():
    table = pooled(queries=20)
    score = cross_validate(table, TrainParams(num_rounds=20), 4, candidates="window")
    assert score.view == "served" and len(score.folds) == len(score.condensed) == 4
    # judged docs outside the window stay in the ideal ranking: far from a perfect 1.0
    assert all(0 < v < 0.6 for v in score.folds + score.bm25)
    # condensed drops the unjudged window docs before cutting at 10
    assert np.mean(score.condensed) > score.mean
    ranked = served_runs(table, np.arange(len(table)))
    assert len(ranked) == 20 and all(len(docs) == 30 for docs in ranked.values())
    assert ranked["query 0"][:2] == ["d0", "d1"]  # by first-pass rank when unscored


def test_a_table_file_trains_in_the_cli_terms_and_the_result_reads_in_brief(tmp_path):
    from esrank.learn.table import write_table
    from esrank.learn.train import train_file

    write_table(synthetic(), tmp_path / "t.parquet")
    result = train_file(tmp_path / "t.parquet", tmp_path / "model", folds=3, search=False,
                        device="cpu", candidates="window+judged",
                        params=TrainParams(num_rounds=20))
    brief = result.to_dict()
    assert brief["artifact"] == str(tmp_path / "model") and len(brief["search"]) == 1
    assert brief["training_rows"] == "window+judged" and brief["cv"]["folds"]
    assert brief["params"] == {"max_depth": 3, "rounds": 20, "eta": 0.1,
                               "objective": "rank:ndcg", "parallel_trees": 4}
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["data"]["table"] == str((tmp_path / "t.parquet").resolve())
