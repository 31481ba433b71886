"""Personalisation on the real plugin, end to end: UBI events -> the engine's UBI indices ->
profiles -> shopper params -> personal features logged -> a model learned on top of the
non-personal one -> parity gate (anonymous and personalised) -> sltr rescore."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.chorus_slice import SLICE, write_slice_judgments
from support.cleanup import remove_deployed
from support.loops import Loop, log_loop, private_feature_set

from esrank import ubi
from esrank.catalogue.index import index_catalogue
from esrank.catalogue.lookup import product_facts
from esrank.deploy import registry, upload
from esrank.judgments.lists import Judgment, JudgmentList, read_judgments
from esrank.learn.train import TrainParams
from esrank.personal.shopper import (
    ShopperContext,
    build_profiles,
    load_profile,
    save_profiles,
    shopper_params,
)
from esrank.ranking.search import search

ROOT = Path(__file__).resolve().parent.parent.parent
FANS = {"fan-philips": "Philips", "fan-hp": "HP"}  # shopper -> the brand they buy


def _events(engine, alias, run: str) -> list[ubi.UbiEvent]:
    """Each fan clicked, carted and bought three of their brand's products a day ago."""
    now = time.time()
    out = []
    for user, brand in FANS.items():
        hits = engine.search(alias, {"size": 3, "query": {"term": {"supplier.keyword": brand}},
                                     "_source": False})["hits"]["hits"]
        for pos, hit in enumerate(hits, 1):
            for action in ("impression", "click", "add_to_cart", "purchase"):
                out.append(ubi.UbiEvent(action, f"{run}-{user}", hit["_id"], pos, user,
                                        f"s-{user}", now - 86_400))
    return out


@dataclass(frozen=True)
class Personal:
    """The personalisation chain: one table logged with the anonymous judgments and each
    fan's own (`loop`), the base and personal models trained on it, both deployed, neither
    active (`deployed`), the fans' shopper params, each judged doc's brand, the profiles."""

    loop: Loop
    deployed: dict[str, upload.DeployReport]  # "base", "personal"
    shoppers: dict[str, dict]
    brand_of: dict[str, str]
    profiles_index: str


@pytest.fixture(scope="module")
def personal(engine, encoder, slice_alias, tmp_path_factory) -> Personal:
    tmp = tmp_path_factory.mktemp("personal")
    run = uuid.uuid4().hex[:8]
    profiles_index = f"test-profiles-{run}"
    fs = private_feature_set(ROOT / "feature_sets" / "chorus_personal.yaml", "personal")
    # events through the engine's UBI indices, read back, turned into stored profiles
    events = _events(engine, slice_alias, run)
    ubi.store(engine, [ubi.UbiQuery(f"{run}-{u}", "speaker", u) for u in FANS], events)
    queries, stored = ubi.fetch(engine)
    mine = [e for e in stored if (e.query_id or "").startswith(run)]
    facts = product_facts(engine, slice_alias, {e.doc_id for e in mine if e.doc_id})
    save_profiles(engine, build_profiles(queries, mine, facts, now=time.time()).values(),
                  profiles_index)
    shoppers = {u: shopper_params(load_profile(engine, u, profiles_index), ShopperContext(u))
                for u in FANS}
    # anonymous judged pairs, and each fan's own grades: their brand is what they want
    judged = read_judgments(write_slice_judgments(tmp / "j.csv"))
    brand_of = {d: f.brand for d, f in product_facts(
        engine, slice_alias, {j.doc_id for j in judged}).items()}
    rows = list(judged)
    qid_shopper = {}
    for user, brand in FANS.items():
        for j in judged:
            qid = f"{j.qid}|{user}"
            qid_shopper[qid] = shoppers[user]
            grade = 3 if brand_of.get(j.doc_id) == brand else max(0, j.grade - 1)
            rows.append(Judgment(qid, j.query, j.doc_id, grade))
    chain = log_loop(engine, encoder, slice_alias, fs, JudgmentList(tuple(rows)), tmp,
                     shoppers=qid_shopper)
    params = TrainParams(num_rounds=30)
    personal_features = list(fs.personal_features)
    base = chain.trained(tmp / "base", params=params, exclude=personal_features,
                         device="cpu", candidates=["window+judged"])
    on_top = chain.trained(tmp / "personal", params=params, personal=personal_features,
                           device="cpu", candidates=["window+judged"], base=base.artifact)
    deployed = {name: model.deploy(engine, shoppers=list(shoppers.values()), activate=False)
                for name, model in (("base", base), ("personal", on_top))}
    yield Personal(base, deployed, shoppers, brand_of, profiles_index)
    remove_deployed(engine, fs.name, [profiles_index])


