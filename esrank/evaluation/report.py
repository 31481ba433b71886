"""Gain vs cost of a model's features: is each feature worth its milliseconds?

Four measurements, all on the live engine except the first:
- relevance gain per feature: drop-one retraining on the model's logged table (query-grouped
  5-fold CV NDCG@10 with the model's own parameters, without the feature, against with all);
- latency per feature: the `sltr` rescore of the BM25 top `window` computing that feature
  alone (a one-feature set in the store), p50 over the judged queries, minus BM25 alone; a
  feature reading cross-encoder scores also costs, outside the engine, the first pass that
  fetches the window's texts and the cross-encoder scoring them (p50 per query);
- rescore window: NDCG@10 (standard and condensed) and p50 latency of the model for several
  window sizes;
- against the baselines: BM25, the fused baselines over the recall stage's lists (`knn`,
  `rrf`, `linear` with its weight tuned by CV) and the model, each beside the ceiling of the
  candidates it ranks and the share of the BM25 -> ceiling gap it closes, and each one's
  exposure by supplier against relevance (exposure.py).
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from esrank.core.errors import ModelError
from esrank.core.feature_set import FeatureSet, needs_cross_encoder
from esrank.core.files import write_file
from esrank.engine import Engine, Ranked, Rescore
from esrank.evaluation.ceilings import SHOWN
from esrank.evaluation.evaluate import BM25, evaluate
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.metrics import Evaluator
from esrank.learn.artifact import ModelArtifact
from esrank.learn.table import FeatureMatrix, read_table
from esrank.learn.train import TrainParams, cross_validate
from esrank.ranking.fusion import FUSED
from esrank.ranking.search import Ranker, ranked_request, run_of, search_many, window_texts

WINDOWS = (10, 25, 50, 100, 200, 400)


def _p50(engine: Engine, index: str, requests: Sequence[Ranked], repeats: int) -> float:
    """p50 ms of each search, as served (both requests where the engine needs two)."""
    times = []
    for _ in range(repeats):
        for request in requests:
            started = time.perf_counter()
            engine.ranked(index, [request])
            times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50))


def feature_gain(table: FeatureMatrix, params: TrainParams, folds: int = 5,
                 candidates: str = "window") -> dict:
    """Serving-CV NDCG@10 with every feature, and the change when each one is left out
    (trained on the model's candidate rows)."""
    full = cross_validate(table, params, folds, candidates=candidates).mean
    out = {}
    for i, name in enumerate(table.feature_names):
        keep = [j for j in range(len(table.feature_names)) if j != i]
        without = dataclasses.replace(table, feature_names=tuple(
            table.feature_names[j] for j in keep), values=table.values[:, keep])
        out[name] = cross_validate(without, params, folds, candidates=candidates).mean - full
    return {"cv_ndcg@10_all_features": full, "drop_one_delta": out}


def feature_latency(engine: Engine, index: str, feature_set: FeatureSet, queries: Sequence[str],
                    params_for, *, window: int = 100, repeats: int = 2) -> dict:
    """p50 ms of BM25 alone, and of BM25 + an sltr rescore computing each feature alone."""
    base = Ranker("bm25", window=window)
    plain = [ranked_request(q, base, None, 10, source=False) for q in queries]
    bm25 = _p50(engine, index, plain, repeats)
    params, outside = _params(engine, index, list(queries), base, params_for)
    out = {}
    for feature in feature_set.features:
        single = replace(feature_set, name=f"{feature_set.name}-only-{feature.name}",
                         features=(feature,))
        engine.put_feature_set(single)
        requests = [replace(r, rescore=Rescore(single.engine_name, p, window=window,
                                               query_weight=1.0))
                    for r, p in zip(plain, params, strict=True)]
        out[feature.name] = _p50(engine, index, requests, repeats) - bm25
        if needs_cross_encoder([feature_set.param(n) for n in feature.params]):
            out[feature.name] += outside
    return {"bm25_p50_ms": bm25, "added_p50_ms": out, "window": window,
            "cross_encoder_p50_ms": outside if params_for.needs_docs else None}


def _params(engine: Engine, index: str, queries: list[str], ranker: Ranker, params_for
            ) -> tuple[list[dict], float]:
    """Each query's params (cross-encoder params over its `ranker.window` first-pass docs),
    and the p50 ms per query of what that takes outside the rescore (0 without a
    cross-encoder param)."""
    if not params_for.needs_docs:
        return params_for(queries), 0.0
    params, times = [], []
    for query in queries:
        started = time.perf_counter()
        params += params_for([query], window_texts(engine, index, [query], ranker))
        times.append((time.perf_counter() - started) * 1000)
    return params, float(np.percentile(times, 50))


def window_curve(engine: Engine, index: str, ranker: Ranker, evaluator: Evaluator, encoder,
                 params_for, windows: Sequence[int] = WINDOWS, repeats: int = 2) -> list[dict]:
    """For each rescore window: the model's NDCG@10 (standard, condensed), the window's
    ceiling (NDCG@10 of its docs in grade order: both views) and p50 ms."""
    rows = []
    for window in windows:
        r = replace(ranker, window=window)
        params, outside = _params(engine, index, evaluator.queries, r, params_for)
        run = search_many(engine, index, evaluator.queries, r, encoder, size=max(window, 10),
                          source=False, reranker=params_for.cross_encoder)
        mean = evaluator.evaluate(run_of(run)).mean
        ceiling = evaluator.evaluate(evaluator.ideal(run_of(run))).mean["ndcg@10"]
        requests = [ranked_request(q, r, p, 10, source=False)
                    for q, p in zip(evaluator.queries, params, strict=True)]
        rows.append({"window": window, "ndcg@10": mean["ndcg@10"],
                     "ndcg@10_condensed": mean["ndcg@10_condensed"], "ceiling@10": ceiling,
                     "p50_ms": _p50(engine, index, requests, repeats) + outside})
    return rows


def build_report(engine: Engine, index: str, artifact: ModelArtifact, feature_set: FeatureSet,
                 table: FeatureMatrix, ranker: Ranker, evaluator: Evaluator, encoder,
                 params_for, *, windows: Sequence[int] = WINDOWS) -> dict:
    """Everything above for one deployed model (`ranker`) and its training artifact."""
    p = artifact.meta.get("params") or {}
    params = TrainParams(**{k: v for k, v in p.items() if k in TrainParams.__dataclass_fields__})
    gain = feature_gain(table.blank(artifact.meta.get("excluded_features") or ()), params,
                        candidates=artifact.meta.get("training_rows") or "window+judged")
    latency = feature_latency(engine, index, feature_set, evaluator.queries, params_for)
    features = [{"feature": n, "gain_drop_one": gain["drop_one_delta"][n],
                 "importance_gain": (artifact.meta.get("importance_gain") or {}).get(n, 0.0),
                 "added_p50_ms": latency["added_p50_ms"][n]} for n in feature_set.feature_names]
    return {"model": ranker.name, "feature_set": feature_set.engine_name,
            "cv_ndcg@10_all_features": gain["cv_ndcg@10_all_features"],
            "bm25_p50_ms": latency["bm25_p50_ms"], "latency_window": latency["window"],
            "features": features,
            "windows": window_curve(engine, index, ranker, evaluator, encoder, params_for,
                                    windows)}


def against_baselines(app, judgments: Path, model: str, fmt: str | None = None
                      ) -> dict[str, dict]:
    """BM25, the fused baselines (when the recall stage has a kNN list) and `model` over
    every judged query: label -> its mean NDCG@10 beside its candidates' ceiling@10 and the
    share of the BM25 -> ceiling gap it closes (EvaluationRun.figures)."""
    configs = (BM25, *(FUSED if app.settings.recall_knn else ()), model)
    run = evaluate(app, judgments, configs, fmt=fmt)
    return {label: run.figures(label) for label in run.results}


def _baselines_html(rows: dict[str, dict]) -> str:
    """The "Against the baselines" table: both views of NDCG@10, ceiling@10 and gap closed."""
    def cells(values: dict, fmt: str) -> str:
        return "".join(f"<td>{'n/a' if values[m] is None else format(values[m], fmt)}</td>"
                       for m in SHOWN)

    def name(label: str, r: dict) -> str:
        weights = r.get("linear_weights")
        return html.escape(label) + (f" <small>(BM25 weight per fold "
                                     f"{' '.join(f'{w:g}' for w in weights)})</small>"
                                     if weights else "")

    body = "".join(f"<tr><td>{name(label, r)}</td><td>{html.escape(r['candidates'])}</td>"
                   f"{cells(r, '.4f')}{cells(r['ceiling@10'], '.4f')}"
                   f"{cells(r['gap_closed'], '.1%')}</tr>" for label, r in rows.items())
    return ("<table><tr><th rowspan=\"2\">configuration</th><th rowspan=\"2\">candidates</th>"
            "<th colspan=\"2\">NDCG@10</th><th colspan=\"2\">ceiling@10</th>"
            "<th colspan=\"2\">gap closed</th></tr><tr>"
            + "<th>standard</th><th>condensed</th>" * 3 + f"</tr>{body}</table>")


def _exposure_html(rows: dict[str, dict]) -> str:
    """The "Exposure by supplier" table: each configuration's disparity and its most over-
    and under-exposed suppliers (exposure / relevance share)."""
    def shares(listed: list[dict]) -> str:
        return "<br>".join(f"{html.escape(s['supplier'])} {s['exposure']:.1%} / "
                           f"{s['relevance']:.1%}" for s in listed) or "-"

    body = "".join(f"<tr><td>{html.escape(label)}</td><td>{e['disparity']:.4f}</td>"
                   f"<td>{e['per_query_disparity']:.4f}</td><td>{e['judged_share']:.1%}</td>"
                   f"<td>{shares(e['over_exposed'])}</td><td>{shares(e['under_exposed'])}</td>"
                   f"</tr>" for label, r in rows.items() if (e := r.get("exposure")))
    return ("<table><tr><th>configuration</th><th>disparity</th><th>per query</th>"
            "<th>judged</th><th>most over-exposed</th><th>most under-exposed</th></tr>"
            f"{body}</table>")


def _bars(rows: list[dict], key: str, fmt: str) -> str:
    top = max((abs(r[key]) for r in rows), default=0) or 1.0
    cells = []
    for r in rows:
        width = int(160 * abs(r[key]) / top)
        colour = "#4a4" if r[key] >= 0 else "#c44"
        cells.append(f'<td>{format(r[key], fmt)}</td><td><svg width="160" height="10">'
                     f'<rect width="{width}" height="10" fill="{colour}"/></svg></td>')
    return cells


def to_html(report: dict) -> str:
    """A self-contained page: the feature table (gain and cost side by side), the window
    curve and the model against the baselines."""
    rows = sorted(report["features"], key=lambda r: r["gain_drop_one"])
    gain, cost = _bars(rows, "gain_drop_one", "+.4f"), _bars(rows, "added_p50_ms", "+.2f")
    table = "".join(f"<tr><td>{html.escape(r['feature'])}</td>{g}{c}</tr>"
                    for r, g, c in zip(rows, gain, cost, strict=True))
    windows = "".join(f"<tr><td>{w['window']}</td><td>{w['ndcg@10']:.4f}</td>"
                      f"<td>{w['ndcg@10_condensed']:.4f}</td><td>{w['ceiling@10']:.4f}</td>"
                      f"<td>{w['p50_ms']:.2f}</td></tr>"
                      for w in report["windows"])
    payload = json.dumps(report).replace("</", "<\\/")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>esrank report: {html.escape(report['model'])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:20px}}td,th{{padding:2px 8px;text-align:left}}
