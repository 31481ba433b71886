"""Plain, immutable records that the pipeline stages exchange."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ParamType = Literal["string", "number", "vector", "weights"]
ParamSource = Literal["query", "shopper", "cross_encoder"]


@dataclass(frozen=True)
class QueryParam:
    """A query-time parameter a feature set expects, e.g. ``keywords`` or ``query_vector``.

    ``dims`` is the vector length for ``type="vector"`` and ``None`` otherwise. ``source`` says
    who fills it: esrank from the query text ("query"), the shopper's context and profile
    ("shopper"; a feature whose shopper params a request lacks is not computed: missing), or
    the cross-encoder ("cross_encoder": a ``weights`` param, one element per first-pass doc,
    term = doc id, weight = its relevance probability for the query).
    A ``weights`` param is a list of ``{"term": ..., "weight": ...}`` objects.
    """

    name: str
    type: ParamType
    dims: int | None = None
    description: str = ""
    source: ParamSource = "query"


@dataclass(frozen=True)
class Feature:
    """One feature in plugin terms: a templated query scored per document.

    ``template`` is a JSON object (dict) or a string; treat it as read-only.
    ``line`` is where the feature starts in its source file (for error messages).
    """

    name: str
    params: tuple[str, ...]
    template_language: str
    template: dict[str, Any] | str
    description: str = ""
    line: int | None = None

    def spec(self) -> dict[str, Any]:
        """The feature as its file defines it, in the plugin's schema (a deep copy, safe to
        mutate). A `vector_cosine` feature is esrank's own: the engine seam renders it
        (esrank.engine.dialect)."""
        return {
            "name": self.name,
            "params": list(self.params),
            "template_language": self.template_language,
            "template": copy.deepcopy(self.template),
        }


@dataclass(frozen=True)
class FeatureSet:
    """An ordered set of features: the single owner of feature order.

    >>> fs.feature_names                     # doctest: +SKIP
    ('title_bm25', 'title_phrase', ...)
    >>> fs.engine_name                       # doctest: +SKIP
    'chorus@3f2a9c01be'
    """

    name: str
    description: str
    params: tuple[QueryParam, ...]
    features: tuple[Feature, ...]
    source: str | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in file order; models, training data and logs must match it."""
        return tuple(f.name for f in self.features)

    @property
    def content_hash(self) -> str:
        """First 10 hex digits of the SHA-256 of the canonical JSON of the features as
        defined: the same on every engine, so a model can move between them."""
        features = [f.spec() for f in self.features]
        canonical = json.dumps(features, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]

    @property
    def engine_name(self) -> str:
        """Versioned name in the engine (``name@hash``): a push never alters a set in use."""
        return f"{self.name}@{self.content_hash}"

    @property
    def personal_features(self) -> dict[str, tuple[str, ...]]:
        """Feature -> its shopper params, for every feature that uses one (file order)."""
        shopper = {p.name for p in self.params if p.source == "shopper"}
        return {f.name: tuple(p for p in f.params if p in shopper)
                for f in self.features if shopper.intersection(f.params)}

    def active_features(self, params: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The features a request with `params` computes (see `active_features`)."""
        return active_features(self.feature_names, self.personal_features, params)

    def param(self, name: str) -> QueryParam:
        """The declared query param called ``name``; KeyError if there is none."""
        for p in self.params:
            if p.name == name:
                return p
        declared = ", ".join(p.name for p in self.params) or "none"
        raise KeyError(f"feature set {self.name!r} has no param {name!r} (declared: {declared})")


def needs_cross_encoder(params: Sequence[QueryParam]) -> bool:
    """Whether a request's params include the cross-encoder's scores of its docs."""
    return any(p.source == "cross_encoder" for p in params)


def active_features(feature_names: Sequence[str], personal: Mapping[str, Sequence[str]],
                    params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The features an sltr request computes: all of them when there are no personal
    features (None: no `active_features` clause), else every non-personal feature and each
    personal one whose shopper params `params` holds. The others stay missing."""
    if not personal:
        return None
    return tuple(n for n in feature_names
                 if n not in personal or all(p in params for p in personal[n]))


