"""Sync feature sets with the engine: push each set under its versioned name, and diff a
local set against the versions the engine holds.

>>> push_feature_sets(engine, load_feature_sets("feature_sets"))   # doctest: +SKIP
[{'name': 'chorus', 'engine_name': 'chorus@3f2a9c01be', 'created': True}]
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from esrank.core.errors import InputError
from esrank.core.feature_set import FeatureSet
from esrank.engine.base import Engine
from esrank.engine.dialect import Dialect


def diff_feature_sets(local: FeatureSet, engine_features: list[dict],
                      dialect: Dialect) -> dict[str, list[str]]:
    """Compare a local set, as `dialect` stores it, with the features the engine holds (plugin
    schema), by name.

    Returns ``{"added": [...], "removed": [...], "changed": [...], "same": [...]}``:
    added/changed/same in local order, removed in engine order.
    """
    remote: dict[str, dict[str, Any]] = {}
    for i, feature in enumerate(engine_features):
        if not isinstance(feature, dict) or not isinstance(feature.get("name"), str):
            raise InputError(f"engine feature #{i} has no name: expected a dict with a "
                             f"'name', found {feature!r:.80}", source="engine feature set")
        remote[feature["name"]] = _normalized(feature)
    diff: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "same": []}
    for feature in local.features:
        if feature.name not in remote:
            diff["added"].append(feature.name)
        elif remote[feature.name] == _normalized(dialect.feature(feature)):
            diff["same"].append(feature.name)
        else:
            diff["changed"].append(feature.name)
    local_names = set(local.feature_names)
    diff["removed"] = [name for name in remote if name not in local_names]
    return diff


def push_feature_sets(engine: Engine, sets: Iterable[FeatureSet]) -> list[dict[str, Any]]:
    """Create the store if needed and store each set under its versioned name.

    Existing versions are never overwritten, so a model built on one keeps working.
    """
    engine.ensure_store()
    return [{"name": fs.name, "engine_name": fs.engine_name,
             "created": engine.put_feature_set(fs)} for fs in sets]


def diff_against_engine(engine: Engine, local: FeatureSet) -> dict[str, Any]:
    """Compare a local set with the engine: its own version if stored, else the closest one."""
    base = {"name": local.name, "engine_name": local.engine_name}
    if not engine.store_exists():
        return {**base, "status": "not in engine", "compared_with": None}
    versions = engine.list_feature_sets(prefix=f"{local.name}@")
    versions = {k: v for k, v in versions.items() if k.split("@", 1)[0] == local.name}
    if not versions:
        return {**base, "status": "not in engine", "compared_with": None}
    diffs = {name: diff_feature_sets(local, doc.get("features", []), engine.dialect)
             for name, doc in versions.items()}
    name = (local.engine_name if local.engine_name in diffs else
            min(diffs, key=lambda n: (sum(len(diffs[n][k]) for k in
                                          ("added", "removed", "changed")), n)))
    diff = diffs[name]
    same = not (diff["added"] or diff["removed"] or diff["changed"])
    return {**base, "status": "up to date" if same else "differs", "compared_with": name,
            "versions_in_engine": sorted(versions), **diff}


def _normalized(feature: dict[str, Any]) -> dict[str, Any]:
    """Plugin defaults filled in; a string template that is a JSON object compares as one."""
    template = feature.get("template")
    if isinstance(template, str):
        try:
            parsed = json.loads(template)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            template = parsed
    return {
        "params": list(feature.get("params") or []),
        "template_language": feature.get("template_language") or "mustache",
        "template": template,
    }
