"""Teardown for real-engine fixtures that deploy models of a private feature set."""

from __future__ import annotations

from collections.abc import Iterable

from esrank.deploy import registry


def remove_deployed(engine, set_name: str, indices: Iterable[str] = ()) -> None:
    """Delete the set's models and registry entry, then `indices`."""
    for name in engine.list_models(f"{set_name}-v"):
        if engine.get_model(name) is not None:  # the listing can lag a delete
            engine.delete_model(name)
    if registry.entry(engine, set_name).models:
        engine.transport.request("cleanup", "DELETE",
                                 f"/{registry.REGISTRY_INDEX}/_doc/{set_name}")
    for index in indices:
        engine.delete_index(index)
