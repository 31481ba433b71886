"""The one LTR seam, driven by a fake transport (HTTP answers are faked here; the real engine
is exercised in tests/engine)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from support.fakes import FakeTransport, msearch_answering, searches

from esrank.core.errors import EngineError
from esrank.core.feature_set import FeatureSet
from esrank.engine.base import Engine, Ranked, Rescore, logging_request, parse_ltr_log
from esrank.engine.cluster import reason_of
from esrank.engine.dialect import WINDOW_PARAM


def test_store_created_only_when_missing():
    t = FakeTransport({("GET", "/_ltr"): {"stores": {}},
                       ("PUT", "/_ltr"): {"acknowledged": True}})
    assert Engine(t).ensure_store() is True
    assert [c[:2] for c in t.calls] == [("GET", "/_ltr"), ("PUT", "/_ltr")]
    t2 = FakeTransport({("GET", "/_ltr/mystore"): {"exists": True}})
    assert Engine(t2, store="mystore").ensure_store() is False
    assert len(t2.calls) == 1
    t3 = FakeTransport({("GET", "/_ltr"): {"stores": {"_default_": {"index": ".ltrstore"}}}})
    assert Engine(t3).store_exists() is True


BM25 = {"match": {"title": "tv"}}


def test_a_rescore_is_one_request_with_sltr_and_ltr_log():
    t = FakeTransport({})
    [body] = Engine(t).ranked_bodies("products", [
        Ranked(BM25, size=10, rescore=Rescore("chorus@abc", {"keywords": "tv"}, model="m1",
                                              window=50, log=True))])
    assert body["query"] == BM25 and body["size"] == 10
    assert body["rescore"]["window_size"] == 50
    assert body["rescore"]["query"]["rescore_query"] == {
        "sltr": {"_name": "esrank", "params": {"keywords": "tv"}, "model": "m1"}}
    assert body["ext"]["ltr_log"]["log_specs"] == {"name": "esrank", "rescore_index": 0,
                                                   "missing_as_zero": False}
    assert t.calls == []  # OpenSearch computes cosines without the window's ids
    logging = logging_request(FeatureSet("s", "", (), ()), {"keywords": "tv"}, ["a", "b"])
    [body] = Engine(t).ranked_bodies("products", [logging])
    assert body["query"] == {"bool": {"filter": [{"ids": {"values": ["a", "b"]}}]}}
    assert body["rescore"]["query"]["rescore_query"]["sltr"]["featureset"] == "s@" + \
        FeatureSet("s", "", (), ()).content_hash


def _stored(*params):
    return {"_source": {"featureset": {"name": "chorus@abc", "features": [
        {"name": "f", "params": list(params)}]}}}


def test_elasticsearch_cosine_features_get_the_window_ids():
    first_pass = {"hits": {"hits": [{"_id": "d2", "fields": {"id": ["d2"]}},
                                    {"_id": "d7", "fields": {"id": ["d7"]}}]}}
    t = FakeTransport({("GET", "/_ltr/_featureset/chorus@abc"): _stored("qv", WINDOW_PARAM),
                       ("POST", "/_msearch"): msearch_answering(first_pass)},
                      flavor="elasticsearch")
    engine = Engine(t)
    request = Ranked(BM25, size=10, rescore=Rescore("chorus@abc", {"qv": [1.0]}, model="m1",
                                                    window=50))
    [body] = engine.ranked_bodies("products", [request])
    [window] = searches(t.calls[-1][2])
    assert window == {"size": 50, "query": BM25, "_source": False}  # the first pass alone
    # the model's score alone ranks the window (query_weight 0): no need to score BM25 again
    assert body["query"] == {"bool": {"filter": [{"ids": {"values": ["d2", "d7"]}}]}}
    # ids read from a doc-values field when the index has one
    [body] = engine.ranked_bodies("products", [replace(request, id_field="id")])
    assert searches(t.calls[-1][2])[0] == {"size": 50, "query": BM25, "_source": False,
                                           "stored_fields": "_none_",
                                           "docvalue_fields": ["id"]}
    assert body["query"]["bool"]["filter"] == [{"ids": {"values": ["d2", "d7"]}}]
    # a rescore that keeps part of the first-pass score scores BM25 over the window too
    [body] = engine.ranked_bodies("products", [replace(request, rescore=replace(
        request.rescore, query_weight=1.0))])
    assert body["query"]["bool"]["must"] == [BM25]
    assert body["rescore"]["query"]["rescore_query"]["sltr"]["params"] == {
        "qv": [1.0], WINDOW_PARAM: ["d2", "d7"]}
    # known ids (logging, parity) need no first pass; the stored set is read once
    calls = len(t.calls)
    [body] = engine.ranked_bodies("products", [replace(request, query=None, ids=("d9",))])
    assert len(t.calls) == calls
    assert body["rescore"]["query"]["rescore_query"]["sltr"]["params"][WINDOW_PARAM] == ["d9"]


def test_elasticsearch_sets_without_cosine_features_are_one_request():
    t = FakeTransport({("GET", "/_ltr/_featureset/chorus@abc"): _stored("keywords")},
                      flavor="elasticsearch")
    [body] = Engine(t).ranked_bodies("products", [
        Ranked(BM25, rescore=Rescore("chorus@abc", {"keywords": "tv"}, model="m1"))])
    assert body["query"] == BM25 and WINDOW_PARAM not in \
        body["rescore"]["query"]["rescore_query"]["sltr"]["params"]


def test_parse_ltr_log_keeps_order_and_missing_as_nan():
    hit = {"_id": "7", "fields": {"_ltrlog": [{"esrank": [
        {"name": "b", "value": 2.5}, {"name": "a"}, {"name": "c", "value": 0.0}]}]}}
    values = parse_ltr_log(hit, ["a", "b", "c"])
    assert math.isnan(values[0]) and values[1:] == [2.5, 0.0]


def test_parse_ltr_log_rejects_a_feature_set_mismatch():
    hit = {"_id": "7", "fields": {"_ltrlog": [{"esrank": [{"name": "x", "value": 1.0}]}]}}
    with pytest.raises(EngineError, match=r"engine logged \['x'\].*\['a'\]"):
        parse_ltr_log(hit, ["a"])
    with pytest.raises(EngineError, match="no _ltrlog"):
        parse_ltr_log({"_id": "1", "fields": {}}, ["a"])


def test_engine_reason_names_root_cause_and_nested_cause():
    info = {"error": {"root_cause": [{"type": "query_shard_exception",
                                      "reason": "Cannot create query while parsing feature [f]"}],
                      "failed_shards": [{"reason": {"caused_by": {"reason": "bad json"}}}]}}
    assert reason_of(info, "x") == ("query_shard_exception: Cannot create query while parsing "
                                    "feature [f] (caused by bad json)")
    err = EngineError("create feature set", "exists", target="chorus@1", status=409)
    assert str(err) == "create feature set on chorus@1 failed (HTTP 409): exists"


@pytest.mark.parametrize("reason", [
    "invalid_index_name_exception: Invalid index name [_ltr], must not start with '_'.",
    "invalid_request: no handler found for uri [/_ltr] and method [GET]"])
def test_missing_ltr_plugin_is_named(reason):
    t = FakeTransport({("GET", "/_ltr"): EngineError("check LTR store", reason, status=400)})
    with pytest.raises(EngineError, match="no Learning-to-Rank plugin"):
        Engine(t).ensure_store()


@pytest.mark.parametrize(("answer", "flavor"), [
    ({"version": {"distribution": "opensearch", "number": "3.6.0"}}, "opensearch"),
    ({"version": {"number": "8.18.6"}, "tagline": "You Know, for Search"}, "elasticsearch"),
    # an Elasticsearch node without the rest-root module (the integ-test distribution)
    (EngineError("detect engine", "Incorrect HTTP method for uri [/] and method [GET], "
                 "allowed: [DELETE]", status=405), "elasticsearch"),
])
def test_auto_detects_the_flavor(monkeypatch, answer, flavor):
    import esrank.engine as engine_module

    monkeypatch.setattr(engine_module, "_transport",
                        lambda f, url, auth, timeout: FakeTransport({("GET", "/"): answer}, f))
    assert engine_module.connect("http://x:9200").dialect.name == flavor


def test_detection_does_not_hide_an_unreachable_engine(monkeypatch):
    import esrank.engine as engine_module

    down = EngineError("detect engine", "cannot reach http://x:9200")
    monkeypatch.setattr(engine_module, "_transport",
                        lambda f, url, auth, timeout: FakeTransport({("GET", "/"): down}, f))
    with pytest.raises(EngineError, match="cannot reach"):
        engine_module.connect("http://x:9200")


def test_a_feature_set_push_is_create_only():
    fs = FeatureSet("s", "", (), ())
    path = f"/_ltr/_featureset/{fs.engine_name}"
    created = FakeTransport({("PUT", path): {"result": "created"}})
    assert Engine(created).put_feature_set(fs) is True
    assert [c[:2] for c in created.calls] == [("PUT", path)]  # PUT: the plugin never overwrites
    exists = FakeTransport({("PUT", path): EngineError("create feature set", "version conflict",
                                                       status=409)})
    assert Engine(exists).put_feature_set(fs) is False
    refused = FakeTransport({("PUT", path): EngineError("create feature set", "bad", status=400)})
    with pytest.raises(EngineError, match="bad"):
        Engine(refused).put_feature_set(fs)


def test_bulk_retries_a_busy_engine_then_reports_what_is_still_refused():
    busy = {"index": {"_id": "b", "status": 429,
                      "error": {"type": "es_rejected_execution_exception", "reason": "queue"}}}
    bad = {"index": {"_id": "c", "status": 400,
                     "error": {"type": "mapper_parsing_exception", "reason": "price"}}}
    answers = iter([EngineError("bulk index", "unavailable", status=503),
                    {"items": [{"index": {"_id": "a", "status": 201}}, busy, bad]},
                    {"items": [{"index": {"_id": "b", "status": 201}}]}])

    def answer(body):
        result = next(answers)
        if isinstance(result, EngineError):
            raise result
        return result

    t = FakeTransport({("POST", "/_bulk"): answer})
    refused = Engine(t).bulk("products", [("a", {}), ("b", {}), ("c", {})], backoff=0)
    assert refused == [("c", "mapper_parsing_exception: price")]
    assert len(t.calls) == 3 and '"_id": "b"' in t.calls[-1][2] and '"a"' not in t.calls[-1][2]
    always_busy = FakeTransport({("POST", "/_bulk"): {"items": [busy]}})
    assert Engine(always_busy).bulk("products", [("b", {})], retries=2, backoff=0) == [
        ("b", "es_rejected_execution_exception: queue")]
    assert len(always_busy.calls) == 3


def test_bulk_requests_stay_under_the_byte_limit_and_a_large_document_goes_alone(
        monkeypatch):
    monkeypatch.setattr("esrank.engine.cluster.MAX_BULK_BYTES", 1000)
    t = FakeTransport({("POST", "/_bulk"): lambda body: {"items": []}})
    docs = [(str(i), {"text": "x" * n}) for i, n in enumerate([300, 300, 300, 5000, 10])]
    assert Engine(t).bulk("products", docs) == []
    ids = [[json.loads(line)["index"]["_id"] for line in body.splitlines()[::2]]
           for _, _, body, _ in t.calls]
    assert ids == [["0", "1", "2"], ["3"], ["4"]]


def test_credentials_in_the_url_never_reach_a_message():
    from esrank.engine import connect

    with pytest.raises(EngineError) as err:
        connect("http://elastic:hunter2@127.0.0.1:9", flavor="opensearch", timeout=1).health()
    assert "hunter2" not in str(err.value) and "elastic:***@127.0.0.1:9" in str(err.value)
    with pytest.raises(EngineError) as err:
        connect("http://elastic:hunter2@127.0.0.1:9", timeout=1)  # detection
    assert "hunter2" not in str(err.value)


def test_a_store_that_does_not_exist_yet_lists_no_models_and_other_errors_stay_errors():
    missing = EngineError("list models", "no such store", status=404)
    assert Engine(FakeTransport({("GET", "/_ltr/_model"): missing})).list_models("x-v") == []
    denied = EngineError("list models", "forbidden", status=403)
    with pytest.raises(EngineError, match="forbidden"):
        Engine(FakeTransport({("GET", "/_ltr/_model"): denied})).list_models("x-v")


def test_documents_by_id_are_one_request_and_a_failure_is_not_a_miss():
    path = ("POST", "/ubi_queries/_mget")
    t = FakeTransport({path: {"docs": [{"_id": "q1", "found": True, "_source": {"a": 1}},
                                       {"_id": "q2", "found": False}]}})
    assert Engine(t).get_documents("ubi_queries", ["q1", "q2", "q1"]) == {"q1": {"a": 1}}
    assert [c[2] for c in t.calls] == [{"ids": ["q1", "q2"]}]
    assert Engine(t).get_documents("ubi_queries", []) == {} and len(t.calls) == 1
    gone = {"_id": "q1", "error": {"type": "index_not_found_exception", "reason": "no such"}}
    assert Engine(FakeTransport({path: {"docs": [gone]}})).get_documents("ubi_queries",
                                                                         ["q1"]) == {}
    shard = {"_id": "q1", "error": {"type": "no_shard_available_action_exception",
                                    "reason": "no shard"}}
    with pytest.raises(EngineError, match="no_shard_available"):
        Engine(FakeTransport({path: {"docs": [shard]}})).get_documents("ubi_queries", ["q1"])


def test_ensure_index_takes_another_process_creating_it_first_as_created():
    settings_404 = EngineError("check index", "index_not_found_exception", status=404)
    raced = FakeTransport({("GET", "/x/_settings"): settings_404,
                           ("PUT", "/x"): EngineError(
                               "create index", "resource_already_exists_exception: index [x] "
                               "already exists", status=400)})
    assert Engine(raced).ensure_index("x", {}) is False
    refused = FakeTransport({("GET", "/x/_settings"): settings_404,
                             ("PUT", "/x"): EngineError("create index", "bad mapping",
                                                        status=400)})
    with pytest.raises(EngineError, match="bad mapping"):
        Engine(refused).ensure_index("x", {})
    fresh = FakeTransport({("GET", "/x/_settings"): settings_404, ("PUT", "/x"): {}})
    assert Engine(fresh).ensure_index("x", {}) is True


def test_the_same_search_asks_for_the_same_shard_copies():
    """msearch names each body's digest as its preference: on a replicated cluster the same
    search is answered by the same copies (the same candidates when logged, evaluated and
    served); other searches spread over the copies."""
    import json

    transport = FakeTransport({("POST", "/_msearch"): msearch_answering({"hits": {"hits": []}})})
    engine = Engine(transport)
    bodies = [{"query": {"match": {"title": "tv"}}}, {"query": {"match": {"title": "cable"}}}]
    engine.msearch("products", bodies)
    engine.msearch("products", bodies[:1])
    headers = [json.loads(line) for _, _, body, _ in transport.calls
               for line in body.splitlines()[::2]]
    assert [h["index"] for h in headers] == ["products"] * 3
    tv, cable, tv_again = (h["preference"] for h in headers)
    assert tv == tv_again and tv != cable
