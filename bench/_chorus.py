"""The packaged Chorus data the benches read: the catalogue, its judgments, the feature-set
files."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from esrank.catalogue.products import read_products, to_document

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

