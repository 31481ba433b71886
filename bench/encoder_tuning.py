"""Does a bi-encoder fine-tuned on the shop's judgments rank better on queries it never saw?
Writes bench/results/encoder_tuning.json.

    python bench/encoder_tuning.py [--table $ESRANK_HOME/demo/chorus.parquet] [--epochs 1]

Needs torch (pip install 'esrank[torch]') and a logged Chorus table with its first-pass window
(make demo writes one); no engine: product texts come from the packaged catalogue. Per
query-grouped fold (the folds esrank train uses): `esrank.models.tuning.train_encoder` on the other
folds' judged pairs, then the held-out queries and their logged docs are embedded by the
configured encoder and by the tuned one, run the way esrank serves it (ESRANK_ENCODER__*;
on a CPU, ONNX Runtime int8). Reported, over every query held out once:
- `text_cosine` and `title_cosine` alone, base vs tuned: each held-out window reordered by
  the cosine (the single-feature view of bench/relevance.py);
- the LTR model with every row's two cosines from the encoder that never saw its query
  (out-of-fold), against the same model over the base encoder's cosines: served CV of
  XGBoost's own predictions over each held-out window (esrank train's CV; not through the
  plugin, which bench/relevance.py does once an index holds the tuned vectors).
Paired randomization tests over the 97 queries; standard and condensed NDCG@10.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _chorus import catalogue_documents
from _report import paired, write_result

from esrank.catalogue.products import text_of
from esrank.core.settings import load_settings
from esrank.evaluation.significance import compare
from esrank.learn.served import judged_evaluator, served_runs
from esrank.learn.table import read_table
from esrank.learn.train import TrainParams, cross_validate, grouped_folds
from esrank.models.encoder import load_encoder
from esrank.models.tuning import train_encoder

ROOT = Path(__file__).resolve().parent.parent
COSINES = {"text_cosine": "text", "title_cosine": "title"}  # feature -> what it embeds
SHOWN = ("ndcg@10", "ndcg@10_condensed")


def catalogue_texts() -> dict[str, dict[str, str]]:
    """Doc id -> {"text": title + short description, "title": title}."""
    return {doc_id: {"text": text_of(doc), "title": doc["title"]}
            for doc_id, doc in catalogue_documents()}


def cosines(encoder, table, rows, texts) -> dict[str, np.ndarray]:
    """Feature -> (1 + cos) / 2 of each row's query and doc, as the plugin logs it."""
    queries = sorted({table.queries[i] for i in rows})
    qv = dict(zip(queries, encoder.encode(queries), strict=True))
    out = {}
    for feature, field in COSINES.items():
        docs = sorted({table.doc_ids[i] for i in rows})
        dv = dict(zip(docs, encoder.encode([texts[d][field] for d in docs]), strict=True))
        out[feature] = np.array([(1 + qv[table.queries[i]] @ dv[table.doc_ids[i]]) / 2
                                 for i in rows], dtype=np.float32)
    return out


def main() -> None:
    settings = load_settings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=settings.home / "demo" / "chorus.parquet")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                    "encoder_tuning.json")
    args = ap.parse_args()

    table = read_table(args.table)
    texts = catalogue_texts()
    e = settings.encoder
    models = settings.home / "models"
    base = load_encoder(e.model, e.backend, e.precision, models)
    evaluator = judged_evaluator(table)
    columns = {f: table.feature_names.index(f) for f in COSINES}
    values = {"base": table.values.copy(), "tuned": table.values.copy()}
    runs: dict[str, dict[str, list[str]]] = {f"{f} ({v})": {} for f in COSINES
                                             for v in values}
    trained, started = [], time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for k, (train_rows, test_rows) in enumerate(grouped_folds(table.qids, args.folds)):
            judged = [i for i in train_rows if table.judged[i]]
            meta = train_encoder(
                Path(base.path), [table.queries[i] for i in judged],
                [texts[table.doc_ids[i]]["text"] for i in judged],
                [table.grades[i] for i in judged], Path(tmp) / f"enc{k}", epochs=args.epochs)
            tuned = load_encoder(str(Path(tmp) / f"enc{k}"), e.backend, e.precision,
                                 Path(tmp) / "onnx")
            trained.append({k: meta[k] for k in ("examples", "queries", "seconds",
                                                  "loss_first_epoch", "loss_last_epoch")})
            print(f"fold {k}: {trained[-1]}", flush=True)
            for name, encoder in (("base", base), ("tuned", tuned)):
                for feature, scores in cosines(encoder, table, test_rows, texts).items():
                    values[name][test_rows, columns[feature]] = scores
                    runs[f"{feature} ({name})"].update(served_runs(table, test_rows, scores))
    evaluations = {name: evaluator.evaluate(run) for name, run in runs.items()}
    for name, v in values.items():
        cv = cross_validate(replace(table, values=v), TrainParams(), args.folds)
        evaluations[f"ltr ({name})"] = evaluator.evaluate(cv.runs)
    result = {
        "queries": len(set(table.queries)), "folds": args.folds, "epochs": args.epochs,
        "encoder": base.key, "backend": f"{e.backend}/{e.precision}",
        "table": os.fspath(args.table), "cpu_cores": os.cpu_count(),
        "training": trained,
        "table_ndcg": {name: {m: round(ev.mean[m], 4) for m in SHOWN}
                       for name, ev in evaluations.items()},
        "significance": {
            f"{b} vs {a}": paired(compare((a, evaluations[a]), (b, evaluations[b]), SHOWN))
            for a, b in [*((f"{f} (base)", f"{f} (tuned)") for f in COSINES),
                         ("ltr (base)", "ltr (tuned)"),
                         ("text_cosine (tuned)", "ltr (tuned)")]},
        "seconds": round(time.monotonic() - started, 1),
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