def _ranker(engine, personal, name):
    from esrank.ranking.search import Ranker

    model = registry.deployed_model(engine, personal.loop.feature_set.name,
                                    personal.deployed[name].model)
    return Ranker(model.name, model, window=20)


def test_profiles_come_from_the_ubi_events(personal):
    for user, brand in FANS.items():
        params = personal.shoppers[user]
        assert params["shopper_brands"][0] == {"term": brand, "weight": 1.0}
        assert params["shopper_price"] > 0 and params["shopper_price_scale"] > 0


def test_the_personal_model_passes_parity_personalised_and_anonymous(personal):
    for name in ("base", "personal"):
        parity = personal.deployed[name].parity
        assert parity.passed, parity.to_dict()
        # every logged doc replayed twice: anonymously and with a fan's params
        assert parity.docs == 2 * sum(len(d) for d in personal.loop.queries.values())
    logged = personal.loop.table
    col = logged.feature_names.index("shopper_brand")
    shopper_rows = [i for i, q in enumerate(logged.qids) if "|" in q]
    anonymous_rows = [i for i, q in enumerate(logged.qids) if "|" not in q]
    assert np.isnan(logged.values[anonymous_rows, col]).all()
    assert np.nanmax(logged.values[shopper_rows, col]) == pytest.approx(1.0)


def test_an_anonymous_shopper_gets_the_non_personal_ranking(engine, personal, encoder):
    base, pers = _ranker(engine, personal, "base"), _ranker(engine, personal, "personal")
    compared = 0
    for query in sorted(personal.loop.queries):
        a = search(engine, personal.loop.alias, query, base, encoder, size=20,
                   features=True)
        b = search(engine, personal.loop.alias, query, pers, encoder, size=20,
                   features=True)
        assert {h.doc_id for h in a.hits} == {h.doc_id for h in b.hits}
        if not a.hits:  # nothing in the slice matches
            continue
        # no personal feature computed, and every document moved by the same constant
        assert all(math.isnan(values[name]) for values in b.features.values()
                   for name in personal.loop.feature_set.personal_features)
        score_a = {h.doc_id: h.score for h in a.hits}
        shift = {round(h.score - score_a[h.doc_id], 4) for h in b.hits}
        assert len(shift) == 1, (query, shift, a.features, b.features)
        order = [h.doc_id for h in a.hits]
        assert sorted(order, key=lambda d: (-score_a[d], order.index(d))) == order
        compared += 1
    assert compared >= 30


def test_a_fan_sees_more_of_their_brand(engine, personal, encoder):
    base, pers = _ranker(engine, personal, "base"), _ranker(engine, personal, "personal")
    brand_of = personal.brand_of
    gained = 0
    for user, brand in FANS.items():
        for query in ("bluetooth speaker", "laptop bag", "headset"):
            shopper = personal.shoppers[user]
            a = search(engine, personal.loop.alias, query, base, encoder, size=10,
                       shopper=shopper)
            b = search(engine, personal.loop.alias, query, pers, encoder, size=10,
                       shopper=shopper)
            count = [sum(brand_of.get(h.doc_id) == brand or h.supplier == brand
                         for h in r.hits) for r in (a, b)]
            assert count[1] >= count[0], (user, query, count)
            gained += count[1] - count[0]
    assert gained > 0


