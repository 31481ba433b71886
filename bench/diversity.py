"""Diversity on the page, on Chorus: NDCG@10 against intra-list diversity for a sweep of the
diversity stage's knobs (esrank.ranking.diversity), so a shop can pick its point.

On the live engine: the `products` index and the `chorus` feature set's active model, scored
on the human judgments (bench/_chorus.py JUDGMENTS), every configuration through
`esrank.evaluation.evaluate.evaluate` (what `esrank evaluate` runs: depth 100, both views).
For each configuration: the model without the stage, with +capN (N in 1, 2, 3), with +mmrL
(L in 0.9 .. 0.3), and BM25 for reference:
- NDCG@10 standard and condensed, judged@10;
- the page's diversity, mean over queries of the top 10 as `esrank search` shows it: its
  distinct brands (supplier) and the mean pairwise cosine distance of its products'
  `text_vector` (the vectors MMR reads);
- the cost: each query served by `esrank.ranking.search.rank` (the sidecar's and `esrank
  search`'s path), configurations interleaved query by query; median and p95 ms, and the
  median's ratio to the model without the stage.
Writes bench/results/diversity[_FLAVOR].json and (OpenSearch) docs/images/diversity.svg.
On an engine without an active `chorus` model, --artifact deploys one (e.g. the OpenSearch
demo's) through the parity gate under a private feature set, removed afterwards.

    python bench/diversity.py [--flavor elasticsearch] [--repeats 2] [--artifact DIR]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
from _chorus import FEATURE_SETS, JUDGMENTS, judged_queries, private_feature_set, remove_deployed
from _report import engine_options, result_path, write_result

from esrank.app import App
from esrank.catalogue.index import VECTOR_FIELD
from esrank.catalogue.lookup import fetch_sources
from esrank.core.settings import load_settings
from esrank.deploy.upload import deploy
from esrank.evaluation.evaluate import evaluate
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import read_csv
from esrank.learn.artifact import ModelArtifact
from esrank.ranking.diversity import BRAND_FIELD, POOL, intra_list
from esrank.ranking.search import rank, search_many

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs" / "images" / "diversity.svg"
PRIVATE = "divbench"  # the feature set --artifact deploys under
CAPS = (1, 2, 3)
LAMBDAS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.3)


def page_diversity(app: App, queries: list[str], which: str) -> dict:
    """Mean over queries of the shown top 10's distinct brands and mean pairwise cosine
    distance."""
    ranker = app.ranker(which)
    pages = search_many(app.engine, app.settings.index, queries, ranker,
                        app.query_encoder([ranker]), size=10, source=False,
                        reranker=app.reranker)
    facts = fetch_sources(app.engine, app.settings.index,
                          {h.doc_id for hits in pages.values() for h in hits},
                          [BRAND_FIELD, VECTOR_FIELD])
    brands, distances = [], []
    for hits in pages.values():
        if not hits:
            continue
        known = [facts.get(h.doc_id, {}) for h in hits]
        distinct, distance = intra_list(
            [k.get(BRAND_FIELD) for k in known],
            [np.asarray(k[VECTOR_FIELD]) if VECTOR_FIELD in k else None for k in known])
        brands.append(distinct)
        distances.append(distance)
    return {"distinct_brands@10": round(float(np.mean(brands)), 3),
            "cosine_distance@10": round(float(np.mean(distances)), 4)}


def latencies(app: App, queries: list[str], configs: list[str], repeats: int,
              seed: int = 7) -> dict[str, list[float]]:
    """Each configuration's per-query ms through `rank`, interleaved query by query (the
    order shuffled each time) after one warm-up pass."""
    times: dict[str, list[float]] = {c: [] for c in configs}
    order = list(configs)
    for c in configs:  # warm-up: resolved configurations, the engine's caches
        rank(app, queries[0], c)
    rng = random.Random(seed)
    for _ in range(repeats):
        for q in queries:
            rng.shuffle(order)
            for c in order:
                started = time.perf_counter()
                rank(app, q, c)
                times[c].append((time.perf_counter() - started) * 1000)
    return times


def svg_plot(points: dict[str, dict], model: str) -> str:
    """NDCG@10 (standard: filled, condensed: hollow) against distinct brands and against
    cosine distance in the top 10, one labelled point per configuration."""
    w, h, pad, gap = 420, 320, 56, 40
    panels = (("distinct brands in the top 10", "distinct_brands@10"),
              ("mean pairwise cosine distance, top 10", "cosine_distance@10"))
    ys = [p[m] for p in points.values() for m in ("ndcg@10", "ndcg@10_condensed")]
    y_lo, y_hi = min(ys) - 0.02, max(ys) + 0.02
    width = len(panels) * (w + gap) + pad
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 100}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{h + 100}" fill="white"/>',
           f'<text x="{pad}" y="18" font-size="13" font-weight="bold">Diversity on the page: '
           f'{model} on Chorus (bench/diversity.py)</text>']
    for k, (title, key) in enumerate(panels):
        x0, y0 = pad + k * (w + gap), 40
        xs = [p[key] for p in points.values()]
        x_lo, x_hi = min(xs), max(xs)
        span = (x_hi - x_lo) or 1.0
        x_lo, x_hi = x_lo - 0.08 * span, x_hi + 0.08 * span

        def at(x, y, x0=x0, y0=y0, x_lo=x_lo, x_hi=x_hi):
            return (x0 + (x - x_lo) / (x_hi - x_lo) * w,
                    y0 + h - (y - y_lo) / (y_hi - y_lo) * h)

        out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" '
                   'stroke="#999"/>')
        for i in range(5):
            y = y_lo + i * (y_hi - y_lo) / 4
            out.append(f'<text x="{x0 - 6}" y="{at(x_lo, y)[1] + 4:.1f}" text-anchor="end">'
                       f'{y:.2f}</text>')
            x = x_lo + i * (x_hi - x_lo) / 4
            out.append(f'<text x="{at(x, y_lo)[0]:.1f}" y="{y0 + h + 15}" '
                       f'text-anchor="middle">{x:.2f}</text>')
        out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">{title}'
                   '</text>')
        for label, p in points.items():
            colour = "#888" if label == "bm25" else "#c44" if "cap" in label else "#36c"
            cx, cy = at(p[key], p["ndcg@10"])
            hx, hy = at(p[key], p["ndcg@10_condensed"])
            out += [f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}"/>',
                    f'<circle cx="{hx:.1f}" cy="{hy:.1f}" r="4" fill="none" '
                    f'stroke="{colour}"/>',
                    _label(cx, cy, _short(label, model), slanted=colour == "#36c")]
    out.append(f'<text x="{pad}" y="{h + 94}">y: NDCG@10, filled = standard, hollow = '
               'condensed · grey: BM25, blue: the model and +mmrL, red: +capN</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _label(x: float, y: float, text: str, slanted: bool) -> str:
    """A point's label: slanted up and right (the MMR curve's points lie close together), or
    level, right and below."""
    if slanted:
        return (f'<text x="{x + 5:.1f}" y="{y - 6:.1f}" transform="rotate(-40 {x + 5:.1f} '
                f'{y - 6:.1f})">{text}</text>')
    return f'<text x="{x + 6:.1f}" y="{y + 13:.1f}">{text}</text>'


def _short(label: str, model: str) -> str:
    return "model" if label == model else label.replace(f"{model}+", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--repeats", type=int, default=2, help="Latency passes over the queries.")
    ap.add_argument("--artifact", type=Path,
                    help="Deploy this model artifact under a private feature set first (an "
                         "engine with no active chorus model); removed afterwards.")
    args = ap.parse_args()
    settings = load_settings(url=args.url, flavor=args.flavor,
                             active_set=PRIVATE if args.artifact else None)
    app = App(settings, ranker_ttl=600.0)
    if args.artifact:
        fs = private_feature_set(app.engine, load_feature_set(FEATURE_SETS / "chorus.yaml"),
                                 PRIVATE)
        judged = read_csv(JUDGMENTS)
        gate = {q: [j.doc_id for j in judged if j.query == q] for q in judged_queries()[:5]}
        artifact = ModelArtifact.load(args.artifact)
        artifact.meta["feature_set"] = fs.engine_name  # the same features, under the bench's name
        report = deploy(app.engine, settings.index, artifact, fs, gate,
                        query_params(fs.params, app.encoder))
        if not report.parity.passed:
            raise SystemExit(f"parity failed: {report.to_dict()}")
    try:
        sweep(app, args)
    finally:
        if args.artifact:
            remove_deployed(app.engine, PRIVATE)


def sweep(app: App, args) -> None:
    """The sweep on `app`'s active model: evaluate, latency, the page's diversity; written."""
    model = app.ranker("active").label
    if model == "bm25":
        raise SystemExit("no active model for the chorus feature set: run make demo first")
    configs = ["bm25", model, *(f"{model}+cap{n}" for n in CAPS),
               *(f"{model}+mmr{lam:g}" for lam in LAMBDAS)]
    queries = judged_queries()
    run = evaluate(app, JUDGMENTS, configs)
    times = latencies(app, queries, configs, args.repeats)
    base = float(np.median(times[model]))
    rows = {}
    for c in configs:
        mean = run.results[c].mean
        rows[c] = {m: round(mean[m], 4) for m in ("ndcg@10", "ndcg@10_condensed", "judged@10")}
        rows[c] |= page_diversity(app, queries, c)
        rows[c] |= {"latency_ms": {"p50": round(float(np.median(times[c])), 1),
                                   "p95": round(float(np.percentile(times[c], 95)), 1)},
                    "latency_ratio": round(float(np.median(times[c])) / base, 2)}
        print(c, rows[c], flush=True)
    if args.flavor == "opensearch":
        PLOT.write_text(svg_plot(rows, model))
    write_result({"flavor": args.flavor, "index": app.settings.index, "model": model,
                  "queries": len(queries), "judgments": str(JUDGMENTS.relative_to(ROOT)),
                  "deployed_from": str(args.artifact) if args.artifact else None,
                  "pool": POOL, "latency_samples": len(queries) * args.repeats,
                  "configs": rows}, result_path("diversity", args))


if __name__ == "__main__":
    main()
