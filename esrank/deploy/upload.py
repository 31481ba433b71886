"""Deploying a model: export it for the plugin, upload the next version, gate it on parity,
record it (and activate it) in the registry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from esrank.core.errors import (
    InputError,
    ModelError,
    NameTakenError,
)
from esrank.core.feature_set import FeatureSet
from esrank.core.stamps import utc
from esrank.deploy.export import ParityReport, check_parity, plugin_model
from esrank.deploy.registry import (
    TRIES,
    DeployedModel,
    entry,
    next_name,
    record,
    remove_unless_recorded,
    version_of,
)
from esrank.engine import Engine
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.learn.artifact import ModelArtifact
from esrank.learn.table import FeatureMatrix, read_table
from esrank.models.encoder import same_space

log = logging.getLogger(__name__)


@dataclass
class DeployReport:
    model: str
    parity: ParityReport
    activated: bool
    previous: str | None

    def to_dict(self) -> dict:
        return {"model": self.model, "activated": self.activated, "previous": self.previous,
                "parity": self.parity.to_dict()}


def deploy(engine: Engine, index: str, artifact: ModelArtifact, feature_set: FeatureSet,
           queries: dict[str, list[str]], params_for: Callable[[list[str]], list[dict]], *,
           activate: bool = True, tolerance: float = 1e-4, shoppers: Sequence[dict] = ()
           ) -> DeployReport:
    """Upload `artifact` as the next version, gate it on parity, then (optionally) activate.
    `shoppers` (shopper params) replay the queries personalised too (a personal model).

    >>> report = deploy(engine, "products", art, fs, queries, params_for)  # doctest: +SKIP
    >>> report.parity.max_delta < 1e-4, report.activated  # doctest: +SKIP
    (True, True)
    """
    model = plugin_model(artifact, feature_set)  # refuses a mismatched model before any write
    engine.ensure_store()
    engine.put_feature_set(feature_set)
    name = _upload(engine, feature_set, model)
    try:
        parity = check_parity(engine, index, name, artifact, feature_set, queries, params_for,
                              shoppers=shoppers, tolerance=tolerance)
    except Exception:
        engine.delete_model(name)
        raise
    if not parity.passed:
        engine.delete_model(name)
        return DeployReport(name, parity, False, entry(engine, feature_set.name).active)
    deployed = DeployedModel(
        feature_set.engine_name, tuple(feature_set.params), tuple(feature_set.feature_names),
        str(artifact.path), utc(),
        {k: v for k, v in parity.to_dict().items() if k != "worst"},
        {k: artifact.meta.get(k) for k in ("params", "cv", "data", "trained_at",
                                           "esrank_version", "normalizers",
                                           "excluded_features", "training_rows",
                                           "personal", "reference")},
        feature_set.personal_features)
    try:
        previous = record(engine, feature_set.name, name, deployed, activate)
    except Exception:
        remove_unless_recorded(engine, feature_set.name, name)
        raise
    return DeployReport(name, parity, activate, previous)


def _upload(engine: Engine, feature_set: FeatureSet, model: dict) -> str:
    """Store `model` as the set's next version; when a concurrent deploy takes that name
    first (the plugin refuses an existing one), the next free one. Returns the name."""
    taken = 0
    for _ in range(TRIES):
        name = next_name(engine, feature_set.name, above=taken)
        try:
            engine.create_model(feature_set.engine_name, name, model)
            return name
        except NameTakenError:
            # the plugin's listing may not show the winner yet: count past its name
            taken = version_of(name)[1]
            log.info("%s was taken by a concurrent deploy; trying the next version", name)
    raise ModelError(f"concurrent deploys of {feature_set.name!r} took each of the {TRIES} "
                     f"version names this one tried (last {name}); nothing was uploaded, run "
                     "it again")


def upload(app, artifact_path: Path, feature_set: Path, table: Path | None = None, *,
           parity_queries: int | None = None, tolerance: float = 1e-4, activate: bool = True
           ) -> tuple[FeatureSet, DeployReport]:
    """Upload a trained artifact with `app`'s engine, gate it on parity over its logged table
    (replayed with the encoders it was logged with, else refused), activate."""
    artifact = ModelArtifact.load(artifact_path)
    fs = load_feature_set(feature_set)
    table = table or Path((artifact.meta.get("data") or {}).get("table") or "")
    if not table.exists():  # a table file, or a dataset folder
        raise InputError("no logged table for the parity gate: pass --table")
    encoder = app.encoder if any(p.type == "vector" for p in fs.params) else None
    matrix = read_table(table)
    reranker = app.feature_reranker(fs)
    _check_logged_with(table, matrix, encoder, reranker)
    return fs, deploy(app.engine, app.settings.index, artifact, fs,
                      matrix.docs_by_query(parity_queries),
                      query_params(fs.params, encoder, cross_encoder=reranker),
                      activate=activate, tolerance=tolerance,
                      shoppers=list((matrix.shoppers or {}).values()))


def _check_logged_with(table: Path, matrix: FeatureMatrix, encoder, reranker) -> None:
    """ModelError when the table was logged with other encoders than the configured ones: the
    model would be served other scores than it learned."""
    if matrix.cross_encoder and reranker.key != matrix.cross_encoder:
        raise ModelError(f"{table} was logged with cross-encoder {matrix.cross_encoder}; "
                         f"the configured one is {reranker.key}: the model would be served "
                         "other scores than it learned")
    if matrix.encoder and encoder is not None and not same_space(encoder.key, matrix.encoder):
        raise ModelError(f"{table} was logged with encoder {matrix.encoder}; the configured "
                         f"one is {encoder.key}: the model would be served other cosines "
                         "than it learned")
