"""Feature sets: the files users edit, checked, versioned and synced with the LTR plugin, and
the query-time params their features read.

- parser: feature-set files -> FeatureSet records (file:line errors), push and diff
- params: the sltr params a request gets (query text, vectors, cross-encoder scores)
"""

from __future__ import annotations

from esrank.features.params import SHOPPER_PARAMS, ParamBuilder, query_params
from esrank.features.parser import load_feature_set, load_feature_sets, push_feature_sets

__all__ = [
    "ParamBuilder", "SHOPPER_PARAMS", "load_feature_set", "load_feature_sets",
    "push_feature_sets", "query_params",
]
