"""Shopper params in feature sets, profiles from UBI events, action weights, and personal
trees learned on top of a non-personal model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from esrank.catalogue.lookup import ProductFacts
from esrank.core.errors import InputError
from esrank.core.feature_set import active_features
from esrank.features.parser import load_feature_set
from esrank.judgments.clicks import Session, Shown, coec, parse_weights, sessions_of
from esrank.learn.artifact import ModelArtifact
from esrank.learn.table import FeatureMatrix
from esrank.learn.train import TrainParams, train
from esrank.personal.shopper import Profile, ShopperContext, build_profiles, shopper_params
from esrank.ubi.log import UbiEvent, UbiQuery, parse_record, read_ndjson

REPO = Path(__file__).resolve().parents[2]
UBI = REPO / "tests" / "data" / "ubi_esci_sample" / "ubi_queries_events.ndjson"
DAY = 86_400.0

BASE = """\
name: base
params:
  keywords: {type: string}
features:
  - name: title
    params: [keywords]
    template: {match: {title: "{{keywords}}"}}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def personal_set(tmp_path: Path, params: str, features: str) -> Path:
    write(tmp_path, "base.yaml", BASE)
    return write(tmp_path, "p.yaml", f"name: p\nextends: base.yaml\nparams:\n{params}"
                                     f"features:\n{features}")


BRANDS = "  shopper_brands: {type: weights, source: shopper}\n"
BRAND_FEATURE = """\
  - name: brand
    params: [shopper_brands]
    template: >-
      {"bool": {"should": [{{#shopper_brands}}{"constant_score": {"filter": {"term":
      {"supplier.keyword": "{{term}}"}}, "boost": {{weight}}}}, {{/shopper_brands}}
      {"match_none": {}}]}}
"""


# -- feature sets ---------------------------------------------------------------------------


def test_chorus_personal_extends_chorus_in_order():
    chorus = load_feature_set(REPO / "feature_sets" / "chorus.yaml")
    fs = load_feature_set(REPO / "feature_sets" / "chorus_personal.yaml")
    assert fs.feature_names[:15] == chorus.feature_names
    assert fs.feature_names[15:] == ("shopper_brand", "shopper_price_fit",
                                     "shopper_brand_match", "shopper_price_match")
    price = ("shopper_price", "shopper_price_scale")
    assert fs.personal_features == {"shopper_brand": ("shopper_brands",),
                                    "shopper_price_fit": price,
                                    "shopper_brand_match": ("shopper_brands",),
                                    "shopper_price_match": price}
    assert chorus.personal_features == {}
    assert fs.engine_name != chorus.engine_name


def test_a_weights_section_renders_and_is_checked(tmp_path):
    fs = load_feature_set(personal_set(tmp_path, BRANDS, BRAND_FEATURE))
    assert fs.param("shopper_brands").source == "shopper"
    outside = BRAND_FEATURE.replace('{"match_none": {}}', '{"term": {"x": "{{term}}"}}')
    with pytest.raises(InputError, match=r"p\.yaml:\d+: .*brand.*uses 'term'"):
        load_feature_set(personal_set(tmp_path, BRANDS, outside))


@pytest.mark.parametrize(("params", "message"), [
    ("  shopper_mood: {type: string, source: shopper}\n",
     r"esrank fills these shopper params: shopper_brands \(weights\)"),
    ("  shopper_brands: {type: string, source: shopper}\n", "of type 'string'"),
    ("  band: {type: number}\n", "a number param cannot come from the query text"),
    ("  x: {type: string, source: cookie}\n", "source expected one of query, shopper"),
    ("  ce: {type: string, source: cross_encoder}\n", "the cross-encoder fills a weights param"),
    ("  keywords: {type: string}\n", r"param 'keywords' is already declared in .*base\.yaml"),
])
def test_bad_shopper_params_name_the_line(tmp_path, params, message):
    feature = "  - name: f\n    params: []\n    template: {match_all: {}}\n"
    with pytest.raises(InputError, match=message):
        load_feature_set(personal_set(tmp_path, params, feature))


