"""The sidecar: a Flask app that embeds text and runs the query-time pipeline.

`create_app()` loads the encoder once (into `app.extensions["esrank"]`) and starts one
dynamic batcher; every request shares both. Client mistakes get a 4xx with a JSON
`{"error": ...}`; a full encoder queue gets 503 with Retry-After; an engine that is down or
slow gets 502/504. The API is described in openapi.yaml (served at /openapi.json).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, g, jsonify, redirect, request
from werkzeug.exceptions import HTTPException

from esrank.config import Settings, load_settings
from esrank.engine.auth import redact
from esrank.errors import EngineError, EsrankError, NoCrossEncoderError, UnknownModelError
from esrank.serve.batcher import Batcher, QueueFullError

log = logging.getLogger(__name__)

SPEC = Path(__file__).with_name("openapi.yaml")
PAGE = Path(__file__).with_name("static") / "compare.html"
# the spec's `pattern: "\S"` as JSON Schema (ECMAScript) reads it: Python's \s also counts
# the control characters \x1c-\x1f and \x85 as space
NON_SPACE = re.compile("[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
                       "\u205f\u3000\ufeff]")


class ClientError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Sidecar:
    """What the app holds for its lifetime (one per process)."""

    settings: Settings
    encoder: Any
    batcher: Batcher
    metrics: Any
    engine: Any = None
    reranker: Any = None  # a CrossEncoder when settings.cross_encoder is set
    _evaluator: Any = None
    _artifacts: dict = field(default_factory=dict)

    def evaluator(self):
        """The judgments (settings.judgments) bound once, or None without them."""
        if self._evaluator is None and self.settings.judgments is not None:
            from esrank.evaluate import Evaluator
            from esrank.judgments import read_judgments

            self._evaluator = Evaluator(read_judgments(self.settings.judgments))
        return self._evaluator

    def artifact(self, model: str):
        """A deployed model's training artifact (for pred_contribs), loaded once."""
        from esrank.artifact import ModelArtifact
        from esrank.registry import entry

        if model not in self._artifacts:
            record = entry(self.get_engine(), self.settings.active_set)["models"].get(model)
            if not record or not record.get("artifact"):
                raise ClientError(404, f"no training artifact recorded for {model!r}")
            self._artifacts[model] = ModelArtifact.load(Path(record["artifact"]))
        return self._artifacts[model]

    def require_reranker(self, needed: bool) -> None:
        """NoCrossEncoderError (501) when a rerank stage is asked for and none is loaded."""
        if needed and self.reranker is None:
            raise NoCrossEncoderError()

    def get_engine(self):
        if self.engine is None:  # query-time calls wait seconds, not the CLI's 30
            self.engine = self.settings.connect(timeout=self.settings.serve.engine_timeout)
        return self.engine


class BatchedEncoder:
    """The encoder seen through the batcher, with the sidecar's timeout (for search())."""

    def __init__(self, batcher: Batcher, timeout: float):
        self.batcher, self.timeout = batcher, timeout
        self.dims = batcher.encoder.dims

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


def create_app(settings: Settings | None = None, *, encoder=None, engine=None,
               reranker=None) -> Flask:
    """The sidecar app; `encoder`/`engine` may be passed in (tests, embedding in a service).

    >>> app = create_app()                       # doctest: +SKIP
    >>> app.test_client().get("/healthz").json   # doctest: +SKIP
    {'status': 'ok'}
    """
    from esrank.encoder import load_encoder

    settings = settings or load_settings()
    cfg = settings.serve
    if encoder is None:
        encoder = load_encoder(settings.encoder_model, cfg.backend, settings.home / "models")
    metrics = Metrics()
    batcher = Batcher(encoder, max_batch=cfg.max_batch, max_wait_us=cfg.max_wait_us,
                      token_budget=cfg.token_budget, max_queue=cfg.max_queue,
                      max_queue_texts=cfg.max_queue_texts, cache_size=cfg.cache_size,
                      on_batch=lambda n, _s: metrics.batch.observe(n))
    app = Flask("esrank")
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes  # larger bodies: 413, never read
    if reranker is None and settings.cross_encoder is not None:
        from esrank.rerank import load_cross_encoder

        reranker = load_cross_encoder(settings.cross_encoder, settings.home / "models")
    sidecar = Sidecar(settings, encoder, batcher, metrics, engine, reranker)
    app.extensions["esrank"] = sidecar
    log.info("sidecar ready: encoder %s, engine %s", encoder.name, redact(settings.engine_url))
    _routes(app, sidecar)
    return app


