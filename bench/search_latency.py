"""Query latency on the local engine: BM25 alone vs BM25 + sltr rescore vs the whole pipeline
through the sidecar, and the same for the recall stage (BM25 ∪ kNN), in one run. Writes
bench/results/search_latency.json.

    python bench/search_latency.py [--window 100] [--recall-knn 50] [--repeats 3]

Needs the Chorus catalogue indexed with its HNSW graph (make demo). The bench trains its own
two models, alike but for their candidates, so that the rows compare candidate sets and not
models (and a live set's active model, which changes, is left alone): it logs the Chorus
judgments over the BM25 top --window, and over that ∪ the kNN top --recall-knn (the recall
stage), each under a private feature set, trains each with the default params, deploys them,
and removes them at the end. One client, the 97 Chorus queries, each configuration in turn per
query (so drift hits all alike); the engine and each sidecar are reached over one kept-alive
connection each:
- bm25: the first pass alone (engine time + HTTP);
- rescore: the same plus the BM25-window model as an sltr rescore of the top --window, the
  query vector computed beforehand (what the engine adds);
- sidecar: POST /search to the sidecar (embedding, BM25, rescore, JSON, and the UBI record of
  what it served), the end-to-end cost an application sees; sidecar_no_ubi: the same with UBI
  recording off (ESRANK_SERVE__UBI=false);
- embed: the query encoder on one query (what a query's first search pays; the sidecar's LRU
  spares the later ones);
- bm25_window: the BM25 top --window, ids only (the recall msearch's first search);
- knn: the kNN search alone (top --recall-knn over the HNSW graph, the vector given);
- recall: the recall stage's msearch, BM25 top --window and kNN top --recall-knn;
- recall_rescore: the recall model's rescore of exactly the union's ids (found beforehand,
  params precomputed); rescore_bm25_ids: the same model over the BM25 top --window alone (the
  difference is what the kNN-only docs add); recall_two_step: the msearch, then the rescore
  of its union, as esrank serves it;
- hybrid: the one-request alternative: one first pass that unions both clauses, rescored
  over its top window + K (OpenSearch: `bool.should` of BM25 and the knn query, one search;
  Elasticsearch: the top-level `knn` beside the BM25 query, then the ranked search over its
  ids, which its cosine features read); hybrid_boosted: the same with the kNN clause boosted
  (KNN_BOOST) so that the K nearest lead its first pass; the JSON's `one_request` says which
  candidates each hands the rescore against the exact union;
- sidecar_recall: POST /search to a sidecar whose active model is the recall model
  (embedding, msearch, rescore of the union, JSON, UBI);
- personal (with --personal-set, whose active model has shopper features: bench/
  personalisation.py leaves one): POST /search to a sidecar over that set, anonymous and with
  a shopper whose profile it keeps (ESRANK_SERVE__PROFILE_REFRESH) or reads on every request
  (a GET on the profile index: a shopper's first search) and whose brands and price band it
  adds: what shopper context costs;
- cross-encoder (with --cross-encoder PATH and an active model of --ce-set, whose features
  read the cross-encoder's scores: feature_sets/chorus_ce.yaml): POST /search to a sidecar
  over that set for each of --ce-windows (the extra first pass, the cross-encoder over the
  window, the rescore), beside the plain sidecar reranking its top N with the same
  cross-encoder (`active+rerankN`): the cost of the cross-encoder as a feature against as a
  rerank stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _chorus import FEATURE_SETS, JUDGMENTS, judged_queries, private_feature_set, remove_deployed
from _report import configured_encoder, connect_engine, engine_options, result_path, write_result
from sidecar import start_server, timed_post

from esrank.catalogue.index import ID_FIELD, VECTOR_FIELD
from esrank.catalogue.query import bm25_query
from esrank.catalogue.recall import Recall, recall_bodies, retrieve
from esrank.core.settings import load_settings
from esrank.deploy.registry import ActiveModel, active_model
from esrank.deploy.upload import deploy
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import read_csv
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.train import train
from esrank.ranking.search import Ranker, ranked_request

Row = Callable[[str], float]  # one query's request, timed: query -> ms
IDS_ONLY = {"_source": False, "stored_fields": "_none_", "docvalue_fields": [ID_FIELD]}
RECALL_SET, BM25_SET = "latbench_recall", "latbench_bm25"  # the bench's private sets
HYBRID = {  # the one-request alternative, as each engine runs it
    "opensearch": "one search: bool.should of the BM25 query and the knn query (k {k}), the "
                  "sltr rescore over its top {n}+{k}",
    "elasticsearch": "the top-level knn (k {k}) beside the BM25 query, ids of its top {n}+{k}, "
                     "then the sltr rescore over them: the cosine features' knn filter reads "
                     "the scored ids, which no single request knows beforehand",
}
# hybrid_boosted: the kNN clause's boost, above any BM25 score over the lowest kNN score of a
# top K here, so the K nearest lead the first pass and the window holds the whole union
KNN_BOOST = 1000.0


def stats(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(np.mean(ms)), 2), "n": len(ms)}


_connections: dict[int, http.client.HTTPConnection] = {}


def post(port: int, path: str, body: dict) -> tuple[int, float]:
    """POST to a sidecar on one keep-alive connection per port, as an application's HTTP pool
    would (the engine rows reuse theirs too): (status, ms), no TCP connect timed after the
    first request."""
    return timed_post(_connections.setdefault(port, http.client.HTTPConnection(
        "127.0.0.1", port, timeout=60)), path, body)


def timed(call: Callable[[str], object]) -> Row:
    def row(query: str) -> float:
        started = time.perf_counter()
        call(query)
        return (time.perf_counter() - started) * 1000
    return row


def sidecar_row(port: int) -> Row:
    """POST /search of the query (size 10) to the sidecar on `port`."""
    def row(query: str) -> float:
        status, ms = post(port, "/search", {"query": query, "size": 10})
        if status != 200:
            raise SystemExit(f"sidecar answered {status} for {query!r}")
        return ms
    return row


def sidecar(args, encoder, active_set: str, model: str, **serve) -> int:
    """The port of a sidecar over `active_set` (`serve`: ServeSettings fields to change), once
    it answers a search (not one of the timed queries) with `model`, not degraded."""
    from esrank.serve import create_app

    settings = load_settings(url=args.url, flavor=args.flavor, index=args.index,
                             active_set=active_set, rescore_window=args.window)
    settings = settings.model_copy(update={"serve": settings.serve.model_copy(update=serve)})
    port = start_server(create_app(settings, encoder=encoder), threads=8)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/search", json.dumps({"query": "latency check", "size": 10}),
                 {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    conn.close()
    if answer.get("ranker") != model or answer.get("degraded"):
        raise SystemExit(f"the sidecar over {active_set} does not serve {model}: {answer}")
    return port


def prepared_model(engine, encoder, args, name: str, recall: Recall, out: Path,
                   made: list[str]) -> ActiveModel:
    """The Chorus judgments logged over `recall` under the private feature set `name`, a model
    trained on them with the default params (saved under `out`), deployed and activated;
    `name` joins `made` (remove_deployed takes it away)."""
    fs = private_feature_set(engine, load_feature_set(args.feature_set), name)
    table = log_judgments(engine, args.index, fs, read_csv(JUDGMENTS), encoder, recall=recall,
                          progress=False).matrix
    result = train(table, out / name, search=False, device="cpu")
    report = deploy(engine, args.index, ModelArtifact.load(result.artifact), fs,
                    table.docs_by_query(), query_params(fs.params, encoder))
    if not report.activated:
        raise SystemExit(f"{name}: the parity gate refused the model: {report.to_dict()}")
    made.append(name)
    return active_model(engine, name)


def hybrid_first_pass(engine, text: str, vector: Sequence[float], recall: Recall,
                      boost: float = 1.0) -> dict:
    """The one-request alternative's first pass, BM25 and the kNN top `recall.knn` in one
    search, a doc's scores adding up where both match (the kNN's times `boost`): OpenSearch
    `bool.should` of the two clauses; Elasticsearch the top-level `knn` beside the query (its
    hybrid search)."""
    knn = engine.dialect.knn_query(VECTOR_FIELD, [float(x) for x in vector], recall.knn)
    if engine.dialect.name == "elasticsearch":
        return {"query": bm25_query(text), "knn": {**knn["knn"], "boost": boost}}
    knn["knn"][VECTOR_FIELD]["boost"] = boost
    return {"query": {"bool": {"should": [bm25_query(text), knn]}}}


def hybrid_windows(engine, index: str, texts: Sequence[str], vectors, recall: Recall,
                   boost: float) -> list[list[str]]:
    """Per query, the ids of the hybrid first pass's top N+K: what its rescore scores."""
    bodies = [{"size": recall.bm25 + recall.knn, **IDS_ONLY,
               **hybrid_first_pass(engine, text, vector, recall, boost)}
              for text, vector in zip(texts, vectors, strict=True)]
    return [[h["fields"][ID_FIELD][0] for h in r["hits"]["hits"]]
            for r in engine.msearch(index, bodies)]


