"""The LTR plugin for real: store, feature-set push/diff, sltr + ltr_log on the Chorus set."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from pathlib import Path

import numpy as np
import pytest

from esrank.catalogue.products import text_of
from esrank.core.feature_set import QueryParam
from esrank.features.parser import load_feature_set
from esrank.features.sync import diff_against_engine, push_feature_sets

ROOT = Path(__file__).resolve().parent.parent.parent
CHORUS_SET = ROOT / "feature_sets" / "chorus.yaml"


def _renamed(fs, name):
    return dataclasses.replace(fs, name=name)


def test_store_creation_is_idempotent(engine):
    from esrank.engine import Engine

    named = Engine(engine.transport, store=f"s{uuid.uuid4().hex[:6]}")
    assert named.store_exists() is False
    assert named.ensure_store() is True
    assert named.store_exists() is True
    assert named.ensure_store() is False
    engine.transport.request("delete store", "DELETE", f"/_ltr/{named.store}")
    assert named.store_exists() is False
    engine.ensure_store()
    assert engine.store_exists()


def test_push_then_diff_round_trip(engine):
    fs = _renamed(load_feature_set(CHORUS_SET), f"rt{uuid.uuid4().hex[:6]}")
    before = diff_against_engine(engine, fs)
    assert before["status"] == "not in engine"
    first = push_feature_sets(engine, [fs])
    assert first == [{"name": fs.name, "engine_name": fs.engine_name, "created": True}]
    assert push_feature_sets(engine, [fs])[0]["created"] is False
    stored = engine.get_feature_set(fs.engine_name)
    assert [f["name"] for f in stored["features"]] == list(fs.feature_names)
    assert diff_against_engine(engine, fs)["status"] == "up to date"

    # an edited set is a new version beside the old one, which stays untouched
    changed = dataclasses.replace(fs, features=fs.features[:-1])
    report = diff_against_engine(engine, changed)
    assert report["status"] == "differs"
    assert report["compared_with"] == fs.engine_name
    assert report["removed"] == [fs.feature_names[-1]]
    push_feature_sets(engine, [changed])
    assert engine.get_feature_set(fs.engine_name) == stored
    assert changed.engine_name != fs.engine_name


def test_sltr_logs_every_chorus_feature_for_a_real_query(engine, slice_alias, encoder):
    fs = load_feature_set(CHORUS_SET)
    push_feature_sets(engine, [fs])
    query = "bluetooth speaker"
    params = {"keywords": query, "query_vector": encoder.encode([query])[0].tolist()}
    hits = engine.search(slice_alias, {"size": 20, "query": {"match": {"title": query}}})
    ids = [h["_id"] for h in hits["hits"]["hits"]]
    assert len(ids) >= 10
    logged = engine.log_features(slice_alias, fs, params, ids)
    assert set(logged) == set(ids)
    names = list(fs.feature_names)
    for doc_id, values in logged.items():
        assert len(values) == len(names)
        cosine = values[names.index("title_cosine")]
        assert 0.0 <= cosine <= 1.0, doc_id
        assert not math.isnan(values[names.index("title_bm25")])
    # the engine's cosines are the encoder's, (1 + cos) / 2, for every logged doc (on
    # Elasticsearch a knn query: exact for each doc, not only for the nearest ones)
    docs = engine.search(slice_alias, {"size": len(ids), "query": {"ids": {"values": ids}},
                                       "_source": ["title", "short_description"]})
    q = encoder.encode([query])[0]
    for doc in docs["hits"]["hits"]:
        title = float(encoder.encode([doc["_source"]["title"]])[0] @ q)
        text = float(encoder.encode([text_of(doc["_source"])])[0] @ q)
        values = logged[doc["_id"]]
        assert abs(values[names.index("title_cosine")] - (1 + title) / 2) < 1e-4, doc["_id"]
        assert abs(values[names.index("text_cosine")] - (1 + text) / 2) < 1e-4, doc["_id"]
    # every feature fires for some doc of some query: no dead templates
    fired = set()
    for q in (query, "xerox"):
        params = {"keywords": q, "query_vector": encoder.encode([q])[0].tolist()}
        top = engine.search(slice_alias, {"size": 20, "query": {"match": {"title": q}}})
        logged = engine.log_features(slice_alias, fs, params,
                                     [h["_id"] for h in top["hits"]["hits"]])
        fired |= {name for i, name in enumerate(names)
                  if any(not math.isnan(v[i]) and v[i] != 0 for v in logged.values())}
    assert fired == set(names)


def test_log_judgments_through_the_plugin(engine, slice_alias, encoder, tmp_path):
    from esrank.judgments.lists import JudgmentList, read_csv
    from esrank.learn.feature_log import log_judgments
    from esrank.learn.table import write_ranklib

    fs = load_feature_set(CHORUS_SET)
    push_feature_sets(engine, [fs])
    chorus = read_csv(ROOT / "esrank" / "data" / "chorus" / "judgments.csv")
    judged = JudgmentList(tuple(j for j in chorus if j.query == "bluetooth speaker"))
    extra = JudgmentList(judged.judgments + (dataclasses.replace(judged.judgments[0],
                                                                 doc_id="no-such-doc"),))
    report = log_judgments(engine, slice_alias, fs, extra, encoder, progress=False)
    assert len(report.matrix) == len(judged) == 52
    assert report.missing_docs == [("bluetooth speaker", "no-such-doc")]
    names = list(fs.feature_names)
    cos = report.matrix.values[:, names.index("title_cosine")]
    assert np.all((cos >= 0) & (cos <= 1))
    # same values as the single-query logger
    direct = engine.log_features(slice_alias, fs, {
        "keywords": "bluetooth speaker",
        "query_vector": encoder.encode(["bluetooth speaker"])[0].tolist()},
        list(report.matrix.doc_ids))
    for row, doc in zip(report.matrix.values, report.matrix.doc_ids, strict=True):
        np.testing.assert_allclose(row, np.array(direct[doc], dtype=np.float32), rtol=1e-6)
    write_ranklib(report.matrix, tmp_path / "t.txt")
    assert len((tmp_path / "t.txt").read_text().splitlines()) == 52 + 1 + len(names)


@pytest.mark.parametrize("missing_goes", ["yes", "no"])
def test_how_each_plugin_routes_a_missing_feature(engine, slice_alias, missing_goes):
    """One split on a feature that does not match: OpenSearch's plugin sends it "no" whatever
    the model says; o19s follows the split's `missing` child. esrank writes `missing` as the
    "no" child and trains NaN to go "no", so both serve what was trained."""
    from esrank.core.feature_set import Feature, FeatureSet
    from esrank.engine import Ranked, Rescore

    fs = FeatureSet(f"miss{uuid.uuid4().hex[:6]}", "", (QueryParam("keywords", "string"),),
                    (Feature("f", ("keywords",), "mustache",
                             {"match": {"title": "{{keywords}}"}}),))
    engine.ensure_store()
    engine.put_feature_set(fs)
    split = {"nodeid": 0, "depth": 0, "split": "f", "split_condition": 0.5, "yes": 1, "no": 2,
             "missing": 1 if missing_goes == "yes" else 2,
             "children": [{"nodeid": 1, "leaf": 1.0}, {"nodeid": 2, "leaf": 2.0}]}
    name = f"{fs.name}-v1"
    engine.create_model(fs.engine_name, name, {
        "type": "model/xgboost+json",
        "definition": json.dumps({"objective": "reg:linear", "splits": [split]})})
    try:
        [response] = engine.ranked(slice_alias, [Ranked(
            {"match_all": {}}, size=3, rescore=Rescore(fs.engine_name, {"keywords": "zzqxj"},
                                                       model=name, window=3))])
        scores = {h["_score"] for h in response["hits"]["hits"]}
    finally:
        engine.delete_model(name)
    follows_missing = engine.dialect.name == "elasticsearch"
    assert scores == {1.0 if follows_missing and missing_goes == "yes" else 2.0}
