"""Module paths of dpm 0.1 (one flat package) kept importable after the move into layer subpackages.

``import dpm.engine`` or ``from dpm.instruments import InstrumentTable`` still work: each old path is a
small proxy module whose attributes come from the module(s) that now define them. New code should
import from the new paths (``dpm.engines.margin``, ``dpm.market``, ...); see ``docs/architecture.md``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import Any

#: old module -> the modules that now hold its public names (searched in order)
ALIASES: dict[str, tuple[str, ...]] = {
    "dpm._parallel": ("dpm._util.parallel",),
    "dpm._validation": ("dpm._util.validation",),
    "dpm.instruments": ("dpm.market.specs", "dpm.market.names", "dpm.market.table", "dpm.market.table_io"),
    "dpm.surface": ("dpm.market.surface",),
    "dpm.history": ("dpm.market.history",),
    "dpm.sample_market": ("dpm.market.sample",),
    "dpm.accounts": ("dpm.portfolio.accounts",),
    "dpm.io": ("dpm.portfolio.io", "dpm.market.loaders.deribit"),
    "dpm.sample": ("dpm.portfolio.sample", "dpm.market.sample"),
    "dpm.scenarios": ("dpm.models.scenarios",),
    "dpm.risk_measures": ("dpm.models.scenarios", "dpm.models.measures", "dpm.models.generators.historical",
                          "dpm.models.generators.montecarlo"),
    "dpm.stress": ("dpm.models.generators.stress",),
    "dpm.calibration": ("dpm.models.calibration",),
    "dpm.correlation": ("dpm.models.calibration.correlation",),
    "dpm.backtest": ("dpm.models.backtest",),
    "dpm.engine": ("dpm.engines.margin",),
    "dpm.results": ("dpm.engines.results",),
    "dpm.models.var": ("dpm.engines.risk",),
    "dpm.models.market_scenarios": ("dpm.models.scenarios",),
}


class _Proxy(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        for target in self.__dict__["_targets"]:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__dict__["_targets"]:
            names.update(n for n in dir(importlib.import_module(target)) if not n.startswith("_"))
        return sorted(names)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _Proxy(spec.name, f"dpm 0.1 path; now {', '.join(ALIASES[spec.name])}")
        module.__dict__["_targets"] = ALIASES[spec.name]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
