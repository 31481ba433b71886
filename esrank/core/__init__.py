"""Shared ground every stage stands on: errors, settings (plain data), credentials, the
feature-set records, files, timestamps and small helpers.

- errors: the exception hierarchy (file:line, operation, status) and its exit codes
- settings: typed settings with ESRANK_* env overrides (data only; the app builds resources)
- auth: cluster credentials and TLS, secret redaction
- feature_set: QueryParam, Feature, FeatureSet (the single owner of feature order)
- files, stamps, batches, query_text: atomic files, UTC stamps, batching, bounded queries
"""

from __future__ import annotations

from esrank.core.errors import ConfigError, EngineError, EsrankError, InputError, ModelError
from esrank.core.feature_set import Feature, FeatureSet, QueryParam
from esrank.core.settings import Settings, load_settings

__all__ = [
    "ConfigError", "EngineError", "EsrankError", "Feature", "FeatureSet", "InputError",
    "ModelError", "QueryParam", "Settings", "load_settings",
]
