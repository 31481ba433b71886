"""Everything esrank writes appears whole or not at all, and artifacts are never replaced."""

from __future__ import annotations

import json

import pytest
from support.tables import synthetic

from esrank.core.errors import InputError
from esrank.core.files import new_file, new_folder, write_file
from esrank.learn.table import write_table
from esrank.learn.train import TrainParams, train


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.html"
    write_file(path, "old")
    with pytest.raises(RuntimeError), new_file(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    write_file(path, "new")
    assert path.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_a_table_written_over_a_failure_keeps_the_previous_one(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    table = tmp_path / "t.parquet"
    write_table(synthetic(queries=3, docs=4), table)
    before = table.read_bytes()

    def crash(t, where, **kw):
        with open(where, "wb") as torn:
            torn.write(b"PAR1 half")
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="No space"):
        write_table(synthetic(queries=5, docs=4), table)
    assert table.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_an_artifact_folder_is_never_overwritten(tmp_path):
    out = tmp_path / "model"
    train(synthetic(), out, folds=3, search=False, device="cpu", params=TrainParams(num_rounds=5))
    meta = (out / "meta.json").read_text()
    with pytest.raises(InputError, match="artifacts are never overwritten"):
        train(synthetic(seed=1), out, folds=3, search=False, device="cpu",
              params=TrainParams(num_rounds=5))
    assert (out / "meta.json").read_text() == meta and json.loads(meta)["feature_names"]
    with pytest.raises(RuntimeError), new_folder(tmp_path / "half") as tmp:
        (tmp / "model.json").write_text("{}")
        raise RuntimeError("killed")
    assert not (tmp_path / "half").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "model"]
