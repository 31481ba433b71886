"""Query understanding, measured before it is built: does the query's product-kind or brand
intent, inferred from the catalogue's own fields and the query's embedding, add anything to the
15-feature model? Writes bench/results/query_intent.json.

    python bench/query_intent.py [--table $ESRANK_HOME/demo/chorus.parquet]

No engine: each candidate is computed here for every row of a logged Chorus table (make demo
writes one) and added to it as one more column. Product texts come from the packaged
catalogue, vectors from the configured encoder behind the embedding cache (as indexed).
- `kind_intent` (K kinds, N neighbours): products are grouped into K kinds by which `attr_*`
  fields they carry (k-means over those sets, cosine; no attributes is a kind of its own: a
  laptop and a laptop bag carry different fields); the query's intent is each kind's share
  of its N nearest products by text embedding; a product scores its kind's share.
- `brand_intent` (N neighbours): the same with the product's supplier for its kind.
Per candidate: the column alone (each held-out window reordered by it), and esrank train's
served CV (default parameters, the same folds) with and without it, per query over the 97
queries, with a paired randomization test; standard and condensed NDCG@10.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from _chorus import catalogue_documents
from _report import paired, write_result

from esrank.app import load_encoder
from esrank.catalogue.products import text_of
from esrank.core.settings import load_settings
from esrank.evaluation.significance import compare
from esrank.learn.served import judged_evaluator, served_runs
from esrank.learn.table import read_table
from esrank.learn.train import TrainParams, cross_validate

ROOT = Path(__file__).resolve().parent.parent
SHOWN = ("ndcg@10", "ndcg@10_condensed")
CANDIDATES = [("kind_intent", 60, 30), ("kind_intent", 120, 50), ("brand_intent", 0, 30)]
MIN_FIELD = 20  # attr_* fields on fewer products do not count towards a kind


def catalogue() -> tuple[list[str], list[str], list[str], list[set[str]]]:
    """Doc ids, texts (as text_vector embeds them), suppliers and attribute-field sets."""
    ids, texts, suppliers, fields = [], [], [], []
    for doc_id, doc in catalogue_documents():
        ids.append(doc_id)
        texts.append(text_of(doc))
        suppliers.append(doc["supplier"] or "")
        fields.append({k for k in doc["attrs"]})
    return ids, texts, suppliers, fields


def kinds(fields: list[set[str]], k: int, seed: int = 0) -> np.ndarray:
    """Each product's kind: spherical k-means over its attribute-field set; k for none."""
    counts = Counter(f for fs in fields for f in fs)
    column = {f: i for i, f in enumerate(f for f, c in counts.items() if c >= MIN_FIELD)}
    x = np.zeros((len(fields), len(column)), np.float32)
    for row, fs in enumerate(fields):
        x[row, [column[f] for f in fs if f in column]] = 1.0
    has = x.sum(1) > 0
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    centres = x[np.random.default_rng(seed).choice(np.flatnonzero(has), k, replace=False)]
    for _ in range(25):
        assigned = np.argmax(x @ centres.T, 1)
        for c in range(k):
            members = has & (assigned == c)
            if members.any():
                centres[c] = x[members].mean(0)
                centres[c] /= np.linalg.norm(centres[c]) + 1e-9
    return np.where(has, np.argmax(x @ centres.T, 1), k)


def intent_column(table, doc_row: dict[str, int], labels: np.ndarray, doc_vectors: np.ndarray,
                  query_vectors: dict[str, np.ndarray], neighbours: int) -> np.ndarray:
    """Per table row: the share of its product's label among the query's nearest products."""
    share = {}
    for query, vector in query_vectors.items():
        nearest = np.argsort(-(doc_vectors @ vector))[:neighbours]
        share[query] = {label: n / neighbours
                        for label, n in Counter(labels[nearest].tolist()).items()}
    return np.array([share[q].get(labels[doc_row[d]], 0.0) if d in doc_row else np.nan
                     for q, d in zip(table.queries, table.doc_ids, strict=True)], np.float32)


def main() -> None:
    settings = load_settings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=settings.home / "demo" / "chorus.parquet")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                    "query_intent.json")
    args = ap.parse_args()

    started = time.monotonic()
    table = read_table(args.table)
    ids, texts, suppliers, fields = catalogue()
    encoder = load_encoder(settings, cached=True)
    doc_vectors = encoder.encode(texts)
    queries = sorted(set(table.queries))
    query_vectors = dict(zip(queries, encoder.encode(queries), strict=True))
    doc_row = {d: i for i, d in enumerate(ids)}
    brand = {s: i for i, s in enumerate(sorted(set(suppliers)))}
    evaluator = judged_evaluator(table)
    base = evaluator.evaluate(cross_validate(table, TrainParams(), args.folds).runs)
    out = {"queries": len(queries), "folds": args.folds, "encoder": encoder.key,
           "table": str(args.table), "model_without": {m: round(base.mean[m], 4)
                                                       for m in SHOWN}, "candidates": {}}
    for name, k, neighbours in CANDIDATES:
        labels = (kinds(fields, k) if name == "kind_intent"
                  else np.array([brand[s] for s in suppliers]))
        column = intent_column(table, doc_row, labels, doc_vectors, query_vectors, neighbours)
        wider = replace(table, feature_names=(*table.feature_names, name),
                        values=np.column_stack([table.values, column]).astype(np.float32))
        alone = evaluator.evaluate(served_runs(table, np.arange(len(table)),
                                               np.nan_to_num(column, nan=-1.0)))
        model = evaluator.evaluate(cross_validate(wider, TrainParams(), args.folds).runs)
        label = f"{name} (K={k}, N={neighbours})" if k else f"{name} (N={neighbours})"
        out["candidates"][label] = {
            "alone": {m: round(alone.mean[m], 4) for m in SHOWN},
            "model_with": {m: round(model.mean[m], 4) for m in SHOWN},
            "with_vs_without": paired(compare(("without", base), ("with", model), SHOWN))}
        print(label, out["candidates"][label], flush=True)
    out["seconds"] = round(time.monotonic() - started, 1)
    write_result(out, args.out)


if __name__ == "__main__":
    main()
