"""Training: XGBoost rankers on a logged feature table, with query-grouped cross-validation.

Every split is by query, never by row, so no query's documents are on both sides. Training
runs a fixed number of rounds by default; with `early_stopping=N` it stops on a grouped
validation split carved out of each training part (on Chorus's 97 queries that split is too
small to be a reliable judge: it stopped after 1-2 trees and lost to fixed rounds). The
optional search tries a small grid (eta x rounds, 4 configurations, depth 3) and keeps the best
mean CV NDCG@10.

Missing features (NaN in the table) are trained as MISSING_AS, the largest float32. The LTR
plugin ignores XGBoost's learned default branch: a feature it could not compute reaches the
trees as NaN and, since a split goes "yes" only when `threshold > value`, always takes the
"no" side, which is where the largest value goes too. Trained this way the booster routes
missing values exactly as the plugin will serve them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import groupby
from pathlib import Path

import numpy as np

from esrank import __version__
from esrank.errors import InputError
from esrank.types import FeatureMatrix

log = logging.getLogger(__name__)

OBJECTIVES = ("rank:ndcg", "rank:pairwise")
GRID = {"eta": (0.05, 0.1), "num_rounds": (50, 100)}
METRIC = "ndcg@10"
MISSING_AS = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class TrainParams:
    objective: str = "rank:ndcg"
    max_depth: int = 3
    eta: float = 0.1
    min_child_weight: float = 1.0
    # bagged boosting: each round grows `parallel_trees` trees, each on a sample of rows and
    # of features per split; averaging them steadies a model trained on ~100 queries
    subsample: float = 0.7
    colsample_bynode: float = 0.7
    parallel_trees: int = 4
    num_rounds: int = 100
    early_stopping: int = 0  # 0: fixed rounds
    seed: int = 42

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective {self.objective!r}: expected one of {OBJECTIVES}")

    def xgb(self, device: str) -> dict:
        return {"objective": self.objective, "max_depth": self.max_depth, "eta": self.eta,
                "min_child_weight": self.min_child_weight, "subsample": self.subsample,
                "colsample_bynode": self.colsample_bynode,
                "num_parallel_tree": self.parallel_trees,
                "eval_metric": METRIC, "seed": self.seed, "device": device,
                "tree_method": "hist"}


@dataclass(frozen=True)
class TrainResult:
    artifact: Path
    params: TrainParams
    cv_folds: tuple[float, ...]
    search: tuple[dict, ...]
    best_iteration: int
    seconds: float

    @property
    def cv_mean(self) -> float:
        return float(np.mean(self.cv_folds))


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


def pick_device() -> str:
    """CUDA when this XGBoost build has it and a GPU is visible, else CPU."""
    import xgboost as xgb

    has_cuda = bool(xgb.build_info().get("USE_CUDA")) and shutil.which("nvidia-smi") is not None
    return "cuda" if has_cuda else "cpu"


def grouped_folds(qids: tuple[str, ...], k: int, seed: int = 42
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, test) row-index pairs where every query lands in exactly one test fold."""
    unique = list(dict.fromkeys(qids))
    if len(unique) < k:
        raise InputError(f"{len(unique)} queries cannot make {k} query-grouped folds")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[q]: i % k for i, q in enumerate(order)}
    folds = np.array([fold_of[q] for q in qids])
    return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(k)]


def _dmatrix(matrix: FeatureMatrix, rows: np.ndarray, normalizers: dict[str, dict]):
    import xgboost as xgb

    rows = np.sort(rows)  # the table is grouped by query; keep each group contiguous
    qids = [matrix.qids[i] for i in rows]
    sizes = [sum(1 for _ in g) for _, g in groupby(qids)]
    if len(sizes) != len(set(qids)):
        raise InputError("the table's rows are not grouped by query")
    values = np.nan_to_num(normalize(matrix.values[rows], matrix.feature_names, normalizers),
                           nan=MISSING_AS)
    dm = xgb.DMatrix(values, label=np.array(matrix.grades)[rows],
                     feature_names=list(matrix.feature_names))
    dm.set_group(sizes)
    return dm


def _fit(matrix: FeatureMatrix, rows: np.ndarray, params: TrainParams, device: str,
         normalizers: dict[str, dict]):
    """Train on `rows`; with early stopping, stop on a grouped 20% of their queries."""
    import xgboost as xgb

    if not params.early_stopping:
        booster = xgb.train(params.xgb(device), _dmatrix(matrix, rows, normalizers),
                            num_boost_round=params.num_rounds)
        booster.set_attr(best_iteration=str(params.num_rounds - 1))
        return booster
    sub_qids = tuple(matrix.qids[i] for i in rows)
    inner_train, inner_valid = grouped_folds(sub_qids, 5, params.seed)[0]
    dtrain = _dmatrix(matrix, rows[inner_train], normalizers)
    dvalid = _dmatrix(matrix, rows[inner_valid], normalizers)
    return xgb.train(params.xgb(device), dtrain, num_boost_round=params.num_rounds,
                     evals=[(dvalid, "valid")], early_stopping_rounds=params.early_stopping,
                     verbose_eval=False)


