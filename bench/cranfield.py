"""Train on what you serve, on a collection judged by pooling: Cranfield, unseen queries, with
the recall stage and the baselines a search team would run instead.

Cranfield's judgments were pooled from other systems: most judged documents are not in BM25's
top 100. A model trained on every logged row then sees positives that rank low on BM25 and
unjudged window docs that rank high, and can learn "low BM25 = relevant". This bench indexes
the 1,400 abstracts (title = .T, description = .W; the index has the HNSW graph), splits the
225 queries at random into 150 training and 75 unseen ones, and logs the Chorus feature set
without its product-only features (supplier, attributes, price, recency) for the training
queries over each candidate set: the BM25 top --window, and the recall stage (that window
joined with the --knn nearest abstracts; --knn 0 runs the BM25 window alone). Per candidate
set it trains one model per training candidate rows and esrank's default (which picks between
them by serving CV), uploads each through the parity gate, and serves it as an sltr rescore
of that candidate set for the unseen queries. Grades: 5 - Cleverdon code for codes 1-4.

On the unseen queries it reports NDCG@10 (standard and condensed) of BM25, the best single
feature (over the BM25 window), the fused baselines `knn`, `rrf` and `linear` (its BM25 weight
tuned on the training queries alone, over LINEAR_GRID) and each model; beside each, the
ceiling@10 of the candidates it ranks and the share of the BM25 -> ceiling gap it closes; paired
randomization tests of each model against the best baseline; and how many training positives
lie inside each candidate set. Writes bench/results/cranfield[_FLAVOR].json.

    python bench/cranfield.py [--data ../shared/data/cranfield] [--knn 50]
                              [--flavor elasticsearch]
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
from esrank.catalogue.query import DEFAULT_FIELDS
from esrank.catalogue.recall import Candidates, Recall
from esrank.deploy.registry import ActiveModel
from esrank.deploy.upload import deploy
from esrank.evaluation.ceilings import candidate_sets, ceiling, with_ceilings
from esrank.evaluation.significance import compare
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import Judgment, JudgmentList
from esrank.judgments.metrics import Evaluator
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.train import CANDIDATE_SETS, TrainParams, train
from esrank.ranking.fusion import LINEAR_GRID, fuse
from esrank.ranking.search import Ranker, run_of, search_many

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_ONLY = ("supplier_bm25", "supplier_and", "attributes_bm25", "price", "recency")
SHOWN = ("ndcg@10", "ndcg@10_condensed")
BASELINES = ("bm25", "knn", "rrf", "linear")


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


def split(judgments: JudgmentList, unseen: int, seed: int) -> tuple[JudgmentList, JudgmentList]:
    """(training, unseen) judgments: `unseen` judged queries drawn at random."""
    qids = list(judgments.by_query())
    order = np.random.default_rng(seed).permutation(len(qids))
    held = {qids[i] for i in order[:unseen]}
    return (JudgmentList(tuple(j for j in judgments if j.qid not in held)),
            JudgmentList(tuple(j for j in judgments if j.qid in held)))


def linear_weight(train_j: JudgmentList, found: dict[str, Candidates]) -> dict[float, float]:
    """BM25 weight of the `linear` baseline -> its mean NDCG@10 on the training queries."""
    evaluator = Evaluator(train_j)
    return {w: round(evaluator.evaluate({q: [d for d, _ in fuse("linear", c, w)]
                                         for q, c in found.items()}).mean["ndcg@10"], 4)
            for w in LINEAR_GRID}


def baselines(evaluator: Evaluator, found: dict[str, Candidates], weight: float) -> dict:
    """Configuration -> Evaluation on the unseen queries of BM25 and (with kNN lists) the
    fused baselines, all ranking the recall stage's lists `found`."""
    runs = {"bm25": {q: [d for d, _ in c.bm25] for q, c in found.items()}}
    if any(c.knn for c in found.values()):
        runs.update({kind: {q: [d for d, _ in fuse(kind, c, weight)] for q, c in found.items()}
                     for kind in ("knn", "rrf", "linear")})
    return {name: evaluator.evaluate(run) for name, run in runs.items()}


def set_ceilings(evaluator: Evaluator, found: dict[str, Candidates], recall: Recall
                 ) -> dict[str, dict[str, float]]:
    """Candidate-set label -> its ceiling@10 on the unseen queries: the BM25 window, the
    nearest abstracts alone and the recall stage."""
    sets = {Recall(recall.bm25).label: {q: Candidates(c.bm25) for q, c in found.items()}}
    if recall.knn:
        sets[Recall(0, recall.knn).label] = {q: Candidates((), c.knn) for q, c in found.items()}
        sets[recall.label] = found
    return {label: ceiling(evaluator, cands) for label, cands in sets.items()}


