"""The recall stage against what a search team would run instead: for each candidate set (the
BM25 top --window joined with the K nearest products over the catalogue's HNSW graph, for each
--knn K), its ceiling, the model's served CV over it, and the fused baselines over the same two
lists. Writes bench/results/candidates.json.

    python bench/candidates.py [--flavor elasticsearch] [--knn 0,25,50,100,200]

On the live engine with the Chorus catalogue indexed (make demo). Per K, over the 97 queries:
- ceiling: recall of judged positives, and NDCG@10 (standard, condensed) of the candidates in
  grade order (what a perfect reordering reaches), and its ratio to BM25;
- ltr: the feature set (feature_sets/chorus.yaml, a private copy) logged through the plugin
  over the candidate set (esrank log --knn K), then esrank train's served CV (default
  parameters, 5 query-grouped folds): each held-out query's candidates reordered by a model
  that never saw it;
- the baselines over the same lists: knn (vector search alone, K), rrf (k 60), linear
  (min-max mix, the BM25 weight tuned by the same 5-fold query-grouped CV over 0..1 by 0.1);
- per configuration the share of the BM25 -> ceiling gap it closes, and the model against
  the best baseline and against the model over BM25 alone (paired randomization test).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _chorus import JUDGMENTS, private_feature_set
from _report import (
    configured_encoder,
    connect_engine,
    engine_options,
    paired,
    result_path,
    write_result,
)

from esrank.catalogue.query import DEFAULT_FIELDS
from esrank.catalogue.recall import Recall
from esrank.evaluation.ceilings import SHOWN, candidate_sets, ceiling, gap_closed, tuned_linear
from esrank.evaluation.significance import compare
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import read_csv
from esrank.judgments.metrics import Evaluation, Evaluator
from esrank.learn.feature_log import log_judgments
from esrank.learn.train import TrainParams, cross_validate
from esrank.ranking.fusion import fuse

ROOT = Path(__file__).resolve().parent.parent


def means(evaluation: Evaluation) -> dict[str, float]:
    return {m: round(evaluation.mean[m], 4) for m in SHOWN}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--index", default="products")
    ap.add_argument("--feature-set", type=Path, default=ROOT / "feature_sets" / "chorus.yaml")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--knn", default="0,25,50,100,200", help="Nearest products joined (K).")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, help="Default: bench/results/candidates[_FLAVOR].json.")
    args = ap.parse_args()
    started = time.monotonic()

    engine = connect_engine(args)
    encoder = configured_encoder()
    fs = private_feature_set(engine, load_feature_set(args.feature_set), "candbench")
    judgments = read_csv(JUDGMENTS)
    evaluator = Evaluator(judgments)
    grades = evaluator.graded()
    positives = sum(g > 0 for g in grades.values())
    out: dict = {"queries": len(evaluator.queries), "window": args.window, "encoder": encoder.key,
                 "flavor": args.flavor, "folds": args.folds, "sets": {}}
    ltr_runs: dict[int, Evaluation] = {}
    for k in (int(k) for k in args.knn.split(",")):
        recall = Recall(args.window, k)
        found = candidate_sets(engine, args.index, evaluator.queries, recall,
                               encoder if k else None, DEFAULT_FIELDS)
        top = ceiling(evaluator, found)
        runs = {"bm25": {q: [d for d, _ in c.bm25] for q, c in found.items()}}
        if k:
            runs["knn"] = {q: [d for d, _ in fuse("knn", c)] for q, c in found.items()}
            runs["rrf"] = {q: [d for d, _ in fuse("rrf", c)] for q, c in found.items()}
            runs["linear"], weights = tuned_linear(evaluator, found, args.folds)
        table = log_judgments(engine, args.index, fs, judgments, encoder, recall=recall,
                              progress=False).matrix
        results = {n: evaluator.evaluate(r) for n, r in runs.items()}
        results["ltr"] = ltr_runs[k] = evaluator.evaluate(
            cross_validate(table, TrainParams(), args.folds).runs)
        base = results["bm25"].mean
        row = {"candidates": recall.label, "rows_logged": len(table),
               "recall_of_positives": round(sum(
                   grades.get((q, d), 0) > 0 for q, c in found.items() for d in c.ids)
                   / positives, 4),
               "docs_per_query": round(sum(len(c.ids) for c in found.values())
                                       / len(found), 1),
               "ceiling@10": top, "ceiling_x_bm25": {m: round(top[m] / base[m], 4)
                                                     for m in SHOWN},
               "configs": {n: {**means(e), "gap_closed": gap_closed(e.mean, base, top)}
                           for n, e in results.items()}}
        if k:
            row["linear_weights"] = weights
            best = max(("knn", "rrf", "linear"), key=lambda n: results[n].mean["ndcg@10"])
            row["best_baseline"] = best
            row["ltr_vs_best_baseline"] = paired(compare((best, results[best]),
                                                         ("ltr", results["ltr"]), SHOWN))
        if k and 0 in ltr_runs:
            row["ltr_vs_ltr_over_bm25"] = paired(compare(
                ("ltr bm25", ltr_runs[0]), ("ltr recall", results["ltr"]), SHOWN))
        out["sets"][recall.label] = row
        print(recall.label, row, flush=True)
    out["seconds"] = round(time.monotonic() - started, 1)
    write_result(out, args.out or result_path("candidates", args))


if __name__ == "__main__":
    main()