def test_extends_errors(tmp_path):
    again = "  - name: title\n    params: []\n    template: {match_all: {}}\n"
    with pytest.raises(InputError, match=r"p\.yaml:\d+: .*duplicate feature name \(first "
                                         r"defined in the extended set\)"):
        load_feature_set(personal_set(tmp_path, "  {}\n", again))
    a = write(tmp_path, "a.yaml", "name: a\nextends: b.yaml\nfeatures: [{name: x, params: [],"
                                  " template: {match_all: {}}}]\n")
    write(tmp_path, "b.yaml", "name: b\nextends: a.yaml\nfeatures: [{name: y, params: [], "
                              "template: {match_all: {}}}]\n")
    with pytest.raises(InputError, match="extend each other in a cycle"):
        load_feature_set(a)
    missing = write(tmp_path, "m.yaml", "name: m\nextends: nowhere.yaml\nfeatures: [{name: x,"
                                        " params: [], template: {match_all: {}}}]\n")
    with pytest.raises(InputError, match="nowhere.yaml.*cannot read"):
        load_feature_set(missing)


def test_active_features_leave_out_personal_features_without_params():
    names = ("a", "brand", "price")
    personal = {"brand": ("shopper_brands",), "price": ("shopper_price", "shopper_scale")}
    assert active_features(names, {}, {}) is None  # no personal features: no clause
    assert active_features(names, personal, {"keywords": "x"}) == ("a",)
    assert active_features(names, personal, {"shopper_brands": []}) == ("a", "brand")
    assert active_features(names, personal, {"shopper_price": 1}) == ("a",)  # needs both


# -- shoppers and profiles ------------------------------------------------------------------


def test_a_context_refuses_a_bad_price_band_or_too_many_brands():
    assert ShopperContext().anonymous and ShopperContext(session_id="s").anonymous
    assert not ShopperContext(brands=("HP",)).anonymous
    for band in ((-1.0, 10.0), (1.0, float("nan")), (1.0,)):
        with pytest.raises(InputError, match="price band"):
            ShopperContext(price_band=band)
    assert ShopperContext(price_band=(50.0, 10.0)).price_band == (10.0, 50.0)
    assert shopper_params(None, ShopperContext(price_band=(40.0, 40.0))) == {
        "shopper_price": 40.0, "shopper_price_scale": pytest.approx(40 * (math.exp(0.25) - 1))}
    with pytest.raises(InputError, match="at most 20"):
        ShopperContext(brands=tuple(f"b{i}" for i in range(21)))


def test_profiles_weigh_actions_by_kind_and_age():
    now = 100 * DAY
    facts = {"h1": ProductFacts("HP", 100.0), "h2": ProductFacts("HP", 400.0),
             "c1": ProductFacts("Canon", 20.0), "x": ProductFacts(None, None)}
    facts["h3"] = ProductFacts("HP", 2000.0)
    queries = [UbiQuery("q", "printer", "u", hit_ids=("h1", "h2", "gone"))]
    events = [UbiEvent("purchase", "q", "h1", 1, "u", None, now),       # 4
              UbiEvent("click", "q", "h2", 2, "u", None, now),          # 1
              UbiEvent("click", "q", "c1", 3, "u", None, now - 30 * DAY),  # 1 * 0.5
              UbiEvent("impression", "q", "c1", 3, "u", None, now),    # nothing
              UbiEvent("purchase", "q", "gone", 1, "u", None, now),    # unknown product
              UbiEvent("purchase", "q", "h3", 4, "u", None, now),      # never shown
              UbiEvent("purchase", None, "h3", 4, "u", None, now),     # no query
              UbiEvent("click", "q", "h1", 1, None, None, now)]        # nobody
    [profile] = build_profiles(queries, events, facts, now=now).values()
    assert profile.user_id == "u" and profile.actions == 3
    assert profile.brands == (("HP", round(5 / 5.5, 4)), ("Canon", round(0.5 / 5.5, 4)))
    log_mean = (4 * math.log(100) + 1 * math.log(400) + 0.5 * math.log(20)) / 5.5
    assert profile.price == pytest.approx(math.exp(log_mean), abs=0.01)
    assert profile.price_scale > profile.price * (math.exp(0.25) - 1)  # a real spread
    assert Profile.from_dict(profile.to_dict()) == profile


