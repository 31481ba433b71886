"""The model registry: versioned models in the plugin, one "active" pointer per feature set.

Models are stored in the plugin as NAME-vN (NAME is the feature set's name, N counts up and
is never reused). esrank keeps one document per feature set in the `esrank-models` index:

    {"feature_set": "chorus", "active": "chorus-v3", "history": ["chorus-v1", "chorus-v2"],
     "models": {"chorus-v3": {"feature_set": "chorus@c579ebbba7", "params": [...],
                              "parity": {...}, "meta": {...}, "uploaded_at": "..."}}}

`RegistryEntry` and `DeployedModel` are that document as records (from_dict/to_dict).
`history` holds the previously active models, most recent last, so `rollback` can restore
them. Every pointer change is a compare-and-set on the document's version. Two deploys racing
both land, as if one ran after the other: the one that loses a version name to the other takes
the next, the one whose registry write comes second reads the entry again and writes once more
(and is then the active one). An activate, rollback or delete that loses a race changes
nothing and says so. `deploy` uploads, runs the parity gate, and moves the pointer only when
the gate passes; a failed upload or gate deletes the new model and leaves the live one as it
was.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from esrank.catalogue.recall import Recall
from esrank.core.errors import (
    EngineError,
    EsrankError,
    ModelError,
    UnknownModelError,
)
from esrank.core.feature_set import QueryParam
from esrank.core.stamps import utc
from esrank.engine import Engine
from esrank.engine.cluster import SMALL_INDEX

log = logging.getLogger(__name__)

REGISTRY_INDEX = "esrank-models"
TRIES = 5  # a deploy's attempts at a version name, and at its registry write, under contention
MAPPING = {
    "settings": SMALL_INDEX,
    "mappings": {"dynamic": "strict", "properties": {
        "feature_set": {"type": "keyword"},
        "active": {"type": "keyword"},
        "history": {"type": "keyword"},
        "models": {"type": "object", "enabled": False},
        "updated_at": {"type": "date"},
    }},
}


@dataclass(frozen=True)
class ActiveModel:
    """What the search path needs to rescore with a model."""

    name: str
    feature_set: str  # the engine name, NAME@HASH
    params: tuple[QueryParam, ...]
    feature_names: tuple[str, ...] = ()
    personal: dict[str, tuple[str, ...]] = field(default_factory=dict)  # feature -> params
    cross_encoder: str | None = None  # the key of the cross-encoder its features need
    encoder: str | None = None  # the key of the encoder its vector features were logged with
    recall: Recall | None = None  # the candidate set it was trained for (None: BM25's window)


@dataclass(frozen=True)
class DeployedModel:
    """One deployed model as the registry records it."""

    feature_set: str  # the engine name, NAME@HASH
    params: tuple[QueryParam, ...]
    feature_names: tuple[str, ...]
    artifact: str | None  # the training artifact's folder
    uploaded_at: str
    parity: dict  # the gate's report (ParityReport.to_dict() without the worst docs)
    meta: dict  # from the artifact: params, cv, data, trained_at, normalizers, ...
    personal: dict[str, tuple[str, ...]] = field(default_factory=dict)  # feature -> params

    @classmethod
    def from_dict(cls, d: dict) -> DeployedModel:
        return cls(d["feature_set"], tuple(QueryParam(**p) for p in d["params"]),
                   tuple(d.get("feature_names", ())), d.get("artifact"), d["uploaded_at"],
                   d.get("parity") or {}, d.get("meta") or {},
                   {f: tuple(ps) for f, ps in (d.get("personal") or {}).items()})

    def to_dict(self) -> dict:
        return {"feature_set": self.feature_set,
                "params": [{"name": p.name, "type": p.type, "dims": p.dims, "source": p.source}
                           for p in self.params],
                "feature_names": list(self.feature_names), "artifact": self.artifact,
                "uploaded_at": self.uploaded_at, "parity": self.parity, "meta": self.meta,
                "personal": {f: list(ps) for f, ps in self.personal.items()}}

    def serving(self, name: str) -> ActiveModel:
        data = self.meta.get("data") or {}
        recall = Recall.from_dict(data["recall"]) if data.get("recall") else None
        return ActiveModel(name, self.feature_set, self.params, self.feature_names,
                           self.personal, data.get("cross_encoder"), data.get("encoder"), recall)

    @property
    def parity_max_delta(self) -> float | None:
        return self.parity.get("max_abs_delta")

    @property
    def note(self) -> str | None:
        """What sets the model apart ("without text_cosine, title_cosine", from
        `esrank train --exclude`), or None."""
        excluded = self.meta.get("excluded_features")
        return f"without {', '.join(excluded)}" if excluded else None

    @property
    def cv_text(self) -> str:
        """Its cross-validated NDCG@10, e.g. "served CV ndcg@10 0.672 / 0.748 condensed"
        ("in-table CV" for a model trained on a table without first-pass ranks)."""
        cv = self.meta.get("cv") or {}
        if cv.get("mean") is None:
            return "no CV"
        text = f"{cv.get('view', 'in-table')} CV ndcg@10 {cv['mean']:.3f}"
        condensed = cv.get("condensed")
        return text + (f" / {condensed['mean']:.3f} condensed" if condensed else "")


@dataclass
class RegistryEntry:
    """The registry document of one feature set; `version` is what the next write checks
    (None: not stored yet)."""

    feature_set: str
    active: str | None = None
    history: list[str] = field(default_factory=list)
    models: dict[str, DeployedModel] = field(default_factory=dict)
    updated_at: str | None = None
    version: dict | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, d: dict, version: dict | None = None) -> RegistryEntry:
        return cls(d["feature_set"], d.get("active"), list(d.get("history", ())),
                   {n: DeployedModel.from_dict(m) for n, m in d.get("models", {}).items()},
                   d.get("updated_at"), version)

    def to_dict(self) -> dict:
        return {"feature_set": self.feature_set, "active": self.active,
                "history": self.history,
                "models": {n: m.to_dict() for n, m in self.models.items()},
                "updated_at": self.updated_at}

    def deployed(self, name: str) -> DeployedModel:
        """A deployed model by name; UnknownModelError naming the deployed ones if absent."""
        if name not in self.models:
            raise UnknownModelError(f"no deployed model {name!r} for {self.feature_set!r} "
                                    f"(deployed: {sorted(self.models) or 'none'}); see "
                                    "esrank models list")
        return self.models[name]

    def point(self, name: str) -> None:
        """Make `name` active; the model it replaces goes to the end of the history (which
        never holds the active model)."""
        if self.active and self.active != name:
            self.history = [m for m in self.history if m != self.active] + [self.active]
        self.history = [m for m in self.history if m != name]
        self.active = name


def _read(engine: Engine, set_name: str) -> RegistryEntry:
    """The entry to change (the index is created on first use, by whichever of two racing
    commands gets there first)."""
    engine.ensure_index(REGISTRY_INDEX, MAPPING)
    engine.wait_for_index(REGISTRY_INDEX)  # another command's create may still be starting it
    return entry(engine, set_name)


class RegistryConflictError(ModelError):
    """The registry entry changed between this command's read and its write."""


