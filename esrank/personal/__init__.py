"""Personalisation: shoppers, their profiles and signals, and online experiments.

- shopper: ShopperContext, profiles built from UBI, the shopper params
- signals: per-product behaviour signals
- experiment: arms, interleaving and their report
- sim: simulated shoppers (benches and tests)
"""

from __future__ import annotations

from esrank.personal.experiment import Experiment
from esrank.personal.shopper import Profile, ShopperContext, build_profiles, shopper_params

__all__ = [
    "Experiment", "Profile", "ShopperContext", "build_profiles", "shopper_params",
]
