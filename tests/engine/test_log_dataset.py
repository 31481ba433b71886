"""Logging at scale on the real plugin: concurrent workers, a dataset in parts, resume after a
failure (docs/learning.md, "Logging at scale")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.chorus_slice import write_slice_judgments

from esrank.catalogue.recall import Recall
from esrank.core.errors import EngineError
from esrank.engine import Engine
from esrank.features.parser import load_feature_set
from esrank.features.sync import push_feature_sets
from esrank.judgments.lists import read_judgments
from esrank.learn.feature_log import log_dataset, log_judgments
from esrank.learn.table import table_parts

ROOT = Path(__file__).resolve().parents[2]
FS = load_feature_set(ROOT / "feature_sets" / "chorus.yaml")
RECALL = Recall(20, 10)


class FailingTransport:
    """The engine's transport until its `fail_at`-th msearch, which fails as a lost node's."""

    def __init__(self, transport, fail_at: int):
        self.transport, self.flavor, self.fail_at, self.msearches = (
            transport, transport.flavor, fail_at, 0)

    def request(self, operation, method, path, **kw):
        if path.endswith("/_msearch"):
            self.msearches += 1
            if self.msearches == self.fail_at:
                raise EngineError(operation, "cannot reach the node (simulated)")
        return self.transport.request(operation, method, path, **kw)


def assert_same_table(a, b):
    assert (a.qids, a.doc_ids, a.grades, a.ranks, a.lists) == (b.qids, b.doc_ids, b.grades,
                                                                b.ranks, b.lists)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, equal_nan=True)


def test_a_dataset_logged_by_workers_equals_the_single_file_and_resumes(engine, slice_alias,
                                                                        encoder, tmp_path):
    from esrank.learn.table import read_table

    push_feature_sets(engine, [FS])
    judged = read_judgments(write_slice_judgments(tmp_path / "j.csv"))
    whole = log_judgments(engine, slice_alias, FS, judged, encoder, recall=RECALL,
                          queries_per_request=4, progress=False).matrix
    folder = tmp_path / "table"

    def log(eng: Engine, workers: int = 2):
        return log_dataset(eng, slice_alias, FS, judged, encoder, folder, recall=RECALL,
                           part_size=6, queries_per_request=2, workers=workers, progress=False)

    with pytest.raises(EngineError, match="simulated"):
        log(Engine(FailingTransport(engine.transport, fail_at=14)))
    before = len(table_parts(folder))
    assert 0 < before < 7  # 39 queries: 7 parts of 6
    resumed = log(engine)
    assert (resumed.written, resumed.skipped) == (7 - before, before)
    assert_same_table(read_table(folder), whole)

    table_parts(folder)[3].unlink()
    again = log(engine, workers=4)
    part_three = list(judged.by_query().values())[18:24]
    assert (again.written, again.skipped) == (1, 6)  # only the missing part logged again
    assert again.judgments == sum(len(js) for js in part_three)
    assert again.rows == resumed.rows == len(whole) and again.missing_docs == []
    assert_same_table(read_table(folder), whole)


def test_the_cli_logs_a_dataset_and_reports_its_parts(engine, cli_env, slice_alias, tmp_path):
    judged = write_slice_judgments(tmp_path / "j.csv")
    env = {**cli_env, "ESRANK_INDEX": slice_alias}

    def esrank_log():
        run = subprocess.run([sys.executable, "-m", "esrank.cli", "log", str(judged), "-o",
                              str(tmp_path / "table"), "--window", "20", "--knn", "10",
                              "--workers", "2", "--part-size", "10", "--json"], env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        return json.loads(run.stdout)

    first = esrank_log()
    assert first["parts"] == {"written": 4, "skipped": 0} and first["workers"] == 2
    assert first["ranklib"] is None and first["judgments_per_second"] > 0
    second = esrank_log()
    assert second["parts"] == {"written": 0, "skipped": 4} and second["rows"] == first["rows"]
    assert len(table_parts(tmp_path / "table")) == 4
