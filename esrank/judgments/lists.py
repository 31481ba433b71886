"""Judgment lists: the records, and readers/writers in matching pairs (clicks -> judgments:
clicks.py; agreement between lists: agreement.py).

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
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrank.core.errors import InputError
from esrank.core.files import new_file

log = logging.getLogger(__name__)

DEFAULT_MAX_GRADE = 4

# ESCI labels as SRW stores them (E=1.0, S=0.1, C=0.01, I=0.0, scaled by 100) -> grade.
# The sample file holds exactly these four values: 100 Exact, 10 Substitute, 1 Complement,
# 0 Irrelevant.
SRW_RATING_TO_GRADE: dict[float, int] = {100.0: 3, 10.0: 2, 1.0: 1, 0.0: 0}
GRADE_TO_SRW_RATING: dict[int, str] = {g: f"{r:.3f}" for r, g in SRW_RATING_TO_GRADE.items()}


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


class QidAssigner:
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
        qid_of = QidAssigner()
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
    qid_of = QidAssigner()
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
    except OSError as exc:
        raise InputError(f"cannot read judgments file: {exc.strerror}",
                         source=str(path)) from None
    except UnicodeDecodeError:
        raw = Path(path).read_bytes()
        try:
            raw.decode("utf-8")
            raise  # not the file's own bytes: let it surface
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8",
                             source=str(path), line=raw[:exc.start].count(b"\n") + 1) from None


_WRITERS = {".csv": write_csv, ".json": write_srw_json, ".qrels": write_trec,
            ".trec": write_trec, ".txt": write_ranklib}


def write_judgments(jl: JudgmentList, path: str | Path) -> None:
    """Write in the format the extension names (the writers above, by extension)."""
    writer = _WRITERS.get(Path(path).suffix.lower())
    if writer is None:
        raise InputError(f"unknown judgment file extension {Path(path).suffix!r} (use one of "
                         f"{', '.join(_WRITERS)})", source=str(path))
    writer(jl, path)
