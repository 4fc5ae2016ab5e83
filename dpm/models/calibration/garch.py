"""GARCH(1,1) by maximum likelihood: variance paths, log-likelihood, fits with standard errors.

Reference: T. Bollerslev, "Generalized autoregressive conditional heteroskedasticity",
*J. Econometrics* 31 (1986) 307-327.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, signal

from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns, _check_int
from dpm.models.calibration.robust import sandwich_covariance

__all__ = ['GarchFit', 'fit_garch', 'garch_loglik', 'garch_variance']


def garch_variance(returns: Any, omega: float, alpha: float, beta: float, *,
                   initial_variance: float | None = None) -> np.ndarray:
    """Conditional variance path of a GARCH(1,1): ``h[t+1] = omega + alpha r[t]^2 + beta h[t]``.

    ``h[0]`` is ``initial_variance`` (default: the mean of ``r**2`` over the whole sample, the usual
    "sample variance" start; its effect decays like ``beta**t``). Returns shape (n + 1,).
    """
    r, squeeze = _as_returns(returns, "returns", min_obs=1)
    if not squeeze and r.shape[1] != 1:
        raise InvalidInputError(f"returns: GARCH(1,1) is univariate, got shape {r.shape}")
    r = r[:, 0]
    for name, v in (("omega", omega), ("alpha", alpha), ("beta", beta)):
        if not np.isfinite(v) or v < 0:
            raise InvalidInputError(f"{name}: must be finite and >= 0, got {v!r}")
    h0 = float(np.mean(r * r)) if initial_variance is None else float(initial_variance)
    return _garch_path(r, float(omega), float(alpha), float(beta), h0)


def _garch_path(r: np.ndarray, omega: float, alpha: float, beta: float, h0: float) -> np.ndarray:
    out = np.empty(r.size + 1)
    out[0] = h0
    out[1:] = signal.lfilter([1.0], [1.0, -beta], omega + alpha * r * r, zi=[beta * h0])[0]
    return out


def _garch_nll(r2: np.ndarray, h: np.ndarray) -> float:
    hh = h[:-1]
    return 0.5 * float(np.sum(np.log(2.0 * np.pi) + np.log(hh) + r2 / hh))


def garch_loglik(returns: Any, omega: float, alpha: float, beta: float, *,
                 initial_variance: float | None = None) -> float:
    """Gaussian log-likelihood ``-1/2 sum(log 2 pi + log h[t] + r[t]^2 / h[t])`` of a GARCH(1,1)."""
    r, _ = _as_returns(returns, "returns", min_obs=1)
    r = r[:, 0]
    h = garch_variance(r, omega, alpha, beta, initial_variance=initial_variance)
    if np.any(h[:-1] <= 0):
        return -np.inf
    return -_garch_nll(r * r, h)


@dataclass(frozen=True)
class GarchFit:
    """Result of :func:`fit_garch`.

    Attributes
    ----------
    omega, alpha, beta : float
        Parameters (omega in squared return units per day).
    loglik : float
        Maximised Gaussian log-likelihood.
    variance : ndarray, shape (n + 1,)
        Conditional variance path (``variance[n]`` = next-day forecast).
    std_errors : ndarray, shape (3,)
        Standard errors of (omega, alpha, beta) from the inverse numerical Hessian of the
        log-likelihood (NaN where the optimum sits on a bound or the Hessian is not invertible).
        With variance targeting omega is not estimated and its standard error is NaN. These
        assume the returns are conditionally normal; with fat tails they are too small.
    n_obs : int
    variance_targeting : bool
    converged : bool
    """

    omega: float
    alpha: float
    beta: float
    loglik: float
    variance: np.ndarray
    std_errors: np.ndarray
    n_obs: int
    variance_targeting: bool
    converged: bool
    robust_std_errors: np.ndarray | None = None
    """Bollerslev-Wooldridge (sandwich) standard errors of (omega, alpha, beta), valid when the
    innovations are not normal (:mod:`dpm.models.calibration.robust`); NaN as ``std_errors``."""

    @property
    def persistence(self) -> float:
        """``alpha + beta`` (< 1 for a stationary model)."""
        return self.alpha + self.beta

    @property
    def long_run_variance(self) -> float:
        """Unconditional variance ``omega / (1 - alpha - beta)``."""
        return self.omega / (1.0 - self.persistence)

    def forecast(self, horizon: int) -> np.ndarray:
        """Daily variance forecasts ``E[h[n+k-1]]`` for ``k = 1..horizon`` (shape (horizon,)).

        ``E[h[n+k]] = VL + (alpha + beta)^k (h[n] - VL)`` with ``VL`` the long-run variance.
        """
        horizon = _check_int(horizon, "horizon", 1)
        vl = self.long_run_variance
        k = np.arange(horizon, dtype=np.float64)
        return vl + self.persistence ** k * (self.variance[-1] - vl)

    def horizon_variance(self, horizon: int) -> float:
        """Variance of the ``horizon``-day log return: the sum of the daily forecasts."""
        return float(np.sum(self.forecast(horizon)))


def _numerical_hessian(f, x: np.ndarray, step: np.ndarray) -> np.ndarray:
    k = x.size
    hess = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            ei = np.zeros(k)
            ej = np.zeros(k)
            ei[i] = step[i]
            ej[j] = step[j]
            val = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4.0 * step[i] * step[j])
            hess[i, j] = hess[j, i] = val
    return hess


def fit_garch(returns: Any, *, variance_targeting: bool = False, min_obs: int = 100,
              max_persistence: float = 1.0 - 1e-6) -> GarchFit:
    """Fit a zero-mean GARCH(1,1) by Gaussian maximum likelihood.

    The returns are scaled by their root mean square before optimising (so omega is of order 0.05
    instead of 1e-5), the likelihood is maximised with SLSQP under ``omega > 0``, ``alpha, beta >= 0``
    and the stationarity constraint ``alpha + beta <= max_persistence < 1`` from several starting
    points, and the best optimum is mapped back. With ``variance_targeting=True`` omega is fixed at
    ``(1 - alpha - beta) * mean(r**2)`` (Engle & Mezrich 1996) and only alpha, beta are estimated.

    Parameters
    ----------
    returns : array_like, shape (n,)
        Daily log returns (finite).
    variance_targeting : bool
    min_obs : int
        Fewer returns raise :class:`~dpm.errors.InvalidInputError`.
    max_persistence : float
        Upper bound on ``alpha + beta``.

    Returns
    -------
    GarchFit
    """
    r, squeeze = _as_returns(returns, "returns", min_obs=min_obs)
    if not squeeze and r.shape[1] != 1:
        raise InvalidInputError(f"returns: GARCH(1,1) is univariate, got shape {r.shape}")
    r = r[:, 0]
    scale2 = float(np.mean(r * r))
    if scale2 <= 0:
        raise InvalidInputError("returns: all zero; GARCH variance is undefined")
    x = r / np.sqrt(scale2)
    x2 = x * x
    n = x.size
    h0 = 1.0  # mean(x^2) = 1 after scaling

    def nll(theta: np.ndarray) -> float:
        if variance_targeting:
            a, b = theta
            w = (1.0 - a - b) * h0
        else:
            w, a, b = theta
        if w <= 0 or a < 0 or b < 0:
            return 1e300
        h = _garch_path(x, w, a, b, h0)
        if np.any(h[:-1] <= 0) or not np.all(np.isfinite(h)):
            return 1e300
        return _garch_nll(x2, h)

    cons = [{"type": "ineq", "fun": lambda th: max_persistence - th[-2] - th[-1]}]
    starts = [(0.05, 0.90), (0.10, 0.85), (0.15, 0.70), (0.03, 0.96), (0.25, 0.50)]
    best = None
    for a0, b0 in starts:
        if variance_targeting:
            theta0 = np.array([a0, b0])
            bounds = [(0.0, 1.0), (0.0, 1.0)]
        else:
            theta0 = np.array([(1.0 - a0 - b0), a0, b0])
            bounds = [(1e-8, 10.0), (0.0, 1.0), (0.0, 1.0)]
        res = optimize.minimize(nll, theta0, method="SLSQP", bounds=bounds, constraints=cons,
                                options={"maxiter": 500, "ftol": 1e-12})
        if best is None or res.fun < best.fun:
            best = res
    theta = np.asarray(best.x, dtype=np.float64)
    # standard errors from the observed information (scaled parameters), mapped back
    se = np.full(3, np.nan)
    try:
        step = np.maximum(np.abs(theta) * 1e-4, 1e-6)
        interior = np.all(theta - step > 0) and (theta[-2] + theta[-1] + 2 * step[-1] < 1.0)
        if interior:
            hess = _numerical_hessian(nll, theta, step)
            cov = np.linalg.inv(hess)
            d = np.diag(cov)
            if np.all(d > 0):
                s = np.sqrt(d)
                if variance_targeting:
                    se[1:] = s
                else:
                    se[:] = s
                    se[0] *= scale2
    except np.linalg.LinAlgError:
        pass
    rse = np.full(3, np.nan)

    def loglik_obs(th: np.ndarray) -> np.ndarray:
        if variance_targeting:
            a, b = th
            w = (1.0 - a - b) * h0
        else:
            w, a, b = th
        hh = _garch_path(x, w, a, b, h0)[:-1]
        if not np.all(hh > 0):
            return np.full(n, np.nan)
        return -0.5 * (np.log(2.0 * np.pi) + np.log(hh) + x2 / hh)

    if np.all(np.isfinite(se[-2:])):
        _, sandwich = sandwich_covariance(loglik_obs, theta)
        d = np.diag(sandwich)
        if np.all(d > 0):
            rse[3 - theta.size:] = np.sqrt(d)
            if not variance_targeting:
                rse[0] *= scale2
    if variance_targeting:
        alpha, beta = float(theta[0]), float(theta[1])
        omega_s = (1.0 - alpha - beta) * h0
    else:
        omega_s, alpha, beta = (float(v) for v in theta)
    omega = omega_s * scale2
    h = _garch_path(r, omega, alpha, beta, scale2)
    loglik = -_garch_nll(r * r, h)
    return GarchFit(omega, alpha, beta, loglik, h, se, n, bool(variance_targeting),
                    bool(best.success), rse)
