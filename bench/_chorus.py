"""What several benches set up the same way: the packaged Chorus data they read (the
catalogue, its judgments, the feature-set files), and the private feature set a bench pushes
so that its models and registry entry never touch a live set."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from esrank.catalogue.products import read_products, to_document
from esrank.core.feature_set import FeatureSet
from esrank.deploy.registry import REGISTRY_INDEX
from esrank.engine.base import Engine
from esrank.features.sync import push_feature_sets

ROOT = Path(__file__).resolve().parent.parent
CHORUS = ROOT / "esrank" / "data" / "chorus"  # the demo data, as packaged
JUDGMENTS = CHORUS / "judgments.csv"  # 97 queries, 2,484 graded pairs
FEATURE_SETS = ROOT / "feature_sets"


def catalogue_files() -> list[Path]:
    """The Chorus product files (1.json.zip ... 4.json.zip), in the order `make demo` indexes
    them."""
    return sorted(CHORUS.glob("*.json.zip"))


def catalogue_documents(limit: int | None = None) -> Iterator[tuple[str, dict]]:
    """(doc id, document) of each Chorus product in file order, shaped as `esrank index`
    shapes it (title, short_description, supplier, price, attrs, ...); the first `limit`
    products with one.

    >>> next(catalogue_documents())[1]["title"]  # doctest: +SKIP
    'Xerox 006R90321 toner cartridge Original Black 6 pc(s)'
    """
    return (to_document(p) for p in islice(read_products(catalogue_files()), limit))


def judged_queries() -> list[str]:
    """The Chorus queries that have judgments, sorted."""
    with open(JUDGMENTS) as f:
        return sorted({row["query"] for row in csv.DictReader(f)})


def private_feature_set(engine: Engine, fs: FeatureSet, name: str, **changes
                        ) -> FeatureSet:
    """`fs` under the bench's own `name` (and any other field `changes`), pushed to the
    engine: the bench's models and registry entry live under that name and never touch a
    live set. `remove_deployed(engine, name)` takes them away again.

    >>> private_feature_set(engine, load_feature_set(FEATURE_SETS / "chorus.yaml"),
    ...                     "relbench").engine_name  # doctest: +SKIP
    'relbench@5d64c3501b'
    """
    private = dataclasses.replace(fs, name=name, **changes)
    push_feature_sets(engine, [private])
    return private


def remove_deployed(engine: Engine, set_name: str, indices: Iterable[str] = ()) -> None:
    """Delete the models of the bench's set `set_name` and its registry entry, then
    `indices`. The feature set stays in the store (its engine name is its content)."""
    for name in engine.list_models(f"{set_name}-v"):
        if engine.get_model(name) is not None:  # the listing can lag a delete
            engine.delete_model(name)
    engine.transport.request("bench cleanup", "DELETE",
                             f"/{REGISTRY_INDEX}/_doc/{set_name}")
    for index in indices:
        engine.delete_index(index)
