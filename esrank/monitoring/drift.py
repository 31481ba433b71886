"""Feature drift: the population stability index (PSI) of each feature between the pages a
model served in training (its reference bins, esrank.learn.reference) and a sample of live
traffic logged through the plugin.

    PSI = sum over bins of (live - ref) * ln(live / ref)

over the reference's quantile bins plus the missing bin, each share floored at EPSILON
(1e-4) so that an empty bin on either side counts as a small share instead of an infinite
log: a bin the reference never saw that takes 1% of live values adds
(0.01 - 0.0001) * ln(100) = 0.046. The usual reading: below 0.1 stable, 0.1-0.2 watch, 0.2
and above (ALERT) a shift worth acting on. A sample of n rows over B bins reads about
(B - 1) / n even without any shift (11 bins, 1,000 rows: ~0.01), so samples of a few hundred
rows and up are the useful ones.

The live sample is a set of queries (the ones the sidecar served lately, from the UBI
indices, or a file), each searched under the model as the sidecar serves it, logging the
features of its top `top` hits: the population the reference bins describe.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esrank.core.errors import InputError, ModelError
from esrank.learn.reference import Reference

log = logging.getLogger(__name__)

EPSILON = 1e-4  # the least share a bin counts with (see the module's docstring)
ALERT = 0.2
WATCH = 0.1


def psi(reference: Sequence[float], live: Sequence[float], epsilon: float = EPSILON) -> float:
    """The population stability index of two distributions over the same bins (shares),
    each share floored at `epsilon`.

    >>> round(psi([0.5, 0.5], [0.25, 0.75]), 4)
    0.2747
    """
    ref = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    now = np.maximum(np.asarray(live, dtype=np.float64), epsilon)
    if ref.shape != now.shape:
        raise InputError(f"PSI over {len(ref)} reference bins and {len(now)} live ones")
    return float(np.sum((now - ref) * np.log(now / ref)))


def level(value: float, alert: float = ALERT) -> str:
    """"alert" at or past `alert`, "watch" from WATCH (or half `alert`, when lower), else
    "ok"."""
    if value >= alert:
        return "alert"
    return "watch" if value >= min(WATCH, alert / 2) else "ok"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's PSI, and the shares it compares: each bin's, the missing share last."""

    feature: str
    psi: float
    level: str
    reference: tuple[float, ...]
    live: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"feature": self.feature, "psi": round(self.psi, 4), "level": self.level,
                "reference": [round(s, 4) for s in self.reference],
                "live": [round(s, 4) for s in self.live]}


def feature_drift(reference: Reference, names: Sequence[str], values: np.ndarray,
                  alert: float = ALERT) -> list[FeatureDrift]:
    """Each referenced feature's drift for live rows `values` (columns in `names`' order,
    NaN = missing), highest PSI first.

    >>> from esrank.learn.reference import FeatureBins
    >>> ref = Reference({"f": FeatureBins((1.0,), (0.5, 0.5), 0.0)}, 10, 1)
    >>> feature_drift(ref, ["f"], np.array([[0.0], [2.0], [2.0], [2.0]]))[0].level
    'alert'
    """
    out = []
    for name, bins in reference.features.items():
        if name not in names:
            raise ModelError(f"the reference bins name feature {name!r}, which the live rows "
                             f"lack ({', '.join(names)})")
        shares, missing = bins.shares_of(values[:, list(names).index(name)])
        ref, live = (*bins.shares, bins.missing), (*shares.tolist(), missing)
        value = psi(ref, live)
        out.append(FeatureDrift(name, value, level(value, alert), tuple(ref), tuple(live)))
    return sorted(out, key=lambda d: -d.psi)


@dataclass(frozen=True)
class DriftReport:
    """The drift of one model's features on one live sample."""

    model: str
    queries: int  # searched
    rows: int  # logged hits
    degraded: int  # searches the model did not serve (no features logged)
    alert: float
    features: tuple[FeatureDrift, ...]
    reference_rows: int

    @property
    def alerting(self) -> list[str]:
        return [d.feature for d in self.features if d.level == "alert"]

    @property
    def max_psi(self) -> float:
        return max((d.psi for d in self.features), default=0.0)

    def to_dict(self) -> dict:
        return {"model": self.model, "queries": self.queries, "rows": self.rows,
                "degraded": self.degraded, "reference_rows": self.reference_rows,
                "alert": self.alert, "max_psi": round(self.max_psi, 4),
                "alerting": self.alerting, "features": [d.to_dict() for d in self.features]}


def rows_of(logged: Iterable[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    """Logged hits (feature -> value; absent = missing) as rows in `names`' order."""
    rows = [[float(hit.get(n, math.nan)) for n in names] for hit in logged]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))


