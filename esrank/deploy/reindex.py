"""Indexing the catalogue under a live alias: refused while an active model with vector
features learned from other encoder weights (re-embedding would change its cosines live)."""

from __future__ import annotations

from esrank.catalogue.index import IndexReport, index_catalogue, index_encoder
from esrank.core.errors import ConfigError
from esrank.deploy.registry import active_models
from esrank.engine import Engine
from esrank.models.encoder import same_space


def check_encoder_change(engine: Engine, alias: str, encoder_key: str) -> None:
    """ConfigError naming the active models that re-embedding `alias` with `encoder_key`
    would feed other cosines than they learned from."""
    if not engine.alias_targets(alias):
        return
    indexed = index_encoder(engine, alias)
    if indexed is None or same_space(indexed, encoder_key):
        return
    stale = [m.name for m in active_models(engine)
             if any(p.type == "vector" for p in m.params)
             and not (m.encoder and same_space(m.encoder, encoder_key))]
    if stale:
        raise ConfigError(
            f"index {alias!r} was embedded by encoder {indexed}; re-embedding it with "
            f"{encoder_key} would change the cosine features of the active models "
            f"{', '.join(stale)} live. Index into another alias (--alias) and log, train "
            "and upload against it first, or pass --allow-encoder-change")


def index(app, files, alias: str | None = None, *, allow_encoder_change: bool = False,
          **options) -> IndexReport:
    """Index the catalogue into a new index behind `alias` (default: the configured index)
    with `app`'s engine and encoder, unless that re-embeds what active models read."""
    alias = alias or app.settings.index
    if not allow_encoder_change:
        check_encoder_change(app.engine, alias, app.encoder.key)
    return index_catalogue(app.engine, alias, list(files), app.encoder, **options)