def _write(engine: Engine, doc: RegistryEntry) -> None:
    doc.updated_at = utc()
    try:
        engine.put_document(REGISTRY_INDEX, doc.feature_set, doc.to_dict(), doc.version)
    except EngineError as exc:
        if exc.status == 409:
            raise RegistryConflictError(
                f"the registry entry for {doc.feature_set!r} changed while this command ran "
                "(another deploy?); nothing was changed, run it again") from exc
        raise


def entry(engine: Engine, set_name: str) -> RegistryEntry:
    """The registry entry of a feature set (empty when nothing was deployed); one read."""
    found = engine.get_document(REGISTRY_INDEX, set_name)  # None also when no index yet
    return RegistryEntry.from_dict(*found) if found else RegistryEntry(set_name)


def next_name(engine: Engine, set_name: str, above: int = 0) -> str:
    """NAME-vN with N above `above` and every version the plugin or the registry has seen."""
    doc = entry(engine, set_name)
    seen = [*engine.list_models(f"{set_name}-v"), *doc.models, *doc.history]
    versions = [n for series, n in map(version_of, seen) if series == set_name and n]
    return f"{set_name}-v{max([*versions, above]) + 1}"


VERSIONED = re.compile(r"(?P<series>.+)-v(?P<n>[0-9]+)")


def version_of(name: str) -> tuple[str, int | None]:
    """A model name's series and version, the one place NAME-vN is read.

    >>> version_of("chorus-v6"), version_of("bm25")
    (('chorus', 6), ('bm25', None))
    """
    match = VERSIONED.fullmatch(name)
    return (match["series"], int(match["n"])) if match else (name, None)


def active_models(engine: Engine) -> list[ActiveModel]:
    """The active model of every feature set that has one (one search)."""
    if not engine.index_exists(REGISTRY_INDEX):
        return []
    hits = engine.search(REGISTRY_INDEX, {"size": 1000})
    entries = [RegistryEntry.from_dict(h["_source"]) for h in hits["hits"]["hits"]]
    return [e.deployed(e.active).serving(e.active) for e in entries if e.active]


