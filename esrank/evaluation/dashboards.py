"""Saved objects for Kibana and OpenSearch Dashboards over esrank's results store.

`saved_objects(flavor)` builds the data views (index patterns), the visualizations and two
dashboards, "esrank relevance comparison" and "esrank online metrics per served model";
scripts/gen_dashboards.py writes them as the ndjson files shipped in
esrank/evaluation/saved_objects/ (a test keeps them current), and `import_saved_objects`
loads one through the saved-objects import API.

Visualizations (aggregation-based, which both products import):
- mean metrics per run and configuration (table);
- per-query NDCG@10 deltas of a comparison, worst losses first (table over esrank-eval-deltas);
- wins / ties / losses of a comparison (pie);
- grade distribution in the top 10 per configuration (stacked bars; unjudged as its own bar);
- machine grades of the unjudged docs in the top 10 (`esrank evaluate --push
  --machine-grades`; stacked bars; no machine grade as its own bar);
- feature value distributions of the ranked docs (histograms);
- online, per served model over time (esrank-online, `esrank monitor online --push`):
  searches, click-through at 10, add-to-cart, purchase and zero-result rates, p95 latency
  (lines), and the rates over the chosen time range (table).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from esrank.core.auth import Auth
from esrank.engine.saved_objects import import_ndjson
from esrank.evaluation.runs import (
    EVAL_DELTAS,
    EVAL_HITS,
    EVAL_ONLINE,
    EVAL_QUERIES,
    ONLINE_RATES,
)

FOLDER = Path(__file__).with_name("saved_objects")
FILES = {"kibana": FOLDER / "kibana.ndjson",
         "opensearch-dashboards": FOLDER / "opensearch-dashboards.ndjson"}
FEATURES_SHOWN = ("title_bm25", "all_fields_cross", "title_cosine", "text_cosine")


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"esrank/{name}"))


def _pattern(index: str) -> dict:
    return {"id": _id(index), "type": "index-pattern",
            "attributes": {"title": index, "timeFieldName": "timestamp"}, "references": []}


def _vis(name: str, title: str, vis_type: str, index: str, aggs: list[dict],
         params: dict | None = None, query: str = "") -> dict:
    aggs = [{"id": str(i), "enabled": True, **a} for i, a in enumerate(aggs, 1)]
    search = {"query": {"query": query, "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return {"id": _id(name), "type": "visualization",
            "attributes": {"title": title, "description": "", "version": 1,
                           "uiStateJSON": "{}",
                           "visState": json.dumps({"title": title, "type": vis_type,
                                                   "params": params or {}, "aggs": aggs}),
                           "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)}},
            "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                            "type": "index-pattern", "id": _id(index)}]}


def _terms(field: str, schema: str = "bucket", size: int = 20, order_by: str = "_key",
           order: str = "desc", **extra) -> dict:
    return {"type": "terms", "schema": schema,
            "params": {"field": field, "size": size, "order": order, "orderBy": order_by,
                       **extra}}


def _avg(field: str) -> dict:
    return {"type": "avg", "schema": "metric", "params": {"field": field}}


def saved_objects(flavor: str = "kibana") -> list[dict]:
    """Every object, data views first, the dashboard last (import order)."""
    if flavor not in FILES:
        raise ValueError(f"flavor {flavor!r}: expected one of {sorted(FILES)}")
    relevance, online = _visualizations(), _online_visualizations()
    patterns = [_pattern(i) for i in (EVAL_QUERIES, EVAL_HITS, EVAL_DELTAS, EVAL_ONLINE)]
    return [*patterns, *relevance, *online,
            _dashboard(relevance, flavor, "dashboard", "esrank relevance comparison",
                       "Runs written by esrank evaluate --push and esrank compare --push"),
            _dashboard(online, flavor, "online-dashboard",
                       "esrank online metrics per served model",
                       "What shoppers did with each model's pages: esrank monitor online "
                       "--push, from the UBI the sidecar records", wide=1)]


def _visualizations() -> list[dict]:
    """The dashboard's panels, in order: the two wide tables first."""
    return [
        _vis("mean-metrics", "esrank: mean metrics per run and configuration", "table",
             EVAL_QUERIES, [_avg(m) for m in ("ndcg@10", "ndcg@10_condensed", "mrr",
                                              "err@10", "judged@10")]
             + [_terms("run_id"), _terms("config")], {"perPage": 20}),
        _vis("query-deltas", "esrank: per-query NDCG@10 delta (worst losses first)", "table",
             EVAL_DELTAS, [{"type": "min", "schema": "metric",
                            "params": {"field": "ndcg@10_delta"}},
                           _avg("ndcg@10_condensed_delta"),
                           _terms("comparison_id", size=5),
                           _terms("query", size=200, order_by="1", order="asc")],
             {"perPage": 25}),
        _vis("wins-ties-losses", "esrank: wins / ties / losses (NDCG@10)", "pie", EVAL_DELTAS,
             [{"type": "count", "schema": "metric", "params": {}}, _terms("outcome",
                                                                          schema="segment")],
             {"isDonut": True}),
        _vis("grades-top10", "esrank: grades in the top 10", "histogram", EVAL_HITS,
             [{"type": "count", "schema": "metric", "params": {}},
              _terms("config", schema="segment", size=10),
              _terms("grade", schema="group", size=10, missingBucket=True,
                     missingBucketLabel="unjudged")],
             {"type": "histogram", "mode": "stacked"}),
        _vis("machine-grades-top10", "esrank: machine grades of the unjudged in the top 10",
             "histogram", EVAL_HITS,
             [{"type": "count", "schema": "metric", "params": {}},
              _terms("config", schema="segment", size=10),
              _terms("machine_grade", schema="group", size=10, missingBucket=True,
                     missingBucketLabel="no machine grade")],
             {"type": "histogram", "mode": "stacked"}, query="judged:false"),
    ] + [
        _vis(f"feature-{name}", f"esrank: distribution of {name}", "histogram", EVAL_HITS,
             [{"type": "count", "schema": "metric", "params": {}},
              {"type": "histogram", "schema": "segment",
               "params": {"field": f"features.{name}", "interval": "auto",
                          "min_doc_count": False}},
              _terms("config", schema="group", size=10)],
             {"type": "histogram", "mode": "grouped"})
        for name in FEATURES_SHOWN
    ]


