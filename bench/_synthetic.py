"""Training tables at a shop's size, made from a real logged one: the table repeated with
fresh query ids (and query texts) and 1 % multiplicative noise on the features, written as a
dataset (part files of whole query groups)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from esrank.learn.table import FeatureMatrix, write_part


def repeated(base: FeatureMatrix, copy: int, rng: np.random.Generator) -> FeatureMatrix:
    """Copy number `copy` of `base`: qids and query texts suffixed, features x (1 + 1% noise)."""
    noise = 1 + 0.01 * rng.standard_normal(base.values.shape).astype(np.float32)
    return replace(base, qids=tuple(f"{q}~{copy}" for q in base.qids),
                   queries=tuple(f"{q} ~{copy}" for q in base.queries),
                   values=(base.values * noise).astype(np.float32))


def synthetic_dataset(base: FeatureMatrix, rows: int, folder: Path, *,
                      part_rows: int = 100_000, seed: int = 0) -> dict:
    """Write about `rows` rows (whole copies of `base`) as parts of about `part_rows` rows."""
    rng = np.random.default_rng(seed)
    copies = max(1, round(rows / len(base)))
    per_part = max(1, round(part_rows / len(base)))
    for number, start in enumerate(range(0, copies, per_part)):
        batch = [repeated(base, c, rng) for c in range(start, min(copies, start + per_part))]
        write_part(concat(batch), folder, number)
    return {"rows": copies * len(base), "queries": copies * len(set(base.qids)),
            "parts": -(-copies // per_part), "copies": copies}


def concat(matrices: list[FeatureMatrix]) -> FeatureMatrix:
    """The matrices' rows one after the other (same feature set and candidate set)."""
    first = matrices[0]

    def joined(name: str):
        columns = [getattr(m, name) for m in matrices]
        return None if columns[0] is None else tuple(v for c in columns for v in c)

    return replace(first, **{name: joined(name) for name in (
        "qids", "queries", "doc_ids", "grades", "ranks", "judged", "lists")},
        values=np.concatenate([m.values for m in matrices]))
