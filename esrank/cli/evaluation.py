"""esrank evaluate/compare/runs/report and the kibana/dashboards imports: how good a ranking
is, against what, over time, and at what cost."""

from __future__ import annotations

from pathlib import Path

import click

from esrank.cli.common import (
    FORMATS,
    OutputFile,
    app_of,
    emit,
    options,
    settings_of,
    shopper_options,
)

_eval_options = options(
    click.option("--judgments", "judgments_file", required=True,
                 type=click.Path(path_type=Path), help="Judgment file (csv, ranklib, trec, srw)."),
    click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension)."),
    click.option("--window", type=int, help="Rescore window (default: ESRANK_RESCORE_WINDOW)."),
    click.option("--depth", default=100, show_default=True,
                 help="Hits fetched per query (condensed metrics cut after dropping unjudged)."))


@click.command("evaluate")
@_eval_options
@click.option("--config", "configs", multiple=True,
              help="'bm25', 'active', a model name, or a baseline over the recall stage's "
                   "lists: 'knn' (vector search alone), 'rrf' (reciprocal rank fusion), "
                   "'linear' (min-max mix, BM25 weight tuned by query-grouped CV); repeatable "
                   "(default: bm25 and active); each may add stages after the model, e.g. "
                   "active+mmr0.7+cap2 (docs/diversity.md). Each is reported beside its "
                   "candidates' ceiling@10 and the share of the BM25 -> ceiling gap it closes.")
@click.option("--per-query", is_flag=True, help="Also print each query's metrics.")
@click.option("--push", is_flag=True,
              help="Store the run in the engine (esrank-eval-queries, esrank-eval-hits) for "
                   "Kibana / Dashboards; prints the run id.")
@click.option("--engine-rank-eval", "rank_eval", is_flag=True,
              help="Cross-check: the engine's own _rank_eval (NDCG@10 with gain 2^g-1, MRR@10) "
                   "for each configuration's request, next to esrank's.")
