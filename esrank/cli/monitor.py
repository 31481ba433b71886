"""esrank monitor: watch a deployed model (scheduled evaluation, online metrics, feature
drift); each command exits non-zero past its alert level, for cron or a Kubernetes CronJob."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from esrank.cli.common import FORMATS, app_of, emit

# exit codes of the monitor commands: 0 nothing to report, 1 esrank error (engine down, bad
# input), 2 usage, ALERT past the alert level (a regression, a flagged rate)
ALERT = 3


@click.group()
def monitor() -> None:
    """Watch the deployed model: evaluation runs over time, what shoppers do with its pages,
    and whether live features still look like the training table (docs/monitoring.md)."""


@monitor.command("run")
@click.option("--config", default="active", show_default=True,
              help="The configuration to evaluate: 'active', a model name, 'bm25', ...")
@click.option("--judgments", "judgments_file", type=click.Path(path_type=Path),
              help="The query set's judgments (default: ESRANK_JUDGMENTS); runs compare only "
                   "with runs on the same path.")
@click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension).")
@click.option("--window", type=int, help="Rescore window (default: ESRANK_RESCORE_WINDOW).")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=0.02, show_default=True,
              help="Exit 3 when NDCG@10 (standard or condensed) fell by more than this since "
                   "the last stored run.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run_cmd(ctx: click.Context, config: str, judgments_file: Path | None, fmt: str | None,
            window: int | None, max_drop: float, as_json: bool) -> None:
    """Evaluate a configuration, store the run and compare it with the last stored run of the
    same configuration on the same judgments. Exit 0: stable or the first run; 1: error;
    3: regressed past --max-drop."""
    from esrank.monitoring.scheduled import monitor_run

    watched = monitor_run(app_of(ctx), judgments_file, config, max_drop=max_drop, fmt=fmt,
                          window=window)
    emit(watched.to_dict(), as_json, run_text(watched))
    if watched.regressed:
        sys.exit(ALERT)


def run_text(watched) -> str:
    """A MonitorRun as one line per watched metric after one verdict line."""
    now = " / ".join(f"{v:.4f}" for v in watched.current.values())
    head = f"{watched.config} on {watched.judgments}: NDCG@10 {now} (standard / condensed)"
    if watched.previous is None:
        return f"FIRST RUN {head}, stored as run {watched.run_id}; nothing to compare yet"
    verdict = "REGRESSED" if watched.regressed else "OK"
    lines = [f"{verdict} {head} against run {watched.previous.run_id} "
             f"({watched.previous.timestamp}); max drop {watched.max_drop:g}"]
    lines += [f"  {c.metric:20} {c.previous:.4f} -> {c.current:.4f}  ({c.delta:+.4f}"
              + (f", p {c.p_value:.3g})" if c.p_value is not None else ", means)")
              for c in watched.changes]
    return "\n".join(lines)


@monitor.command("online")
@click.option("--since", default="24h", show_default=True,
              help="The window's start: a duration before now (30m, 24h, 7d) or an ISO-8601 "
                   "date or time (UTC unless it says otherwise).")
@click.option("--until", help="The window's end, written the same way (default: now).")
@click.option("--baseline-since", help="Compare with the window starting here (same forms); "
                                       "each rate gets a two-proportion test.")
@click.option("--baseline-until", help="The baseline window's end (default: --since).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.01,
              show_default=True, help="Flag a rate that got worse with a p-value below this.")
@click.option("--push", is_flag=True, help="Store the window's metrics per model in the engine "
                                           "(esrank-online) for the dashboards.")
@click.option("--ubi", "ubi_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read this UBI ndjson file instead of the engine's ubi_queries/ubi_events.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def online_cmd(ctx: click.Context, since: str, until: str | None, baseline_since: str | None,
               baseline_until: str | None, alpha: float, push: bool, ubi_file: Path | None,
               as_json: bool) -> None:
    """Click-through at 10, add-to-cart, purchase and zero-result rates and latency per served
    model, from the UBI the sidecar records. Exit 0: nothing flagged; 1: error; 3: a rate
    significantly worse than in the baseline window."""
    from esrank.monitoring.online import online_report, parse_time

    now = time.time()
    window = (parse_time(since, now), parse_time(until, now) if until else now)
    baseline = ((parse_time(baseline_since, now), parse_time(baseline_until, now)
                 if baseline_until else window[0]) if baseline_since else None)
    report = online_report(app_of(ctx).engine, window, baseline, path=ubi_file, alpha=alpha,
                           push=push)
    emit(report.to_dict(), as_json, online_text(report))
    if report.flagged:
        sys.exit(ALERT)


def online_text(report) -> str:
    """An OnlineReport as a table per window, then each flagged rate."""
    from esrank.monitoring.online import RATES

    def table(title: str, metrics: dict) -> list[str]:
        rows = [f"{title}: no searches"] if not metrics else [
            title, f"  {'model':28}{'searches':>9}{'ctr@10':>8}{'cart':>8}{'purchase':>9}"
                   f"{'zero':>7}{'p50 ms':>9}{'p95 ms':>9}"]
        for name, m in metrics.items():
            lat = m.latency_ms or {}
            rows.append(f"  {name[:27]:28}{m.searches:9d}" + "".join(
                f"{m.rate(r):{w}.1%}" for r, w in zip(RATES, (8, 8, 9, 7), strict=True))
                + "".join(f"{lat[k]:9.1f}" if k in lat else f"{'-':>9}" for k in ("p50", "p95")))
        return rows

    to_dict = report.to_dict()
    lines = table(f"{to_dict['window']['since']} .. {to_dict['window']['until']}", report.metrics)
    if report.baseline is not None:
        span = to_dict["baseline_window"]
        lines += table(f"baseline {span['since']} .. {span['until']}", report.baseline)
        lines += [f"FLAGGED {c.model} {c.rate}: {c.baseline:.2%} -> {c.current:.2%} "
                  f"(p {c.p_value:.2g})" for c in report.flagged] or ["nothing flagged"]
    if report.pushed:
        lines.append(f"stored {report.pushed} document(s) in esrank-online")
    return "\n".join(lines)


@monitor.command("drift")
@click.option("--model", "which", default="active", show_default=True,
              help="The deployed model whose features are checked ('active': the live one).")
@click.option("--since", default="24h", show_default=True,
              help="Sample the queries the sidecar served since then (UBI indices): a duration "
                   "before now (30m, 24h, 7d) or an ISO-8601 date or time.")
@click.option("--sample", default=500, show_default=True, type=click.IntRange(min=1),
              help="How many of those queries to search and log (drawn at random).")
@click.option("--queries", "queries_file", type=click.Path(exists=True, dir_okay=False,
                                                           path_type=Path),
              help="A file of queries (one per line) to sample instead of the served ones.")
@click.option("--table", type=click.Path(exists=True, path_type=Path),
              help="Take the reference bins from this training table (for a model trained "
                   "before esrank stored them in meta.json).")
@click.option("--alert", default=0.2, show_default=True, type=click.FloatRange(min=0),
              help="PSI at or past which a feature alerts (exit 3); 0.1-0.2 reads 'watch'.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random sample.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def drift_cmd(ctx, which: str, since: str, sample: int, queries_file: Path | None,
              table: Path | None, alert: float, seed: int, as_json: bool) -> None:
    """Feature drift: the PSI of each feature between the model's training pages (its
    reference bins) and a sample of live queries, each searched under the model with its top
    hits' features logged through the plugin. Exit 0: no feature at --alert; 1: error; 3: a
    feature at or past it."""
    from esrank.monitoring.drift import check_drift, read_queries, sample_queries, served_queries
    from esrank.monitoring.online import parse_time

    app = app_of(ctx)
    served = (read_queries(queries_file) if queries_file
              else served_queries(app.engine, parse_time(since, time.time())))
    report = check_drift(app, sample_queries(served, sample, seed), which, alert=alert,
                         table=table)
    emit(report.to_dict(), as_json, drift_text(report))
    if report.alerting:
        sys.exit(ALERT)


def drift_text(report) -> str:
    """A drift report as text: one row per feature, highest PSI first."""
    head = (f"model {report.model}: {report.queries} queries, {report.rows} hits logged "
            f"({report.degraded} searches not served by the model), against "
            f"{report.reference_rows} training hits")
    rows = [f"{'feature':<24} {'psi':>7}  level"]
    rows += [f"{d.feature:<24} {d.psi:7.3f}  {d.level}" for d in report.features]
    verdict = (f"ALERT: {', '.join(report.alerting)} at or past PSI {report.alert}"
               if report.alerting else f"no feature at or past PSI {report.alert}")
    return "\n".join([head, *rows, verdict])


COMMANDS = [monitor]
