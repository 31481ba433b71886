"""Deploying: a trained model exported for the plugin, gated on parity, versioned in the
registry.

- export: the plugin's model JSON and the parity gate (plugin scores == local prediction)
- registry: the versions per feature set and the active pointer
- upload: export, upload, gate, record (and activate) in one step
"""

from __future__ import annotations

from esrank.deploy.export import ParityReport, check_parity, plugin_model
from esrank.deploy.registry import ActiveModel, RegistryEntry, active_model, entry
from esrank.deploy.upload import DeployReport, deploy

__all__ = [
    "ActiveModel", "DeployReport", "ParityReport", "RegistryEntry", "active_model",
    "check_parity", "deploy", "entry", "plugin_model",
]
