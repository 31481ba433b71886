"""Online metrics per served model, from the UBI the sidecar records: what shoppers do with
the pages each model served, and a window compared with a baseline window.

A search counts in the window its UBI query's timestamp falls in, an event in the window its
own timestamp falls in; an event counts for the search it names (its `query_id`), only on a
doc that search showed (`shown_actions`). Per model (the `ranker` of the query's attributes):

- click-through at 10: searches with a click on one of their top 10 results / searches;
- add-to-cart rate, purchase rate: searches with that action on one of their results /
  searches;
- zero-result rate: searches that showed nothing / searches;
- latency: the sidecar's time to answer (`took_ms` of the query's attributes), mean, p50, p95.

The sidecar's Prometheus counters (esrank.serve.Metrics) count the same things as they
happen; `esrank monitor online` recomputes them from the engine's UBI indices.

>>> by_model = online_metrics(queries, events, since, until)      # doctest: +SKIP
>>> by_model["chorus-v7"].ctr_at_10                                # doctest: +SKIP
0.31
>>> [f.rate for f in compare_windows(by_model, baseline).flagged]  # doctest: +SKIP
['ctr@10']
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from esrank.core.errors import InputError
from esrank.core.stamps import utc
from esrank.engine import Engine
from esrank.evaluation.runs import push_online
from esrank.judgments.clicks import ACTION_WEIGHTS, shown_actions
from esrank.ubi.indices import fetch
from esrank.ubi.log import UbiEvent, UbiQuery, read_ndjson

CLICK_TOP = 10  # click-through counts clicks on the top 10 results
# rate -> (the action it counts, whether a higher rate is better)
RATES: dict[str, tuple[str | None, bool]] = {
    "ctr@10": ("click", True), "add_to_cart_rate": ("add_to_cart", True),
    "purchase_rate": ("purchase", True), "zero_result_rate": (None, False)}
ALPHA = 0.01  # a rate is flagged when worse with a two-sided p below this


@dataclass(frozen=True)
class OnlineMetrics:
    """One served model's searches in a window and what shoppers did with them: counts of
    searches, of searches with a click in the top 10, with an add to cart, with a purchase,
    with no result, and the sidecar's latency in ms (None: no search recorded it)."""

    model: str
    searches: int
    clicked: int
    carted: int
    purchased: int
    zero_results: int
    latency_ms: dict[str, float] | None = None  # mean, p50, p95

    def count(self, rate: str) -> int:
        """The numerator of `rate` (one of RATES)."""
        return {"ctr@10": self.clicked, "add_to_cart_rate": self.carted,
                "purchase_rate": self.purchased, "zero_result_rate": self.zero_results}[rate]

    def rate(self, rate: str) -> float | None:
        """`rate` (one of RATES) as a share of the searches; None without searches."""
        return self.count(rate) / self.searches if self.searches else None

    @property
    def ctr_at_10(self) -> float | None:
        return self.rate("ctr@10")

    def to_dict(self) -> dict:
        return {"searches": self.searches, "clicked": self.clicked, "carted": self.carted,
                "purchased": self.purchased, "zero_results": self.zero_results,
                **{r: self.rate(r) for r in RATES}, "latency_ms": self.latency_ms}


def online_metrics(queries: Iterable[UbiQuery], events: Iterable[UbiEvent],
                   since: float | None = None, until: float | None = None
                   ) -> dict[str, OnlineMetrics]:
    """Served model -> its OnlineMetrics over the queries and events whose timestamp (epoch
    seconds) is in [since, until) (None: unbounded), models sorted by name.

    >>> q = [UbiQuery("q1", "tv", timestamp=5, attributes={"ranker": "m"}, hit_ids=("a",)),
    ...      UbiQuery("q2", "radio", timestamp=6, attributes={"ranker": "m"})]
    >>> online_metrics(q, [UbiEvent("click", "q1", "a", 1, timestamp=7)])["m"].ctr_at_10
    0.5
    """
    def inside(t: float) -> bool:
        return (since is None or t >= since) and (until is None or t < until)

    window = [q for q in queries if inside(q.timestamp)]
    events = [e for e in events if inside(e.timestamp)]
    impressions = _impressions(events)
    acted: dict[str, set[str]] = defaultdict(set)  # query id -> the actions counted
    rank_of = {q.query_id: {d: i for i, d in enumerate(q.hit_ids, 1)} for q in window}
    for e in shown_actions(window, events, ACTION_WEIGHTS):
        rank = rank_of.get(e.query_id, {}).get(e.doc_id) or impressions.get(
            (e.query_id, e.doc_id), e.position)
        if e.action != "click" or (rank is not None and rank <= CLICK_TOP):
            acted[e.query_id].add(e.action)
    by_model: dict[str, list[UbiQuery]] = defaultdict(list)
    for q in window:
        by_model[q.model].append(q)
    return {model: _metrics(model, searched, acted, impressions)
            for model, searched in sorted(by_model.items())}


