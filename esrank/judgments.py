"""Judgment lists: records, readers/writers in matching pairs, clicks -> judgments, agreement.

Formats (reader / writer pairs):

* CSV ``query,docid,rating`` (Chorus) -- ``read_csv`` / ``write_csv``; qids are assigned in
  first-seen query order as ``"1"``, ``"2"``, ...
* RankLib / SVMrank text as hello-ltr writes it -- ``read_ranklib`` / ``write_ranklib``::

      # qid:1: laptop
      3 qid:1 # 1229111 laptop

* TREC qrels ``qid 0 docid grade`` -- ``read_trec`` / ``write_trec`` (query text comes from an
  optional ``queries`` mapping qid -> text; the default query text is the qid).
* Search-Relevance-Workbench / ESCI JSON -- ``read_srw_json`` / ``write_srw_json``.

Every reader validates grades (integers in ``0..max_grade``), collapses exact duplicates with a
logged warning, and refuses conflicting grades for the same (query, doc) naming both lines.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esrank.errors import InputError
from esrank.files import new_file

log = logging.getLogger(__name__)

DEFAULT_MAX_GRADE = 4

# ESCI labels as SRW stores them (E=1.0, S=0.1, C=0.01, I=0.0, scaled by 100) -> grade.
# The sample file holds exactly these four values: 100 Exact, 10 Substitute, 1 Complement,
# 0 Irrelevant.
SRW_RATING_TO_GRADE: dict[float, int] = {100.0: 3, 10.0: 2, 1.0: 1, 0.0: 0}
GRADE_TO_SRW_RATING: dict[int, str] = {g: f"{r:.3f}" for r, g in SRW_RATING_TO_GRADE.items()}

# Fixed cut points turning click-model scores into grades 0..3: grade = number of cuts <= score.
COEC_CUTS: tuple[float, float, float] = (0.5, 1.0, 2.0)  # COEC 1.0 = clicked as often as expected
SDBN_CUTS: tuple[float, float, float] = (0.1, 0.25, 0.5)  # relevance a*s in [0, 1]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Judgment:
    """One graded (query, document) pair."""

    qid: str
    query: str
    doc_id: str
    grade: int


@dataclass(frozen=True)
class JudgmentList:
    """An ordered, duplicate-free list of judgments; ``source`` is where it came from."""

    judgments: tuple[Judgment, ...]
    source: str | None = field(default=None, compare=False)

    def queries(self) -> dict[str, str]:
        """qid -> query text, in first-seen order."""
        out: dict[str, str] = {}
        for j in self.judgments:
            out.setdefault(j.qid, j.query)
        return out

    def by_query(self) -> dict[str, tuple[Judgment, ...]]:
        """qid -> that query's judgments, in first-seen order."""
        groups: dict[str, list[Judgment]] = defaultdict(list)
        for j in self.judgments:
            groups[j.qid].append(j)
        return {qid: tuple(js) for qid, js in groups.items()}

    def __len__(self) -> int:
        return len(self.judgments)

    def __iter__(self) -> Iterator[Judgment]:
        return iter(self.judgments)


# --------------------------------------------------------------------------- shared check


@dataclass(frozen=True)
class _Row:
    """A parsed but unchecked judgment with its location (line number or JSON path)."""

    where: int | str
    qid: str
    query: str
    doc_id: str
    grade: Any


def _loc(where: int | str) -> str:
    return f"line {where}" if isinstance(where, int) else where


def _err(message: str, source: str, where: int | str) -> InputError:
    if isinstance(where, int):
        return InputError(message, source=source, line=where)
    return InputError(f"{where}: {message}", source=source)


def _parse_grade(raw: Any, max_grade: int, source: str, where: int | str) -> int:
    """An integer grade in 0..max_grade (``"3"`` and ``3`` pass, ``"2.5"`` and ``True`` do not)."""
    if isinstance(raw, bool):
        raise _err(f"grade {raw!r} is not an integer", source, where)
    if isinstance(raw, int):
        grade = raw
    else:
        try:
            grade = int(str(raw).strip())
        except ValueError:
            raise _err(f"grade {raw!r} is not an integer", source, where) from None
    if not 0 <= grade <= max_grade:
        raise _err(f"grade {grade} is outside 0..{max_grade}", source, where)
    return grade