def test_the_sidecar_records_searches_and_events_as_ubi(engine, personal, encoder,
                                                        engine_settings_factory):
    from esrank.serve import create_app

    app = create_app(engine_settings_factory(index=personal.loop.alias,
                                             active_set=personal.loop.feature_set.name,
                                             profiles_index=personal.profiles_index),
                     encoder=encoder)
    sc = app.extensions["esrank"]
    client = app.test_client()
    model = personal.deployed["personal"].model
    user = f"shopper-{uuid.uuid4().hex[:6]}"
    found = client.post("/search", json={"query": "bluetooth speaker", "model": model,
                                         "shopper": {"user_id": "fan-philips",
                                                     "session_id": user}})
    assert found.status_code == 200, found.json
    answer = found.json
    bought = answer["hits"][1]
    sent = client.post("/events", json={"events": [
        {"action": "click", "query_id": answer["query_id"], "doc_id": bought["doc_id"],
         "position": 2, "user_id": user},
        {"action": "purchase", "query_id": answer["query_id"], "doc_id": bought["doc_id"],
         "position": 2, "user_id": user}]})
    assert sent.status_code == 202 and sent.json == {"accepted": 2, "dropped": 0,
                                                     "rejected": []}
    assert client.post("/events", json={"events": [{"action": "click"}]}).status_code == 400
    assert sc.ubi.flush(10)
    queries, events = ubi.fetch(engine)
    [query] = [q for q in queries if q.query_id == answer["query_id"]]
    assert query.query == "bluetooth speaker" and query.session_id == user
    assert query.attributes["configuration"] == model
    # the shopper params it was served with: what training logs the features with
    assert query.attributes["shopper"] == personal.shoppers["fan-philips"]
    mine = [e for e in events if e.query_id == answer["query_id"]]
    shown = [e for e in mine if e.action == "impression"]
    assert [(e.doc_id, e.position) for e in shown] == [(h["doc_id"], h["rank"])
                                                       for h in answer["hits"]]
    assert {(e.action, e.doc_id, e.client_id) for e in mine if e.action != "impression"} == {
        ("click", bought["doc_id"], user), ("purchase", bought["doc_id"], user)}
    # and the events make the new shopper's profile
    facts = product_facts(engine, personal.loop.alias, [bought["doc_id"]])
    profile = build_profiles(queries, mine, facts, now=time.time())[user]
    assert profile.brands[0] == (bought["supplier"], 1.0)
    sc.ubi.close()
    # esrank's indices (UBI, profiles) keep a one-node cluster green: no unassigned replica
    assert engine.health()["status"] == "green"


def test_signals_are_partial_updates_a_feature_can_read(engine, alias, encoder):
    """On three products of the slice indexed for this test: signals change the index."""
    from esrank.core.feature_set import Feature, FeatureSet
    from esrank.judgments.clicks import Session, Shown
    from esrank.personal.signals import product_signals, write_signals

    index_catalogue(engine, alias, [SLICE], encoder, limit=3, progress=False)
    docs = [h["_id"] for h in engine.search(alias, {"size": 3, "_source": False,
                                                    "query": {"match_all": {}}})["hits"]["hits"]]
    before = {d: engine.get_document(alias, d)[0] for d in docs}
    sessions = [Session("1", "q", (Shown(docs[0], 1, 4.0), Shown(docs[1], 2, 0.0))),
                Session("2", "q", (Shown(docs[1], 1, 0.0), Shown(docs[0], 2, 1.0)))]
    signals = product_signals(sessions)
    assert write_signals(engine, alias, {**signals, "no-such-product": signals[docs[0]]}) == {
        "updated": 2, "not_in_index": 1}
    for d in docs[:2]:
        after = engine.get_document(alias, d)[0]
        assert after["signals"]["ctr"] == pytest.approx(signals[d].ctr, abs=1e-5)
        # the vectors and the text are untouched
        assert {k: v for k, v in after.items() if k != "signals"} == before[d]
    ctr = FeatureSet(f"signals{uuid.uuid4().hex[:6]}", "", (), (Feature(
        "ctr", (), "mustache", {"function_score": {
            "query": {"match_all": {}}, "boost_mode": "replace",
            "field_value_factor": {"field": "signals.ctr", "missing": 1.0}}}),))
    engine.put_feature_set(ctr)
    logged = engine.log_features(alias, ctr, {}, docs)
    assert logged[docs[0]][0] == pytest.approx(signals[docs[0]].ctr, abs=1e-5)
    assert logged[docs[2]][0] == 1.0  # never shown: the prior's 1.0


