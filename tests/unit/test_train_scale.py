"""Training at scale: the plan a table's size chooses, progress and timing, the Dask path."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from support.tables import synthetic
from test_train import pooled

from esrank.core.errors import InputError
from esrank.learn.search import LARGE, plan_for
from esrank.learn.train import TrainParams, train


def test_a_small_table_gets_every_fold_and_bagging_a_large_one_a_holdout_and_halving():
    small, large = plan_for(97), plan_for(11_349)
    assert (small.folds_evaluated, small.parallel_trees, small.rungs) == (5, 4, (1.0,))
    assert (large.folds, large.folds_evaluated, large.parallel_trees) == (5, 1, 1)
    assert large.rungs == (0.25, 1.0) and plan_for(LARGE - 1).parallel_trees == 4
    assert plan_for(11_349, folds=3, parallel_trees=2).folds_evaluated == 3  # asked for


def test_a_large_table_is_searched_by_halving_and_meta_records_it(tmp_path):
    big = pooled(queries=LARGE, window=8, outside=2)
    result = train(big, tmp_path / "m", device="cpu", params=TrainParams(num_rounds=20))
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["plan"]["folds_evaluated"] == 1 and meta["params"]["parallel_trees"] == 1
    rungs = [s["rung"] for s in meta["search"]]
    # 2 candidate sets x 2 etas (x 2 rounds each) on a quarter of the queries, the best half on all
    assert rungs.count(0) == 8 and rungs.count(1) == 4
    assert {s["share"] for s in meta["search"]} == {0.25, 1.0}
    assert meta["cv"]["mean"] == max(s["cv_mean"] for s in meta["search"] if s["rung"] == 1)
    assert len(meta["cv"]["folds"]) == 1 and result.to_dict()["plan"]["queries"] == LARGE


def test_a_rung_is_scored_on_its_share_of_the_held_out_queries():
    from esrank.learn.search import LocalData

    data = LocalData(pooled(queries=200), 5, 42, "cpu", {})
    booster = data.fit(0, 0.25, TrainParams(num_rounds=5, parallel_trees=1), "window")
    quarter = data.score(booster, 0, 0.25, [5])[5][2]
    whole = data.score(booster, 0, 1.0, [5])[5][2]
    assert set(quarter) < set(whole) and 0.1 < len(quarter) / len(whole) < 0.45
    assert data.first_pass(0, 0.25) != data.first_pass(0, 1.0)


def test_progress_and_time_per_fit_are_reported(tmp_path, capsys):
    from click.testing import CliRunner

    from esrank.cli import cli
    from esrank.learn.table import write_table

    write_table(synthetic(), tmp_path / "t.parquet")
    out = CliRunner().invoke(cli, ["train", str(tmp_path / "t.parquet"), "-o",
                                    str(tmp_path / "m"), "--folds", "3", "--device", "cpu",
                                    "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)  # --json: no bar mixed in
    timing = data["timing"]
    assert timing["search_fits"] == 2 and timing["final_fit"] > 0
    assert timing["search_fit_seconds"] == pytest.approx(
        sum({s["eta"]: s["fit_seconds"] for s in data["search"]}.values()), abs=0.05)
    assert all(s["fit_seconds"] > 0 for s in data["search"])
    assert data["plan"]["parallel_trees"] == 4
    from esrank.learn.train import progress_bar

    with progress_bar(3, True) as bar:
        bar.update(3)
    assert "3/3" in capsys.readouterr().err


def _dataset(tmp_path, matrix, part_rows=300):
    from esrank.learn.distributed import to_dataset

    return to_dataset(matrix, tmp_path / "d", part_rows=part_rows)[0].parent


def test_dask_local_trains_the_same_artifact_the_deploy_check_accepts(tmp_path):
    pytest.importorskip("distributed")
    from esrank.core.feature_set import Feature, FeatureSet
    from esrank.deploy.export import plugin_model
    from esrank.learn.artifact import ModelArtifact
    from esrank.learn.distributed import train_dask

    fs = FeatureSet("pool", "", (), tuple(Feature(n, ("keywords",), "mustache", {"match_all": {}})
                                          for n in ("first_pass_score", "other")))
    table = replace(pooled(queries=30), feature_set=fs.engine_name)
    folder = _dataset(tmp_path, table)
    assert len(list(folder.glob("part-*.parquet"))) > 1
    result = train_dask(folder, tmp_path / "dask", address="local:2", folds=3,
                        params=TrainParams(num_rounds=20))
    local = train(table, tmp_path / "local", folds=3, device="cpu",
                  params=TrainParams(num_rounds=20))
    artifact = ModelArtifact.load(tmp_path / "dask")
    meta = artifact.meta
    assert meta["feature_names"] == list(table.feature_names) and meta["cv"]["view"] == "served"
    assert meta["data"]["rows"] == len(table) and meta["timing"]["dask"] == "local:2"
    assert len(meta["timing"]["worker_peak_rss_mb"]) == 2
    assert result.cv.bm25 == pytest.approx(local.cv.bm25, abs=1e-9)  # the same folds
    assert abs(result.cv_mean - local.cv_mean) < 0.05
    ours = artifact.predict(table.values)
    theirs = ModelArtifact.load(tmp_path / "local").predict(table.values)
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9
    assert plugin_model(artifact, fs)["type"] == "model/xgboost+json"


def test_a_dataset_whose_parts_split_a_query_is_refused(tmp_path):
    pytest.importorskip("distributed")
    from esrank.learn.distributed import train_dask
    from esrank.learn.table import write_part

    table = pooled(queries=6)
    cut = 5  # inside query "0"'s 45 rows
    write_part(table.take(range(cut)), tmp_path / "d", 0)
    write_part(table.take(range(cut, len(table))), tmp_path / "d", 1)
    with pytest.raises(InputError, match="query '0' is split between part-00000.parquet and "
                                         "part-00001.parquet"):
        train_dask(tmp_path / "d", tmp_path / "m", address="local:1")
