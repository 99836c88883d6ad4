"""Source adapters: one per dataset, each turning its folder into manifest rows."""

from __future__ import annotations

from . import celebdf, dfdc, ffpp
from .base import Listing, config

ADAPTERS = {"ff++": ffpp, "celebdf": celebdf, "dfdc": dfdc}

__all__ = ["ADAPTERS", "Listing", "config"]
