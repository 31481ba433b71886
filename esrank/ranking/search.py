"""The query-time pipeline: BM25 first pass, then the active model as an `sltr` rescore.

A `Ranker` says how to rank: `Ranker("bm25")` is the first pass alone; with a model, the top
`window` BM25 hits are rescored by the model alone (query_weight 0), which is exactly how the
parity gate scored it before it went live. A model with a cross-encoder feature takes one more
first pass: the window's texts, which the cross-encoder scores into the rescore's params.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from esrank.catalogue.index import ID_FIELD
from esrank.catalogue.products import text_of
from esrank.catalogue.query import DEFAULT_FIELDS, bm25_query
from esrank.core.batches import batched
from esrank.core.errors import (
    ConfigError,
    EngineError,
    InputError,
    MissingScorerError,
    NoCrossEncoderError,
    ScorerError,
)
from esrank.core.feature_set import active_features
from esrank.core.query_text import bounded_query
from esrank.deploy.registry import ActiveModel, active_model, deployed_model
from esrank.engine import Engine, Ranked, Rescore
from esrank.engine.base import parse_ltr_log
from esrank.features.params import ParamBuilder, query_params
from esrank.models.cross_encoder import CrossEncoder
from esrank.models.encoder import Encoder, same_space

log = logging.getLogger(__name__)

SOURCE_FIELDS = ["title", "short_description", "supplier", "price"]


@dataclass(frozen=True)
class Hit:
    rank: int
    doc_id: str
    score: float
    title: str
    supplier: str | None
    price: float | None


@dataclass(frozen=True)
class Ranker:
    """A ranking configuration: its name, and the model that rescores BM25 (None: BM25)."""

    name: str = "bm25"
    model: ActiveModel | None = None
    window: int = 100
    fields: tuple[str, ...] = DEFAULT_FIELDS
    rerank: int = 0  # with a cross-encoder: rerank the top N

    @property
    def label(self) -> str:
        """The configuration's name, with its rerank stage (e.g. chorus-v7+rerank20)."""
        return f"{self.name}+rerank{self.rerank}" if self.rerank else self.name


BASELINES = {"bm25": DEFAULT_FIELDS, "bm25-title": ("title",)}  # BM25 configurations by name
MAX_RERANK = 100  # the most hits a cross-encoder reranks
RERANK_TOP = re.compile(r"[1-9][0-9]?|100")  # N of NAME+rerankN: ASCII digits, 1..MAX_RERANK


def parse_configuration(which: str) -> tuple[str, int]:
    """A configuration name's parts: NAME+rerankN -> (NAME, N); NAME -> (NAME, 0).

    >>> parse_configuration("active+rerank20")
    ('active', 20)
    """
    name, marker, top = which.partition("+rerank")
    if marker and not RERANK_TOP.fullmatch(top):
        raise InputError(f"{which[:60]!r}: write NAME+rerankN with N in 1..{MAX_RERANK}, e.g. "
                         "active+rerank20")
    return name, int(top) if marker else 0


def resolve_ranker(engine: Engine, set_name: str, which: str, window: int) -> Ranker:
    """A configuration by name: "bm25", "bm25-title" (BM25 over titles alone), "active" (the
    feature set's active model, or BM25 when none is active) or a deployed model's name, each
    optionally `+rerankN` (the cross-encoder reranks the top N).

    >>> resolve_ranker(engine, "chorus", "active+rerank20", 100).label  # doctest: +SKIP
    'chorus-v7+rerank20'
    """
    name, rerank = parse_configuration(which)
    if name in BASELINES:
        return Ranker(name, None, window, BASELINES[name], rerank)
    model = (active_model(engine, set_name) if name == "active"
             else deployed_model(engine, set_name, name))
    if model is None:
        return Ranker("bm25", None, window, rerank=rerank)
    return Ranker(model.name, model, window, rerank=rerank)


def ranked_request(query: str, ranker: Ranker, params: dict | None, size: int,
                   source: bool = True, log: bool = False) -> Ranked:
    """The search for one query under `ranker` (params: the model's sltr params, shopper
    params included); `log` adds each rescored doc's feature values. A personal feature whose
    shopper params are absent is not computed (missing)."""
    rescore = None
    if ranker.model is not None:
        params = params or {}
        rescore = Rescore(ranker.model.feature_set, params, model=ranker.model.name,
                          window=ranker.window, log=log, active_features=active_features(
                              ranker.model.feature_names, ranker.model.personal, params))
    return Ranked(bm25_query(query, ranker.fields), size, SOURCE_FIELDS if source else False,
                  rescore, id_field=ID_FIELD)


