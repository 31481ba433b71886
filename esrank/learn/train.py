"""Training: XGBoost rankers on a logged feature table, selected by what serving does.

A model only ever reorders the served window (the BM25 top N it rescores), but a logged table
also holds judged docs the judges found elsewhere. Model selection therefore scores each
held-out fold the way serving would: the booster reorders each held-out query's window rows
(the table's first-pass ranks say which), and the ranking is evaluated against all of that
query's judgments, standard and condensed, as `esrank evaluate` does ("serving CV"). Every
split is by query, never by row.

What the model is trained on is a choice too (CANDIDATE_SETS): the window's rows only, or the
window plus the out-of-window judged docs. On a collection whose judgments were pooled from
other systems, the out-of-window docs are mostly relevant and mostly rank low on BM25, and a
model trained on them learns "low BM25 = relevant"; serving CV picks between the sets, with
the grid (eta x rounds, depth 3), by mean NDCG@10. XGBoost weights ranking groups, not rows, so
a down-weighted middle way is not offered.

Training runs a fixed number of rounds by default; with `early_stopping=N` it stops on a
grouped validation split carved out of each training part, scored on its window rows (on
Chorus's 97 queries that split is too small to be a reliable judge: it stopped after 1-2 trees
and lost to fixed rounds). A table without first-pass ranks (logged with --window 0) cannot be
served this way: it is scored on its own rows ("in-table CV"), and says so.

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
from dataclasses import asdict, dataclass, field, replace
from itertools import groupby
from pathlib import Path

import numpy as np

from esrank import __version__
from esrank.core.errors import InputError
from esrank.core.files import check_new_folder
from esrank.core.stamps import utc
from esrank.learn.artifact import MISSING_AS, ModelArtifact
from esrank.learn.normalizers import fit_normalizers, normalize
from esrank.learn.served import judged_evaluator, served_runs
from esrank.learn.table import FeatureMatrix, read_table

log = logging.getLogger(__name__)

OBJECTIVES = ("rank:ndcg", "rank:pairwise")
GRID = {"eta": (0.05, 0.1), "num_rounds": (50, 100)}
CANDIDATE_SETS = ("window", "window+judged")  # the rows a model trains on; see above
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


@dataclass(frozen=True)
class CVScore:
    """One configuration's cross-validated NDCG@10 per fold, standard and condensed, and the
    first pass's (BM25's) on the same folds; `view` is "served" or "in-table"."""

    view: str
    folds: tuple[float, ...]
    condensed: tuple[float, ...] = ()
    bm25: tuple[float, ...] = ()
    bm25_condensed: tuple[float, ...] = ()
    # served view: each held-out query's run, every fold's (for per-query comparisons)
    runs: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    def to_dict(self) -> dict:
        def stats(values: tuple[float, ...]) -> dict | None:
            return {"mean": round(float(np.mean(values)), 5),
                    "folds": [round(v, 5) for v in values]} if values else None

        return {"view": self.view, "metric": METRIC, "mean": round(self.mean, 5),
                "folds": [round(v, 5) for v in self.folds],
                "std": round(float(np.std(self.folds)), 5), "condensed": stats(self.condensed),
                "bm25": stats(self.bm25), "bm25_condensed": stats(self.bm25_condensed)}


@dataclass(frozen=True)
class TrainResult:
    artifact: Path
    params: TrainParams
    candidates: str  # the rows the model was trained on (CANDIDATE_SETS)
    cv: CVScore
    search: tuple[dict, ...]
    best_iteration: int
    seconds: float

    @property
    def cv_mean(self) -> float:
        return self.cv.mean

    def to_dict(self) -> dict:
        """The run in brief: artifact, serving-CV scores, the rows and params it chose."""
        return {"artifact": str(self.artifact), "cv": self.cv.to_dict(),
                "training_rows": self.candidates,
                "params": {"max_depth": self.params.max_depth,
                           "rounds": self.best_iteration + 1, "eta": self.params.eta,
                           "objective": self.params.objective},
                "search": list(self.search), "seconds": round(self.seconds, 1)}


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


def training_rows(matrix: FeatureMatrix, rows: np.ndarray, candidates: str) -> np.ndarray:
    """The rows of `rows` a model trains on under a candidate set."""
    if candidates not in CANDIDATE_SETS:
        raise InputError(f"candidate set {candidates!r}: expected one of "
                         f"{', '.join(CANDIDATE_SETS)}")
    if candidates == "window+judged" or matrix.ranks is None:
        return rows
    return rows[np.asarray(matrix.ranks)[rows] > 0]


def _fit(matrix: FeatureMatrix, rows: np.ndarray, params: TrainParams, device: str,
         normalizers: dict[str, dict], candidates: str = "window+judged",
         personal: Sequence[str] = (), first=None):
    """Train on the candidate rows of `rows`; with early stopping, stop on a grouped 20% of
    their queries, scored on those queries' window rows. With `personal` features, first
    without them, then more trees on them alone, on top (see `_fit_personal`)."""
    import xgboost as xgb

    if personal:
        return _fit_personal(matrix, training_rows(matrix, rows, candidates), params, device,
                             normalizers, personal, first)
    if not params.early_stopping:
        booster = xgb.train(params.xgb(device), _dmatrix(
            matrix, training_rows(matrix, rows, candidates), normalizers),
            num_boost_round=params.num_rounds)
        booster.set_attr(best_iteration=str(params.num_rounds - 1))
        return booster
    sub_qids = tuple(matrix.qids[i] for i in rows)
    inner_train, inner_valid = grouped_folds(sub_qids, 5, params.seed)[0]
    dtrain = _dmatrix(matrix, training_rows(matrix, rows[inner_train], candidates), normalizers)
    dvalid = _dmatrix(matrix, training_rows(matrix, rows[inner_valid], "window"), normalizers)
    return xgb.train(params.xgb(device), dtrain, num_boost_round=params.num_rounds,
                     evals=[(dvalid, "valid")], early_stopping_rounds=params.early_stopping,
                     verbose_eval=False)


def _fit_personal(matrix: FeatureMatrix, rows: np.ndarray, params: TrainParams, device: str,
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
        first = xgb.train(params.xgb(device), _dmatrix(matrix.blank(personal), rows,
                                                       normalizers),
                          num_boost_round=params.num_rounds)
    others = [n for n in matrix.feature_names if n not in personal]
    real = _dmatrix(matrix, rows, normalizers)
    masked = _dmatrix(matrix.blank(others), rows, normalizers)
    # a table of its own: predicting on `masked` before training from it gave another model
    # (in bench/personalisation.py the personal trees then changed no shopper's ranking)
    zero = _dmatrix(matrix.blank(others), rows, normalizers)
    zero.set_base_margin(np.zeros(zero.num_row()))
    # start each row at the first model's score on its real features: masked + margin = real
    masked.set_base_margin(first.predict(real, output_margin=True)
                           - first.predict(zero, output_margin=True))
    booster = xgb.train(params.xgb(device), masked, num_boost_round=params.num_rounds,
                        xgb_model=first)
    booster.set_attr(best_iteration=str(booster.num_boosted_rounds() - 1))
    return booster


def _score(booster, matrix: FeatureMatrix, rows: np.ndarray, normalizers: dict[str, dict]
           ) -> float:
    result = booster.eval(_dmatrix(matrix, rows, normalizers), "test",
                          iteration=booster.best_iteration)
    return float(result.split(f"test-{METRIC}:")[1].split()[0])


def _predict(booster, matrix: FeatureMatrix, rows: np.ndarray, normalizers: dict[str, dict]
             ) -> np.ndarray:
    import xgboost as xgb

    values = np.nan_to_num(normalize(matrix.values[rows], matrix.feature_names, normalizers),
                           nan=MISSING_AS)
    return booster.predict(xgb.DMatrix(values, feature_names=list(matrix.feature_names)),
                           iteration_range=(0, int(booster.best_iteration) + 1))


def cross_validate(matrix: FeatureMatrix, params: TrainParams, folds: int = 5,
                   device: str = "cpu", normalizers: dict[str, dict] | None = None,
                   candidates: str = "window", personal: Sequence[str] = (),
                   base_booster=None) -> CVScore:
    """Held-out NDCG@10 per query-grouped fold: served (each held-out query's window
    reordered by the model, evaluated on all its judgments, standard and condensed, beside
    the first pass's order), or in-table for a table without first-pass ranks."""
    normalizers = normalizers or {}
    served = matrix.ranks is not None
    out: dict[str, list[float]] = {"folds": [], "condensed": [], "bm25": [],
                                   "bm25_condensed": []}
    runs: dict[str, list[str]] = {}
    for train_rows, test_rows in grouped_folds(matrix.qids, folds, params.seed):
        booster = _fit(matrix, train_rows, params, device, normalizers, candidates, personal,
                       base_booster)
        if not served:
            out["folds"].append(_score(booster, matrix, test_rows, normalizers))
            continue
        evaluator = judged_evaluator(matrix, test_rows)
        held_out = served_runs(matrix, test_rows,
                               _predict(booster, matrix, test_rows, normalizers))
        runs.update(held_out)
        model = evaluator.evaluate(held_out).mean
        first = evaluator.evaluate(served_runs(matrix, test_rows)).mean
        for key, value in (("folds", model[METRIC]), ("condensed", model[CONDENSED]),
                           ("bm25", first[METRIC]), ("bm25_condensed", first[CONDENSED])):
            out[key].append(value)
    return CVScore("served" if served else "in-table", *(tuple(out[k]) for k in out),
                   runs=runs)


def train(matrix: FeatureMatrix, out_dir: Path, *, params: TrainParams | None = None,
          folds: int = 5, search: bool = True, device: str | None = None,
          normalizer: str | None = None, table: str | None = None,
          exclude: Sequence[str] = (), candidates: Sequence[str] = CANDIDATE_SETS,
          personal: Sequence[str] = (), base: ModelArtifact | None = None) -> TrainResult:
    """Cross-validate each candidate set (and, with `search`, the grid) by serving CV, then
    train the best on all queries and save.

    The artifact directory holds model.json (XGBoost) and meta.json: feature set, feature
    names in order, params, CV metrics per fold, search results, data hash, esrank version.
    `normalizer` ("standard" or "min_max") trains on normalized features and records the
    parameters, which the export hands to the plugin; `table` is recorded as the data's source.
    `exclude` names features the model must not use (e.g. the neural ones, for an ablation
    that deploys next to the full model): their values are blanked, so no tree splits on them.
    `personal` features (the shopper's) are learned on top of the model without them
    (`_fit_personal`): a request that lacks them is ranked as that model ranks it. With `base`
    (a model of the same feature set that does not use them), the saved model is `base`'s trees
    and the personal trees on top, so it ranks an anonymous shopper exactly as `base` does;
    cross-validation keeps `base` as the first stage too (it is fair when `base` was trained
    on other data, e.g. human judgments, and the table holds the shoppers' sessions).
    """
    started = time.monotonic()
    if len(matrix) == 0:
        raise InputError("the training table is empty")
    check_new_folder(out_dir)  # before any work
    _check_choices(matrix, exclude, personal, base, params)
    data = data_hash(matrix)
    matrix = matrix.blank(exclude)
    device = device or pick_device()
    normalizers = (base.normalizers if base is not None else
                   fit_normalizers(matrix, normalizer) if normalizer else {})
    start = params or TrainParams()
    grid = ([replace(start, eta=e, num_rounds=n) for e in GRID["eta"]
             for n in GRID["num_rounds"]] if search else [start])
    if matrix.ranks is None:  # no window to select on: every row is all there is
        candidates = ["window+judged"]
    tried = _search(matrix, grid, candidates, folds, device, normalizers, personal,
                    base.booster if base is not None else None)
    best = max(tried, key=lambda t: t["cv_mean"])  # the first of equals: window before more
    chosen: TrainParams = best["params"]
    booster = _fit(matrix, np.arange(len(matrix)), chosen, device, normalizers,
                   best["candidates"], personal, base.booster if base is not None else None)
    best_iteration = int(booster.best_iteration)
    booster = booster[: best_iteration + 1]  # the saved model is the one early stopping chose
    meta = _meta(matrix, chosen, best, tried, booster, best_iteration, device=device,
                 normalizers=normalizers, exclude=exclude, personal=personal, base=base,
                 folds=folds, table=table, data=data)
    ModelArtifact(out_dir, meta, booster).save()
    return TrainResult(out_dir, chosen, best["candidates"], best["score"],
                       tuple(_summary(t) for t in tried), best_iteration,
                       time.monotonic() - started)


def _check_choices(matrix: FeatureMatrix, exclude: Sequence[str], personal: Sequence[str],
                   base: ModelArtifact | None, params: TrainParams | None) -> None:
    """The excluded and personal features name the table's, and a base suits them."""
    unknown = [n for n in exclude if n not in matrix.feature_names]
    if unknown:
        raise InputError(f"cannot exclude feature {unknown[0]!r}: {matrix.feature_set} has "
                         f"{', '.join(matrix.feature_names)}")
    if len(set(exclude)) == len(matrix.feature_names):
        raise InputError("every feature is excluded: nothing is left to train on")
    for name in personal:
        if name not in matrix.feature_names or name in exclude:
            raise InputError(f"personal feature {name!r}: expected one of the table's "
                             f"features that is not excluded ({', '.join(matrix.feature_names)})")
    if base is not None:
        _check_base(base, matrix, personal)
    if personal and (params or TrainParams()).early_stopping:
        raise InputError("a model with personal features trains a fixed number of rounds: "
                         "drop early stopping")


def _search(matrix: FeatureMatrix, grid: Sequence[TrainParams], candidates: Sequence[str],
            folds: int, device: str, normalizers: dict, personal: Sequence[str],
            base_booster) -> list[dict]:
    """Cross-validate every candidate set with every point of the grid, in that order."""
    tried = []
    for rows in candidates:
        for candidate in grid:
            score = cross_validate(matrix, candidate, folds, device, normalizers, rows,
                                   personal, base_booster)
            tried.append({"candidates": rows, "eta": candidate.eta,
                          "num_rounds": candidate.num_rounds, "cv_mean": round(score.mean, 5),
                          "score": score, "params": candidate})
            log.info("%s eta=%g rounds=%d: %s CV %s %.4f", rows, candidate.eta,
                     candidate.num_rounds, score.view, METRIC, score.mean)
    return tried


def _meta(matrix: FeatureMatrix, chosen: TrainParams, best: dict, tried: list[dict],
          booster, best_iteration: int, *, device: str, normalizers: dict, exclude: Sequence[str],
          personal: Sequence[str], base: ModelArtifact | None, folds: int, table: str | None,
          data: str) -> dict:
    """What meta.json records of a trained model: how it was made, from what, how it scored."""
    importance = booster.get_score(importance_type="gain")
    return {
        "esrank_version": __version__,
        "feature_set": matrix.feature_set,
        "feature_set_hash": matrix.feature_set.rsplit("@", 1)[-1],
        "feature_names": list(matrix.feature_names),
        "params": asdict(chosen), "device": device,
        "missing_as": MISSING_AS,  # how NaN was trained; see the module docstring
        "normalizers": normalizers,
        "excluded_features": sorted(set(exclude)),
        # learned on top of the model without them; `params` hold for both stages
        "personal": list(personal),
        "base_model": str(base.path) if base is not None else None,
        "best_iteration": best_iteration,
        "training_rows": best["candidates"],
        "cv": {**best["score"].to_dict(), "k": folds},
        "search": [_summary(t) for t in tried],
        "importance_gain": {k: round(v, 5) for k, v in sorted(
            importance.items(), key=lambda kv: -kv[1])},
        "data": {"table": table, "rows": len(matrix), "queries": len(set(matrix.qids)),
                 "trained_rows": len(training_rows(matrix, np.arange(len(matrix)),
                                                   best["candidates"])),
                 "sha256": data, "cross_encoder": matrix.cross_encoder,
                 "encoder": matrix.encoder,
                 "recall": matrix.recall.to_dict() if matrix.recall else None},
        "trained_at": utc(),
    }


def _check_base(base: ModelArtifact, matrix: FeatureMatrix, personal: Sequence[str]) -> None:
    """A base for personal trees: the same feature set, the same nearest products among its
    candidates, no split on a personal feature."""
    if not personal:
        raise InputError("a base model only applies with personal features (--personal)")
    if base.meta.get("feature_set") != matrix.feature_set:
        raise InputError(f"base model {base.path} was trained on {base.meta.get('feature_set')}"
                         f", the table is {matrix.feature_set}")
    knn = ((base.meta.get("data") or {}).get("recall") or {}).get("knn", 0)
    if knn != (matrix.recall.knn if matrix.recall else 0):
        raise InputError(f"base model {base.path} was trained over candidates with {knn} nearest "
                         f"products, the table over {matrix.recall.knn if matrix.recall else 0}: "
                         "the personal trees would rank other candidates than their base (log "
                         "the table with esrank log --knn the base's)")
    used = set(base.booster.get_score(importance_type="weight")) & set(personal)
    if used:
        raise InputError(f"base model {base.path} splits on personal feature(s) "
                         f"{sorted(used)}: train it with --exclude them")


def _summary(tried: dict) -> dict:
    score: CVScore = tried["score"]
    return {"candidates": tried["candidates"], "eta": tried["eta"],
            "num_rounds": tried["num_rounds"], "cv_mean": tried["cv_mean"],
            "cv_condensed_mean": round(float(np.mean(score.condensed)), 5)
            if score.condensed else None, "folds": [round(v, 5) for v in score.folds]}


def data_hash(matrix: FeatureMatrix) -> str:
    """Identity of the training data: values (NaN-aware bytes), grades, qids and doc ids."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(matrix.values, dtype=np.float32).tobytes())
    h.update(json.dumps([matrix.grades, matrix.qids, matrix.doc_ids,
                         matrix.feature_names]).encode())
    return h.hexdigest()[:16]


def train_file(table: Path, out_dir: Path, *, params: TrainParams | None = None,
               folds: int = 5, search: bool = True, device: str = "auto",
               normalizer: str | None = None, exclude: Sequence[str] = (),
               candidates: str = "auto", personal: Sequence[str] = (),
               base: Path | None = None) -> TrainResult:
    """`train` on the table file `table` (an `esrank log` output, recorded as the data's
    source), in the CLI's terms: `device` "auto" picks one, `candidates` "auto" tries every
    CANDIDATE_SETS (else one of them), `base` is an artifact folder.

    >>> train_file(Path("chorus.parquet"), Path("models/v1")).cv_mean     # doctest: +SKIP
    0.61
    """
    return train(read_table(table), out_dir, params=params, folds=folds, search=search,
                 device=None if device == "auto" else device, normalizer=normalizer,
                 table=str(table.resolve()), exclude=exclude,
                 candidates=CANDIDATE_SETS if candidates == "auto" else (candidates,),
                 personal=personal, base=ModelArtifact.load(base) if base else None)
