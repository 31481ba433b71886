"""The trained model's record: one owner for what training writes and everything else reads
(export, the registry, the report, the sidecar's explanations)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esrank.core.errors import ModelError
from esrank.core.files import new_folder
from esrank.learn.normalizers import normalize

# How NaN (a feature the plugin could not compute) is fed to the trees: the largest float32,
# which every split sends "no", the way the LTR plugins route it (see train.py).
MISSING_AS = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ModelArtifact:
    """A trained model: the booster and what traces it (`meta`: feature set and names,
    params, CV, data); stored as a folder holding model.json (XGBoost) and meta.json.

    >>> ModelArtifact.load(Path("models/chorus-1")).feature_names[:2]   # doctest: +SKIP
    ('title_bm25', 'title_phrase')
    """

    path: Path
    meta: dict
    booster: object  # xgboost.Booster

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.meta["feature_names"])

    @property
    def normalizers(self) -> dict[str, dict]:
        return self.meta.get("normalizers") or {}

    def predict(self, values: np.ndarray) -> np.ndarray:
        """Scores for raw logged feature rows (NaN = missing), exactly as trained."""
        return self.booster.predict(self._dmatrix(values))

    def contributions(self, values: np.ndarray) -> np.ndarray:
        """Per-feature SHAP contributions to the margin (last column: the bias), rows summing
        to the score for ranking objectives."""
        return self.booster.predict(self._dmatrix(values), pred_contribs=True)

    def _dmatrix(self, values: np.ndarray):
        import xgboost as xgb

        x = normalize(values, self.feature_names, self.normalizers)
        x = np.nan_to_num(x, nan=self.meta["missing_as"])
        return xgb.DMatrix(x, feature_names=list(self.feature_names))

    def save(self) -> ModelArtifact:
        """Write the folder `path` (atomically; an existing artifact is never replaced)."""
        with new_folder(self.path) as tmp:
            self.booster.save_model(tmp / "model.json")
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2) + "\n")
        return self

    @classmethod
    def load(cls, path: Path) -> ModelArtifact:
        """Read a folder written by `save`; ModelError naming the file and the problem."""
        import xgboost as xgb

        meta_path, model_path = path / "meta.json", path / "model.json"
        for p in (meta_path, model_path):
            if not p.is_file():
                raise ModelError(f"{path}: not a model artifact ({p.name} is missing)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{meta_path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        for key in ("feature_set", "feature_names", "missing_as"):
            if key not in meta:
                raise ModelError(f"{meta_path}: field {key!r} is missing")
        booster = xgb.Booster()
        try:
            booster.load_model(model_path)
        except xgb.core.XGBoostError as exc:
            raise ModelError(f"{model_path}: XGBoost cannot load it ({exc})") from exc
        if booster.feature_names and tuple(booster.feature_names) != tuple(meta["feature_names"]):
            raise ModelError(f"{path}: model.json features {booster.feature_names} differ from "
                             f"meta.json {meta['feature_names']}")
        return cls(path, meta, booster)
