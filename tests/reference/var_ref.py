"""Slow, obviously correct pure-Python reference of full-revaluation scenario P&L (VaR/ES, stress).

It shares no computational code with :mod:`dpm.engines.risk` or its kernels: every position is
repriced by itself in every scenario with the scalar Black-76 on ``math.erfc`` of
:mod:`reference.margin_ref` (the other slow oracle; neither shares code with dpm). Only
market *data* is read through :mod:`dpm.market` (index, forward curve, perpetual mark, implied vol
at the instrument's strike / expiry / forward) and the instrument table's columns as plain values.

Conventions (docs/var-es-calibration.md and :class:`dpm.engines.risk.ScenarioRiskEngine`):

* scenario ``s`` multiplies the index, every forward and the perpetual mark of underlying ``u`` by
  ``1 + price_move[s, u]`` and every implied vol of ``u`` by ``max(0, 1 + c * vol_shock[s, u])``
  (sticky strike), ``c = (30 / max(DTE, 1)) ** p`` with ``p = 0.30`` for ``DTE <= 30`` days else
  ``0.13`` (the engine's default vol term structure; ``c = 1`` with ``term_structure=False``); options are repriced with ``horizon_days / 365`` years less to expiry (floored at 0,
  i.e. intrinsic value);
* P&L is in USD per contract: a linear option is worth ``cs * B``, an inverse option
  ``cs * B / F`` coins, i.e. ``cs * B / F * S`` USD at the scenario's index ``S``; a linear
  future/perp gains ``cs * (F1 - F0)`` USD, an inverse one ``cs * (1/F0 - 1/F1)`` coins worth
  ``S1`` USD each.
"""
from __future__ import annotations

from typing import Any

# the scalar Black-76 on math.erfc and the instrument reader are shared with the margin reference
from .margin_ref import OPTION, black76, instrument


class Inst:
    """Plain-Python view of one instrument and its market inputs (read by
    :func:`reference.margin_ref.instrument`, the margin reference's reader)."""

    def __init__(self, table: Any, market: Any, i: int) -> None:
        x = instrument(table, market, i)
        self.name, self.kind, self.und, self.cp, self.K = x.name, x.kind, x.und, x.cp, x.K
        self.inverse, self.cs, self.S, self.T, self.F, self.vol = x.inverse, x.cs, x.S, x.T, x.F, x.vol

    def term_factor(self, term_structure: bool) -> float:
        """How much of the 30-day vol shock this expiry takes."""
        if not term_structure:
            return 1.0
        dte = max(self.T * 365.0, 1.0)
        return (30.0 / dte) ** (0.30 if dte <= 30.0 else 0.13)

    def pnl(self, move: float, vol_shock: float, horizon_days: float, term_structure: bool = True) -> float:
        """USD P&L of one contract in one scenario."""
        F1 = self.F * (1.0 + move)
        S1 = self.S * (1.0 + move)
        if self.kind == OPTION:
            T1 = max(self.T - horizon_days / 365.0, 0.0)

            def usd(F: float, S: float, sigma: float, T: float) -> float:
                b = self.cs * black76(F, self.K, sigma, T, self.cp)
                return b / F * S if self.inverse else b

            mult = max(0.0, 1.0 + self.term_factor(term_structure) * vol_shock)
            return usd(F1, S1, self.vol * mult, T1) - usd(self.F, self.S, self.vol, self.T)
        if self.inverse:
            return self.cs * (1.0 / self.F - 1.0 / F1) * S1
        return self.cs * (F1 - self.F)


def instrument_pnl(table: Any, market: Any, i: int, scenarios: Any) -> list[float]:
    """P&L (USD per contract) of instrument ``i`` in every scenario of a MarketScenarios."""
    x = Inst(table, market, i)
    c = list(scenarios.underlyings).index(x.und)
    h = float(scenarios.horizon_days)
    return [x.pnl(float(scenarios.price_move[s, c]), float(scenarios.vol_shock[s, c]), h)
            for s in range(len(scenarios.names))]


def account_pnl(book: Any, a: int, market: Any, scenarios: Any,
                cache: dict[int, list[float]] | None = None) -> list[float]:
    """Scenario P&L (USD) of account ``a``: the sum over its positions of quantity x repriced P&L.

    ``cache`` (instrument id -> P&L list) avoids repricing an instrument held by several accounts
    of the same test; each entry is still computed by :func:`instrument_pnl`.
    """
    cache = {} if cache is None else cache
    S = len(scenarios.names)
    out = [0.0] * S
    for p in range(int(book.indptr[a]), int(book.indptr[a + 1])):
        i = int(book.instrument_idx[p])
        q = float(book.quantity[p])
        if i not in cache:
            cache[i] = instrument_pnl(book.table, market, i, scenarios)
        row = cache[i]
        for s in range(S):
            out[s] += q * row[s]
    return out


def account_gross(book: Any, a: int, cache: dict[int, list[float]]) -> list[float]:
    """Per-scenario sum of |quantity x P&L| (the scale of rounding in :func:`account_pnl`)."""
    S = len(next(iter(cache.values()))) if cache else 0
    out = [0.0] * S
    for p in range(int(book.indptr[a]), int(book.indptr[a + 1])):
        row = cache[int(book.instrument_idx[p])]
        q = abs(float(book.quantity[p]))
        for s in range(S):
            out[s] += q * abs(row[s])
    return out
