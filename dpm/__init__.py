"""dpm: dynamic portfolio margin for crypto derivatives.

The package follows the data flow, one layer per subpackage (each imports only from layers below):

- :mod:`dpm.pricing` — :func:`price`, :func:`greeks`, :func:`implied_vol`
- :mod:`dpm.market` — :class:`InstrumentTable`, names, :class:`MarketSnapshot`, vol surfaces, history
- :mod:`dpm.portfolio` — :class:`Account`, :class:`AccountBook`, readers and writers, sample accounts
- :mod:`dpm.models` — scenario sets and generators, calibration, risk-matrix models and venue presets
- :mod:`dpm.engines` — :class:`MarginEngine`, :class:`ScenarioRiskEngine` over one revaluation plan
- :mod:`dpm.cli` — ``python -m dpm``

The names below are importable from ``dpm`` itself (lazily, so ``import dpm`` stays cheap).
"""
from __future__ import annotations

import importlib
from typing import Any

from dpm import _compat

__version__ = "0.1.0"

_EXPORTS = {
    "price": "dpm.pricing.black",
    "greeks": "dpm.pricing.black",
    "implied_vol": "dpm.pricing.black",
    "InstrumentTable": "dpm.market.table",
    "parse_name": "dpm.market.names",
    "format_name": "dpm.market.names",
    "Account": "dpm.portfolio.accounts",
    "AccountBook": "dpm.portfolio.accounts",
    "MarketSnapshot": "dpm.market.snapshot",
    "VolSurface": "dpm.market.surface",
    "MarginEngine": "dpm.engines.margin",
    "RiskMatrixModel": "dpm.models.risk_matrix",
    "ScenarioSet": "dpm.models.scenarios",
    "ScenarioRiskEngine": "dpm.engines.risk",
}

_compat.install()

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