def _impressions(events: Sequence[UbiEvent]) -> dict[tuple[str | None, str | None], int]:
    """(query id, doc id) -> the best position it was shown at, from the impressions."""
    out: dict[tuple[str | None, str | None], int] = {}
    for e in events:
        if e.action == "impression" and e.position is not None:
            key = (e.query_id, e.doc_id)
            out[key] = min(e.position, out.get(key, e.position))
    return out


def _metrics(model: str, searched: list[UbiQuery], acted: Mapping[str, set[str]],
             impressions: Mapping[tuple[str | None, str | None], int]) -> OnlineMetrics:
    shown = {q for q, _ in impressions}
    took = [float(t) for q in searched
            if isinstance(t := q.attributes.get("took_ms"), int | float)
            and not isinstance(t, bool)]
    latency = ({"mean": float(np.mean(took)), "p50": float(np.percentile(took, 50)),
                "p95": float(np.percentile(took, 95))} if took else None)
    return OnlineMetrics(
        model, len(searched),
        *(sum(action in acted.get(q.query_id, ()) for q in searched)
          for action in ("click", "add_to_cart", "purchase")),
        sum(not q.hit_ids and q.query_id not in shown for q in searched), latency)


@dataclass(frozen=True)
class RateChange:
    """One rate of one model, the window against the baseline: both rates, the two-sided
    p-value of a two-proportion z-test, and whether it is flagged (worse, p < alpha)."""

    model: str
    rate: str
    baseline: float
    current: float
    p_value: float
    flagged: bool

    def to_dict(self) -> dict:
        return {"model": self.model, "rate": self.rate, "baseline": self.baseline,
                "current": self.current, "delta": self.current - self.baseline,
                "p_value": self.p_value, "flagged": self.flagged}


@dataclass(frozen=True)
class WindowComparison:
    """Every rate of every model served in both windows; `only_current` / `only_baseline`:
    the models served in one window alone (nothing to compare)."""

    changes: tuple[RateChange, ...]
    only_current: tuple[str, ...] = ()
    only_baseline: tuple[str, ...] = ()

    @property
    def flagged(self) -> list[RateChange]:
        return [c for c in self.changes if c.flagged]

    def to_dict(self) -> dict:
        return {"changes": [c.to_dict() for c in self.changes],
                "flagged": [c.to_dict() for c in self.flagged],
                "only_current": list(self.only_current),
                "only_baseline": list(self.only_baseline)}


def compare_windows(current: Mapping[str, OnlineMetrics], baseline: Mapping[str, OnlineMetrics],
                    *, alpha: float = ALPHA) -> WindowComparison:
    """Each rate of each model in both windows against its baseline (two-proportion z-test);
    flagged when it moved the bad way (a lower click, cart or purchase rate, a higher
    zero-result rate) with p < `alpha`.

    >>> now = {"m": OnlineMetrics("m", 1000, 200, 50, 10, 5)}
    >>> before = {"m": OnlineMetrics("m", 1000, 300, 50, 10, 5)}
    >>> [c.rate for c in compare_windows(now, before).flagged]
    ['ctr@10']
    """
    changes = []
    for model in sorted(set(current) & set(baseline)):
        now, before = current[model], baseline[model]
        if not now.searches or not before.searches:
            continue
        for rate, (_, higher_better) in RATES.items():
            p = two_proportion_p(now.count(rate), now.searches, before.count(rate),
                                 before.searches)
            r_now, r_before = now.rate(rate), before.rate(rate)
            worse = r_now < r_before if higher_better else r_now > r_before
            changes.append(RateChange(model, rate, r_before, r_now, p, worse and p < alpha))
    return WindowComparison(tuple(changes), tuple(sorted(set(current) - set(baseline))),
                            tuple(sorted(set(baseline) - set(current))))


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """The two-sided p-value that x1/n1 and x2/n2 share one proportion (pooled z-test); 1.0
    when the pooled proportion is 0 or 1 (nothing varies).

    >>> round(two_proportion_p(45, 500, 60, 500), 3)
    0.122
    """
    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    return math.erfc(abs(x1 / n1 - x2 / n2) / spread / math.sqrt(2))


