"""Monitoring on the real engine: `esrank monitor run` stores a run and compares it with the
last one (a stable index exits 0, a damaged one exits 3); a real sidecar's per-model counters
in /metrics agree with the online metrics computed from the UBI indices it wrote."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.chorus_slice import SLICE, write_slice_judgments
from support.cleanup import delete_where

from esrank import ubi
from esrank.catalogue.index import index_catalogue
from esrank.evaluation.runs import EVAL_HITS, EVAL_QUERIES
from esrank.monitoring.online import online_metrics
from esrank.serve import create_app

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ("laptop case", "laptop", "laptop stand", "external battery", "microsoft office",
           "wireless headphones")


@pytest.fixture()
def shop(engine, alias, encoder, tmp_path):
    """A small index of the products judged for QUERIES, their judgments, and the runs
    `esrank monitor run` stores on them removed afterwards."""
    with write_slice_judgments(tmp_path / "all.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["query"] in QUERIES]
    judged = tmp_path / "judgments.csv"
    with judged.open("w") as f:
        writer = csv.DictWriter(f, ["query", "docid", "rating"])
        writer.writeheader()
        writer.writerows(rows)
    ids = {r["docid"] for r in rows}
    products = tmp_path / "products.jsonl"
    products.write_text("".join(line + "\n" for line in SLICE.read_text().splitlines()
                                if json.loads(line)["id"] in ids))
    index_catalogue(engine, alias, [products], encoder, progress=False)
    yield judged, rows
    for index in (EVAL_QUERIES, EVAL_HITS):
        delete_where(engine, index, {"term": {"judgments": str(judged)}})


def test_monitor_run_compares_with_the_last_run_and_exits_3_past_the_drop(engine, alias, shop,
                                                                          cli_env):
    judged, rows = shop

    def monitor_run() -> tuple[int, dict]:
        out = subprocess.run([sys.executable, "-m", "esrank.cli", "monitor", "run", "--config",
                              "bm25", "--judgments", str(judged), "--json"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={**cli_env, "ESRANK_INDEX": alias})
        assert out.returncode in (0, 3), out.stderr
        return out.returncode, json.loads(out.stdout)

    code, first = monitor_run()
    assert code == 0 and first["previous"] is None and first["changes"] == []
    stored = engine.search(EVAL_QUERIES, {"size": 100, "query": {"term": {
        "run_id": first["run_id"]}}})["hits"]["hits"]
    assert {h["_source"]["query"] for h in stored} == set(QUERIES)
    code, stable = monitor_run()
    assert code == 0 and stable["previous"]["run_id"] == first["run_id"]
    assert [c["delta"] for c in stable["changes"]] == [0.0, 0.0]
    # the best products of every query lose their text: the same ranking now finds others
    best = {r["docid"] for r in rows if int(r["rating"]) == 3}
    [index] = engine.alias_targets(alias)
    assert not engine.bulk(index, [(d, {"title": "withdrawn", "short_description": ""})
                                   for d in best], update=True)
    engine.refresh(index)
    code, damaged = monitor_run()
    assert code == 3 and damaged["regressed"]
    assert damaged["previous"]["run_id"] == stable["run_id"]  # stamped to the millisecond
    assert damaged["changes"][0]["delta"] < -0.02
    assert damaged["changes"][0]["p_value"] is not None  # paired over the stored queries


def _counters(client) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, of the sidecar's /metrics."""
    text = client.get("/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_sidecar_counts_what_monitor_online_computes_from_ubi(engine, slice_alias, encoder,
                                                                  engine_settings):
    settings = engine_settings(index=slice_alias)
    first, second = create_app(settings, encoder=encoder), create_app(settings, encoder=encoder)
    client = first.test_client()
    started = time.time()
    pages = {}
    for query, model in (("bluetooth speaker", "bm25"), ("portable speaker", "bm25"),
                         ("wireless headphones", "bm25-title"), ("zqxjv", "bm25"),
                         ("laptop", "bm25-title")):
        r = client.post("/search", json={"query": query, "model": model, "size": 15})
        assert r.status_code == 200, r.json
        pages[query] = (r.json["query_id"], [h["doc_id"] for h in r.json["hits"]])
    assert pages["zqxjv"][1] == [] and len(pages["bluetooth speaker"][1]) == 15

    def event(action, query, rank):
        qid, docs = pages[query]
        return {"action": action, "query_id": qid, "doc_id": docs[rank - 1], "position": rank}

    posted = client.post("/events", json={"events": [
        event("click", "bluetooth speaker", 2), event("click", "bluetooth speaker", 3),
        event("add_to_cart", "bluetooth speaker", 2),
        event("click", "portable speaker", 12),  # past the top 10: no click-through
        event("click", "wireless headphones", 1), event("add_to_cart", "laptop", 1)]})
    assert posted.status_code == 202 and posted.json["accepted"] == 6
    # another sidecar takes a purchase on a page the first served: counted under its model
    assert first.extensions["esrank"].ubi.flush(10)
    later = second.test_client().post("/events", json={"events": [
        event("purchase", "wireless headphones", 1)]})
    assert later.status_code == 202 and later.json["accepted"] == 1
    for app in (first, second):
        sc = app.extensions["esrank"]
        assert sc.ubi.flush(10)
        sc.ubi.close()

    ours = {qid for qid, _ in pages.values()}
    queries, events = ubi.fetch(engine, since=started - 1, until=time.time() + 1)
    online = online_metrics([q for q in queries if q.query_id in ours],
                            [e for e in events if e.query_id in ours])
    counted = [_counters(first.test_client()), _counters(second.test_client())]

    def total(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return sum(c.get(key, 0.0) for c in counted)

    assert sorted(online) == ["bm25", "bm25-title"]
    for model, m in online.items():
        assert total("esrank_searches_total", model=model) == m.searches
        assert total("esrank_zero_result_searches_total", model=model) == m.zero_results
        for action, count in (("click", m.clicked), ("add_to_cart", m.carted),
                              ("purchase", m.purchased)):
            assert total("esrank_searches_acted_total", model=model, action=action) == count
        assert total("esrank_search_seconds_count", model=model) == m.searches
        assert total("esrank_search_seconds_sum", model=model) == pytest.approx(
            m.latency_ms["mean"] * m.searches / 1000, abs=1e-4)
    assert (online["bm25"].searches, online["bm25"].clicked, online["bm25"].carted,
            online["bm25"].zero_results) == (3, 1, 1, 1)
    assert (online["bm25-title"].clicked, online["bm25-title"].carted,
            online["bm25-title"].purchased) == (1, 1, 1)
