"""Feature logging: judged (query, doc) pairs -> feature values from the engine -> a table.

Queries go to the plugin in msearch batches (one `sltr` + `ltr_log` search per query, with a
filter on that query's judged docs and its candidates). The candidates are the recall stage's
(esrank.catalogue.recall), the set a model trained on the table rescores. Judged docs the index
does not hold are reported, never silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from esrank.catalogue.index import check_index_encoder
from esrank.catalogue.lookup import fetch_texts
from esrank.catalogue.recall import Candidates, Recall, retrieve
from esrank.core.batches import batched
from esrank.core.errors import InputError
from esrank.core.feature_set import FeatureSet
from esrank.core.query_text import bounded_query
from esrank.engine import Engine
from esrank.engine.base import logging_request, parse_ltr_log
from esrank.features.params import ParamBuilder, query_params
from esrank.features.parser import load_feature_set
from esrank.features.sync import push_feature_sets
from esrank.judgments.clicks import judged_sessions
from esrank.judgments.lists import Judgment, JudgmentList, read_judgments
from esrank.learn.log_manifest import LogManifest, PartRecord, judgments_digest
from esrank.learn.table import FeatureMatrix, write_part, write_ranklib, write_table
from esrank.models.cross_encoder import CrossEncoder
from esrank.models.encoder import Encoder

log = logging.getLogger(__name__)

# one logged pair: qid, query, doc id, grade, feature values, first-pass rank (0: outside the
# candidates), judged, BM25 rank, kNN rank (0: not in that list)
_Row = tuple[str, str, str, int, list[float], int, bool, int, int]
T, R = TypeVar("T"), TypeVar("R")


@dataclass
class LogReport:
    matrix: FeatureMatrix
    missing_docs: list[tuple[str, str]] = field(default_factory=list)  # (query, doc_id)
    seconds: float = 0.0


def doc_texts(engine: Engine, index: str, doc_ids: Sequence[Sequence[str]]
              ) -> list[dict[str, str]]:
    """Per query, doc id -> the text a cross-encoder reads, for its ids the index holds."""
    texts = fetch_texts(engine, index, {d for ids in doc_ids for d in ids})
    return [{d: texts[d] for d in dict.fromkeys(ids) if d in texts} for ids in doc_ids]


def in_order(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """`fn` over `items` from `workers` threads, the results in `items`' order whatever order
    they finish in; at most two per worker are in flight, and an error cancels the rest.

    >>> list(in_order(len, ["a", "bb", "ccc"], workers=2))
    [1, 2, 3]
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="log") as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


Group = tuple[str, tuple[Judgment, ...]]  # a qid and its judgments