</style></head><body>
<h1>Gain vs cost: {html.escape(report['model'])} ({html.escape(report['feature_set'])})</h1>
<p>CV NDCG@10 with all features (training table): {report['cv_ndcg@10_all_features']:.4f}.
BM25 alone: p50 {report['bm25_p50_ms']:.2f} ms.</p>
<h2>Per feature</h2>
<p>Gain: change in CV NDCG@10 when the model is retrained without the feature (negative: the
feature helps). Cost: p50 ms an sltr rescore of the top {report['latency_window']} computing
the feature alone adds to BM25.</p>
<table><tr><th>feature</th><th colspan="2">NDCG@10 without it</th>
<th colspan="2">added p50 ms</th></tr>{table}</table>
<h2>Rescore window</h2>
<p>Ceiling: NDCG@10 of the window's docs in grade order, the most any reranker of that window
can reach (both views).</p>
<table><tr><th>window</th><th>NDCG@10</th><th>condensed</th><th>ceiling</th><th>p50 ms</th>
</tr>{windows}
</table>
<h2>Against the baselines</h2>
<p>Each configuration over every judged query beside the ceiling of the candidates it ranks
(their perfect reordering) and the share of the BM25 &rarr; ceiling gap it closes (1: the
ceiling, 0: BM25). <code>linear</code>'s BM25 weight is tuned by query-grouped CV.</p>
{_baselines_html(report["baselines"])}
<h2>Exposure by supplier</h2>
<p>Each supplier's share of the attention the top 10 gives (rank r weighs 1/log2(1 + r)) against
its share of the judged relevance, each query sharing one unit of both (docs/exposure.md).
Disparity: half the L1 distance between the two (0: exposure proportional to relevance);
per query: its mean over the queries; judged: the share of exposure on judged products.
Suppliers listed with exposure / relevance.</p>
{_exposure_html(report["baselines"])}
<script type="application/json" id="data">{payload}</script>
</body></html>
"""


def write_report(app, judgments: Path, which: str, feature_set: Path, output: Path,
                 fmt: str | None = None) -> dict:
    """Gain vs cost of a deployed model's features and the model against the baselines,
    written as HTML (`output`) and JSON beside it, with `app`'s engine and encoders."""
    ranker = app.ranker(which)
    if ranker.model is None:
        raise ModelError(f"no active model for {app.settings.active_set!r}: pass --model")
    artifact = app.artifact(ranker.name)
    fs = load_feature_set(feature_set)
    if fs.engine_name != ranker.model.feature_set:
        raise ModelError(f"{feature_set} is {fs.engine_name}; {ranker.name} was trained on "
                         f"{ranker.model.feature_set}")
    encoder = app.query_encoder([ranker])
    report = build_report(app.engine, app.settings.index, artifact, fs,
                          read_table(Path(artifact.meta["data"]["table"])), ranker,
                          app.evaluator(judgments, fmt), encoder,
                          query_params(fs.params, encoder, cross_encoder=app.feature_reranker(fs)))
    report["baselines"] = against_baselines(app, judgments, ranker.name, fmt)
    write_file(output, to_html(report))
    write_file(output.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    return report
