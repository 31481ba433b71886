"""Trained artifact -> LTR plugin model definition, and the parity gate that proves it.

The plugin's XGBoost parser differs from XGBoost itself in ways that silently change scores:

- it reads trees only: `base_score` is ignored, so esrank folds it into the first tree's
  leaves;
- thresholds and leaves are parsed as float32: esrank writes XGBoost's own float32 values,
  read from the model's JSON, never the rounded text dump;
- the `missing` branch is ignored and an uncomputed feature (NaN) always goes "no": training
  used MISSING_AS (see train.py), which routes the same way;
- only a few objectives are known to it; others are refused here, not at query time.

`check_parity` replays logged queries through the plugin (the same rescore the search path
uses, with `ltr_log` in the same request) and through the local booster on the feature values
the plugin logged, and reports the largest score difference.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from esrank.core.batches import batched
from esrank.core.errors import ModelError
from esrank.core.feature_set import FeatureSet, needs_cross_encoder
from esrank.engine import Engine, Ranked, Rescore
from esrank.engine.base import parse_ltr_log
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import doc_texts

log = logging.getLogger(__name__)

# XGBoost objective -> the name the plugin knows (it predates reg:squarederror)
PLUGIN_OBJECTIVES = {
    "rank:ndcg": "rank:ndcg", "rank:pairwise": "rank:pairwise", "rank:map": "rank:map",
    "binary:logitraw": "binary:logitraw", "reg:squarederror": "reg:linear",
    "reg:linear": "reg:linear", "binary:logistic": "binary:logistic",
    "reg:logistic": "reg:logistic",
}
MODEL_TYPE = "model/xgboost+json"
TOLERANCE = 1e-4


def check_matches(artifact: ModelArtifact, feature_set: FeatureSet) -> None:
    """Refuse a model whose features (names, order or feature-set version) are not the set's."""
    if artifact.feature_names != feature_set.feature_names:
        trained, served = artifact.feature_names, feature_set.feature_names
        extra = [n for n in trained if n not in served]
        absent = [n for n in served if n not in trained]
        detail = (f"unknown to the set: {extra}; " if extra else "") + (
            f"not in the model: {absent}" if absent else "same names, different order")
        raise ModelError(f"model {artifact.path} was trained on features {list(trained)}, "
                         f"feature set {feature_set.engine_name} has {list(served)} ({detail})")
    if artifact.meta["feature_set"] != feature_set.engine_name:
        raise ModelError(f"model {artifact.path} was trained on {artifact.meta['feature_set']}, "
                         f"not {feature_set.engine_name}: re-log and retrain on this version")


def _trees(booster) -> tuple[list[dict], float, str]:
    """The booster's trees as plugin split objects, its base score (margin) and objective."""
    raw = json.loads(booster.save_raw("json"))
    learner = raw["learner"]
    names = learner["feature_names"]
    objective = learner["objective"]["name"]
    base_score = _base_score(learner["learner_model_param"]["base_score"])
    trees = [_tree(t, names, 0, 0) for t in learner["gradient_booster"]["model"]["trees"]]
    return trees, base_score, objective


def _base_score(text: str) -> float:
    """XGBoost 3 writes the intercept as a vector ("[5E-1]"); esrank models have one target."""
    values = [float(v) for v in text.strip("[]").split(",") if v.strip()]
    if len(values) != 1:
        raise ModelError(f"base_score {text!r}: expected one value (multi-target models are "
                         "not served by the plugin)")
    return values[0]


def _tree(tree: dict, names: list[str], i: int, depth: int) -> dict:
    """Node `i` of one XGBoost JSON tree (parallel arrays) as a nested plugin split object.

    The plugin has no default direction: "missing" is written for completeness only.
    """
    left, right = tree["left_children"][i], tree["right_children"][i]
    value = float(np.float32(tree["split_conditions"][i]))  # a leaf's value lives here too
    if left == -1:
        return {"nodeid": i, "leaf": value}
    return {"nodeid": i, "depth": depth, "split": names[tree["split_indices"][i]],
            "split_condition": value, "yes": left, "no": right, "missing": right,
            "children": [_tree(tree, names, left, depth + 1),
                         _tree(tree, names, right, depth + 1)]}


def _margin_base(objective: str, base_score: float) -> float:
    """base_score in margin space (logistic objectives store it as a probability)."""
    if objective in ("binary:logistic", "reg:logistic", "binary:logitraw"):
        return math.log(base_score / (1 - base_score))
    return base_score


def _add_to_leaves(node: dict, delta: float) -> None:
    if "leaf" in node:
        node["leaf"] = float(np.float32(node["leaf"] + delta))
    else:
        for child in node["children"]:
            _add_to_leaves(child, delta)


