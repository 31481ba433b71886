"""Clicks -> judgments: OpenSearch UBI query/event logs read into sessions, and click models
(COEC, SDBN) that correct for position bias and grade (query, doc) pairs 0..3."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from esrank.core.errors import InputError
from esrank.engine import Engine
from esrank.judgments.lists import Judgment, JudgmentList, QidAssigner, write_judgments
from esrank.ubi.indices import load
from esrank.ubi.log import UbiEvent, UbiQuery

log = logging.getLogger(__name__)

# Fixed cut points turning click-model scores into grades 0..3: grade = number of cuts <= score.
COEC_CUTS: tuple[float, float, float] = (0.5, 1.0, 2.0)  # COEC 1.0 = clicked as often as expected
SDBN_CUTS: tuple[float, float, float] = (0.1, 0.25, 0.5)  # relevance a*s in [0, 1]
SESSION_CUTS: tuple[float, float, float] = (1.0, 2.0, 4.0)  # click, cart, purchase weights


# --------------------------------------------------------------------------- UBI sessions

# What each action says about a result, by default: the strongest action on a doc counts.
ACTION_WEIGHTS: dict[str, float] = {"click": 1.0, "add_to_cart": 2.0, "purchase": 4.0}


@dataclass(frozen=True)
class Shown:
    """One result on a results page: ``position`` is the 1-based rank (UBI ordinal + 1);
    ``value`` the weight of the strongest action on it (0: shown, nothing done)."""

    doc_id: str
    position: int
    value: float = 0.0

    @property
    def clicked(self) -> bool:
        return self.value > 0


@dataclass(frozen=True)
class Session:
    """One UBI query (one ``query_id``): its text, who asked, and the results shown."""

    query_id: str
    query: str
    results: tuple[Shown, ...]
    client_id: str | None = None
    attributes: dict = field(default_factory=dict, compare=False)  # UBI query_attributes

    @property
    def clicked(self) -> bool:
        """Whether any result was acted on."""
        return any(r.clicked for r in self.results)


def parse_weights(text: str) -> dict[str, float]:
    """``"click=1,add_to_cart=2,purchase=4"`` -> action weights (each > 0).

    >>> parse_weights("click=1,purchase=5")
    {'click': 1.0, 'purchase': 5.0}
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        action, eq, raw = part.partition("=")
        try:
            weight = float(raw)
        except ValueError:
            weight = float("nan")
        if not eq or not action.strip() or not weight > 0:
            raise InputError(f"action weight {part!r}: write ACTION=WEIGHT with WEIGHT > 0, "
                             "e.g. click=1,add_to_cart=2,purchase=4")
        out[action.strip()] = weight
    if not out:
        raise InputError("no action weights given")
    return out


def shown_actions(queries: Iterable[UbiQuery], events: Iterable[UbiEvent],
                  weights: Mapping[str, float] = ACTION_WEIGHTS) -> list[UbiEvent]:
    """The actions in ``weights`` on a doc their query showed: an impression of that doc
    under the same query id, or the doc in the query's ``query_response_hit_ids``.

    What the click models, the signals and the profiles count. An action on a doc its query
    never showed (or without a query id or object id) is skipped, and the count is logged: a
    UBI log may hold what any client reported, and a purchase of a product nobody was shown
    says nothing about a ranking.

    >>> acted = shown_actions([UbiQuery("q", "tv", hit_ids=("d1",))],
    ...                       [UbiEvent("click", "q", "d1"), UbiEvent("purchase", "q", "d9")])
    >>> [(e.action, e.doc_id) for e in acted]
    [('click', 'd1')]
    """
    events = list(events)
    shown = {(q.query_id, d) for q in queries for d in q.hit_ids}
    shown |= {(e.query_id, e.doc_id) for e in events if e.action == "impression"}
    acted = [e for e in events if e.action in weights and e.action != "impression"]
    trusted = [e for e in acted if e.query_id and e.doc_id is not None
               and (e.query_id, e.doc_id) in shown]
    if len(trusted) < len(acted):
        log.warning("%d action(s) on a doc their query never showed (no impression, not in "
                    "its query_response_hit_ids); skipped", len(acted) - len(trusted))
    return trusted