def _body(required: dict[str, type], optional: dict[str, type]) -> dict:
    """The request's JSON object, checked field by field (400 naming the field)."""
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(400, f"the body is not UTF-8 (byte {exc.start})") from exc
    if not request.is_json:
        raise ClientError(415, "send Content-Type: application/json")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"malformed JSON at line {exc.lineno} column {exc.colno}: "
                               f"{exc.msg}") from exc
    if not isinstance(body, dict):
        raise ClientError(400, "the body must be a JSON object")
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise ClientError(400, f"unknown field(s) {sorted(unknown)}; expected "
                               f"{sorted([*required, *optional])}")
    for name, kind in {**required, **optional}.items():
        if name not in body:
            if name in required:
                raise ClientError(400, f"field {name!r} is required")
            continue
        value = body[name]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise ClientError(400, f"field {name!r} must be {kind.__name__}, "
                                   f"got {type(value).__name__}")
    return body


def _texts(sidecar: Sidecar, texts: list, field: str = "texts") -> list[str]:
    cfg = sidecar.settings.serve
    if not texts:
        raise ClientError(400, f"field {field!r} must not be empty")
    if len(texts) > cfg.max_texts:
        raise ClientError(400, f"{len(texts)} texts; at most {cfg.max_texts} per request")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ClientError(400, f"{field}[{i}] must be a string, got {type(t).__name__}")
        if not NON_SPACE.search(t):
            raise ClientError(400, f"{field}[{i}] is empty (or only whitespace)")
        if len(t) > cfg.max_chars:
            raise ClientError(400, f"{field}[{i}] has {len(t)} characters; at most "
                                   f"{cfg.max_chars}")
    return texts


def _names(values: list, field: str, max_items: int = 8, max_chars: int = 200) -> list[str]:
    """Configuration (or model, doc) names: 1..max_items non-blank strings of at most
    max_chars (the spec's limits)."""
    if not values or len(values) > max_items:
        raise ClientError(400, f"field {field!r} must hold 1..{max_items} names, got "
                               f"{len(values)}")
    for i, value in enumerate(values):
        where = f"{field}[{i}]" if max_items > 1 else field
        if not isinstance(value, str) or not NON_SPACE.search(value):
            raise ClientError(400, f"{where} must be a non-blank string")
        if len(value) > max_chars:
            raise ClientError(400, f"{where} has {len(value)} characters; at most {max_chars}")
    return values


def _bounded(body: dict, field: str, default: int, low: int, high: int) -> int:
    """An integer field within the spec's bounds (rejected, never clamped)."""
    value = body.get(field, default)
    if not low <= value <= high:
        raise ClientError(400, f"field {field!r} must be {low}..{high}, got {value}")
    return value


COMPARE_COOKIE = "esrank_compare"