def search_many(engine: Engine, index: str, queries: Sequence[str], ranker: Ranker,
                encoder: Encoder | None, *, size: int = 10, source: bool = True,
                batch: int = 32, reranker: CrossEncoder | None = None,
                shopper: dict | None = None) -> dict[str, list[Hit]]:
    """Rank each query (msearch batches); query text -> hits in rank order. A ranker with a
    rerank stage needs `reranker`; `shopper` params rank every query for that shopper."""
    if ranker.rerank and reranker is None:
        raise NoCrossEncoderError(ranker.label)
    source = source or bool(ranker.rerank)  # the cross-encoder reads the text
    params_for = model_params(ranker, encoder, reranker) if ranker.model is not None else None
    out: dict[str, list[Hit]] = {}
    for chunk in batched(list(dict.fromkeys(queries)), batch):
        cut = [bounded_query(q)[0] for q in chunk]
        docs = (window_texts(engine, index, cut, ranker)
                if params_for is not None and params_for.needs_docs else None)
        params = ([{**p, **(shopper or {})} for p in params_for(cut, docs)] if params_for
                  else [None] * len(chunk))
        requests = [ranked_request(q, ranker, p, _fetched(ranker, size), source)
                    for q, p in zip(cut, params, strict=True)]
        for query, searched, response in zip(chunk, cut, engine.ranked(index, requests),
                                             strict=True):
            raw = _reranked(searched, response["hits"]["hits"], reranker, ranker.rerank, size)
            out[query] = [_hit(rank, h) for rank, h in enumerate(raw, 1)]
    return out


def model_params(ranker: Ranker, encoder: Encoder | None, reranker: CrossEncoder | None
                 ) -> ParamBuilder:
    """The builder of `ranker.model`'s params; a model whose features were logged with one
    cross-encoder or encoder is refused with another (its features would not be the ones it
    learned)."""
    model = ranker.model
    if model.cross_encoder and reranker is not None and reranker.key != model.cross_encoder:
        raise ScorerError("cross-encoder", ConfigError(
            f"model {model.name} learned from cross-encoder {model.cross_encoder}; the "
            f"configured one is {reranker.key}"))
    if model.encoder and encoder is not None and not same_space(encoder.key, model.encoder):
        raise ScorerError("encoder", ConfigError(
            f"model {model.name} learned from encoder {model.encoder}; the configured one is "
            f"{encoder.key}"))
    return query_params(model.params, encoder, source=model.name, cross_encoder=reranker)


def window_texts(engine: Engine, index: str, queries: Sequence[str], ranker: Ranker
                 ) -> list[dict[str, str]]:
    """Per query, doc id -> text of its first-pass window: what a cross-encoder param scores
    before the rescore (one msearch)."""
    requests = [Ranked(bm25_query(q, ranker.fields), ranker.window,
                       ["title", "short_description"]) for q in queries]
    return [{h["_id"]: text_of(h["_source"]) for h in response["hits"]["hits"]}
            for response in engine.ranked(index, requests)]


def run_of(hits: dict[str, list[Hit]]) -> dict[str, list[str]]:
    """The run an evaluator scores: query text -> doc ids in rank order."""
    return {query: [h.doc_id for h in ranked] for query, ranked in hits.items()}


def _fetched(ranker: Ranker, size: int) -> int:
    """How many hits to ask the engine for: a rerank stage reorders its top N even when
    fewer are shown."""
    return max(size, ranker.rerank)


def _reranked(query: str, raw: list[dict], reranker: CrossEncoder | None, top: int,
              size: int) -> list[dict]:
    """The hits with their first `top` reordered (and rescored) by the cross-encoder, cut to
    the first `size`."""
    if reranker is None or top <= 0 or not raw:
        return raw[:size]
    head = raw[:top]
    scores = reranker.score(query, [text_of(h.get("_source") or {"title": ""}) for h in head])
    order = sorted(range(len(head)), key=lambda i: -scores[i])
    return ([{**head[i], "_score": float(scores[i])} for i in order] + raw[top:])[:size]