def _score(booster, matrix: FeatureMatrix, rows: np.ndarray, normalizers: dict[str, dict]
           ) -> float:
    result = booster.eval(_dmatrix(matrix, rows, normalizers), "test",
                          iteration=booster.best_iteration)
    return float(result.split(f"test-{METRIC}:")[1].split()[0])


def cross_validate(matrix: FeatureMatrix, params: TrainParams, folds: int = 5,
                   device: str = "cpu", normalizers: dict[str, dict] | None = None
                   ) -> list[float]:
    """Held-out NDCG@10 per query-grouped fold."""
    scores = []
    for train_rows, test_rows in grouped_folds(matrix.qids, folds, params.seed):
        booster = _fit(matrix, train_rows, params, device, normalizers or {})
        scores.append(_score(booster, matrix, test_rows, normalizers or {}))
    return scores


def train(matrix: FeatureMatrix, out_dir: Path, *, params: TrainParams | None = None,
          folds: int = 5, search: bool = True, device: str | None = None,
          normalizer: str | None = None, table: str | None = None,
          exclude: Sequence[str] = ()) -> TrainResult:
    """Cross-validate (and optionally grid-search), then train on all queries and save.

    The artifact directory holds model.json (XGBoost) and meta.json: feature set, feature
    names in order, params, CV metrics per fold, search results, data hash, esrank version.
    `normalizer` ("standard" or "min_max") trains on normalized features and records the
    parameters, which the export hands to the plugin; `table` is recorded as the data's source.
    `exclude` names features the model must not use (e.g. the neural ones, for an ablation
    that deploys next to the full model): their values are blanked, so no tree splits on them.
    """
    started = time.monotonic()
    if len(matrix) == 0:
        raise InputError("the training table is empty")
    unknown = [n for n in exclude if n not in matrix.feature_names]
    if unknown:
        raise InputError(f"cannot exclude feature {unknown[0]!r}: {matrix.feature_set} has "
                         f"{', '.join(matrix.feature_names)}")
    if len(set(exclude)) == len(matrix.feature_names):
        raise InputError("every feature is excluded: nothing is left to train on")
    data = data_hash(matrix)
    matrix = matrix.blank(exclude)
    device = device or pick_device()
    normalizers = fit_normalizers(matrix, normalizer) if normalizer else {}
    base = params or TrainParams()
    candidates = ([replace(base, eta=e, num_rounds=n) for e in GRID["eta"]
                   for n in GRID["num_rounds"]] if search else [base])
    tried = []
    for candidate in candidates:
        scores = cross_validate(matrix, candidate, folds, device, normalizers)
        tried.append({"eta": candidate.eta, "num_rounds": candidate.num_rounds,
                      "cv_mean": round(float(np.mean(scores)), 5), "folds": scores,
                      "params": candidate})
        log.info("eta=%g rounds=%d: CV %s %.4f", candidate.eta, candidate.num_rounds,
                 METRIC, np.mean(scores))
    best = max(tried, key=lambda t: t["cv_mean"])
    chosen: TrainParams = best["params"]
    booster = _fit(matrix, np.arange(len(matrix)), chosen, device, normalizers)
    best_iteration = int(booster.best_iteration)
    booster = booster[: best_iteration + 1]  # the saved model is the one early stopping chose
    out_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(out_dir / "model.json")
    importance = booster.get_score(importance_type="gain")
    meta = {
        "esrank_version": __version__,
        "feature_set": matrix.feature_set,
        "feature_set_hash": matrix.feature_set.rsplit("@", 1)[-1],
        "feature_names": list(matrix.feature_names),
        "params": asdict(chosen), "device": device,
        "missing_as": MISSING_AS,  # how NaN was trained; see the module docstring
        "normalizers": normalizers,
        "excluded_features": sorted(set(exclude)),
        "best_iteration": best_iteration,
        "cv": {"metric": METRIC, "folds": best["folds"], "mean": best["cv_mean"],
               "std": round(float(np.std(best["folds"])), 5), "k": folds},
        "search": [{k: v for k, v in t.items() if k != "params"} for t in tried],
        "importance_gain": {k: round(v, 5) for k, v in sorted(
            importance.items(), key=lambda kv: -kv[1])},
        "data": {"table": table, "rows": len(matrix), "queries": len(set(matrix.qids)),
                 "sha256": data},
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TrainResult(out_dir, chosen, tuple(best["folds"]),
                       tuple({k: v for k, v in t.items() if k != "params"} for t in tried),
                       best_iteration, time.monotonic() - started)


def data_hash(matrix: FeatureMatrix) -> str:
    """Identity of the training data: values (NaN-aware bytes), grades, qids and doc ids."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(matrix.values, dtype=np.float32).tobytes())
    h.update(json.dumps([matrix.grades, matrix.qids, matrix.doc_ids,
                         matrix.feature_names]).encode())
    return h.hexdigest()[:16]