def _routes(app: Flask, sc: Sidecar) -> None:
    cfg = sc.settings.serve

    token = cfg.token.get_secret_value().encode() if cfg.token else None
    # the comparison page's cookie: a value derived from the token, not the token itself
    page_key = (hmac.new(token, b"esrank compare page", hashlib.sha256).hexdigest()
                if token else None)

    def _bearer_ok() -> bool:
        given = request.headers.get("Authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(
            given[len("Bearer "):].encode(), token)

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        if token is None or request.path == "/healthz" or _bearer_ok():
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

    @app.after_request
    def _count(response: Response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        sc.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        sc.metrics.latency.labels(endpoint).observe(time.perf_counter() - g.get(
            "started", time.perf_counter()))
        return response

    @app.errorhandler(ClientError)
    def _client(exc: ClientError):
        return jsonify(error=exc.message), exc.status, exc.headers

    @app.errorhandler(QueueFullError)
    def _full(exc: QueueFullError):
        return (jsonify(error=str(exc)), 503,
                {"Retry-After": str(max(1, round(exc.retry_after)))})

    @app.errorhandler(TimeoutError)
    def _timeout(exc: TimeoutError):
        return (jsonify(error="the encoder did not answer in time; retry later"), 504,
                {"Retry-After": "1"})

    @app.errorhandler(EngineError)
    def _engine(exc: EngineError):
        slow = "timed out" in exc.reason.lower() or "timeout" in exc.reason.lower()
        return jsonify(error=str(exc)), 504 if slow else 502

    @app.errorhandler(NoCrossEncoderError)
    def _no_cross_encoder(exc: NoCrossEncoderError):
        return jsonify(error=str(exc)), 501

    @app.errorhandler(UnknownModelError)
    def _unknown_model(exc: UnknownModelError):
        return jsonify(error=str(exc)), 404

    @app.errorhandler(EsrankError)
    def _esrank(exc: EsrankError):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        response = exc.get_response()  # keeps headers such as Allow on a 405
        response.set_data(json.dumps({"error": exc.description}))
        response.content_type = "application/json"
        return response

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        from esrank.registry import active_model

        state: dict[str, Any] = {"encoder": sc.encoder.name, "dims": sc.encoder.dims,
                                 "backend": sc.encoder.name.split(":", 1)[0]}
        try:
            engine = sc.get_engine()
            engine.health()
            state["engine"] = "reachable"
            model = active_model(engine, sc.settings.active_set)
            state["active_model"] = model.name if model else None
        except EsrankError as exc:
            state["engine"] = f"unreachable: {exc}"
            return jsonify(ready=False, **state), 503
        return jsonify(ready=True, **state)

    @app.get("/metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        sc.metrics.queue.set(sc.batcher.depth)
        sc.metrics.cache_hits.set(sc.batcher.stats.cache_hits)
        return Response(generate_latest(sc.metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi():
        import yaml

        return jsonify(yaml.safe_load(SPEC.read_text()))

    @app.post("/embed")
    def embed():
        body = _body({"texts": list}, {})
        texts = _texts(sc, body["texts"])
        vectors = sc.batcher.encode(texts, timeout=cfg.embed_timeout)
        counts = sc.encoder.token_counts(texts)
        truncated = [i for i, n in enumerate(counts) if n >= sc.encoder.max_tokens]
        return jsonify(model=sc.encoder.name, dims=sc.encoder.dims,
                       vectors=np.round(vectors, 7).tolist(), truncated=truncated,
                       max_tokens=sc.encoder.max_tokens)

    @app.post("/search")
    def search_route():
        from esrank.search import parse_configuration, resolve_ranker, search

        body = _body({"query": str}, {"size": int, "model": str, "window": int,
                                      "features": bool, "rerank": int})
        query = _texts(sc, [body["query"]], "query")[0]
        size = _bounded(body, "size", 10, 1, 100)
        window = _bounded(body, "window", sc.settings.rescore_window, 1, 10_000)
        rerank = _bounded(body, "rerank", 0, 0, 100)
        model = _names([body.get("model", "active")], "model", 1)[0]
        parse_configuration(model)  # a malformed name is a 400 before any engine call
        sc.require_reranker(bool(rerank))
        engine = sc.get_engine()
        ranker = resolve_ranker(engine, sc.settings.active_set, model, window)
        ranker = replace(ranker, rerank=rerank or ranker.rerank)
        sc.require_reranker(bool(ranker.rerank))
        started = time.perf_counter()
        result = search(engine, sc.settings.index, query, ranker,
                        BatchedEncoder(sc.batcher, cfg.encode_timeout), size=size,
                        features=body.get("features", False), reranker=sc.reranker)
        if result.degraded:
            sc.metrics.degraded.inc()
        return jsonify(**result.to_dict(),
                       took_ms=round((time.perf_counter() - started) * 1000, 2))

    @app.post("/rerank")
    def rerank_route():
        body = _body({"query": str, "texts": list}, {})
        query = _texts(sc, [body["query"]], "query")[0]
        texts = _texts(sc, body["texts"])
        sc.require_reranker(True)
        scores = sc.reranker.score(query, texts)
        return jsonify(model=sc.reranker.name, scores=[round(float(x), 6) for x in scores])

    # -- the comparison page -----------------------------------------------------------------

    def _rankers(names: list[str]):
        from esrank.comparison import rankers
        from esrank.search import parse_configuration

        for name in names:  # a malformed name is a 400 before any engine call
            parse_configuration(name)
        found = rankers(sc.get_engine(), sc.settings.active_set, names,
                        sc.settings.rescore_window)
        if len(found) != len(names):
            raise ClientError(404, f"unknown configuration among {names}; see /compare/configs")
        sc.require_reranker(any(r.rerank for r in found))
        return found

    page = PAGE.read_text()

    @app.get("/compare")
    def compare_page():
        return Response(page, mimetype="text/html")

    @app.get("/compare/configs")
    def compare_configs():
        from esrank.comparison import BASELINES
        from esrank.registry import cv_text, entry, note, version_of

        doc = entry(sc.get_engine(), sc.settings.active_set)
        models = sorted(doc["models"], key=lambda m: (m != doc["active"],
                                                      -(version_of(m)[1] or 0)))
        reranked = ([f"{doc['active'] or 'bm25'}+rerank20"] if sc.reranker is not None else [])
        notes = {m: text for m in models if (text := note(doc["models"][m]))}
        return jsonify(configs=[*BASELINES, *models, *reranked], active=doc["active"],
                       notes=notes, cv={m: cv_text(doc["models"][m]) for m in models})

    @app.get("/compare/runs")
    def compare_runs():
        from esrank.results import HISTORY_METRICS, run_history

        return jsonify(metrics=list(HISTORY_METRICS), runs=run_history(sc.get_engine()))

    @app.post("/compare/query")
    def compare_query():
        from esrank.comparison import side_by_side

        body = _body({"query": str, "configs": list}, {"size": int})
        query = _texts(sc, [body["query"]], "query")[0]
        names = _names(body["configs"], "configs")
        size = _bounded(body, "size", 10, 1, 100)
        configs = _rankers(names)
        sides = side_by_side(sc.get_engine(), sc.settings.index, query, configs,
                             BatchedEncoder(sc.batcher, cfg.encode_timeout), sc.evaluator(),
                             size=size, reranker=sc.reranker)
        return jsonify(query=query, sides=[s.__dict__ for s in sides])

    @app.post("/compare/queries")
    def compare_queries():
        from esrank.comparison import query_deltas

        body = _body({"a": str, "b": str}, {})
        _names([body["a"]], "a", 1)
        _names([body["b"]], "b", 1)
        evaluator = sc.evaluator()
        if evaluator is None:
            raise ClientError(409, "no judgments configured (ESRANK_JUDGMENTS)")
        a, b = _rankers([body["a"], body["b"]])
        rows = query_deltas(sc.get_engine(), sc.settings.index, evaluator, a, b,
                            BatchedEncoder(sc.batcher, cfg.encode_timeout),
                            reranker=sc.reranker)
        return jsonify(a=a.label, b=b.label, metric="ndcg@10", queries=rows)

    @app.post("/compare/why")
    def compare_why():
        from esrank.comparison import why

        body = _body({"config": str, "query": str, "doc_id": str}, {})
        query = _texts(sc, [body["query"]], "query")[0]
        _names([body["doc_id"]], "doc_id", 1, 512)
        (ranker,) = _rankers(_names([body["config"]], "config", 1))
        if ranker.model is None:
            raise ClientError(400, f"{ranker.name} has no model to explain")
        try:
            answer = why(sc.get_engine(), sc.settings.index, query, ranker,
                         body["doc_id"], BatchedEncoder(sc.batcher, cfg.encode_timeout),
                         sc.artifact(ranker.name))
        except LookupError as exc:
            raise ClientError(404, str(exc)) from exc
        return jsonify(answer)