def _check(rows: Iterable[_Row], source: str, max_grade: int) -> JudgmentList:
    """Validate grades, collapse duplicates (warning), refuse conflicts naming both places."""
    seen: dict[tuple[str, str], tuple[int, int | str]] = {}
    out: list[Judgment] = []
    n_dup = 0
    for row in rows:
        if not row.doc_id:
            raise _err("empty document id", source, row.where)
        grade = _parse_grade(row.grade, max_grade, source, row.where)
        key = (row.qid, row.doc_id)
        if key in seen:
            first_grade, first_where = seen[key]
            if first_grade != grade:
                raise _err(
                    f"conflicting grades for query {row.query!r} doc {row.doc_id!r}: "
                    f"{first_grade} at {_loc(first_where)}, {grade} at {_loc(row.where)}",
                    source, row.where)
            n_dup += 1
            log.warning("%s: duplicate judgment for query %r doc %r at %s (first at %s); "
                        "collapsed", source, row.query, row.doc_id, _loc(row.where),
                        _loc(first_where))
            continue
        seen[key] = (grade, row.where)
        out.append(Judgment(row.qid, row.query, row.doc_id, grade))
    if n_dup:
        log.warning("%s: collapsed %d duplicate judgment(s)", source, n_dup)
    return JudgmentList(tuple(out), source=source)


class _QidAssigner:
    """Assigns qids "1", "2", ... to query texts in first-seen order."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def __call__(self, query: str) -> str:
        return self._ids.setdefault(query, str(len(self._ids) + 1))


# --------------------------------------------------------------------------- CSV


def read_csv(path: str | Path, *, max_grade: int = DEFAULT_MAX_GRADE) -> JudgmentList:
    """Read a ``query,docid,rating`` CSV (header required)."""
    source = str(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InputError("empty file; expected header query,docid,rating", source=source)
        cols = [h.strip().lower() for h in header]
        missing = [c for c in ("query", "docid", "rating") if c not in cols]
        if missing:
            raise InputError(f"header lacks column(s) {', '.join(missing)}; "
                             f"expected query,docid,rating", source=source, line=1)
        iq, id_, ir = cols.index("query"), cols.index("docid"), cols.index("rating")
        qid_of = _QidAssigner()
        rows: list[_Row] = []
        for rec in reader:
            line = reader.line_num
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) < len(cols):
                raise InputError(f"expected {len(cols)} fields, found {len(rec)}",
                                 source=source, line=line)
            query = rec[iq]
            rows.append(_Row(line, qid_of(query), query, rec[id_].strip(), rec[ir]))
    return _check(rows, source, max_grade)


def write_csv(jl: JudgmentList, path: str | Path) -> None:
    """Write ``query,docid,rating`` (qids are not kept; the reader reassigns them)."""
    with new_file(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["query", "docid", "rating"])
        for j in jl:
            w.writerow([j.query, j.doc_id, j.grade])


# --------------------------------------------------------------------------- RankLib


def read_ranklib(path: str | Path, *, max_grade: int = DEFAULT_MAX_GRADE) -> JudgmentList:
    """Read hello-ltr style ``# qid:N: query`` headers and ``grade qid:N [f:v ...] # docid ...``.

    Feature columns, if present, are ignored; a qid without a header line gets its qid as text.
    """
    source = str(path)
    names: dict[str, str] = {}
    pending: list[tuple[int, str, str, str]] = []  # line, qid, doc_id, raw grade
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            text = text.rstrip("\n")
            stripped = text.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                body = stripped[1:].strip()
                if body.startswith("qid:"):
                    qid, sep, query = body[4:].partition(":")
                    if sep and qid.strip():
                        names[qid.strip()] = query.strip()
                continue
            data, sep, comment = text.partition("#")
            tokens = data.split()
            if len(tokens) < 2 or not tokens[1].startswith("qid:"):
                raise InputError("expected 'grade qid:N # docid'", source=source, line=line_no)
            doc = comment.split()
            if not sep or not doc:
                raise InputError("missing '# docid' after the features", source=source,
                                 line=line_no)
            pending.append((line_no, tokens[1][4:], doc[0], tokens[0]))
    rows = [_Row(ln, qid, names.get(qid, qid), doc, g) for ln, qid, doc, g in pending]
    return _check(rows, source, max_grade)


def write_ranklib(jl: JudgmentList, path: str | Path) -> None:
    """Write the header of ``# qid:N: query`` lines then ``grade qid:N # docid query`` lines."""
    with new_file(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("# grade qid # docid query\n")
        for qid, query in jl.queries().items():
            f.write(f"# qid:{qid}: {query}\n")
        for j in jl:
            f.write(f"{j.grade} qid:{j.qid} # {j.doc_id} {j.query}\n")


# --------------------------------------------------------------------------- TREC qrels


def read_trec(path: str | Path, queries: Mapping[str, str] | None = None, *,
              max_grade: int = DEFAULT_MAX_GRADE) -> JudgmentList:
    """Read TREC qrels ``qid iteration docid grade``; ``queries`` maps qid -> query text."""
    source = str(path)
    queries = queries or {}
    rows: list[_Row] = []
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            parts = text.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) != 4:
                raise InputError(f"expected 4 fields 'qid 0 docid grade', found {len(parts)}",
                                 source=source, line=line_no)
            qid, _, doc, grade = parts
            rows.append(_Row(line_no, qid, queries.get(qid, qid), doc, grade))
    return _check(rows, source, max_grade)


