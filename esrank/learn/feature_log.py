"""Feature logging: judged (query, doc) pairs -> feature values from the engine -> a table.

Queries go to the plugin in msearch batches (one `sltr` + `ltr_log` search per query, with a
filter on that query's judged docs). Judged docs the index does not hold are reported, never
silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esrank.catalogue.index import check_index_encoder
from esrank.catalogue.lookup import fetch_texts
from esrank.catalogue.query import bm25_query
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
from esrank.learn.table import FeatureMatrix, write_ranklib, write_table
from esrank.models.cross_encoder import CrossEncoder
from esrank.models.encoder import Encoder

log = logging.getLogger(__name__)

# one logged pair: qid, query, doc id, grade, feature values, first-pass rank (0: outside the
# window), judged
_Row = tuple[str, str, str, int, list[float], int, bool]


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


def log_judgments(engine: Engine, index: str, feature_set: FeatureSet, judgments: JudgmentList,
                  encoder: Encoder | None, *, window: int = 0,
                  first_pass: Callable[[str], dict] | None = None,
                  queries_per_request: int = 16, progress: bool = True,
                  shoppers: Mapping[str, dict] | None = None,
                  cross_encoder: CrossEncoder | None = None) -> LogReport:
    """Log every feature for every judged pair, and for the served window.

    With `window=N` and `first_pass` (a query clause built from the text: the BM25 first pass
    a model rescores), every doc of each query's first-pass top N is logged too, unjudged ones
    as grade 0, and each row records its first-pass rank (0 for a judged doc outside the
    window): what training needs to tell served candidates from docs judges found elsewhere,
    and to estimate what serving does. A feature set with a cross-encoder param needs
    `cross_encoder`: it scores each query's logged docs (judged and window alike).

    >>> report = log_judgments(engine, "products", fs, judgments, enc, window=100,
    ...                        first_pass=bm25_query)  # doctest: +SKIP
    >>> report.matrix.values.shape  # doctest: +SKIP
    (8557, 15)
    """
    from tqdm import tqdm

    if window and first_pass is None:
        raise InputError("logging a window needs the first-pass query to take it from")
    started = time.monotonic()
    params_for = query_params(feature_set.params, encoder, source=feature_set.source,
                              cross_encoder=cross_encoder)
    if params_for.embeds:
        check_index_encoder(engine, index, encoder.key)
    shopper = dict(shoppers or {})
    groups = list(judgments.by_query().items())
    rows: list[_Row] = []
    missing: list[tuple[str, str]] = []
    with tqdm(total=len(judgments), desc="logging features", unit="pair",
              disable=not progress) as bar:
        if encoder is not None:
            bar.set_postfix_str(f"queries embedded by {encoder.name}", refresh=False)
        for chunk in batched(groups, queries_per_request):
            logged = _log_chunk(engine, index, feature_set, chunk, params_for, shopper,
                                window, first_pass)
            for (qid, js), (served, values) in zip(chunk, logged, strict=True):
                query_rows, query_missing = _query_rows(qid, js, served, values)
                rows += query_rows
                missing += query_missing
                bar.update(len(js))
    if missing:
        log.warning("%d judged docs are not in %s (first: %s)", len(missing), index,
                    ", ".join(f"{q!r}/{d}" for q, d in missing[:5]))
    values = np.array([r[4] for r in rows], dtype=np.float32).reshape(-1, len(
        feature_set.feature_names))
    matrix = FeatureMatrix(feature_set.engine_name, feature_set.feature_names,
                           tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                           tuple(r[2] for r in rows), tuple(r[3] for r in rows), values,
                           tuple(r[5] for r in rows) if window else None,
                           tuple(r[6] for r in rows) if window else None,
                           {q: p for q, p in shopper.items() if p} or None,
                           cross_encoder.key if params_for.needs_docs else None,
                           encoder.key if params_for.embeds else None)
    return LogReport(matrix, missing, time.monotonic() - started)


def _log_chunk(engine: Engine, index: str, feature_set: FeatureSet,
               chunk: Sequence[tuple[str, tuple[Judgment, ...]]], params_for: ParamBuilder,
               shopper: Mapping[str, dict], window: int,
               first_pass: Callable[[str], dict] | None
               ) -> list[tuple[list[str], dict[str, list[float]]]]:
    """Log one batch of queries in one ranked msearch (after one for their first-pass
    windows): per query, its served window's doc ids and doc id -> logged values."""
    texts = [bounded_query(js[0].query)[0] for _, js in chunk]  # as served
    windows = (_first_pass(engine, index, texts, window, first_pass) if window
               else [[] for _ in chunk])
    ids = [list(dict.fromkeys([j.doc_id for j in js] + served))
           for (_, js), served in zip(chunk, windows, strict=True)]
    docs = doc_texts(engine, index, ids) if params_for.needs_docs else None
    requests = [logging_request(feature_set, {**params, **shopper.get(qid, {})}, wanted)
                for (qid, _), wanted, params in zip(chunk, ids, params_for(texts, docs),
                                                    strict=True)]
    responses = engine.ranked(index, requests)
    return [(served, {h["_id"]: parse_ltr_log(h, feature_set.feature_names)
                      for h in response["hits"]["hits"]})
            for served, response in zip(windows, responses, strict=True)]


