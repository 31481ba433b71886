"""Feature-logging throughput on the live engine: msearch batches vs. one search per query.

Needs the catalogue indexed (esrank index) and the LTR plugin. Logs every Chorus judgment
with the chorus feature set both ways in one run and prints judgments/s and the ratio.
Writes bench/results/logging.json.

    python bench/feature_logging.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _chorus import FEATURE_SETS, JUDGMENTS
from _report import configured_encoder, write_result

from esrank.engine import connect
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.features.sync import push_feature_sets
from esrank.judgments.lists import read_csv
from esrank.learn.feature_log import log_judgments

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--index", default="products")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feature_logging.json")
    args = ap.parse_args()

    engine = connect(args.url)
    encoder = configured_encoder()
    fs = load_feature_set(FEATURE_SETS / "chorus.yaml")
    push_feature_sets(engine, [fs])
    judgments = read_csv(JUDGMENTS)

    batched_s = []
    for _ in range(args.repeats):
        report = log_judgments(engine, args.index, fs, judgments, encoder, progress=False)
        batched_s.append(report.seconds)

    params_for = query_params(fs.params, encoder)
    single_s = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for _qid, js in judgments.by_query().items():
            params = params_for([js[0].query])[0]
            engine.log_features(args.index, fs, params, [j.doc_id for j in js])
        single_s.append(time.perf_counter() - t)

    n = len(judgments)
    best_batched, best_single = min(batched_s), min(single_s)
    result = {
        "judgments": n, "queries": len(judgments.queries()), "rows_logged": len(report.matrix),
        "missing_docs": len(report.missing_docs), "features": len(fs.feature_names),
        "msearch_judgments_per_s": round(n / best_batched, 1),
        "one_search_per_query_judgments_per_s": round(n / best_single, 1),
        "msearch_vs_single_ratio": round(best_single / best_batched, 2),
        "encoder": encoder.name, "repeats": args.repeats,
        "best_of_seconds": {"msearch": round(best_batched, 3), "single": round(best_single, 3)},
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
