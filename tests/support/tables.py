"""Synthetic training tables for the unit tests."""

from __future__ import annotations

import numpy as np

from esrank.learn.table import FeatureMatrix


def synthetic(queries: int = 30, docs: int = 12, seed: int = 0) -> FeatureMatrix:
    """Grade follows feature 'signal'; 'noise' is random; 'sparse' is mostly missing."""
    rng = np.random.default_rng(seed)
    rows, qids, grades = [], [], []
    for q in range(queries):
        for _ in range(docs):
            signal = rng.random()
            grade = int(signal * 4 - 1e-9)
            sparse = rng.random() if rng.random() < 0.2 else np.nan
            rows.append([signal, rng.random(), sparse])
            qids.append(str(q))
            grades.append(grade)
    n = len(rows)
    return FeatureMatrix("syn@0123456789", ("signal", "noise", "sparse"), tuple(qids),
                         tuple(f"query {q}" for q in qids), tuple(f"d{i}" for i in range(n)),
                         tuple(grades), np.array(rows, dtype=np.float32))