def test_shopper_params_mix_context_and_profile():
    profile = Profile("u", (("HP", 0.8), ("Canon", 0.2)), 50.0, 20.0, 5, 0.0)
    assert shopper_params(None) == {}
    assert shopper_params(profile) == {
        "shopper_brands": [{"term": "HP", "weight": 0.8}, {"term": "Canon", "weight": 0.2}],
        "shopper_price": 50.0, "shopper_price_scale": 20.0}
    mixed = shopper_params(profile, ShopperContext("u", brands=("Epson",),
                                                   price_band=(100.0, 300.0)))
    assert mixed["shopper_brands"][0] == {"term": "Epson", "weight": 0.5}
    assert mixed["shopper_brands"][1] == {"term": "HP", "weight": 0.4}
    assert (mixed["shopper_price"], mixed["shopper_price_scale"]) == (200.0, 100.0)
    # what the application knows is enough without a profile
    assert shopper_params(None, ShopperContext(brands=("HP",))) == {
        "shopper_brands": [{"term": "HP", "weight": 1.0}]}


# -- UBI and action weights -----------------------------------------------------------------


def test_ubi_records_read_both_timestamp_forms():
    event = parse_record({"action_name": "purchase", "query_id": "q", "client_id": "c",
                          "timestamp": 1717527762129,
                          "event_attributes": {"object": {"object_id": 42},
                                               "position": {"ordinal": 3}}})
    assert event == UbiEvent("purchase", "q", "42", 4, "c", None, 1717527762.129)
    query = parse_record({"query_id": "q", "user_query": "tv", "client_id": "c",
                          "timestamp": "2024-12-10T00:01:29.378Z"})
    assert isinstance(query, UbiQuery) and query.timestamp == pytest.approx(1733788889.378)
    assert parse_record({"index": {"_index": "ubi_events"}}) is None
    assert parse_record({"query_id": "q", "user_query": " "}) is None
    assert parse_record(event.to_doc()) == event  # what the sidecar writes reads back


def test_ubi_sample_reads_queries_and_every_event():
    queries, events = read_ndjson(UBI)
    assert len(queries) == 284 and len(events) == 3448  # 473 query records, 284 ids
    actions = {e.action for e in events}
    assert {"impression", "click", "add_to_cart", "purchase"} <= actions