def models(engine, index: str, fs, table, recall: Recall, evaluator: Evaluator, encoder,
           tmp: Path) -> tuple[dict, dict, dict, list[float]]:
    """Train the default and one model per training candidate rows on `table` (logged over
    `recall`), upload each through the parity gate and serve it over `recall` for the unseen
    queries: (label -> Evaluation, label -> rows chosen, label -> serving CV, parity deltas)."""
    params_for = query_params(fs.params, encoder)
    results, chosen, cv, parity = {}, {}, {}, []
    for variant, rows in [("default", CANDIDATE_SETS),
                          *((f"train on {c}", (c,)) for c in CANDIDATE_SETS)]:
        label = f"ltr over {recall.label} ({variant})"
        result = train(table, tmp / label, params=TrainParams(), device="cpu", candidates=rows)
        chosen[label], cv[label] = result.candidates, result.cv.to_dict()
        report = deploy(engine, index, ModelArtifact.load(result.artifact), fs,
                        table.docs_by_query(), params_for, activate=False)
        parity.append(report.parity.max_delta)
        if not report.parity.passed:
            raise SystemExit(f"{label}: parity failed: {report.to_dict()}")
        model = ActiveModel(report.model, fs.engine_name, fs.params,
                            recall=recall if recall.knn else None)
        run = search_many(engine, index, evaluator.queries,
                          Ranker(label, model, recall.bm25, knn=recall.knn), encoder,
                          size=recall.bm25 + recall.knn, source=False)
        results[label] = evaluator.evaluate(run_of(run))
    return results, chosen, cv, parity


def significance(results: dict, best: dict[str, str], single: str, sets: list[Recall]) -> dict:
    """Paired tests: each model's default against the best baseline on each view (and, on the
    BM25 window, against the best single feature), the recall stage's default against the
    window's, and the window's rows against window + judged per candidate set."""
    pairs = []
    for r in sets:
        ltr = f"ltr over {r.label} (%s)"
        pairs += [(b, ltr % "default") for b in dict.fromkeys(best.values())]
        pairs.append((ltr % "train on window+judged", ltr % "train on window"))
    pairs.append((single, f"ltr over {sets[0].label} (default)"))
    if len(sets) > 1:
        pairs.append((f"ltr over {sets[0].label} (default)", f"ltr over {sets[1].label} (default)"))
    return {f"{b} vs {a}": paired(compare((a, results[a]), (b, results[b]), SHOWN))
            for a, b in pairs}


def measure(args, engine, encoder, tmp: Path) -> dict:
    """Index Cranfield, run every configuration on the unseen queries, clean up: what the
    JSON reports (before its table is summarised)."""
    docs, _, judgments = load(args.data)
    train_j, test_j = split(judgments, args.unseen, args.seed)
    recall = Recall(args.window, args.knn)
    evaluator = Evaluator(test_j)
    products = tmp / "cranfield.jsonl"
    products.write_text("".join(json.dumps(d) + "\n" for d in docs))
    index_catalogue(engine, args.index, [products], encoder, progress=False)
    chorus = load_feature_set(FEATURE_SETS / "chorus.yaml")
    fs = private_feature_set(engine, chorus, "cranbench", features=tuple(
        f for f in chorus.features if f.name not in PRODUCT_ONLY))

    def found(js: JudgmentList) -> dict[str, Candidates]:
        return candidate_sets(engine, args.index, Evaluator(js).queries, recall, encoder,
                              DEFAULT_FIELDS)

    tuning = linear_weight(train_j, found(train_j)) if recall.knn else {}
    weight = max(tuning, key=tuning.get) if tuning else 0.5
    unseen = found(test_j)
    results = baselines(evaluator, unseen, weight)
    set_of = {"rrf": recall.label, "linear": recall.label}
    if recall.knn:
        set_of["knn"] = Recall(0, recall.knn).label
    window_table = log_judgments(engine, args.index, fs, test_j, encoder,
                                 recall=Recall(args.window), progress=False).matrix
    for name, run in single_feature_runs(window_table).items():
        results[f"feature:{name}"] = evaluator.evaluate(run)
    sets = list(dict.fromkeys([Recall(args.window), recall]))
    out = trained(engine, args.index, fs, train_j, sets, evaluator, encoder, tmp)
    remove_deployed(engine, fs.name, engine.alias_targets(args.index))
    return {**out, "results": results | out["results"], "sets": sets,
            "set_of": set_of | out["set_of"], "linear_tuning": tuning,
            "linear_weight": weight if tuning else None,
            "training_queries": len(train_j.by_query()),
            "unseen_queries": len(test_j.by_query()),
            "ceilings": set_ceilings(evaluator, unseen, recall)}