Window = tuple[float, float]  # [since, until) in epoch seconds


@dataclass(frozen=True)
class OnlineReport:
    """The online metrics per model in a window, and, with a baseline window, the baseline's
    and each rate's change (`esrank monitor online`)."""

    window: Window
    metrics: dict[str, OnlineMetrics]
    baseline_window: Window | None = None
    baseline: dict[str, OnlineMetrics] | None = None
    comparison: WindowComparison | None = None
    pushed: int = 0  # documents stored in esrank-online

    @property
    def flagged(self) -> list[RateChange]:
        return self.comparison.flagged if self.comparison is not None else []

    def documents(self) -> list[tuple[str, dict]]:
        """The window's metrics as esrank-online documents, one per model (id: model and
        window, so storing the same window again replaces them)."""
        since, until = (utc(at=t) for t in self.window)
        out = []
        for model, m in self.metrics.items():
            latency = {f"latency_{k}_ms": v for k, v in (m.latency_ms or {}).items()}
            doc = {"model": model, "since": since, "timestamp": until, **m.to_dict(),
                   **latency}
            del doc["latency_ms"]
            out.append((f"{model}|{since}|{until}", {k: v for k, v in doc.items()
                                                      if v is not None}))
        return out

    def to_dict(self) -> dict:
        def span(w: Window | None) -> dict | None:
            return None if w is None else {"since": utc(at=w[0]), "until": utc(at=w[1])}

        return {"window": span(self.window),
                "models": {m: v.to_dict() for m, v in self.metrics.items()},
                "baseline_window": span(self.baseline_window),
                "baseline": None if self.baseline is None else {
                    m: v.to_dict() for m, v in self.baseline.items()},
                "comparison": None if self.comparison is None else self.comparison.to_dict(),
                "pushed": self.pushed}


def online_report(engine: Engine, window: Window, baseline: Window | None = None, *,
                  path: Path | None = None, alpha: float = ALPHA, push: bool = False
                  ) -> OnlineReport:
    """The online metrics per model over `window` from the engine's UBI indices (or the UBI
    ndjson file `path`), compared with the `baseline` window when given; with `push`, the
    window's metrics stored in esrank-online (for the dashboards)."""
    spans = [window, *([baseline] if baseline else [])]
    for since, until in spans:
        if not since < until:
            raise InputError(f"the window {utc(at=since)} .. {utc(at=until)} is empty: its "
                             "start must come before its end")
    queries, events = (read_ndjson(path) if path else fetch(
        engine, since=min(s for s, _ in spans), until=max(u for _, u in spans)))
    now = online_metrics(queries, events, *window)
    report = OnlineReport(window, now)
    if baseline is not None:
        before = online_metrics(queries, events, *baseline)
        report = OnlineReport(window, now, baseline, before,
                              compare_windows(now, before, alpha=alpha))
    if push:
        report = replace(report, pushed=push_online(engine, report.documents()))
    return report


_AGO = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float) -> float:
    """A time as epoch seconds: a duration before `now` ("30m", "24h", "7d") or an ISO-8601
    date or time (UTC unless it names its offset).

    >>> parse_time("2h", now=10_000.0), parse_time("1970-01-01T01:00", now=0)
    (2800.0, 3600.0)
    """
    ago = _AGO.fullmatch(text.strip())
    if ago:
        return now - float(ago[1]) * _UNIT[ago[2]]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"time {text!r}: write a duration before now (30m, 24h, 7d) or an "
                         "ISO-8601 date or time (2026-12-01, 2026-12-01T08:00Z)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
