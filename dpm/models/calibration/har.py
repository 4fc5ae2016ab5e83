"""Heterogeneous autoregressive (HAR) model of realised variance.

``y[t+1] = b0 + b_d RV_d[t] + b_w RV_w[t] + b_m RV_m[t] + e[t+1]`` with ``RV_k[t]`` the mean of the
realised variance over the last ``k`` days (daily, weekly, monthly components) and ``y`` the next
day's realised variance, fitted by ordinary least squares. With ``log=True`` the model is written in
log realised variance and the forecast is ``exp(fitted + s^2/2)`` (``s^2`` the residual variance,
the lognormal mean correction). Default windows 1, 7 and 30 days because crypto trades every day
(Corsi's 1, 5, 22 are trading-day windows for exchange markets).

Reference: F. Corsi, "A simple approximate long-memory model of realized volatility", *J.
Financial Econometrics* 7(2) (2009) 174-196.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm._util.validation import as_float_array
from dpm.errors import InvalidInputError

__all__ = ["HARFit", "fit_har", "har_design"]


def _rolling_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Trailing mean over ``k`` rows; NaN where the window is incomplete or holds a NaN."""
    nan = ~np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(nan, 0.0, x))])
    cn = np.concatenate([[0], np.cumsum(nan)])
    out = np.full(x.size, np.nan)
    if x.size >= k:
        m = (c[k:] - c[:-k]) / k
        out[k - 1:] = np.where(cn[k:] - cn[:-k] > 0, np.nan, m)
    return out


def har_design(rv: Any, windows: Sequence[int] = (1, 7, 30), *, log: bool = False) -> np.ndarray:
    """Regressors ``[1, RV_w1[t], RV_w2[t], ...]`` per row ``t`` (NaN before the longest window).

    With ``log=True`` the components are logs of the window means.
    """
    x = np.atleast_1d(as_float_array(rv, "rv"))
    if x.ndim != 1:
        raise InvalidInputError(f"rv: expected shape (T,), got {x.shape}")
    ws = [int(w) for w in windows]
    if not ws or any(w < 1 for w in ws):
        raise InvalidInputError(f"windows: expected positive integers, got {windows!r}")
    cols = [np.ones(x.size)]
    for w in ws:
        m = _rolling_mean(x, w)
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                m = np.where(m > 0, np.log(np.where(m > 0, m, 1.0)), np.nan)
        cols.append(m)
    return np.column_stack(cols)


@dataclass(frozen=True)
class HARFit:
    """Result of :func:`fit_har`.

    Attributes
    ----------
    coef : ndarray, shape (1 + len(windows),)
        ``b0, b_w1, b_w2, ...``.
    std_errors : ndarray
        Newey-West (HAC, ``lags`` = longest window) standard errors of ``coef``: the overlapping
        window means make the errors autocorrelated.
    windows : tuple of int
    log : bool
    resid_var : float
        Residual variance (used for the lognormal correction when ``log``).
    r_squared : float
    n_obs : int
    """

    coef: np.ndarray
    std_errors: np.ndarray
    windows: tuple[int, ...]
    log: bool
    resid_var: float
    r_squared: float
    n_obs: int

    def forecast_path(self, rv: Any) -> np.ndarray:
        """Next-day variance forecasts, shape (T + 1,): row ``t`` forecasts day ``t`` from ``rv[:t]``.

        NaN where the design is not yet defined. Linear forecasts are floored at 1 % of the mean of
        ``rv`` so far (a linear HAR can go negative after a spike).
        """
        x = np.atleast_1d(as_float_array(rv, "rv"))
        X = har_design(x, self.windows, log=self.log)
        pred = X @ self.coef
        if self.log:
            pred = np.exp(pred + 0.5 * self.resid_var)
        else:
            # floor at 1 % of the mean so far (cumulative, so no look-ahead)
            mean_so_far = np.cumsum(np.nan_to_num(x)) / np.arange(1, x.size + 1)
            pred = np.where(np.isfinite(pred), np.maximum(pred, 0.01 * mean_so_far), pred)
        out = np.full(x.size + 1, np.nan)
        out[1:] = pred
        return out


def fit_har(rv: Any, windows: Sequence[int] = (1, 7, 30), *, log: bool = False,
            target: Any = None, min_obs: int = 100) -> HARFit:
    """Fit a HAR model by OLS on a daily realised-variance series.

    Parameters
    ----------
    rv : array_like, shape (T,)
        Daily realised variance (>= 0; > 0 for ``log=True``; NaN rows are dropped).
    windows : sequence of int
    log : bool
        Model log realised variance.
    target : array_like, shape (T,), optional
        Next-day quantity to forecast (default ``rv`` itself), e.g. squared returns.
    min_obs : int
        Usable rows required.
    """
    x = np.atleast_1d(as_float_array(rv, "rv"))
    if x.ndim != 1:
        raise InvalidInputError(f"rv: expected shape (T,), got {x.shape}")
    if np.any(x[np.isfinite(x)] < 0):
        raise InvalidInputError("rv: realised variance must be >= 0")
    y_src = x if target is None else np.atleast_1d(as_float_array(target, "target"))
    if y_src.shape != x.shape:
        raise InvalidInputError(f"target: shape {y_src.shape} differs from rv {x.shape}")
    X = har_design(x, windows, log=log)[:-1]
    y = y_src[1:]
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan)
    ok = np.all(np.isfinite(X), axis=1) & np.isfinite(y)
    if ok.sum() < min_obs:
        raise InvalidInputError(f"rv: too little usable history: {int(ok.sum())} rows, need {min_obs}")
    Xo, yo = X[ok], y[ok]
    coef, *_ = np.linalg.lstsq(Xo, yo, rcond=None)
    e = yo - Xo @ coef
    n, k = Xo.shape
    # Newey-West covariance with Bartlett weights
    lags = max(windows)
    xe = Xo * e[:, None]
    S = xe.T @ xe
    for lag in range(1, min(lags, n - 1) + 1):
        w = 1.0 - lag / (lags + 1.0)
        g = xe[lag:].T @ xe[:-lag]
        S += w * (g + g.T)
    xtx_inv = np.linalg.inv(Xo.T @ Xo)
    cov = xtx_inv @ S @ xtx_inv
    tss = float(np.sum((yo - yo.mean()) ** 2))
    r2 = 1.0 - float(e @ e) / tss if tss > 0 else 0.0
    return HARFit(coef, np.sqrt(np.maximum(np.diag(cov), 0.0)), tuple(int(w) for w in windows), bool(log),
                  float(e @ e / max(n - k, 1)), r2, int(n))