def trained(engine, index: str, fs, train_j: JudgmentList, sets: list[Recall],
            evaluator: Evaluator, encoder, tmp: Path) -> dict:
    """Per candidate set: the training queries logged over it, how many training positives it
    holds, and its models (`models`) measured on the unseen queries."""
    out = {"rows_logged": {}, "training_positives_in": {}, "training_rows_chosen": {},
           "serving_cv": {}, "parity": [], "results": {}, "set_of": {}}
    for r in sets:
        table = log_judgments(engine, index, fs, train_j, encoder, recall=r,
                              progress=False).matrix
        positives = [i for i in range(len(table)) if table.judged[i] and table.grades[i] > 0]
        out["training_positives"] = len(positives)
        out["rows_logged"][r.label] = len(table)
        out["training_positives_in"][r.label] = sum(1 for i in positives if table.ranks[i] > 0)
        results, chosen, cv, parity = models(engine, index, fs, table, r, evaluator, encoder,
                                             tmp)
        out["results"] |= results
        out["set_of"] |= dict.fromkeys(results, r.label)
        out["training_rows_chosen"] |= chosen
        out["serving_cv"] |= cv
        out["parity"] += parity
    return out


def summary(m: dict, encoder: str, seconds: float) -> dict:
    """The JSON: every configuration's means beside its candidate set's ceiling and the gap it
    closes, and the paired tests; the table printed."""
    results, window = m["results"], m["sets"][0].label
    set_of = {name: m["set_of"].get(name, window) for name in results}
    closed = with_ceilings(results, set_of, m["ceilings"], results["bm25"].mean)
    table = {n: {k: round(ev.mean[k], 4) for k in SHOWN} | closed[n] for n, ev in results.items()}
    best = {k: max((b for b in BASELINES if b in results), key=lambda b: results[b].mean[k])
            for k in SHOWN}
    single = max((n for n in results if n.startswith("feature:")),
                 key=lambda n: results[n].mean["ndcg@10"])
    base = table["bm25"]["ndcg@10"]
    print(f"{'configuration':44}{'ndcg@10':>9}{'cond.':>8}{'x BM25':>8}{'ceiling':>9}{'gap':>8}")
    for name, r in table.items():
        gap = r["gap_closed"]["ndcg@10"]
        print(f"{name:44}{r['ndcg@10']:9.4f}{r['ndcg@10_condensed']:8.4f}"
              f"{r['ndcg@10'] / base:8.3f}{r['ceiling@10']['ndcg@10']:9.4f}"
              + (f"{gap:8.3f}" if gap is not None else "       -"))
    return {
        "training_queries": m["training_queries"], "unseen_queries": m["unseen_queries"],
        "candidate_sets": [r.label for r in m["sets"]], "rows_logged": m["rows_logged"],
        "training_positives": m["training_positives"],
        "training_positives_in": m["training_positives_in"],
        "linear_weight": m["linear_weight"], "linear_tuning_on_training": m["linear_tuning"],
        "training_rows_chosen": m["training_rows_chosen"], "serving_cv": m["serving_cv"],
        "best_single_feature": single, "best_baseline": best, "ceilings": m["ceilings"],
        "table": table, "significance": significance(results, best, single, m["sets"]),
        "parity_max_abs_delta": max(m["parity"]), "encoder": encoder,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    ap.add_argument("--index", default="bench-cranfield")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--knn", type=int, default=50, help="Nearest abstracts joined to the window "
                    "(0: the BM25 window alone, no fused baselines).")
    ap.add_argument("--unseen", type=int, default=75)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, help="Default: bench/results/cranfield[_FLAVOR].json.")
    args = ap.parse_args()
    if not (args.data / "cranqrel").is_file():
        raise SystemExit(f"{args.data}: no Cranfield collection (cran.all.1400, cran.qry, "
                         "cranqrel); pass --data")
    started = time.monotonic()
    encoder = configured_encoder()
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(args, connect_engine(args), encoder, Path(tmp))
    write_result(summary(m, encoder.name, time.monotonic() - started),
                 args.out or result_path("cranfield", args))


if __name__ == "__main__":
    main()
