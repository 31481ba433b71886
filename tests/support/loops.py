"""The learning loop's chain on a real engine, built once for the engine tests that read it:
a feature set pushed under a private name, judgments logged through the plugin, a model
trained and (optionally) deployed, handed back as one record."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from esrank.catalogue.recall import Recall
from esrank.core.feature_set import FeatureSet
from esrank.deploy import upload
from esrank.features.params import query_params
from esrank.features.parser import load_feature_set
from esrank.judgments.lists import JudgmentList
from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.table import FeatureMatrix, write_table
from esrank.learn.train import train

WINDOW = 20  # the BM25 first pass every chain logs


@dataclass(frozen=True)
class Loop:
    """One run of the chain: the alias it logged on, its feature set (a private name: the
    models and the registry entry are this chain's alone), the judgments, the logged table
    (in memory and the parquet file it was saved to), the params builder, the trained model
    and, when the chain deployed it, the deploy's report."""

    alias: str
    feature_set: FeatureSet
    judged: JudgmentList
    table: FeatureMatrix
    table_path: Path
    params_for: Callable[[list[str]], list[dict]]
    artifact: ModelArtifact | None = None
    deployed: upload.DeployReport | None = None

    @property
    def queries(self) -> dict[str, list[str]]:
        """Query -> its logged docs: what the parity gate replays."""
        return self.table.docs_by_query()

    def trained(self, out: Path, **kwargs) -> Loop:
        """The record with a model trained on its table, saved to `out` (esrank.learn.train.train's
        keywords; no grid search)."""
        train(self.table, out, search=False, table=str(self.table_path), **kwargs)
        return dataclasses.replace(self, artifact=ModelArtifact.load(out), deployed=None)

    def deploy(self, engine, artifact: ModelArtifact | None = None,
               **kwargs) -> upload.DeployReport:
        """upload.deploy of `artifact` (by default the record's model) on the record's
        alias, gated on its logged queries (upload.deploy's keywords)."""
        return upload.deploy(engine, self.alias, artifact or self.artifact, self.feature_set,
                             self.queries, self.params_for, **kwargs)

    def with_deploy(self, engine, **kwargs) -> Loop:
        """The record with its model deployed (upload.deploy's keywords)."""
        return dataclasses.replace(self, deployed=self.deploy(engine, **kwargs))


def private_feature_set(path: Path, prefix: str) -> FeatureSet:
    """The feature set of the file `path` renamed `prefix` + 8 random hex digits."""
    return dataclasses.replace(load_feature_set(path), name=f"{prefix}{uuid.uuid4().hex[:8]}")


def log_loop(engine, encoder, alias: str, feature_set: FeatureSet, judged: JudgmentList,
             out: Path, *, cross_encoder=None, recall: Recall | None = None,
             **kwargs) -> Loop:
    """Push `feature_set`, log `judged` on `alias` over `recall` (default: the BM25 window;
    log_judgments' keywords, e.g. `shoppers`) and save the table in `out`: a record without a
    model yet."""
    engine.ensure_store()
    engine.put_feature_set(feature_set)
    report = log_judgments(engine, alias, feature_set, judged, encoder,
                           recall=recall or Recall(WINDOW), progress=False,
                           cross_encoder=cross_encoder, **kwargs)
    write_table(report.matrix, out / "table.parquet")
    return Loop(alias, feature_set, judged, report.matrix, out / "table.parquet",
                query_params(feature_set.params, encoder, cross_encoder=cross_encoder))
