"""Relevance on Chorus: BM25 vs each single feature vs the LTR model, query-grouped k-fold CV.

All on the live engine (the full catalogue indexed, the LTR plugin installed):
- BM25: the first pass as `esrank search` runs it.
- each single feature: the BM25 top --window reordered by that feature alone, with the
  feature values logged from the engine (an unmatched feature sorts last);
- LTR: per fold, a model trained (with the grid search, selected by serving CV) on the other
  folds' queries, uploaded through the parity gate, and served as an `sltr` rescore of the
  BM25 top --window for the held-out queries. Every query is scored by a model that never saw
  it. One row per training candidate set (the window's rows only; the window plus the judged
  docs outside it) and one for esrank's default, which picks between them by serving CV.

With --knn K the candidates are the recall stage's (the BM25 top --window joined with the K
nearest products): the table is logged over them, each fold's model is served over them, and
the baselines a search team would run instead are rows of their own over the same lists
(knn, rrf, linear with its weight tuned by query-grouped CV), each configuration beside its
candidates' ceiling@10 and the share of the BM25 -> ceiling gap it closes.

Reports NDCG@10, standard and condensed, with judged@10, the ratio to BM25 and paired
randomization tests. With --machine-grades (`esrank judgments llm --holes-of`), BM25, the
best single features and the LTR rows are also scored against human + machine grades
("+machine" rows), and one more LTR row is trained with the machine grades in its table.
With --cross-encoder-epochs N, a cross-encoder is fine-tuned per fold on the other folds'
judged pairs (torch), and used twice: reranking the LTR ranking's top --rerank, and as the
`cross_encoder` feature of feature_sets/chorus_ce.yaml (each fold's queries logged with the
cross-encoder that never saw them; served through the plugin with it): that row against
"ltr" is the feature's drop-one gain, on held-out queries, with a paired test.
Writes bench/results/relevance[_FLAVOR].json.

    python bench/relevance.py [--window 100] [--knn 200] [--flavor elasticsearch]
                              [--machine-grades F] [--cross-encoder-epochs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from _chorus import JUDGMENTS, private_feature_set, remove_deployed
from _report import (
    configured_encoder,
    connect_engine,
    engine_options,
    paired,
    result_path,
    single_feature_runs,
    write_result,
)

from esrank.catalogue.query import DEFAULT_FIELDS
from esrank.catalogue.recall import Recall
from esrank.deploy.registry import ActiveModel
from esrank.deploy.upload import deploy
from esrank.engine import Engine
from esrank.evaluation.ceilings import candidate_sets, ceiling, gap_closed, tuned_linear
from esrank.evaluation.significance import compare
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import JudgmentList, read_csv
from esrank.judgments.metrics import Evaluation, Evaluator
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.served import served_runs
from esrank.learn.train import CANDIDATE_SETS, TrainParams, grouped_folds, train
from esrank.ranking.fusion import FUSED, fuse
from esrank.ranking.search import Ranker, run_of, search_many

ROOT = Path(__file__).resolve().parent.parent
SHOWN = ("ndcg@10", "ndcg@10_condensed", "judged@10")
CE_FEATURE = "cross_encoder"  # the cross-encoder feature of --cross-encoder-feature-set


def cross_validated_ltr(engine: Engine, args, fs, table, evaluator: Evaluator, encoder,
                        candidates=CANDIDATE_SETS, cross_encoders=None
                        ) -> tuple[Evaluation, list[float], list[float], dict, list, list]:
    """Per fold: train on the other folds' queries (choosing among `candidates` by serving
    CV), upload through the parity gate, serve as an sltr rescore for the held-out queries
    (with `cross_encoders`, each fold's own fills the cross-encoder param).
    Returns the held-out evaluation of every query, the inner serving-CV means, the parity max
    |delta| per fold, the held-out runs, each fold's held-out queries and each fold's chosen
    training rows; removes the fold models."""
    per_query, folds_cv, parity, runs, folds, chosen = {}, [], [], {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (train_rows, test_rows) in enumerate(grouped_folds(table.qids, args.folds)):
            ce = cross_encoders[k] if cross_encoders else None
            params_for = query_params(fs.params, encoder, cross_encoder=ce)
            result = train(table.take(train_rows), Path(tmp) / f"fold{k}",
                           params=TrainParams(), search=not args.no_search, device="cpu",
                           candidates=candidates)
            folds_cv.append(result.cv_mean)
            chosen.append(result.candidates)
            test_queries = list(dict.fromkeys(table.queries[i] for i in test_rows))
            held_out = {q: [table.doc_ids[i] for i in test_rows if table.queries[i] == q]
                        for q in test_queries}
            report = deploy(engine, args.index, ModelArtifact.load(result.artifact), fs,
                            held_out, params_for, activate=False)
            parity.append(report.parity.max_delta)
            if not report.parity.passed:
                raise SystemExit(f"{fs.name} fold {k}: parity failed: {report.to_dict()}")
            model = ActiveModel(report.model, fs.engine_name, fs.params,
                                cross_encoder=ce.key if ce else None, recall=table.recall)
            run = search_many(engine, args.index, test_queries,
                              Ranker("ltr", model, args.window, knn=args.knn), encoder,
                              size=args.window, source=False, reranker=ce)
            ranked = run_of(run)
            fold_eval = evaluator.evaluate(ranked)
            per_query.update({q: fold_eval.per_query[q] for q in test_queries})
            runs.update(ranked)
            folds.append(test_queries)
    remove_deployed(engine, fs.name)
    mean = {m: float(np.mean([v[m] for v in per_query.values()]))
            for m in next(iter(per_query.values()))}
    return Evaluation(mean, per_query), folds_cv, parity, runs, folds, chosen


def fold_cross_encoders(engine: Engine, args, judgments, folds: list, tmp: Path) -> tuple[
        list, list[dict]]:
    """Per fold, a cross-encoder fine-tuned on the other folds' judged pairs (torch; run with
    ONNX Runtime), and its training summary."""
    from esrank.catalogue.lookup import fetch_texts
    from esrank.models.cross_encoder import load_cross_encoder
    from esrank.models.encoder import model_dir
    from esrank.models.tuning import train_cross_encoder

    texts = fetch_texts(engine, args.index, [j.doc_id for j in judgments])
    out, metas = [], []
    for k, held_out in enumerate(folds):
        held = set(held_out)
        pairs = [j for j in judgments if j.query not in held and j.doc_id in texts]
        meta = train_cross_encoder(model_dir(), [j.query for j in pairs],
                                   [texts[j.doc_id] for j in pairs], [j.grade for j in pairs],
                                   tmp / f"ce{k}", epochs=args.cross_encoder_epochs,
                                   progress=False)
        print(f"cross-encoder fold {k}: {meta['pairs']} pairs, {meta['seconds']}s", flush=True)
        out.append(load_cross_encoder(tmp / f"ce{k}", tmp / "onnx"))
        metas.append(meta)
    return out, metas


def cross_encoder_rerank(engine: Engine, args, evaluator: Evaluator, runs: dict, folds: list,
                         cross_encoders: list) -> Evaluation:
    """Each held-out query's LTR ranking with its top --rerank reordered by its fold's
    cross-encoder."""
    from esrank.catalogue.lookup import fetch_texts

    texts = fetch_texts(engine, args.index, [d for docs in runs.values()
                                             for d in docs[:args.rerank]])
    per_query = {}
    for held_out, ce in zip(folds, cross_encoders, strict=True):
        reranked = {}
        for q in held_out:
            top = runs[q][:args.rerank]
            scores = ce.score(q, [texts.get(d, "") or " " for d in top])
            reranked[q] = ([top[i] for i in np.argsort(-scores, kind="stable")]
                           + runs[q][args.rerank:])
        fold_eval = evaluator.evaluate(reranked)
        per_query.update({q: fold_eval.per_query[q] for q in held_out})
    mean = {m: float(np.mean([v[m] for v in per_query.values()]))
            for m in next(iter(per_query.values()))}
    return Evaluation(mean, per_query)


def out_of_fold_table(engine: Engine, args, fs, judgments, encoder, folds: list,
                      cross_encoders: list, order: tuple[str, ...]):
    """The table of `fs` (with a cross-encoder param) where each fold's queries are logged
    with the cross-encoder that never saw them; rows grouped by query in `order`'s query
    order, so the CV folds stay those the cross-encoders were trained against."""
    parts = []
    for held_out, ce in zip(folds, cross_encoders, strict=True):
        held = set(held_out)
        fold = JudgmentList(tuple(j for j in judgments if j.query in held))
        parts.append(log_judgments(engine, args.index, fs, fold, encoder,
                                   recall=Recall(args.window), progress=False,
                                   cross_encoder=ce).matrix)
    place = {q: i for i, q in enumerate(dict.fromkeys(order))}
    qids = [q for m in parts for q in m.qids]
    rows = sorted(range(len(qids)), key=lambda i: place[qids[i]])  # stable: logged order
    cat = dataclasses.replace(
        parts[0], qids=tuple(qids), queries=tuple(q for m in parts for q in m.queries),
        doc_ids=tuple(d for m in parts for d in m.doc_ids),
        grades=tuple(g for m in parts for g in m.grades),
        values=np.vstack([m.values for m in parts]),
        ranks=tuple(r for m in parts for r in m.ranks),
        judged=tuple(j for m in parts for j in m.judged), cross_encoder=None)
    return cat.take(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_options(ap)
    ap.add_argument("--index", default="products")
    ap.add_argument("--feature-set", type=Path, default=ROOT / "feature_sets" / "chorus.yaml")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--knn", type=int, default=0,
                    help="Join the K nearest products to the window (the recall stage).")
    ap.add_argument("--no-search", action="store_true", help="Skip the grid search.")
    ap.add_argument("--cross-encoder-epochs", type=int, default=0,
                    help="Also fine-tune a cross-encoder per fold (needs torch): rerank the "
                         "LTR ranking's top --rerank with it, and train LTR with its score as "
                         "a feature (--cross-encoder-feature-set).")
    ap.add_argument("--cross-encoder-feature-set", type=Path,
                    default=ROOT / "feature_sets" / "chorus_ce.yaml")
    ap.add_argument("--rerank", type=int, default=20)
    ap.add_argument("--machine-grades", type=Path,
                    help="LLM grades of unjudged pairs (esrank judgments llm --holes-of).")
    ap.add_argument("--out", type=Path, help="Default: bench/results/relevance[_FLAVOR].json.")
    args = ap.parse_args()
    started = time.monotonic()

    engine = connect_engine(args)
    encoder = configured_encoder()
    fs = private_feature_set(engine, load_feature_set(args.feature_set), "relbench")
    judgments = read_csv(JUDGMENTS)
    evaluator = Evaluator(judgments)
    recall = Recall(args.window, args.knn)
    baselines = FUSED if args.knn else ()  # what a search team would run instead
    table = log_judgments(engine, args.index, fs, judgments, encoder, recall=recall,
                          progress=False).matrix

    machine = None
    if args.machine_grades:
        from esrank.judgments.llm_judge import read_grades, with_machine_grades

        machine = with_machine_grades(judgments, read_grades(args.machine_grades))
    bm25_run = {q: [h.doc_id for h in hits] for q, hits in search_many(
        engine, args.index, evaluator.queries, Ranker("bm25"), None, size=args.window,
        source=False).items()}
    results = {"bm25": evaluator.evaluate(bm25_run)}
    runs = {"bm25": bm25_run}
    found = candidate_sets(engine, args.index, evaluator.queries, recall,
                           encoder if args.knn else None, DEFAULT_FIELDS)
    if args.knn:  # the baselines over the same two lists
        for kind in ("knn", "rrf"):
            runs[kind] = {q: [d for d, _ in fuse(kind, c)] for q, c in found.items()}
            results[kind] = evaluator.evaluate(runs[kind])
        runs["linear"], linear_weights = tuned_linear(evaluator, found, args.folds)
        results["linear"] = evaluator.evaluate(runs["linear"])
    for name, run in single_feature_runs(table).items():
        results[f"feature:{name}"] = evaluator.evaluate(run)
        runs[f"feature:{name}"] = run

    ltr, folds_cv, parity, ltr_runs, folds, chosen = cross_validated_ltr(
        engine, args, fs, table, evaluator, encoder)
    results["ltr"] = ltr
    runs["ltr"] = ltr_runs
    if machine is not None:  # the same folds, the table logged with the machine grades too
        m_table = log_judgments(engine, args.index, fs, machine, encoder,
                                recall=recall, progress=False).matrix
        name = "ltr (trained with machine grades)"
        results[name], _, m_parity, runs[name], _, _ = cross_validated_ltr(
            engine, args, fs, m_table, evaluator, encoder)
        parity += m_parity
    for rows in CANDIDATE_SETS:  # each training candidate set on its own, same folds
        results[f"ltr (train on {rows})"], _, rows_parity, _, _, _ = cross_validated_ltr(
            engine, args, fs, table, evaluator, encoder, (rows,))
        parity += rows_parity
    if args.cross_encoder_epochs:  # one cross-encoder per fold: a rerank stage, a feature
        ce_tmp = tempfile.TemporaryDirectory()
        cross_encoders, ce_meta = fold_cross_encoders(engine, args, judgments, folds,
                                                      Path(ce_tmp.name))
        results[f"ltr + cross-encoder top {args.rerank}"] = cross_encoder_rerank(
            engine, args, evaluator, ltr_runs, folds, cross_encoders)
        ce_fs = private_feature_set(engine, load_feature_set(args.cross_encoder_feature_set),
                                    "relbench-ce")
        ce_table = out_of_fold_table(engine, args, ce_fs, judgments, encoder, folds,
                                     cross_encoders, table.qids)
        col = ce_table.feature_names.index(CE_FEATURE)
        results[f"feature:{CE_FEATURE}"] = evaluator.evaluate(served_runs(
            ce_table, np.arange(len(ce_table)),
            np.nan_to_num(ce_table.values[:, col], nan=-np.inf)))
        name = f"ltr + {CE_FEATURE} feature"
        results[name], _, ce_parity, runs[name], _, _ = cross_validated_ltr(
            engine, args, ce_fs, ce_table, evaluator, encoder, cross_encoders=cross_encoders)
        parity += ce_parity
        ce_tmp.cleanup()
    # the same without the neural features (and without the query vector param)
    lexical = private_feature_set(
        engine, fs, "relbench-lex", params=tuple(p for p in fs.params if p.type != "vector"),
        features=tuple(f for f in fs.features if not any(
            fs.param(n).type == "vector" for n in f.params)))
    lex_encoder = encoder if args.knn else None  # the nearest products need it
    lex_table = log_judgments(engine, args.index, lexical, judgments, lex_encoder,
                              recall=recall, progress=False).matrix
    results["ltr (no neural features)"], _, lex_parity, _, _, _ = cross_validated_ltr(
        engine, args, lexical, lex_table, evaluator, lex_encoder)
    parity += lex_parity

    rows = {name: {m: round(ev.mean[m], 4) for m in SHOWN} for name, ev in results.items()}
    bm25 = rows["bm25"]
    top = ceiling(evaluator, found)
    singles = {n: r for n, r in rows.items() if n.startswith("feature:")}
    best = {m: max(singles.items(), key=lambda kv: kv[1][m]) for m in SHOWN[:2]}
    if machine is not None:
        both = Evaluator(machine)
        for name in dict.fromkeys(["bm25", best["ndcg@10"][0], best["ndcg@10_condensed"][0],
                                   *(n for n in runs if n.startswith("ltr"))]):
            results[f"{name} +machine"] = both.evaluate(runs[name])
            rows[f"{name} +machine"] = {m: round(results[f"{name} +machine"].mean[m], 4)
                                        for m in SHOWN}
    print(f"{'configuration':30}" + "".join(f"{m:>19}" for m in SHOWN) + f"{'x BM25':>14}")
    for name, r in rows.items():
        base = rows["bm25 +machine"] if name.endswith("+machine") else bm25
        ratio = (f"{r['ndcg@10'] / base['ndcg@10']:.3f}/"
                 f"{r['ndcg@10_condensed'] / base['ndcg@10_condensed']:.3f}")
        print(f"{name:30}" + "".join(f"{r[m]:19.4f}" for m in SHOWN) + f"{ratio:>14}")
    significance = {}
    for other in ("bm25", *baselines, best["ndcg@10"][0],
                  best["ndcg@10_condensed"][0], "ltr (no neural features)",
                  *(f"ltr (train on {r})" for r in CANDIDATE_SETS)):
        report = compare((other, results[other]), ("ltr", ltr), SHOWN[:2])
        significance[f"ltr vs {other}"] = paired(report)
    if machine is not None:
        significance["ltr (trained with machine grades) vs ltr"] = paired(compare(
            ("ltr", ltr), ("machine", results["ltr (trained with machine grades)"]), SHOWN[:2]))
        significance["ltr (trained with machine grades) vs ltr, +machine"] = paired(compare(
            ("ltr", results["ltr +machine"]),
            ("machine", results["ltr (trained with machine grades) +machine"]), SHOWN[:2]))
    for name in [n for n in results if "cross-encoder" in n]:
        report = compare(("ltr", ltr), (name, results[name]), SHOWN[:2])
        significance[f"{name} vs ltr"] = paired(report)
    with_ce = f"ltr + {CE_FEATURE} feature"
    if with_ce in results:  # the new feature's drop-one gain, and the model against the rest
        for other in ("ltr", "bm25", best["ndcg@10"][0], best["ndcg@10_condensed"][0]):
            significance[f"{with_ce} vs {other}"] = paired(compare(
                (other, results[other]), (with_ce, results[with_ce]), SHOWN[:2]))
    summary = {
        "queries": len(evaluator.queries), "folds": args.folds, "window": args.window,
        "candidates": recall.label, "ceiling@10": top,
        "gap_closed": {n: gap_closed(results[n].mean, results["bm25"].mean, top)
                       for n in ("ltr", *baselines)},
        "linear_weights": linear_weights if args.knn else None,
        "grid_search": not args.no_search, "rows_logged": len(table),
        "machine_grades": (None if machine is None else
                           {"file": str(args.machine_grades),
                            "pairs_added": len(machine) - len(judgments)}),
        "training_rows_chosen_per_fold": chosen,
        "ltr_vs_bm25": {m: round(rows["ltr"][m] / bm25[m], 4) for m in SHOWN[:2]},
        "best_single_feature": {m: {"feature": best[m][0], "value": best[m][1][m]}
                                for m in SHOWN[:2]},
        "ltr_beats_best_single": {m: rows["ltr"][m] > best[m][1][m] for m in SHOWN[:2]},
        "significance": significance,
        "parity_max_abs_delta": max(parity), "inner_cv_ndcg@10": [round(x, 4) for x in folds_cv],
        "table": rows, "encoder": encoder.name, "seconds": round(time.monotonic() - started, 1),
    }
    if with_ce in results:
        summary["cross_encoder"] = {
            "epochs": args.cross_encoder_epochs, "feature_set": str(args.cross_encoder_feature_set),
            "folds": ce_meta, f"{with_ce}_vs_bm25": {
                m: round(rows[with_ce][m] / bm25[m], 4) for m in SHOWN[:2]}}
    write_result(summary, args.out or result_path("relevance", args))


if __name__ == "__main__":
    main()
