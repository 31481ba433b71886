"""The demo's loop as a sequence of steps: each stage in order, fed the previous one's files,
and a failed parity gate the last step."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

from esrank import loop

USE_CASES = ("index", "push_feature_sets", "log_table", "upload", "judge_llm", "evaluate",
             "compare", "served_search")


class _App:
    """The resources the loop reads: settings (and an engine nobody calls here)."""

    def __init__(self, home, knn: int = 0):
        self.settings = SimpleNamespace(home=home, rescore_window=100, recall_knn=knn,
                                        uses_local_engine=False,
                                        index="products", feature_sets=home / "sets",
                                        serve=SimpleNamespace(host="127.0.0.1", port=8080))
        self.engine = object()


def _stage_calls(monkeypatch, passed: bool) -> list[tuple]:
    """Each use case the loop calls, recorded and answered with a stand-in."""
    calls = []
    answers = {"upload": (SimpleNamespace(name="chorus"),
                          SimpleNamespace(parity=SimpleNamespace(passed=passed))),
               "served_search": ("found", {})}

    def recorder(name):
        def call(*args, **kwargs):
            calls.append((name, args, kwargs))
            return answers.get(name, name)
        return call

    for name in USE_CASES:
        monkeypatch.setattr(loop, name, recorder(name))
    monkeypatch.setattr(loop, "load_feature_sets", lambda path: [])
    return calls


@pytest.fixture
def trained(monkeypatch):
    tables = []
    # the module, not esrank.learn's `train` function of the same name
    monkeypatch.setattr(importlib.import_module("esrank.learn.train"), "train_file",
                        lambda table, out: tables.append((table, out)) or "trained")
    return tables


def test_the_demo_runs_every_stage_in_order_on_the_files_of_the_one_before(
        tmp_path, trained, monkeypatch):
    calls = _stage_calls(monkeypatch, passed=True)
    app = _App(tmp_path)
    steps = list(loop.demo(app, reindex=True, query="tv", sidecar=lambda q: {"query": q}))
    kinds = [s.kind for s in steps if s.kind != "say"]
    assert kinds == ["index", "features", "log", "train", "deploy", "judge", "evaluate",
                     "compare", "search", "sidecar"]
    assert [c[0] for c in calls] == list(USE_CASES)
    assert all(args[0] is app for name, args, _ in calls if name != "push_feature_sets")
    work = tmp_path / "demo"
    by_name = {name: (args, kwargs) for name, args, kwargs in calls}
    assert by_name["log_table"][0][3] == trained[0][0] == work / "chorus.parquet"
    assert by_name["upload"][0][1] == trained[0][1]  # the artifact just trained
    holes = by_name["judge_llm"][0][2]
    assert by_name["judge_llm"][1] == {"holes_only": True, "configs": ("active",),
                                       "limit": loop.DEMO_HOLES}
    assert by_name["evaluate"][1]["machine"] == by_name["compare"][1]["machine"] == holes
    assert by_name["served_search"][0][1] == "tv"
    assert [s.value for s in steps if s.kind == "search"] == ["found"]
    assert steps[-4].value == (8080, "tv", {"query": "tv"})
    assert steps[-1].value.startswith("live comparison page: ESRANK_JUDGMENTS=")


def test_a_failed_parity_gate_is_the_last_step(tmp_path, trained, monkeypatch):
    calls = _stage_calls(monkeypatch, passed=False)
    steps = list(loop.demo(_App(tmp_path), reindex=True, sidecar=lambda q: {}))
    assert steps[-1].kind == "deploy" and not steps[-1].value[0].parity.passed
    assert "judge_llm" not in [c[0] for c in calls]


@pytest.mark.parametrize("bm25_cv, served", [(0.60, "recall"), (0.70, "bm25"), (0.65, "bm25")])
def test_the_demo_serves_the_recall_stage_only_when_it_beats_bm25_alone(
        tmp_path, monkeypatch, bm25_cv, served):
    import numpy as np

    from esrank.catalogue.recall import Recall
    from esrank.learn.table import FeatureMatrix, read_table, write_table

    calls = _stage_calls(monkeypatch, passed=True)
    work = tmp_path / "demo"
    work.mkdir()
    # one query: a from BM25, b from kNN alone, c judged outside both
    write_table(FeatureMatrix("s@0", ("f",), ("q",) * 3, ("x",) * 3, ("a", "b", "c"), (1, 0, 2),
                              np.zeros((3, 1), np.float32), (1, 2, 0), (True, False, True),
                              recall=Recall(100, 200), lists=((1, 0), (0, 1), (0, 0))),
                work / "chorus.parquet")
    tables = {}
    cv = {"bm25": bm25_cv, "recall": 0.65}
    monkeypatch.setattr(importlib.import_module("esrank.learn.train"), "train_file",
                        lambda table, out: tables.setdefault(out.name, read_table(table))
                        and SimpleNamespace(cv_mean=cv[out.name]))
    steps = list(loop.demo(_App(tmp_path, knn=200), reindex=True))
    assert tables["bm25"].doc_ids == ("a", "c") and tables["bm25"].recall == Recall(100)
    assert tables["recall"].doc_ids == ("a", "b", "c")
    uploaded = next(args for name, args, _ in calls if name == "upload")[1]
    assert uploaded.name == served
    said = [s.value for s in steps if s.kind == "say" and "served CV ndcg" in s.value]
    assert said and f"serving {'bm25@100+knn@200' if served == 'recall' else 'bm25@100'}" in said[0]
