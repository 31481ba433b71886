"""The query-time routes: /embed, /search, /events, /rerank."""

from __future__ import annotations

import time
import uuid

import numpy as np
from flask import Blueprint, current_app, jsonify

from esrank.ranking.search import parse_configuration
from esrank.serve import requests as rq
from esrank.serve.drift import drift_logged
from esrank.serve.verify import verify
from esrank.ubi.indices import queries_by_id

bp = Blueprint("embed_search", __name__)


def _sc():
    return current_app.extensions["esrank"]


@bp.post("/embed")
def embed():
    sc = _sc()
    texts = sc.texts(rq.body({"texts": list}, {})["texts"])
    vectors = sc.batcher.encode(texts, timeout=sc.cfg.embed_timeout)
    counts = sc.encoder.token_counts(texts)
    return jsonify(model=sc.encoder.name, dims=sc.encoder.dims,
                   vectors=np.round(vectors, 7).tolist(),
                   truncated=[i for i, n in enumerate(counts) if n >= sc.encoder.max_tokens],
                   max_tokens=sc.encoder.max_tokens)


@bp.post("/search")
def search():
    sc = _sc()
    data = rq.body({"query": str}, {"size": int, "model": str, "window": int,
                                    "features": bool, "rerank": int, "shopper": dict,
                                    "show_requests": bool})
    query = sc.texts([data["query"]], "query")[0]
    size = rq.bounded(data, "size", 10, 1, 100)
    window = rq.bounded(data, "window", sc.app.window(), 1, 10_000)
    rerank = rq.bounded(data, "rerank", 0, 0, 100)
    model = rq.name(data, "model", "active")
    parse_configuration(model)  # a malformed name is a 400 before any engine call
    shopper = rq.shopper(data["shopper"]) if "shopper" in data else None
    sc.app.require_reranker(bool(rerank))
    started = time.perf_counter()
    query_id = uuid.uuid4().hex
    result, attributes = drift_logged(sc, query, data.get("model"), unit=query_id,
                                      size=size, window=window, rerank=rerank,
                                      features=data.get("features", False), shopper=shopper,
                                      requests=data.get("show_requests", False))
    took = round((time.perf_counter() - started) * 1000, 2)
    sc.count_search(result, took / 1000)
    recorded = sc.record_search(query_id, result, model, shopper, attributes | {"took_ms": took})
    return jsonify(**({"query_id": query_id} if recorded else {}), **result.to_dict(),
                   took_ms=took)


@bp.post("/events")
def events():
    sc = _sc()
    if sc.ubi is None:
        raise rq.ClientError(501, "UBI recording is off (ESRANK_SERVE__UBI=false)")
    recorded = rq.events(rq.body({"events": list}, {})["events"], time.time())
    verified, rejected = verify(recorded, sc.served,
                                lambda ids: queries_by_id(sc.app.engine, ids))
    sc.metrics.events_rejected.inc(len(rejected))
    sc.count_actions(verified)
    refused = [r.to_dict() for r in rejected]
    if not verified:  # well-formed, but nothing this sidecar can vouch for
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        return jsonify(error=f"no event accepted: events[{rejected[0].index}]: "
                             f"{rejected[0].reason}{more}", rejected=refused), 422
    accepted = sc.ubi.put(verified)
    if sc.app.live is not None:  # the shoppers' profiles, as the batch build will see them
        sc.app.live.record(verified[:accepted], time.time())
    return jsonify(accepted=accepted, dropped=len(verified) - accepted, rejected=refused), 202


@bp.post("/rerank")
def rerank():
    sc = _sc()
    data = rq.body({"query": str, "texts": list}, {})
    query, texts = sc.texts([data["query"]], "query")[0], sc.texts(data["texts"])
    sc.app.require_reranker(True)
    scores = sc.app.reranker.score(query, texts)
    return jsonify(model=sc.app.reranker.name, scores=[round(float(x), 6) for x in scores])
