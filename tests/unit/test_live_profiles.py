"""Live profiles (esrank.personal.live) against the batch build: the same events at the same
`now` give the same profile, whether folded at once, one by one as a sidecar receives them,
stored and continued, or split across two sidecars sharing the profile store."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest

from esrank.app import TtlCache
from esrank.catalogue.lookup import ProductFacts
from esrank.core.errors import EngineError
from esrank.core.settings import load_settings
from esrank.judgments.clicks import ACTION_WEIGHTS
from esrank.personal.live import LiveProfiles
from esrank.personal.shopper import (
    HALF_LIFE_DAYS,
    MAX_TRACKED_BRANDS,
    MIN_SPREAD,
    TOP_BRANDS,
    Profile,
    ProfileState,
    build_profiles,
)
from esrank.ubi.log import UbiEvent, UbiQuery

DAY = 86_400.0
NOW = 1_800_000_000.0
BRANDS = ("HP", "Canon", "Philips", "Sony", "Bose", "JBL", "Dell", "Asus")  # > TOP_BRANDS


def catalogue(n: int = 60) -> dict[str, ProductFacts]:
    """Products over BRANDS with prices from 5 to 2,000 euros (a few without brand/price)."""
    rng = random.Random(1)
    out = {f"d{i}": ProductFacts(BRANDS[i % len(BRANDS)], round(5 * 400 ** rng.random(), 2))
           for i in range(n)}
    out["nobrand"], out["noprice"] = ProductFacts(None, 30.0), ProductFacts("HP", None)
    return out


def stream(facts, users=("u1", "u2", "u3"), n: int = 300, seed: int = 7):
    """(queries, events) over 120 days, in time order: each action on a doc its query showed."""
    rng = random.Random(seed)
    docs = sorted(facts)
    queries, events = [], []
    for i, t in enumerate(sorted(NOW - rng.uniform(0, 120) * DAY for _ in range(n))):
        doc = rng.choice(docs)
        queries.append(UbiQuery(f"q{i}", "tv", hit_ids=(doc,)))
        events.append(UbiEvent(rng.choice(list(ACTION_WEIGHTS)), f"q{i}", doc, 1,
                               rng.choice(users), None, t))
    return queries, events


def reference(events, facts, now) -> dict[str, Profile]:
    """The batch formula written out directly (what build_profiles computed before it folded
    through ProfileState)."""
    brand_w = defaultdict(lambda: defaultdict(float))
    logp, count = defaultdict(list), defaultdict(int)
    for e in events:
        f = facts[e.doc_id]
        w = ACTION_WEIGHTS[e.action] * 0.5 ** (max(0.0, now - e.timestamp) / DAY
                                              / HALF_LIFE_DAYS)
        count[e.client_id] += 1
        if f.brand:
            brand_w[e.client_id][f.brand] += w
        if f.price:
            logp[e.client_id].append((math.log(f.price), w))
    out = {}
    for user in count:
        total = sum(brand_w[user].values())
        top = sorted(brand_w[user].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_BRANDS]
        wsum = sum(w for _, w in logp[user])
        mu = sum(x * w for x, w in logp[user]) / wsum
        sigma = math.sqrt(sum(w * (x - mu) ** 2 for x, w in logp[user]) / wsum)
        price = round(math.exp(mu), 2)
        out[user] = Profile(user, tuple((b, round(w / total, 4)) for b, w in top), price,
                            round(price * (math.exp(max(sigma, MIN_SPREAD)) - 1.0), 2),
                            count[user], now)
    return out


def assert_same(a: Profile, b: Profile) -> None:
    """Equal up to float rounding (a share or price may round the other way at its last
    digit)."""
    assert [x for x, _ in a.brands] == [x for x, _ in b.brands]
    assert [w for _, w in a.brands] == pytest.approx([w for _, w in b.brands], abs=1e-4)
    assert a.price == pytest.approx(b.price, abs=0.011)
    assert a.price_scale == pytest.approx(b.price_scale, abs=0.011)
    assert a.actions == b.actions


class Store:
    """The engine calls live profiles make: the catalogue's facts and the profile index."""

    def __init__(self, facts):
        self.facts, self.docs, self.fail = facts, {}, False

    def search(self, index, body):
        ids = body["query"]["ids"]["values"]
        return {"hits": {"hits": [{"_id": d, "_source": {"supplier": self.facts[d].brand,
                                                         "price": self.facts[d].price}}
                                  for d in ids if d in self.facts]}}

    def get_document(self, index, doc_id):
        return (self.docs[doc_id], {}) if doc_id in self.docs else None

    def get_documents(self, index, ids):
        if self.fail:
            raise EngineError("get documents", "down", target=index)
        return {i: self.docs[i] for i in ids if i in self.docs}

    def ensure_index(self, index, body):
        return False

    def bulk(self, index, docs):
        import json

        self.docs.update((i, json.loads(json.dumps(d))) for i, d in docs)  # as JSON does
        return []


