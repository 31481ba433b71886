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


COMMANDS = [monitor]
