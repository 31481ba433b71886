"""The sidecar: a Flask app over the application layer (esrank.app), one per process.

`create_app()` loads the encoder once, starts one dynamic batcher and builds one `App` whose
encoder is the batched one; every request shares them (`app.extensions["esrank"]`). The
routes live in blueprints by concern: embed_search.py, compare.py, health.py; each validates
its request (requests.py), makes one call and answers JSON. Client mistakes get a 4xx with a
JSON `{"error": ...}`; a full encoder queue 503 with Retry-After; an engine that is down or
slow 502/504. The API is described in openapi.yaml (served at /openapi.json).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flask import Flask, Response, g, jsonify, redirect, request
from werkzeug.exceptions import HTTPException

from esrank.app import App, load_cross_encoder, load_encoder
from esrank.core.auth import redact
from esrank.core.errors import (
    EngineError,
    EngineTimeoutError,
    EsrankError,
    NoCrossEncoderError,
    NotFoundError,
)
from esrank.core.settings import Settings, load_settings
from esrank.monitoring.online import CLICK_TOP
from esrank.serve import requests as rq
from esrank.serve.batcher import Batcher, QueueFullError
from esrank.serve.drift import watch_drift
from esrank.serve.health import SPEC
from esrank.serve.profile_writer import ProfileWriter
from esrank.serve.requests import NON_SPACE, ClientError
from esrank.serve.ubi_writer import UbiWriter
from esrank.serve.verify import ServedQueries
from esrank.ubi.log import UbiEvent, UbiQuery

log = logging.getLogger(__name__)

COMPARE_COOKIE = "esrank_compare"
NOSNIFF = ("X-Content-Type-Options", "nosniff")  # on every answer: its type is what it says
__all__ = ["COMPARE_COOKIE", "NON_SPACE", "NOSNIFF", "SPEC", "ClientError", "create_app",
           "too_large"]


def too_large(limit: int) -> str:
    """The 413 message, the app's and waitress's (server.py) alike."""
    return f"the request body is over the limit of {limit:,} bytes (ESRANK_SERVE__MAX_BODY_BYTES)"


@dataclass
class Sidecar:
    """What the Flask app holds for its lifetime: the application, the raw encoder behind
    the batcher, the batcher, the metrics, the UBI writer and the searches it recorded (what
    /events verifies against)."""

    app: App
    encoder: Any
    batcher: Batcher
    metrics: Any
    ubi: UbiWriter | None = None
    served: ServedQueries = field(default_factory=ServedQueries)
    profiles: ProfileWriter | None = None  # stores the live profiles /events changed
    drift: Any = None  # esrank.monitoring.drift.DriftWindow, when sampling (serve/drift.py)
    # /compare/queries computes one comparison at a time (seconds each); a second one: 503
    comparing: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cfg(self):
        return self.app.settings.serve

    def record_search(self, query_id: str, result, model: str, shopper, served: dict) -> bool:
        """Queue the UBI query and impressions of a search served (False when UBI recording
        is off); `served`: how it was served (shopper params, experiment arm)."""
        if self.ubi is None:
            return False
        now = time.time()
        user = shopper.user_id if shopper else None
        session = shopper.session_id if shopper else None
        attributes = {"configuration": model, "ranker": result.ranker,
                      "degraded": result.degraded, **served}
        shown = tuple(h.doc_id for h in result.hits)
        self.served.add(query_id, shown, result.ranker)
        self.ubi.put([UbiQuery(query_id, result.query, user, session, now, attributes, shown),
                      *(UbiEvent("impression", query_id, h.doc_id, h.rank, user, session, now)
                        for h in result.hits)])
        return True

    def count_search(self, result, seconds: float) -> None:
        """A search served, in the per-model metrics (and the degraded count)."""
        m = self.metrics
        if result.degraded:
            m.degraded.inc()
        m.searches.labels(result.ranker).inc()
        m.search_seconds.labels(result.ranker).observe(seconds)
        if not result.hits:
            m.zero_results.labels(result.ranker).inc()

    def count_actions(self, events) -> None:
        """Accepted events in the per-model metrics: each search once per action, under the
        model that served it, a click only on one of its top 10 (monitoring.online's rates)."""
        for e in events:
            if e.action == "click" and e.doc_id not in (self.served.get(e.query_id)
                                                        or ())[:CLICK_TOP]:
                continue
            model = self.served.mark(e.query_id, e.action)
            if model is not None:
                self.metrics.acted.labels(model, e.action).inc()

    def close(self, timeout: float) -> bool:
        """Store what is still queued (UBI records, profile changes) within `timeout`
        seconds, then stop the writers; True when nothing was left unstored."""
        deadline = time.monotonic() + timeout
        drained = self.ubi is None or self.ubi.flush(timeout)
        if self.ubi is not None:
            self.ubi.close()
        if self.profiles is not None:
            drained &= self.profiles.close(max(0.0, deadline - time.monotonic()))
        return drained

    def texts(self, values: list, field: str = "texts") -> list[str]:
        return rq.texts(values, field, self.cfg.max_texts, self.cfg.max_chars)


class BatchedEncoder:
    """The encoder seen through the batcher, with the sidecar's timeout (for search())."""

    def __init__(self, batcher: Batcher, timeout: float):
        self.batcher, self.timeout = batcher, timeout
        inner = batcher.encoder
        self.name, self.dims, self.max_tokens, self.key = (inner.name, inner.dims,
                                                           inner.max_tokens, inner.key)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.batcher.encode(list(texts), timeout=self.timeout)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("esrank_requests", "HTTP requests", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("esrank_request_seconds", "Request latency", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.batch = Histogram("esrank_batch_size", "Texts per encoder batch",
                               registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.queue = Gauge("esrank_queue_depth", "Requests waiting for the encoder",
                           registry=self.registry)
        self.cache_hits = Gauge("esrank_cache_hits", "Query embeddings served from the cache",
                                registry=self.registry)
        self.degraded = Counter("esrank_degraded_searches", "Searches answered by BM25 because "
                                "the encoder or the model failed", registry=self.registry)
        self.ubi_dropped = Counter("esrank_ubi_dropped", "UBI records not stored (queue full "
                                   "or engine refused)", registry=self.registry)
        self.events_rejected = Counter("esrank_events_rejected", "/events events refused "
                                       "(unknown action, query not served, doc not shown)",
                                       registry=self.registry)
        # per served model (the ranker of the page): the online metrics' counts
        self.searches = Counter("esrank_searches", "Searches served", ["model"],
                                registry=self.registry)
        self.zero_results = Counter("esrank_zero_result_searches", "Searches that showed "
                                    "nothing", ["model"], registry=self.registry)
        self.search_seconds = Histogram("esrank_search_seconds", "Time to serve a search",
                                        ["model"], registry=self.registry,
                                        buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.acted = Counter("esrank_searches_acted", "Searches with a click in their top 10, "
                             "an add_to_cart or a purchase (/events; once per search and "
                             "action)", ["model", "action"], registry=self.registry)


def create_app(settings: Settings | None = None, *, encoder=None, engine=None,
               reranker=None) -> Flask:
    """The sidecar app; `encoder`/`engine`/`reranker` may be passed in (tests, embedding in a
    service).

    >>> app = create_app()                       # doctest: +SKIP
    >>> app.test_client().get("/healthz").json   # doctest: +SKIP
    {'status': 'ok'}
    """
    from esrank.serve import compare, embed_search, health

    settings = settings or load_settings()
    cfg = settings.serve
    if encoder is None:
        encoder = load_encoder(settings)
    # at start, not on the first search that needs it: a bad ESRANK_CROSS_ENCODER fails here
    reranker = reranker or load_cross_encoder(settings)
    metrics = Metrics()
    batcher = Batcher(encoder, max_batch=cfg.max_batch, max_wait_us=cfg.max_wait_us,
                      token_budget=cfg.token_budget, max_queue=cfg.max_queue,
                      max_queue_texts=cfg.max_queue_texts, cache_size=cfg.cache_size,
                      on_batch=lambda n, _s: metrics.batch.observe(n))
    application = App(settings, engine=engine, reranker=reranker,
                      encoder=BatchedEncoder(batcher, cfg.encode_timeout),
                      engine_timeout=cfg.engine_timeout,  # query time: seconds, not the CLI's 30
                      ranker_ttl=cfg.model_refresh, profile_ttl=cfg.profile_refresh,
                      deltas_ttl=cfg.compare_refresh,
                      live_profiles=cfg.ubi and cfg.live_profiles)
    app = Flask("esrank")
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes  # larger bodies: 413, never read
    writer = None
    if cfg.ubi:
        from esrank.ubi.indices import store

        writer = UbiWriter(lambda queries, events: store(application.engine, queries, events),
                           on_drop=metrics.ubi_dropped.inc)
    app.extensions["esrank"] = sidecar = Sidecar(application, encoder, batcher, metrics,
                                                 writer)
    if application.live is not None:
        sidecar.profiles = ProfileWriter(application.live)
    sidecar.drift = watch_drift(sidecar)
    _authenticate(app, cfg)
    _answers(app, sidecar)
    for blueprint in (embed_search.bp, compare.bp, health.bp):
        app.register_blueprint(blueprint)
    log.info("sidecar ready: encoder %s, cross-encoder %s, engine %s", encoder.name,
             reranker.name if reranker is not None else "none", redact(settings.engine_url))
    return app


def _authenticate(app: Flask, cfg) -> None:
    """With a token, every route but /healthz needs `Authorization: Bearer <token>`; the
    comparison page may instead carry the cookie /compare?token=... sets."""
    token = cfg.auth_token  # the CLI's bind guard asks the same property
    # the comparison page's cookie: a value derived from the token, not the token itself
    page_key = (hmac.new(token, b"esrank compare page", hashlib.sha256).hexdigest()
                if token is not None else None)

    def bearer_ok() -> bool:
        given = request.headers.get("Authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(
            given[len("Bearer "):].encode(), token)

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        if token is None or request.path == "/healthz" or bearer_ok():
            return None
        if request.path == "/compare" or request.path.startswith("/compare/"):
            # a browser cannot send a bearer header on page load: /compare?token=T sets an
            # HttpOnly, SameSite=Strict cookie the page's own API calls then carry
            cookie = request.cookies.get(COMPARE_COOKIE, "")
            if cookie and hmac.compare_digest(cookie.encode(), page_key.encode()):
                return None
            given = request.args.get("token", "")
            if request.path == "/compare" and given and hmac.compare_digest(given.encode(),
                                                                            token):
                response = redirect("/compare", code=303)  # the token leaves the address bar
                response.set_cookie(COMPARE_COOKIE, page_key, httponly=True, samesite="Strict",
                                    secure=request.is_secure, path="/compare")
                return response
        raise ClientError(401, "missing or wrong bearer token (the comparison page: "
                               "open /compare?token=...)", {"WWW-Authenticate": "Bearer"})


def _answers(app: Flask, sc: Sidecar) -> None:
    """Metrics per request, nosniff on every answer, and one JSON error answer per kind of
    failure."""

    @app.after_request
    def _count(response: Response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        sc.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        sc.metrics.latency.labels(endpoint).observe(time.perf_counter() - g.get(
            "started", time.perf_counter()))
        response.headers.setdefault(*NOSNIFF)
        return response

    def error(status: int, headers: dict | None = None):
        return lambda exc: (jsonify(error=getattr(exc, "message", None) or str(exc)), status,
                            headers or {})

    app.register_error_handler(413, lambda _exc: (
        jsonify(error=too_large(sc.cfg.max_body_bytes)), 413))
    app.register_error_handler(ClientError, lambda exc: (jsonify(error=exc.message),
                                                         exc.status, exc.headers))
    app.register_error_handler(QueueFullError, lambda exc: (
        jsonify(error=str(exc)), 503, {"Retry-After": str(max(1, round(exc.retry_after)))}))
    app.register_error_handler(TimeoutError, lambda exc: (
        jsonify(error="the encoder did not answer in time; retry later"), 504,
        {"Retry-After": "1"}))
    app.register_error_handler(EngineTimeoutError, error(504))
    app.register_error_handler(EngineError, error(502))
    app.register_error_handler(NoCrossEncoderError, error(501))
    app.register_error_handler(NotFoundError, error(404))
    app.register_error_handler(EsrankError, error(400))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        response = exc.get_response()  # keeps headers such as Allow on a 405
        response.set_data(json.dumps({"error": exc.description}))
        response.content_type = "application/json"
        return response
