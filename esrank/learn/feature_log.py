"""Feature logging: judged (query, doc) pairs -> feature values from the engine -> a table.

Queries go to the plugin in msearch batches (one `sltr` + `ltr_log` search per query, with a
filter on that query's judged docs). Judged docs the index does not hold are reported, never
silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from esrank.catalogue.index import check_index_encoder
from esrank.catalogue.lookup import fetch_texts
from esrank.core.batches import batched
from esrank.core.errors import InputError
from esrank.core.feature_set import FeatureSet
from esrank.core.query_text import bounded_query
from esrank.engine import Engine
from esrank.engine.base import logging_request, parse_ltr_log
from esrank.features.params import query_params
from esrank.judgments.lists import JudgmentList
from esrank.learn.table import FeatureMatrix
from esrank.models.cross_encoder import CrossEncoder
from esrank.models.encoder import Encoder

log = logging.getLogger(__name__)


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
    import time

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
    rows: list[tuple[str, str, str, int, list[float], int, bool]] = []
    missing: list[tuple[str, str]] = []
    with tqdm(total=len(judgments), desc="logging features", unit="pair",
              disable=not progress) as bar:
        if encoder is not None:
            bar.set_postfix_str(f"queries embedded by {encoder.name}", refresh=False)
        for chunk in batched(groups, queries_per_request):
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
            for (qid, js), served, response in zip(chunk, windows, responses, strict=True):
                logged = {h["_id"]: parse_ltr_log(h, feature_set.feature_names)
                          for h in response["hits"]["hits"]}
                rank = {d: r for r, d in enumerate(served, 1)}
                for j in js:
                    if j.doc_id in logged:
                        rows.append((qid, j.query, j.doc_id, j.grade, logged[j.doc_id],
                                     rank.get(j.doc_id, 0), True))
                    else:
                        missing.append((j.query, j.doc_id))
                judged = {j.doc_id for j in js}
                rows += [(qid, js[0].query, d, 0, logged[d], rank[d], False)
                         for d in served if d not in judged and d in logged]
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


def _first_pass(engine: Engine, index: str, texts: list[str], k: int,
                query_for: Callable[[str], dict]) -> list[list[str]]:
    """Per query, the doc ids of its first-pass top k, in rank order."""
    bodies = [{"size": k, "query": query_for(text), "_source": False} for text in texts]
    return [[h["_id"] for h in response["hits"]["hits"]]
            for response in engine.msearch(index, bodies)]


