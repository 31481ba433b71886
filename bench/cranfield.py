"""Train on what you serve, on a collection judged by pooling: Cranfield, unseen queries.

Cranfield's judgments were pooled from other systems: most judged documents are not in BM25's
top 100. A model trained on every logged row then sees positives that rank low on BM25 and
unjudged window docs that rank high, and can learn "low BM25 = relevant". This bench indexes
the 1,400 abstracts (title = .T, description = .W), splits the 225 queries at random into 150
training and 75 unseen ones, logs the Chorus feature set without its product-only features
(supplier, attributes, price, recency) for the training queries (judged docs + the BM25 top
--window), trains one model per training candidate set and esrank's default (which picks
between them by serving CV), uploads each through the parity gate, and serves it as an sltr
rescore for the unseen queries. Grades: 5 - Cleverdon code for codes 1-4.

Reports NDCG@10 (standard and condensed) of BM25, the best single feature and each model on
the unseen queries, paired randomization tests, and how many training positives lie inside
the window. Writes bench/results/cranfield[_FLAVOR].json.

    python bench/cranfield.py [--data ../shared/data/cranfield] [--flavor elasticsearch]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from _chorus import FEATURE_SETS, private_feature_set, remove_deployed
from _report import (
    configured_encoder,
    connect_engine,
    engine_options,
    paired,
    result_path,
    single_feature_runs,
    write_result,
)

from esrank.catalogue.index import index_catalogue
from esrank.catalogue.recall import Recall
from esrank.deploy.registry import ActiveModel
from esrank.deploy.upload import deploy
from esrank.evaluation.significance import compare
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import Judgment, JudgmentList
from esrank.judgments.metrics import Evaluator
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.train import CANDIDATE_SETS, TrainParams, train
from esrank.ranking.search import Ranker, run_of, search_many

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_ONLY = ("supplier_bm25", "supplier_and", "attributes_bm25", "price", "recency")
SHOWN = ("ndcg@10", "ndcg@10_condensed")


def _records(text: str) -> list[dict[str, str]]:
    """The .I / .T / .W records of a Cranfield file."""
    out = []
    for chunk in re.split(r"^\.I ", text, flags=re.M)[1:]:
        number, rest = chunk.split("\n", 1)
        fields = dict(re.findall(r"^\.([A-Z])\n(.*?)(?=^\.[A-Z]\n|\Z)", rest, flags=re.M | re.S))
        out.append({"id": number.strip(), **{k: " ".join(v.split()) for k, v in fields.items()}})
    return out


def load(data: Path) -> tuple[list[dict], dict[str, str], JudgmentList]:
    """Products (id, title, short_description), query number -> text, judgments."""
    docs = [{"id": d["id"], "title": d.get("T") or d.get("W", "")[:80] or d["id"],
             "short_description": d.get("W")}
            for d in _records((data / "cran.all.1400").read_text())]
    # cran.qry's ids are not cranqrel's: queries are numbered 1..225 in file order
    queries = {str(i): q["W"] for i, q in enumerate(_records((data / "cran.qry").read_text()), 1)}
    judged = {}
    for line in (data / "cranqrel").read_text().split("\n"):
        if line.strip():
            qid, doc, code = line.split()[:3]
            if 1 <= int(code) <= 4:
                judged[(qid, doc)] = Judgment(qid, queries[qid], doc, 5 - int(code))
    return docs, queries, JudgmentList(tuple(judged.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    ap.add_argument("--index", default="bench-cranfield")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--unseen", type=int, default=75)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, help="Default: bench/results/cranfield[_FLAVOR].json.")
    args = ap.parse_args()
    if not (args.data / "cranqrel").is_file():
        raise SystemExit(f"{args.data}: no Cranfield collection (cran.all.1400, cran.qry, "
                         "cranqrel); pass --data")
    started = time.monotonic()
    engine = connect_engine(args)
    encoder = configured_encoder()
    docs, queries, judgments = load(args.data)
    judged_qids = list(judgments.by_query())
    order = np.random.default_rng(args.seed).permutation(len(judged_qids))
    unseen = {judged_qids[i] for i in order[:args.unseen]}
    train_j = JudgmentList(tuple(j for j in judgments if j.qid not in unseen))
    test_j = JudgmentList(tuple(j for j in judgments if j.qid in unseen))

    with tempfile.TemporaryDirectory() as tmp:
        products = Path(tmp) / "cranfield.jsonl"
        products.write_text("".join(json.dumps(d) + "\n" for d in docs))
        index_catalogue(engine, args.index, [products], encoder, progress=False)
        chorus = load_feature_set(FEATURE_SETS / "chorus.yaml")
        fs = private_feature_set(engine, chorus, "cranbench", features=tuple(
            f for f in chorus.features if f.name not in PRODUCT_ONLY))
        table = log_judgments(engine, args.index, fs, train_j, encoder, recall=Recall(args.window),
                              progress=False).matrix
        positives = [i for i in range(len(table)) if table.judged[i] and table.grades[i] > 0]
        in_window = sum(1 for i in positives if table.ranks[i] > 0)

        evaluator = Evaluator(test_j)
        results = {"bm25": evaluator.evaluate(run_of(search_many(
            engine, args.index, evaluator.queries, Ranker("bm25"), None, size=args.window,
            source=False)))}
        unseen_table = log_judgments(engine, args.index, fs, test_j, encoder,
                                     recall=Recall(args.window),
                                     progress=False).matrix
        for name, run in single_feature_runs(unseen_table).items():
            results[f"feature:{name}"] = evaluator.evaluate(run)
        params_for = query_params(fs.params, encoder)
        chosen, cv, parity = {}, {}, []
        for label, candidates in [("ltr (default)", CANDIDATE_SETS),
                                  *((f"ltr (train on {c})", (c,)) for c in CANDIDATE_SETS)]:
            result = train(table, Path(tmp) / label, params=TrainParams(), device="cpu",
                           candidates=candidates)
            chosen[label], cv[label] = result.candidates, result.cv.to_dict()
            report = deploy(engine, args.index, ModelArtifact.load(result.artifact), fs,
                            table.docs_by_query(), params_for, activate=False)
            parity.append(report.parity.max_delta)
            if not report.parity.passed:
                raise SystemExit(f"{label}: parity failed: {report.to_dict()}")
            model = ActiveModel(report.model, fs.engine_name, fs.params)
            run = search_many(engine, args.index, evaluator.queries,
                              Ranker(label, model, args.window), encoder, size=args.window,
                              source=False)
            results[label] = evaluator.evaluate(run_of(run))
        remove_deployed(engine, fs.name, engine.alias_targets(args.index))

    table_rows = {n: {m: round(ev.mean[m], 4) for m in SHOWN} for n, ev in results.items()}
    singles = {n: r for n, r in table_rows.items() if n.startswith("feature:")}
    best = max(singles, key=lambda n: singles[n]["ndcg@10"])
    for name, r in table_rows.items():
        print(f"{name:34}" + "".join(f"{r[m]:12.4f}" for m in SHOWN)
              + f"{r['ndcg@10'] / table_rows['bm25']['ndcg@10']:9.3f}x")
    significance = {}
    for a, b in [("bm25", "ltr (default)"), (best, "ltr (default)"),
                 ("ltr (train on window+judged)", "ltr (train on window)"),
                 ("ltr (train on window+judged)", "ltr (default)")]:
        significance[f"{b} vs {a}"] = paired(compare((a, results[a]), (b, results[b]), SHOWN))
    write_result({
        "training_queries": len(train_j.by_query()), "unseen_queries": len(test_j.by_query()),
        "window": args.window, "rows_logged": len(table),
        "training_positives": len(positives), "training_positives_in_window": in_window,
        "training_rows_chosen": chosen, "serving_cv": cv, "best_single_feature": best,
        "table": table_rows, "significance": significance,
        "parity_max_abs_delta": max(parity), "encoder": encoder.name,
        "seconds": round(time.monotonic() - started, 1),
    }, args.out or result_path("cranfield", args))


if __name__ == "__main__":
    main()
