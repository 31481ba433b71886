"""Behaviour signals per product from UBI sessions: popularity, click-through and conversion,
corrected for where the product was shown and pulled toward the average when it was seldom
seen, then written into the catalogue index as partial updates (no re-embedding), where
feature templates can read them (`signals.ctr`, `signals.conversion`, `signals.popularity`).

- ctr: clicks over expected clicks (COEC): each impression expects the log's click rate at
  its position; (clicks + PRIOR) / (expected + PRIOR), so 1.0 is "as clicked as its positions
  predict", and a product never shown is exactly 1.0, not 0;
- conversion: (purchases + PRIOR x the log's purchases per click) / (clicks + PRIOR);
- popularity: log(1 + the strongest action's weight on each page summed; click 1, cart 2,
  purchase 4).

>>> signals = product_signals(sessions_of(*fetch(engine)))        # doctest: +SKIP
>>> write_signals(engine, "products", signals)                     # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import EngineError
from esrank.engine import Engine
from esrank.judgments.clicks import ACTION_WEIGHTS, Session, logged_sessions, position_rates

PRIOR = 10.0  # pseudo-observations pulling a seldom-seen product toward the average
FIELD = "signals"
MAPPING = {"properties": {FIELD: {"properties": {
    "ctr": {"type": "float"}, "conversion": {"type": "float"},
    "popularity": {"type": "float"}, "impressions": {"type": "integer"}}}}}


@dataclass(frozen=True)
class ProductSignals:
    impressions: int
    clicks: int
    purchases: int
    ctr: float  # clicks over expected clicks, smoothed (1.0 = as expected)
    conversion: float  # purchases per click, smoothed
    popularity: float  # log(1 + weighted actions)

    def to_doc(self) -> dict:
        return {FIELD: {"ctr": round(self.ctr, 5), "conversion": round(self.conversion, 5),
                        "popularity": round(self.popularity, 5),
                        "impressions": self.impressions}}


def product_signals(sessions: Iterable[Session], *, prior: float = PRIOR,
                    weights: Mapping[str, float] = ACTION_WEIGHTS) -> dict[str, ProductSignals]:
    """Signals of every product the sessions showed (see the module docstring). A session's
    results carry their strongest action's weight (`Session`; from `sessions_of`, only
    actions on docs the query showed); a purchase is a weight of at least
    `weights["purchase"]`."""
    sessions = list(sessions)
    purchase = weights.get("purchase", 4.0)
    rate = position_rates(sessions, weighted=False)
    imps: dict[str, int] = defaultdict(int)
    clicks: dict[str, int] = defaultdict(int)
    bought: dict[str, int] = defaultdict(int)
    expected: dict[str, float] = defaultdict(float)
    weight: dict[str, float] = defaultdict(float)
    for s in sessions:
        for r in s.results:
            imps[r.doc_id] += 1
            expected[r.doc_id] += rate[r.position]
            clicks[r.doc_id] += r.clicked
            bought[r.doc_id] += r.value >= purchase
            weight[r.doc_id] += r.value
    total_clicks = sum(clicks.values())
    per_click = sum(bought.values()) / total_clicks if total_clicks else 0.0
    return {d: ProductSignals(imps[d], clicks[d], bought[d],
                              (clicks[d] + prior) / (expected[d] + prior),
                              (bought[d] + prior * per_click) / (clicks[d] + prior),
                              math.log1p(weight[d]))
            for d in imps}


def write_signals(engine: Engine, index: str, signals: Mapping[str, ProductSignals]) -> dict:
    """Merge each product's signals into its catalogue document (a partial update: vectors
    and text untouched). Products the index does not hold are counted, not written."""
    engine.put_mapping(index, MAPPING)
    refused = engine.bulk(index, [(d, s.to_doc()) for d, s in signals.items()], update=True)
    missing = [d for d, reason in refused if "document_missing" in reason]
    other = [(d, reason) for d, reason in refused if "document_missing" not in reason]
    if other:
        raise EngineError("write signals", f"{len(other)} refused, the first ({other[0][0]}): "
                          f"{other[0][1]}", target=index)
    engine.refresh(index)
    return {"updated": len(signals) - len(missing), "not_in_index": len(missing)}


def update_signals(app, log_path: Path | None = None, *, prior: float | None = None) -> dict:
    """Per-product popularity, CTR and conversion from a UBI log (default: the engine's UBI
    indices), merged into the catalogue's documents."""
    sessions = logged_sessions(app.engine, log_path)
    signals = product_signals(sessions, prior=PRIOR if prior is None else prior)
    written = write_signals(app.engine, app.settings.index, signals)
    return {"sessions": len(sessions), "products": len(signals), **written,
            "index": app.settings.index}
