"""Feature logging: judged (query, doc) pairs -> feature values from the engine -> a table.

Queries go to the plugin in msearch batches (one `sltr` + `ltr_log` search per query, with a
filter on that query's judged docs and its candidates). The candidates are the recall stage's
(esrank.catalogue.recall), the set a model trained on the table rescores. Judged docs the index
does not hold are reported, never silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
from esrank.learn.table import FeatureMatrix, write_ranklib, write_table
from esrank.models.cross_encoder import CrossEncoder
from esrank.models.encoder import Encoder

log = logging.getLogger(__name__)

# one logged pair: qid, query, doc id, grade, feature values, first-pass rank (0: outside the
# candidates), judged, BM25 rank, kNN rank (0: not in that list)
_Row = tuple[str, str, str, int, list[float], int, bool, int, int]


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
                  encoder: Encoder | None, *, recall: Recall | None = None,
                  queries_per_request: int = 16, progress: bool = True,
                  shoppers: Mapping[str, dict] | None = None,
                  cross_encoder: CrossEncoder | None = None) -> LogReport:
    """Log every feature for every judged pair, and for the served candidates.

    With `recall` (the recall stage: the BM25 top N, joined with the K nearest products), every
    candidate of each query is logged too, unjudged ones as grade 0, and each row records its
    first-pass rank (its place among the candidates; 0 for a judged doc outside them) and its
    BM25 and kNN ranks: what training needs to tell served candidates from docs judges found
    elsewhere, and to estimate what serving does. A feature set with a cross-encoder param
    needs `cross_encoder`: it scores each query's logged docs (judged and candidates alike).

    >>> report = log_judgments(engine, "products", fs, judgments, enc,
    ...                        recall=Recall(100, 50))  # doctest: +SKIP
    >>> report.matrix.values.shape  # doctest: +SKIP
    (12817, 15)
    """
    from tqdm import tqdm

    if recall is not None and recall.knn and encoder is None:
        raise InputError("logging the nearest products needs the query encoder")
    started = time.monotonic()
    params_for = query_params(feature_set.params, encoder, source=feature_set.source,
                              cross_encoder=cross_encoder)
    if params_for.embeds or (recall is not None and recall.knn):
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
            logged = _log_chunk(engine, index, feature_set, chunk, params_for, shopper, recall,
                                encoder)
            for (qid, js), (found, values) in zip(chunk, logged, strict=True):
                query_rows, query_missing = _query_rows(qid, js, found, values)
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
                           tuple(r[5] for r in rows) if recall else None,
                           tuple(r[6] for r in rows) if recall else None,
                           {q: p for q, p in shopper.items() if p} or None,
                           cross_encoder.key if params_for.needs_docs else None,
                           encoder.key if params_for.embeds or (recall and recall.knn) else None,
                           recall, tuple((r[7], r[8]) for r in rows) if recall else None)
    return LogReport(matrix, missing, time.monotonic() - started)


def _log_chunk(engine: Engine, index: str, feature_set: FeatureSet,
               chunk: Sequence[tuple[str, tuple[Judgment, ...]]], params_for: ParamBuilder,
               shopper: Mapping[str, dict], recall: Recall | None, encoder: Encoder | None
               ) -> list[tuple[Candidates, dict[str, list[float]]]]:
    """Log one batch of queries in one ranked msearch (after one for their candidates): per
    query, its candidates and doc id -> logged values."""
    texts = [bounded_query(js[0].query)[0] for _, js in chunk]  # as served
    vectors = encoder.encode(texts) if recall and recall.knn else None  # the params' too
    windows = (retrieve(engine, index, texts, recall, vectors) if recall
               else [Candidates(()) for _ in chunk])
    ids = [list(dict.fromkeys([j.doc_id for j in js] + served.ids))
           for (_, js), served in zip(chunk, windows, strict=True)]
    docs = doc_texts(engine, index, ids) if params_for.needs_docs else None
    requests = [logging_request(feature_set, {**params, **shopper.get(qid, {})}, wanted)
                for (qid, _), wanted, params in zip(chunk, ids, params_for(texts, docs, vectors),
                                                    strict=True)]
    responses = engine.ranked(index, requests)
    return [(served, {h["_id"]: parse_ltr_log(h, feature_set.feature_names)
                      for h in response["hits"]["hits"]})
            for served, response in zip(windows, responses, strict=True)]


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
class LogResult:
    """What `esrank log` wrote: the table (and its RankLib text) and how it went."""

    feature_set: str
    rows: int
    table: Path
    ranklib: Path
    seconds: float
    judgments: int
    missing_docs: list[tuple[str, str]] = field(default_factory=list)
    candidates: str | None = None  # the candidate set logged (Recall.label), None: judged only

    def to_dict(self) -> dict:
        rate = self.judgments / self.seconds if self.seconds else 0.0
        return {"feature_set": self.feature_set, "rows": self.rows, "table": str(self.table),
                "candidates": self.candidates,
                "ranklib": str(self.ranklib), "seconds": round(self.seconds, 2),
                "judgments_per_second": round(rate, 1),
                "missing_docs": [{"query": q, "doc_id": d} for q, d in self.missing_docs]}


def log_table(app, judgments: Path | None, feature_set: Path, output: Path, *,
              fmt: str | None = None, window: int | None = None, knn: int | None = None,
              queries_per_request: int = 16, progress: bool = True, sessions: bool = False
              ) -> LogResult:
    """Log the judged docs and the candidates of every judged query (the BM25 top `window`
    joined with the `knn` nearest products: default ESRANK_RESCORE_WINDOW and
    ESRANK_RECALL_KNN) into a table (+ the RankLib text beside it), with `app`'s engine, index
    and encoders. With `sessions`, the
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
    recall = Recall(window, app.settings.recall_knn if knn is None else knn) if window else None
    report = log_judgments(app.engine, app.settings.index, fs, judged, app.encoder,
                           recall=recall, queries_per_request=queries_per_request,
                           progress=progress, shoppers=shoppers,
                           cross_encoder=app.feature_reranker(fs))
    write_table(report.matrix, output, judgments_source=str(judgments or "ubi indices"))
    write_ranklib(report.matrix, output.with_suffix(".txt"))
    return LogResult(fs.engine_name, len(report.matrix), output, output.with_suffix(".txt"),
                     report.seconds, len(judged), report.missing_docs,
                     recall.label if recall else None)
