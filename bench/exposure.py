"""Exposure fairness on Chorus: each supplier's share of the top 10's exposure against its
share of the judged relevance, for BM25, the fused `rrf` baseline and the active model.

All on the live engine (the `products` alias, the `chorus` feature set's active model, the
Chorus human judgments), through `esrank evaluate`'s own use case (evaluation.evaluate), so
the figures are the ones `esrank evaluate --json` prints. Beside them, the same figures for
the grade order of BM25's top --depth (the perfect reordering of its candidates: what
relevance alone would show) as a reference: its disparity is what a page ranked purely by
grade already has, since exposure falls by rank and relevance is shared by grade.
Reports per configuration the disparity, its per-query mean, the share of exposure on judged
products, the most over- and under-exposed suppliers, NDCG@10 for context, and each
disparity's ratio to BM25's. Writes bench/results/exposure[_FLAVOR].json.

    python bench/exposure.py [--depth 100] [--flavor elasticsearch]
"""

from __future__ import annotations

import argparse
import time

from _chorus import JUDGMENTS
from _report import engine_options, result_path, write_result

from esrank.app import App
from esrank.catalogue.lookup import product_facts
from esrank.core.settings import load_settings
from esrank.evaluation.evaluate import BM25, evaluate
from esrank.evaluation.exposure import docs_to_look_up, exposure_of
from esrank.ranking.search import run_of, search_many

IDEAL = "bm25 in grade order"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=100, help="Hits fetched per query.")
    engine_options(ap)
    args = ap.parse_args()
    started = time.monotonic()
    app = App(load_settings(url=args.url, flavor=args.flavor))  # the encoder `esrank` uses
    configs = (BM25, *(("rrf",) if app.settings.recall_knn else ()), "active")
    run = evaluate(app, JUDGMENTS, configs, depth=args.depth)
    evaluated = round(time.monotonic() - started, 1)
    evaluator = app.evaluator(JUDGMENTS)
    ideal = evaluator.ideal(run_of(search_many(app.engine, app.settings.index,
                                               evaluator.queries, app.ranker(BM25), None,
                                               size=args.depth, source=False)))
    facts = product_facts(app.engine, app.settings.index, docs_to_look_up(ideal, evaluator))
    rows = {label: run.exposures[label].to_dict() | {
        "ndcg@10": round(run.results[label].mean["ndcg@10"], 4),
        "ndcg@10_condensed": round(run.results[label].mean["ndcg@10_condensed"], 4)}
        for label in run.exposures}
    rows[IDEAL] = exposure_of(ideal, evaluator, {d: f.brand for d, f in facts.items()}
                              ).to_dict()
    base = rows[BM25]["disparity"]
    result = {"engine": args.flavor, "index": app.settings.index,
              "judgments": str(JUDGMENTS.relative_to(JUDGMENTS.parents[3])),
              "queries": rows[BM25]["queries"], "depth": args.depth,
              "configs": list(rows), "model": next(iter(set(run.exposures) - {BM25, "rrf"}),
                                                   None),
              "exposure": rows,
              "disparity": {label: round(r["disparity"], 4) for label, r in rows.items()},
              "disparity_vs_bm25": {label: round(r["disparity"] / base, 3)
                                    for label, r in rows.items()},
              "evaluate_s": evaluated, "elapsed_s": round(time.monotonic() - started, 1)}
    write_result(result, result_path("exposure", args))


if __name__ == "__main__":
    main()
