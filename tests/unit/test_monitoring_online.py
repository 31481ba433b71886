"""Online metrics per served model from a hand-made UBI log, and the window comparison."""

from __future__ import annotations

import pytest

from esrank.monitoring.online import (
    OnlineMetrics,
    compare_windows,
    online_metrics,
    two_proportion_p,
)
from esrank.ubi.log import UNKNOWN_MODEL, UbiEvent, UbiQuery

PAGE = tuple(f"d{i}" for i in range(1, 13))  # 12 results: d11 and d12 are past the top 10


def _q(qid: str, model: str | None, t: float, hits=PAGE, took: float | None = None):
    attrs = {"ranker": model} if model else {}
    if took is not None:
        attrs["took_ms"] = took
    return UbiQuery(qid, f"query {qid}", timestamp=t, attributes=attrs, hit_ids=hits)


QUERIES = [
    _q("a1", "m1", 10, took=10.0), _q("a2", "m1", 11, took=20.0), _q("a3", "m1", 12, took=30.0),
    _q("a4", "m1", 13, hits=(), took=40.0),
    _q("b1", "m2", 10), _q("b2", "m2", 11),
    _q("c1", None, 12),  # not served by a sidecar
    _q("late", "m1", 100, took=99.0),  # outside the window
]
EVENTS = [
    UbiEvent("click", "a1", "d3", 3, timestamp=20),
    UbiEvent("click", "a1", "d4", 4, timestamp=21),        # a second click: one search
    UbiEvent("add_to_cart", "a1", "d3", 3, timestamp=22),
    UbiEvent("purchase", "a1", "d3", 3, timestamp=23),
    UbiEvent("click", "a2", "d11", 11, timestamp=20),      # past the top 10: no click-through
    UbiEvent("add_to_cart", "a2", "d11", 11, timestamp=21),  # a cart counts on any result
    UbiEvent("click", "a3", "zz", 1, timestamp=20),         # a doc a3 never showed: skipped
    UbiEvent("click", "b1", "d1", 1, timestamp=20),
    UbiEvent("purchase", "b2", "d2", 2, timestamp=99),      # after the window
    UbiEvent("click", "c1", "d2", 2, timestamp=20),
]


def test_rates_per_served_model():
    got = online_metrics(QUERIES, EVENTS, since=10, until=50)
    assert list(got) == ["m1", "m2", UNKNOWN_MODEL]
    m1 = got["m1"]
    assert (m1.searches, m1.clicked, m1.carted, m1.purchased, m1.zero_results) == (4, 1, 2, 1, 1)
    assert m1.to_dict()["ctr@10"] == 0.25 and m1.rate("zero_result_rate") == 0.25
    assert m1.latency_ms == {"mean": 25.0, "p50": 25.0, "p95": pytest.approx(38.5)}
    m2 = got["m2"]
    assert (m2.searches, m2.clicked, m2.purchased, m2.latency_ms) == (2, 1, 0, None)
    assert got[UNKNOWN_MODEL].clicked == 1


def test_unbounded_window_counts_everything():
    got = online_metrics(QUERIES, EVENTS)
    assert got["m1"].searches == 5 and got["m2"].purchased == 1


def test_an_empty_window_has_no_models():
    assert online_metrics(QUERIES, EVENTS, since=1000) == {}
    assert OnlineMetrics("m", 0, 0, 0, 0, 0).rate("ctr@10") is None


def test_a_significant_drop_is_flagged_a_small_one_is_not():
    before = {"m": OnlineMetrics("m", 2000, 600, 100, 40, 20), "old": OnlineMetrics(
        "old", 10, 1, 0, 0, 0)}
    worse = {"m": OnlineMetrics("m", 2000, 480, 100, 40, 60), "new": OnlineMetrics(
        "new", 10, 1, 0, 0, 0)}
    report = compare_windows(worse, before)
    assert [(c.model, c.rate) for c in report.flagged] == [("m", "ctr@10"),
                                                           ("m", "zero_result_rate")]
    assert (report.only_current, report.only_baseline) == (("new",), ("old",))
    stable = {"m": OnlineMetrics("m", 2000, 590, 95, 41, 22)}
    assert compare_windows(stable, before).flagged == []
    better = {"m": OnlineMetrics("m", 2000, 800, 100, 40, 20)}  # a rise is never flagged
    assert compare_windows(better, before).flagged == []


def test_two_proportion_p():
    assert two_proportion_p(0, 10, 0, 10) == 1.0
    assert two_proportion_p(5, 10, 5, 10) == 1.0
    assert two_proportion_p(200, 1000, 300, 1000) < 1e-6


def test_the_stored_documents_fit_the_results_store_mapping():
    from esrank.evaluation.runs import EVAL_MAPPINGS, EVAL_ONLINE, ONLINE_RATES
    from esrank.monitoring.online import RATES, OnlineReport

    assert tuple(RATES) == ONLINE_RATES
    report = OnlineReport((10.0, 50.0), online_metrics(QUERIES, EVENTS, since=10, until=50))
    docs = dict(report.documents())
    assert set(docs) == {f"{m}|1970-01-01T00:00:10Z|1970-01-01T00:00:50Z"
                         for m in ("m1", "m2", UNKNOWN_MODEL)}
    fields = set(EVAL_MAPPINGS[EVAL_ONLINE]["properties"])
    for doc in docs.values():
        assert set(doc) <= fields
    m1 = docs["m1|1970-01-01T00:00:10Z|1970-01-01T00:00:50Z"]
    assert (m1["timestamp"], m1["ctr@10"], m1["latency_p95_ms"]) == (
        "1970-01-01T00:00:50Z", 0.25, pytest.approx(38.5))
