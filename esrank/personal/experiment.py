"""Online comparison of two configurations on live traffic: deterministic bucketing into arms
(A/B), team-draft interleaving (both in one results page), and the report over what UBI
recorded.

The sidecar applies an `Experiment` to searches that name no configuration: each shopper (or
session) always lands in the same arm; with interleaving every page mixes both rankings, and
each shown doc remembers which team put it there. Both facts go into the UBI query's
attributes (`experiment`, `arm`, `teams`), so `report` needs nothing but the UBI indices.

>>> bucket("shopper-42", "personal-vs-base", ("control", "treatment"))   # doctest: +SKIP
'treatment'
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from esrank.core.errors import InputError
from esrank.core.settings import ExperimentSettings
from esrank.judgments.clicks import Session, logged_sessions

Mode = Literal["ab", "interleave"]
ACTIONS = ("click", "add_to_cart", "purchase")


@dataclass(frozen=True)
class Experiment:
    """Two arms (configuration names: 'bm25', a model, 'active') compared by `mode`."""

    name: str
    control: str
    treatment: str
    mode: Mode = "interleave"

    def __post_init__(self) -> None:
        if self.mode not in ("ab", "interleave"):
            raise InputError(f"experiment mode {self.mode!r}: expected ab or interleave")
        if self.control == self.treatment:
            raise InputError(f"experiment {self.name!r}: both arms are {self.control!r}")

    @property
    def arms(self) -> tuple[str, str]:
        return (self.control, self.treatment)


def bucket(unit: str, experiment: str, arms: Sequence[str]) -> str:
    """The arm of `unit` (a user or session id): a hash of (experiment, unit), so the same
    shopper always sees the same arm, and arms are independent across experiments."""
    digest = hashlib.sha256(f"{experiment}\x00{unit}".encode()).digest()
    return arms[int.from_bytes(digest[:8], "big") % len(arms)]


def team_draft(a: Sequence[str], b: Sequence[str], size: int, seed: str
               ) -> tuple[list[str], dict[str, str]]:
    """Team-draft interleaving (Radlinski et al. 2008): in each round a coin (seeded by `seed`,
    e.g. the query id) says which team picks first; each picks its highest-ranked doc not yet
    shown. Returns the page and doc -> "A" or "B" (the team that placed it)."""
    rng = random.Random(seed)
    page: list[str] = []
    teams: dict[str, str] = {}
    rankings = {"A": list(a), "B": list(b)}
    picks = {"A": 0, "B": 0}

    def next_doc(team: str) -> str | None:
        return next((d for d in rankings[team] if d not in teams), None)

    while len(page) < size:
        first = "A" if picks["A"] < picks["B"] or (
            picks["A"] == picks["B"] and rng.random() < 0.5) else "B"
        team = first if next_doc(first) is not None else ("B" if first == "A" else "A")
        doc = next_doc(team)
        if doc is None:
            break
        teams[doc] = team
        page.append(doc)
        picks[team] += 1
    return page, teams


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Rate:
    """Sessions with an action over sessions, with a 95% Wilson interval."""

    hits: int
    sessions: int

    @property
    def value(self) -> float:
        return self.hits / self.sessions if self.sessions else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        n, z = self.sessions, 1.959964
        if n == 0:
            return (0.0, 1.0)
        p = self.value
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (max(0.0, centre - half), min(1.0, centre + half))

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"rate": round(self.value, 5), "ci95": [round(low, 5), round(high, 5)],
                "sessions": self.sessions, "with_action": self.hits}


@dataclass(frozen=True)
class Report:
    experiment: str
    mode: str
    arms: dict[str, dict[str, Rate]]  # arm -> action -> rate (A/B)
    wins: dict[str, int]  # interleaving: sessions each arm won; "tie" for the rest
    p_value: float | None  # interleaving: two-sided sign test over non-tied sessions
    sessions_needed: int | None  # for 80% power at 5% given the observed preference

    @property
    def preference(self) -> float | None:
        """Treatment's share of the decided interleaved sessions (0.5: no preference)."""
        decided = self.wins.get("control", 0) + self.wins.get("treatment", 0)
        return self.wins.get("treatment", 0) / decided if decided else None

    def to_dict(self) -> dict:
        return {"experiment": self.experiment, "mode": self.mode,
                "arms": {arm: {a: r.to_dict() for a, r in rates.items()}
                         for arm, rates in self.arms.items()},
                "interleaving": {"wins": self.wins, "preference_for_treatment":
                                 None if self.preference is None else round(self.preference, 4),
                                 "p_value": self.p_value,
                                 "sessions_needed": self.sessions_needed}
                if self.mode == "interleave" else None}


