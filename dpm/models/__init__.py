"""Models layer: scenario sets and their generators, calibration, the risk-matrix margin model and
venue presets, dynamic parameters, risk measures and backtests.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "AGGREGATIONS": "dpm.models.risk_matrix",
    "BacktestReport": "dpm.models.backtest",
    "ConditionalCoverageResult": "dpm.models.backtest",
    "DEFAULT_STRESS_PERIODS": "dpm.models.backtest",
    "DeltaShock": "dpm.models.risk_matrix",
    "ESBacktestResult": "dpm.models.backtest",
    "FLAG_DAMPENED": "dpm.models.scenarios",
    "FLAG_EXTENDED": "dpm.models.scenarios",
    "FLAG_EXTREME": "dpm.models.scenarios",
    "FLAG_PADDING": "dpm.models.scenarios",
    "IndependenceResult": "dpm.models.backtest",
    "KupiecResult": "dpm.models.backtest",
    "MarketScenarios": "dpm.models.scenarios",
    "PRESETS": "dpm.models.presets",
    "ReplayResult": "dpm.models.backtest",
    "RiskMatrixModel": "dpm.models.risk_matrix",
    "RollShock": "dpm.models.risk_matrix",
    "ScenarioGrid": "dpm.models.scenarios",
    "ScenarioSet": "dpm.models.scenarios",
    "SizeCharge": "dpm.models.risk_matrix",
    "SpreadCredit": "dpm.models.risk_matrix",
    "UnderlyingParams": "dpm.models.risk_matrix",
    "VOL_ABSOLUTE": "dpm.models.scenarios",
    "VOL_RELATIVE": "dpm.models.scenarios",
    "VaRES": "dpm.models.measures",
    "VolShock": "dpm.models.scenarios",
    "VolTermStructure": "dpm.models.scenarios",
    "backtest_margin": "dpm.models.backtest",
    "christoffersen_conditional_coverage": "dpm.models.backtest",
    "christoffersen_independence": "dpm.models.backtest",
    "cme_span": "dpm.models.presets",
    "component_es": "dpm.models.measures",
    "deribit_pm": "dpm.models.presets",
    "deribit_pm_from_model_params": "dpm.models.presets",
    "dpm_default": "dpm.models.presets",
    "dynamic_model": "dpm.models.dynamic",
    "es_backtest_z2": "dpm.models.backtest",
    "incremental_es": "dpm.models.measures",
    "kupiec_pof": "dpm.models.backtest",
    "linear_pnl": "dpm.models.measures",
    "okx_pm": "dpm.models.presets",
    "paradex_pm": "dpm.models.presets",
    "plot_backtest": "dpm.models.backtest",
    "preset": "dpm.models.presets",
    "price_grid": "dpm.models.scenarios",
    "procyclicality_report": "dpm.models.backtest",
    "replay": "dpm.models.backtest",
    "tail_count": "dpm.models.measures",
    "tail_weights": "dpm.models.measures",
    "traffic_light": "dpm.models.backtest",
    "var_es": "dpm.models.measures",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