def sessions_of(queries: Iterable[UbiQuery], events: Iterable[UbiEvent],
                weights: Mapping[str, float] = ACTION_WEIGHTS) -> list[Session]:
    """UBI queries and events -> one session per query id, results by position.

    Impressions give shown docs and positions; an action in ``weights`` marks its doc with the
    weight (the strongest one counts), only on a doc its query showed (`shown_actions`: an
    action on any other doc is skipped and counted in the log). A doc the query showed in its
    ``query_response_hit_ids`` but without an impression is added at the action's position
    (else its rank there). Query ids without query text are skipped (logged as a warning);
    sessions keep the order of first appearance.
    """
    queries, events = list(queries), list(events)
    text = {q.query_id: q for q in queries}
    shown: dict[str, dict[str, int]] = {}  # query_id -> doc -> best position
    for e in events:
        if e.action == "impression" and e.query_id and e.doc_id is not None \
                and e.position is not None:
            seen = shown.setdefault(e.query_id, {})
            seen[e.doc_id] = min(e.position, seen.get(e.doc_id, e.position))
    acted: dict[str, dict[str, tuple[float, int | None]]] = defaultdict(dict)
    for e in shown_actions(queries, events, weights):
        shown.setdefault(e.query_id, {})
        value, pos = acted[e.query_id].get(e.doc_id, (0.0, None))
        acted[e.query_id][e.doc_id] = (max(value, weights[e.action]),
                                       pos if pos is not None else e.position)
    out: list[Session] = []
    for qid, docs in shown.items():
        positions = dict(docs)
        q = text.get(qid)
        rank = {d: i for i, d in enumerate(q.hit_ids, 1)} if q is not None else {}
        for doc_id, (_, pos) in acted.get(qid, {}).items():
            pos = pos if pos is not None else rank.get(doc_id)
            if doc_id not in positions and pos is not None:
                positions[doc_id] = pos
        values = {d: v for d, (v, _) in acted.get(qid, {}).items()}
        results = tuple(Shown(d, p, values.get(d, 0.0))
                        for d, p in sorted(positions.items(), key=lambda kv: (kv[1], kv[0])))
        if results and q is not None:
            out.append(Session(qid, q.query, results, q.client_id, q.attributes))
    dropped = len(shown) - len(out)
    if dropped:
        log.warning("%d query_ids have events but no query text; skipped", dropped)
    return out


def session_judgments(sessions: Iterable[Session], cuts: Sequence[float] = SESSION_CUTS
                      ) -> JudgmentList:
    """Each acted-on session as its own query (qid = its UBI query id): the docs at or above
    its last action graded by what was done to them (grade = number of `cuts` at or below the
    action's weight: with the default weights a click 1, a cart 2, a purchase 3), the rest of
    the page left out as unexamined. Sessions without an action say nothing and are skipped.

    What one shopper did with one page: the training data of a personal model, logged with
    the shopper params the page was served with (`Session.attributes["shopper"]`).
    """
    out: list[Judgment] = []
    for s in sessions:
        acted = [r.position for r in s.results if r.clicked]
        if not acted:
            continue
        out += [Judgment(s.query_id, s.query, r.doc_id, _grade(r.value, cuts))
                for r in s.results if r.position <= max(acted)]
    return JudgmentList(tuple(out), source="ubi sessions")


# --------------------------------------------------------------------------- click models


def position_rates(sessions: Sequence[Session], *, weighted: bool = True) -> dict[int, float]:
    """Position -> clicks per impression there over the log: the position bias the click
    models and the signals correct for (`weighted`: each click counts its action weight)."""
    shown: dict[int, int] = defaultdict(int)
    clicked: dict[int, float] = defaultdict(float)
    for s in sessions:
        for r in s.results:
            shown[r.position] += 1
            clicked[r.position] += r.value if weighted else r.clicked
    return {p: clicked[p] / shown[p] for p in shown}


def _grade(score: float, cuts: Sequence[float]) -> int:
    return sum(score >= c for c in cuts)


def _to_judgments(scores: dict[tuple[str, str], float], counts: dict[tuple[str, str], int],
                  min_impressions: int, cuts: Sequence[float], model: str) -> JudgmentList:
    qid_of = QidAssigner()
    out: list[Judgment] = []
    dropped = 0
    for (query, doc), score in scores.items():
        if counts[(query, doc)] < min_impressions:
            dropped += 1
            continue
        out.append(Judgment(qid_of(query), query, doc, _grade(score, cuts)))
    log.info("%s: %d judgment(s); dropped %d (query, doc) pair(s) below min_impressions=%d",
             model, len(out), dropped, min_impressions)
    return JudgmentList(tuple(out), source=model)


