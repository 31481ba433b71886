"""The application layer: one object built from Settings that owns the engine, the encoders,
the cross-encoder and the judgments, and offers every operation the two front doors need.

`esrank.cli` parses a command, makes one call here and formats the answer; the sidecar's
routes (`esrank.serve`) validate a request, make one call here and answer JSON. Neither holds
engine, registry, evaluation or file-format logic of its own.

>>> app = App(load_settings())                             # doctest: +SKIP
>>> app.search("bluetooth speaker").hits[0].title          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esrank.core.errors import (
    ConfigError,
    InputError,
    ModelError,
    NoCrossEncoderError,
    NotFoundError,
)
from esrank.core.feature_set import needs_cross_encoder
from esrank.core.settings import Settings
from esrank.core.stamps import COMPACT, utc

if TYPE_CHECKING:
    from esrank.deploy.registry import RegistryEntry

CHORUS = Path(__file__).resolve().parent / "data" / "chorus"  # the demo data (in the package)
MAX_RANKERS = 256  # configurations whose lookup the sidecar keeps at once
MAX_PROFILES = 10_000  # shoppers whose profile the sidecar keeps at once
MAX_DELTAS = 64  # configuration pairs whose per-query deltas the sidecar keeps at once


def connect_engine(settings: Settings, timeout: float | None = None):
    """The engine `settings` name: ESRANK_URL, else the local node of the flavor; requests wait
    `timeout` seconds (default ESRANK_TIMEOUT)."""
    from esrank.engine import connect

    return connect(settings.engine_url, flavor=settings.engine_flavor, auth=settings.auth,
                   timeout=timeout or settings.timeout, store=settings.store)


def load_encoder(settings: Settings, cached: bool = False):
    """The configured encoder (ONNX graphs kept under ESRANK_HOME/models); `cached`: behind the
    embedding cache (ESRANK_HOME/cache) unless ESRANK_ENCODER__CACHE=false."""
    from esrank.models.embed_cache import CachedEncoder, EmbeddingCache
    from esrank.models.encoder import load_encoder as load

    e = settings.encoder
    encoder = load(e.model, e.backend, e.precision, settings.home / "models")
    if cached and e.cache:
        encoder = CachedEncoder(encoder, EmbeddingCache(settings.home / "cache"))
    return encoder


def load_cross_encoder(settings: Settings):
    """The configured cross-encoder (ONNX export kept under ESRANK_HOME/models), or None when
    ESRANK_CROSS_ENCODER is not set."""
    if settings.cross_encoder is None:
        return None
    from esrank.models.cross_encoder import load_cross_encoder as load

    return load(settings.cross_encoder, settings.home / "models")


def judge_backend(settings: Settings):
    """The LLM judge's backend: the OpenAI-compatible endpoint when one is set, else the local
    GGUF model."""
    from esrank.judgments.llm_judge import LocalBackend, OpenAIBackend

    c = settings.llm
    if c.endpoint:
        return OpenAIBackend(c.endpoint, c.model, timeout=c.timeout,
                             api_key=c.api_key.get_secret_value() if c.api_key else None)
    from esrank.models.llm import load_llm

    return LocalBackend(load_llm(c.model))


class TtlCache:
    """Values by key for `ttl` seconds (0: never kept), at most `size` of them: names and
    shopper ids come from requests, so the cache is bounded (full: it starts over)."""

    def __init__(self, ttl: float, size: int):
        self.ttl, self.size = ttl, size
        self._items: dict[Any, tuple[float, Any]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key, load):
        now = time.monotonic()
        expires, value = self._items.get(key, (0.0, None))
        if expires > now:
            return value
        value = load()
        if self.ttl:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = (now + self.ttl, value)
        return value


@dataclass
class LogResult:
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


class App:
    """esrank, configured once. Resources load on first use and are kept."""

    def __init__(self, settings: Settings, *, engine=None, encoder=None, reranker=None,
                 engine_timeout: float | None = None, ranker_ttl: float = 0.0,
                 profile_ttl: float = 0.0, deltas_ttl: float = 0.0):
        self.settings = settings
        self._engine, self._encoder, self._reranker = engine, encoder, reranker
        self._engine_timeout = engine_timeout
        # the sidecar reuses a resolved configuration and a shopper's profile for a while
        self._rankers = TtlCache(ranker_ttl, MAX_RANKERS)
        self._profiles = TtlCache(profile_ttl, MAX_PROFILES)
        self._deltas = TtlCache(deltas_ttl, MAX_DELTAS)
        self._evaluators: dict[tuple, Any] = {}
        self._artifacts: dict[str, Any] = {}
        self._machine: dict[Path, dict] = {}

    # -- resources -----------------------------------------------------------------------------

    @property
    def engine(self):
        if self._engine is None:
            self._engine = connect_engine(self.settings, self._engine_timeout)
        return self._engine

    @property
    def encoder(self):
        """The query/document encoder, behind the embedding cache (the sidecar passes its
        batched one in)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.settings, cached=True)
        return self._encoder

    @cached_property
    def reranker(self):
        """The cross-encoder, or None when ESRANK_CROSS_ENCODER is not set."""
        return self._reranker or load_cross_encoder(self.settings)

    def feature_reranker(self, fs):
        """The cross-encoder when feature set `fs` has a cross-encoder param (none configured:
        NoCrossEncoderError), else None."""
        if not needs_cross_encoder(fs.params):
            return None
        self.require_reranker(True)
        return self.reranker

    def require_reranker(self, needed: bool) -> None:
        """NoCrossEncoderError when a rerank stage is asked for and none is configured."""
        if needed and self.reranker is None:
            raise NoCrossEncoderError()

    def evaluator(self, judgments: Path | None = None, fmt: str | None = None,
                  machine: Path | None = None):
        """The judgments (default: ESRANK_JUDGMENTS) bound once, with `machine` the machine
        grades of `esrank judgments llm` filling the pairs no person judged; None without
        any."""
        from esrank.judgments.lists import read_judgments
        from esrank.judgments.metrics import Evaluator

        path = judgments or self.settings.judgments
        if path is None:
            return None
        if (path, fmt, machine) not in self._evaluators:
            listed = read_judgments(path, fmt)
            if machine is not None:
                from esrank.judgments.llm_judge import read_grades, with_machine_grades

                listed = with_machine_grades(listed, read_grades(machine))
            self._evaluators[path, fmt, machine] = Evaluator(listed)
        return self._evaluators[path, fmt, machine]

    def artifact(self, model: str):
        """A deployed model's training artifact, loaded once; NotFoundError when none was
        recorded."""
        from esrank.deploy.registry import entry
        from esrank.learn.artifact import ModelArtifact

        if model not in self._artifacts:
            record = entry(self.engine, self.settings.active_set).models.get(model)
            if not record or not record.artifact:
                raise NotFoundError(f"no training artifact recorded for {model!r}")
            self._artifacts[model] = ModelArtifact.load(Path(record.artifact))
        return self._artifacts[model]

    def local_engine(self, flavor: str | None = None):
        """The local node of `flavor` (default: the settings' flavor) as settings describe it."""
        from esrank.engine.local import LocalEngine

        s = self.settings
        flavor = flavor or s.local_flavor
        e, node = s.engine, s.local_node(flavor)
        return LocalEngine(home=s.home, flavor=flavor, version=node.version, port=node.port,
                           transport_port=node.transport_port, heap=e.heap,
                           java_home=node.java_home, maven_repo=e.maven_repo,
                           ltr_plugin=node.ltr_plugin,
                           ltr_plugin_sha256=node.ltr_plugin_sha256,
                           startup_timeout=e.startup_timeout)

    def encoder_info(self) -> dict:
        """What the configured encoder resolved to, and the backends installed."""
        from esrank.models.encoder import available_backends

        encoder = load_encoder(self.settings)
        return {"encoder": encoder.name, "key": encoder.key, "dims": encoder.dims,
                "max_tokens": encoder.max_tokens, **self.settings.encoder.model_dump(),
                "installed_backends": available_backends()}

    def embedding_cache(self, clear: bool = False) -> dict:
        """The embedding cache's summary (then emptied, with `clear`)."""
        from esrank.models.embed_cache import EmbeddingCache

        cache = EmbeddingCache(self.settings.home / "cache")
        summary = cache.summary()
        if clear:
            summary["cleared"] = cache.clear()
        cache.close()
        return summary

    # -- configurations ------------------------------------------------------------------------

    def window(self, value: int | None = None) -> int:
        """The rescore window: `value`, else ESRANK_RESCORE_WINDOW; the one place its default
        is resolved. 0 means no window (`esrank log`: the judged docs only); no ranker serves
        it."""
        return self.settings.rescore_window if value is None else value

    def ranker(self, which: str, window: int | None = None, rerank: int = 0):
        """A configuration by name (search.resolve_ranker), with an optional rerank stage;
        with a `ranker_ttl`, a name's registry lookup is reused for that many seconds."""
        from esrank.ranking.search import resolve_ranker

        window = self.window(window)
        if window < 1:
            raise InputError(f"a rescore window must be at least 1, got {window}")
        ranker = self._rankers.get((which, window), lambda: resolve_ranker(
            self.engine, self.settings.active_set, which, window))
        ranker = replace(ranker, rerank=rerank or ranker.rerank)
        self.require_reranker(bool(ranker.rerank))
        return ranker

    def query_encoder(self, rankers) -> Any:
        """The encoder when any of `rankers` has a model that needs query vectors."""
        needs = any(r.model and any(p.type == "vector" for p in r.model.params)
                    for r in rankers)
        return self.encoder if needs else None

    # -- indexing, logging, training, deploying ------------------------------------------------

    def index(self, files, alias: str | None = None, *, allow_encoder_change: bool = False,
              **options):
        """Index the catalogue into a new index behind `alias`. Re-embedding an alias with
        other encoder weights is refused while an active model with vector features was
        logged with others (its cosines would change live), unless `allow_encoder_change`."""
        from esrank.catalogue.index import index_catalogue

        alias = alias or self.settings.index
        if not allow_encoder_change:
            self.check_encoder_change(alias)
        return index_catalogue(self.engine, alias, list(files), self.encoder, **options)

    def check_encoder_change(self, alias: str) -> None:
        """ConfigError naming the active models that re-embedding `alias` with the
        configured encoder would feed other cosines than they learned from."""
        from esrank.catalogue.index import index_encoder
        from esrank.deploy.registry import active_models
        from esrank.models.encoder import same_space

        if not self.engine.alias_targets(alias):
            return
        indexed, key = index_encoder(self.engine, alias), self.encoder.key
        if indexed is None or same_space(indexed, key):
            return
        stale = [m.name for m in active_models(self.engine)
                 if any(p.type == "vector" for p in m.params)
                 and not (m.encoder and same_space(m.encoder, key))]
        if stale:
            raise ConfigError(
                f"index {alias!r} was embedded by encoder {indexed}; re-embedding it with "
                f"{key} would change the cosine features of the active models "
                f"{', '.join(stale)} live. Index into another alias (--alias) and log, train "
                "and upload against it first, or pass --allow-encoder-change")

    def push_feature_sets(self, path: Path | None = None) -> list[dict]:
        from esrank.features.parser import load_feature_sets, push_feature_sets

        return push_feature_sets(self.engine, load_feature_sets(path or
                                                                self.settings.feature_sets))

    def log(self, judgments: Path | None, feature_set: Path, output: Path, *,
            fmt: str | None = None, window: int | None = None, queries_per_request: int = 16,
            progress: bool = True, sessions: bool = False) -> LogResult:
        """Log the judged docs and the BM25 window of every judged query into a table (+ the
        RankLib text beside it). With `sessions`, the judgments are the shoppers' own
        (`session_judgments` of a UBI log, or of the engine's UBI indices when `judgments`
        is None), each logged with the shopper params its page was served with."""
        from esrank.features.parser import load_feature_set, push_feature_sets
        from esrank.judgments.lists import read_judgments
        from esrank.learn.feature_log import log_judgments
        from esrank.learn.table import write_ranklib, write_table
        from esrank.ranking.search import bm25_query

        fs = load_feature_set(feature_set)
        shoppers = None
        if sessions:
            judged, shoppers = self.session_judgments(judgments)
        else:
            judged = read_judgments(judgments, fmt)
        push_feature_sets(self.engine, [fs])
        window = self.window(window)
        report = log_judgments(self.engine, self.settings.index, fs, judged, self.encoder,
                               window=window, first_pass=bm25_query,
                               queries_per_request=queries_per_request, progress=progress,
                               shoppers=shoppers, cross_encoder=self.feature_reranker(fs))
        write_table(report.matrix, output, judgments_source=str(judgments or "ubi indices"),
                    window=window)
        write_ranklib(report.matrix, output.with_suffix(".txt"))
        return LogResult(fs.engine_name, len(report.matrix), output, output.with_suffix(".txt"),
                         report.seconds, len(judged), report.missing_docs)

    def ubi(self, log: Path | None = None):
        """(queries, events) of a UBI ndjson file, else of the engine's UBI indices."""
        from esrank.ubi.indices import fetch
        from esrank.ubi.log import read_ndjson

        return read_ndjson(log) if log else fetch(self.engine)

    def sessions(self, log: Path | None = None, weights=None):
        """The UBI log's sessions (esrank.judgments.clicks.sessions_of; default action weights)."""
        from esrank.judgments.clicks import ACTION_WEIGHTS, sessions_of

        return sessions_of(*self.ubi(log), weights or ACTION_WEIGHTS)

    def session_judgments(self, log: Path | None = None):
        """(JudgmentList, qid -> shopper params) from a UBI log's acted-on sessions (the
        engine's UBI indices when `log` is None)."""
        from esrank.judgments.clicks import session_judgments

        sessions = self.sessions(log)
        judged = session_judgments(sessions)
        if not len(judged):
            raise InputError("no session with a click, cart or purchase to learn from",
                             source=str(log or "the engine's UBI indices"))
        return judged, {s.query_id: s.attributes.get("shopper") or {} for s in sessions}

    def deploy(self, artifact_path: Path, feature_set: Path, table: Path | None = None, *,
               parity_queries: int | None = None, tolerance: float = 1e-4,
               activate: bool = True):
        """Upload a trained artifact, gate it on parity over its logged table, activate."""
        from esrank.deploy.upload import deploy
        from esrank.features.params import query_params
        from esrank.features.parser import load_feature_set
        from esrank.learn.artifact import ModelArtifact
        from esrank.learn.table import read_table
        from esrank.models.encoder import same_space

        artifact = ModelArtifact.load(artifact_path)
        fs = load_feature_set(feature_set)
        table = table or Path((artifact.meta.get("data") or {}).get("table") or "")
        if not table.is_file():
            raise InputError("no logged table for the parity gate: pass --table")
        encoder = self.encoder if any(p.type == "vector" for p in fs.params) else None
        matrix = read_table(table)
        reranker = self.feature_reranker(fs)
        if matrix.cross_encoder and reranker.key != matrix.cross_encoder:
            raise ModelError(f"{table} was logged with cross-encoder {matrix.cross_encoder}; "
                             f"the configured one is {reranker.key}: the model would be served "
                             "other scores than it learned")
        if matrix.encoder and encoder is not None and not same_space(encoder.key,
                                                                     matrix.encoder):
            raise ModelError(f"{table} was logged with encoder {matrix.encoder}; the configured "
                             f"one is {encoder.key}: the model would be served other cosines "
                             "than it learned")
        return fs, deploy(self.engine, self.settings.index, artifact, fs,
                          matrix.docs_by_query(parity_queries),
                          query_params(fs.params, encoder, cross_encoder=reranker),
                          activate=activate,
                          tolerance=tolerance, shoppers=list((matrix.shoppers or {}).values()))

    def judged_texts(self, judgments: Path, fmt: str | None = None
                     ) -> tuple[list[str], list[str], list[int]]:
        """Queries, document texts (title + short description) and grades of the judged
        pairs whose documents the index holds: what fine-tuning reads (esrank.models.tuning)."""
        from esrank.catalogue.lookup import fetch_texts
        from esrank.judgments.lists import read_judgments

        judged = read_judgments(judgments, fmt)
        texts = fetch_texts(self.engine, self.settings.index, [j.doc_id for j in judged])
        pairs = [j for j in judged if j.doc_id in texts]
        return [j.query for j in pairs], [texts[j.doc_id] for j in pairs], [j.grade for j in pairs]

    def train_cross_encoder(self, judgments: Path, output: Path, *, fmt: str | None = None,
                            epochs: int = 2, batch_size: int = 16, progress: bool = True) -> dict:
        """Fine-tune the configured encoder's model as a cross-encoder on judged pairs."""
        from esrank.models.encoder import model_dir
        from esrank.models.tuning import train_cross_encoder

        return train_cross_encoder(model_dir(self.settings.encoder.model),
                                   *self.judged_texts(judgments, fmt), output, epochs=epochs,
                                   batch_size=batch_size, progress=progress)

    def train_encoder(self, judgments: Path, output: Path, *, fmt: str | None = None,
                      epochs: int = 1, batch_size: int = 32, progress: bool = True) -> dict:
        """Fine-tune the configured encoder on judged pairs: a new encoder version."""
        from esrank.models.encoder import model_dir
        from esrank.models.tuning import train_encoder

        return train_encoder(model_dir(self.settings.encoder.model),
                             *self.judged_texts(judgments, fmt), output, epochs=epochs,
                             batch_size=batch_size, progress=progress)

    def judge_pairs(self, pairs) -> tuple[list[tuple[str, str, str]], list[str]]:
        """(query, doc id, product text) for each (query, doc id) pair whose product the index
        holds, a query's pairs together; and the doc ids the index lacks."""
        from esrank.catalogue.lookup import fetch_texts

        pairs = list(pairs)
        texts = fetch_texts(self.engine, self.settings.index, {d for _, d in pairs})
        order = {q: i for i, q in enumerate(dict.fromkeys(q for q, _ in pairs))}
        found = sorted(((q, d, texts[d]) for q, d in pairs if d in texts),
                       key=lambda p: order[p[0]])
        return found, sorted({d for _, d in pairs if d not in texts})

    def holes(self, judgments: Path, configs, *, fmt: str | None = None, depth: int = 10,
              window: int | None = None) -> list[tuple[str, str]]:
        """(query, doc id) for each unjudged doc in the top `depth` of each configuration, for
        every judged query: the pairs an LLM judge fills in."""
        from esrank.ranking.search import run_of, search_many

        evaluator = self.evaluator(judgments, fmt)
        rankers = [self.ranker(w, window) for w in configs]
        encoder = self.query_encoder(rankers)
        holes: dict[tuple[str, str], None] = {}
        for ranker in rankers:
            run = run_of(search_many(self.engine, self.settings.index, evaluator.queries,
                                     ranker, encoder, size=depth, source=False,
                                     reranker=self.reranker))
            for query in evaluator.queries:
                judged = evaluator.grades(query)
                holes.update({(query, d): None for d in run.get(query, ())[:depth]
                              if d not in judged})
        return list(holes)

    def models(self, set_name: str | None = None) -> tuple[RegistryEntry, list[str]]:
        """The registry entry of a feature set and the plugin models it does not know."""
        from esrank.deploy.registry import entry, unregistered

        doc = entry(self.engine, set_name or self.settings.active_set)
        return doc, unregistered(self.engine, doc)

    # -- search and evaluation -----------------------------------------------------------------

    def search(self, query: str, which: str = "active", *, size: int = 10,
               window: int | None = None, features: bool = False, rerank: int = 0,
               shopper=None, shopper_params: dict | None = None):
        """Rank for one query; `shopper` (a ShopperContext) personalises it through the
        shopper's stored profile and what the context says (or `shopper_params`, already
        resolved)."""
        from esrank.ranking.search import search

        ranker = self.ranker(which, window, rerank)
        params = shopper_params if shopper_params is not None else self.shopper_params(shopper)
        return search(self.engine, self.settings.index, query, ranker,
                      self.query_encoder([ranker]), size=size, features=features,
                      reranker=self.reranker, shopper=params)

    def served_search(self, query: str, which: str | None = None, *, unit: str, size: int = 10,
                      window: int | None = None, features: bool = False, rerank: int = 0,
                      shopper=None) -> tuple[Any, dict]:
        """What the sidecar serves for a search: (SearchResult, how it was served: the shopper
        params and, under an experiment, its name and arm, as UBI records them). A request that
        names no configuration (`which` None) and no rerank stage is served by the configured
        experiment when there is one (the arm picked by the shopper's user or session id, else
        `unit`); otherwise by `which` (default: the active model)."""
        params = self.shopper_params(shopper)
        if which is None and not rerank and self.experiment is not None:
            unit = (shopper.user_id or shopper.session_id if shopper else None) or unit
            result, attributes = self.experiment_search(query, self.experiment, unit=unit,
                                                        size=size, window=window,
                                                        shopper_params=params)
            return result, {"shopper": params, **attributes}
        return self.search(query, which or "active", size=size, window=window,
                           features=features, rerank=rerank,
                           shopper_params=params), {"shopper": params}

    def experiment_search(self, query: str, experiment, *, unit: str, size: int = 10,
                          window: int | None = None, shopper_params: dict | None = None):
        """One search under an Experiment: (SearchResult, the UBI attributes saying how it
        was served). A/B: `unit` (the shopper, else the query id) picks the arm.
        Interleaving: both arms rank, and team-draft builds the page (seeded by `unit`)."""
        from esrank.personal.experiment import bucket, team_draft
        from esrank.ranking.search import SearchResult

        def run(which: str):
            return self.search(query, which, size=size, window=window,
                               shopper_params=shopper_params)

        if experiment.mode == "ab":
            arm = bucket(unit, experiment.name, ("control", "treatment"))
            return run(getattr(experiment, arm)), {"experiment": experiment.name, "arm": arm}
        a, b = run(experiment.control), run(experiment.treatment)
        ids, teams = team_draft([h.doc_id for h in a.hits], [h.doc_id for h in b.hits], size,
                                unit)
        hit_of = {h.doc_id: h for h in [*b.hits, *a.hits]}
        hits = [replace(hit_of[d], rank=rank) for rank, d in enumerate(ids, 1)]
        result = SearchResult(a.query, f"interleave({a.ranker}, {b.ranker})", hits,
                              a.degraded or b.degraded, dropped_terms=a.dropped_terms)
        return result, {"experiment": experiment.name, "arm": None, "teams": teams}

    def write_signals(self, log: Path | None = None, *, prior: float | None = None) -> dict:
        """Per-product popularity, CTR and conversion from a UBI log (default: the engine's
        UBI indices), merged into the catalogue's documents (esrank.personal.signals)."""
        from esrank.personal.signals import PRIOR, product_signals, write_signals

        sessions = self.sessions(log)
        signals = product_signals(sessions, prior=PRIOR if prior is None else prior)
        written = write_signals(self.engine, self.settings.index, signals)
        return {"sessions": len(sessions), "products": len(signals), **written,
                "index": self.settings.index}

    def experiment_report(self, experiment=None, log: Path | None = None):
        """The Report of an Experiment (default: the configured one) over a UBI log (default:
        the engine's UBI indices)."""
        from esrank.personal.experiment import report

        experiment = experiment or self.experiment
        if experiment is None:
            raise InputError("no experiment: set ESRANK_SERVE__EXPERIMENT__NAME, __CONTROL and "
                             "__TREATMENT (or pass --name, --control, --treatment)")
        return report(experiment, self.sessions(log))

    @cached_property
    def experiment(self):
        """The configured Experiment (ESRANK_SERVE__EXPERIMENT__*), or None."""
        from esrank.personal.experiment import Experiment

        e = self.settings.serve.experiment
        return Experiment(e.name, e.control, e.treatment, e.mode) if e else None

    def shopper_params(self, context) -> dict:
        """The sltr shopper params for a ShopperContext (None or anonymous: none)."""
        from esrank.personal.shopper import shopper_params

        if context is None or context.anonymous:
            return {}
        return shopper_params(self.profile(context.user_id) if context.user_id else None,
                              context)

    def profile(self, user_id: str):
        """A shopper's stored Profile, or None (with a `profile_ttl`, reused that long)."""
        from esrank.personal.shopper import load_profile

        return self._profiles.get(user_id, lambda: load_profile(
            self.engine, user_id, self.settings.profiles_index))

    def store_ubi(self, log: Path) -> int:
        """Store a UBI ndjson file in the engine's UBI indices; how many records went in."""
        from esrank.ubi.indices import store

        return store(self.engine, *self.ubi(log))

    def build_profiles(self, log: Path | None = None, *, weights=None,
                       half_life_days: float | None = None) -> dict:
        """Profiles from UBI events (an ndjson file, else the engine's UBI indices), with each
        product's brand and price read from the catalogue; stored in the profile index."""
        from esrank.catalogue.lookup import product_facts
        from esrank.judgments.clicks import ACTION_WEIGHTS
        from esrank.personal.shopper import HALF_LIFE_DAYS, build_profiles, save_profiles

        queries, events = self.ubi(log)
        weights = weights or ACTION_WEIGHTS
        acted = {e.doc_id for e in events if e.doc_id and e.action in weights}
        facts = product_facts(self.engine, self.settings.index, acted)
        profiles = build_profiles(queries, events, facts, now=time.time(), weights=weights,
                                  half_life_days=half_life_days or HALF_LIFE_DAYS)
        saved = save_profiles(self.engine, profiles.values(), self.settings.profiles_index)
        return {"profiles": saved, "events": len(events), "products": len(facts),
                "unknown_products": len(acted) - len(facts),
                "index": self.settings.profiles_index}

    def evaluate(self, judgments: Path, configs, *, fmt: str | None = None,
                 window: int | None = None, depth: int = 100, rank_eval: bool = False,
                 push: bool = False, shopper=None, machine: Path | None = None
                 ) -> tuple[dict, dict, str | None]:
        """Each configuration over every judged query: label -> Evaluation (with `machine`,
        also "label +machine": against the human and machine grades together), and with
        `rank_eval`, label -> esrank's metrics beside the engine's `_rank_eval`. With `push`,
        each configuration's metrics and top 10 (with feature values) are stored under a new
        run id (returned; None without push), once every configuration ran. `shopper` (a
        ShopperContext) ranks every query for that shopper."""
        from esrank.evaluation.rank_eval import rank_eval_check
        from esrank.evaluation.runs import new_run_id, push_evaluation
        from esrank.features.params import query_params
        from esrank.ranking.search import ranked_request, run_of, search, search_many

        engine, index = self.engine, self.settings.index
        personal = self.shopper_params(shopper)
        evaluator = self.evaluator(judgments, fmt)
        rankers = [self.ranker(w, window) for w in configs]
        encoder = self.query_encoder(rankers)
        results, checks, pushes = {}, {}, []
        for ranker in rankers:
            if ranker.label in results:
                continue
            run = run_of(search_many(engine, index, evaluator.queries, ranker, encoder,
                                     size=depth, source=False, reranker=self.reranker,
                                     shopper=personal))
            results[ranker.label] = evaluator.evaluate(run)
            if machine is not None:
                results[f"{ranker.label} +machine"] = self.evaluator(
                    judgments, fmt, machine).evaluate(run)
            if push:
                served = {q: search(engine, index, q, ranker, encoder, size=10,
                                    features=ranker.model is not None, reranker=self.reranker,
                                    shopper=personal)
                          for q in evaluator.queries}
                meta = {"model": ranker.model.name if ranker.model else None,
                        "feature_set": ranker.model.feature_set if ranker.model else None,
                        "judgments": str(judgments), "timestamp": utc()}
                hits = {q: r.hits for q, r in served.items()}
                features = {q: r.features or {} for q, r in served.items()}
                graded = self.machine_grades(machine) if machine is not None else None
                pushes.append((meta, ranker.label, results[ranker.label], hits,
                               evaluator.graded(), features, graded))
                if machine is not None:  # the +machine figures, the hits marked the same
                    pushes.append((meta, f"{ranker.label} +machine",
                                   results[f"{ranker.label} +machine"], hits,
                                   evaluator.graded(), features, graded))
            # the engine cannot run the cross-encoder
            if rank_eval and not ranker.rerank and not (
                    ranker.model and needs_cross_encoder(ranker.model.params)):
                params = (query_params(ranker.model.params, encoder) if ranker.model
                          else lambda qs: [None] * len(qs))
                checks[ranker.label] = rank_eval_check(
                    engine, index, evaluator, lambda q, r=ranker, p=params: ranked_request(
                        q, r, {**(p([q])[0] or {}), **personal} if r.model else None, 10,
                        source=False), run)
        run_id = new_run_id() if push else None
        for args in pushes:  # written only once every configuration ran: no half-stored runs
            push_evaluation(engine, run_id, *args)
        return results, checks, run_id

    def compare(self, judgments: Path, a: str, b: str, *, fmt: str | None = None,
                window: int | None = None, depth: int = 100, push: bool = False,
                html: Path | None = None, machine: Path | None = None) -> dict:
        """B against A on every judged query (evaluate.compare), optionally stored as a
        comparison and written as the comparison page with its data built in (`machine`:
        machine grades the page marks)."""
        from esrank.evaluation.comparison import delta_rows
        from esrank.evaluation.runs import push_comparison
        from esrank.evaluation.significance import compare

        results, _, _ = self.evaluate(judgments, (a, b), fmt=fmt, window=window, depth=depth)
        if len(results) < 2:
            raise InputError(f"{a} and {b} are the same configuration")
        (na, ea), (nb, eb) = results.items()
        data = compare((na, ea), (nb, eb)).to_dict()
        if push:
            data["comparison_id"] = f"{utc(COMPACT)}-{na}-vs-{nb}"
            push_comparison(self.engine, data["comparison_id"],
                            {"judgments": str(judgments), "timestamp": utc()},
                            (na, ea), (nb, eb))
        if html:
            self.write_page(html, judgments, (a, b), window, {
                "a": na, "b": nb, "metric": "ndcg@10", "queries": delta_rows(ea, eb)}, fmt,
                machine)
        return data

    def runs(self, metrics=None, limit: int = 50) -> list[dict]:
        from esrank.evaluation.runs import HISTORY_METRICS, run_history

        return run_history(self.engine, metrics or HISTORY_METRICS, runs=limit)

    def report(self, judgments: Path, which: str, feature_set: Path, output: Path,
               fmt: str | None = None) -> dict:
        """Gain vs cost of a deployed model's features (esrank.evaluation.report), written as
        HTML and JSON."""
        from esrank.core.files import write_file
        from esrank.evaluation.report import build_report, to_html
        from esrank.features.params import query_params
        from esrank.features.parser import load_feature_set
        from esrank.learn.table import read_table

        ranker = self.ranker(which)
        if ranker.model is None:
            raise ModelError(f"no active model for {self.settings.active_set!r}: pass --model")
        artifact = self.artifact(ranker.name)
        fs = load_feature_set(feature_set)
        if fs.engine_name != ranker.model.feature_set:
            raise ModelError(f"{feature_set} is {fs.engine_name}; {ranker.name} was trained "
                             f"on {ranker.model.feature_set}")
        encoder = self.query_encoder([ranker])
        report = build_report(self.engine, self.settings.index, artifact, fs,
                              read_table(Path(artifact.meta["data"]["table"])), ranker,
                              self.evaluator(judgments, fmt), encoder,
                              query_params(fs.params, encoder,
                                           cross_encoder=self.feature_reranker(fs)))
        write_file(output, to_html(report))
        write_file(output.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
        return report

    # -- the comparison page -------------------------------------------------------------------

    def rankers(self, names) -> list:
        """The configurations the page names; NotFoundError naming them when one is unknown."""
        from esrank.evaluation.comparison import rankers
        from esrank.ranking.search import parse_configuration

        for name in names:  # a malformed name is an InputError before any engine call
            parse_configuration(name)
        found = rankers(self.engine, self.settings.active_set, list(names),
                        self.window())
        if len(found) != len(names):
            raise NotFoundError(f"unknown configuration among {list(names)}; see "
                              "/compare/configs")
        self.require_reranker(any(r.rerank for r in found))
        return found

    def configurations(self) -> dict:
        """What the page can compare: baselines, deployed models (the active one first), a
        rerank stage when a cross-encoder is loaded; notes and CV figures per model."""
        from esrank.deploy.registry import version_of
        from esrank.ranking.search import BASELINES

        doc, _ = self.models()
        models = sorted(doc.models, key=lambda m: (m != doc.active, -(version_of(m)[1] or 0)))
        reranked = [f"{doc.active or 'bm25'}+rerank20"] if self.reranker else []
        return {"configs": [*BASELINES, *models, *reranked], "active": doc.active,
                "notes": {m: text for m in models if (text := doc.models[m].note)},
                "cv": {m: doc.models[m].cv_text for m in models}}

    def side_by_side(self, query: str, names, size: int = 10) -> list:
        from esrank.evaluation.comparison import side_by_side

        configs = self.rankers(names)
        return side_by_side(self.engine, self.settings.index, query, configs,
                            self.query_encoder(configs), self.evaluator(), size=size,
                            reranker=self.reranker, machine=self.machine_grades())

    def machine_grades(self, path: Path | None = None) -> dict:
        """(query, doc id) -> MachineGrade from `path` (default: ESRANK_MACHINE_GRADES), read
        once; empty without a file."""
        from esrank.judgments.llm_judge import read_grades

        path = path or self.settings.machine_grades
        if path is None:
            return {}
        if path not in self._machine:
            self._machine[path] = {(g.query, g.doc_id): g for g in read_grades(path)}
        return self._machine[path]

    def query_deltas(self, a: str, b: str,
                     slot: contextlib.AbstractContextManager | None = None
                     ) -> tuple[str, str, list[dict]]:
        """Every judged query's NDCG@10 under A and B; with a `deltas_ttl`, reused that many
        seconds for the same two configurations as resolved (a deploy that moves "active" is
        a new pair). `slot` is held while they are computed, not while they are reused."""
        from esrank.evaluation.comparison import query_deltas

        evaluator = self.evaluator()
        if evaluator is None:
            raise InputError("no judgments configured (ESRANK_JUDGMENTS)")
        ra, rb = self.rankers([a, b])

        def compute() -> list[dict]:
            with slot or contextlib.nullcontext():
                return query_deltas(self.engine, self.settings.index, evaluator, ra, rb,
                                    self.query_encoder([ra, rb]), reranker=self.reranker)

        return ra.label, rb.label, self._deltas.get((ra.label, rb.label), compute)

    def why(self, config: str, query: str, doc_id: str) -> dict:
        from esrank.evaluation.comparison import why

        (ranker,) = self.rankers([config])
        if ranker.model is None:
            raise InputError(f"{ranker.name} has no model to explain")
        return why(self.engine, self.settings.index, query, ranker, doc_id,
                   self.query_encoder([ranker]), self.artifact(ranker.name), self.reranker)

    def write_page(self, path: Path, judgments: Path, configs, window: int | None,
                   deltas: dict, fmt: str | None = None, machine: Path | None = None) -> None:
        """The comparison page as one file with these configurations' data built in."""
        from esrank.core.files import write_file
        from esrank.evaluation.comparison import side_by_side, static_page
        from esrank.evaluation.runs import HISTORY_METRICS, run_history

        rankers = [self.ranker(w, window) for w in configs]
        evaluator = self.evaluator(judgments, fmt)
        encoder = self.query_encoder(rankers)
        sides = {q: [s.__dict__ for s in side_by_side(self.engine, self.settings.index, q,
                                                      rankers, encoder, evaluator,
                                                      reranker=self.reranker,
                                                      machine=self.machine_grades(machine))]
                 for q in evaluator.queries}
        write_file(path, static_page({
            "configs": [r.label for r in rankers], "deltas": deltas, "sides": sides,
            "runs": {"metrics": list(HISTORY_METRICS), "runs": run_history(self.engine)}}))

    # -- the doors of commands that reached past the app ---------------------------------------

    def feature_diffs(self, path: Path | None = None) -> list[dict]:
        """How each feature set of `path` (default: the settings' folder) differs from the
        versions the engine holds (esrank.features.parser.diff_against_engine)."""
        from esrank.features.parser import diff_against_engine, load_feature_sets

        return [diff_against_engine(self.engine, fs)
                for fs in load_feature_sets(path or self.settings.feature_sets)]

    def activate_model(self, name: str, set_name: str | None = None) -> str | None:
        """Make the deployed `name` live for `set_name` (default: the active set); returns the
        model it replaced."""
        from esrank.deploy.registry import activate

        return activate(self.engine, set_name or self.settings.active_set, name)

    def rollback_model(self, set_name: str | None = None, to: str | None = None
                       ) -> tuple[str, str]:
        """Re-activate the model before the live one (or `to`); returns (from, to)."""
        from esrank.deploy.registry import rollback

        return rollback(self.engine, set_name or self.settings.active_set, to)

    def delete_model(self, name: str, set_name: str | None = None) -> None:
        """Delete an inactive model from the plugin and the registry."""
        from esrank.deploy.registry import delete

        delete(self.engine, set_name or self.settings.active_set, name)

    def click_judgments(self, log: Path | None, output: Path, *, model: str = "sdbn",
                        weights=None, min_impressions: int = 10):
        """Judgments graded by the click model `model` (esrank.judgments.clicks.CLICK_MODELS)
        from the sessions of a UBI log (default: the engine's UBI indices), written to
        `output`; returns them."""
        from esrank.judgments.clicks import click_model
        from esrank.judgments.lists import write_judgments

        derived = click_model(model)(self.sessions(log, weights),
                                     min_impressions=min_impressions)
        write_judgments(derived, output)
        return derived

    def judge_llm(self, judgments: Path, output: Path, *, holes: bool = False,
                  configs=("bm25", "active"), fmt: str | None = None, depth: int = 10,
                  calibration=None, limit: int | None = None, progress: bool = True,
                  **llm):
        """Grade with the LLM judge the pairs of `judgments` (their grades ignored), or with
        `holes` the unjudged docs that `configs` rank in their top `depth` for its queries;
        write the machine grades to `output` (esrank.judgments.judging.judge_into). `llm`
        overrides the judge's settings (endpoint, model, prompt, concurrency; None keeps
        one)."""
        from esrank.judgments.judging import judge_into
        from esrank.judgments.lists import read_judgments
        from esrank.judgments.llm_judge import PROMPTS

        c = self.settings.llm.model_copy(update={k: v for k, v in llm.items() if v is not None})
        wanted = (self.holes(judgments, configs, fmt=fmt, depth=depth) if holes
                  else [(j.query, j.doc_id) for j in read_judgments(judgments, fmt)])
        todo, missing = self.judge_pairs(wanted)
        return judge_into(todo, missing, lambda: judge_backend(self.settings.model_copy(
                              update={"llm": c})), output, prompt=PROMPTS[c.prompt],
                          calibration=calibration, limit=limit, progress=progress,
                          workers=c.concurrency if c.endpoint else 1, index=self.settings.index)
