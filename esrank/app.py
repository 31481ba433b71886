"""The application object: settings and the resources they name, built once and shared.

`App` holds the engine connection, the encoder (behind the embedding cache), the
cross-encoder, the judgments bound to evaluators, the loaded artifacts and the sidecar's
caches. It holds no use case: those live in their stage (e.g. esrank.evaluation.evaluate,
esrank.personal.serving, esrank.deploy.upload) as functions that take the app, and the two
front doors (esrank.cli, esrank.serve) call the same function for the same thing.

>>> app = App(load_settings())                                   # doctest: +SKIP
>>> served_search(app, "bluetooth speaker", unit="q1")[0].hits[0]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from esrank.core.errors import InputError, NoCrossEncoderError, NotFoundError
from esrank.core.feature_set import needs_cross_encoder
from esrank.core.settings import Settings

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


def encoder_info(settings: Settings) -> dict:
    """What the configured encoder resolves to, and the backends installed."""
    from esrank.models.encoder import available_backends

    encoder = load_encoder(settings)
    return {"encoder": encoder.name, "key": encoder.key, "dims": encoder.dims,
            "max_tokens": encoder.max_tokens, **settings.encoder.model_dump(),
            "installed_backends": available_backends()}


def embedding_cache(settings: Settings, clear: bool = False) -> dict:
    """The embedding cache's summary (then emptied, with `clear`)."""
    from esrank.models.embed_cache import EmbeddingCache

    cache = EmbeddingCache(settings.home / "cache")
    summary = cache.summary()
    if clear:
        summary["cleared"] = cache.clear()
    cache.close()
    return summary


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

    def peek(self, key, default=None):
        """The key's value while it is kept, else `default` (nothing loaded)."""
        expires, value = self._items.get(key, (0.0, default))
        return value if expires > time.monotonic() else default

    def put(self, key, value) -> None:
        """Replace a key's value (kept `ttl` seconds from now; with ttl 0, not kept)."""
        if self.ttl:
            if key not in self._items and len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = (time.monotonic() + self.ttl, value)


class App:
    """esrank, configured once: settings and the resources they name (engine, encoders,
    cross-encoder, judgments, artifacts, caches), each loaded on first use and kept."""

    def __init__(self, settings: Settings, *, engine=None, encoder=None, reranker=None,
                 engine_timeout: float | None = None, ranker_ttl: float = 0.0,
                 profile_ttl: float = 0.0, deltas_ttl: float = 0.0,
                 live_profiles: bool = False):
        self.settings = settings
        self._engine, self._encoder, self._reranker = engine, encoder, reranker
        self._engine_timeout = engine_timeout
        # the sidecar reuses a resolved configuration and a shopper's profile for a while
        self._rankers = TtlCache(ranker_ttl, MAX_RANKERS)
        self._profiles = TtlCache(profile_ttl, MAX_PROFILES)
        # the sidecar folds accepted /events into profiles (esrank.personal.live)
        self.live = None
        if live_profiles:
            from esrank.personal.live import LiveProfiles

            self.live = LiveProfiles(self, self._profiles)
        self.deltas = TtlCache(deltas_ttl, MAX_DELTAS)  # the comparison page's per-query deltas
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

    def judge_backend(self, llm=None):
        """The LLM judge's backend for `llm` (LlmSettings; default: the configured ones): the
        OpenAI-compatible endpoint when one is set, else the local GGUF model."""
        from esrank.judgments.llm_judge import LocalBackend, OpenAIBackend

        c = llm or self.settings.llm
        if c.endpoint:
            return OpenAIBackend(c.endpoint, c.model, timeout=c.timeout,
                                 api_key=c.api_key.get_secret_value() if c.api_key else None)
        from esrank.models.llm import load_llm

        return LocalBackend(load_llm(c.model))

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

    def local_engine(self, flavor: str | None = None, *, nodes: int | None = None,
                     port: int | None = None):
        """The local cluster of `flavor` (default: the settings' flavor) as settings describe
        it; `nodes` and `port` override them (the transport port follows: port + 100)."""
        from esrank.engine.local import LocalEngine

        s = self.settings
        flavor = flavor or s.local_flavor
        e, node = s.engine, s.local_node(flavor)
        return LocalEngine(home=s.home, flavor=flavor, version=node.version,
                           port=port or node.port,
                           transport_port=port + 100 if port else node.transport_port,
                           nodes=nodes or node.nodes, heap=e.heap,
                           java_home=node.java_home, maven_repo=e.maven_repo,
                           ltr_plugin=node.ltr_plugin,
                           ltr_plugin_sha256=node.ltr_plugin_sha256,
                           startup_timeout=e.startup_timeout)


    # -- configurations, shoppers, grades ------------------------------------------------------

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
        s = self.settings
        ranker = self._rankers.get((which, window), lambda: resolve_ranker(
            self.engine, s.active_set, which, window, s.recall_knn, s.linear_weight))
        ranker = replace(ranker, rerank=rerank or ranker.rerank)
        self.require_reranker(bool(ranker.rerank))
        return ranker

    def query_encoder(self, rankers) -> Any:
        """The encoder when any of `rankers` searches the nearest products or has a model that
        needs query vectors."""
        needs = any(r.knn or (r.model and any(p.type == "vector" for p in r.model.params))
                    for r in rankers)
        return self.encoder if needs else None

    def profile(self, user_id: str):
        """A shopper's stored Profile, or None (with a `profile_ttl`, reused that long); with
        live profiles, their actions this sidecar has not stored yet included."""
        from esrank.personal.shopper import load_profile

        if self.live is not None:
            return self.live.profile(user_id)
        return self._profiles.get(user_id, lambda: load_profile(
            self.engine, user_id, self.settings.profiles_index))

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
