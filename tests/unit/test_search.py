"""The query-time request esrank builds, and degradation, over a faked HTTP answer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.fakes import FakeTransport, msearch_answering, searches

from esrank.catalogue.recall import Recall
from esrank.core.feature_set import QueryParam
from esrank.deploy.registry import ActiveModel
from esrank.engine.base import Engine
from esrank.personal.serving import params_for
from esrank.ranking.search import Ranker, search

HITS = {"hits": {"hits": [{"_id": "d1", "_score": 2.0, "_source": {"title": "Speaker"}},
                          {"_id": "d2", "_score": 1.0, "_source": {"title": "Case"}}]}}
MODEL = ActiveModel("chorus-v3", "chorus@abc", (QueryParam("keywords", "string"),
                                                QueryParam("query_vector", "vector", 3)))


class Encoder:
    dims = 3
    key = "minilm:00aa11bb22cc33dd:int8"

    def __init__(self, fail=False):
        self.fail = fail

    def encode(self, texts):
        if self.fail:
            raise TimeoutError("encoder took longer than 2.0s")
        import numpy as np

        return np.array([[0.6, 0.8, 0.0]] * len(texts), dtype=np.float32)


@pytest.fixture()
def transport():
    return FakeTransport({("POST", "/_msearch"): msearch_answering(HITS)})


def test_the_model_rescores_the_bm25_window(transport):
    result = search(Engine(transport), "products", "bluetooth speaker",
                    Ranker(MODEL.name, MODEL, window=50), Encoder(), size=10)
    [body] = searches(transport.calls[-1][2])
    rescore = body["rescore"]
    assert rescore["window_size"] == 50
    assert rescore["query"]["query_weight"] == 0.0
    sltr = rescore["query"]["rescore_query"]["sltr"]
    assert sltr["model"] == "chorus-v3"
    assert sltr["params"]["keywords"] == "bluetooth speaker"
    assert sltr["params"]["query_vector"] == pytest.approx([0.6, 0.8, 0.0])
    assert body["query"]["multi_match"]["query"] == "bluetooth speaker"
    assert result.ranker == "chorus-v3" and result.degraded is None
    assert [h.doc_id for h in result.hits] == ["d1", "d2"]


def test_the_recall_stage_embeds_the_query_once():
    """The kNN search and the model's query_vector param share one encode."""
    hits = {"hits": {"hits": [{"_id": d, "_score": 1.0, "fields": {"id": [d]},
                               "_source": {"title": d}} for d in ("d1", "d2")]}}
    transport = FakeTransport({("POST", "/_msearch"): msearch_answering(hits)})
    calls = []

    class Counted(Encoder):
        def encode(self, texts):
            calls.append(list(texts))
            return super().encode(texts)

    model = replace(MODEL, recall=Recall(2, 2))
    result = search(Engine(transport), "products", "tv", Ranker(model.name, model, 2, knn=2),
                    Counted())
    assert calls == [["tv"]] and result.degraded is None
    [body] = searches(transport.calls[-1][2])
    assert body["rescore"]["query"]["rescore_query"]["sltr"]["params"]["query_vector"] == (
        pytest.approx([0.6, 0.8, 0.0]))


def test_a_failing_encoder_degrades_to_bm25_and_says_why(transport):
    result = search(Engine(transport), "products", "bluetooth speaker",
                    Ranker(MODEL.name, MODEL), Encoder(fail=True))
    assert "rescore" not in searches(transport.calls[-1][2])[0]
    assert result.ranker == "bm25"
    assert "TimeoutError" in result.degraded and "2.0s" in result.degraded
    assert [h.rank for h in result.hits] == [1, 2]


class CrossEncoder:
    key = "ce@0123456789ab"

    def __init__(self, fail=False):
        self.fail = fail

    def relevance(self, query, texts):
        if self.fail:
            raise RuntimeError("CUDA error: device lost")
        return [0.5] * len(texts)


@pytest.mark.parametrize(("encoder", "reranker", "failed"), [
    (Encoder(fail=True), CrossEncoder(), "encoder"),
    (Encoder(), CrossEncoder(fail=True), "cross-encoder"),
])
def test_a_degraded_answer_names_the_scorer_that_failed(transport, encoder, reranker, failed):
    """A model with a cross-encoder feature also embeds the query: either can fail."""
    model = replace(MODEL, params=(*MODEL.params, QueryParam("ce_scores", "weights",
                                                             source="cross_encoder")),
                    cross_encoder=CrossEncoder.key)
    result = search(Engine(transport), "products", "tv", Ranker(model.name, model), encoder,
                    reranker=reranker)
    assert result.ranker == "bm25"
    assert result.degraded.startswith(f"{failed} unavailable (")


def test_a_model_logged_with_other_encoder_weights_degrades_to_bm25(transport):
    """Same weights at another precision serve; other weights would give other cosines."""
    same = replace(MODEL, encoder="minilm:00aa11bb22cc33dd:fp32")
    result = search(Engine(transport), "products", "tv", Ranker(same.name, same), Encoder())
    assert result.degraded is None and result.ranker == "chorus-v3"
    tuned = replace(MODEL, encoder="minilm-shop:99ee88ff77aa66bb:int8")
    result = search(Engine(transport), "products", "tv", Ranker(tuned.name, tuned), Encoder())
    assert "rescore" not in searches(transport.calls[-1][2])[0]
    assert result.ranker == "bm25"
    assert ("learned from encoder minilm-shop:99ee88ff77aa66bb:int8; the configured one is "
            "minilm:00aa11bb22cc33dd:int8") in result.degraded


