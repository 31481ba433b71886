"""The results store: evaluation runs, per-query deltas and their history, kept in the engine
(esrank-eval-queries, -hits, -deltas) for Kibana / OpenSearch Dashboards and the comparison
page, and the online metrics per served model and window (esrank-online, written by
`esrank monitor online --push`). Metrics themselves are computed in evaluate.py and
esrank.monitoring.online."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from esrank.core.errors import EngineError, InputError
from esrank.core.stamps import COMPACT, utc
from esrank.engine.cluster import SMALL_INDEX
from esrank.judgments.llm_judge import MachineGrade
from esrank.judgments.metrics import METRICS, Evaluation

EVAL_QUERIES, EVAL_HITS = "esrank-eval-queries", "esrank-eval-hits"
EVAL_DELTAS = "esrank-eval-deltas"
EVAL_ONLINE = "esrank-online"
ONLINE_COUNTS = ("searches", "clicked", "carted", "purchased", "zero_results")
ONLINE_RATES = ("ctr@10", "add_to_cart_rate", "purchase_rate", "zero_result_rate")
ONLINE_LATENCY = ("latency_mean_ms", "latency_p50_ms", "latency_p95_ms")
DELTA_METRICS = ("ndcg@10", "ndcg@10_condensed", "judged@10")
_RUN_FIELDS = {"run_id": {"type": "keyword"}, "config": {"type": "keyword"},
               "model": {"type": "keyword"}, "feature_set": {"type": "keyword"},
               "judgments": {"type": "keyword"}, "timestamp": {"type": "date"},
               "query": {"type": "keyword"}}
EVAL_MAPPINGS = {
    EVAL_QUERIES: {"dynamic": "strict", "properties": {
        **_RUN_FIELDS, **{m: {"type": "float"} for m in METRICS}}},
    EVAL_HITS: {"dynamic": "strict",
                "dynamic_templates": [{"feature_values": {"path_match": "features.*",
                                                          "mapping": {"type": "float"}}}],
                "properties": {**_RUN_FIELDS, "rank": {"type": "integer"},
                               "doc_id": {"type": "keyword"}, "title": {"type": "text"},
                               "grade": {"type": "integer"}, "judged": {"type": "boolean"},
                               # an LLM's grade of a doc no person judged, and its model
                               "machine_grade": {"type": "integer"},
                               "machine_model": {"type": "keyword"},
                               "score": {"type": "float"},
                               "features": {"type": "object", "dynamic": True}}},
    EVAL_DELTAS: {"dynamic": "strict", "properties": {
        "comparison_id": {"type": "keyword"}, "a": {"type": "keyword"},
        "b": {"type": "keyword"}, "query": {"type": "keyword"},
        "judgments": {"type": "keyword"}, "timestamp": {"type": "date"},
        "outcome": {"type": "keyword"},
        **{f"{m}_{side}": {"type": "float"} for m in DELTA_METRICS
           for side in ("a", "b", "delta")}}},
    EVAL_ONLINE: {"dynamic": "strict", "properties": {
        "model": {"type": "keyword"}, "since": {"type": "date"}, "timestamp": {"type": "date"},
        **{c: {"type": "long"} for c in ONLINE_COUNTS},
        **{m: {"type": "float"} for m in (*ONLINE_RATES, *ONLINE_LATENCY)}}},
}


def _ensure_indices(engine) -> None:
    """Create the indices, or add the fields a newer esrank maps to ones made before."""
    for index, mapping in EVAL_MAPPINGS.items():
        if not engine.ensure_index(index, {"settings": SMALL_INDEX, "mappings": mapping}):
            engine.put_mapping(index, {"properties": mapping["properties"]})


def _write(engine, index: str, docs: list[tuple[str, dict]]) -> None:
    refused = engine.bulk(index, docs)
    if refused:
        raise EngineError("push evaluation", f"{len(refused)} documents refused, first: "
                          f"{refused[0][1]}", target=index)
    engine.refresh(index)


def new_run_id() -> str:
    """A run id: the compact UTC time and a random suffix (two runs in one second differ)."""
    return f"{utc(COMPACT)}-{uuid.uuid4().hex[:6]}"


def push_evaluation(engine, run_id: str, meta: dict, config: str, evaluation: Evaluation,
                    hits: Mapping[str, Sequence], grades: Mapping[tuple[str, str], int],
                    features: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
                    machine: Mapping[tuple[str, str], MachineGrade] | None = None) -> int:
    """Store one configuration's evaluation: a document per query (all metrics) in
    esrank-eval-queries and per (query, rank) in esrank-eval-hits (doc, grade or none, the
    `machine` grade and its model where no person judged it, score, feature values). `meta`
    (model, feature_set, judgments, timestamp) goes on every document.
    Returns the number of documents written."""
    _ensure_indices(engine)
    base = {"run_id": run_id, "config": config, **meta}
    per_query = [(f"{run_id}|{config}|{q}", {**base, "query": q, **m})
                 for q, m in evaluation.per_query.items()]
    per_hit = []
    for q, ranked in hits.items():
        for h in ranked:
            grade = grades.get((q, h.doc_id))
            doc = {**base, "query": q, "rank": h.rank, "doc_id": h.doc_id, "title": h.title,
                   "grade": grade, "judged": grade is not None, "score": h.score}
            by_llm = (machine or {}).get((q, h.doc_id)) if grade is None else None
            if by_llm is not None:
                doc.update(machine_grade=by_llm.grade, machine_model=by_llm.model)
            values = (features or {}).get(q, {}).get(h.doc_id)
            if values:
                doc["features"] = {k: v for k, v in values.items() if v == v}  # NaN: absent
            per_hit.append((f"{run_id}|{config}|{q}|{h.rank}", doc))
    _write(engine, EVAL_QUERIES, per_query)
    _write(engine, EVAL_HITS, per_hit)
    return len(per_query) + len(per_hit)


def push_online(engine, docs: Sequence[tuple[str, dict]]) -> int:
    """Store online metrics, one (id, document) per served model and window in esrank-online
    (`timestamp`: the window's end); the same id again replaces it. Returns how many."""
    _ensure_indices(engine)
    if docs:
        _write(engine, EVAL_ONLINE, list(docs))
    return len(docs)


def push_comparison(engine, comparison_id: str, meta: dict, a: tuple[str, Evaluation],
                    b: tuple[str, Evaluation]) -> int:
    """Store B - A per query (esrank-eval-deltas): both values and the delta of NDCG@10
    (standard and condensed) and judged@10, and the NDCG@10 outcome (win / tie / loss)."""
    _ensure_indices(engine)
    (name_a, ev_a), (name_b, ev_b) = a, b
    docs = []
    for q in sorted(set(ev_a.per_query) & set(ev_b.per_query)):
        doc = {"comparison_id": comparison_id, "a": name_a, "b": name_b, "query": q, **meta}
        for m in DELTA_METRICS:
            va, vb = ev_a.per_query[q][m], ev_b.per_query[q][m]
            doc.update({f"{m}_a": va, f"{m}_b": vb, f"{m}_delta": vb - va})
        d = doc["ndcg@10_delta"]
        doc["outcome"] = "win" if d > 1e-9 else "loss" if d < -1e-9 else "tie"
        docs.append((f"{comparison_id}|{q}", doc))
    _write(engine, EVAL_DELTAS, docs)
    return len(docs)


@dataclass(frozen=True)
class StoredRun:
    """One configuration's evaluation as the results store holds it: the run, when, the
    model, and the metrics per query (and their means)."""

    run_id: str
    timestamp: str
    model: str | None
    evaluation: Evaluation


MAX_STORED_QUERIES = 10_000  # the most per-query documents read back for one run


def last_run(engine, config: str, judgments: str, *, exclude: str | None = None
             ) -> StoredRun | None:
    """The newest stored run of the configuration labelled `config` measured on `judgments`
    (as stored: the path given), other than the run `exclude`; None when there is none.

    >>> last_run(engine, "chorus-v7", "judgments.csv").evaluation.mean["ndcg@10"]  # doctest: +SKIP
    0.6412
    """
    if not engine.index_exists(EVAL_QUERIES):
        return None
    same = [{"term": {"config": config}}, {"term": {"judgments": judgments}}]
    newest = engine.search(EVAL_QUERIES, {
        "size": 1, "_source": ["run_id", "timestamp", "model"],
        "query": {"bool": {"filter": same, "must_not": [{"term": {"run_id": exclude}}]
                           if exclude else []}},
        "sort": [{"timestamp": "desc"}, {"run_id": "desc"}]})["hits"]["hits"]
    if not newest:
        return None
    found = newest[0]["_source"]
    docs = engine.search(EVAL_QUERIES, {"size": MAX_STORED_QUERIES, "query": {"bool": {
        "filter": [*same, {"term": {"run_id": found["run_id"]}}]}}})["hits"]["hits"]
    per_query = {d["_source"]["query"]: {m: float(d["_source"][m]) for m in METRICS
                                         if d["_source"].get(m) is not None} for d in docs}
    mean = {m: sum(pq[m] for pq in per_query.values()) / len(per_query) for m in METRICS
            if per_query and all(m in pq for pq in per_query.values())}
    return StoredRun(found["run_id"], found["timestamp"], found.get("model"),
                     Evaluation(mean, per_query))


HISTORY_METRICS = ("ndcg@10", "ndcg@10_condensed")


def run_history(engine, metrics: Sequence[str] = HISTORY_METRICS, *, runs: int = 50
                ) -> list[dict]:
    """The mean of `metrics` per configuration in each of the newest `runs` pushed evaluation
    runs (esrank-eval-queries), oldest first: one row per (run, configuration) with run_id,
    timestamp, judgments (only runs on the same judgments compare), config, model, queries,
    the means, and `series` and `version`: the label split at its registry version, so one
    model's versions form one line ("chorus-v6+rerank20" -> "chorus+rerank20", "v6").
    Empty before the first push."""
    from esrank.deploy.registry import version_of
    from esrank.ranking.configuration import parse_configuration

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric {unknown[0]!r}; one of {', '.join(METRICS)}")
    if not engine.index_exists(EVAL_QUERIES):
        return []
    means = {f"m{i}": {"avg": {"field": m}} for i, m in enumerate(metrics)}
    answer = engine.search(EVAL_QUERIES, {"size": 0, "aggs": {"runs": {
        "terms": {"field": "run_id", "size": runs, "order": {"started": "desc"}},
        "aggs": {"started": {"min": {"field": "timestamp"}},
                 "judgments": {"terms": {"field": "judgments", "size": 1}},
                 "configs": {"terms": {"field": "config", "size": 100},
                             "aggs": {"model": {"terms": {"field": "model", "size": 1}},
                                      **means}}}}}})
    rows = []
    for run in answer["aggregations"]["runs"]["buckets"]:
        judgments = run["judgments"]["buckets"]
        for config in run["configs"]["buckets"]:
            model = config["model"]["buckets"]
            parsed = parse_configuration(config["key"])
            series, version = version_of(parsed.name)
            rows.append({"run_id": run["key"], "timestamp": run["started"]["value_as_string"],
                         "judgments": judgments[0]["key"] if judgments else None,
                         "config": config["key"],
                         "series": replace(parsed, name=series).label,
                         "version": f"v{version}" if version else None,
                         "model": model[0]["key"] if model else None,
                         "queries": config["doc_count"],
                         **{m: config[f"m{i}"]["value"] for i, m in enumerate(metrics)}})
    return sorted(rows, key=lambda r: (r["timestamp"], r["run_id"], r["config"]))
