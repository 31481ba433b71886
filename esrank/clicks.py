"""Clicks -> judgments: OpenSearch UBI query/event logs read into sessions, and click models
(COEC, SDBN) that correct for position bias and grade (query, doc) pairs 0..3."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from esrank.errors import InputError
from esrank.judgments import Judgment, JudgmentList, QidAssigner

log = logging.getLogger(__name__)

# Fixed cut points turning click-model scores into grades 0..3: grade = number of cuts <= score.
COEC_CUTS: tuple[float, float, float] = (0.5, 1.0, 2.0)  # COEC 1.0 = clicked as often as expected
SDBN_CUTS: tuple[float, float, float] = (0.1, 0.25, 0.5)  # relevance a*s in [0, 1]


# --------------------------------------------------------------------------- UBI clicks


@dataclass(frozen=True)
class Shown:
    """One result on a results page: ``position`` is the 1-based rank (UBI ordinal + 1)."""

    doc_id: str
    position: int
    clicked: bool


@dataclass(frozen=True)
class Session:
    """One UBI query (one ``query_id``): its text and the results shown, by position."""

    query_id: str
    query: str
    results: tuple[Shown, ...]

    @property
    def clicked(self) -> bool:
        """Whether any result was clicked."""
        return any(r.clicked for r in self.results)


def read_ubi(path: str | Path, *, click_actions: Sequence[str] = ("click",)) -> list[Session]:
    """Read an OpenSearch UBI ndjson (bulk action lines allowed) into sessions.

    Queries (``ubi_queries``: ``query_id``, ``user_query``) give the text; events with
    ``action_name == "impression"`` give shown docs at ``event_attributes.position.ordinal``
    (object id at ``event_attributes.object.object_id``); events in ``click_actions`` mark
    clicks. A clicked doc without an impression is added at its click position. Events without
    a query_id or object id, and query ids without query text, are skipped; sessions keep
    the order of first appearance.
    """
    source = str(path)
    texts: dict[str, str] = {}
    shown: dict[str, dict[str, int]] = {}  # query_id -> doc -> best position
    clicks: dict[str, dict[str, int | None]] = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON: {e.msg}", source=source, line=line_no) from None
            if not isinstance(doc, dict):
                raise InputError("expected a JSON object", source=source, line=line_no)
            if len(doc) == 1 and next(iter(doc)) in ("index", "create"):
                continue  # bulk action line
            qid = doc.get("query_id")
            if not isinstance(qid, str) or not qid:
                continue
            query = doc.get("user_query")
            if isinstance(query, str) and (doc.get("action_name") is None or qid not in texts):
                texts[qid] = query
            action = doc.get("action_name")
            if action != "impression" and action not in click_actions:
                continue
            attrs = doc.get("event_attributes") or {}
            obj = attrs.get("object") or {}
            doc_id = obj.get("object_id") if isinstance(obj, dict) else None
            if doc_id is None:
                continue
            pos_obj = attrs.get("position") or {}
            ordinal = pos_obj.get("ordinal") if isinstance(pos_obj, dict) else None
            position = int(ordinal) + 1 if isinstance(ordinal, int | float) else None
            if action == "impression":
                if position is None:
                    continue
                seen = shown.setdefault(qid, {})
                seen[str(doc_id)] = min(position, seen.get(str(doc_id), position))
            else:
                shown.setdefault(qid, {})
                prev = clicks[qid].get(str(doc_id))
                clicks[qid][str(doc_id)] = position if prev is None else prev
    sessions: list[Session] = []
    for qid, docs in shown.items():
        positions = dict(docs)
        for doc_id, pos in clicks.get(qid, {}).items():
            if doc_id not in positions and pos is not None:
                positions[doc_id] = pos
        clicked = set(clicks.get(qid, {}))
        results = tuple(Shown(d, p, d in clicked)
                        for d, p in sorted(positions.items(), key=lambda kv: (kv[1], kv[0])))
        if results and texts.get(qid, "").strip():
            sessions.append(Session(qid, texts[qid], results))
    dropped = len(shown) - len(sessions)
    if dropped:
        log.warning("%s: %d query_ids have events but no query text; skipped", source, dropped)
    return sessions


# --------------------------------------------------------------------------- click models


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
    """Clicks over expected clicks, per (query text, doc).

    The prior CTR at position p is clicks at p / impressions at p over the whole log;
    COEC(q, d) = clicks(q, d) / sum of prior CTR over the positions where d was shown for q
    (0 when that sum is 0). Pairs shown fewer than ``min_impressions`` times are dropped (the
    count is logged). Grade = number of ``cuts`` at or below the score (default 0.5/1/2 -> 0..3).
    """
    sessions = list(sessions)
    pos_imp: dict[int, int] = defaultdict(int)
    pos_clk: dict[int, int] = defaultdict(int)
    for s in sessions:
        for r in s.results:
            pos_imp[r.position] += 1
            pos_clk[r.position] += r.clicked
    ctr = {p: pos_clk[p] / pos_imp[p] for p in pos_imp}
    clicks: dict[tuple[str, str], int] = defaultdict(int)
    expected: dict[tuple[str, str], float] = defaultdict(float)
    imps: dict[tuple[str, str], int] = defaultdict(int)
    for s in sessions:
        for r in s.results:
            key = (s.query, r.doc_id)
            clicks[key] += r.clicked
            expected[key] += ctr[r.position]
            imps[key] += 1
    scores = {k: (clicks[k] / expected[k] if expected[k] > 0 else 0.0) for k in imps}
    return _to_judgments(scores, imps, min_impressions, cuts, "coec")


def sdbn(sessions: Iterable[Session], min_impressions: int = 10,
         cuts: Sequence[float] = SDBN_CUTS) -> JudgmentList:
    """Simplified DBN (Chapelle & Zhang 2009), per (query text, doc).

    In each session the docs at or above the last clicked position are examined (a session
    without clicks examines nothing). Attractiveness a = clicks / examinations; satisfaction
    s = sessions where the doc was the last click / clicks (0 without clicks); relevance = a*s.
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
            last[key] += r is last_click
    scores = {}
    for k, n in examined.items():
        a = clicks[k] / n
        sat = last[k] / clicks[k] if clicks[k] else 0.0
        scores[k] = a * sat
    return _to_judgments(scores, examined, min_impressions, cuts, "sdbn")
