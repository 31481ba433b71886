"""/search on the real engine returns what `esrank search` returns (BM25; no LTR needed), and
/events verifies an event against the engine's ubi_queries when the sidecar never saw the
search."""

from __future__ import annotations

import time
import uuid

from esrank import ubi
from esrank.catalogue.recall import Candidates
from esrank.ranking.fusion import fuse
from esrank.ranking.search import Ranker, search
from esrank.serve import create_app


def test_search_endpoint_equals_the_library(engine, slice_alias, encoder, engine_settings):
    app = create_app(engine_settings(index=slice_alias), encoder=encoder)
    client = app.test_client()
    assert client.get("/readyz").json["engine"] == "reachable"
    for query in ("bluetooth speaker", "laptop bag", "wireless headphones"):
        r = client.post("/search", json={"query": query, "model": "bm25", "size": 20})
        assert r.status_code == 200, r.json
        expected = search(engine, slice_alias, query, Ranker("bm25"), size=20)
        assert [h["doc_id"] for h in r.json["hits"]] == [h.doc_id for h in expected.hits]
        assert r.json["ranker"] == "bm25" and r.json["degraded"] is None


def test_an_event_verifies_on_another_sidecar_through_ubi_queries(engine, slice_alias,
                                                                  encoder, engine_settings):
    """Any sidecar of a deployment takes the events of a search another one served: a fresh
    app (nothing in memory) finds the query in ubi_queries as soon as the writer sent it (no
    refresh), takes a doc it showed and refuses one it did not."""
    settings = engine_settings(index=slice_alias)
    started = time.time() - 1
    first = create_app(settings, encoder=encoder)
    found = first.test_client().post("/search", json={"query": "bluetooth speaker",
                                                      "model": "bm25", "size": 5}).json
    assert first.extensions["esrank"].ubi.flush(10)
    first.extensions["esrank"].ubi.close()
    page = [h["doc_id"] for h in found["hits"]]
    catalogue = engine.search(slice_alias, {"size": 50, "_source": False,
                                            "query": {"match_all": {}}})["hits"]["hits"]
    unshown = next(h["_id"] for h in catalogue if h["_id"] not in page)
    fresh = create_app(settings, encoder=encoder)
    sc = fresh.extensions["esrank"]
    r = fresh.test_client().post("/events", json={"events": [
        {"action": "purchase", "query_id": found["query_id"], "doc_id": page[1], "position": 2},
        {"action": "purchase", "query_id": found["query_id"], "doc_id": unshown},
        {"action": "purchase", "query_id": uuid.uuid4().hex, "doc_id": page[1]}]})
    assert r.status_code == 202, r.json
    assert r.json["accepted"] == 1 and [x["index"] for x in r.json["rejected"]] == [1, 2]
    assert sc.ubi.flush(10)
    _, events = ubi.fetch(engine, since=started)  # this test's window, not the whole log
    assert [(e.action, e.doc_id) for e in events if e.query_id == found["query_id"]
            and e.action != "impression"] == [("purchase", page[1])]
    sc.ubi.close()


def test_search_shows_the_requests_that_served_a_fused_baseline(engine, slice_alias, encoder,
                                                                 engine_settings):
    client = create_app(engine_settings(index=slice_alias, recall_knn=10),
                        encoder=encoder).test_client()
    r = client.post("/search", json={"query": "laptop bag", "model": "rrf", "size": 5,
                                     "show_requests": True})
    assert r.status_code == 200, r.json
    recall, fused = r.json["requests"]
    assert recall["path"] == f"/{slice_alias}/_msearch" and len(recall["searches"]) == 2
    assert fused == {"step": "fuse", "by": "esrank: RRF (k=60)"}
    # the shown searches return the lists the answer was fused from
    answers = engine.msearch(slice_alias, recall["searches"])
    listed = [[(h["fields"]["id"][0], h["_score"]) for h in a["hits"]["hits"]] for a in answers]
    fused_ids = [d for d, _ in fuse("rrf", Candidates(tuple(listed[0]), tuple(listed[1])))]
    assert [h["doc_id"] for h in r.json["hits"]] == fused_ids[:5]
    plain = client.post("/search", json={"query": "laptop bag", "model": "rrf", "size": 5})
    assert "requests" not in plain.json
    bad = client.post("/search", json={"query": "laptop bag", "show_requests": "yes"})
    assert bad.status_code == 400