@click.option("--machine-grades", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also evaluate against the judgments plus these machine grades (esrank "
                   "judgments llm) for the pairs no person judged: columns 'NAME +machine'.")
@shopper_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def evaluate_cmd(ctx: click.Context, judgments_file: Path, fmt: str | None, window: int | None,
                 depth: int, configs: tuple[str, ...], per_query: bool, push: bool,
                 rank_eval: bool, machine_grades: Path | None, shopper, as_json: bool) -> None:
    """NDCG@5/10, MRR, ERR@10, P@10 per query and mean, standard and condensed, + judged@10,
    and each configuration's exposure by supplier against relevance (docs/exposure.md).

    Standard: the live ranking, unjudged docs count as 0. Condensed: unjudged docs are
    removed before cutting at k. judged@10: share of the top 10 that is judged. With
    --user/--brand/--price-band every query is ranked for that shopper. With
    --machine-grades each configuration gets a second column, 'NAME +machine', where the
    machine grades fill the pairs no person judged; with --push too, those columns are stored
    as configurations of their own and each stored hit no person judged carries its machine
    grade and model (the dashboard's machine-grades panel).
    """
    from esrank.evaluation.evaluate import evaluate
    from esrank.personal.serving import params_for

    app = app_of(ctx)
    run = evaluate(app, judgments_file, configs or ("bm25", "active"), fmt=fmt, window=window,
                   depth=depth, rank_eval=rank_eval, push=push, machine=machine_grades,
                   shopper_params=params_for(app, shopper))
    emit(run.to_dict(judgments_file, machine_grades), as_json, evaluate_text(run, per_query))


def evaluate_text(run, per_query: bool) -> str:
    """An EvaluationRun as text: the mean metrics per configuration, each beside its
    candidates' ceiling (figures_text), each query's metrics, where it was stored, and the
    _rank_eval checks."""
    from esrank.judgments.metrics import METRICS

    results, checks, run_id = run.results, run.checks, run.run_id
    width = max(14, *(len(name) + 2 for name in results))
    header = f"{'metric':20}" + "".join(f"{name:>{width}}" for name in results)
    lines = [header] + [f"{m:20}" + "".join(f"{ev.mean[m]:{width}.4f}"
                                            for ev in results.values()) for m in METRICS]
    lines += ["", *figures_text({n: run.figures(n) for n in results if n in run.ceilings}),
              *exposure_text({n: run.figures(n) for n in results})]
    if per_query:
        for name, ev in results.items():
            lines.append(f"\n{name}: ndcg@10 / ndcg@10_condensed / judged@10 per query")
            lines += [f"  {q[:40]:40} {v['ndcg@10']:.3f} {v['ndcg@10_condensed']:.3f} "
                      f"{v['judged@10']:.1f}" for q, v in sorted(ev.per_query.items())]
    if run_id:
        lines.append(f"\npushed as run {run_id} (esrank-eval-queries, esrank-eval-hits)")
    for name, check in checks.items():
        if "unavailable" in check:
            lines.append(f"\n{name} vs the engine's _rank_eval: not checked, "
                         f"{check['unavailable']}")
            continue
        lines.append(f"\n{name} vs the engine's _rank_eval:")
        lines += [f"  {m:22} esrank {c['esrank']:.6f}  engine {c['engine']:.6f}  "
                  f"max |diff| per query {c['max_abs_diff']:.2g}" for m, c in check.items()]
    return "\n".join(lines)


def figures_text(rows: dict[str, dict]) -> list[str]:
    """One line per configuration (label -> EvaluationRun.figures): its candidate set, its
    NDCG@10 beside that set's ceiling@10 and the share of the BM25 -> ceiling gap it closes
    (each standard / condensed), and `linear`'s BM25 weight per CV fold."""
    from esrank.evaluation.ceilings import SHOWN

    if not rows:
        return []

    def pair(values: dict, fmt: str) -> str:
        return " / ".join("n/a" if values[m] is None else format(values[m], fmt) for m in SHOWN)

    width = max(14, *(len(name) + 2 for name in rows))
    lines = [f"{'config':{width}}{'candidates':20}{'NDCG@10':>17}{'ceiling@10':>17}"
             f"{'gap closed':>17}   (standard / condensed)"]
    for name, r in rows.items():
        weights = r.get("linear_weights")
        lines.append(f"{name:{width}}{r['candidates']:20}{pair(r, '.4f'):>17}"
                     f"{pair(r['ceiling@10'], '.4f'):>17}{pair(r['gap_closed'], '.1%'):>17}"
                     + (f"   BM25 weight per fold {' '.join(f'{w:g}' for w in weights)}"
                        if weights else ""))
    return lines


def exposure_text(rows: dict[str, dict]) -> list[str]:
    """One line per configuration (label -> EvaluationRun.figures): its exposure disparity
    by supplier in the top 10, per query, the share of exposure on judged products, and its
    most over- and under-exposed supplier (exposure / relevance share)."""
    rows = {name: r for name, r in rows.items() if "exposure" in r}
    if not rows:
        return []

    def first(shares: list[dict]) -> str:
        return (f"{shares[0]['supplier']} {shares[0]['exposure']:.1%} / "
                f"{shares[0]['relevance']:.1%}" if shares else "-")

    width = max(14, *(len(name) + 2 for name in rows))
    lines = ["", "exposure by supplier in the top 10 (disparity 0: exposure proportional to "
             "relevance; docs/exposure.md)",
             f"{'config':{width}}{'disparity':>10}{'per query':>10}{'judged':>8}   "
             f"{'most over-exposed':34}most under-exposed   (exposure / relevance)"]
    for name, r in rows.items():
        e = r["exposure"]
        lines.append(f"{name:{width}}{e['disparity']:10.4f}{e['per_query_disparity']:10.4f}"
                     f"{e['judged_share']:8.1%}   {first(e['over_exposed']):34}"
                     f"{first(e['under_exposed'])}")
    return lines


@click.command("compare")
@_eval_options
@click.option("-a", "config_a", default="bm25", show_default=True, help="Baseline configuration.")
@click.option("-b", "config_b", default="active", show_default=True, help="Candidate.")
@click.option("--push", is_flag=True,
              help="Store the per-query deltas (esrank-eval-deltas) for the dashboards.")
@click.option("--html", "html", type=OutputFile(),
              help="Also write the comparison page with this run's data built in (one file).")
@click.option("--machine-grades", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Machine grades (esrank judgments llm) the page shows, marked, for products "
                   "no person judged (default: ESRANK_MACHINE_GRADES); the figures stay "
                   "human-only.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def compare_cmd(ctx: click.Context, judgments_file: Path, fmt: str | None, window: int | None,
                depth: int, config_a: str, config_b: str, push: bool, html: Path | None,
                machine_grades: Path | None, as_json: bool) -> None:
    """B vs A on every judged query: means, delta, paired t-test and randomization test
    p-values, and wins/ties/losses per metric; each beside its candidates' ceiling@10 and the
    share of the BM25 -> ceiling gap it closes."""
    from esrank.evaluation.evaluate import compare

    data = compare(app_of(ctx), judgments_file, config_a, config_b, fmt=fmt, window=window,
                               depth=depth, push=push, html=html, machine=machine_grades)
    emit(data, as_json, compare_text(data, html, push=push))


def compare_text(data: dict, html: Path | None, *, push: bool) -> str:
    """compare's answer as text: per metric both means, the delta, both tests and W/T/L; then
    each side beside its candidates' ceiling (figures_text)."""
    na, nb = data["a"], data["b"]
    wa, wb = max(10, len(na) + 2), max(10, len(nb) + 2)
    lines = [f"{nb} vs {na} over {data['queries']} queries",
             f"{'metric':20}{na:>{wa}}{nb:>{wb}}{'delta':>9}{'rel':>8}{'p(t)':>8}{'p(rand)':>9}"
             f"{'W/T/L':>12}"]
    for metric, m in data["metrics"].items():
        wtl = f"{m['wins']}/{m['ties']}/{m['losses']}"
        lines.append(f"{metric:20}{m['a']:{wa}.4f}{m['b']:{wb}.4f}{m['delta']:+9.4f}"
                     f"{m['relative']:+8.1%}{m['p_ttest']:8.3f}{m['p_randomization']:9.4f}"
                     f"{wtl:>12}")
    lines += ["", *figures_text(data["configs"]), *exposure_text(data["configs"])]
    if push:
        lines.append(f"pushed as comparison {data['comparison_id']} (esrank-eval-deltas)")
    if html:
        lines.append(f"wrote {html}")
    return "\n".join(lines)


@click.command("runs")
@click.option("--limit", default=50, show_default=True, help="Newest runs to show.")
@click.option("--metric", "metrics", multiple=True,
              help="Metric to average; repeatable (default: ndcg@10 and ndcg@10_condensed).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs_cmd(ctx: click.Context, limit: int, metrics: tuple[str, ...], as_json: bool) -> None:
    """Evaluation runs stored by `esrank evaluate --push`, oldest first: each configuration's
    mean metrics per run, so a model's history reads top to bottom (the comparison page plots
    it)."""
    from esrank.evaluation.runs import HISTORY_METRICS, run_history

    metrics = metrics or HISTORY_METRICS
    rows = run_history(app_of(ctx).engine, metrics, runs=limit)
    lines = [f"{'time':20} {'run':28} {'config':24}" + "".join(f"{m:>20}" for m in metrics)
             + f"{'queries':>9}"]
    lines += [f"{r['timestamp'][:19]:20} {r['run_id']:28} {r['config']:24}"
              + "".join(f"{r[m]:20.4f}" for m in metrics) + f"{r['queries']:9}" for r in rows]
    emit({"metrics": list(metrics), "runs": rows}, as_json,
         "\n".join(lines) if rows else "no runs stored yet: esrank evaluate --push adds one")


def _import_command(flavor: str, product: str, port: int):
    @click.command("import")
    @click.option("--url", default=f"http://127.0.0.1:{port}", show_default=True,
                  help=f"{product} base URL.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def command(ctx: click.Context, url: str, as_json: bool) -> None:
        from esrank.core.auth import redact
        from esrank.evaluation.dashboards import import_saved_objects

        s = settings_of(ctx)
        answer = import_saved_objects(url, flavor, s.auth, timeout=s.timeout)
        emit(answer, as_json, f"imported {answer.get('successCount', 0)} saved objects into "
             f"{product} at {redact(url)}: dashboard 'esrank relevance comparison'")

    command.help = (f"Load esrank's data views, visualizations and the 'esrank relevance "
                    f"comparison' dashboard into {product} (overwrites earlier versions).")
    return command


@click.group()
def kibana() -> None:
    """Kibana saved objects for esrank's evaluation indices."""


@click.group()
def dashboards() -> None:
    """OpenSearch Dashboards saved objects for esrank's evaluation indices."""


kibana.add_command(_import_command("kibana", "Kibana", 5601))
dashboards.add_command(_import_command("opensearch-dashboards", "OpenSearch Dashboards", 5601))


@click.command("report")
@click.option("--judgments", "judgments_file", required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension).")
@click.option("--model", "which", default="active", show_default=True,
              help="'active' or a deployed model name.")
@click.option("--feature-set", "feature_set_path", type=click.Path(path_type=Path),
              default=Path("feature_sets/chorus.yaml"), show_default=True,
              help="The model's feature-set file (its version must match the model's).")
@click.option("-o", "--output", type=OutputFile(), required=True,
              help="HTML report; the JSON goes beside it (.json).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def report_cmd(ctx: click.Context, judgments_file: Path, fmt: str | None, which: str,
               feature_set_path: Path, output: Path, as_json: bool) -> None:
    """Gain vs cost of a deployed model's features: drop-one retraining gain, the latency each
    feature adds to a rescore, and rescore window vs NDCG vs p50, beside each window's
    ceiling (its docs in grade order: the most any reranker of it can reach); and the model
    against BM25, knn, rrf and linear, each beside its candidates' ceiling@10 and the share
    of the BM25 -> ceiling gap it closes, and each one's exposure by supplier."""
    from esrank.evaluation.report import write_report

    report = write_report(app_of(ctx), judgments_file, which, feature_set_path, output, fmt)
    emit(report, as_json, report_text(report, output))


def report_text(report: dict, output: Path) -> str:
    """write_report's answer as text: gain and cost per feature, the window curve, the model
    against the baselines (figures_text) and where it was written."""
    lines = [f"{'feature':22}{'NDCG@10 w/o':>12}{'+p50 ms':>10}"]
    lines += [f"{f['feature']:22}{f['gain_drop_one']:+12.4f}{f['added_p50_ms']:+10.2f}"
              for f in report["features"]]
    lines += [f"window {w['window']:>4}: ndcg@10 {w['ndcg@10']:.4f} condensed "
              f"{w['ndcg@10_condensed']:.4f} ceiling {w['ceiling@10']:.4f} p50 "
              f"{w['p50_ms']:.2f} ms" for w in report["windows"]]
    lines += ["", "against the baselines:", *figures_text(report["baselines"]),
              *exposure_text(report["baselines"]),
              f"wrote {output} and {output.with_suffix('.json')}"]
    return "\n".join(lines)


COMMANDS = (evaluate_cmd, compare_cmd, runs_cmd, kibana, dashboards, report_cmd)
