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

How much search a table gets (folds, bagged trees, successive halving) grows with its size:
esrank.learn.search. One fit and the missing-value convention: esrank.learn.fit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from esrank import __version__
from esrank.core.errors import InputError
from esrank.core.files import check_new_folder
from esrank.core.stamps import utc
from esrank.learn.artifact import MISSING_AS, ModelArtifact
from esrank.learn.fit import (
    CANDIDATE_SETS,
    TrainParams,
    grouped_folds,
    pick_device,
    training_rows,
)
from esrank.learn.normalizers import fit_normalizers
from esrank.learn.reference import Reference, reference_of
from esrank.learn.search import CVScore, LocalData, Plan, plan_for
from esrank.learn.search import search as search_fits
from esrank.learn.table import FeatureMatrix, read_table

log = logging.getLogger(__name__)

__all__ = ["CANDIDATE_SETS", "CVScore", "TrainParams", "TrainResult", "cross_validate",
           "grouped_folds", "train", "train_file"]

GRID = {"eta": (0.05, 0.1), "num_rounds": (50, 100)}


@dataclass(frozen=True)
class TrainResult:
    artifact: Path
    params: TrainParams
    candidates: str  # the rows the model was trained on (CANDIDATE_SETS)
    cv: CVScore
    search: tuple[dict, ...]
    best_iteration: int
    seconds: float
    plan: Plan | None = None
    timing: dict | None = None  # seconds: reading, each fit, scoring, the final fit

    @property
    def cv_mean(self) -> float:
        return self.cv.mean

    def to_dict(self) -> dict:
        """The run in brief: artifact, serving-CV scores, the rows and params it chose, the
        search plan and where the time went."""
        return {"artifact": str(self.artifact), "cv": self.cv.to_dict(),
                "training_rows": self.candidates,
                "params": {"max_depth": self.params.max_depth,
                           "rounds": self.best_iteration + 1, "eta": self.params.eta,
                           "objective": self.params.objective,
                           "parallel_trees": self.params.parallel_trees},
                "plan": self.plan.to_dict() if self.plan else None, "timing": self.timing,
                "search": list(self.search), "seconds": round(self.seconds, 1)}


def cross_validate(matrix: FeatureMatrix, params: TrainParams, folds: int = 5,
                   device: str = "cpu", normalizers: dict[str, dict] | None = None,
                   candidates: str = "window", personal: Sequence[str] = (),
                   base_booster=None) -> CVScore:
    """Held-out NDCG@10 per query-grouped fold: served (each held-out query's window
    reordered by the model, evaluated on all its judgments, standard and condensed, beside
    the first pass's order), or in-table for a table without first-pass ranks."""
    data = LocalData(matrix, folds, params.seed, device, normalizers or {}, personal,
                     base_booster)
    plan = Plan(len(set(matrix.qids)), folds, folds, params.parallel_trees, (1.0,))
    return search_fits(data, [params], [candidates], plan)[0]["score"]


def progress_bar(total: int, enabled: bool):
    """The tqdm bar `esrank train` shows over its fits (the final one included)."""
    return tqdm(total=total, desc="training", unit="fit", disable=not enabled)