def coec(sessions: Iterable[Session], min_impressions: int = 10,
         cuts: Sequence[float] = COEC_CUTS) -> JudgmentList:
    """Clicks over expected clicks, per (query text, doc); a click counts its action weight
    (a purchase more than a click: `ACTION_WEIGHTS`).

    The prior CTR at position p is (weighted) clicks at p / impressions at p over the log;
    COEC(q, d) = clicks(q, d) / sum of prior CTR over the positions where d was shown for q
    (0 when that sum is 0). Pairs shown fewer than ``min_impressions`` times are dropped (the
    count is logged). Grade = number of ``cuts`` at or below the score (default 0.5/1/2 -> 0..3).
    """
    sessions = list(sessions)
    ctr = position_rates(sessions)
    clicks: dict[tuple[str, str], float] = defaultdict(float)
    expected: dict[tuple[str, str], float] = defaultdict(float)
    imps: dict[tuple[str, str], int] = defaultdict(int)
    for s in sessions:
        for r in s.results:
            key = (s.query, r.doc_id)
            clicks[key] += r.value
            expected[key] += ctr[r.position]
            imps[key] += 1
    scores = {k: (clicks[k] / expected[k] if expected[k] > 0 else 0.0) for k in imps}
    return _to_judgments(scores, imps, min_impressions, cuts, "coec")


def sdbn(sessions: Iterable[Session], min_impressions: int = 10,
         cuts: Sequence[float] = SDBN_CUTS) -> JudgmentList:
    """Simplified DBN (Chapelle & Zhang 2009), per (query text, doc).

    In each session the docs at or above the last clicked position are examined (a session
    without clicks examines nothing). Attractiveness a = clicks / examinations; satisfaction
    s = sessions where the doc was the last click, or got an action weighing more than 1 (a
    cart or a purchase with the default weights), / clicks (0 without clicks); relevance = a*s.
    ``min_impressions`` counts examinations; pairs below it are dropped (count logged).
    Grade = number of ``cuts`` at or below a*s (default 0.1/0.25/0.5 -> 0..3).
    """
    examined: dict[tuple[str, str], int] = defaultdict(int)
    clicks: dict[tuple[str, str], int] = defaultdict(int)
    last: dict[tuple[str, str], int] = defaultdict(int)
    for s in sessions:
        clicked = [r for r in s.results if r.clicked]
        if not clicked:
            continue
        last_click = max(clicked, key=lambda r: r.position)
        for r in s.results:
            if r.position > last_click.position:
                continue
            key = (s.query, r.doc_id)
            examined[key] += 1
            clicks[key] += r.clicked
            last[key] += r is last_click or r.value > 1.0
    scores = {}
    for k, n in examined.items():
        a = clicks[k] / n
        sat = last[k] / clicks[k] if clicks[k] else 0.0
        scores[k] = a * sat
    return _to_judgments(scores, examined, min_impressions, cuts, "sdbn")


# the click models `esrank judgments from-clicks --model` offers, by name
CLICK_MODELS = {"coec": coec, "sdbn": sdbn}


def click_model(name: str):
    """The click model called `name` (a key of CLICK_MODELS).

    >>> click_model("sdbn") is sdbn
    True
    """
    try:
        return CLICK_MODELS[name]
    except KeyError:
        raise InputError(f"no click model {name!r} (choices: "
                         f"{', '.join(sorted(CLICK_MODELS))})") from None


def logged_sessions(engine: Engine, log_path: Path | None = None,
                    weights: Mapping[str, float] | None = None) -> list[Session]:
    """The sessions of a UBI log: an ndjson file, else the engine's UBI indices (default
    action weights)."""
    return sessions_of(*load(engine, log_path), weights or ACTION_WEIGHTS)


def judged_sessions(engine: Engine, log_path: Path | None = None
                    ) -> tuple[JudgmentList, dict[str, dict]]:
    """(JudgmentList, qid -> shopper params) from a UBI log's acted-on sessions (the engine's
    UBI indices when `log_path` is None)."""
    sessions = logged_sessions(engine, log_path)
    judged = session_judgments(sessions)
    if not len(judged):
        raise InputError("no session with a click, cart or purchase to learn from",
                         source=str(log_path or "the engine's UBI indices"))
    return judged, {s.query_id: s.attributes.get("shopper") or {} for s in sessions}


def click_judgments(engine: Engine, log_path: Path | None, output: Path, *,
                    model: str = "sdbn", weights: Mapping[str, float] | None = None,
                    min_impressions: int = 10) -> JudgmentList:
    """Judgments graded by the click model `model` (CLICK_MODELS) from the sessions of a UBI
    log (default: the engine's UBI indices), written to `output`; returns them."""
    derived = click_model(model)(logged_sessions(engine, log_path, weights),
                                 min_impressions=min_impressions)
    write_judgments(derived, output)
    return derived
