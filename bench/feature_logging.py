"""Feature-logging throughput on the live engine: msearch batches vs. one search per query, and
msearch batches from 1, 2 and 4 concurrent workers.

Needs the catalogue indexed (esrank index) and the LTR plugin. Logs every Chorus judgment with
the chorus feature set both ways in one run and prints judgments/s and the ratio. The workers
section logs as `esrank log --workers N` does: over the recall stage (the BM25 top --window
joined with the --knn nearest products), 16 queries per msearch, the judgments repeated
--copies times under fresh query ids (a longer job than the 97 queries' 7 batches); the worker
counts take turns within each repeat, and then the most workers log the same judgments into a
dataset folder in parts (`esrank log -o FOLDER`), the cost of writing parts as it goes.
Writes bench/results/feature_logging.json (--out).

    python bench/feature_logging.py
    python bench/feature_logging.py --url http://HOST:PORT \
        --out bench/results/feature_logging_cluster.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _chorus import FEATURE_SETS, JUDGMENTS
from _report import configured_encoder, write_result

from esrank.catalogue.recall import Recall
from esrank.engine import connect
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.features.sync import push_feature_sets
from esrank.judgments.lists import JudgmentList, read_csv
from esrank.learn.feature_log import log_dataset, log_judgments
from esrank.learn.table import read_table

ROOT = Path(__file__).resolve().parent.parent
PART_SIZE = 50  # queries per part of the dataset run: 8 parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--index", default="products")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2,4", help="Worker counts to compare (1 first).")
    ap.add_argument("--window", type=int, default=100, help="BM25 candidates per query.")
    ap.add_argument("--knn", type=int, default=200, help="Nearest products per query.")
    ap.add_argument("--copies", type=int, default=4,
                    help="The judgments repeated under fresh query ids (workers section).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feature_logging.json")
    args = ap.parse_args()

    engine = connect(args.url)
    encoder = configured_encoder()
    fs = load_feature_set(FEATURE_SETS / "chorus.yaml")
    push_feature_sets(engine, [fs])
    judgments = read_csv(JUDGMENTS)
    result = {**batched_vs_single(engine, args.index, fs, judgments, encoder, args.repeats),
              "encoder": encoder.name, "repeats": args.repeats, "url": args.url,
              "nodes": len(engine.transport.request("nodes", "GET", "/_nodes")["nodes"]),
              "workers": workers_section(engine, args, fs, judgments, encoder)}
    write_result(result, args.out)


def batched_vs_single(engine, index, fs, judgments, encoder, repeats) -> dict:
    """The judged pairs alone: one msearch per 16 queries against one search per query."""
    batched_s = []
    for _ in range(repeats):
        report = log_judgments(engine, index, fs, judgments, encoder, progress=False)
        batched_s.append(report.seconds)

    params_for = query_params(fs.params, encoder)
    single_s = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _qid, js in judgments.by_query().items():
            params = params_for([js[0].query])[0]
            engine.log_features(index, fs, params, [j.doc_id for j in js])
        single_s.append(time.perf_counter() - t)

    n = len(judgments)
    best_batched, best_single = min(batched_s), min(single_s)
    return {
        "judgments": n, "queries": len(judgments.queries()), "rows_logged": len(report.matrix),
        "missing_docs": len(report.missing_docs), "features": len(fs.feature_names),
        "msearch_judgments_per_s": round(n / best_batched, 1),
        "one_search_per_query_judgments_per_s": round(n / best_single, 1),
        "msearch_vs_single_ratio": round(best_single / best_batched, 2),
        "best_of_seconds": {"msearch": round(best_batched, 3), "single": round(best_single, 3)},
    }


def workers_section(engine, args, fs, judgments, encoder) -> dict:
    """judgments/s of `log_judgments(..., workers=N)` over the recall stage, best of
    --repeats, and each count's ratio to 1 worker; each run's rows against the first run's."""
    counts = [int(n) for n in args.workers.split(",")]
    copies = JudgmentList(tuple(replace(j, qid=f"{c}:{j.qid}") for c in range(args.copies)
                                for j in judgments))
    recall = Recall(args.window, args.knn)
    single_node = len(engine.transport.request("nodes", "GET", "/_nodes")["nodes"]) == 1
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    cpu: dict[int, list[float]] = {n: [] for n in counts}  # esrank's own CPU share of the wall
    shared: dict[str, list[float]] = {}
    parts_s, first = [], None
    for _ in range(args.repeats):
        for n in counts:
            started = time.process_time()
            report = log_judgments(engine, args.index, fs, copies, encoder, recall=recall,
                                   workers=n, progress=False)
            seconds[n].append(report.seconds)
            cpu[n].append((time.process_time() - started) / report.seconds)
            first = first or report.matrix
            shared.setdefault(str(n), []).append(agreement(first, report.matrix, single_node))
        with tempfile.TemporaryDirectory() as tmp:  # the same, written as a dataset in parts
            parts_s.append(log_dataset(engine, args.index, fs, copies, encoder, Path(tmp),
                                       recall=recall, workers=counts[-1], part_size=PART_SIZE,
                                       progress=False).seconds)
            shared.setdefault("dataset", []).append(
                agreement(first, read_table(Path(tmp)), single_node))
    best = {n: min(s) for n, s in seconds.items()}
    return {
        "candidates": recall.label, "queries": len(copies.queries()), "judgments": len(copies),
        "rows_logged": len(first), "queries_per_request": 16,
        "judgments_per_s": {str(n): round(len(copies) / best[n], 1) for n in counts},
        "rows_per_s": {str(n): round(len(first) / best[n], 1) for n in counts},
        "ratio_to_1_worker": {str(n): round(best[counts[0]] / best[n], 2) for n in counts},
        "best_of_seconds": {str(n): round(best[n], 3) for n in counts},
        "all_seconds": {str(n): [round(s, 3) for s in seconds[n]] for n in counts},
        "client_cpu_cores": {str(n): round(float(np.median(cpu[n])), 2) for n in counts},
        "machine_cores": os.cpu_count(),
        "dataset": {"workers": counts[-1], "part_size": PART_SIZE,
                    "judgments_per_s": round(len(copies) / min(parts_s), 1),
                    "vs_one_file": round(best[counts[-1]] / min(parts_s), 2)},
        # the least share of the first run's (qid, doc) rows another run logged too
        "rows_shared_with_first_run": {k: min(v) for k, v in shared.items()},
    }


def agreement(first, table, exact: bool) -> float:
    """The share of `first`'s (qid, doc) rows that `table` holds too; with `exact` (one node:
    every search sees the same shard) the tables must be equal, values to float noise."""
    if exact:
        assert table.doc_ids == first.doc_ids, "a run logged other rows"
        np.testing.assert_allclose(table.values, first.values, rtol=1e-5, equal_nan=True)
    rows = set(zip(table.qids, table.doc_ids, strict=True))
    return round(sum(r in rows for r in zip(first.qids, first.doc_ids, strict=True))
                 / len(first), 5)


if __name__ == "__main__":
    main()