def plugin_model(artifact: ModelArtifact, feature_set: FeatureSet) -> dict:
    """The `model` object for the plugin's create-model request.

    >>> plugin_model(ModelArtifact.load(Path("models/chorus")), fs)["type"]  # doctest: +SKIP
    'model/xgboost+json'
    """
    check_matches(artifact, feature_set)
    trees, base_score, objective = _trees(artifact.booster)
    if objective not in PLUGIN_OBJECTIVES:
        raise ModelError(f"objective {objective!r} is not served by the LTR plugin "
                         f"(supported: {sorted(PLUGIN_OBJECTIVES)})")
    unknown = {n["split"] for t in trees for n in _splits(t)} - set(feature_set.feature_names)
    if unknown:
        raise ModelError(f"the model splits on {sorted(unknown)}, which feature set "
                         f"{feature_set.engine_name} does not define")
    margin = _margin_base(objective, base_score)
    if margin:
        _add_to_leaves(trees[0], margin)  # the plugin ignores base_score
    definition = {"objective": PLUGIN_OBJECTIVES[objective], "splits": trees}
    model: dict = {"type": MODEL_TYPE, "definition": json.dumps(definition)}
    if artifact.normalizers:
        model["feature_normalizers"] = artifact.normalizers
    return model


def _splits(tree: dict):
    if "leaf" not in tree:
        yield tree
        for child in tree["children"]:
            yield from _splits(child)


@dataclass
class ParityRow:
    query: str
    doc_id: str
    plugin: float
    local: float
    features: dict[str, float]

    @property
    def delta(self) -> float:
        return abs(self.plugin - self.local)


@dataclass
class ParityReport:
    model: str
    queries: int
    docs: int
    max_delta: float
    tolerance: float
    worst: list[ParityRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.docs > 0 and self.max_delta <= self.tolerance

    def to_dict(self) -> dict:
        return {"model": self.model, "queries": self.queries, "docs": self.docs,
                "max_abs_delta": self.max_delta, "tolerance": self.tolerance,
                "passed": self.passed,
                "worst": [{"query": r.query, "doc_id": r.doc_id, "plugin": r.plugin,
                           "local": r.local, "delta": r.delta, "features": r.features}
                          for r in self.worst]}


def parity_request(model: str, feature_set: FeatureSet, params: dict, doc_ids: Sequence[str]
                   ) -> Ranked:
    """Score exactly `doc_ids` with the model through a rescore (as search does) and log the
    feature values the model saw, in the same request."""
    return Ranked(size=len(doc_ids), ids=tuple(doc_ids),
                  rescore=Rescore(feature_set.engine_name, params, model=model,
                                  window=len(doc_ids), log=True,
                                  active_features=feature_set.active_features(params)))


def check_parity(engine: Engine, index: str, model: str, artifact: ModelArtifact,
                 feature_set: FeatureSet, queries: dict[str, list[str]],
                 params_for: Callable[[list[str]], list[dict]], *,
                 shoppers: Sequence[dict] = (), tolerance: float = TOLERANCE, batch: int = 16,
                 keep_worst: int = 5) -> ParityReport:
    """Replay `queries` (query text -> doc ids) through the plugin and the local booster:
    each anonymously and, with `shoppers` (shopper params), once more with one of them
    (round robin), so the personal features are checked too. A cross-encoder param is
    computed over each query's docs, as logging computed it."""
    rows: list[ParityRow] = []
    names = feature_set.feature_names
    cases = [(q, docs, {}) for q, docs in queries.items()]
    cases += [(q, docs, shoppers[i % len(shoppers)])
              for i, (q, docs) in enumerate(queries.items())] if shoppers else []
    scored = needs_cross_encoder(feature_set.params)
    for chunk in batched(cases, batch):
        texts = [q for q, _, _ in chunk]
        params = (params_for(texts, doc_texts(engine, index, [d for _, d, _ in chunk]))
                  if scored else params_for(texts))
        requests = [parity_request(model, feature_set, {**p, **shopper}, docs)
                    for (_, docs, shopper), p in zip(chunk, params, strict=True)]
        for (query, _, _), response in zip(chunk, engine.ranked(index, requests),
                                           strict=True):
            hits = response["hits"]["hits"]
            if not hits:
                continue
            logged = np.array([parse_ltr_log(h, names) for h in hits], dtype=np.float32)
            local = artifact.predict(logged)
            for hit, values, score in zip(hits, logged, local, strict=True):
                rows.append(ParityRow(query, hit["_id"], float(hit["_score"]), float(score),
                                      {n: float(v) for n, v in zip(names, values, strict=True)}))
    rows.sort(key=lambda r: -r.delta)
    max_delta = rows[0].delta if rows else math.inf
    return ParityReport(model, len(queries), len(rows), max_delta, tolerance, rows[:keep_worst])
