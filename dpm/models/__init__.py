"""Margin models: the risk-matrix (scenario) model and named exchange presets."""
from .presets import PRESETS, cme_span, deribit_pm, dpm_default, okx_pm, paradex_pm, preset
from .risk_matrix import DeltaShock, RiskMatrixModel, RollShock, SizeCharge, UnderlyingParams

__all__ = [
    "RiskMatrixModel", "UnderlyingParams", "RollShock", "DeltaShock", "SizeCharge",
    "deribit_pm", "okx_pm", "cme_span", "paradex_pm", "dpm_default", "PRESETS", "preset",
]