def test_the_loop_ends_in_an_experiment(engine, personal, encoder, engine_settings_factory):
    """The fixture went events -> UBI -> profiles -> personal features -> models; here the
    sidecar interleaves the two models for a fan, records the teams, takes their clicks, and
    the report credits the team whose documents were clicked."""
    from esrank.core.settings import ExperimentSettings
    from esrank.judgments.clicks import sessions_of
    from esrank.personal.experiment import Experiment, report
    from esrank.serve import create_app

    base = personal.deployed["base"].model
    pers = personal.deployed["personal"].model
    name = f"exp-{uuid.uuid4().hex[:6]}"
    settings = engine_settings_factory(index=personal.loop.alias,
                                       active_set=personal.loop.feature_set.name,
                                       profiles_index=personal.profiles_index)
    settings = settings.model_copy(update={"serve": settings.serve.model_copy(update={
        "experiment": ExperimentSettings(name=name, control=base, treatment=pers)})})
    app = create_app(settings, encoder=encoder)
    client = app.test_client()
    served = []
    for query in ("bluetooth speaker", "laptop bag", "headset", "bluetooth speakers"):
        answer = client.post("/search", json={"query": query,
                                              "shopper": {"user_id": "fan-philips"}}).json
        assert answer["ranker"].startswith("interleave(")
        served.append(answer)
    # the fan clicks the treatment team's first doc on every page
    sc = app.extensions["esrank"]
    assert sc.ubi.flush(10)
    queries, _ = ubi.fetch(engine)
    teams = {q.query_id: q.attributes["teams"] for q in queries
             if q.attributes.get("experiment") == name}
    assert set(teams) == {a["query_id"] for a in served}
    for answer in served:
        page = [h["doc_id"] for h in answer["hits"]]
        assert sorted(page) == sorted(teams[answer["query_id"]])
        pick = next(d for d in page if teams[answer["query_id"]][d] == "B")
        client.post("/events", json={"events": [{
            "action": "click", "query_id": answer["query_id"], "doc_id": pick,
            "position": page.index(pick) + 1, "user_id": "fan-philips"}]})
    assert sc.ubi.flush(10)
    result = report(Experiment(name, base, pers), sessions_of(*ubi.fetch(engine)))
    assert result.wins == {"control": 0, "treatment": 4, "tie": 0}
    assert result.p_value == pytest.approx(0.125)  # 4 of 4: 2 / 2^4
    sc.ubi.close()


def test_a_cart_add_reaches_the_very_next_search(engine, personal, encoder,
                                                 engine_settings_factory):
    """Real-time profiles: a new shopper's first search has no personal feature computed;
    they add a product to the cart; the next search (no wait, nothing rebuilt) is served with
    that brand's affinity (shopper params, logged personal features, scores), and the profile
    reaches the store behind it, with the state another sidecar continues."""
    from esrank.serve import create_app

    settings = engine_settings_factory(index=personal.loop.alias,
                                       active_set=personal.loop.feature_set.name,
                                       profiles_index=personal.profiles_index)
    app = create_app(settings, encoder=encoder)
    sc, client = app.extensions["esrank"], app.test_client()
    user = f"live-{uuid.uuid4().hex[:6]}"
    body = {"query": "bluetooth speaker", "model": personal.deployed["personal"].model,
            "size": 10, "features": True, "shopper": {"user_id": user}}
    first = client.post("/search", json=body).json
    assert all("shopper_brand" not in v for v in first["features"].values())
    rank, hit = next((r, h) for r, h in enumerate(first["hits"], 1) if h["supplier"])
    sent = client.post("/events", json={"events": [{
        "action": "add_to_cart", "query_id": first["query_id"], "doc_id": hit["doc_id"],
        "position": rank, "user_id": user}]})
    assert sent.status_code == 202 and sent.json["accepted"] == 1
    second = client.post("/search", json=body).json
    brand = hit["supplier"]
    logged = {h["doc_id"]: second["features"][h["doc_id"]].get("shopper_brand")
              for h in second["hits"]}  # absent: the product's brand is not the shopper's
    assert logged[hit["doc_id"]] == pytest.approx(1.0)
    assert all((logged[h["doc_id"]] == pytest.approx(1.0)) == (h["supplier"] == brand)
               for h in second["hits"])
    before = {h["doc_id"]: h["score"] for h in first["hits"]}
    assert any(h["score"] != before.get(h["doc_id"]) for h in second["hits"])
    assert sc.ubi.flush(10)
    [served] = [q for q in ubi.fetch(engine)[0] if q.query_id == second["query_id"]]
    assert served.attributes["shopper"]["shopper_brands"] == [{"term": brand, "weight": 1.0}]
    assert sc.profiles.flush(10)
    stored = load_profile(engine, user, personal.profiles_index)
    assert stored.brands == ((brand, 1.0),) and stored.state.actions == 1
    # a clean stop stores what is still queued: a purchase posted just before it
    assert client.post("/events", json={"events": [{
        "action": "purchase", "query_id": second["query_id"],
        "doc_id": second["hits"][0]["doc_id"], "user_id": user}]}).status_code == 202
    assert sc.close(5)
    assert load_profile(engine, user, personal.profiles_index).state.actions == 2
