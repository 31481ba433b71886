"""The comparison page and its API: /compare, /compare/configs, /compare/runs,
/compare/query, /compare/queries, /compare/why."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify

from esrank.results import HISTORY_METRICS
from esrank.serve import requests as rq

bp = Blueprint("compare", __name__)
PAGE = Path(__file__).with_name("static") / "compare.html"


def _sc():
    return current_app.extensions["esrank"]


@bp.get("/compare")
def page():
    return Response(PAGE.read_text(), mimetype="text/html")


@bp.get("/compare/configs")
def configs():
    return jsonify(_sc().app.configurations())


@bp.get("/compare/runs")
def runs():
    return jsonify(metrics=list(HISTORY_METRICS), runs=_sc().app.runs())


@bp.post("/compare/query")
def query():
    sc = _sc()
    data = rq.body({"query": str, "configs": list}, {"size": int})
    text = sc.texts([data["query"]], "query")[0]
    names = rq.names(data["configs"], "configs")
    sides = sc.app.side_by_side(text, names, rq.bounded(data, "size", 10, 1, 100))
    return jsonify(query=text, sides=[s.__dict__ for s in sides])


@bp.post("/compare/queries")
def queries():
    sc = _sc()
    data = rq.body({"a": str, "b": str}, {})
    a, b = rq.name(data, "a"), rq.name(data, "b")
    if sc.app.evaluator() is None:
        raise rq.ClientError(409, "no judgments configured (ESRANK_JUDGMENTS)")
    label_a, label_b, rows = sc.app.query_deltas(a, b)
    return jsonify(a=label_a, b=label_b, metric="ndcg@10", queries=rows)


@bp.post("/compare/why")
def why():
    sc = _sc()
    data = rq.body({"config": str, "query": str, "doc_id": str}, {})
    text = sc.texts([data["query"]], "query")[0]
    return jsonify(sc.app.why(rq.name(data, "config"), text, rq.name(data, "doc_id",
                                                                     max_chars=512)))
