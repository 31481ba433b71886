"""The demo's loop as a sequence of steps: each stage in order, fed the previous one's files,
and a failed parity gate the last step."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

from esrank import loop


class _App:
    """Records the calls the loop makes; answers each with a stand-in."""

    def __init__(self, home, passed=True):
        self.settings = SimpleNamespace(home=home, rescore_window=100, uses_local_engine=False,
                                        index="products",
                                        serve=SimpleNamespace(host="127.0.0.1", port=8080))
        self.passed, self.calls = passed, []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "deploy":
                return SimpleNamespace(name="chorus"), SimpleNamespace(
                    parity=SimpleNamespace(passed=self.passed))
            return name

        return call


@pytest.fixture
def trained(monkeypatch):
    tables = []
    # the module, not esrank.learn's `train` function of the same name
    monkeypatch.setattr(importlib.import_module("esrank.learn.train"), "train_file",
                        lambda table, out: tables.append((table, out)) or "trained")
    return tables


def test_the_demo_runs_every_stage_in_order_on_the_files_of_the_one_before(tmp_path, trained):
    app = _App(tmp_path)
    steps = list(loop.demo(app, reindex=True, query="tv", sidecar=lambda q: {"query": q}))
    kinds = [s.kind for s in steps if s.kind != "say"]
    assert kinds == ["index", "features", "log", "train", "deploy", "judge", "evaluate",
                     "compare", "search", "sidecar"]
    assert [c[0] for c in app.calls] == ["index", "push_feature_sets", "log", "deploy",
                                         "judge_llm", "evaluate", "compare", "search"]
    work = tmp_path / "demo"
    calls = {name: (args, kwargs) for name, args, kwargs in app.calls}
    assert calls["log"][0][2] == trained[0][0] == work / "chorus.parquet"
    assert calls["deploy"][0][0] == trained[0][1]  # the artifact just trained
    holes = calls["judge_llm"][0][1]
    assert calls["judge_llm"][1] == {"holes": True, "configs": ("active",),
                                     "limit": loop.DEMO_HOLES}
    assert calls["evaluate"][1]["machine"] == calls["compare"][1]["machine"] == holes
    assert steps[-4].value == (8080, "tv", {"query": "tv"})
    assert steps[-1].value.startswith("live comparison page: ESRANK_JUDGMENTS=")


def test_a_failed_parity_gate_is_the_last_step(tmp_path, trained):
    app = _App(tmp_path, passed=False)
    steps = list(loop.demo(app, reindex=True, sidecar=lambda q: {}))
    assert steps[-1].kind == "deploy" and not steps[-1].value[0].parity.passed
    assert "judge_llm" not in [c[0] for c in app.calls]
