"""dpm: dynamic portfolio margin for crypto derivatives.

The public API in one place (imported lazily, so ``import dpm`` stays cheap):

- pricing: :func:`price`, :func:`greeks`, :func:`implied_vol` (``dpm.pricing``)
- data: :class:`InstrumentTable`, :class:`AccountBook`, :class:`Account`, :class:`MarketSnapshot`
- margin: :class:`MarginEngine` with the models in :mod:`dpm.models` (``deribit_pm``, ``okx_pm``,
  ``cme_span``, ``paradex_pm``, ``dpm_default``)
- VaR / ES and stress tests: :class:`ScenarioRiskEngine` (``dpm.models.var``), scenario generators
  in :mod:`dpm.risk_measures` and :mod:`dpm.stress`, calibration in :mod:`dpm.calibration`,
  backtests in :mod:`dpm.backtest`
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "price": "dpm.pricing",
    "greeks": "dpm.pricing",
    "implied_vol": "dpm.pricing",
    "InstrumentTable": "dpm.instruments",
    "parse_name": "dpm.instruments",
    "format_name": "dpm.instruments",
    "Account": "dpm.accounts",
    "AccountBook": "dpm.accounts",
    "MarketSnapshot": "dpm.market",
    "VolSurface": "dpm.surface",
    "MarginEngine": "dpm.engine",
    "RiskMatrixModel": "dpm.models.risk_matrix",
    "ScenarioSet": "dpm.scenarios",
    "ScenarioRiskEngine": "dpm.models.var",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dpm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