def hybrid_row(engine, index: str, ranker: Ranker, params: dict, vectors: dict,
               boost: float) -> Row:
    """The hybrid first pass rescored by the recall model over its top N+K: one search on
    OpenSearch; on Elasticsearch, whose cosine features read the scored docs' ids, the first
    pass (ids only), then the ranked search over them."""
    recall = ranker.recall
    if engine.needs_window(ranker.model.feature_set):
        def call(q: str) -> None:
            [ids] = hybrid_windows(engine, index, [q], [vectors[q]], recall, boost)
            engine.ranked(index, [ranked_request(q, ranker, params[q], 10, candidates=ids)])
        return timed(call)
    wide = dataclasses.replace(ranker, window=recall.bm25 + recall.knn)
    return timed(lambda q: engine.ranked(index, [dataclasses.replace(
        ranked_request(q, wide, params[q], 10),
        query=hybrid_first_pass(engine, q, vectors[q], recall, boost)["query"])]))


def recall_rows(engine, args, encoder, model: ActiveModel, queries: list[str]
                ) -> tuple[dict[str, Row], dict]:
    """The recall stage's rows for the recall model `model` (see the module's docstring), and
    per hybrid row the candidates it hands its rescore."""
    recall, index = model.recall, args.index
    vectors = dict(zip(queries, encoder.encode(queries), strict=True))
    params = dict(zip(queries, query_params(model.params, encoder)(queries), strict=True))
    found = dict(zip(queries, retrieve(engine, index, queries, recall,
                                       [vectors[q] for q in queries]), strict=True))
    ranker = Ranker(model.name, model, recall.bm25, knn=recall.knn)

    def rescored(q: str, ids: list[str]) -> None:
        engine.ranked(index, [ranked_request(q, ranker, params[q], 10, candidates=ids)])

    boosts = {"hybrid": 1.0, "hybrid_boosted": KNN_BOOST}
    rows = {
        "embed": timed(lambda q: encoder.encode([q])),
        "bm25_window": timed(lambda q: engine.msearch(index, recall_bodies(
            engine, [q], Recall(recall.bm25), [vectors[q]]))),
        "knn": timed(lambda q: engine.msearch(index, recall_bodies(
            engine, [q], Recall(0, recall.knn), [vectors[q]]))),
        "recall": timed(lambda q: engine.msearch(index, recall_bodies(
            engine, [q], recall, [vectors[q]]))),
        "recall_rescore": timed(lambda q: rescored(q, found[q].ids)),
        "rescore_bm25_ids": timed(lambda q: rescored(q, [d for d, _ in found[q].bm25])),
        "recall_two_step": timed(lambda q: rescored(q, retrieve(
            engine, index, [q], recall, [vectors[q]])[0].ids)),
        **{name: hybrid_row(engine, index, ranker, params, vectors, boost)
           for name, boost in boosts.items()},
        "sidecar_recall": sidecar_row(sidecar(args, encoder, RECALL_SET, model.name)),
    }
    return rows, {name: hybrid_candidates(engine, index, found, vectors, recall, boost)
                  for name, boost in boosts.items()}