def test_action_weights():
    assert parse_weights("click=1, add_to_cart=2,purchase=4") == {
        "click": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
    for bad in ("click", "click=0", "click=x", "=2", ""):
        with pytest.raises(InputError):
            parse_weights(bad)
    # four pages A@1 + B or C @2; B is clicked once, C clicked once and bought once
    queries = [UbiQuery(f"q{i}", "tv") for i in range(4)]
    events = [UbiEvent("impression", f"q{i}", d, p) for i in range(4)
              for d, p in (("A", 1), ("BC"[i % 2], 2))]
    events += [UbiEvent("click", "q0", "B", 2), UbiEvent("click", "q1", "C", 2),
               UbiEvent("purchase", "q1", "C", 2)]
    sessions = sessions_of(queries, events)
    assert [r.value for r in sessions[1].results] == [0.0, 4.0]  # the strongest action
    # weighted: prior at 2 = (1 + 4) / 4; B = 1 / 2.5 -> grade 0, C = 4 / 2.5 -> grade 2
    weighted = {j.doc_id: j.grade for j in coec(sessions, min_impressions=1)}
    assert (weighted["B"], weighted["C"]) == (0, 2)
    # clicks alone cannot tell them apart
    clicks_only = {j.doc_id: j.grade for j in coec(sessions_of(queries, events, {"click": 1}),
                                                   min_impressions=1)}
    assert clicks_only["B"] == clicks_only["C"]


def test_read_ubi_keeps_the_shopper():
    sessions = sessions_of(*read_ndjson(UBI))
    assert all(isinstance(s, Session) for s in sessions)
    assert sum(s.client_id is not None for s in sessions) == len(sessions)
    assert isinstance(sessions[0].results[0], Shown)


# -- personal trees on top ------------------------------------------------------------------


def _matrix(seed: int = 0) -> FeatureMatrix:
    rng = np.random.default_rng(seed)
    rows, per = 600, 20
    values = rng.normal(size=(rows, 3)).astype(np.float32)
    shopper = rng.random(rows) < 0.6
    values[~shopper, 2] = np.nan
    grades = np.clip((values[:, 0] > 0) + np.where(shopper, 2 * (values[:, 2] > 0.5), 0), 0, 3)
    qids = tuple(str(i // per) for i in range(rows))
    return FeatureMatrix("s@x", ("a", "b", "p"), qids, tuple("q" + q for q in qids),
                         tuple(str(i) for i in range(rows)), tuple(int(g) for g in grades),
                         values)


def test_personal_trees_leave_an_anonymous_ranking_unchanged(tmp_path):
    matrix = _matrix()
    params = TrainParams(num_rounds=20)
    train(matrix, tmp_path / "base", params=params, search=False, exclude=["p"], device="cpu")
    base = ModelArtifact.load(tmp_path / "base")
    result = train(matrix, tmp_path / "pers", params=params, search=False, personal=["p"],
                   base=base, device="cpu")
    pers = ModelArtifact.load(tmp_path / "pers")
    assert pers.meta["personal"] == ["p"] and pers.meta["base_model"] == str(base.path)
    anonymous = matrix.values.copy()
    anonymous[:, 2] = np.nan
    shift = pers.predict(anonymous) - base.predict(anonymous)
    assert np.ptp(shift) < 1e-5  # one constant for every document: the same order
    assert np.abs(pers.predict(matrix.values) - base.predict(matrix.values)).max() > 0.1
    assert result.cv.mean > 0.8  # the personal feature carries most of the grade
    assert "p" in pers.booster.get_score(importance_type="weight")


def test_a_base_that_uses_a_personal_feature_is_refused(tmp_path):
    matrix = _matrix()
    train(matrix, tmp_path / "all", params=TrainParams(num_rounds=5), search=False,
          device="cpu")
    with pytest.raises(InputError, match=r"splits on personal feature\(s\) \['p'\]"):
        train(matrix, tmp_path / "pers", search=False, personal=["p"],
              base=ModelArtifact.load(tmp_path / "all"), device="cpu")
    with pytest.raises(InputError, match="personal feature 'zz'"):
        train(matrix, tmp_path / "x", search=False, personal=["zz"], device="cpu")
    assert not (tmp_path / "pers").exists() and not (tmp_path / "x").exists()


def test_a_base_trained_over_other_nearest_products_is_refused(tmp_path):
    from dataclasses import replace

    from esrank.catalogue.recall import Recall

    matrix = replace(_matrix(), recall=Recall(20))
    train(replace(matrix, recall=Recall(20, 50)), tmp_path / "base",
          params=TrainParams(num_rounds=5), search=False, exclude=["p"], device="cpu")
    with pytest.raises(InputError, match="with 50 nearest products, the table over 0"):
        train(matrix, tmp_path / "pers", search=False, personal=["p"],
              base=ModelArtifact.load(tmp_path / "base"), device="cpu")
    assert not (tmp_path / "pers").exists()
