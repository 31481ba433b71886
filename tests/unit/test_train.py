from __future__ import annotations

import json

import numpy as np
import pytest

from esrank.errors import InputError
from esrank.train import TrainParams, cross_validate, grouped_folds, train
from esrank.types import FeatureMatrix


def synthetic(queries: int = 30, docs: int = 12, seed: int = 0) -> FeatureMatrix:
    """Grade follows feature 'signal'; 'noise' is random; 'sparse' is mostly missing."""
    rng = np.random.default_rng(seed)
    rows, qids, grades = [], [], []
    for q in range(queries):
        for _ in range(docs):
            signal = rng.random()
            grade = int(signal * 4 - 1e-9)
            sparse = rng.random() if rng.random() < 0.2 else np.nan
            rows.append([signal, rng.random(), sparse])
            qids.append(str(q))
            grades.append(grade)
    n = len(rows)
    return FeatureMatrix("syn@0123456789", ("signal", "noise", "sparse"), tuple(qids),
                         tuple(f"query {q}" for q in qids), tuple(f"d{i}" for i in range(n)),
                         tuple(grades), np.array(rows, dtype=np.float32))


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
    good = np.mean(cross_validate(m, TrainParams(num_rounds=50), 3))
    noise_only = FeatureMatrix(m.feature_set, ("noise",), m.qids, m.queries, m.doc_ids,
                               m.grades, m.values[:, [1]])
    bad = np.mean(cross_validate(noise_only, TrainParams(num_rounds=50), 3))
    assert good > 0.95 and good > bad + 0.1


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

    from esrank.train import MISSING_AS

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