class FakeApp:
    def __init__(self, store):
        self.engine, self.settings = store, load_settings(url="http://127.0.0.1:9")


def sidecar(store, ttl: float = 60.0, **kw) -> LiveProfiles:
    return LiveProfiles(FakeApp(store), TtlCache(ttl, 100), **kw)


def test_the_accumulator_is_the_batch_formula():
    facts = catalogue()
    queries, events = stream(facts)
    built, expected = build_profiles(queries, events, facts, now=NOW), reference(
        events, facts, NOW)
    assert set(built) == set(expected) == {"u1", "u2", "u3"}
    for user in built:
        assert_same(built[user], expected[user])
        assert len(built[user].brands) == TOP_BRANDS and built[user].price_scale > 0


@pytest.mark.parametrize("ttl", [60.0, 0.0])
def test_live_updates_equal_the_batch_build(ttl):
    """Events one request at a time (1..3 each), a write every ~40 events (the stored state
    read back, as another sidecar or a restart would), profiles read between: at the end,
    the batch build over the same events at the same `now`."""
    facts = catalogue()
    queries, events = stream(facts)
    store = Store(facts)
    live, rng, i = sidecar(store, ttl), random.Random(3), 0
    while i < len(events):
        chunk = events[i:i + rng.randint(1, 3)]
        live.record(chunk, chunk[-1].timestamp)
        i += len(chunk)
        if rng.random() < 0.05:
            live.store_pending(chunk[-1].timestamp)
        if ttl and rng.random() < 0.3:  # what a search reads meanwhile: the events so far
            so_far = build_profiles(queries, events[:i], facts, now=chunk[-1].timestamp)
            user = chunk[-1].client_id
            assert_same(live.profile(user), so_far[user])
    batch = build_profiles(queries, events, facts, now=NOW)
    for user, expected in batch.items():
        assert_same(live.profile(user), expected)  # before the last write
    live.store_pending(NOW)
    assert live.pending == 0
    restarted = sidecar(store)
    for user, expected in batch.items():
        assert_same(restarted.profile(user), expected)
        assert_same(Profile.from_dict(store.docs[user]), expected)


def test_two_sidecars_sharing_the_store_add_up():
    facts = catalogue()
    queries, events = stream(facts, n=120)
    store = Store(facts)
    a, b = sidecar(store), sidecar(store)
    for k, e in enumerate(events):
        (a if k % 3 else b).record([e], e.timestamp)
        if k % 10 == 9:
            a.store_pending(e.timestamp)
            b.store_pending(e.timestamp)
    a.store_pending(NOW)
    b.store_pending(NOW)
    for user, expected in build_profiles(queries, events, facts, now=NOW).items():
        assert_same(Profile.from_dict(store.docs[user]), expected)


def test_a_batch_built_profile_is_continued():
    facts = catalogue()
    queries, events = stream(facts, n=100)
    store = Store(facts)
    half = len(events) // 2
    mid = events[half].timestamp
    store.bulk("p", [(p.user_id, p.to_dict()) for p in build_profiles(
        queries, events[:half], facts, now=mid).values()])
    live = sidecar(store)
    live.record(events[half:], NOW)
    for user, expected in build_profiles(queries, events, facts, now=NOW).items():
        assert_same(live.profile(user), expected)


def test_bounds_and_failures():
    facts = {f"d{i}": ProductFacts(f"brand{i}", 10.0 + i) for i in range(40)}
    state = ProfileState()
    for i in range(40):  # more brands than tracked: the lightest go, their weight counted
        state.add(facts[f"d{i}"], 1.0 + i / 100, NOW)
    assert len(state.brands) == MAX_TRACKED_BRANDS
    top = state.profile("u", NOW).brands
    assert top[0] == ("brand39", round(1.39 / sum(1.0 + i / 100 for i in range(40)), 4))
    store = Store(facts)
    live = sidecar(store, max_pending=1)
    live.record([UbiEvent("click", "q", "d1", 1, "u1", None, NOW),
                 UbiEvent("click", "q", "d2", 1, "u2", None, NOW),
                 UbiEvent("click", "q", "unknown", 1, "u1", None, NOW),
                 UbiEvent("click", "q", "d3", 1, None, "s", NOW)], NOW)
    assert live.dropped == 1 and live.pending == 1  # u2: one shopper already waiting
    store.fail = True
    with pytest.raises(EngineError):
        live.store_pending(NOW)
    assert live.pending == 1 and live.profile("u1").brands == (("brand1", 1.0),)
    store.fail = False
    assert live.store_pending(NOW) == 1 and store.docs["u1"]["brands"][0]["term"] == "brand1"