def hybrid_candidates(engine, index: str, found: dict, vectors: dict, recall: Recall,
                      boost: float) -> dict:
    """What the hybrid first pass hands the rescore (its top N+K) against the exact union
    (BM25 top N ∪ kNN top K): the union's share it holds, averaged over the queries, how many
    of the kNN-only docs (in the kNN top K, not in the BM25 top N) it keeps, and how many docs
    outside the union it adds per query."""
    queries = list(found)
    windows = hybrid_windows(engine, index, queries, [vectors[q] for q in queries], recall,
                             boost)
    shares, outside, knn_only, kept = [], [], 0, 0
    for candidates, window in zip(found.values(), windows, strict=True):
        held, union = set(window), set(candidates.ids)
        only = {d for d, _ in candidates.knn} - {d for d, _ in candidates.bm25}
        shares.append(len(held & union) / len(union))
        outside.append(len(held - union))
        knn_only, kept = knn_only + len(only), kept + len(only & held)
    return {"union_share_in_window": round(float(np.mean(shares)), 4),
            "union_share_min": round(float(np.min(shares)), 4),
            "knn_only_docs": knn_only, "knn_only_kept": kept,
            "knn_only_kept_share": round(kept / knn_only, 4) if knn_only else None,
            "docs_outside_union_mean": round(float(np.mean(outside)), 1),
            "union_size_mean": round(float(np.mean([len(c.ids) for c in found.values()])), 1)}


