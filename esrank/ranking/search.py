"""The query-time pipeline: the recall stage, then the active model as an `sltr` rescore.

A `Ranker` says how to rank: `Ranker("bm25")` is the BM25 first pass alone; with a model, the
top `window` BM25 hits (and, for a model trained over the recall stage, the `knn` nearest
products too: esrank.catalogue.recall) are rescored by the model alone (query_weight 0), which
is exactly how the parity gate scored it before it went live. BM25 alone is one search; the
recall stage is one msearch for the two lists, then the rescore of exactly their union. The
fused baselines (`knn`, `rrf`, `linear`: esrank.ranking.fusion) rank the same two lists
without a model. A model with a cross-encoder feature takes one more first pass: the
candidates' texts, which the cross-encoder scores into the rescore's params. After the model,
the optional stages named in the configuration (esrank.ranking.configuration): the
cross-encoder rerank, then diversity (esrank.ranking.diversity).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from esrank.catalogue.index import ID_FIELD
from esrank.catalogue.lookup import fetch_sources, fetch_texts
from esrank.catalogue.products import text_of
from esrank.catalogue.query import DEFAULT_FIELDS, bm25_query
from esrank.catalogue.recall import Candidates, Recall, recall_bodies, retrieve
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
from esrank.engine.base import first_pass_body, parse_ltr_log
from esrank.features.params import ParamBuilder, query_params, scored
from esrank.models.cross_encoder import CrossEncoder
from esrank.models.encoder import Encoder, same_space
from esrank.ranking.configuration import Configuration, parse_configuration
from esrank.ranking.diversity import POOL, Diversity, diversify
from esrank.ranking.fusion import FUSED, RRF_K, fuse

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
    """A ranking configuration: its name, the model that rescores its candidates (None: BM25,
    or a fused baseline), and the candidates: the BM25 top `window`, joined with the `knn`
    nearest products when `knn` > 0."""

    name: str = "bm25"
    model: ActiveModel | None = None
    window: int = 100
    fields: tuple[str, ...] = DEFAULT_FIELDS
    rerank: int = 0  # with a cross-encoder: rerank the top N
    knn: int = 0
    weight: float = 0.5  # `linear`: BM25's weight (the cosine's is 1 - weight)
    diversity: Diversity = Diversity()  # the diversity stage after the model (default: off)

    @property
    def label(self) -> str:
        """The configuration's name, with its stages after the model (e.g.
        chorus-v7+rerank20+cap2: esrank.ranking.configuration)."""
        return Configuration(self.name, self.rerank, self.diversity).label

    @property
    def recall(self) -> Recall:
        """The candidates it ranks (`knn`: the nearest products alone)."""
        return Recall(0 if self.name == "knn" else self.window, self.knn)


BASELINES = {"bm25": DEFAULT_FIELDS, "bm25-title": ("title",)}  # BM25 configurations by name


def resolve_ranker(engine: Engine, set_name: str, which: str, window: int, knn: int = 0,
                   weight: float = 0.5) -> Ranker:
    """A configuration by name: "bm25", "bm25-title" (BM25 over titles alone), a fused
    baseline over the BM25 top `window` and the `knn` nearest products ("knn", "rrf",
    "linear" with BM25 weight `weight`), "active" (the feature set's active model, or BM25
    when none is active) or a deployed model's name, each optionally with the stages after
    the model: `+rerankN` (the cross-encoder reranks the top N), `+mmrL` and `+capN` (the
    diversity stage: esrank.ranking.diversity). A model ranks the candidate set it was
    trained for.

    >>> resolve_ranker(engine, "chorus", "active+rerank20+cap2", 100).label  # doctest: +SKIP
    'chorus-v7+rerank20+cap2'
    """
    config = parse_configuration(which)
    name, after = config.name, {"rerank": config.rerank, "diversity": config.diversity}
    if name in BASELINES:
        return Ranker(name, None, window, BASELINES[name], **after)
    if name in FUSED:
        if knn < 1:
            raise InputError(f"{name} ranks the nearest products: set ESRANK_RECALL_KNN above 0")
        return Ranker(name, None, window, knn=knn, weight=weight, **after)
    model = (active_model(engine, set_name) if name == "active"
             else deployed_model(engine, set_name, name))
    if model is None:
        return Ranker("bm25", None, window, **after)
    return Ranker(model.name, model, window, knn=model.recall.knn if model.recall else 0,
                  **after)


def ranked_request(query: str, ranker: Ranker, params: dict | None, size: int,
                   source: bool = True, log: bool = False,
                   candidates: Sequence[str] | None = None) -> Ranked:
    """The search for one query under `ranker` (params: the model's sltr params, shopper
    params included): the BM25 first pass, or exactly the recall stage's `candidates`, then
    the rescore; `log` adds each rescored doc's feature values. A personal feature whose
    shopper params are absent is not computed (missing)."""
    rescore = None
    window = len(candidates) if candidates is not None else ranker.window
    if ranker.model is not None:
        params = params or {}
        rescore = Rescore(ranker.model.feature_set, params, model=ranker.model.name,
                          window=max(window, 1), log=log, active_features=active_features(
                              ranker.model.feature_names, ranker.model.personal, params))
    if candidates is not None:
        return Ranked(None, size, SOURCE_FIELDS if source else False, rescore,
                      ids=tuple(candidates), id_field=ID_FIELD)
    return Ranked(bm25_query(query, ranker.fields), size, SOURCE_FIELDS if source else False,
                  rescore, id_field=ID_FIELD)


def candidates_of(engine: Engine, index: str, queries: Sequence[str], ranker: Ranker,
                  encoder: Encoder | None) -> tuple[list[Candidates], np.ndarray]:
    """The recall stage's two lists for each query under `ranker` (one msearch), and the
    queries' embeddings, which the model's params reuse (embedded once by `encoder`, whose
    failure is a ScorerError)."""
    if encoder is None:
        raise MissingScorerError("encoder", f"{ranker.name} searches the nearest products: "
                                 "it needs the query encoder")
    vectors = scored("encoder", encoder.encode, list(queries))
    return retrieve(engine, index, queries, ranker.recall, vectors, ranker.fields), vectors


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
        found, vectors = (candidates_of(engine, index, cut, ranker, encoder) if ranker.knn
                          else (None, None))
        ids = [c.ids for c in found] if found is not None else [None] * len(chunk)
        if ranker.model is None and found is not None:  # a fused baseline
            raws = fused_hits(engine, index, ranker, found, _fetched(ranker, size), source)
        else:
            docs = (window_texts(engine, index, cut, ranker, found)
                    if params_for is not None and params_for.needs_docs else None)
            params = ([{**p, **(shopper or {})} for p in params_for(cut, docs, vectors)]
                      if params_for else [None] * len(chunk))
            requests = [ranked_request(q, ranker, p, _fetched(ranker, size), source,
                                       candidates=c)
                        for q, p, c in zip(cut, params, ids, strict=True)]
            raws = [r["hits"]["hits"] for r in engine.ranked(index, requests)]
        pages = _after_model(engine, index, cut, raws, ranker, reranker, size)
        for query, page in zip(chunk, pages, strict=True):
            out[query] = [_hit(rank, h) for rank, h in enumerate(page, 1)]
    return out


def fused_hits(engine: Engine, index: str, ranker: Ranker, found: Sequence[Candidates],
               size: int, source: bool) -> list[list[dict]]:
    """Per query, the top `size` of the fused baseline `ranker` as engine hits (with their
    `_source` when `source`, read in one search)."""
    ranked = [fuse(ranker.name, c, ranker.weight)[:size] for c in found]
    shown = (fetch_sources(engine, index, {d for top in ranked for d, _ in top}, SOURCE_FIELDS)
             if source else {})
    return [[{"_id": d, "_score": score, "_source": shown.get(d, {})} for d, score in top]
            for top in ranked]


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


def window_texts(engine: Engine, index: str, queries: Sequence[str], ranker: Ranker,
                 found: Sequence[Candidates] | None = None) -> list[dict[str, str]]:
    """Per query, doc id -> text of its candidates (the recall stage's `found`, else the BM25
    window): what a cross-encoder param scores before the rescore (one request)."""
    if found is not None:
        texts = fetch_texts(engine, index, {d for c in found for d in c.ids})
        return [{d: texts[d] for d in c.ids if d in texts} for c in found]
    requests = [Ranked(bm25_query(q, ranker.fields), ranker.window,
                       ["title", "short_description"]) for q in queries]
    return [{h["_id"]: text_of(h["_source"]) for h in response["hits"]["hits"]}
            for response in engine.ranked(index, requests)]


def run_of(hits: dict[str, list[Hit]]) -> dict[str, list[str]]:
    """The run an evaluator scores: query text -> doc ids in rank order."""
    return {query: [h.doc_id for h in ranked] for query, ranked in hits.items()}


def _fetched(ranker: Ranker, size: int) -> int:
    """How many hits to ask the engine for: a rerank stage reorders its top N and the
    diversity stage its pool, even when fewer are shown."""
    return max(size, ranker.rerank, _pool(ranker) if ranker.diversity.on else 0)


def _pool(ranker: Ranker) -> int:
    """The top hits the diversity stage reorders: POOL, within the hits whose scores are on
    one scale (MMR's relevance compares them): a model's rescore window, a rerank stage's
    top N."""
    return min(POOL, ranker.window if ranker.model is not None else POOL,
               ranker.rerank or POOL)


def _after_model(engine: Engine, index: str, queries: Sequence[str], raws: list[list[dict]],
                 ranker: Ranker, reranker: CrossEncoder | None, size: int) -> list[list[dict]]:
    """The stages after the model, for each query's hits: the cross-encoder rerank, then the
    diversity stage; each cut to the first `size`."""
    raws = [_reranked(q, raw, reranker, ranker.rerank) for q, raw in zip(queries, raws,
                                                                         strict=True)]
    return [page[:size] for page in diversify(engine, index, raws, ranker.diversity,
                                              _pool(ranker))]


def _reranked(query: str, raw: list[dict], reranker: CrossEncoder | None, top: int
              ) -> list[dict]:
    """The hits with their first `top` reordered (and rescored) by the cross-encoder."""
    if reranker is None or top <= 0 or not raw:
        return raw
    head = raw[:top]
    scores = reranker.score(query, [text_of(h.get("_source") or {"title": ""}) for h in head])
    order = sorted(range(len(head)), key=lambda i: -scores[i])
    return [{**head[i], "_score": float(scores[i])} for i in order] + raw[top:]


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
    requests: list[dict] | None = None  # the engine requests that served it (shown_requests)

    def to_dict(self) -> dict:
        out = {"query": self.query, "ranker": self.ranker, "degraded": self.degraded,
               "dropped_terms": self.dropped_terms, "hits": [h.__dict__ for h in self.hits]}
        if self.requests is not None:
            out["requests"] = self.requests
        if self.features is not None:  # JSON has no NaN: a feature not computed is absent
            out["features"] = {doc: {n: v for n, v in values.items() if not math.isnan(v)}
                               for doc, values in self.features.items()}
        return out


def search(engine: Engine, index: str, query: str, ranker: Ranker | None = None,
           encoder: Encoder | None = None, *, size: int = 10, features: bool = False,
           reranker: CrossEncoder | None = None, shopper: dict | None = None,
           requests: bool = False) -> SearchResult:
    """Rank products for a shopper's query: embed -> recall (BM25, with the nearest products
    for a model trained over them) -> sltr rescore.

    A query longer than MAX_QUERY_TERMS terms is cut to them (`dropped_terms` says how many
    went). A model served over other candidates than it was trained over (another window)
    says so in `degraded`. If the model needs the query vector and the encoder fails (down,
    slow, overloaded), or the engine cannot rescore with the model (deleted, broken), the answer
    comes from BM25 alone and says so in `degraded`; an engine that does not answer is an
    error.
    `features=True` also returns each rescored doc's feature values (logged by the plugin).
    With a `reranker`, the top `ranker.rerank` hits are reordered by the cross-encoder's score
    (which replaces their score); the rest keep their order below them. Then the diversity
    stage, when on, reorders the top (esrank.ranking.diversity). `shopper` holds the
    shopper params (esrank.personal.shopper.shopper_params) the model's personal features read.
    With `requests`, the answer carries the engine requests that served it (shown_requests).

    >>> search(engine, "products", "bluetooth speaker").hits[0].title  # doctest: +SKIP
    """
    query, dropped = bounded_query(query)
    ranker, params, found, degraded = _prepared(engine, index, query, ranker or Ranker(),
                                                encoder, reranker, shopper)
    shown = shown_requests(engine, index, query, ranker, encoder, params, found,
                           _fetched(ranker, size)) if requests else None
    if ranker.model is None and found is not None:  # a fused baseline
        [raw] = _after_model(engine, index, [query], fused_hits(
            engine, index, ranker, found, _fetched(ranker, size), True), ranker, reranker, size)
        return SearchResult(query, _served_name(ranker, reranker, raw),
                            [_hit(r, h) for r, h in enumerate(raw, 1)], degraded, None, dropped,
                            shown)
    try:
        [response] = engine.ranked(index, [ranked_request(
            query, ranker, params, _fetched(ranker, size), log=features,
            candidates=found[0].ids if found else None)])
    except EngineError as exc:
        # the engine answered but could not rescore (a missing or broken model): serve BM25.
        # An engine that did not answer fails BM25 too: that stays an error.
        if ranker.model is None or exc.status is None:
            raise
        log.warning("search %r: model %s failed (%s); answering with BM25", query,
                    ranker.model.name, exc.reason)
        degraded = f"model {ranker.model.name} unavailable ({exc.reason}); ranked by BM25"
        ranker = replace(ranker, name="bm25", model=None, knn=0)
        [response] = engine.ranked(index, [ranked_request(query, ranker, None,
                                                          _fetched(ranker, size))])
        shown = shown_requests(engine, index, query, ranker, None, None, None,
                               _fetched(ranker, size)) if requests else None
    [raw] = _after_model(engine, index, [query], [response["hits"]["hits"]], ranker, reranker,
                         size)
    logged = None
    if features and ranker.model is not None:
        names = ranker.model.feature_names
        logged = {h["_id"]: dict(zip(names, parse_ltr_log(h, names), strict=True))
                  for h in raw if "fields" in h}
    return SearchResult(query, _served_name(ranker, reranker, raw),
                        [_hit(r, h) for r, h in enumerate(raw, 1)], degraded, logged, dropped,
                        shown)


def _prepared(engine: Engine, index: str, query: str, ranker: Ranker, encoder: Encoder | None,
              reranker: CrossEncoder | None, shopper: dict | None
              ) -> tuple[Ranker, dict | None, list[Candidates] | None, str | None]:
    """What `search` sends for one query: (the ranker, the model's params, the recall stage's
    candidates, why it degraded). A scorer that fails degrades the answer to BM25; a model
    served over another candidate set than it learned is named."""
    try:
        found, vectors = (candidates_of(engine, index, [query], ranker, encoder) if ranker.knn
                          else (None, None))
        if ranker.model is None:
            return ranker, None, found, None
        build = model_params(ranker, encoder, reranker)
        docs = (window_texts(engine, index, [query], ranker, found) if build.needs_docs
                else None)
        trained = ranker.model.recall
        unlike = (f"model {ranker.model.name} was trained over {trained.label}, served over "
                  f"{ranker.recall.label}" if trained and ranker.recall != trained else None)
        return ranker, {**build([query], docs, vectors)[0], **(shopper or {})}, found, unlike
    except (ScorerError, MissingScorerError) as exc:  # degrades; never fails the search
        log.warning("search %r: %s failed (%s); answering with BM25", query, exc.scorer, exc)
        return (replace(ranker, name="bm25", model=None, knn=0), None, None,
                f"{exc.scorer} unavailable ({exc}); ranked by BM25")


def shown_requests(engine: Engine, index: str, query: str, ranker: Ranker,
                   encoder: Encoder | None, params: dict | None,
                   found: Sequence[Candidates] | None, size: int) -> list[dict]:
    """The engine requests that serve `query` under `ranker`, in order, as an application
    that calls the engine itself would send them: the recall stage's msearch (its kNN search
    carrying the query vector), the first pass that finds a window's ids where the engine's
    features need them, and the ranked search with the rescore clause and its params; a fused
    baseline's last step is esrank's own fusion of the two lists; the diversity stage, when
    on, is esrank's own too."""
    shown: list[dict] = []
    msearch, search_path = f"/{index}/_msearch", f"/{index}/_search"
    if found is not None:
        vectors = encoder.encode([query])
        shown.append({"step": "recall", "method": "POST", "path": msearch, "searches":
                      recall_bodies(engine, [query], ranker.recall, vectors, ranker.fields)})
        if ranker.model is None:
            how = (f"RRF (k={RRF_K})" if ranker.name == "rrf" else "the kNN order"
                   if ranker.name == "knn" else f"min-max linear, BM25 weight {ranker.weight}")
            return [*shown, {"step": "fuse", "by": f"esrank: {how}"}, *_diversity_step(ranker)]
    request = ranked_request(query, ranker, params, size, source=True,
                             candidates=found[0].ids if found else None)
    bodies = engine.ranked_bodies(index, [request])
    if request.ids is None and request.rescore and engine.needs_window(
            request.rescore.feature_set):
        shown.append({"step": "window", "method": "POST", "path": search_path,
                      "body": first_pass_body(request)})
    return [*shown, {"step": "rank", "method": "POST", "path": search_path, "body": bodies[0]},
            *_diversity_step(ranker)]


