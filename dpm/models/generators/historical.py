"""Historical and filtered historical (volatility-rescaled) scenarios from daily returns."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns, _check_int, _check_lambda
from dpm.models.calibration.ewma import ewma_variance
from dpm.models.calibration.ranges import VolShockProxy
from dpm.models.scenarios import MarketScenarios

__all__ = ['filtered_historical_scenarios', 'historical_scenarios']


def _horizon_sums(r: np.ndarray, h: int) -> np.ndarray:
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r]), axis=0)
    return c[h:] - c[:-h]


def historical_scenarios(returns: Any, horizon: int = 1, *, underlyings: Sequence[str] | None = None,
                         dates: Any = None, vol_proxy: VolShockProxy | None = None,
                         window: int | None = None) -> MarketScenarios:
    """Historical-simulation scenarios: overlapping ``horizon``-day log returns.

    Scenario ``s`` is ``sum(r[s : s + horizon])`` (rows of ``returns``), ``S = n - horizon + 1``;
    with ``window`` only the last ``window`` daily returns are used. Overlapping windows are
    dependent, so the effective sample is about ``S / horizon`` (Basel's 10-day-from-1-day
    practice; see the docs).

    Parameters
    ----------
    returns : array_like, shape (n, U) or (n,)
        Daily log returns.
    horizon : int
        Holding period in days (margin period of risk).
    underlyings : names of the columns; dates : optional (n,) dates (names the scenarios by the
        last day of each window).
    vol_proxy : VolShockProxy, optional
        Gives the joint vol shock of each scenario; without it vol shocks are 0.
    """
    h = _check_int(horizon, "horizon", 1)
    r, _ = _as_returns(returns, "returns", min_obs=h)
    if window is not None:
        window = _check_int(window, "window", h)
        r = r[-window:]
    lr = _horizon_sums(r, h)
    names = None
    if dates is not None:
        d = np.asarray(dates).astype("datetime64[D]")
        if window is not None:
            d = d[-window:]
        if d.shape != (r.shape[0],):
            raise InvalidInputError(f"dates: expected {r.shape[0]} dates, got {d.shape}")
        names = tuple(f"hist_{x}" for x in d[h - 1:])
    return MarketScenarios.from_log_returns(lr, names=names, underlyings=underlyings,
                                            vol_proxy=vol_proxy, horizon_days=h, kind="historical")


def filtered_historical_scenarios(returns: Any, lambda_: float = 0.94, horizon: int = 1, *,
                                  warmup: int = 30, window: int | None = None,
                                  underlyings: Sequence[str] | None = None,
                                  vol_proxy: VolShockProxy | None = None) -> MarketScenarios:
    """Filtered historical simulation (Barone-Adesi et al. 1999; Hull & White 1998).

    Each daily return is devolatilised by the EWMA vol forecast made the day before it,
    ``z[t] = r[t] / sigma[t]``, then rescaled by today's forecast for tomorrow,
    ``r*[t] = z[t] * sigma[n]``, per asset (diagonal scaling: correlations are those of the
    standardised history). ``horizon``-day scenarios are overlapping sums of the rescaled daily
    returns, i.e. the current vol is assumed to persist over the horizon. The first ``warmup``
    returns seed the EWMA and are not used as scenarios.
    """
    h = _check_int(horizon, "horizon", 1)
    lam = _check_lambda(lambda_)
    r, _ = _as_returns(returns, "returns", min_obs=warmup + h)
    var = ewma_variance(r, lam, warmup=warmup)
    sig = np.sqrt(var)
    if np.any(sig[warmup:] <= 0):
        raise InvalidInputError("returns: an EWMA vol is 0 (constant prices); cannot devolatilise")
    z = r[warmup:] / sig[warmup:-1]
    scaled = z * sig[-1]
    if window is not None:
        window = _check_int(window, "window", h)
        scaled = scaled[-window:]
    lr = _horizon_sums(scaled, h)
    return MarketScenarios.from_log_returns(lr, underlyings=underlyings, vol_proxy=vol_proxy,
                                            horizon_days=h, kind="filtered_historical")