def report(experiment: Experiment, sessions: Iterable[Session]) -> Report:
    """Per-arm CTR / add-to-cart / purchase rates (sessions with the action, Wilson 95%) and,
    for interleaving, which team's docs got the clicks: a session is won by the team with more
    clicked docs (ties count for neither), tested with a two-sided sign test."""
    by_arm: dict[str, list[Session]] = {"control": [], "treatment": []}
    wins = {"control": 0, "treatment": 0, "tie": 0}
    for s in sessions:
        attrs = s.attributes
        if attrs.get("experiment") != experiment.name:
            continue
        arm = attrs.get("arm")
        if arm in by_arm:
            by_arm[arm].append(s)
        teams = attrs.get("teams")
        if experiment.mode == "interleave" and isinstance(teams, dict):
            credit = {"control": 0, "treatment": 0}
            for r in s.results:
                team = teams.get(r.doc_id)
                if r.clicked and team in ("A", "B"):
                    credit["control" if team == "A" else "treatment"] += 1
            if credit["control"] == credit["treatment"]:
                wins["tie"] += 1 if any(r.clicked for r in s.results) else 0
            else:
                wins[max(credit, key=credit.get)] += 1
    arms = {arm: {action: Rate(sum(any(r.clicked and r.value >= threshold for r in s.results)
                                   for s in group), len(group))
                  for action, threshold in zip(ACTIONS, (1.0, 2.0, 4.0), strict=True)}
            for arm, group in by_arm.items()}
    p_value = needed = None
    if experiment.mode == "interleave":
        decided = wins["control"] + wins["treatment"]
        if decided:
            p_value = sign_test(wins["treatment"], decided)
            needed = sessions_needed(wins["treatment"] / decided, decided / max(
                1, decided + wins["tie"]))
    return Report(experiment.name, experiment.mode, arms, wins, p_value, needed)


def sign_test(successes: int, n: int) -> float:
    """Two-sided exact binomial test of `successes` in `n` against p = 0.5."""
    if n == 0:
        return 1.0
    k = max(successes, n - successes)
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def sessions_needed(preference: float, decided_share: float) -> int | None:
    """Interleaved sessions (decided or not; `decided_share` of them have a winner) for a
    two-sided sign test at 5% to detect `preference` with 80% power (normal approximation);
    None when there is no preference."""
    effect = abs(preference - 0.5)
    if effect == 0 or decided_share == 0:
        return None
    z_a, z_b = 1.959964, 0.841621  # alpha 0.05 two-sided, power 0.8
    p = preference
    n = ((z_a * 0.5 + z_b * math.sqrt(p * (1 - p))) / effect) ** 2
    return math.ceil(n / decided_share)


def configured(settings: ExperimentSettings | None) -> Experiment | None:
    """The experiment ESRANK_SERVE__EXPERIMENT__* configure, or None."""
    e = settings
    return Experiment(e.name, e.control, e.treatment, e.mode) if e else None


def experiment_report(app, experiment: Experiment | None = None, log_path: Path | None = None
                      ) -> Report:
    """The Report of an Experiment (default: the configured one) over a UBI log (default: the
    engine's UBI indices)."""
    experiment = experiment or configured(app.settings.serve.experiment)
    if experiment is None:
        raise InputError("no experiment: set ESRANK_SERVE__EXPERIMENT__NAME, __CONTROL and "
                         "__TREATMENT (or pass --name, --control, --treatment)")
    return report(experiment, logged_sessions(app.engine, log_path))
