"""Lazy public names for packages: ``from dpm.market import MarketSnapshot`` imports only what it needs.

A package lists ``{name: module}``; :func:`lazy_exports` returns the module-level ``__getattr__`` and
``__dir__`` (PEP 562) that import the defining module on first access and cache the value. This keeps
``import dpm`` and ``import dpm.engines.margin`` cheap: scipy, pandas and friends load only when a
name that needs them is used.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, namespace: dict[str, Any],
                 exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """PEP 562 ``__getattr__`` / ``__dir__`` for ``package`` resolving ``exports`` lazily."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
