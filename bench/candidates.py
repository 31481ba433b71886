"""The ceiling of reranking: how far a perfect reranker of the served window could go, and how
far a wider candidate set (the BM25 window plus the query's nearest products by embedding, a
hybrid first pass) moves it and the model. Writes bench/results/candidates.json.

    python bench/candidates.py [--flavor elasticsearch] [--knn 20,50,100]

On the live engine with the Chorus catalogue indexed (make demo). A model can only reorder
the docs the first pass hands it, so NDCG@10 has a ceiling: the judged docs of the window in
grade order; and every judged doc in grade order is the ceiling of any ranking at all (a query
without a positive judgment scores 0 whatever runs). Per candidate set, over the 97 queries:
- recall: the share of judged positives (grade > 0) among its docs;
- ceiling: NDCG@10 (standard, condensed) of its docs in grade order, and its ratio to BM25;
- for each wider window (BM25 at each --wider width; BM25 at --window joined with each --knn
  K): the features logged for every doc of the window (the feature set's own, from the
  engine), then esrank train's served CV (default parameters, the same query folds) against
  the same on the BM25 window of --window, and each single feature reordering the window.
  The nearest products are an exact cosine search over the indexed `text_vector`s (what an
  exact kNN first pass returns), from the configured encoder behind the embedding cache.
This measures a hybrid first pass before it is built: esrank does not serve one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _chorus import JUDGMENTS, catalogue_documents, private_feature_set
from _report import (
    configured_encoder,
    connect_engine,
    engine_options,
    paired,
    result_path,
    single_feature_runs,
    write_result,
)

from esrank.catalogue.products import text_of
from esrank.catalogue.query import bm25_query
from esrank.evaluation.significance import compare
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import read_csv
from esrank.judgments.metrics import Evaluator
from esrank.learn.feature_log import log_judgments
from esrank.learn.train import TrainParams, cross_validate
from esrank.ranking.search import Ranker, search_many

ROOT = Path(__file__).resolve().parent.parent
SHOWN = ("ndcg@10", "ndcg@10_condensed")


def nearest(encoder, queries: list[str], k: int) -> dict[str, list[str]]:
    """Per query, the ids of its k nearest products by text embedding (exact cosine)."""
    docs = list(catalogue_documents())
    ids, texts = [d for d, _ in docs], [text_of(doc) for _, doc in docs]
    scores = encoder.encode(queries) @ encoder.encode(texts).T
    top = np.argsort(-scores, axis=1)[:, :k]
    return {q: [ids[j] for j in row] for q, row in zip(queries, top, strict=True)}


def ceiling(evaluator: Evaluator, grades: dict, candidates: dict[str, list[str]]) -> dict:
    """Recall of judged positives, and NDCG@10 of each query's candidates in grade order."""
    positives = sum(g > 0 for g in grades.values())
    found = sum(grades.get((q, d), 0) > 0 for q, docs in candidates.items() for d in docs)
    ndcg = evaluator.evaluate(evaluator.ideal(candidates)).mean
    return {"recall": round(found / positives, 4),
            "docs_per_query": round(float(np.mean([len(d) for d in candidates.values()])), 1),
            **{m: round(ndcg[m], 4) for m in SHOWN}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--index", default="products")
    ap.add_argument("--feature-set", type=Path, default=ROOT / "feature_sets" / "chorus.yaml")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--wider", default="200,400", help="Larger BM25 windows (ceiling only).")
    ap.add_argument("--knn", default="20,50,100", help="Nearest products joined to the window.")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, help="Default: bench/results/candidates[_FLAVOR].json.")
    args = ap.parse_args()
    started = time.monotonic()

    engine = connect_engine(args)
    encoder = configured_encoder()
    fs = private_feature_set(engine, load_feature_set(args.feature_set), "candbench")
    judgments = read_csv(JUDGMENTS)
    evaluator = Evaluator(judgments)
    queries = evaluator.queries
    grades = evaluator.graded()
    widths = [args.window, *(int(w) for w in args.wider.split(",") if w)]
    ks = [int(k) for k in args.knn.split(",") if k]
    bm25 = {q: [h.doc_id for h in hits] for q, hits in search_many(
        engine, args.index, queries, Ranker("bm25"), None, size=max(widths),
        source=False).items()}
    near = nearest(encoder, queries, max(ks))
    # BM25 as served: its window in its order (the condensed view reads past the top 10)
    base = evaluator.evaluate({q: docs[:args.window] for q, docs in bm25.items()}).mean
    out: dict = {"queries": len(queries), "window": args.window, "encoder": encoder.key,
                 "bm25": {m: round(base[m], 4) for m in SHOWN}, "ceilings": {}, "wider": {}}

    def joined(k: int) -> dict[str, list[str]]:
        return {q: list(dict.fromkeys(bm25[q][:args.window] + near[q][:k])) for q in queries}

    judged = {js[0].query: [j.doc_id for j in js] for js in judgments.by_query().values()}
    out["queries_without_a_positive"] = sum(
        not any(grades[(q, d)] > 0 for d in docs) for q, docs in judged.items())
    sets = {"every judged doc": judged}
    sets.update({f"bm25@{w}": {q: d[:w] for q, d in bm25.items()} for w in widths})
    sets.update({f"bm25@{args.window} + knn@{k}": joined(k) for k in ks})
    sets.update({f"knn@{k}": {q: near[q][:k] for q in queries} for k in ks})
    for name, candidates in sets.items():
        row = ceiling(evaluator, grades, candidates)
        row["x_bm25"] = {m: round(row[m] / base[m], 4) for m in SHOWN}
        out["ceilings"][name] = row
        print(f"{name:22} {row}", flush=True)

    def model(first, width: int):
        """The served-CV model and each single feature on the window `first` hands over."""
        table = log_judgments(engine, args.index, fs, judgments, encoder, window=width,
                              first_pass=first, progress=False).matrix
        ltr = evaluator.evaluate(cross_validate(table, TrainParams(), args.folds).runs)
        singles = {name: evaluator.evaluate(run)
                   for name, run in single_feature_runs(table).items()}
        return ltr, singles, len(table)

    def joined_pass(window: dict[str, list[str]]):
        """A first pass that returns exactly `window`'s docs, in BM25 order (the rest last)."""
        return lambda text: {"bool": {"filter": [{"ids": {"values": window[text]}}],
                                      "should": [bm25_query(text)]}}

    plain, plain_singles, rows = model(bm25_query, args.window)
    out["bm25_window"] = {"rows_logged": rows, "ltr": {m: round(plain.mean[m], 4) for m in SHOWN},
                          "best_single": _best(plain_singles)}
    print("bm25 window", out["bm25_window"], flush=True)
    wider = {f"bm25@{w}": (bm25_query, w) for w in widths[1:]}
    wider.update({f"bm25@{args.window} + knn@{k}": (joined_pass(joined(k)), args.window + k)
                  for k in ks})
    for name, (first, width) in wider.items():
        ltr, singles, rows = model(first, width)
        row = {"rows_logged": rows, "ltr": {m: round(ltr.mean[m], 4) for m in SHOWN},
               "ltr_x_bm25": {m: round(ltr.mean[m] / base[m], 4) for m in SHOWN},
               "best_single": _best(singles),
               "ltr_vs_ltr_on_bm25_window": paired(compare(("bm25 window", plain),
                                                           ("wider", ltr), SHOWN))}
        for m in SHOWN:
            top = row["best_single"][m]["feature"]
            row[f"ltr_vs_best_single ({m})"] = paired(compare((top, singles[top]),
                                                              ("ltr", ltr), SHOWN))[m]
        out["wider"][name] = row
        print(name, row, flush=True)
    out["seconds"] = round(time.monotonic() - started, 1)
    write_result(out, args.out or result_path("candidates", args))


def _best(singles: dict) -> dict:
    """Per metric, the single feature that scores best alone, and its NDCG@10."""
    return {m: {"feature": (top := max(singles, key=lambda n: singles[n].mean[m])),
                "value": round(singles[top].mean[m], 4)} for m in SHOWN}


if __name__ == "__main__":
    main()
