"""Export to the plugin's XGBoost JSON, checked by scoring it the way the plugin does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from esrank.core.errors import ModelError
from esrank.core.feature_set import Feature, FeatureSet, QueryParam
from esrank.deploy.export import plugin_model
from esrank.learn.artifact import MISSING_AS, ModelArtifact

NAMES = ("f_a", "f_b", "f_c")


def _set(names=NAMES) -> FeatureSet:
    feats = tuple(Feature(n, ("keywords",), "mustache", {"match": {n: "{{keywords}}"}})
                  for n in names)
    return FeatureSet("toy", "", (QueryParam("keywords", "string"),), feats)


def _artifact(tmp_path: Path, objective: str, names=NAMES, normalizers=None) -> Path:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.random((200, 3)).astype(np.float32) * 10
    x[rng.random((200, 3)) < 0.2] = np.nan
    y = rng.integers(0, 4, 200) if objective.startswith("rank") else rng.random(200) * 3
    if objective.startswith(("binary", "reg:logistic")):
        y = (y > 1.5).astype(float)
    dm = xgb.DMatrix(np.nan_to_num(x, nan=MISSING_AS), label=y, feature_names=list(NAMES))
    if objective.startswith("rank"):
        dm.set_group([20] * 10)
    booster = xgb.train({"objective": objective, "max_depth": 4, "eta": 0.3}, dm, 12)
    booster.save_model(tmp_path / "model.json")
    fs = _set(names)
    meta = {"feature_set": fs.engine_name, "feature_names": list(NAMES), "missing_as": MISSING_AS,
            "normalizers": normalizers or {}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    np.save(tmp_path / "x.npy", x)
    return tmp_path


def _plugin_score(model: dict, names, row) -> float:
    """Score one row as the plugin does: float32 sums, `value < threshold` goes "yes", NaN goes
    "no", normalizers first, sigmoid for logistic objectives."""
    definition = json.loads(model["definition"])
    row = np.array(row, dtype=np.float32)
    for i, name in enumerate(names):
        spec = model.get("feature_normalizers", {}).get(name)
        if spec and "standard" in spec:
            s = spec["standard"]
            row[i] = (row[i] - np.float32(s["mean"])) / np.float32(s["standard_deviation"])
    values = dict(zip(names, row, strict=True))
    total = np.float32(0)
    for node in definition["splits"]:
        while "leaf" not in node:
            v = values[node["split"]]
            yes = not math.isnan(v) and np.float32(node["split_condition"]) > v
            target = node["yes"] if yes else node["no"]
            node = next(c for c in node["children"] if c["nodeid"] == target)
        total = np.float32(total + np.float32(node["leaf"]))
    if definition["objective"] in ("binary:logistic", "reg:logistic"):
        return float(1 / (1 + math.exp(-total)))
    return float(total)


@pytest.mark.parametrize("objective,served_as", [
    ("rank:ndcg", "rank:ndcg"), ("rank:pairwise", "rank:pairwise"),
    ("reg:squarederror", "reg:linear"), ("binary:logistic", "binary:logistic")])
def test_export_scores_what_the_booster_scores(tmp_path, objective, served_as):
    path = _artifact(tmp_path, objective)
    art = ModelArtifact.load(path)
    model = plugin_model(art, _set())
    assert model["type"] == "model/xgboost+json"
    assert json.loads(model["definition"])["objective"] == served_as
    x = np.load(path / "x.npy")
    local = art.predict(x)
    plugin = [_plugin_score(model, NAMES, row) for row in x]
    assert np.isnan(x).any()  # missing values take the plugin's route
    np.testing.assert_allclose(plugin, local, atol=1e-5)


def test_base_score_is_folded_into_the_trees(tmp_path):
    art = ModelArtifact.load(_artifact(tmp_path, "reg:squarederror"))
    raw = json.loads(art.booster.save_raw("json"))
    base = float(raw["learner"]["learner_model_param"]["base_score"].strip("[]"))
    assert abs(base) > 0.1  # the mean label: ignoring it would shift every score
    model = plugin_model(art, _set())
    x = np.load(tmp_path / "x.npy")[:5]
    np.testing.assert_allclose([_plugin_score(model, NAMES, r) for r in x], art.predict(x),
                               atol=1e-5)


def test_normalizers_are_exported_and_applied(tmp_path):
    norms = {"f_a": {"standard": {"mean": 5.0, "standard_deviation": 2.0}}}
    art = ModelArtifact.load(_artifact(tmp_path, "rank:ndcg", normalizers=norms))
    model = plugin_model(art, _set())
    assert model["feature_normalizers"] == norms
    x = np.load(tmp_path / "x.npy")[:20]
    np.testing.assert_allclose([_plugin_score(model, NAMES, r) for r in x], art.predict(x),
                               atol=1e-5)


def test_a_model_for_other_features_is_refused(tmp_path):
    art = ModelArtifact.load(_artifact(tmp_path, "rank:ndcg"))
    with pytest.raises(ModelError, match="same names, different order"):
        plugin_model(art, _set(("f_b", "f_a", "f_c")))
    with pytest.raises(ModelError, match=r"unknown to the set: \['f_c'\]"):
        plugin_model(art, _set(("f_a", "f_b", "f_d")))


def test_an_objective_the_plugin_cannot_serve_is_refused(tmp_path):
    import xgboost as xgb

    x = np.random.default_rng(1).random((50, 3))
    dm = xgb.DMatrix(x, label=np.arange(50) % 4, feature_names=list(NAMES))
    xgb.train({"objective": "count:poisson"}, dm, 2).save_model(tmp_path / "model.json")
    (tmp_path / "meta.json").write_text(json.dumps(
        {"feature_set": _set().engine_name, "feature_names": list(NAMES),
         "missing_as": MISSING_AS}))
    with pytest.raises(ModelError, match="count:poisson"):
        plugin_model(ModelArtifact.load(tmp_path), _set())


def test_a_broken_artifact_names_the_file(tmp_path):
    with pytest.raises(ModelError, match="meta.json is missing"):
        ModelArtifact.load(tmp_path)
    (tmp_path / "meta.json").write_text("{\n  nope")
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelError, match=r"meta.json:2: invalid JSON"):
        ModelArtifact.load(tmp_path)
