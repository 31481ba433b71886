"""Shoppers: what a request says about the person searching (`ShopperContext`), what their
behaviour says (`Profile`, built from UBI events and kept in an engine index), and the
`sltr` params both turn into, which personal features read at rescore time.

A profile holds the shopper's brand affinities (each brand's share of their recency-weighted
actions: clicks, carts, purchases) and price band (the weighted geometric mean of the prices
they acted on, and its spread). A feature set declares which of SHOPPER_PARAMS its features
use (`source: shopper`); a request that lacks one leaves those features uncomputed.

>>> profiles = build_profiles(queries, events, facts, now=time.time())  # doctest: +SKIP
>>> shopper_params(profiles["u1"], ShopperContext("u1"))           # doctest: +SKIP
{'shopper_brands': [{'term': 'HP', 'weight': 0.8}, ...], 'shopper_price': 42.0, ...}
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrank.catalogue.lookup import ProductFacts, product_facts
from esrank.core.errors import EngineError, InputError
from esrank.engine import Engine
from esrank.engine.cluster import SMALL_INDEX
from esrank.judgments.clicks import ACTION_WEIGHTS, shown_actions
from esrank.ubi.indices import load
from esrank.ubi.log import UbiEvent, UbiQuery

PROFILES_INDEX = "esrank-profiles"
TOP_BRANDS = 5  # brands a profile keeps
HALF_LIFE_DAYS = 30.0  # an action's weight halves every 30 days
MIN_SPREAD = 0.25  # the narrowest price band: +-25% around its centre (log scale)
MAX_BRANDS = 20  # brands a request may name
MAX_TRACKED_BRANDS = 25  # brands a profile's accumulator tracks (ProfileState)


@dataclass(frozen=True)
class ShopperContext:
    """What a request tells about its shopper: ids, and what the application knows now
    (brands on the page or in the cart, a price band the shopper chose: [low, high] in
    euros, kept in order; low == high is a single price)."""

    user_id: str | None = None
    session_id: str | None = None
    brands: tuple[str, ...] = ()
    price_band: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.brands) > MAX_BRANDS:
            raise InputError(f"shopper brands: at most {MAX_BRANDS}, got {len(self.brands)}")
        band = self.price_band
        if band is not None:
            if not (len(band) == 2 and all(math.isfinite(x) and x >= 0 for x in band)):
                raise InputError(f"shopper price band {list(band)}: expected [low, high] in "
                                 "euros, both >= 0")
            object.__setattr__(self, "price_band", (min(band), max(band)))

    @property
    def anonymous(self) -> bool:
        return self.user_id is None and not self.brands and self.price_band is None


@dataclass(frozen=True)
class Profile:
    """One shopper's preferences, from their behaviour."""

    user_id: str
    brands: tuple[tuple[str, float], ...]  # (brand, share of weighted actions), descending
    price: float | None  # centre of the price band, euros
    price_scale: float | None  # half-width of the band, euros
    actions: int  # actions it was built from
    updated: float  # seconds since the epoch
    # the sums it was read from, which live updates continue (None: a profile stored before
    # esrank kept them); never mutated once in a Profile
    state: ProfileState | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"user_id": self.user_id,
                "brands": [{"term": b, "weight": w} for b, w in self.brands],
                "price": self.price, "price_scale": self.price_scale,
                "actions": self.actions, "updated": self.updated,
                **({"state": self.state.to_dict()} if self.state is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        return cls(d["user_id"], tuple((b["term"], float(b["weight"])) for b in d["brands"]),
                   d.get("price"), d.get("price_scale"), int(d.get("actions", 0)),
                   float(d.get("updated", 0.0)),
                   ProfileState.from_dict(d["state"]) if d.get("state") else None)


class ProfileState:
    """A shopper's decayed sums, the one accumulator behind both the batch build and the
    sidecar's live updates (esrank.personal.live): O(tracked brands) work per action, never
    O(history).

    The sums are kept as of a reference time `ref` (the latest action): an action at `t`
    adds `weight * 0.5 ** ((ref - t) / half life)`, and a later action first rescales every
    sum by `0.5 ** (dt / half life)`. A profile only reads ratios of the sums (brand shares,
    the weighted mean and spread of log prices), so the decay from `ref` to any later `now`
    cancels: the profile at `now` is exactly the batch build's at `now`.

    At most `max_brands` brands are tracked: a new one past the bound evicts the lightest,
    whose weight stays in `brand_total` (the kept shares stay exact; an evicted brand that
    comes back starts again from its new actions).

    >>> state = ProfileState()
    >>> state.add(ProductFacts("HP", 40.0), 2.0, at=0.0)
    >>> state.profile("u1", now=0.0).brands
    (('HP', 1.0),)
    """

    def __init__(self, half_life_days: float = HALF_LIFE_DAYS,
                 weights: Mapping[str, float] = ACTION_WEIGHTS,
                 max_brands: int = MAX_TRACKED_BRANDS):
        self.half_life_days, self.weights = half_life_days, dict(weights)
        self.max_brands = max_brands
        self.ref = -math.inf  # no action yet
        self.brands: dict[str, float] = {}
        self.brand_total = 0.0
        self.w = self.s1 = self.s2 = 0.0  # sums of w, w * log(price), w * log(price) ** 2
        self.actions = 0

    def empty(self) -> ProfileState:
        """A state with no action and the same half life, weights and bound."""
        return ProfileState(self.half_life_days, self.weights, self.max_brands)

    def copy(self) -> ProfileState:
        out = self.empty()
        out.merge(self)
        return out

    def _rebase(self, at: float) -> float:
        """The factor an action at `at` counts with, moving `ref` to `at` when later."""
        if at <= self.ref:
            return 0.5 ** ((self.ref - at) / 86_400.0 / self.half_life_days)
        if self.actions:
            decay = 0.5 ** ((at - self.ref) / 86_400.0 / self.half_life_days)
            self.brands = {b: w * decay for b, w in self.brands.items()}
            self.brand_total *= decay
            self.w, self.s1, self.s2 = self.w * decay, self.s1 * decay, self.s2 * decay
        self.ref = at
        return 1.0

    def add(self, facts: ProductFacts, weight: float, at: float) -> None:
        """One action of `weight` at `at` (seconds since the epoch) on a product."""
        w = weight * self._rebase(at)
        self.actions += 1
        if facts.brand:
            self._add_brand(facts.brand, w)
        if facts.price and facts.price > 0:
            x = math.log(facts.price)
            self.w, self.s1, self.s2 = self.w + w, self.s1 + w * x, self.s2 + w * x * x

    def _add_brand(self, brand: str, w: float) -> None:
        self.brand_total += w
        if brand not in self.brands and len(self.brands) >= self.max_brands:
            del self.brands[min(self.brands, key=lambda b: (self.brands[b], b))]
        self.brands[brand] = self.brands.get(brand, 0.0) + w

    def merge(self, other: ProfileState) -> None:
        """Add another state's actions (same half life): the sums are additive."""
        if not other.actions:
            return
        decay = self._rebase(other.ref)  # other's sums, as of this state's ref
        for b, w in other.brands.items():
            self._add_brand(b, w * decay)
        # what other tracks is added above; what it evicted only counts toward the total
        self.brand_total += (other.brand_total - sum(other.brands.values())) * decay
        self.w += other.w * decay
        self.s1 += other.s1 * decay
        self.s2 += other.s2 * decay
        self.actions += other.actions

    def profile(self, user_id: str, now: float, top_brands: int = TOP_BRANDS) -> Profile:
        """The Profile these sums give (`now`: its `updated` time)."""
        top = sorted(self.brands.items(), key=lambda kv: (-kv[1], kv[0]))[:top_brands]
        brands = (tuple((b, round(w / self.brand_total, 4)) for b, w in top)
                  if self.brand_total > 0 else ())
        price = scale = None
        if self.w > 0:
            mu = self.s1 / self.w
            sigma = math.sqrt(max(0.0, self.s2 / self.w - mu * mu))
            price = round(math.exp(mu), 2)
            scale = round(price * (math.exp(max(sigma, MIN_SPREAD)) - 1.0), 2)
        return Profile(user_id, brands, price, scale, self.actions, now, self)

    def to_dict(self) -> dict:
        return {"ref": self.ref if self.actions else None, "half_life_days": self.half_life_days,
                "weights": self.weights, "brands": [[b, w] for b, w in self.brands.items()],
                "brand_total": self.brand_total, "w": self.w, "s1": self.s1, "s2": self.s2,
                "actions": self.actions}

    @classmethod
    def from_dict(cls, d: dict) -> ProfileState:
        out = cls(float(d["half_life_days"]), d["weights"])
        out.ref = -math.inf if d.get("ref") is None else float(d["ref"])
        out.brands = {str(b): float(w) for b, w in d["brands"]}
        out.brand_total, out.w, out.s1, out.s2 = (float(d[k]) for k in ("brand_total", "w",
                                                                        "s1", "s2"))
        out.actions = int(d["actions"])
        return out


def build_profiles(queries: Iterable[UbiQuery], events: Iterable[UbiEvent],
                   products: Mapping[str, ProductFacts], *, now: float,
                   weights: Mapping[str, float] = ACTION_WEIGHTS,
                   half_life_days: float = HALF_LIFE_DAYS, top_brands: int = TOP_BRANDS
                   ) -> dict[str, Profile]:
    """A profile per shopper (UBI `client_id`) from their actions on known products that
    their query showed (`esrank.judgments.clicks.shown_actions`: an impression, or the query's
    `query_response_hit_ids`; an action on any other doc is skipped and counted in the log).

    Each action weighs its `weights` entry (impressions and unknown actions: nothing) times
    0.5 ** (age / half life), an action after `now` counting as of `now`. A brand's affinity
    is its share of the shopper's weight (top `top_brands` kept); the price band is centred
    on the weighted geometric mean price, with a half-width from the weighted spread of log
    prices (at least MIN_SPREAD). The actions are folded in time order through
    `ProfileState`, as the sidecar folds them as they arrive.
    """
    states: dict[str, ProfileState] = {}
    for e in sorted(shown_actions(queries, events, weights), key=lambda e: e.timestamp):
        facts = products.get(e.doc_id)
        if e.client_id is None or facts is None:
            continue
        state = states.setdefault(e.client_id, ProfileState(half_life_days, weights))
        state.add(facts, weights[e.action], min(e.timestamp, now))
    return {user: state.profile(user, now, top_brands) for user, state in states.items()}


def shopper_params(profile: Profile | None, context: ShopperContext | None = None
                   ) -> dict[str, Any]:
    """The sltr shopper params for a request: the profile's, with what the context knows
    mixed in (its brands share half the affinity; its price band replaces the profile's).
    Empty for an anonymous shopper, so every personal feature stays uncomputed."""
    brands: dict[str, float] = dict(profile.brands) if profile else {}
    if context is not None and context.brands:
        share = 1.0 / len(context.brands)
        mix = 0.5 if brands else 1.0
        brands = {b: w * (1 - mix) for b, w in brands.items()}
        for b in context.brands:
            brands[b] = brands.get(b, 0.0) + share * mix
    params: dict[str, Any] = {}
    if brands:
        params["shopper_brands"] = [{"term": b, "weight": round(w, 4)} for b, w in
                                    sorted(brands.items(), key=lambda kv: (-kv[1], kv[0]))
                                    if w > 0]
    if context is not None and context.price_band is not None:
        low, high = context.price_band
        centre = (low + high) / 2
        params["shopper_price"] = centre
        # a single price: the narrowest band around it
        params["shopper_price_scale"] = ((high - low) / 2 if high > low else
                                         max(centre * (math.exp(MIN_SPREAD) - 1.0), 1.0))
    elif profile is not None and profile.price is not None and profile.price_scale:
        params["shopper_price"] = profile.price
        params["shopper_price_scale"] = profile.price_scale
    return params


# --------------------------------------------------------------------------- the profile store


def save_profiles(engine: Engine, profiles: Iterable[Profile],
                  index: str = PROFILES_INDEX, *, refresh: bool = True) -> int:
    """Write profiles (one document per shopper, replacing theirs); returns how many.
    Without `refresh` they are still read at once by id (a GET is realtime)."""
    engine.ensure_index(index, {"settings": SMALL_INDEX, "mappings": {
        "dynamic": False, "properties": {"user_id": {"type": "keyword"},
                                         "updated": {"type": "date", "format": "epoch_second"}}}})
    docs = [(p.user_id, p.to_dict()) for p in profiles]
    refused = engine.bulk(index, docs) if docs else []
    if refused:
        raise EngineError("save profiles", f"{len(refused)} refused, the first "
                          f"({refused[0][0]}): {refused[0][1]}", target=index)
    if refresh:
        engine.refresh(index)
    return len(docs)


def load_profile(engine: Engine, user_id: str, index: str = PROFILES_INDEX) -> Profile | None:
    """A shopper's stored profile; None when they (or the store) have none."""
    found = engine.get_document(index, user_id)
    return Profile.from_dict(found[0]) if found else None


def rebuild_profiles(app, log_path: Path | None = None, *,
                     weights: Mapping[str, float] | None = None,
                     half_life_days: float | None = None) -> dict:
    """Profiles from UBI events (an ndjson file, else the engine's UBI indices), with each
    product's brand and price read from the catalogue; stored in the profile index."""
    engine, index = app.engine, app.settings.profiles_index
    queries, events = load(engine, log_path)
    weights = weights or ACTION_WEIGHTS
    acted = {e.doc_id for e in events if e.doc_id and e.action in weights}
    facts = product_facts(engine, app.settings.index, acted)
    profiles = build_profiles(queries, events, facts, now=time.time(), weights=weights,
                              half_life_days=half_life_days or HALF_LIFE_DAYS)
    saved = save_profiles(engine, profiles.values(), index)
    return {"profiles": saved, "events": len(events), "products": len(facts),
            "unknown_products": len(acted) - len(facts), "index": index}