def train(matrix: FeatureMatrix, out_dir: Path, *, params: TrainParams | None = None,
          folds: int | None = None, search: bool = True, device: str | None = None,
          normalizer: str | None = None, table: str | None = None,
          exclude: Sequence[str] = (), candidates: Sequence[str] = CANDIDATE_SETS,
          personal: Sequence[str] = (), base: ModelArtifact | None = None,
          parallel_trees: int | None = None, progress: bool = False,
          read_seconds: float = 0.0) -> TrainResult:
    """Cross-validate each candidate set (and, with `search`, the grid) by serving CV,
    then train the best on all queries and save.

    The artifact directory holds model.json (XGBoost) and meta.json: feature set, feature
    names in order, params, CV metrics per fold, search results and plan, data hash, esrank
    version. `folds` and `parallel_trees` (None: by the table's size, `plan_for`) set the
    search. `normalizer` ("standard" or "min_max") trains on normalized features and records
    the parameters, which the export hands to the plugin; `table` is recorded as the data's
    source. `exclude` names features the model must not use (e.g. the neural ones, for an
    ablation that deploys next to the full model): their values are blanked, so no tree splits
    on them. `personal` features (the shopper's) are learned on top of the model without them
    (esrank.learn.fit.fit_personal): a request that lacks them is ranked as that model ranks
    it. With `base` (a model of the same feature set that does not use them), the saved model
    is `base`'s trees and the personal trees on top, so it ranks an anonymous shopper exactly
    as `base` does; cross-validation keeps `base` as the first stage too.
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
    plan = plan_for(len(set(matrix.qids)), folds, parallel_trees)
    start = replace(params or TrainParams(), parallel_trees=plan.parallel_trees)
    if matrix.ranks is None:  # no window to select on: every row is all there is
        candidates = ["window+judged"]
    first = base.booster if base is not None else None
    local = LocalData(matrix, plan.folds, start.seed, device, normalizers, personal, first)
    tried, chosen, best, final = select_and_fit(local, grid_of(start, search), candidates,
                                                plan, progress)
    best_iteration = int(final["booster"].best_iteration)
    booster = final["booster"][: best_iteration + 1]  # the model early stopping chose
    timing = timing_of(tried, final["seconds"], read_seconds)
    meta = _meta(matrix.feature_set, matrix.feature_names, chosen, best, tried, booster,
                 best_iteration, device=device, normalizers=normalizers, exclude=exclude,
                 personal=personal, base=base, plan=plan, timing=timing,
                 data=table_data(matrix, table, data, best["candidates"]))
    artifact = ModelArtifact(out_dir, meta, booster)
    meta["reference"] = reference_bins(matrix, artifact, exclude).to_dict()
    artifact.save()
    return TrainResult(out_dir, chosen, best["candidates"], best["score"],
                       tuple(_summary(t) for t in tried), best_iteration,
                       time.monotonic() - started + read_seconds, plan, timing)


def reference_bins(matrix: FeatureMatrix, artifact: ModelArtifact, exclude: Sequence[str] = ()
                   ) -> Reference:
    """The reference bins (esrank.learn.reference) of `matrix` as `artifact` serves it: each
    query's top 10 candidates by the model's score; excluded features are left out."""
    return reference_of(matrix.values, matrix.feature_names, matrix.qids, matrix.ranks,
                        artifact.predict(matrix.values), skip=exclude)


def grid_of(start: TrainParams, search_grid: bool) -> list[TrainParams]:
    """The grid's points (eta x rounds), or `start` alone."""
    return ([replace(start, eta=e, num_rounds=n) for e in GRID["eta"]
             for n in GRID["num_rounds"]] if search_grid else [start])


def select_and_fit(data, grid: Sequence[TrainParams], candidates: Sequence[str], plan: Plan,
                   progress: bool) -> tuple[list[dict], TrainParams, dict, dict]:
    """Search (`esrank.learn.search`), then fit the best on every query: (the search's
    entries, the chosen params, its entry, {"booster", "seconds"} of the final fit)."""
    fits = len(candidates) * len({replace(p, num_rounds=0) for p in grid})
    per_rung = [halved(fits, rung) for rung in range(len(plan.rungs))]
    with progress_bar(sum(per_rung) * plan.folds_evaluated + 1, progress) as bar:
        tried = search_fits(data, grid, candidates, plan, bar)
        last = len(plan.rungs) - 1
        best = max((t for t in tried if t["rung"] == last), key=lambda t: t["cv_mean"])
        chosen: TrainParams = best["params"]  # the first of equals: window before more
        bar.set_postfix_str(f"final fit: {best['candidates']} eta={chosen.eta} "
                            f"rounds={chosen.num_rounds}")
        fitted = time.monotonic()
        booster = data.fit(None, 1.0, chosen, best["candidates"])
        seconds = time.monotonic() - fitted
        bar.update()
    log.info("final fit in %.1fs", seconds)
    return tried, chosen, best, {"booster": booster, "seconds": seconds}


