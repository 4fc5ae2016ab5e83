"""VaR / expected shortfall conventions and Euler (component / incremental) ES allocation.

P&L is positive for gains. For a tail probability ``alpha = 1 - level`` and ``n`` scenarios with
sorted P&L ``X(1) <= ... <= X(n)``:

* ``VaR = -X(ceil(n alpha))`` — minus the lower empirical ``alpha``-quantile (the inverse of the
  empirical CDF, numpy's ``method="inverted_cdf"``);
* ``ES = -(sum_{i <= floor(n alpha)} X(i) + (n alpha - floor(n alpha)) X(floor(n alpha) + 1)) / (n alpha)``
  (Acerbi & Tasche, "On the coherence of expected shortfall", J. Banking & Finance 26 (2002)
  1487-1503, eq. for the empirical ES with a fractional observation). Every term is <= the VaR
  observation, so ``ES >= VaR``; the result is also floored at VaR to absorb rounding.

``n alpha`` is snapped to the nearest integer when within 1e-9 of it (``1 - 0.99`` is not exactly
0.01 in binary floating point).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _check_int, _check_level
from dpm.models.scenarios import MarketScenarios

__all__ = ['VaRES', 'component_es', 'incremental_es', 'linear_pnl', 'tail_count', 'tail_weights', 'var_es']


@dataclass(frozen=True)
class VaRES:
    """``var`` and ``es`` (losses, positive numbers = money at risk), same shape."""

    var: np.ndarray | float
    es: np.ndarray | float


def tail_count(n: int, alpha: float) -> tuple[float, int]:
    """``(n*alpha, floor(n*alpha))`` with ``n*alpha`` snapped to an integer within 1e-9 (see the
    module docstring): the tail size of the VaR/ES conventions, shared by every tail statistic."""
    na = n * alpha
    ra = round(na)
    if abs(na - ra) <= 1e-9 * max(1.0, na):
        na = float(ra)
    return na, int(np.floor(na))


def tail_weights(n: int, level: float) -> np.ndarray:
    """Acerbi-Tasche weights on the sorted P&L (ascending), summing to 1; ES = -weights @ sorted.

    Weight ``1 / (n alpha)`` on the ``floor(n alpha)`` worst observations and
    ``(n alpha - floor(n alpha)) / (n alpha)`` on the next one.
    """
    lv = _check_level(level, "level")
    n = _check_int(n, "n", 1)
    na, k = tail_count(n, 1.0 - lv)
    w = np.zeros(n)
    w[:k] = 1.0 / na
    if k < n and na > k:
        w[k] = (na - k) / na
    return w


def var_es(pnl: Any, levels: Any = 0.99, axis: int = -1) -> VaRES:
    """Historical-simulation VaR and ES of scenario P&L.

    Parameters
    ----------
    pnl : array_like
        Scenario P&L (gains positive) along ``axis``; other axes are independent portfolios.
    levels : float or array_like
        Confidence levels in (0, 1), e.g. 0.99. An array adds leading dimensions to the result.
    axis : int
        Scenario axis.

    Returns
    -------
    VaRES
        ``var`` and ``es`` with shape ``levels.shape + pnl.shape without axis`` (floats for a scalar
        level and 1-d ``pnl``). See the module docstring for the quantile and ES conventions.
    """
    x = as_float_array(pnl, "pnl")
    if x.ndim == 0:
        raise InvalidInputError("pnl: expected at least one scenario axis, got a scalar")
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    if n == 0:
        raise InvalidInputError("pnl: no scenarios")
    check_finite(x, "pnl")
    lv = np.asarray(levels, dtype=np.float64)
    flat = lv.ravel()
    for v in flat:
        _check_level(v, "levels")
    srt = np.sort(x, axis=-1)
    csum = np.cumsum(srt, axis=-1)
    var_out = np.empty((flat.size,) + x.shape[:-1])
    es_out = np.empty_like(var_out)
    for i, level in enumerate(flat):
        na, k = tail_count(n, 1.0 - float(level))
        q = max(int(np.ceil(na)), 1) - 1  # index of X(ceil(n alpha))
        var_i = -srt[..., q]
        head = csum[..., k - 1] if k >= 1 else 0.0
        frac = na - k
        tail = head + (frac * srt[..., k] if (frac > 0 and k < n) else 0.0)
        es_i = -tail / na
        var_out[i] = var_i
        es_out[i] = np.maximum(es_i, var_i)
    shape = lv.shape + x.shape[:-1]
    var_r = var_out.reshape(shape)
    es_r = es_out.reshape(shape)
    if var_r.ndim == 0:
        return VaRES(float(var_r), float(es_r))
    return VaRES(var_r, es_r)


def linear_pnl(scenarios: MarketScenarios | Any, exposures: Any, *, by_position: bool = False
               ) -> np.ndarray:
    """P&L of linear exposures (in money, e.g. USD held per underlying) under relative moves.

    ``pnl[s] = sum_u exposures[u] * price_move[s, u]``; ``by_position=True`` returns the (S, U)
    terms instead of their sum. ``scenarios`` is a :class:`MarketScenarios` or a (S, U) array of
    relative moves.
    """
    pm = scenarios.price_move if isinstance(scenarios, MarketScenarios) else as_float_array(
        scenarios, "price_move")
    e = np.atleast_1d(as_float_array(exposures, "exposures"))
    check_finite(e, "exposures")
    if pm.ndim != 2 or pm.shape[1] != e.size:
        raise InvalidInputError(f"exposures: {e.size} exposures for moves of shape {pm.shape}")
    terms = pm * e
    return terms if by_position else terms.sum(axis=1)


def _position_pnl(position_pnl: Any) -> np.ndarray:
    x = as_float_array(position_pnl, "position_pnl")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidInputError(f"position_pnl: expected shape (S, P), got {x.shape}")
    check_finite(x, "position_pnl")
    return x


def component_es(position_pnl: Any, level: float = 0.99) -> np.ndarray:
    """Euler allocation of historical ES to positions.

    ``position_pnl[s, i]`` is position ``i``'s P&L in scenario ``s``; the portfolio P&L is the row
    sum. Scenarios are ranked by portfolio P&L and each position receives minus its weighted mean
    P&L over the tail with the Acerbi-Tasche weights of :func:`tail_weights` (the same ones ES
    uses), so the components sum to the portfolio ES (up to rounding). This is the discrete form
    of ``ES_i = -E[X_i | X <= VaR]`` (Tasche 1999).

    Returns
    -------
    ndarray, shape (P,)
    """
    x = _position_pnl(position_pnl)
    total = x.sum(axis=1)
    order = np.argsort(total, kind="stable")
    w = tail_weights(x.shape[0], level)
    return -(w @ x[order])


def incremental_es(position_pnl: Any, level: float = 0.99) -> np.ndarray:
    """Incremental ES: ``ES(portfolio) - ES(portfolio without position i)`` for each ``i``."""
    x = _position_pnl(position_pnl)
    total = x.sum(axis=1)
    es_all = var_es(total, level).es
    without = total[:, None] - x
    return es_all - var_es(without, level, axis=0).es
