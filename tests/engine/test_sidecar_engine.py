"""/search on the real engine returns what `esrank search` returns (BM25; no LTR needed)."""

from __future__ import annotations

from pathlib import Path

from esrank.catalogue import index_catalogue
from esrank.search import Ranker, search
from esrank.serve import create_app

SLICE = Path(__file__).resolve().parent.parent / "data" / "chorus_slice.jsonl"


def test_search_endpoint_equals_the_library(engine, alias, encoder, engine_settings):
    index_catalogue(engine, alias, [SLICE], encoder, progress=False)
    app = create_app(engine_settings(index=alias), encoder=encoder)
    client = app.test_client()
    assert client.get("/readyz").json["engine"] == "reachable"
    for query in ("bluetooth speaker", "laptop bag", "wireless headphones"):
        r = client.post("/search", json={"query": query, "model": "bm25", "size": 20})
        assert r.status_code == 200, r.json
        expected = search(engine, alias, query, Ranker("bm25"), size=20)
        assert [h["doc_id"] for h in r.json["hits"]] == [h.doc_id for h in expected.hits]
        assert r.json["ranker"] == "bm25" and r.json["degraded"] is None