def _query_rows(qid: str, js: tuple[Judgment, ...], served: list[str],
                logged: dict[str, list[float]]) -> tuple[list[_Row], list[tuple[str, str]]]:
    """One query's rows: its judged docs the engine logged (the others are missing), then the
    unjudged docs of its served window, as grade 0."""
    rank = {d: r for r, d in enumerate(served, 1)}
    rows: list[_Row] = []
    missing: list[tuple[str, str]] = []
    for j in js:
        if j.doc_id in logged:
            rows.append((qid, j.query, j.doc_id, j.grade, logged[j.doc_id],
                         rank.get(j.doc_id, 0), True))
        else:
            missing.append((j.query, j.doc_id))
    judged = {j.doc_id for j in js}
    rows += [(qid, js[0].query, d, 0, logged[d], rank[d], False)
             for d in served if d not in judged and d in logged]
    return rows, missing


def _first_pass(engine: Engine, index: str, texts: list[str], k: int,
                query_for: Callable[[str], dict]) -> list[list[str]]:
    """Per query, the doc ids of its first-pass top k, in rank order."""
    bodies = [{"size": k, "query": query_for(text), "_source": False} for text in texts]
    return [[h["_id"] for h in response["hits"]["hits"]]
            for response in engine.msearch(index, bodies)]


@dataclass
class LogResult:
    """What `esrank log` wrote: the table (and its RankLib text) and how it went."""

    feature_set: str
    rows: int
    table: Path
    ranklib: Path
    seconds: float
    judgments: int
    missing_docs: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        rate = self.judgments / self.seconds if self.seconds else 0.0
        return {"feature_set": self.feature_set, "rows": self.rows, "table": str(self.table),
                "ranklib": str(self.ranklib), "seconds": round(self.seconds, 2),
                "judgments_per_second": round(rate, 1),
                "missing_docs": [{"query": q, "doc_id": d} for q, d in self.missing_docs]}


def log_table(app, judgments: Path | None, feature_set: Path, output: Path, *,
              fmt: str | None = None, window: int | None = None, queries_per_request: int = 16,
              progress: bool = True, sessions: bool = False) -> LogResult:
    """Log the judged docs and the BM25 window of every judged query into a table (+ the
    RankLib text beside it), with `app`'s engine, index and encoders. With `sessions`, the
    judgments are the shoppers' own (`judged_sessions` of a UBI log, or of the engine's UBI
    indices when `judgments` is None), each logged with the shopper params its page was
    served with."""
    fs = load_feature_set(feature_set)
    shoppers = None
    if sessions:
        judged, shoppers = judged_sessions(app.engine, judgments)
    else:
        judged = read_judgments(judgments, fmt)
    push_feature_sets(app.engine, [fs])
    window = app.window(window)
    report = log_judgments(app.engine, app.settings.index, fs, judged, app.encoder,
                           window=window, first_pass=bm25_query,
                           queries_per_request=queries_per_request, progress=progress,
                           shoppers=shoppers, cross_encoder=app.feature_reranker(fs))
    write_table(report.matrix, output, judgments_source=str(judgments or "ubi indices"),
                window=window)
    write_ranklib(report.matrix, output.with_suffix(".txt"))
    return LogResult(fs.engine_name, len(report.matrix), output, output.with_suffix(".txt"),
                     report.seconds, len(judged), report.missing_docs)
