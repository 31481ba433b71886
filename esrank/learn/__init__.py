"""Learning: features logged from the engine into a training table, models trained on it.

- feature_log: judged (and first-pass) docs -> feature values through the plugin
- table: FeatureMatrix and its Parquet/RankLib files
- train: query-grouped CV, the grid, the final XGBoost LambdaMART fit
- served: what serving shows for a table's queries (window runs) and the judged evaluator
- normalizers: per-feature normalization baked into the model
- artifact: a model folder with its meta.json
"""

from __future__ import annotations

from esrank.learn.artifact import ModelArtifact
from esrank.learn.feature_log import log_judgments
from esrank.learn.table import FeatureMatrix, read_table, write_table
from esrank.learn.train import TrainParams, train

__all__ = [
    "FeatureMatrix", "ModelArtifact", "TrainParams", "log_judgments", "read_table", "train",
    "write_table",
]
