"""Monitoring demonstrated on simulated shoppers (esrank.personal.sim): feature drift and the
online metrics flag a traffic shift and not a stable period. Writes
bench/results/monitoring.json.

    python bench/monitoring.py [--flavor elasticsearch] [--searches 600] [--seed 7]

Needs the Chorus catalogue indexed (make demo). Steps, on the local engine (--flavor):
1. a private feature set (feature_sets/chorus.yaml under the name driftbench<run>), the
   Chorus judgments logged over the BM25 top 20, a model trained (its reference bins in
   meta.json), deployed and made active for that set only;
2. three periods of simulated shoppers searching the live `products` alias through a sidecar
   of their own (every search sampled for the drift gauge) and acting on the pages:
   reference (seed S), stable (the same traffic, seed S+1) and shifted (`--shift-share` of
   the searches are brand names, a query mix the training never saw: the judged queries
   hold none, so the shoppers find nothing they value on those pages);
3. per period: `esrank monitor drift`'s check on a sample of the queries UBI recorded in it,
   the sidecar's esrank_feature_psi gauge, and `esrank monitor online`'s metrics from UBI
   (stable and shifted: against the reference period's window, rates flagged at p < 0.01);
4. what the drift sample costs: /search latency with ESRANK_SERVE__DRIFT_SAMPLE=1 against 0
   on the same queries (interleaved); each period's /metrics scrape time (`scrape_ms`, over
   the hits of its 600 sampled searches).
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from _chorus import FEATURE_SETS, JUDGMENTS, private_feature_set, remove_deployed
from _report import engine_options, result_path, write_result
from personalisation import catalogue_facts, judged_grades, poster
from sidecar import start_server

from esrank.app import App, load_encoder
from esrank.catalogue.recall import Recall
from esrank.core.settings import load_settings
from esrank.deploy.upload import deploy
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import read_judgments
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.train import TrainParams, train
from esrank.monitoring.drift import ALERT, check_drift, sample_queries
from esrank.monitoring.online import online_report
from esrank.personal.sim import make_shoppers, shop
from esrank.ubi.indices import queries_in

WINDOW = 20


def brand_queries(facts, judged: dict, n: int = 40) -> list[str]:
    """The `n` commonest brands of the catalogue, lower-cased, that no judged query names."""
    counts = collections.Counter(f.brand.lower() for f in facts.values() if f.brand)
    words = {w for q in judged for w in q.lower().split()}
    return [b for b, _ in counts.most_common() if b not in words and b not in judged][:n]


def trained_model(app: App, tmp: Path, run: str):
    """Log, train and deploy the bench's model under its private feature set: (set, model)."""
    engine = app.engine
    fs = private_feature_set(engine, load_feature_set(FEATURE_SETS / "chorus.yaml"),
                             f"driftbench{run}")
    logged = log_judgments(engine, app.settings.index, fs, read_judgments(JUDGMENTS),
                           app.encoder, recall=Recall(WINDOW), progress=False).matrix
    # without recency: its value moves at midnight (UTC)
    train(logged, tmp / "model", params=TrainParams(), search=False, exclude=["recency"])
    report = deploy(engine, app.settings.index, ModelArtifact.load(tmp / "model"), fs,
                    logged.docs_by_query(), query_params(fs.params, app.encoder))
    if not report.parity.passed:
        raise SystemExit(f"parity failed: {report.to_dict()}")
    return fs, report.model


def period(post, shoppers, searches: int, queries, brands, judged, facts, rng,
           shift: float) -> None:
    """`searches` searches by `shoppers` (a `shift` share of them brand names), each page
    acted on by its shopper (the events go to /events, as UBI)."""
    for _ in range(searches):
        shopper = rng.choice(shoppers)
        query = (rng.choice(brands) if rng.random() < shift
                 else shopper.pick_query(queries, rng))
        shop(post, shopper, query, judged.get(query, {}), facts, rng)


def online(engine, model: str, window, baseline) -> dict:
    """The model's online metrics over `window` from UBI (esrank.monitoring.online, what
    `esrank monitor online` reports) and, against the `baseline` window, the rates flagged."""
    report = online_report(engine, window, baseline)
    out = {"metrics": report.metrics[model].to_dict()}
    if baseline is not None:
        out["flagged"] = [f"{c.rate}: {c.baseline:.4f} -> {c.current:.4f} (p {c.p_value:.2g})"
                          for c in report.flagged if c.model == model]
    return out


def gauge(port: int) -> tuple[dict[str, float], float]:
    """The sidecar's esrank_feature_psi gauge (feature -> PSI), and the scrape's milliseconds
    (the PSI of every logged hit in the window is computed on it)."""
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        text = r.read().decode()
    took = round((time.perf_counter() - started) * 1000, 1)
    return {line.split('feature="')[1].split('"')[0]: round(float(line.rsplit(" ", 1)[1]), 4)
            for line in text.splitlines() if line.startswith("esrank_feature_psi{")}, took


