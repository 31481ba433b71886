"""The comparison page and its API: /compare, /compare/configs, /compare/runs,
/compare/query, /compare/queries, /compare/why."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import threading
from contextlib import contextmanager

from flask import Blueprint, Response, current_app, jsonify

from esrank.evaluation import page as pages
from esrank.evaluation.comparison import PAGE
from esrank.evaluation.runs import HISTORY_METRICS, run_history
from esrank.serve import requests as rq

bp = Blueprint("compare", __name__)
BUSY_RETRY = 3  # seconds a refused /compare/queries waits: about one comparison of the demo


def _sc():
    return current_app.extensions["esrank"]


@functools.cache
def _page() -> tuple[str, str]:
    """The page, and its Content-Security-Policy: its own inline script and style (by hash),
    requests to the sidecar, nothing else; no frame may show it."""
    html = PAGE.read_text()

    def hashes(tag: str) -> str:  # the browser hashes the text between the tags
        digests = (hashlib.sha256(block.encode()).digest()
                   for block in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL))
        return " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)

    return html, (f"default-src 'none'; script-src {hashes('script')}; style-src "
                  f"{hashes('style')}; connect-src 'self'; base-uri 'none'; "
                  "form-action 'none'; frame-ancestors 'none'")


@bp.get("/compare")
def page():
    html, policy = _page()
    return Response(html, mimetype="text/html", headers={"Content-Security-Policy": policy,
                                                         "X-Frame-Options": "DENY"})


@bp.get("/compare/configs")
def configs():
    return jsonify(pages.configurations(_sc().app))


@bp.get("/compare/runs")
def runs():
    return jsonify(metrics=list(HISTORY_METRICS), runs=run_history(_sc().app.engine))


@bp.post("/compare/query")
def query():
    sc = _sc()
    data = rq.body({"query": str, "configs": list}, {"size": int})
    text = sc.texts([data["query"]], "query")[0]
    names = rq.names(data["configs"], "configs")
    sides = pages.side_by_side(sc.app, text, names, rq.bounded(data, "size", 10, 1, 100))
    return jsonify(query=text, sides=[s.__dict__ for s in sides])


@bp.post("/compare/queries")
def queries():
    sc = _sc()
    data = rq.body({"a": str, "b": str}, {})
    a, b = rq.name(data, "a"), rq.name(data, "b")
    if sc.app.evaluator() is None:
        raise rq.ClientError(409, "no judgments configured (ESRANK_JUDGMENTS)")
    return jsonify(pages.query_deltas(sc.app, a, b, slot=_one_at_a_time(sc.comparing)))


@contextmanager
def _one_at_a_time(lock: threading.Lock):
    """Hold `lock` for one comparison; while another holds it, 503 with Retry-After."""
    if not lock.acquire(blocking=False):
        raise rq.ClientError(503, "another /compare/queries comparison is running (one at a "
                                  f"time); retry in {BUSY_RETRY} s",
                             {"Retry-After": str(BUSY_RETRY)})
    try:
        yield
    finally:
        lock.release()


@bp.post("/compare/why")
def why():
    sc = _sc()
    data = rq.body({"config": str, "query": str, "doc_id": str}, {})
    text = sc.texts([data["query"]], "query")[0]
    return jsonify(pages.why(sc.app, rq.name(data, "config"), text, rq.name(data, "doc_id",
                                                                     max_chars=512)))