def write_trec(jl: JudgmentList, path: str | Path) -> None:
    """Write TREC qrels ``qid 0 docid grade`` (query text is not kept; see ``queries()``)."""
    with new_file(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for j in jl:
            if any(c.isspace() for c in j.qid + j.doc_id):
                raise InputError(f"qid {j.qid!r} / doc {j.doc_id!r} contains whitespace; "
                                 "TREC qrels cannot hold it", source=str(path))
            f.write(f"{j.qid} 0 {j.doc_id} {j.grade}\n")


# --------------------------------------------------------------------------- SRW JSON


def read_srw_json(path: str | Path, *, max_grade: int = DEFAULT_MAX_GRADE) -> JudgmentList:
    """Read Search-Relevance-Workbench judgments; ratings map via ``SRW_RATING_TO_GRADE``.

    Errors name the entry as ``judgmentRatings[i].ratings[k]`` (JSON has no useful lines).
    """
    source = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", source=source, line=e.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("judgmentRatings"), list):
        raise InputError("expected an object with a 'judgmentRatings' list", source=source)
    qid_of = _QidAssigner()
    rows: list[_Row] = []
    for i, entry in enumerate(data["judgmentRatings"]):
        where_q = f"judgmentRatings[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("query"), str) \
                or not isinstance(entry.get("ratings"), list):
            raise _err("expected {'query': str, 'ratings': [...]}", source, where_q)
        query = entry["query"]
        for k, r in enumerate(entry["ratings"]):
            where = f"{where_q}.ratings[{k}]"
            if not isinstance(r, dict) or "docId" not in r or "rating" not in r:
                raise _err("expected {'docId': ..., 'rating': ...}", source, where)
            try:
                value = float(r["rating"])
            except (TypeError, ValueError):
                raise _err(f"rating {r['rating']!r} is not a number", source, where) from None
            if value not in SRW_RATING_TO_GRADE:
                known = ", ".join(GRADE_TO_SRW_RATING[g] for g in sorted(GRADE_TO_SRW_RATING))
                raise _err(f"rating {r['rating']!r} is not one of {known}", source, where)
            rows.append(_Row(where, qid_of(query), query, str(r["docId"]),
                             SRW_RATING_TO_GRADE[value]))
    return _check(rows, source, max_grade)


def write_srw_json(jl: JudgmentList, path: str | Path, *, name: str = "esrank judgments",
                   description: str = "Judgments exported by esrank") -> None:
    """Write SRW judgments; grades 0..3 map back through ``GRADE_TO_SRW_RATING``."""
    ratings: list[dict[str, Any]] = []
    for js in jl.by_query().values():
        out = []
        for j in js:
            if j.grade not in GRADE_TO_SRW_RATING:
                raise InputError(f"grade {j.grade} of query {j.query!r} doc {j.doc_id!r} "
                                 "has no SRW rating (grades 0..3 only)", source=str(path))
            out.append({"docId": j.doc_id, "rating": GRADE_TO_SRW_RATING[j.grade]})
        ratings.append({"query": js[0].query, "ratings": out})
    doc = {"name": name, "description": description, "type": "IMPORT_JUDGMENT",
           "judgmentRatings": ratings}
    with new_file(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------- dispatch

_EXTENSIONS = {".csv": "csv", ".json": "srw", ".txt": "ranklib", ".ranklib": "ranklib",
               ".svmrank": "ranklib", ".qrels": "trec", ".trec": "trec"}


def read_judgments(path: str | Path, format: str | None = None, *,
                   queries: Mapping[str, str] | None = None,
                   max_grade: int = DEFAULT_MAX_GRADE) -> JudgmentList:
    """Read any supported format: ``csv``, ``ranklib``, ``trec`` or ``srw``.

    Without ``format`` the extension decides (.csv, .json = srw, .txt/.ranklib/.svmrank,
    .qrels/.trec); ``queries`` is used by TREC only.
    """
    fmt = format or _EXTENSIONS.get(Path(path).suffix.lower())
    readers = {"csv": lambda: read_csv(path, max_grade=max_grade),
               "ranklib": lambda: read_ranklib(path, max_grade=max_grade),
               "trec": lambda: read_trec(path, queries, max_grade=max_grade),
               "srw": lambda: read_srw_json(path, max_grade=max_grade)}
    if fmt not in readers:
        raise InputError(f"unknown judgment format {fmt or Path(path).suffix!r}; "
                         "use csv, ranklib, trec or srw", source=str(path))
    try:
        return readers[fmt]()
    except UnicodeDecodeError:
        raw = Path(path).read_bytes()
        try:
            raw.decode("utf-8")
            raise  # not the file's own bytes: let it surface
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8",
                             source=str(path), line=raw[:exc.start].count(b"\n") + 1) from None


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
    qid_of = _QidAssigner()
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


# --------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[int], b: Sequence[int], *, weights: str | None = None) -> float:
    """Cohen's kappa from a confusion matrix; ``weights="quadratic"`` for weighted kappa.

    Categories span min..max of both raters' grades. NaN when undefined (expected
    disagreement 0, e.g. both raters constant and equal, or no pairs).
    """
    x, y = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if x.size == 0 or x.shape != y.shape:
        return math.nan
    lo = int(min(x.min(), y.min()))
    k = int(max(x.max(), y.max())) - lo + 1
    observed = np.zeros((k, k))
    np.add.at(observed, (x - lo, y - lo), 1)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) / max(k - 1, 1)) ** 2
    else:
        raise ValueError(f"weights must be None or 'quadratic', not {weights!r}")
    denom = float((w * expected).sum())
    if denom == 0.0:
        return math.nan
    return 1.0 - float((w * observed).sum()) / denom


