"""The cross-encoder stage, served through esrank's ONNX export (no torch): a
BertForSequenceClassification built from the packaged MiniLM with a fixed random head
(conftest.build_cross_encoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.fakes import FakeTransport

from esrank.engine.base import Engine
from esrank.models.encoder import NumpyBertEncoder, model_dir
from esrank.ranking.search import Ranker, search

DOCS = ["Sony Portable Bluetooth Speaker MBS-100", "HP 301 ink cartridge black", "a"]


def test_scores_equal_a_numpy_reference(ce, ce_dir):
    """CLS state -> pooler (dense + tanh) -> classifier, recomputed with NumPy."""
    from safetensors.numpy import load_file

    enc = NumpyBertEncoder(model_dir())
    w = load_file(str(ce_dir / "model.safetensors"))
    tok = enc._tok
    expected = []
    for doc in DOCS:
        e = tok.encode("bluetooth speaker", doc)
        ids, types = np.array([e.ids]), np.array([e.type_ids])
        cls = enc.hidden(ids, np.ones(ids.shape, np.float32), types)[:, 0]
        pooled = np.tanh(cls @ w["bert.pooler.dense.weight"].T + w["bert.pooler.dense.bias"])
        expected.append((pooled @ w["classifier.weight"].T + w["classifier.bias"])[0, 0])
    assert any(t == 1 for t in e.type_ids)  # the document half has token type 1
    np.testing.assert_allclose(ce.score("bluetooth speaker", DOCS), expected, atol=1e-4)


def test_rerank_endpoint_and_missing_cross_encoder(make_app, ce):
    client = make_app().test_client()
    body = {"query": "bluetooth speaker", "texts": DOCS}
    assert client.post("/rerank", json=body).status_code == 501
    assert client.post("/search", json={"query": "tv", "rerank": 5}).status_code == 501
    r = make_app(reranker=ce).test_client().post("/rerank", json=body)
    assert r.status_code == 200
    np.testing.assert_allclose(r.json["scores"], ce.score("bluetooth speaker", DOCS),
                               atol=1e-5)


def test_the_configured_cross_encoder_loads_when_the_sidecar_starts(make_app, ce_dir,
                                                                      tmp_path):
    """Not on the first search that needs it: a bad ESRANK_CROSS_ENCODER fails the start."""
    from esrank.core.errors import ConfigError

    app = make_app(cross_encoder=ce_dir, home=tmp_path)
    assert list((tmp_path / "models").glob("cross-encoder-*.onnx"))  # exported at start
    assert app.extensions["esrank"].app.reranker.key.startswith(f"{ce_dir.name}@")
    with pytest.raises(ConfigError, match="no model.safetensors"):
        make_app(cross_encoder=tmp_path / "missing", home=tmp_path)


def test_search_reranks_the_top_hits(ce):
    hits = [{"_id": f"d{i}", "_score": 10.0 - i, "_source": {"title": t}}
            for i, t in enumerate(["HP 301 ink cartridge black", "a",
                                   "Sony Portable Bluetooth Speaker MBS-100", "USB cable"])]
    engine = Engine(FakeTransport({("POST", "/_msearch"): {"responses": [
        {"hits": {"hits": hits}}]}}))
    result = search(engine, "products", "bluetooth speaker", Ranker("bm25", rerank=3),
                    reranker=ce)
    scores = ce.score("bluetooth speaker", [h["_source"]["title"] for h in hits[:3]])
    expected = [f"d{i}" for i in np.argsort(-scores, kind="stable")] + ["d3"]
    assert [h.doc_id for h in result.hits] == expected
    assert result.ranker == "bm25+rerank3"
    assert [h.score for h in result.hits[:3]] == pytest.approx(sorted(scores, reverse=True))


def test_a_rerank_stage_deeper_than_the_page_scores_its_whole_depth(ce):
    """rerank 4 with size 2: the engine is asked for 4 hits, all 4 are scored, 2 return."""
    from esrank.ranking.search import search_many

    hits = [{"_id": f"d{i}", "_score": 10.0 - i, "_source": {"title": t}}
            for i, t in enumerate(["USB cable", "a", "HP 301 ink cartridge black",
                                   "Sony Portable Bluetooth Speaker MBS-100"])]
    scores = ce.score("bluetooth speaker", [h["_source"]["title"] for h in hits])
    expected = [f"d{i}" for i in np.argsort(-scores, kind="stable")][:2]
    for run in (lambda e: search(e, "products", "bluetooth speaker", Ranker("bm25", rerank=4),
                                 size=2, reranker=ce).hits,
                lambda e: search_many(e, "products", ["bluetooth speaker"],
                                      Ranker("bm25", rerank=4), None, size=2,
                                      reranker=ce)["bluetooth speaker"]):
        engine = Engine(FakeTransport({("POST", "/_msearch"): {"responses": [
            {"hits": {"hits": hits}}]}}))
        assert [h.doc_id for h in run(engine)] == expected
        sent = json.loads(engine.transport.calls[-1][2].strip().split("\n")[1])
        assert sent["size"] == 4


def test_search_many_reranks_a_rerank_configuration_and_refuses_without_a_model(ce):
    from esrank.core.errors import ConfigError
    from esrank.ranking.search import search_many

    hits = [{"_id": f"d{i}", "_score": 10.0 - i, "_source": {"title": t}}
            for i, t in enumerate(["HP 301 ink cartridge black", "a",
                                   "Sony Portable Bluetooth Speaker MBS-100", "USB cable"])]
    engine = Engine(FakeTransport({("POST", "/_msearch"): {"responses": [
        {"hits": {"hits": hits}}]}}))
    ranker = Ranker("bm25", rerank=3)
    assert ranker.label == "bm25+rerank3"
    ranked = search_many(engine, "products", ["bluetooth speaker"], ranker, None,
                         source=False, reranker=ce)["bluetooth speaker"]
    scores = ce.score("bluetooth speaker", [h["_source"]["title"] for h in hits[:3]])
    assert [h.doc_id for h in ranked] == [f"d{i}" for i in np.argsort(-scores, kind="stable")
                                          ] + ["d3"]
    sent = json.loads(engine.transport.calls[-1][2].strip().split("\n")[1])
    assert sent["_source"]  # the cross-encoder needs the text even when source=False
    with pytest.raises(ConfigError, match="needs a cross-encoder"):
        search_many(engine, "products", ["x"], ranker, None)


def test_configuration_names_with_a_rerank_stage():
    from esrank.evaluation.comparison import rankers

    engine = Engine(FakeTransport({}))  # baselines need no engine call
    found = rankers(engine, "chorus", ["bm25", "bm25+rerank5", "bm25-title+rerank20",
                                       "bm25+rerankx", "bm25+rerank0"], 100)
    assert [r.label for r in found] == ["bm25", "bm25+rerank5", "bm25-title+rerank20"]
