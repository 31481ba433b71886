"""The one LTR seam, driven by a fake transport (HTTP answers are faked here; the real engine
is exercised in tests/engine)."""

from __future__ import annotations

import math

import pytest
from fakes import FakeTransport

from esrank.engine.base import Engine, parse_ltr_log, reason_of
from esrank.errors import EngineError


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


def test_sltr_clause_for_feature_set_and_model():
    assert Engine.sltr("chorus@abc", {"keywords": "tv"}) == {
        "sltr": {"_name": "esrank", "params": {"keywords": "tv"}, "featureset": "chorus@abc"}}
    assert Engine.sltr("chorus@abc", {}, model="m1")["sltr"]["model"] == "m1"


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
