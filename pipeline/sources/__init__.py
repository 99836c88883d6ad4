"""Source adapters: one per dataset, each turning its folder into manifest rows.

Which sources exist is the registry's (base.registry(): manifests/*.yaml and $MESODATA_SOURCES);
each description names its adapter module.
"""

from __future__ import annotations

import importlib

from .base import Listing, config, registry

ADAPTERS = {name: importlib.import_module(cfg["adapter"]) for name, cfg in registry().items()}

__all__ = ["ADAPTERS", "Listing", "config", "registry"]