def drift_cost(sidecar, queries: list[str], n: int, rng) -> dict:
    """/search's server-side time (took_ms) with every search sampled against none, the same
    queries interleaved, and one /metrics scrape over the full window."""
    off, on = (poster(start_server(sidecar(sample), threads=4)) for sample in (0.0, 1.0))
    times = {"off": [], "on": []}
    for _ in range(n):
        query = rng.choice(queries)
        for name, post in (("off", off), ("on", on)):
            times[name].append(post("/search", {"query": query})["took_ms"])

    def summary(xs):
        xs = sorted(xs)
        return {"p50_ms": round(statistics.median(xs), 2),
                "p95_ms": round(xs[int(0.95 * (len(xs) - 1))], 2),
                "mean_ms": round(statistics.fmean(xs), 2)}

    out = {"searches_each": n, "sample_0": summary(times["off"]),
           "sample_1": summary(times["on"])}
    out["p50_overhead_ms"] = round(out["sample_1"]["p50_ms"] - out["sample_0"]["p50_ms"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--searches", type=int, default=600, help="Searches per period.")
    ap.add_argument("--shoppers", type=int, default=100, help="Shoppers per period.")
    ap.add_argument("--shift-share", type=float, default=0.5,
                    help="Share of the shifted period's searches that are brand names.")
    ap.add_argument("--sample", type=int, default=300,
                    help="Queries per period `esrank monitor drift` samples.")
    ap.add_argument("--cost-searches", type=int, default=300,
                    help="Searches per setting when measuring what the drift sample costs.")
    ap.add_argument("--seed", type=int, default=7)
    engine_options(ap)
    ap.add_argument("--out", type=Path, help="Default: bench/results/monitoring"
                                             "[_elasticsearch].json.")
    args = ap.parse_args()
    started = time.monotonic()
    run = uuid.uuid4().hex[:6]
    tmp = Path(tempfile.mkdtemp(prefix="esrank-monitoring-"))
    settings = load_settings(url=args.url, flavor=args.flavor, rescore_window=WINDOW)
    app = App(settings)
    fs, model = trained_model(app, tmp, run)
    try:
        settings = settings.model_copy(update={"active_set": fs.name})
        app = App(settings, engine=app.engine, encoder=app.encoder)
        out = demonstrate(app, settings, model, args, run)
    finally:
        remove_deployed(app.engine, fs.name)
    out.update(model=model, seed=args.seed, engine=args.flavor,
               seconds=round(time.monotonic() - started, 1))
    write_result(out, args.out or result_path("monitoring", args))


def demonstrate(app: App, settings, model: str, args, run: str) -> dict:
    """The three periods, their drift and online figures, and the sample's cost."""
    from esrank.serve import create_app

    encoder = load_encoder(settings, cached=True)

    def sidecar(sample: float):
        serve = settings.serve.model_copy(update={"drift_sample": sample,
                                                  "drift_rows": 100_000})
        return create_app(settings.model_copy(update={"serve": serve}), encoder=encoder)

    judged, facts = judged_grades(), catalogue_facts()
    queries = sorted(judged)
    brands = brand_queries(facts, judged)
    periods, windows = {}, {}
    for i, (name, shift) in enumerate((("reference", 0.0), ("stable", 0.0),
                                       ("shifted", args.shift_share))):
        seed = args.seed + min(i, 1)  # the stable and shifted periods: another seed
        rng = random.Random(seed)
        shoppers = make_shoppers(args.shoppers, facts, judged, prefix=f"M{run}{name}-",
                                 seed=seed)
        port = start_server(sidecar(1.0), threads=8)
        begin = time.time()
        period(poster(port), shoppers, args.searches, queries, brands, judged, facts, rng,
               shift)
        time.sleep(1.5)  # the sidecar's UBI writer sends every 0.5 s
        windows[name] = (begin, time.time())
        users = {s.user_id for s in shoppers}
        served = [q.query for q in queries_in(app.engine, *windows[name]) if q.client_id in users]
        report = check_drift(app, sample_queries(served, args.sample, seed), model)
        psi_gauge, scrape_ms = gauge(port)
        periods[name] = {"shift_share": shift, "ubi_queries": len(served),
                         "drift": {k: v for k, v in report.to_dict().items()
                                   if k != "features"},
                         "psi": {d.feature: round(d.psi, 4) for d in report.features},
                         "top_feature": report.features[0].to_dict(),
                         "sidecar_gauge": psi_gauge, "scrape_ms": scrape_ms}
    for name, p in periods.items():
        p["online"] = online(app.engine, model, windows[name],
                             None if name == "reference" else windows["reference"])
    flagged = {n: p["drift"]["max_psi"] >= ALERT for n, p in periods.items()}
    online_flagged = {n: bool(p["online"].get("flagged")) for n, p in periods.items()
                      if n != "reference"}
    return {"periods": periods, "drift_flagged": flagged, "online_flagged": online_flagged,
            "alert": ALERT,
            "brand_queries": brands, "drift_sample_cost": drift_cost(
                sidecar, queries, args.cost_searches, random.Random(args.seed))}


if __name__ == "__main__":
    main()
