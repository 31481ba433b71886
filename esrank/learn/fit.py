"""One XGBoost fit on rows of a training table: the parameters, the query-grouped splits, the
DMatrix the table becomes, and the fit itself (esrank.learn.train selects among fits).

Missing features (NaN in the table) are trained as MISSING_AS, the largest float32. The LTR
plugin ignores XGBoost's learned default branch: a feature it could not compute reaches the
trees as NaN and, since a split goes "yes" only when `threshold > value`, always takes the
"no" side, which is where the largest value goes too. Trained this way the booster routes
missing values exactly as the plugin will serve them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from esrank.core.errors import InputError
from esrank.learn.artifact import MISSING_AS
from esrank.learn.normalizers import normalize
from esrank.learn.table import FeatureMatrix

log = logging.getLogger(__name__)

OBJECTIVES = ("rank:ndcg", "rank:pairwise")
CANDIDATE_SETS = ("window", "window+judged")  # the rows a model trains on (esrank.learn.train)
METRIC = "ndcg@10"
CONDENSED = "ndcg@10_condensed"


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


def pick_device() -> str:
    """CUDA when this XGBoost build has it and a GPU is visible, else CPU."""
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        why = "this XGBoost build has no CUDA"
    elif shutil.which("nvidia-smi") is None:
        why = "no NVIDIA GPU (nvidia-smi not found)"
    else:
        log.info("XGBoost trains on CUDA")
        return "cuda"
    log.info("XGBoost trains on the CPU: %s", why)
    return "cpu"


def query_folds(queries: Sequence[str], k: int, seed: int = 42) -> dict[str, int]:
    """Each of the distinct `queries` (in table order) -> its fold, 0..k-1, at random."""
    if len(queries) < k:
        raise InputError(f"{len(queries)} queries cannot make {k} query-grouped folds")
    order = np.random.default_rng(seed).permutation(len(queries))
    return {queries[q]: i % k for i, q in enumerate(order)}


def query_shares(queries: Sequence[str], seed: int = 42) -> dict[str, float]:
    """Each distinct query -> a place in [0, 1), at random: the queries below `s` are a share
    `s` of them (the subsets successive halving trains on)."""
    order = np.random.default_rng(seed + 1).permutation(len(queries))
    return {queries[q]: i / len(queries) for i, q in enumerate(order)}


def grouped_folds(qids: tuple[str, ...], k: int, seed: int = 42
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, test) row-index pairs where every query lands in exactly one test fold."""
    fold_of = query_folds(list(dict.fromkeys(qids)), k, seed)
    folds = np.array([fold_of[q] for q in qids])
    return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(k)]


def dmatrix(matrix: FeatureMatrix, rows: np.ndarray, normalizers: dict[str, dict]):
    """The rows (grouped by query, in table order) as XGBoost trains on them."""
    import xgboost as xgb

    rows = np.sort(rows)  # the table is grouped by query; keep each group contiguous
    qids = [matrix.qids[i] for i in rows]
    sizes = [sum(1 for _ in g) for _, g in groupby(qids)]
    if len(sizes) != len(set(qids)):
        raise InputError("the table's rows are not grouped by query")
    dm = xgb.DMatrix(served_values(matrix.values[rows], matrix.feature_names, normalizers),
                     label=np.asarray(matrix.grades)[rows],
                     feature_names=list(matrix.feature_names))
    dm.set_group(sizes)
    return dm


def served_values(values: np.ndarray, names: Sequence[str], normalizers: dict[str, dict]
                  ) -> np.ndarray:
    """Feature rows as the plugin serves them: normalized, missing as MISSING_AS."""
    return np.nan_to_num(normalize(values, names, normalizers), nan=MISSING_AS)


def training_rows(matrix: FeatureMatrix, rows: np.ndarray, candidates: str) -> np.ndarray:
    """The rows of `rows` a model trains on under a candidate set."""
    if candidates not in CANDIDATE_SETS:
        raise InputError(f"candidate set {candidates!r}: expected one of "
                         f"{', '.join(CANDIDATE_SETS)}")
    if candidates == "window+judged" or matrix.ranks is None:
        return rows
    return rows[np.asarray(matrix.ranks)[rows] > 0]


