"""esrank monitor: watch a deployed model (scheduled evaluation, online metrics, feature
drift); each command exits non-zero past its alert level, for cron or a Kubernetes CronJob."""

from __future__ import annotations

import sys
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


COMMANDS = [monitor]