@dataclass(frozen=True)
class FeatureLogger:
    """One logging run, bound once (`bind`): the engine, index, feature set, query params,
    candidate set and shoppers. `log` logs one batch of query groups in one ranked msearch;
    it only reads the logger, so concurrent workers share one."""

    engine: Engine
    index: str
    feature_set: FeatureSet
    params_for: ParamBuilder
    encoder: Encoder | None = None
    recall: Recall | None = None
    shoppers: Mapping[str, dict] = field(default_factory=dict)

    @classmethod
    def bind(cls, engine: Engine, index: str, feature_set: FeatureSet, encoder: Encoder | None,
             *, recall: Recall | None = None, shoppers: Mapping[str, dict] | None = None,
             cross_encoder: CrossEncoder | None = None) -> FeatureLogger:
        """The logger, once its scorers are checked: the kNN candidates need the encoder, and
        an index embedded by other weights than the encoder is refused before any search."""
        if recall is not None and recall.knn and encoder is None:
            raise InputError("logging the nearest products needs the query encoder")
        params_for = query_params(feature_set.params, encoder, source=feature_set.source,
                                  cross_encoder=cross_encoder)
        logger = cls(engine, index, feature_set, params_for, encoder, recall,
                     dict(shoppers or {}))
        if logger.encoder_key:
            check_index_encoder(engine, index, logger.encoder_key)
        return logger

    @property
    def encoder_key(self) -> str | None:
        """The encoder's key where the table depends on it (vector params, kNN candidates)."""
        uses = self.params_for.embeds or (self.recall is not None and self.recall.knn)
        return self.encoder.key if uses else None

    @property
    def cross_encoder_key(self) -> str | None:
        return self.params_for.cross_encoder.key if self.params_for.needs_docs else None

    def log(self, chunk: Sequence[Group]) -> tuple[list[_Row], list[tuple[str, str]]]:
        """One batch of query groups -> their rows, and the (query, doc) judged pairs the
        index lacks."""
        rows: list[_Row] = []
        missing: list[tuple[str, str]] = []
        for (qid, js), (found, values) in zip(chunk, self._search(chunk), strict=True):
            query_rows, query_missing = _query_rows(qid, js, found, values)
            rows += query_rows
            missing += query_missing
        return rows, missing

    def _search(self, chunk: Sequence[Group]) -> list[tuple[Candidates, dict[str, list[float]]]]:
        """Per query: its candidates, and doc id -> logged values (one msearch for the
        candidates, one ranked msearch logging them and the judged docs)."""
        texts = [bounded_query(js[0].query)[0] for _, js in chunk]  # as served
        recall = self.recall
        # each query embedded alone, as a lone search is: an int8 encoder's vector depends on
        # the batch it is in (its activations are quantized per batch), and the table must not
        # depend on how queries were batched, by how many workers, in which parts
        vectors = (np.vstack([self.encoder.encode([text]) for text in texts])
                   if self.encoder_key else None)  # for the kNN candidates and the params
        windows = (retrieve(self.engine, self.index, texts, recall, vectors) if recall
                   else [Candidates(()) for _ in chunk])
        ids = [list(dict.fromkeys([j.doc_id for j in js] + served.ids))
               for (_, js), served in zip(chunk, windows, strict=True)]
        docs = doc_texts(self.engine, self.index, ids) if self.params_for.needs_docs else None
        requests = [logging_request(self.feature_set, {**params, **self.shoppers.get(qid, {})},
                                    wanted)
                    for (qid, _), wanted, params in zip(
                        chunk, ids, self.params_for(texts, docs, vectors), strict=True)]
        responses = self.engine.ranked(self.index, requests)
        names = self.feature_set.feature_names
        return [(served, {h["_id"]: parse_ltr_log(h, names) for h in response["hits"]["hits"]})
                for served, response in zip(windows, responses, strict=True)]

    def matrix(self, rows: Sequence[_Row]) -> FeatureMatrix:
        """The table of `rows` (the shopper params of their queries with it)."""
        fs, recall = self.feature_set, self.recall
        values = np.array([r[4] for r in rows], dtype=np.float32).reshape(
            -1, len(fs.feature_names))
        shoppers = {q: self.shoppers[q] for q in dict.fromkeys(r[0] for r in rows)
                    if self.shoppers.get(q)}
        return FeatureMatrix(fs.engine_name, fs.feature_names, tuple(r[0] for r in rows),
                             tuple(r[1] for r in rows), tuple(r[2] for r in rows),
                             tuple(r[3] for r in rows), values,
                             tuple(r[5] for r in rows) if recall else None,
                             tuple(r[6] for r in rows) if recall else None,
                             shoppers or None, self.cross_encoder_key, self.encoder_key,
                             recall, tuple((r[7], r[8]) for r in rows) if recall else None)


