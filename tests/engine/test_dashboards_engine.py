"""The shipped visualizations' aggregations, run on the real engine over a pushed run and
comparison: each must be accepted (every field aggregatable with that aggregation) and give
the buckets its panel draws. No Kibana runs here, so the request is built the way Kibana and
OpenSearch Dashboards build one from a visState: bucket aggregations nested in order, the
metrics inside the innermost."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from esrank.evaluation.dashboards import FEATURES_SHOWN, FILES
from esrank.evaluation.runs import (
    EVAL_DELTAS,
    EVAL_ONLINE,
    push_comparison,
    push_evaluation,
    push_online,
)
from esrank.judgments.llm_judge import MachineGrade
from esrank.judgments.metrics import METRICS, Evaluation
from esrank.monitoring.online import OnlineMetrics, OnlineReport
from esrank.ranking.search import Hit


def _request(vis_state: dict) -> tuple[dict, list[str]]:
    """The search body for a visState, and the ids of its metrics."""
    metrics, buckets = {}, []
    for agg in vis_state["aggs"]:
        p = agg["params"]
        if agg["type"] == "count":
            continue  # every bucket's doc_count
        if agg["type"] in ("avg", "min", "max", "sum"):
            metrics[agg["id"]] = {agg["type"]: {"field": p["field"]}}
        elif agg["type"] == "terms":
            order = {"_key" if p["orderBy"] == "_key" else p["orderBy"]: p["order"]}
            terms = {"field": p["field"], "size": p["size"], "order": order}
            if p.get("missingBucket"):
                terms["missing"] = -1  # Kibana's "__missing__" on a numeric field
            buckets.append((agg["id"], {"terms": terms}))
        elif agg["type"] == "histogram":
            buckets.append((agg["id"], {"histogram": {"field": p["field"], "interval": 0.1}}))
        elif agg["type"] == "date_histogram":
            buckets.append((agg["id"], {"date_histogram": {"field": p["field"],
                                                           "fixed_interval": "1h"}}))
        else:
            raise AssertionError(f"translate {agg['type']} here")
    inner = metrics
    for agg_id, bucket in reversed(buckets):
        inner = {agg_id: {**bucket, **({"aggs": inner} if inner else {})}}
    return {"size": 0, "aggs": inner}, list(metrics)


def _leaves(aggs: dict) -> list[dict]:
    """The innermost buckets of a nested aggregation answer."""
    nested = [v for k, v in aggs.items() if k.isdigit() and "buckets" in v]
    if not nested:
        return [aggs]
    return [leaf for bucket in nested[0]["buckets"] for leaf in _leaves(bucket)]


@pytest.fixture()
def pushed(engine, run_tag):
    """A run of two configurations (top 10 with grades and feature values) and their
    comparison, as `esrank evaluate --push` and `esrank compare --push` store them."""
    rng = np.random.default_rng(3)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    queries = [f"query {n}" for n in range(8)]
    evals = {}
    for config in ("bm25", f"{run_tag}-v1"):
        per_query = {q: {m: float(rng.random()) for m in METRICS} for q in queries}
        evals[config] = Evaluation({m: float(np.mean([v[m] for v in per_query.values()]))
                                    for m in METRICS}, per_query)
        hits = {q: [Hit(rank, f"d{rank}", float(10 - rank), f"product {rank}", None, None)
                    for rank in range(1, 11)] for q in queries}
        grades = {(q, f"d{rank}"): rank % 4 for q in queries for rank in range(1, 8)}
        features = {q: {f"d{rank}": {n: float(rng.random()) for n in FEATURES_SHOWN}
                        for rank in range(1, 11)} for q in queries}
        meta = {"model": None, "feature_set": None, "judgments": "j.csv", "timestamp": stamp}
        # an LLM graded the unjudged ranks 8 and 9 (rank 10 has no grade at all)
        machine = {(q, f"d{rank}"): MachineGrade(q, f"d{rank}", rank - 7, rank - 7.0, "llm-x",
                                                 "v", "grade@abc")
                   for q in queries for rank in (8, 9)}
        push_evaluation(engine, run_tag, meta, config, evals[config], hits, grades, features,
                        machine)
    push_comparison(engine, run_tag, {"judgments": "j.csv", "timestamp": stamp},
                    *evals.items())
    # two hourly windows of one served model, as esrank monitor online --push stores them
    report = OnlineReport((time.time() - 7200, time.time() - 3600), {run_tag: OnlineMetrics(
        run_tag, 100, 30, 10, 3, 2, {"mean": 20.0, "p50": 15.0, "p95": 60.0})})
    later = OnlineReport((time.time() - 3600, time.time()), {run_tag: OnlineMetrics(
        run_tag, 120, 30, 12, 4, 1)})  # no latency recorded: the field is absent
    assert push_online(engine, [*report.documents(), *later.documents()]) == 2
    return run_tag


@pytest.mark.parametrize("flavor", sorted(FILES))
def test_every_panel_aggregates_the_pushed_data(engine, pushed, flavor):
    objects = [json.loads(line) for line in FILES[flavor].read_text().splitlines()]
    index_of = {o["id"]: o["attributes"]["title"] for o in objects
                if o["type"] == "index-pattern"}
    field_of = {EVAL_DELTAS: "comparison_id", EVAL_ONLINE: "model"}
    for vis in (o for o in objects if o["type"] == "visualization"):
        state = json.loads(vis["attributes"]["visState"])
        index = index_of[vis["references"][0]["id"]]
        body, metric_ids = _request(state)
        search = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        body["query"] = {"bool": {"filter": [
            {"term": {field_of.get(index, "run_id"): pushed}},
            *([{"query_string": {"query": search["query"]["query"]}}]
              if search["query"]["query"] else [])]}}
        answer = engine.search(index, body)  # an unaggregatable field is refused here
        leaves = _leaves(answer["aggregations"])
        assert leaves and sum(b["doc_count"] for b in leaves) > 0, state["title"]
        for leaf in leaves:
            for m in metric_ids:
                assert leaf[m]["value"] is not None or (
                    "latency" in state["title"] and leaf["doc_count"] == 1), (state["title"], m)
        if "grades in" in state["title"]:  # unjudged ranks (8-10) are a bar of their own
            assert any(b["key"] == -1 and b["doc_count"] > 0 for b in leaves)
        if "machine grades" in state["title"]:  # the unjudged only: 1, 2, none, per config
            assert sorted((b["key"], b["doc_count"]) for b in leaves) == sorted(
                [(1, 8), (2, 8), (-1, 8)] * 2)
        if "wins" in state["title"]:
            assert {b["key"] for b in leaves} <= {"win", "tie", "loss"}
            assert sum(b["doc_count"] for b in leaves) == 8