def _stats(x: Sequence[int], y: Sequence[int]) -> dict[str, float]:
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y).statistic if len(x) >= 2 else math.nan
        tau = stats.kendalltau(x, y).statistic if len(x) >= 2 else math.nan
    return {
        "n": len(x),
        "exact": float(np.mean(np.asarray(x) == np.asarray(y))) if x else math.nan,
        "kappa": cohen_kappa(x, y),
        "weighted_kappa": cohen_kappa(x, y, weights="quadratic"),
        "spearman": float(rho),
        "kendall": float(tau),
    }


def agreement(a: JudgmentList, b: JudgmentList) -> dict[str, Any]:
    """Agreement over the (query text, doc) pairs both lists judge.

    Returns ``{"n", "exact", "kappa", "weighted_kappa", "spearman", "kendall", "per_query"}``
    where ``per_query`` maps query text -> the same statistics, only for queries with >= 2
    shared pairs. Pairs are matched on query text (qids differ between formats). Undefined
    statistics are NaN.
    """
    grades_b = {(j.query, j.doc_id): j.grade for j in b}
    per: dict[str, tuple[list[int], list[int]]] = {}
    xs: list[int] = []
    ys: list[int] = []
    for j in a:
        other = grades_b.get((j.query, j.doc_id))
        if other is None:
            continue
        xs.append(j.grade)
        ys.append(other)
        qx, qy = per.setdefault(j.query, ([], []))
        qx.append(j.grade)
        qy.append(other)
    result: dict[str, Any] = _stats(xs, ys)
    result["per_query"] = {q: _stats(qx, qy) for q, (qx, qy) in per.items() if len(qx) >= 2}
    return result