@dataclass(frozen=True)
class SearchResult:
    """One query's answer: the query searched, the hits, the ranker that produced them, and,
    when the model could not be used, why (the answer then comes from BM25 alone)."""

    query: str
    ranker: str
    hits: list[Hit]
    degraded: str | None = None
    features: dict[str, dict[str, float]] | None = None  # doc id -> feature -> value
    dropped_terms: int = 0  # terms past MAX_QUERY_TERMS, cut from the query searched

    def to_dict(self) -> dict:
        out = {"query": self.query, "ranker": self.ranker, "degraded": self.degraded,
               "dropped_terms": self.dropped_terms, "hits": [h.__dict__ for h in self.hits]}
        if self.features is not None:  # JSON has no NaN: a feature not computed is absent
            out["features"] = {doc: {n: v for n, v in values.items() if not math.isnan(v)}
                               for doc, values in self.features.items()}
        return out


def search(engine: Engine, index: str, query: str, ranker: Ranker | None = None,
           encoder: Encoder | None = None, *, size: int = 10, features: bool = False,
           reranker: CrossEncoder | None = None, shopper: dict | None = None
           ) -> SearchResult:
    """Rank products for a shopper's query: embed -> BM25 -> sltr rescore.

    A query longer than MAX_QUERY_TERMS terms is cut to them (`dropped_terms` says how many
    went). If the model needs the query vector and the encoder fails (down, slow,
    overloaded), or the engine cannot rescore with the model (deleted, broken), the answer
    comes from BM25 alone and says so in `degraded`; an engine that does not answer is an
    error.
    `features=True` also returns each rescored doc's feature values (logged by the plugin).
    With a `reranker`, the top `ranker.rerank` hits are reordered by the cross-encoder's score
    (which replaces their score); the rest keep their order below them. `shopper` holds the
    shopper params (esrank.personal.shopper.shopper_params) the model's personal features read.

    >>> search(engine, "products", "bluetooth speaker").hits[0].title  # doctest: +SKIP
    """
    query, dropped = bounded_query(query)
    ranker = ranker or Ranker()
    degraded, params = None, None
    if ranker.model is not None:
        try:
            build = model_params(ranker, encoder, reranker)
            docs = window_texts(engine, index, [query], ranker) if build.needs_docs else None
            params = {**build([query], docs)[0], **(shopper or {})}
        except (ScorerError, MissingScorerError) as exc:  # degrades; never fails the search
            log.warning("search %r: %s failed (%s); answering with BM25", query, exc.scorer, exc)
            degraded = f"{exc.scorer} unavailable ({exc}); ranked by BM25"
            ranker = replace(ranker, name="bm25", model=None)
    try:
        [response] = engine.ranked(index, [ranked_request(query, ranker, params,
                                                          _fetched(ranker, size), log=features)])
    except EngineError as exc:
        # the engine answered but could not rescore (a missing or broken model): serve BM25.
        # An engine that did not answer fails BM25 too: that stays an error.
        if ranker.model is None or exc.status is None:
            raise
        log.warning("search %r: model %s failed (%s); answering with BM25", query,
                    ranker.model.name, exc.reason)
        degraded = f"model {ranker.model.name} unavailable ({exc.reason}); ranked by BM25"
        ranker = replace(ranker, name="bm25", model=None)
        [response] = engine.ranked(index, [ranked_request(query, ranker, None,
                                                          _fetched(ranker, size))])
    raw = _reranked(query, response["hits"]["hits"], reranker, ranker.rerank, size)
    logged = None
    if features and ranker.model is not None:
        names = ranker.model.feature_names
        logged = {h["_id"]: dict(zip(names, parse_ltr_log(h, names), strict=True))
                  for h in raw if "fields" in h}
    name = ranker.label if reranker is not None and ranker.rerank > 0 and raw else ranker.name
    return SearchResult(query, name, [_hit(r, h) for r, h in enumerate(raw, 1)], degraded,
                        logged, dropped)


def _hit(rank: int, h: dict) -> Hit:
    src = h.get("_source") or {}
    return Hit(rank, h["_id"], float(h["_score"]), src.get("title", ""), src.get("supplier"),
               src.get("price"))


def rank(app, query: str, which: str = "active", *, size: int = 10, window: int | None = None,
         features: bool = False, rerank: int = 0, shopper_params: dict | None = None
         ) -> SearchResult:
    """Rank one query under configuration `which` with `app`'s engine, index and encoders;
    `shopper_params` (esrank.personal.serving.params_for) personalise it."""
    ranker = app.ranker(which, window, rerank)
    return search(app.engine, app.settings.index, query, ranker, app.query_encoder([ranker]),
                  size=size, features=features, reranker=app.reranker, shopper=shopper_params)
