"""Feature drift in /metrics: the sidecar logs the features of a sampled share of its searches
(ESRANK_SERVE__DRIFT_SAMPLE) into a bounded window per model, and each scrape computes
`esrank_feature_psi{model,feature}` against the model's reference bins with the PSI of
`esrank monitor drift` (esrank.monitoring.drift)."""

from __future__ import annotations

import logging
from dataclasses import replace

from esrank.core.errors import EsrankError
from esrank.learn.reference import Reference
from esrank.monitoring.drift import DriftWindow, feature_drift, rows_of

log = logging.getLogger(__name__)

MIN_ROWS = 100  # logged hits a model needs in the window before its PSI is exported


class DriftCollector:
    """The drift gauges, computed on scrape from `window`; a model's reference bins are read
    from the registry once (a model name is never reused)."""

    def __init__(self, window: DriftWindow, app):
        self.window, self.app = window, app
        self._references: dict[str, Reference | None] = {}

    def reference(self, model: str) -> Reference | None:
        if model not in self._references:
            from esrank.deploy.registry import entry

            record = entry(self.app.engine, self.app.settings.active_set).models.get(model)
            stored = record.meta.get("reference") if record else None
            self._references[model] = (Reference.from_dict(stored, f"registry: {model}")
                                       if stored else None)
        return self._references[model]

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        psi = GaugeMetricFamily("esrank_feature_psi", "Population stability index of a "
                                "feature: sampled live hits against the model's training "
                                "pages (0.2: alert)", labels=["model", "feature"])
        rows = GaugeMetricFamily("esrank_feature_drift_rows", "Logged hits in the drift "
                                 "window", labels=["model"])
        for model, hits in self.window.snapshot().items():
            rows.add_metric([model], len(hits))
            try:
                reference = self.reference(model) if len(hits) >= MIN_ROWS else None
            except EsrankError as exc:  # a scrape never fails on the registry
                log.warning("drift: no reference bins for %s (%s)", model, exc)
                reference = None
            if reference is not None:
                names = list(reference.features)
                for d in feature_drift(reference, names, rows_of(hits, names)):
                    psi.add_metric([model, d.feature], d.psi)
        yield psi
        yield rows


def watch_drift(sidecar) -> DriftWindow | None:
    """The sidecar's drift window, its gauges registered (None when the sample is 0: off)."""
    cfg = sidecar.cfg
    if cfg.drift_sample <= 0:
        return None
    window = DriftWindow(cfg.drift_sample, cfg.drift_rows)
    sidecar.metrics.registry.register(DriftCollector(window, sidecar.app))
    return window


def drift_logged(sidecar, query: str, which: str | None, *, features: bool, rerank: int,
                 **kwargs):
    """esrank.personal.serving.served_search (its keywords) for the sidecar, which on a
    sampled share of the searches the model orders alone (a rerank stage reorders the page)
    logs the hits' features into the drift window; the answer carries them only when asked."""
    from esrank.personal.serving import served_search

    drift = sidecar.drift
    sampled = drift is not None and not rerank and drift.sampled()
    result, attributes = served_search(sidecar.app, query, which, features=features or sampled,
                                       rerank=rerank, **kwargs)
    if sampled and result.features is not None:
        drift.add(result.ranker, result.features.values())
        result = result if features else replace(result, features=None)
    return result, attributes