RATE_TITLES = {"ctr@10": "click-through at 10", "add_to_cart_rate": "add-to-cart rate",
               "purchase_rate": "purchase rate", "zero_result_rate": "zero-result rate"}


def _online_visualizations() -> list[dict]:
    """The online dashboard's panels: the rates per model over the time range (a table),
    then each figure per model over time (lines)."""
    def over_time(name: str, title: str, metric: dict) -> dict:
        return _vis(f"online-{name}", f"esrank online: {title} per served model", "line",
                    EVAL_ONLINE, [metric, {"type": "date_histogram", "schema": "segment",
                                           "params": {"field": "timestamp",
                                                      "interval": "auto"}},
                                  _terms("model", schema="group", size=10)], {"type": "line"})

    table = _vis("online-rates", "esrank online: rates per served model (mean of the windows)",
                 "table", EVAL_ONLINE, [{"type": "sum", "schema": "metric",
                                         "params": {"field": "searches"}},
                                        *(_avg(r) for r in ONLINE_RATES),
                                        _avg("latency_p95_ms"), _terms("model")],
                 {"perPage": 20})
    return [table, over_time("searches", "searches", {
        "type": "sum", "schema": "metric", "params": {"field": "searches"}})] + [
        over_time(rate, RATE_TITLES[rate], _avg(rate)) for rate in ONLINE_RATES] + [
        over_time("latency", "p95 latency (ms)", _avg("latency_p95_ms"))]


def _dashboard(visualizations: list[dict], flavor: str, name: str, title: str,
               description: str, wide: int = 2) -> dict:
    """A dashboard of `visualizations`, the first `wide` full width, the rest two a row."""
    panels, refs = [], []
    for i, vis in enumerate(visualizations):
        full = i < wide
        panels.append({"panelIndex": str(i + 1), "panelRefName": f"panel_{i}",
                       "embeddableConfig": {}, "version": "8.0.0" if flavor == "kibana"
                       else "3.0.0",
                       "gridData": {"x": 0 if full or (i - wide) % 2 == 0 else 24,
                                    "y": 15 * i, "w": 48 if full else 24, "h": 15,
                                    "i": str(i + 1)}})
        refs.append({"name": f"panel_{i}", "type": "visualization", "id": vis["id"]})
    return {"id": _id(name), "type": "dashboard",
            "attributes": {"title": title, "description": description,
                           "panelsJSON": json.dumps(panels), "timeRestore": False,
                           "optionsJSON": json.dumps({"useMargins": True}),
                           "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                               {"query": {"query": "", "language": "kuery"},
                                "filter": []})}},
            "references": refs}


def to_ndjson(objects: list[dict]) -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects)


def import_saved_objects(url: str, flavor: str, auth: Auth | None = None,
                         timeout: float = 30.0) -> dict:
    """Load the shipped ndjson into Kibana or OpenSearch Dashboards at `url` (overwriting
    earlier versions); the import API's answer."""
    return import_ndjson(url, flavor, FILES[flavor].read_bytes(), auth, timeout)
