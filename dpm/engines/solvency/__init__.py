"""Solvency under adverse events: reverse stress, close-out, insurance fund and auto-deleveraging.

Modules: :mod:`~dpm.engines.solvency.space` (factors and plausibility metric),
:mod:`~dpm.engines.solvency.reverse` (per-account and venue-wide reverse stress),
:mod:`~dpm.engines.solvency.closeout` (close-out cost model, stressed market, partial liquidation),
:mod:`~dpm.engines.solvency.waterfall` (venue policies, fund, ADL ranking, socialised loss),
:mod:`~dpm.engines.solvency.engine` (:class:`SolvencyEngine`), :mod:`~dpm.engines.solvency.report`.
See ``docs/solvency.md``.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "BookExposure": "dpm.engines.solvency.exposure",
    "CloseOutCostModel": "dpm.engines.solvency.closeout",
    "POLICIES": "dpm.engines.solvency.waterfall",
    "ReverseStressResult": "dpm.engines.solvency.reverse",
    "SolvencyEngine": "dpm.engines.solvency.engine",
    "SolvencyPolicy": "dpm.engines.solvency.waterfall",
    "SolvencyReport": "dpm.engines.solvency.report",
    "SolvencyRun": "dpm.engines.solvency.engine",
    "StressSpace": "dpm.engines.solvency.space",
    "VenueReverseStress": "dpm.engines.solvency.reverse",
    "adl_fill": "dpm.engines.solvency.waterfall",
    "adl_score": "dpm.engines.solvency.waterfall",
    "book_exposure": "dpm.engines.solvency.exposure",
    "liquidate": "dpm.engines.solvency.closeout",
    "reverse_stress": "dpm.engines.solvency.reverse",
    "solvency_policy": "dpm.engines.solvency.waterfall",
    "stressed_market": "dpm.engines.solvency.closeout",
    "venue_reverse_stress": "dpm.engines.solvency.reverse",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