def rescore_beside_knn(engine, index: str, query: str, vector, recall: Recall) -> str:
    """Whether the engine takes a rescore beside the hybrid first pass (a plain query rescore
    over its top N+K): "accepted", or its refusal."""
    from esrank.core.errors import EngineError

    body = {"size": 1, **IDS_ONLY, **hybrid_first_pass(engine, query, vector, recall),
            "rescore": {"window_size": recall.bm25 + recall.knn,
                        "query": {"rescore_query": {"match_all": {}}}}}
    try:
        engine.transport.request("rescore check", "POST", f"/{index}/_search", body=body)
    except EngineError as exc:
        return f"refused: {exc}"
    return "accepted"


def run_rows(rows: dict[str, Row], queries: list[str], repeats: int) -> dict[str, list[float]]:
    """Each row's ms per query and repeat, every row in turn per query. The warm-up (caches,
    the compiled models) runs the engine rows alone: a sidecar's first repeat embeds every
    query (its `_uncached` figure), later ones hit its LRU cache."""
    for q in queries:
        for name, row in rows.items():
            if not name.startswith("sidecar"):
                row(q)
    timings: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for q in queries:
            for name, row in rows.items():
                timings[name].append(row(q))
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--index", default="products")
    ap.add_argument("--set", default="chorus",
                    help="The feature set whose active model the cross-encoder rows rerank.")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--recall-knn", type=int, default=50,
                    help="K of the recall stage: the nearest products joined with the BM25 "
                         "top --window.")
    ap.add_argument("--feature-set", type=Path, default=FEATURE_SETS / "chorus.yaml",
                    help="The features of the models the bench trains itself.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--personal-set", default="chorus_personal",
                    help="A feature set with personal features and an active model ('' to "
                         "skip the personal rows).")
    ap.add_argument("--cross-encoder", type=Path,
                    help="A cross-encoder folder: adds the cross-encoder rows (see above).")
    ap.add_argument("--ce-set", default="chorus_ce",
                    help="The feature set whose active model reads cross-encoder scores.")
    ap.add_argument("--ce-windows", type=lambda v: [int(w) for w in v.split(",")],
                    default=[20, 100], help="Rescore windows of the cross-encoder rows.")
    ap.add_argument("--out", type=Path, help="Default: bench/results/search_latency[_FLAVOR].json.")
    args = ap.parse_args()

    engine = connect_engine(args)
    made: list[str] = []  # the private sets deployed, removed however the run ends
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(engine, args, configured_encoder(), Path(tmp), made)
    finally:
        for name in made:
            remove_deployed(engine, name)
    write_result(result, args.out or result_path("search_latency", args))