def test_a_model_the_engine_cannot_use_degrades_to_bm25_and_says_why():
    unknown = {"error": {"root_cause": [{"type": "query_shard_exception",
                                         "reason": "Unknown model [chorus-v3]"}]}, "status": 400}

    def answer(body):  # the rescore fails in the engine; BM25 alone works
        return {"responses": [unknown if "rescore" in s else HITS for s in searches(body)]}

    transport = FakeTransport({("POST", "/_msearch"): answer})
    result = search(Engine(transport), "products", "bluetooth speaker",
                    Ranker(MODEL.name, MODEL), Encoder())
    assert result.ranker == "bm25" and [h.doc_id for h in result.hits] == ["d1", "d2"]
    assert "model chorus-v3 unavailable" in result.degraded
    assert "Unknown model [chorus-v3]" in result.degraded
    assert "rescore" not in searches(transport.calls[-1][2])[0]


def test_an_engine_that_does_not_answer_is_an_error_not_a_degraded_answer():
    from esrank.core.errors import EngineError

    down = EngineError("multi-search", "cannot reach http://127.0.0.1:9200")
    transport = FakeTransport({("POST", "/_msearch"): down})
    with pytest.raises(EngineError, match="cannot reach"):
        search(Engine(transport), "products", "tv", Ranker(MODEL.name, MODEL), Encoder())
    assert len(transport.calls) == 1  # no second try against an engine that is not there


def test_resolving_the_active_model_is_one_registry_read():
    from esrank.ranking.search import resolve_ranker

    record = {"feature_set": "chorus@abc", "params": [{"name": "keywords", "type": "string",
                                                       "dims": None}],
              "uploaded_at": "2026-12-01T00:00:00Z"}
    doc = {"_source": {"feature_set": "chorus", "active": "chorus-v3", "history": [],
                       "models": {"chorus-v3": record}}, "found": True,
           "_seq_no": 1, "_primary_term": 1}
    t = FakeTransport({("GET", "/esrank-models/_doc/chorus"): doc})
    ranker = resolve_ranker(Engine(t), "chorus", "active", 100)
    assert ranker.name == "chorus-v3" and len(t.calls) == 1


def test_a_model_lookup_is_reused_for_the_ttl_and_repeated_without_one():
    from esrank.app import App
    from esrank.core.settings import load_settings

    settings = load_settings(url="http://127.0.0.1:9")
    for ttl, lookups in ((60.0, 1), (0.0, 3)):
        transport = FakeTransport({})  # no registry entry: "active" is BM25
        app = App(settings, engine=Engine(transport), ranker_ttl=ttl)
        assert [app.ranker("active").label for _ in range(3)] == ["bm25"] * 3
        paths = [path for _, path, _, _ in transport.calls]
        assert paths == ["/esrank-models/_doc/chorus"] * lookups
        assert app.ranker("active", rerank=0, window=50).label == "bm25"  # another key
        assert len(transport.calls) == lookups + 1
    app = App(settings, engine=Engine(FakeTransport({})), ranker_ttl=60.0)
    for window in range(1, 1000):  # request-chosen keys never pile up
        app.ranker("active", window=window)
    assert 0 < len(app._rankers) <= 256


def test_a_shoppers_profile_is_reused_for_the_ttl():
    from esrank.app import App
    from esrank.core.settings import load_settings
    from esrank.personal.shopper import ShopperContext

    settings = load_settings(url="http://127.0.0.1:9")
    for ttl, reads in ((60.0, 1), (0.0, 3)):
        transport = FakeTransport({})  # no profile stored: an anonymous-like shopper
        app = App(settings, engine=Engine(transport), profile_ttl=ttl)
        assert [params_for(app, ShopperContext("u1")) for _ in range(3)] == [{}] * 3
        paths = [path for _, path, _, _ in transport.calls]
        assert paths == ["/esrank-profiles/_doc/u1"] * reads


def test_a_long_query_is_cut_to_its_first_terms_as_the_engines_count_them():
    from esrank.core.query_text import MAX_QUERY_TERMS, bounded_query

    assert bounded_query("bluetooth speaker") == ("bluetooth speaker", 0)
    words = " ".join(f"w{i}" for i in range(300))
    cut, dropped = bounded_query(words)
    assert dropped == 300 - MAX_QUERY_TERMS and cut.split() == words.split()[:MAX_QUERY_TERMS]
    # CJK ideographs are one term each; punctuation splits terms ("wi-fi" is two)
    cut, dropped = bounded_query("漢" * 70)
    assert (cut, dropped) == ("漢" * MAX_QUERY_TERMS, 70 - MAX_QUERY_TERMS)
    assert bounded_query("wi-fi " * 40)[1] == 80 - MAX_QUERY_TERMS


def test_a_model_served_over_other_candidates_than_it_learned_says_so(transport):
    model = replace(MODEL, recall=Recall(100))
    same = search(Engine(transport), "products", "speaker", Ranker(MODEL.name, model, 100),
                  Encoder())
    other = search(Engine(transport), "products", "speaker", Ranker(MODEL.name, model, 50),
                   Encoder())
    assert same.degraded is None and same.ranker == other.ranker == MODEL.name
    assert other.degraded == "model chorus-v3 was trained over bm25@100, served over bm25@50"