def deployed_model(engine: Engine, set_name: str, name: str) -> ActiveModel:
    """A deployed model of the set by name; UnknownModelError naming the deployed ones if
    absent."""
    return entry(engine, set_name).deployed(name).serving(name)


def unregistered(engine: Engine, doc: RegistryEntry) -> list[str]:
    """Models of the set in the plugin that the registry does not know: left by a deploy
    that failed before it could clean up (the engine went away mid-way)."""
    # the plugin's listing is a search and can lag a delete: confirm each by a real-time get
    return [m for m in engine.list_models(f"{doc.feature_set}-v")
            if m not in doc.models and engine.get_model(m) is not None]


def active_model(engine: Engine, set_name: str) -> ActiveModel | None:
    """The model search should rescore with, or None when none is active (one read)."""
    doc = entry(engine, set_name)
    return doc.deployed(doc.active).serving(doc.active) if doc.active else None


def record(engine: Engine, set_name: str, name: str, deployed: DeployedModel,
            activate: bool) -> str | None:
    """Add the deployed model to the registry entry (and point at it); when a concurrent
    deploy wrote the entry first, read it again and add the model to that. Returns the model
    that was active."""
    tries = TRIES
    while True:
        doc = _read(engine, set_name)
        previous = doc.active
        doc.models[name] = deployed
        if activate:
            doc.point(name)
        try:
            _write(engine, doc)
            return previous
        except RegistryConflictError:
            tries -= 1
            if not tries:
                raise
            log.info("the registry entry of %r changed under deploy %s; writing again",
                     set_name, name)


def remove_unless_recorded(engine: Engine, set_name: str, name: str) -> None:
    """After a registry write that failed, or seemed to: a write that timed out may have
    landed, and then the registry (maybe its active pointer) names the new model. Delete the
    model only when a fresh read shows the registry does not; when it cannot be read, keep it
    (an unused model costs nothing; a deleted active one breaks search)."""
    try:
        recorded = name in entry(engine, set_name).models
    except EsrankError as exc:
        log.error("cannot tell whether %s was recorded (%s): keeping it; esrank models list "
                  "shows the registry", name, exc)
        return
    if recorded:
        log.warning("the registry write for %s reported a failure but landed", name)
    else:
        engine.delete_model(name)


def activate(engine: Engine, set_name: str, name: str) -> str | None:
    """Point the feature set at `name`; returns the previously active model."""
    doc = _read(engine, set_name)
    if name not in doc.models:
        raise ModelError(f"{name!r} is not a deployed model of {set_name!r} "
                         f"(deployed: {sorted(doc.models) or 'none'})")
    if engine.get_model(name) is None:
        raise ModelError(f"{name!r} is in the registry but not in the engine's LTR store")
    previous = doc.active
    doc.point(name)
    _write(engine, doc)
    return previous


def rollback(engine: Engine, set_name: str, to: str | None = None) -> tuple[str, str]:
    """Re-activate the model that was active before this one, or the deployed model `to`;
    returns (from, to). Rolling back *to* a model that is already active changes nothing, so
    a rollback whose answer was lost can be repeated safely."""
    doc = _read(engine, set_name)
    current = doc.active
    if to is not None:
        if to not in doc.models:
            raise ModelError(f"{to!r} is not a deployed model of {set_name!r} "
                             f"(deployed: {sorted(doc.models) or 'none'})")
        if current == to:
            return to, to
        target = to
    else:
        history = [m for m in doc.history if m in doc.models]
        if not current or not history:
            raise ModelError(f"{set_name!r} has no earlier model to roll back to "
                             f"(active: {current}, history: {doc.history})")
        target = history[-1]
    doc.history = [m for m in doc.history if m != target]
    doc.active = target
    _write(engine, doc)
    return current or "none", target


def delete(engine: Engine, set_name: str, name: str) -> None:
    """Remove an inactive model from the plugin and the registry; the active one is refused."""
    doc = _read(engine, set_name)
    if doc.active == name:
        raise ModelError(f"{name!r} is the active model of {set_name!r}: activate or roll "
                         "back to another one first")
    if name not in doc.models and engine.get_model(name) is None:
        raise ModelError(f"no model {name!r} in the registry or the engine")
    doc.models.pop(name, None)
    doc.history = [m for m in doc.history if m != name]
    _write(engine, doc)
    if engine.get_model(name) is not None:
        engine.delete_model(name)


def listing(engine: Engine, set_name: str) -> tuple[RegistryEntry, list[str]]:
    """The registry entry of a feature set and the plugin models it does not know."""
    doc = entry(engine, set_name)
    return doc, unregistered(engine, doc)
