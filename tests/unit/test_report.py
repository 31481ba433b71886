"""The gain side of the report (offline) and the HTML it writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from support.tables import synthetic

from esrank.evaluation.report import feature_gain, to_html
from esrank.learn.train import TrainParams


def test_dropping_the_signal_costs_the_most():
    gain = feature_gain(synthetic(), TrainParams(num_rounds=30, parallel_trees=1), folds=3)
    deltas = gain["drop_one_delta"]
    assert set(deltas) == {"signal", "noise", "sparse"}
    assert deltas["signal"] < -0.05  # without it the model is much worse
    assert deltas["signal"] == min(deltas.values())
    assert abs(deltas["noise"]) < abs(deltas["signal"])
    assert 0 < gain["cv_ndcg@10_all_features"] <= 1


def _report() -> dict:
    return {"model": "m-v1", "feature_set": "m@abc", "cv_ndcg@10_all_features": 0.8,
            "bm25_p50_ms": 2.0, "latency_window": 100,
            "features": [{"feature": "a</script>", "gain_drop_one": -0.02,
                          "importance_gain": 3.0, "added_p50_ms": 0.4},
                         {"feature": "b", "gain_drop_one": 0.01, "importance_gain": 1.0,
                          "added_p50_ms": -0.1}],
            "windows": [{"window": w, "ndcg@10": 0.6, "ndcg@10_condensed": 0.7,
                         "ceiling@10": c, "p50_ms": 2.5} for w, c in ((10, 0.75), (100, 0.8))],
            "baselines": {
                "bm25": {"ndcg@10": 0.6, "ndcg@10_condensed": 0.7, "candidates": "bm25@100",
                         "ceiling@10": {"ndcg@10": 0.8, "ndcg@10_condensed": 0.8},
                         "gap_closed": {"ndcg@10": 0.0, "ndcg@10_condensed": 0.0},
                         "exposure": _exposure(0.1414, "Acme", "<Dyna>")},
                "linear": {"ndcg@10": 0.65, "ndcg@10_condensed": 0.7,
                           "candidates": "bm25@100+knn@50",
                           "ceiling@10": {"ndcg@10": 0.85, "ndcg@10_condensed": 0.7},
                           "gap_closed": {"ndcg@10": 0.2, "ndcg@10_condensed": None},
                           "linear_weights": [0.3, 0.4]}}}


def _exposure(disparity: float, over: str, under: str) -> dict:
    return {"disparity": disparity, "per_query_disparity": 0.1875, "queries": 2,
            "suppliers": 3, "judged_share": 1.0, "depth": 10,
            "over_exposed": [{"supplier": over, "exposure": 0.7039, "relevance": 0.5625}],
            "under_exposed": [{"supplier": under, "exposure": 0.0, "relevance": 0.125}]}


def test_html_has_every_feature_and_window_and_embeds_the_data():
    report = _report()
    page = to_html(report)
    assert "<h2>Against the baselines</h2>" in page
    assert ("<tr><td>linear <small>(BM25 weight per fold 0.3 0.4)</small></td>"
            "<td>bm25@100+knn@50</td><td>0.6500</td><td>0.7000</td><td>0.8500</td>"
            "<td>0.7000</td><td>20.0%</td><td>n/a</td></tr>") in page
    assert "a&lt;/script&gt;" in page and "<td>b</td>" in page
    assert page.count("<tr><td>10</td>") == 1 and page.count("<tr><td>100</td>") == 1
    assert "<td>0.7500</td>" in page and "<td>0.8000</td>" in page  # each window's ceiling
    # exposure side by side; a row without it (an older report) is left out
    assert "<h2>Exposure by supplier</h2>" in page
    assert ("<tr><td>bm25</td><td>0.1414</td><td>0.1875</td><td>100.0%</td>"
            "<td>Acme 70.4% / 56.2%</td><td>&lt;Dyna&gt; 0.0% / 12.5%</td></tr>") in page
    assert "<tr><td>linear</td><td>0." not in page
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert json.loads(data.group(1)) == report


def test_the_text_lists_the_model_against_the_baselines():
    from esrank.cli.evaluation import report_text

    text = report_text(_report(), Path("r.html")).splitlines()
    at = text.index("against the baselines:")
    assert text[at + 1].startswith("config") and text[at + 2].split()[:2] == ["bm25", "bm25@100"]
    assert "20.0% / n/a" in text[at + 3] and text[-1] == "wrote r.html and r.json"
    at = next(i for i, line in enumerate(text) if line.startswith("exposure by supplier"))
    assert text[at + 2].split() == ["bm25", "0.1414", "0.1875", "100.0%", "Acme", "70.4%", "/",
                                    "56.2%", "<Dyna>", "0.0%", "/", "12.5%"]
    assert text[at + 3] == "wrote r.html and r.json"