def halved(n: int, times: int) -> int:
    """n halved (rounding up) `times` times: how many fits a rung of successive halving has."""
    for _ in range(times):
        n = -(-n // 2)
    return n


def timing_of(tried: list[dict], final_seconds: float, read_seconds: float) -> dict:
    """Where a run's time went: each search fit's seconds (per fold, summed), the final fit."""
    fits = {(t["candidates"], t["eta"], t["rung"]): t["fit_seconds"] for t in tried}
    return {"read": round(read_seconds, 2), "search_fits": len(fits),
            "search_fit_seconds": round(sum(fits.values()), 2),
            "final_fit": round(final_seconds, 2)}


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


def _meta(feature_set: str, feature_names: Sequence[str], chosen: TrainParams, best: dict,
          tried: list[dict], booster, best_iteration: int, *, device: str, normalizers: dict,
          exclude: Sequence[str], personal: Sequence[str], base: ModelArtifact | None,
          plan: Plan, timing: dict, data: dict) -> dict:
    """What meta.json records of a trained model: how it was made, from what, how it scored."""
    importance = booster.get_score(importance_type="gain")
    return {
        "esrank_version": __version__,
        "feature_set": feature_set,
        "feature_set_hash": feature_set.rsplit("@", 1)[-1],
        "feature_names": list(feature_names),
        "params": asdict(chosen), "device": device,
        "missing_as": MISSING_AS,  # how NaN was trained; see esrank.learn.fit
        "normalizers": normalizers,
        "excluded_features": sorted(set(exclude)),
        # learned on top of the model without them; `params` hold for both stages
        "personal": list(personal),
        "base_model": str(base.path) if base is not None else None,
        "best_iteration": best_iteration,
        "training_rows": best["candidates"],
        "cv": {**best["score"].to_dict(), "k": plan.folds},
        "plan": plan.to_dict(), "timing": timing,
        "search": [_summary(t) for t in tried],
        "importance_gain": {k: round(v, 5) for k, v in sorted(
            importance.items(), key=lambda kv: -kv[1])},
        "data": data,
        "trained_at": utc(),
    }


def table_data(matrix: FeatureMatrix, table: str | None, sha256: str, candidates: str
               ) -> dict:
    """meta.json's "data": the table a model was trained on."""
    return {"table": table, "rows": len(matrix), "queries": len(set(matrix.qids)),
            "trained_rows": len(training_rows(matrix, np.arange(len(matrix)), candidates)),
            "sha256": sha256, "cross_encoder": matrix.cross_encoder, "encoder": matrix.encoder,
            "recall": matrix.recall.to_dict() if matrix.recall else None}


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
            if score.condensed else None, "folds": [round(v, 5) for v in score.folds],
            "rung": tried["rung"], "share": tried["share"],
            "fit_seconds": tried["fit_seconds"]}


def data_hash(matrix: FeatureMatrix) -> str:
    """Identity of the training data: values (NaN-aware bytes), grades, qids and doc ids."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(matrix.values, dtype=np.float32).tobytes())
    h.update(json.dumps([matrix.grades, matrix.qids, matrix.doc_ids,
                         matrix.feature_names]).encode())
    return h.hexdigest()[:16]


def train_file(table: Path, out_dir: Path, *, params: TrainParams | None = None,
               folds: int | None = None, search: bool = True, device: str = "auto",
               normalizer: str | None = None, exclude: Sequence[str] = (),
               candidates: str = "auto", personal: Sequence[str] = (),
               base: Path | None = None, parallel_trees: int | None = None,
               progress: bool = False) -> TrainResult:
    """`train` on the table `table` (an `esrank log` output: a file or a dataset folder,
    recorded as the data's source), in the CLI's terms: `device` "auto" picks one,
    `candidates` "auto" tries every CANDIDATE_SETS (else one of them), `base` is an artifact
    folder.

    >>> train_file(Path("chorus.parquet"), Path("models/v1")).cv_mean     # doctest: +SKIP
    0.61
    """
    started = time.monotonic()
    matrix = read_table(table)
    return train(matrix, out_dir, params=params, folds=folds, search=search,
                 device=None if device == "auto" else device, normalizer=normalizer,
                 table=str(table.resolve()), exclude=exclude,
                 candidates=CANDIDATE_SETS if candidates == "auto" else (candidates,),
                 personal=personal, base=ModelArtifact.load(base) if base else None,
                 parallel_trees=parallel_trees, progress=progress,
                 read_seconds=time.monotonic() - started)
