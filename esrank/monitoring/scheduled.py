"""Scheduled evaluation: a configuration measured on a query set, stored in the results store,
and compared with the last stored run of the same configuration on the same judgments; a
drop of NDCG@10 (standard or condensed) past a threshold is a regression.

The configuration compared is the one evaluated (its label: `active` resolves to the active
model's name), so a new deployment starts a new history; `esrank compare` is the gate before
a deployment, this watches what is live between deployments (catalogue and index changes,
judgments that age).

>>> watched = monitor_run(app, Path("judgments.csv"))   # doctest: +SKIP
>>> watched.regressed, watched.changes[0].delta          # doctest: +SKIP
(False, -0.004)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import InputError
from esrank.evaluation.evaluate import evaluate
from esrank.evaluation.runs import StoredRun, last_run
from esrank.evaluation.significance import compare
from esrank.judgments.metrics import Evaluation

WATCHED = ("ndcg@10", "ndcg@10_condensed")
MAX_DROP = 0.02  # the default: an absolute NDCG@10 drop past it is a regression


@dataclass(frozen=True)
class MetricChange:
    """One watched metric, the previous run against this one: the means (over the queries
    both runs measured when paired) and the paired randomization test's p-value (None: the
    previous run's per-query values were not there, means compared)."""

    metric: str
    previous: float
    current: float
    p_value: float | None = None

    @property
    def delta(self) -> float:
        return self.current - self.previous

    def to_dict(self) -> dict:
        return {"metric": self.metric, "previous": self.previous, "current": self.current,
                "delta": self.delta, "p_value": self.p_value}


@dataclass(frozen=True)
class MonitorRun:
    """A scheduled evaluation: the configuration (its label), the judgments, this run's stored
    id and means, the previous run (None: the first one), what changed and the threshold."""

    config: str
    judgments: str
    run_id: str
    current: dict[str, float]
    previous: StoredRun | None
    changes: tuple[MetricChange, ...]
    max_drop: float

    @property
    def regressed(self) -> bool:
        """Whether a watched metric fell by more than `max_drop`."""
        return any(c.delta < -self.max_drop for c in self.changes)

    def to_dict(self) -> dict:
        prev = self.previous
        return {"config": self.config, "judgments": self.judgments, "run_id": self.run_id,
                "current": self.current, "max_drop": self.max_drop,
                "previous": None if prev is None else {
                    "run_id": prev.run_id, "timestamp": prev.timestamp, "model": prev.model},
                "changes": [c.to_dict() for c in self.changes],
                "regressed": self.regressed}


def monitor_run(app, judgments: Path | None, config: str = "active", *,
                max_drop: float = MAX_DROP, fmt: str | None = None, window: int | None = None
                ) -> MonitorRun:
    """Evaluate `config` on `judgments` (None: ESRANK_JUDGMENTS), store the run, and compare
    it with the last stored run of the same configuration on the same judgments."""
    path = judgments or app.settings.judgments
    if path is None:
        raise InputError("no query set: pass --judgments FILE or set ESRANK_JUDGMENTS")
    if not max_drop >= 0:
        raise InputError(f"max drop {max_drop}: give an NDCG@10 difference >= 0, e.g. 0.02")
    run = evaluate(app, path, [config], fmt=fmt, window=window, push=True)
    label, evaluation = next(iter(run.results.items()))
    previous = last_run(app.engine, label, str(path), exclude=run.run_id)
    changes = () if previous is None else changes_of(previous.evaluation, evaluation)
    return MonitorRun(label, str(path), run.run_id, {m: evaluation.mean[m] for m in WATCHED},
                      previous, changes, max_drop)


def changes_of(previous: Evaluation, current: Evaluation) -> tuple[MetricChange, ...]:
    """The watched metrics, previous against current: paired over the queries both measured
    (two or more), else the means.

    >>> before = Evaluation({"ndcg@10": 0.5, "ndcg@10_condensed": 0.6}, {})
    >>> now = Evaluation({"ndcg@10": 0.4, "ndcg@10_condensed": 0.6}, {})
    >>> round(changes_of(before, now)[0].delta, 3)
    -0.1
    """
    if len(set(previous.per_query) & set(current.per_query)) < 2:
        return tuple(MetricChange(m, previous.mean[m], current.mean[m]) for m in WATCHED
                     if m in previous.mean)
    paired = compare(("previous", previous), ("current", current), WATCHED)
    return tuple(MetricChange(m.metric, m.mean_a, m.mean_b, m.p_randomization)
                 for m in paired.metrics)
