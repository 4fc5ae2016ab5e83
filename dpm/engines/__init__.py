"""Engines layer: one revaluation plan shared by margin, VaR/ES, stress and solvency; results."""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "okx_instrument_name": "dpm.engines.venues",
    "okx_position_builder": "dpm.engines.venues",
    "AccountMargin": "dpm.engines.results",
    "AccountState": "dpm.engines.margin",
    "AccountVaRES": "dpm.engines.risk",
    "CONV_DIV_PRICE": "dpm.engines.plan",
    "CONV_MUL_PRICE": "dpm.engines.plan",
    "CONV_NONE": "dpm.engines.plan",
    "DistributedRun": "dpm.engines.distributed",
    "JOINT_MAX_HELD": "dpm.engines.margin",
    "MarginEngine": "dpm.engines.margin",
    "MarginResults": "dpm.engines.results",
    "PackedScenarios": "dpm.engines.plan",
    "PartitionResult": "dpm.engines.distributed",
    "PositionContribution": "dpm.engines.results",
    "RevaluationPlan": "dpm.engines.plan",
    "RiskVectors": "dpm.engines.results",
    "ScenarioRiskEngine": "dpm.engines.risk",
    "SolvencyEngine": "dpm.engines.solvency.engine",
    "SolvencyPolicy": "dpm.engines.solvency.waterfall",
    "SolvencyReport": "dpm.engines.solvency.report",
    "StressResult": "dpm.engines.risk",
    "StressSpace": "dpm.engines.solvency.space",
    "USD_LIKE": "dpm.engines.margin",
    "WhatIfResult": "dpm.engines.results",
    "balanced_bounds": "dpm.engines.plan",
    "margin_partitions": "dpm.engines.distributed",
    "stress_partitions": "dpm.engines.distributed",
    "var_es_partitions": "dpm.engines.distributed",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
