"""Query latency on the local engine: BM25 alone vs BM25 + sltr rescore vs the whole pipeline
through the sidecar, in one run. Writes bench/results/search_latency.json.

    python bench/search_latency.py [--window 100] [--repeats 3]

Needs the Chorus catalogue indexed and an active model (make demo does both). One client,
the 97 Chorus queries, each configuration in turn per query (so drift hits all alike); the
engine and each sidecar are reached over one kept-alive connection each:
- bm25: the first pass alone (engine time + HTTP);
- rescore: the same plus the active model as an sltr rescore of the top --window, the query
  vector computed beforehand (what the engine adds);
- sidecar: POST /search to the sidecar (embedding, BM25, rescore, JSON, and the UBI record of
  what it served), the end-to-end cost an application sees; sidecar_no_ubi: the same with UBI
  recording off (ESRANK_SERVE__UBI=false);
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
import http.client
import time
from pathlib import Path

import numpy as np
from _chorus import judged_queries
from _report import configured_encoder, connect_engine, engine_options, result_path, write_result
from sidecar import start_server, timed_post

from esrank.core.settings import load_settings
from esrank.deploy.registry import active_model
from esrank.features.params import query_params
from esrank.ranking.search import Ranker, ranked_request


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--index", default="products")
    ap.add_argument("--set", default="chorus")
    ap.add_argument("--window", type=int, default=100)
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
    model = active_model(engine, args.set)
    if model is None:
        raise SystemExit(f"no active model for {args.set!r}: run make demo first")
    encoder = configured_encoder()
    queries = judged_queries()
    params = dict(zip(queries, query_params(model.params, encoder)(queries), strict=True))
    bm25, rescore = Ranker("bm25", window=args.window), Ranker(model.name, model, args.window)
    settings = load_settings(url=args.url, flavor=args.flavor, index=args.index,
                             active_set=args.set, rescore_window=args.window)
    from esrank.serve import create_app

    port = start_server(create_app(settings, encoder=encoder), threads=8)
    no_ubi = settings.model_copy(update={"serve": settings.serve.model_copy(
        update={"ubi": False})})
    port_no_ubi = start_server(create_app(no_ubi, encoder=encoder), threads=8)
    timings: dict[str, list[float]] = {"bm25": [], "rescore": [], "sidecar": [],
                                       "sidecar_no_ubi": []}
    for q in queries:  # warm-up: caches, the compiled model, the query-embedding LRU
        engine.ranked(args.index, [ranked_request(q, rescore, params[q], 10)])
    for _ in range(args.repeats):
        for q in queries:
            for name, ranker in (("bm25", bm25), ("rescore", rescore)):
                started = time.perf_counter()
                engine.ranked(args.index, [ranked_request(q, ranker, params[q], 10)])
                timings[name].append((time.perf_counter() - started) * 1000)
            # the first repeat embeds every query; later ones hit the sidecar's LRU cache
            for name, at in (("sidecar", port), ("sidecar_no_ubi", port_no_ubi)):
                status, ms = post(at, "/search", {"query": q, "size": 10})
                if status != 200:
                    raise SystemExit(f"sidecar answered {status} for {q!r}")
                timings[name].append(ms)
    personal = active_model(engine, args.personal_set) if args.personal_set else None
    if personal is not None:
        timings.update(personal_rows(engine, args, queries, encoder))
    ce_model = active_model(engine, args.ce_set) if args.cross_encoder else None
    if args.cross_encoder and ce_model is None:
        raise SystemExit(f"no active model for {args.ce_set!r}: train and deploy one first "
                         "(docs/learning.md, 'A cross-encoder as a feature')")
    if ce_model is not None:
        timings.update(cross_encoder_rows(args, queries, encoder))
    result = {name: stats(ms) for name, ms in timings.items()}
    if personal is not None:
        result["personal_model"] = personal.name
        result["shopper_context_adds_p50_ms"] = {
            name: round(result[row]["p50_ms"] - result["personal_anonymous"]["p50_ms"], 2)
            for name, row in (("profile_cached", "personal_shopper"),
                              ("profile_read", "personal_shopper_profile_read"))}
    base = result["bm25"]["p50_ms"]
    result["p50_ratio_vs_bm25"] = {n: round(result[n]["p50_ms"] / base, 2)
                                   for n in ("rescore", "sidecar", "sidecar_no_ubi", *(
                                       r for r in timings if r.startswith("ce_")))}
    if ce_model is not None:
        result["ce_model"] = ce_model.name
        result["cross_encoder"] = str(args.cross_encoder)
    result.update({"model": model.name, "window": args.window, "queries": len(queries),
                   "repeats": args.repeats, "encoder": encoder.name,
                   "note": "sidecar: after the first repeat the query embedding comes from "
                           "its LRU cache; sidecar_uncached is the first repeat alone"})
    result["sidecar_uncached"] = stats(timings["sidecar"][:len(queries)])
    write_result(result, args.out or result_path("search_latency", args))


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