def measure(engine, args, encoder, tmp: Path, made: list[str]) -> dict:
    """Every row's figures, the ratios to BM25 and what the run measured."""
    queries = judged_queries()
    model = prepared_model(engine, encoder, args, BM25_SET, Recall(args.window), tmp, made)
    recall_model = prepared_model(engine, encoder, args, RECALL_SET,
                                  Recall(args.window, args.recall_knn), tmp, made)
    params = dict(zip(queries, query_params(model.params, encoder)(queries), strict=True))
    bm25, rescore = Ranker("bm25", window=args.window), Ranker(model.name, model, args.window)
    rows = {
        "bm25": timed(lambda q: engine.ranked(args.index, [ranked_request(q, bm25, None, 10)])),
        "rescore": timed(lambda q: engine.ranked(args.index, [ranked_request(
            q, rescore, params[q], 10)])),
        "sidecar": sidecar_row(sidecar(args, encoder, BM25_SET, model.name)),
        "sidecar_no_ubi": sidecar_row(sidecar(args, encoder, BM25_SET, model.name, ubi=False)),
    }
    extra, candidates = recall_rows(engine, args, encoder, recall_model, queries)
    timings = run_rows({**rows, **extra}, queries, args.repeats)
    optional, ran = optional_rows(engine, args, queries, encoder)
    timings.update(optional)
    result = {name: stats(ms) for name, ms in timings.items()}
    if "personal_anonymous" in result:
        result["shopper_context_adds_p50_ms"] = {
            name: round(result[row]["p50_ms"] - result["personal_anonymous"]["p50_ms"], 2)
            for name, row in (("profile_cached", "personal_shopper"),
                              ("profile_read", "personal_shopper_profile_read"))}
    base = result["bm25"]["p50_ms"]
    result["p50_ratio_vs_bm25"] = {n: round(result[n]["p50_ms"] / base, 2) for n in timings
                                   if n != "bm25" and not n.startswith("personal")}
    recall = recall_model.recall
    result["one_request"] = {
        "how": HYBRID[engine.dialect.name].format(n=recall.bm25, k=recall.knn),
        "rescore_beside_knn": rescore_beside_knn(engine, args.index, queries[0],
                                                 encoder.encode(queries[:1])[0], recall),
        "knn_boost": KNN_BOOST,
        "recall_plus_recall_rescore_p50_ms": round(
            result["recall"]["p50_ms"] + result["recall_rescore"]["p50_ms"], 2),
        "recall_two_step_p50_ms": result["recall_two_step"]["p50_ms"],
        **{name: {"p50_ms": result[name]["p50_ms"], "p99_ms": result[name]["p99_ms"], **c}
           for name, c in candidates.items()}}
    result.update({**ran, "model": model.name,
                   "recall_model": recall_model.name, "recall_set": recall.label,
                   "window": args.window, "queries": len(queries), "repeats": args.repeats,
                   "encoder": encoder.name, "cpus": os.cpu_count(),
                   "load_average_1_5_15m": [round(x, 2) for x in os.getloadavg()],
                   "note": "sidecar rows: after the first repeat the query embedding comes "
                           "from their LRU cache; *_uncached is the first repeat alone"})
    for name in ("sidecar", "sidecar_recall"):
        result[f"{name}_uncached"] = stats(timings[name][:len(queries)])
    return result


