"""esrank monitor: watch a deployed model (scheduled evaluation, online metrics, feature
drift); each command exits non-zero past its alert level, for cron or a Kubernetes CronJob."""

from __future__ import annotations

import click


@click.group()
def monitor() -> None:
    """Watch the deployed model: evaluation runs over time, what shoppers do with its pages,
    and whether live features still look like the training table (docs/monitoring.md)."""


COMMANDS = [monitor]