def read_queries(path: Path) -> list[str]:
    """A queries file: one query per line (blank lines skipped); InputError naming the file
    when it holds none."""
    try:
        queries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the queries ({exc})", source=str(path)) from exc
    if not queries:
        raise InputError("no queries in the file", source=str(path))
    return queries


def sample_queries(served: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """`n` of the queries served, drawn at random (as often as they were served, so frequent
    queries weigh as they do in traffic); all of them when there are fewer."""
    if len(served) <= n:
        return list(served)
    return random.Random(seed).sample(list(served), n)


class DriftWindow:
    """The sidecar's live sample: the features of the hits of a `share` of searches, per
    model, the last `rows` of them (a bounded deque each); thread-safe."""

    def __init__(self, share: float, rows: int, seed: int | None = None):
        self.share, self.rows = share, rows
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._logged: dict[str, deque[Mapping[str, float]]] = {}

    def sampled(self) -> bool:
        """Whether the next search logs its features (a `share` of them)."""
        return self.share > 0 and self._rng.random() < self.share

    def add(self, model: str, hits: Iterable[Mapping[str, float]]) -> None:
        with self._lock:
            self._logged.setdefault(model, deque(maxlen=self.rows)).extend(hits)

    def snapshot(self) -> dict[str, list[Mapping[str, float]]]:
        """Model -> its logged hits (a copy)."""
        with self._lock:
            return {m: list(d) for m, d in self._logged.items()}


def model_reference(app, model: str, table: Path | None = None) -> Reference:
    """The reference bins of the deployed model `model`: those of `table` (a training table)
    as the model's training artifact serves it when given, else those its meta.json stored
    (the registry keeps a copy from the deploy)."""
    from esrank.deploy.registry import entry
    from esrank.learn.table import read_table
    from esrank.learn.train import reference_bins

    deployed = entry(app.engine, app.settings.active_set).deployed(model)
    if table is None:
        stored = deployed.meta.get("reference")
        if stored is None:
            raise ModelError(f"model {model!r} stores no reference bins (trained before "
                             "esrank kept them, or by the distributed trainer): pass --table, "
                             "the table it was trained on")
        return Reference.from_dict(stored, f"the registry's record of {model}")
    matrix = read_table(table)
    if matrix.feature_set != deployed.feature_set:
        raise InputError(f"logged with {matrix.feature_set}, model {model} serves "
                         f"{deployed.feature_set}", source=str(table))
    return reference_bins(matrix, app.artifact(model),
                          deployed.meta.get("excluded_features") or ())


def live_rows(app, ranker, queries: Sequence[str], top: int) -> tuple[np.ndarray, int]:
    """Each query searched under `ranker` as the sidecar serves it, logging its top `top`
    hits' features through the plugin: (the rows, in the model's feature order; how many
    searches the model did not serve, which log nothing)."""
    from esrank.ranking.search import search

    encoder = app.query_encoder([ranker])
    logged: list[Mapping[str, float]] = []
    degraded = 0
    for query in queries:
        result = search(app.engine, app.settings.index, query, ranker, encoder, size=top,
                        features=True)
        if result.features is None:
            degraded += 1
            continue
        logged += [result.features[h.doc_id] for h in result.hits if h.doc_id in result.features]
    return rows_of(logged, ranker.model.feature_names), degraded


def served_queries(engine, since: float) -> list[str]:
    """The queries the sidecar served from `since` (seconds since the epoch) on, from UBI."""
    from esrank.ubi.indices import queries_in

    return [q.query for q in queries_in(engine, since)]


def check_drift(app, queries: Sequence[str], which: str = "active", *, alert: float = ALERT,
                table: Path | None = None) -> DriftReport:
    """The drift of model `which`'s features (the active one by default) on `queries`,
    against its reference bins (`model_reference`).

    >>> check_drift(app, ["usb cable", "toner"]).alerting          # doctest: +SKIP
    []
    """
    if not queries:
        raise InputError("no live queries to sample (none served in the window?): widen "
                         "--since or pass --queries")
    ranker = app.ranker(which)
    if ranker.model is None:
        raise InputError(f"{which!r} serves no model ({ranker.name}): no features to drift")
    reference = model_reference(app, ranker.model.name, table)
    values, degraded = live_rows(app, ranker, queries, reference.top)
    if len(values) == 0:
        raise InputError(f"no hit logged: the {len(queries)} queries found nothing, or the "
                         f"model did not serve them ({degraded} degraded)")
    drifts = feature_drift(reference, ranker.model.feature_names, values, alert)
    return DriftReport(ranker.model.name, len(queries), len(values), degraded, alert,
                       tuple(drifts), reference.rows)