def fit(matrix: FeatureMatrix, rows: np.ndarray, params: TrainParams, device: str,
        normalizers: dict[str, dict], candidates: str = "window+judged",
        personal: Sequence[str] = (), first=None):
    """Train on the candidate rows of `rows`; with early stopping, stop on a grouped 20% of
    their queries, scored on those queries' window rows. With `personal` features, first
    without them, then more trees on them alone, on top (see `fit_personal`)."""
    import xgboost as xgb

    if personal:
        return fit_personal(matrix, training_rows(matrix, rows, candidates), params, device,
                            normalizers, personal, first)
    if not params.early_stopping:
        booster = xgb.train(params.xgb(device), dmatrix(
            matrix, training_rows(matrix, rows, candidates), normalizers),
            num_boost_round=params.num_rounds)
        booster.set_attr(best_iteration=str(params.num_rounds - 1))
        return booster
    sub_qids = tuple(matrix.qids[i] for i in rows)
    inner_train, inner_valid = grouped_folds(sub_qids, 5, params.seed)[0]
    dtrain = dmatrix(matrix, training_rows(matrix, rows[inner_train], candidates), normalizers)
    dvalid = dmatrix(matrix, training_rows(matrix, rows[inner_valid], "window"), normalizers)
    return xgb.train(params.xgb(device), dtrain, num_boost_round=params.num_rounds,
                     evals=[(dvalid, "valid")], early_stopping_rounds=params.early_stopping,
                     verbose_eval=False)


def fit_personal(matrix: FeatureMatrix, rows: np.ndarray, params: TrainParams, device: str,
                 normalizers: dict[str, dict], personal: Sequence[str], first=None):
    """The non-personal model (every feature but `personal`; `first` when given, else
    trained here), then `params.num_rounds` more rounds whose trees see only the `personal`
    features, fit on top of its scores.

    The second stage's table blanks every other feature (a constant column cannot be split),
    and its base margin makes each row start from the first model's score on the real row.
    For a request without the personal features (missing: every split goes "no") each added
    tree gives every document the same value, so the ranking is the first model's.
    """
    import xgboost as xgb

    if first is None:
        first = xgb.train(params.xgb(device), dmatrix(matrix.blank(personal), rows,
                                                      normalizers),
                          num_boost_round=params.num_rounds)
    others = [n for n in matrix.feature_names if n not in personal]
    real = dmatrix(matrix, rows, normalizers)
    masked = dmatrix(matrix.blank(others), rows, normalizers)
    # a table of its own: predicting on `masked` before training from it gave another model
    # (in bench/personalisation.py the personal trees then changed no shopper's ranking)
    zero = dmatrix(matrix.blank(others), rows, normalizers)
    zero.set_base_margin(np.zeros(zero.num_row()))
    # start each row at the first model's score on its real features: masked + margin = real
    masked.set_base_margin(first.predict(real, output_margin=True)
                           - first.predict(zero, output_margin=True))
    booster = xgb.train(params.xgb(device), masked, num_boost_round=params.num_rounds,
                        xgb_model=first)
    booster.set_attr(best_iteration=str(booster.num_boosted_rounds() - 1))
    return booster


def in_table_score(booster, matrix: FeatureMatrix, rows: np.ndarray,
                   normalizers: dict[str, dict], rounds: int) -> float:
    """XGBoost's own NDCG@10 of the first `rounds` rounds on `rows` (a table without a
    window: its rows are all there is)."""
    if rounds < booster.num_boosted_rounds():
        booster = booster[:rounds]
    result = booster.eval(dmatrix(matrix, rows, normalizers), "test")
    return float(result.split(f"test-{METRIC}:")[1].split()[0])


def predict(booster, matrix: FeatureMatrix, rows: np.ndarray, normalizers: dict[str, dict],
            rounds: int) -> np.ndarray:
    """Scores of the first `rounds` rounds for `rows`."""
    import xgboost as xgb

    values = served_values(matrix.values[rows], matrix.feature_names, normalizers)
    return booster.predict(xgb.DMatrix(values, feature_names=list(matrix.feature_names)),
                           iteration_range=(0, rounds))
