"""EWMA variance, covariance and correlation (RiskMetrics).

``returns`` are daily log returns, shape ``(n,)`` or ``(n, A)``; means are taken as zero.
Variance paths have ``n + 1`` rows: ``variance[t]`` is the forecast of ``Var(r[t])`` made with
``r[:t]`` only (no look-ahead); ``variance[n]`` is the forecast for the next, unseen day.

Reference: J.P. Morgan/Reuters, *RiskMetrics — Technical Document*, 4th ed., 1996, ch. 5
(EWMA, lambda 0.94).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns, _check_int, _check_lambda

__all__ = ['cov_to_corr', 'ewma_correlation', 'ewma_covariance', 'ewma_variance']


def ewma_variance(returns: Any, lambda_: float = 0.94, *, warmup: int = 30,
                  initial_variance: Any = None) -> np.ndarray:
    """RiskMetrics exponentially weighted variance forecasts.

    ``variance[t+1] = lambda_ * variance[t] + (1 - lambda_) * r[t]**2``.

    Parameters
    ----------
    returns : array_like, shape (n,) or (n, A)
        Daily log returns.
    lambda_ : float
        Decay in (0, 1); RiskMetrics uses 0.94 for daily data.
    warmup : int
        Seed: ``variance[warmup]`` is the sample variance about zero (mean of squares) of
        ``r[:warmup]``; rows before ``warmup`` are NaN (there is no forecast without data), and the
        recursion runs from ``t = warmup`` so no forecast uses a return it forecasts.
    initial_variance : float or array_like (A,), optional
        Use this as ``variance[0]`` instead of a warm-up seed (then ``warmup`` is ignored).

    Returns
    -------
    ndarray, shape (n + 1,) or (n + 1, A)
        ``variance[t]`` forecasts ``Var(r[t])`` from ``r[:t]``; ``variance[n]`` is tomorrow's.
    """
    lam = _check_lambda(lambda_)
    if initial_variance is None:
        warmup = _check_int(warmup, "warmup", 1)
        r, squeeze = _as_returns(returns, "returns", min_obs=warmup)
        seed = np.mean(r[:warmup] ** 2, axis=0)
        start = warmup
    else:
        r, squeeze = _as_returns(returns, "returns", min_obs=1)
        seed = np.broadcast_to(as_float_array(initial_variance, "initial_variance"),
                               (r.shape[1],)).copy()
        check_finite(seed, "initial_variance")
        if np.any(seed < 0):
            raise InvalidInputError(f"initial_variance: must be >= 0, got {seed}")
        start = 0
    n, a = r.shape
    out = np.full((n + 1, a), np.nan)
    out[start] = seed
    if start < n:
        # first-order IIR filter = the EWMA recursion, evaluated in C; same arithmetic per step
        out[start + 1:] = signal.lfilter([1.0 - lam], [1.0, -lam], r[start:] ** 2, axis=0,
                                         zi=(lam * seed)[None, :])[0]
    return out[:, 0] if squeeze else out


def ewma_covariance(returns: Any, lambda_: float = 0.94, *, warmup: int = 30,
                    path: bool = False) -> np.ndarray:
    """EWMA covariance forecasts ``C[t+1] = lambda_ C[t] + (1 - lambda_) r[t] r[t]^T``.

    Seeded like :func:`ewma_variance` with ``r[:warmup]^T r[:warmup] / warmup``.

    Returns
    -------
    ndarray
        ``(A, A)`` forecast for the next day, or with ``path=True`` the ``(n + 1, A, A)`` path
        (NaN before ``warmup``).
    """
    lam = _check_lambda(lambda_)
    warmup = _check_int(warmup, "warmup", 1)
    r, _ = _as_returns(returns, "returns", min_obs=warmup)
    n, a = r.shape
    seed = (r[:warmup].T @ r[:warmup]) / warmup
    if not path:
        # weights lambda^(n-1-t) on the outer products: one matrix product instead of n updates
        w = (1.0 - lam) * lam ** np.arange(n - warmup - 1, -1, -1, dtype=np.float64)
        tail = r[warmup:]
        cov = lam ** (n - warmup) * seed + (tail * w[:, None]).T @ tail
        return 0.5 * (cov + cov.T)
    outer = (r[:, :, None] * r[:, None, :]).reshape(n, a * a)
    out = np.full((n + 1, a * a), np.nan)
    out[warmup] = seed.ravel()
    if warmup < n:
        out[warmup + 1:] = signal.lfilter([1.0 - lam], [1.0, -lam], outer[warmup:], axis=0,
                                          zi=(lam * seed.ravel())[None, :])[0]
    return out.reshape(n + 1, a, a)


def cov_to_corr(cov: Any) -> np.ndarray:
    """Correlation matrix (or stack of them, ``(..., A, A)``) from covariances."""
    c = as_float_array(cov, "cov")
    d = np.sqrt(np.diagonal(c, axis1=-2, axis2=-1))
    if np.any(d <= 0):
        raise InvalidInputError("cov: a variance on the diagonal is <= 0; correlation undefined")
    corr = c / (d[..., :, None] * d[..., None, :])
    idx = np.arange(c.shape[-1])
    corr[..., idx, idx] = 1.0
    return np.clip(corr, -1.0, 1.0)


def ewma_correlation(returns: Any, lambda_: float = 0.94, *, warmup: int = 30,
                     path: bool = False) -> np.ndarray:
    """EWMA correlation: :func:`ewma_covariance` normalised to a unit diagonal."""
    cov = ewma_covariance(returns, lambda_, warmup=warmup, path=path)
    if path:
        out = np.full_like(cov, np.nan)
        out[warmup:] = cov_to_corr(cov[warmup:])
        return out
    return cov_to_corr(cov)