def optional_rows(engine, args, queries: list[str], encoder
                  ) -> tuple[dict[str, list[float]], dict]:
    """The personal and cross-encoder rows where asked for and possible, and their models."""
    timings: dict[str, list[float]] = {}
    ran: dict[str, str] = {}
    personal = active_model(engine, args.personal_set) if args.personal_set else None
    if personal is not None:
        timings.update(personal_rows(engine, args, queries, encoder))
        ran["personal_model"] = personal.name
    ce_model = active_model(engine, args.ce_set) if args.cross_encoder else None
    if args.cross_encoder and ce_model is None:
        raise SystemExit(f"no active model for {args.ce_set!r}: train and deploy one first "
                         "(docs/learning.md, 'A cross-encoder as a feature')")
    if ce_model is not None:
        timings.update(cross_encoder_rows(args, queries, encoder))
        ran.update(ce_model=ce_model.name, cross_encoder=str(args.cross_encoder))
    return timings, ran


def cross_encoder_rows(args, queries: list[str], encoder) -> dict[str, list[float]]:
    """POST /search over --ce-set with each of --ce-windows, and over --set reranking the
    same number of hits with the cross-encoder."""
    from esrank.serve import create_app

    out: dict[str, list[float]] = {}
    for window in args.ce_windows:
        settings = load_settings(url=args.url, flavor=args.flavor, index=args.index,
                                 active_set=args.ce_set, rescore_window=window,
                                 cross_encoder=args.cross_encoder)
        feature_port = start_server(create_app(settings, encoder=encoder), threads=8)
        rerank_port = start_server(create_app(settings.model_copy(update={
            "active_set": args.set, "rescore_window": args.window}), encoder=encoder),
            threads=8)
        rows = ((f"ce_feature_window{window}", feature_port, {}),
                (f"ce_rerank_top{window}", rerank_port, {"rerank": window}))
        for q in queries:  # warm-up
            for _, port, extra in rows:
                post(port, "/search", {"query": q, "size": 10, **extra})
        for _ in range(args.repeats):
            for q in queries:
                for name, port, extra in rows:
                    status, ms = post(port, "/search", {"query": q, "size": 10, **extra})
                    if status != 200:
                        raise SystemExit(f"sidecar answered {status} for {q!r} ({name})")
                    out.setdefault(name, []).append(ms)
    return out


def personal_rows(engine, args, queries: list[str], encoder) -> dict[str, list[float]]:
    """POST /search over the personal set, anonymous and as a shopper with a profile."""
    from esrank.personal.shopper import Profile, save_profiles
    from esrank.serve import create_app

    index = "esrank-profiles-latency"
    save_profiles(engine, [Profile("latency-shopper", (("HP", 0.6), ("Canon", 0.3),
                                                       ("Philips", 0.1)), 80.0, 40.0, 10,
                                   time.time())], index)
    settings = load_settings(url=args.url, flavor=args.flavor, index=args.index,
                             active_set=args.personal_set, rescore_window=args.window,
                             profiles_index=index)
    port = start_server(create_app(settings, encoder=encoder), threads=8)
    # the same, reading the profile on every request: a shopper's first search
    uncached = settings.model_copy(update={"serve": settings.serve.model_copy(
        update={"profile_refresh": 0.0})})
    port_read = start_server(create_app(uncached, encoder=encoder), threads=8)
    shopper = {"user_id": "latency-shopper", "brands": ["Logitech"], "price_band": [20, 200]}
    out: dict[str, list[float]] = {"personal_anonymous": [], "personal_shopper": [],
                                   "personal_shopper_profile_read": []}
    for q in queries:  # warm-up
        for p in (port, port_read):
            post(p, "/search", {"query": q, "size": 10, "shopper": shopper})
    for _ in range(args.repeats):
        for q in queries:
            for name, p, body in (
                    ("personal_anonymous", port, {"query": q, "size": 10}),
                    ("personal_shopper", port, {"query": q, "size": 10, "shopper": shopper}),
                    ("personal_shopper_profile_read", port_read,
                     {"query": q, "size": 10, "shopper": shopper})):
                status, ms = post(p, "/search", body)
                if status != 200:
                    raise SystemExit(f"sidecar answered {status} for {q!r}")
                out[name].append(ms)
    return out


if __name__ == "__main__":
    main()
