"""Feature sets: the files users edit, checked, versioned and synced with the LTR plugin, and
the query-time params their features read.

- parser: feature-set files -> FeatureSet records (file:line errors)
- templates: each template language's check (nodes: the YAML reads that name the line)
- sync: push feature sets to the engine, diff a local set against the engine's versions
- params: the sltr params a request gets (query text, vectors, cross-encoder scores)
"""

from __future__ import annotations

from esrank.features.params import SHOPPER_PARAMS, ParamBuilder, query_params
from esrank.features.parser import load_feature_set, load_feature_sets
from esrank.features.sync import diff_against_engine, push_feature_sets

__all__ = [
    "ParamBuilder", "SHOPPER_PARAMS", "diff_against_engine", "load_feature_set",
    "load_feature_sets", "push_feature_sets", "query_params",
]
