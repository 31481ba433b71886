"""Teardown for real-engine fixtures that deploy models of a private feature set."""

from __future__ import annotations

import json
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


def delete_where(engine, index: str, query: dict) -> None:
    """Delete the documents of `index` that match `query` (up to 10,000), when it exists."""
    if not engine.index_exists(index):
        return
    # no _delete_by_query: the Elasticsearch integ-test node has no reindex module
    hits = engine.search(index, {"size": 10_000, "_source": False,
                                 "query": query})["hits"]["hits"]
    if hits:
        lines = [json.dumps({"delete": {"_index": index, "_id": h["_id"]}}) for h in hits]
        engine.transport.request("cleanup", "POST", "/_bulk", body="\n".join(lines) + "\n",
                                 params={"refresh": "true"})
