"""Operations routes: /healthz, /readyz, /metrics, /openapi.json."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify

from esrank.core.errors import EsrankError
from esrank.deploy.registry import entry

bp = Blueprint("health", __name__)
SPEC = Path(__file__).with_name("openapi.yaml")


def _sc():
    return current_app.extensions["esrank"]


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    sc = _sc()
    state = {"encoder": sc.encoder.name, "dims": sc.encoder.dims,
             "backend": sc.encoder.name.split(":", 1)[0]}
    try:
        sc.app.engine.health()
        doc = entry(sc.app.engine, sc.app.settings.active_set)
    except EsrankError as exc:
        return jsonify(ready=False, **state, engine=f"unreachable: {exc}"), 503
    return jsonify(ready=True, **state, engine="reachable", active_model=doc.active)


@bp.get("/metrics")
def metrics():
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    sc = _sc()
    sc.metrics.queue.set(sc.batcher.depth)
    sc.metrics.cache_hits.set(sc.batcher.stats.cache_hits)
    return Response(generate_latest(sc.metrics.registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi():
    import yaml

    return jsonify(yaml.safe_load(SPEC.read_text()))