def progress_bar(total: int, encoder: Encoder | None, progress: bool):
    """The judged pairs' progress bar (off without `progress`)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="logging features", unit="pair", disable=not progress)
    if encoder is not None:
        bar.set_postfix_str(f"queries embedded by {encoder.name}", refresh=False)
    return bar


def warn_missing(missing: Sequence[tuple[str, str]], index: str) -> None:
    if missing:
        log.warning("%d judged docs are not in %s (first: %s)", len(missing), index,
                    ", ".join(f"{q!r}/{d}" for q, d in missing[:5]))


def log_judgments(engine: Engine, index: str, feature_set: FeatureSet, judgments: JudgmentList,
                  encoder: Encoder | None, *, recall: Recall | None = None,
                  queries_per_request: int = 16, workers: int = 1, progress: bool = True,
                  shoppers: Mapping[str, dict] | None = None,
                  cross_encoder: CrossEncoder | None = None) -> LogReport:
    """Log every feature for every judged pair, and for the served candidates.

    With `recall` (the recall stage: the BM25 top N, joined with the K nearest products), every
    candidate of each query is logged too, unjudged ones as grade 0, and each row records its
    first-pass rank (its place among the candidates; 0 for a judged doc outside them) and its
    BM25 and kNN ranks: what training needs to tell served candidates from docs judges found
    elsewhere, and to estimate what serving does. A feature set with a cross-encoder param
    needs `cross_encoder`: it scores each query's logged docs (judged and candidates alike).
    Batches of `queries_per_request` queries go to the engine from `workers` concurrent
    msearches; the table is the same whatever their number.

    >>> report = log_judgments(engine, "products", fs, judgments, enc,
    ...                        recall=Recall(100, 50), workers=2)  # doctest: +SKIP
    >>> report.matrix.values.shape  # doctest: +SKIP
    (12817, 15)
    """
    started = time.monotonic()
    logger = FeatureLogger.bind(engine, index, feature_set, encoder, recall=recall,
                                shoppers=shoppers, cross_encoder=cross_encoder)
    chunks = list(batched(judgments.by_query().items(), queries_per_request))
    rows: list[_Row] = []
    missing: list[tuple[str, str]] = []
    with progress_bar(len(judgments), encoder, progress) as bar:
        for chunk, (chunk_rows, chunk_missing) in zip(chunks, in_order(logger.log, chunks, workers),
                                                       strict=True):
            rows += chunk_rows
            missing += chunk_missing
            bar.update(sum(len(js) for _, js in chunk))
    warn_missing(missing, index)
    return LogReport(logger.matrix(rows), missing, time.monotonic() - started)


def _query_rows(qid: str, js: tuple[Judgment, ...], found: Candidates,
                logged: dict[str, list[float]]) -> tuple[list[_Row], list[tuple[str, str]]]:
    """One query's rows: its judged docs the engine logged (the others are missing), then the
    unjudged candidates, as grade 0."""
    served = found.ids
    rank = {d: r for r, d in enumerate(served, 1)}
    lists = found.ranks()
    rows: list[_Row] = []
    missing: list[tuple[str, str]] = []
    for j in js:
        if j.doc_id in logged:
            rows.append((qid, j.query, j.doc_id, j.grade, logged[j.doc_id],
                         rank.get(j.doc_id, 0), True, *lists.get(j.doc_id, (0, 0))))
        else:
            missing.append((j.query, j.doc_id))
    judged = {j.doc_id for j in js}
    rows += [(qid, js[0].query, d, 0, logged[d], rank[d], False, *lists[d])
             for d in served if d not in judged and d in logged]
    return rows, missing


@dataclass
class DatasetReport:
    """What `log_dataset` did: the parts it wrote and skipped (done before), the dataset's
    rows and missing docs (all parts), and the judged pairs it logged in `seconds`."""

    written: int
    skipped: int
    rows: int
    missing_docs: list[tuple[str, str]]
    judgments: int
    seconds: float


def log_dataset(engine: Engine, index: str, feature_set: FeatureSet, judgments: JudgmentList,
                encoder: Encoder | None, folder: Path, *, part_size: int = 500,
                queries_per_request: int = 16, workers: int = 1, progress: bool = True,
                recall: Recall | None = None, shoppers: Mapping[str, dict] | None = None,
                cross_encoder: CrossEncoder | None = None, source: str | None = None
                ) -> DatasetReport:
    """Log as `log_judgments` does into the dataset `folder`, one part per `part_size` query
    groups (in judgment order), each written as soon as it is logged. Resumable: the parts
    finished by an earlier run with the same inputs (log_manifest) are skipped; a folder logged
    with others is refused before any search. `source` names the judgments in the parts.

    >>> log_dataset(engine, "products", fs, judgments, enc, Path("table"),
    ...             workers=4).written  # doctest: +SKIP
    26
    """
    started = time.monotonic()
    logger = FeatureLogger.bind(engine, index, feature_set, encoder, recall=recall,
                                shoppers=shoppers, cross_encoder=cross_encoder)
    manifest = LogManifest(feature_set.engine_name, recall.label if recall else None,
                           judgments_digest(judgments, shoppers), logger.encoder_key,
                           logger.cross_encoder_key, part_size, source)
    done = manifest.open(folder)
    parts = list(batched(judgments.by_query().items(), part_size))
    todo = [n for n in range(len(parts)) if n not in done]
    chunks = [(n, chunk) for n in todo for chunk in batched(parts[n], queries_per_request)]
    last = {n: i for i, (n, _) in enumerate(chunks)}  # each part's last chunk
    rows: list[_Row] = []
    missing: list[tuple[str, str]] = []
    pairs = sum(len(js) for n in todo for _, js in parts[n])
    with progress_bar(pairs, encoder, progress) as bar:
        logged = in_order(logger.log, [chunk for _, chunk in chunks], workers)
        for i, ((n, chunk), (chunk_rows, chunk_missing)) in enumerate(
                zip(chunks, logged, strict=True)):
            rows += chunk_rows
            missing += chunk_missing
            bar.update(sum(len(js) for _, js in chunk))
            if last[n] == i:
                write_part(logger.matrix(rows), folder, n, judgments_source=source)
                done[n] = PartRecord(len(parts[n]), sum(len(js) for _, js in parts[n]),
                                     len(rows), tuple(missing))
                manifest.save(folder, done)
                rows, missing = [], []
    every_missing = [m for n in sorted(done) for m in done[n].missing]
    warn_missing(every_missing, index)
    return DatasetReport(len(todo), len(parts) - len(todo), sum(r.rows for r in done.values()),
                         every_missing, pairs, time.monotonic() - started)


@dataclass
class LogResult:
    """What `esrank log` wrote: the table (a file and its RankLib text, or a dataset folder)
    and how it went; `judgments` is the judged pairs this run logged, `parts` a dataset's
    parts (written, skipped)."""

    feature_set: str
    rows: int
    table: Path
    ranklib: Path | None
    seconds: float
    judgments: int
    missing_docs: list[tuple[str, str]] = field(default_factory=list)
    candidates: str | None = None  # the candidate set logged (Recall.label), None: judged only
    workers: int = 1
    parts: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        rate = self.judgments / self.seconds if self.seconds else 0.0
        parts = {"written": self.parts[0], "skipped": self.parts[1]} if self.parts else None
        return {"feature_set": self.feature_set, "rows": self.rows, "table": str(self.table),
                "candidates": self.candidates,
                "ranklib": str(self.ranklib) if self.ranklib else None,
                "seconds": round(self.seconds, 2), "judgments_logged": self.judgments,
                "judgments_per_second": round(rate, 1), "workers": self.workers,
                "parts": parts,
                "missing_docs": [{"query": q, "doc_id": d} for q, d in self.missing_docs]}


def is_dataset(output: Path) -> bool:
    """Whether `esrank log -o output` writes a dataset folder: any name but a .parquet file's
    (or an existing folder)."""
    return output.is_dir() or output.suffix != ".parquet"


def log_table(app, judgments: Path | None, feature_set: Path, output: Path, *,
              fmt: str | None = None, window: int | None = None, knn: int | None = None,
              queries_per_request: int = 16, progress: bool = True, sessions: bool = False,
              workers: int = 1, part_size: int = 500) -> LogResult:
    """Log the judged docs and the candidates of every judged query (the BM25 top `window`
    joined with the `knn` nearest products: default ESRANK_RESCORE_WINDOW and
    ESRANK_RECALL_KNN) with `app`'s engine, index and encoders, from `workers` concurrent
    msearches, into a table: a .parquet file (+ the RankLib text beside it), or a resumable
    dataset folder (`is_dataset`: `log_dataset`, parts of `part_size` queries, no RankLib
    text). With `sessions`, the judgments are the shoppers' own (`judged_sessions` of a UBI
    log, or of the engine's UBI indices when `judgments` is None), each logged with the
    shopper params its page was served with."""
    fs = load_feature_set(feature_set)
    shoppers = None
    if sessions:
        judged, shoppers = judged_sessions(app.engine, judgments)
    else:
        judged = read_judgments(judgments, fmt)
    push_feature_sets(app.engine, [fs])
    window = app.window(window)
    recall = Recall(window, app.settings.recall_knn if knn is None else knn) if window else None
    common = dict(recall=recall, queries_per_request=queries_per_request, workers=workers,
                  progress=progress, shoppers=shoppers, cross_encoder=app.feature_reranker(fs))
    source = str(judgments or "ubi indices")
    result = partial(LogResult, fs.engine_name, table=output, workers=workers,
                     candidates=recall.label if recall else None)
    if is_dataset(output):
        done = log_dataset(app.engine, app.settings.index, fs, judged, app.encoder, output,
                           part_size=part_size, source=source, **common)
        return result(rows=done.rows, ranklib=None, seconds=done.seconds,
                      judgments=done.judgments, missing_docs=done.missing_docs,
                      parts=(done.written, done.skipped))
    report = log_judgments(app.engine, app.settings.index, fs, judged, app.encoder, **common)
    write_table(report.matrix, output, judgments_source=source)
    write_ranklib(report.matrix, output.with_suffix(".txt"))
    return result(rows=len(report.matrix), ranklib=output.with_suffix(".txt"),
                  seconds=report.seconds, judgments=len(judged),
                  missing_docs=report.missing_docs)
