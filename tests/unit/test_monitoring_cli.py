"""esrank monitor run / online without an engine: the threshold logic, the comparison with
the previous run, and the exit codes (0 ok, 1 error, 2 usage, 3 alert)."""

from __future__ import annotations

import json

import pytest
from test_cli import esrank
from test_monitoring_online import EVENTS, QUERIES

from esrank.cli.monitor import ALERT, run_text
from esrank.evaluation.runs import StoredRun
from esrank.judgments.metrics import Evaluation
from esrank.monitoring.scheduled import MonitorRun, changes_of
from esrank.ubi.log import UbiEvent, UbiQuery


def _ev(values: dict[str, float]) -> Evaluation:
    per_query = {q: {"ndcg@10": v, "ndcg@10_condensed": v + 0.1} for q, v in values.items()}
    mean = {m: sum(pq[m] for pq in per_query.values()) / len(per_query)
            for m in ("ndcg@10", "ndcg@10_condensed")}
    return Evaluation(mean, per_query)


BEFORE = _ev({"a": 0.6, "b": 0.5, "c": 0.7, "d": 0.4})


def _watched(now: Evaluation, max_drop: float = 0.02) -> MonitorRun:
    previous = StoredRun("run-1", "2026-12-01T00:00:00Z", "m-v1", BEFORE)
    return MonitorRun("m-v1", "j.csv", "run-2", now.mean, previous,
                      changes_of(BEFORE, now), max_drop)


def test_a_drop_past_the_threshold_is_a_regression_a_smaller_one_is_not():
    dropped = _watched(_ev({"a": 0.5, "b": 0.45, "c": 0.65, "d": 0.35}))  # -0.0625
    assert dropped.regressed
    assert [c.metric for c in dropped.changes] == ["ndcg@10", "ndcg@10_condensed"]
    assert dropped.changes[0].delta == pytest.approx(-0.0625)
    assert dropped.changes[0].p_value is not None  # paired over the 4 queries
    assert "REGRESSED m-v1" in run_text(dropped) and "against run run-1" in run_text(dropped)
    assert not _watched(_ev({"a": 0.6, "b": 0.5, "c": 0.7, "d": 0.36})).regressed  # -0.01
    assert not _watched(_ev({"a": 0.5, "b": 0.45, "c": 0.65, "d": 0.35}), 0.1).regressed
    assert not _watched(_ev({"a": 0.9, "b": 0.9, "c": 0.9, "d": 0.9})).regressed  # a gain


def test_without_shared_per_query_values_the_means_compare():
    changes = changes_of(BEFORE, _ev({"other": 0.3}))
    assert changes[0].p_value is None and changes[0].delta == pytest.approx(-0.25)


def test_the_first_run_has_nothing_to_compare():
    first = MonitorRun("m-v1", "j.csv", "run-1", BEFORE.mean, None, (), 0.02)
    assert not first.regressed and first.to_dict()["previous"] is None
    assert run_text(first).startswith("FIRST RUN m-v1")


def test_monitor_run_without_judgments_exits_1_before_any_engine_call():
    out = esrank("monitor", "run", ESRANK_URL="http://127.0.0.1:9")
    assert out.returncode == 1 and "pass --judgments FILE or set ESRANK_JUDGMENTS" in out.stderr
    assert esrank("monitor", "run", "--max-drop", "-1").returncode == 2


def test_monitor_run_with_the_engine_down_exits_1(tmp_path):
    judged = tmp_path / "j.csv"
    judged.write_text("query,docid,rating\ntv,d1,3\n")
    out = esrank("monitor", "run", "--judgments", str(judged), "--config", "bm25",
                 ESRANK_URL="http://127.0.0.1:9", ESRANK_TIMEOUT="2")
    assert out.returncode == 1 and "cannot reach" in out.stderr


@pytest.fixture()
def ubi_file(tmp_path):
    path = tmp_path / "ubi.ndjson"
    path.write_text("".join(json.dumps(r.to_doc()) + "\n" for r in [*QUERIES, *EVENTS]))
    return path


def test_monitor_online_reads_a_ubi_file(ubi_file):
    out = esrank("monitor", "online", "--ubi", str(ubi_file), "--since", "1970-01-01T00:00:10",
                 "--until", "1970-01-01T00:00:50", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["models"]["m1"]["ctr@10"] == 0.25 and data["comparison"] is None
    assert data["window"] == {"since": "1970-01-01T00:00:10Z", "until": "1970-01-01T00:00:50Z"}


def test_monitor_online_exits_3_when_a_rate_is_flagged(ubi_file):
    # baseline: 40 searches of m1, each clicked; the window: 40 more, none clicked
    more = []
    for i in range(40):
        q = UbiQuery(f"x{i}", "tv", timestamp=200 + i,
                                 attributes={"ranker": "m1"}, hit_ids=("d1",))
        more.append(json.dumps(q.to_doc()) + "\n")
    for i in range(40):
        q = UbiQuery(f"y{i}", "tv", timestamp=110 + i,
                                 attributes={"ranker": "m1"}, hit_ids=("d1",))
        e = UbiEvent("click", f"y{i}", "d1", 1, timestamp=110 + i)
        more += [json.dumps(q.to_doc()) + "\n", json.dumps(e.to_doc()) + "\n"]
    with ubi_file.open("a") as f:
        f.writelines(more)
    args = ("monitor", "online", "--ubi", str(ubi_file), "--since", "1970-01-01T00:03:20",
            "--until", "1970-01-01T00:04:00", "--baseline-since", "1970-01-01T00:01:45")
    out = esrank(*args)
    assert out.returncode == ALERT == 3, out.stderr
    assert "FLAGGED m1 ctr@10: 100.00% -> 0.00%" in out.stdout
    assert esrank(*args, "--alpha", "0").returncode == 2
    bad = esrank("monitor", "online", "--ubi", str(ubi_file), "--since", "yesterday")
    assert bad.returncode == 1 and "time 'yesterday'" in bad.stderr
    empty = esrank("monitor", "online", "--ubi", str(ubi_file), "--since", "1h", "--until", "2h")
    assert empty.returncode == 1 and "is empty" in empty.stderr
