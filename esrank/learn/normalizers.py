"""The LTR plugin's feature normalizers (`standard`, `min_max`): fitted on a training table,
applied the way the plugin applies them (float32), by training and by the local booster."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from esrank.core.errors import InputError
from esrank.learn.table import FeatureMatrix


def normalize(values: np.ndarray, names: Sequence[str], normalizers: dict[str, dict]
              ) -> np.ndarray:
    """Apply the plugin's `standard` / `min_max` normalizers (float32, as the plugin does)."""
    out = np.array(values, dtype=np.float32, copy=True)
    for i, name in enumerate(names):
        spec = normalizers.get(name)
        if not spec:
            continue
        if "standard" in spec:
            s = spec["standard"]
            out[:, i] = (out[:, i] - np.float32(s["mean"])) / np.float32(s["standard_deviation"])
        else:
            m = spec["min_max"]
            lo, hi = np.float32(m["minimum"]), np.float32(m["maximum"])
            out[:, i] = (out[:, i] - lo) / (hi - lo)
    return out


def fit_normalizers(matrix: FeatureMatrix, kind: str) -> dict[str, dict]:
    """Per-feature `standard` or `min_max` parameters from a table (NaN ignored)."""
    specs = {}
    for i, name in enumerate(matrix.feature_names):
        column = matrix.values[:, i]
        column = column[~np.isnan(column)]
        if column.size == 0:
            continue
        if kind == "standard":
            std = float(column.std()) or 1.0
            specs[name] = {"standard": {"mean": float(column.mean()), "standard_deviation": std}}
        elif kind == "min_max":
            lo, hi = float(column.min()), float(column.max())
            specs[name] = {"min_max": {"minimum": lo, "maximum": hi if hi > lo else lo + 1.0}}
        else:
            raise InputError(f"normalizer {kind!r}: expected 'standard' or 'min_max'")
    return specs
