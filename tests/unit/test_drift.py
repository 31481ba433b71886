"""Feature drift without an engine: PSI worked by hand, reference bins from a table, the
missing bin, the sidecar's window and gauges, and `esrank monitor drift`'s exit code."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.tables import synthetic

from esrank.core.errors import ModelError
from esrank.learn.artifact import ModelArtifact
from esrank.learn.reference import FeatureBins, Reference, feature_bins, served_rows
from esrank.learn.train import TrainParams, train
from esrank.monitoring.drift import (
    EPSILON,
    DriftReport,
    DriftWindow,
    FeatureDrift,
    feature_drift,
    level,
    psi,
    rows_of,
    sample_queries,
)

NAN = float("nan")


def test_psi_worked_by_hand():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.17329 + 0.10137
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # symmetric in its two sides
    assert psi([0.1, 0.9], [0.4, 0.6]) == pytest.approx(psi([0.4, 0.6], [0.1, 0.9]))


def test_an_empty_bin_counts_as_epsilon_not_infinity():
    # the reference never saw the second bin; live puts 1% there:
    # (0.99 - 1) ln(0.99) + (0.01 - 1e-4) ln(0.01 / 1e-4)
    expected = -0.01 * math.log(0.99) + (0.01 - EPSILON) * math.log(0.01 / EPSILON)
    assert psi([1.0, 0.0], [0.99, 0.01]) == pytest.approx(expected)
    assert psi([1.0, 0.0], [0.99, 0.01]) == pytest.approx(0.0457, abs=1e-4)


def test_levels_ok_watch_alert():
    assert [level(v) for v in (0.05, 0.1, 0.19, 0.2, 1.5)] == \
        ["ok", "watch", "watch", "alert", "alert"]
    assert level(0.06, alert=0.1) == "watch"  # watch from half a lower alert level


def test_bins_are_deciles_with_the_missing_share_a_bin_of_its_own():
    values = np.array([*range(1, 11), NAN, NAN], dtype=np.float64)  # 1..10 and two missing
    bins = feature_bins(values)
    assert bins.edges == (1, 2, 3, 4, 5, 6, 7, 8, 9)  # values taken, not interpolated
    # one value per finite bin, of 12 rows; the missing bin holds 2 of 12
    assert bins.shares == pytest.approx((1 / 12,) * 10)
    assert bins.missing == pytest.approx(2 / 12)
    assert sum(bins.shares) + bins.missing == pytest.approx(1.0)
    # the same values fall into the same bins: no drift
    shares, missing = bins.shares_of(values)
    assert psi((*bins.shares, bins.missing), (*shares, missing)) == 0.0


def test_ties_share_one_edge_and_a_value_on_an_edge_falls_below_it():
    bins = feature_bins(np.array([0.0] * 7 + [1.0] * 3))
    assert bins.edges == (0.0, 1.0)  # the deciles 0, 0, ..., 1 without repeats
    assert bins.shares == pytest.approx((0.7, 0.3, 0.0))
    shares, missing = bins.shares_of(np.array([0.0, 0.5, 1.0, 2.0]))
    assert shares.tolist() == [0.25, 0.5, 0.25] and missing == 0.0


def test_a_mostly_missing_feature_gets_fewer_bins_of_about_five_percent():
    values = np.array([*range(1, 16), *[NAN] * 85], dtype=np.float64)  # 15% computed
    bins = feature_bins(values)
    assert bins.edges == (5, 10)  # 3 bins of 5%, not 10 of 1.5%
    assert bins.shares == pytest.approx((0.05, 0.05, 0.05)) and bins.missing == 0.85


def test_a_feature_never_computed_is_all_missing():
    bins = feature_bins(np.array([NAN, NAN]))
    assert bins.edges == () and bins.shares == (0.0,) and bins.missing == 1.0
    # computed live, for every hit: the whole mass moves out of the missing bin
    drift = feature_drift(Reference({"f": bins}, 2, 1), ["f"], np.array([[1.0], [2.0]]))[0]
    assert drift.level == "alert" and drift.psi > 5


def test_the_served_rows_are_each_querys_top_candidates_by_score():
    qids = ("a", "a", "a", "b", "b")
    ranks = (1, 2, 0, 1, 2)  # a's third row is a judged doc outside the candidates
    scores = np.array([0.1, 0.9, 5.0, 0.3, 0.2])
    assert served_rows(qids, ranks, scores, top=1).tolist() == [1, 3]
    assert served_rows(qids, None, scores, top=1).tolist() == [2, 3]  # no window: every row
    assert served_rows(qids, ranks, scores, top=10).tolist() == [0, 1, 3, 4]


def test_training_stores_reference_bins_of_the_served_rows(tmp_path):
    matrix = synthetic(queries=20, docs=15)
    train(matrix, tmp_path / "m", params=TrainParams(num_rounds=5), search=False, folds=2,
          exclude=["noise"])
    meta = ModelArtifact.load(tmp_path / "m").meta
    reference = Reference.from_dict(meta["reference"])
    assert list(reference.features) == ["signal", "sparse"]  # excluded: not binned
    assert (reference.top, reference.rows, reference.queries) == (10, 200, 20)
    # the model ranks by 'signal': its top 10 of 15 hold the high values
    sig = reference.features["signal"]
    assert sig.edges[0] > 0.2 and sig.missing == 0.0
    assert reference.features["sparse"].missing == pytest.approx(0.8, abs=0.1)
    # the table's own served rows show no drift against them
    rows = served_rows(matrix.qids, matrix.ranks,
                       ModelArtifact.load(tmp_path / "m").predict(matrix.values))
    drifts = feature_drift(reference, matrix.feature_names, matrix.values[rows])
    assert max(d.psi for d in drifts) == pytest.approx(0.0, abs=1e-6)


def test_malformed_reference_bins_name_their_source():
    with pytest.raises(ModelError, match="registry: m1: reference bins are malformed"):
        Reference.from_dict({"features": {"f": {"edges": []}}}, "registry: m1")


def test_feature_drift_is_sorted_and_flags_a_shift():
    reference = Reference({"a": FeatureBins((1.0,), (0.5, 0.5), 0.0),
                           "b": FeatureBins((1.0,), (0.5, 0.5), 0.0)}, 100, 10)
    live = rows_of([{"a": 0.0, "b": 0.0}, {"a": 2.0, "b": 0.0}, {"b": 0.0}, {"a": 2.0}],
                   ["a", "b"])
    drifts = feature_drift(reference, ["a", "b"], live)
    assert [d.feature for d in drifts] == ["b", "a"]  # highest PSI first
    assert drifts[0].live == (0.75, 0.0, 0.25)  # b: 3 low, none high, one missing
    with pytest.raises(ModelError, match="feature 'a'"):
        feature_drift(reference, ["b"], live[:, 1:])


def test_the_window_keeps_the_newest_rows_per_model():
    window = DriftWindow(1.0, rows=3, seed=1)
    assert window.sampled()
    window.add("m1", [{"f": float(i)} for i in range(5)])
    window.add("m2", [{"f": 9.0}])
    assert [h["f"] for h in window.snapshot()["m1"]] == [2.0, 3.0, 4.0]
    assert not DriftWindow(0.0, rows=3).sampled()


def test_a_sample_keeps_traffic_weights_and_is_seeded():
    served = ["tv"] * 90 + ["cable"] * 10
    assert sample_queries(served[:5], 50) == served[:5]
    drawn = sample_queries(served, 50, seed=3)
    assert len(drawn) == 50 and drawn == sample_queries(served, 50, seed=3)
    assert drawn.count("tv") > 30


def test_the_sidecar_gauge_uses_the_same_psi(monkeypatch):
    from prometheus_client import CollectorRegistry, generate_latest

    from esrank.serve import drift as served_drift

    reference = Reference({"f": FeatureBins((1.0,), (0.5, 0.5), 0.0)}, 100, 10)
    window = DriftWindow(1.0, rows=1000)
    collector = served_drift.DriftCollector(window, app=None)
    monkeypatch.setattr(collector, "reference", lambda model: reference)
    window.add("m1", [{"f": 0.0}] * 150 + [{"f": 2.0}] * 50)  # 0.75 / 0.25 against 0.5 / 0.5
    window.add("m2", [{"f": 0.0}] * 10)  # too few rows: no PSI yet
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert f'esrank_feature_psi{{feature="f",model="m1"}} {psi([0.5, 0.5, 0], [0.75, 0.25, 0])}' \
        in text
    assert 'esrank_feature_drift_rows{model="m2"} 10.0' in text
    assert 'model="m2",feature' not in text and 'feature="f",model="m2"' not in text


def _report(top_psi: float) -> DriftReport:
    drifts = (FeatureDrift("title_bm25", top_psi, level(top_psi), (0.5, 0.5), (0.5, 0.5)),
              FeatureDrift("price", 0.01, "ok", (0.5, 0.5), (0.5, 0.5)))
    return DriftReport("chorus-v1", 3, 30, 0, 0.2, drifts, 970)


@pytest.mark.parametrize(("top_psi", "code"), [(0.05, 0), (0.35, 3)])
def test_monitor_drift_exits_3_when_a_feature_alerts(tmp_path, monkeypatch, top_psi, code):
    import json

    from click.testing import CliRunner

    from esrank.cli import cli
    from esrank.monitoring import drift

    seen = {}

    def fake(app, queries, which, *, alert, table):
        seen.update(queries=queries, which=which, alert=alert)
        return _report(top_psi)

    monkeypatch.setattr(drift, "check_drift", fake)
    queries = tmp_path / "q.txt"
    queries.write_text("tv\n\ncable\nusb\n")
    out = CliRunner().invoke(cli, ["monitor", "drift", "--queries", str(queries), "--json"])
    assert out.exit_code == code, out.output
    assert json.loads(out.output)["max_psi"] == top_psi
    assert seen == {"queries": ["tv", "cable", "usb"], "which": "active", "alert": 0.2}
    text = CliRunner().invoke(cli, ["monitor", "drift", "--queries", str(queries)]).output
    assert text.splitlines()[2].startswith("title_bm25")  # sorted by PSI


def test_monitor_drift_refuses_a_bad_since_and_an_empty_queries_file(tmp_path):
    from click.testing import CliRunner

    from esrank.cli import cli

    out = CliRunner().invoke(cli, ["monitor", "drift", "--since", "yesterday"])
    assert "30m, 24h, 7d" in str(out.exception)  # main() exits 1 on it
    empty = tmp_path / "q.txt"
    empty.write_text("\n")
    out = CliRunner().invoke(cli, ["monitor", "drift", "--queries", str(empty)])
    assert f"{empty}: no queries in the file" in str(out.exception)  # main() exits 1 on it
