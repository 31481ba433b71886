"""A shopper simulator: people with hidden tastes who search through the sidecar, look at
the page, click, add to cart and buy. It exists to measure personalisation where no public
log has shoppers over this catalogue; it never touches the model code, only the sidecar's
HTTP API (`post`), so its events go through the real UBI path.

The assumptions (docs/personalisation.md lists them with their values):
- A shopper has one or two favourite brands, a preferred price (log-normal band around it)
  and interests: the queries where their brands have relevant products, which make 80% of
  their searches (the rest: any query); `preference(product)` in [0, 1] mixes brand and
  price, 0.6 brand + 0.4 price fit.
- What a product is worth to them: `utility = grade * (0.25 + 0.75 * preference)`, in 0..3,
  with `grade` the human judgment of (query, product) (unjudged: 0). A product nobody judged
  relevant stays worthless whatever the taste.
- They read the page top-down with position bias: rank r is examined with probability
  r ** -EXAMINE_DECAY; an examined product is clicked with probability
  0.02 + 0.9 * utility / 3; a click becomes a cart with probability 0.2 + 0.5 * preference,
  and a cart a purchase with probability 0.3 + 0.4 * grade / 3.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from esrank.catalogue.lookup import ProductFacts

EXAMINE_DECAY = 0.9  # P(examine rank r) = r ** -0.9
BRAND_SHARE = 0.6  # of preference; the rest is the price fit
INTEREST_SHARE = 0.8  # of a shopper's searches that come from their interests

Post = Callable[[str, dict], dict]  # (path, JSON body) -> JSON answer


@dataclass(frozen=True)
class SimShopper:
    user_id: str
    brands: tuple[str, ...]  # hidden favourite brands
    price: float  # hidden preferred price, euros
    spread: float  # width of their price band, in log(euros)
    interests: tuple[str, ...] = ()  # hidden categories: the queries they tend to issue

    def pick_query(self, queries: Sequence[str], rng: random.Random,
                   share: float = INTEREST_SHARE) -> str:
        """What they search next: one of their interests (`share` of the time), else any
        query."""
        if self.interests and rng.random() < share:
            return rng.choice(self.interests)
        return rng.choice(queries)

    def preference(self, facts: ProductFacts | None) -> float:
        if facts is None:
            return 0.0
        brand = 1.0 if facts.brand in self.brands else 0.0
        fit = 0.0
        if facts.price and facts.price > 0:
            z = (math.log(facts.price) - math.log(self.price)) / self.spread
            fit = math.exp(-0.5 * z * z)
        return BRAND_SHARE * brand + (1 - BRAND_SHARE) * fit


def utility(grade: int, preference: float) -> float:
    return grade * (0.25 + 0.75 * preference)


def make_shoppers(n: int, facts: Mapping[str, ProductFacts], judged: Mapping[str, dict],
                  *, prefix: str, seed: int) -> list[SimShopper]:
    """`n` shoppers whose favourite brands are drawn from the brands of relevant judged
    products (by how often they are relevant), whose interests are the queries where one of
    those brands has a relevant product, and whose price is the price of one of those
    products; `judged` is query -> {doc: grade}."""
    rng = random.Random(seed)
    relevant = [(q, d) for q, grades in judged.items() for d, g in grades.items()
                if g > 0 and d in facts]
    brands = [facts[d].brand for _, d in relevant if facts[d].brand]
    out = []
    for i in range(n):
        favourite = tuple(dict.fromkeys(rng.choice(brands) for _ in range(rng.choice((1, 2)))))
        theirs = [(q, d) for q, d in relevant if facts[d].brand in favourite]
        prices = [facts[d].price for _, d in theirs if facts[d].price]
        out.append(SimShopper(f"{prefix}{i}", favourite, rng.choice(prices),
                              rng.uniform(0.4, 0.9),
                              tuple(sorted({q for q, _ in theirs}))))
    return out


def browse(shopper: SimShopper, page: Sequence[str], grades: Mapping[str, int],
           facts: Mapping[str, ProductFacts], rng: random.Random
           ) -> list[tuple[str, str, int]]:
    """What the shopper does with a page of doc ids: (action, doc id, 1-based position)."""
    actions = []
    for rank, doc in enumerate(page, 1):
        if rng.random() >= rank ** -EXAMINE_DECAY:
            continue
        pref = shopper.preference(facts.get(doc))
        grade = grades.get(doc, 0)
        if rng.random() >= 0.02 + 0.9 * utility(grade, pref) / 3:
            continue
        actions.append(("click", doc, rank))
        if rng.random() < 0.2 + 0.5 * pref:
            actions.append(("add_to_cart", doc, rank))
            if rng.random() < 0.3 + 0.4 * grade / 3:
                actions.append(("purchase", doc, rank))
    return actions


def shop(post: Post, shopper: SimShopper, query: str, grades: Mapping[str, int],
         facts: Mapping[str, ProductFacts], rng: random.Random, *, model: str | None = None,
         anonymous: bool = False) -> dict:
    """One search through the sidecar and what the shopper did, sent to /events. Returns
    the search answer with the actions taken (`actions`)."""
    body: dict = {"query": query}
    if model:
        body["model"] = model
    if not anonymous:
        body["shopper"] = {"user_id": shopper.user_id}
    answer = post("/search", body)
    page = [h["doc_id"] for h in answer["hits"]]
    actions = browse(shopper, page, grades, facts, rng)
    if actions and "query_id" in answer:
        post("/events", {"events": [
            {"action": a, "query_id": answer["query_id"], "doc_id": d, "position": p,
             "user_id": shopper.user_id} for a, d, p in actions]})
    return {**answer, "actions": actions}


def utility_ndcg(shopper: SimShopper, page: Sequence[str], grades: Mapping[str, int],
                 facts: Mapping[str, ProductFacts], k: int = 10) -> float | None:
    """NDCG@k of a page with the shopper's utilities as gains (2^u - 1); the ideal orders
    every judged product of the query by utility. None when nothing is worth anything."""
    gains = {d: 2 ** utility(g, shopper.preference(facts.get(d))) - 1 for d, g in grades.items()}
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 1) for r, g in enumerate(ideal, 1))
    if idcg <= 0:
        return None
    dcg = sum(gains.get(d, 0.0) / math.log2(r + 1) for r, d in enumerate(page[:k], 1))
    return dcg / idcg