def _diversity_step(ranker: Ranker) -> list[dict]:
    """The diversity stage as shown_requests names it (none when off)."""
    if not ranker.diversity.on:
        return []
    return [{"step": "diversity", "by": f"esrank: {ranker.diversity.suffix[1:]} over the top "
             f"{_pool(ranker)}, their supplier and vector read by id"}]


def _served_name(ranker: Ranker, reranker: CrossEncoder | None, raw: list[dict]) -> str:
    """The configuration that ranked the answer: with its rerank stage only when it ran."""
    reranked = reranker is not None and ranker.rerank > 0 and raw
    return ranker.label if reranked else replace(ranker, rerank=0).label


def _hit(rank: int, h: dict) -> Hit:
    src = h.get("_source") or {}
    return Hit(rank, h["_id"], float(h["_score"]), src.get("title", ""), src.get("supplier"),
               src.get("price"))


def rank(app, query: str, which: str = "active", *, size: int = 10, window: int | None = None,
         features: bool = False, rerank: int = 0, shopper_params: dict | None = None,
         requests: bool = False) -> SearchResult:
    """Rank one query under configuration `which` with `app`'s engine, index and encoders;
    `shopper_params` (esrank.personal.serving.params_for) personalise it; `requests`: the
    answer carries the engine requests that served it."""
    ranker = app.ranker(which, window, rerank)
    return search(app.engine, app.settings.index, query, ranker, app.query_encoder([ranker]),
                  size=size, features=features, reranker=app.reranker, shopper=shopper_params,
                  requests=requests)
