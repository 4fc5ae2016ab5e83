"""GJR-GARCH(1,1) with normal, Student-t or skewed-t innovations, by maximum likelihood.

``h[t+1] = omega + (alpha + gamma 1{r[t] < 0}) r[t]^2 + beta h[t]``, ``r[t] = sqrt(h[t]) z[t]`` with
``z`` a unit-variance innovation (:mod:`dpm.models.calibration.innovations`). ``gamma = 0``
(``asymmetric=False``) is the plain GARCH(1,1); ``gamma > 0`` is the leverage effect (falls raise
volatility more than rises; crypto often shows ``gamma <= 0``). Zero conditional mean.

Conventions follow the ``arch`` package (K. Sheppard, https://github.com/bashtage/arch, read
2025) so that fits agree with it: the recursion starts one step before the sample from the
*backcast* ``sum_i w_i r[i]^2`` over the first ``min(75, n)`` returns with weights ``0.94^i``
(normalised), the asymmetric term taking half of it; the constraints are ``alpha >= 0``,
``alpha + gamma >= 0``, ``beta >= 0`` and ``alpha + gamma/2 + beta < 1``.

References
----------
* L. R. Glosten, R. Jagannathan, D. E. Runkle, "On the relation between the expected value and
  the volatility of the nominal excess return on stocks", *J. Finance* 48(5) (1993) 1779-1801.
* T. Bollerslev, *Rev. Economics and Statistics* 69(3) (1987) 542-547 (t innovations);
  B. E. Hansen, *Int. Economic Review* 35(3) (1994) 705-730 (skewed t).
* T. Bollerslev, J. M. Wooldridge, *Econometric Reviews* 11(2) (1992) 143-172 (robust errors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, signal

from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns, _check_int
from dpm.models.calibration.innovations import DISTRIBUTIONS, Innovation, check_shape, standardized_logpdf
from dpm.models.calibration.robust import sandwich_covariance

__all__ = ["GJRGarchFit", "arch_backcast", "fit_gjr_garch", "gjr_variance"]

_SHAPE_BOUNDS = {"nu": (2.05, 500.0), "eta": (2.05, 500.0), "lambda": (-0.99, 0.99)}
_SHAPE_START = {"nu": 6.0, "eta": 6.0, "lambda": -0.05}


def arch_backcast(returns: Any) -> float:
    """Starting variance: ``sum_i w_i r[i]^2``, ``w_i ∝ 0.94^i`` over the first ``min(75, n)`` returns."""
    r, _ = _as_returns(returns, "returns", min_obs=1)
    x = r[:, 0]
    tau = min(75, x.size)
    w = 0.94 ** np.arange(tau)
    return float(np.sum(x[:tau] ** 2 * w / w.sum()))


def _path(r: np.ndarray, omega: float, alpha: float, gamma: float, beta: float, h_init: float) -> np.ndarray:
    """Variance path, shape (n + 1,): ``out[t]`` is the variance of ``r[t]`` given ``r[:t]``."""
    neg = r < 0.0
    x = omega + (alpha + gamma * neg) * r * r
    out = np.empty(r.size + 1)
    out[0] = omega + (alpha + 0.5 * gamma + beta) * h_init
    if r.size:
        out[1:] = signal.lfilter([1.0], [1.0, -beta], x, zi=[beta * out[0]])[0]
    return out


def gjr_variance(returns: Any, omega: float, alpha: float, gamma: float, beta: float, *,
                 initial_variance: float | None = None) -> np.ndarray:
    """Conditional variance path of a GJR-GARCH(1,1), shape (n + 1,) (last row: next-day forecast).

    ``initial_variance`` is the backcast (default :func:`arch_backcast` of ``returns``).
    """
    r, squeeze = _as_returns(returns, "returns", min_obs=1)
    if not squeeze and r.shape[1] != 1:
        raise InvalidInputError(f"returns: GJR-GARCH is univariate, got shape {r.shape}")
    for name, v in (("omega", omega), ("alpha", alpha), ("beta", beta)):
        if not np.isfinite(v) or v < 0:
            raise InvalidInputError(f"{name}: must be finite and >= 0, got {v!r}")
    if not np.isfinite(gamma) or alpha + gamma < 0:
        raise InvalidInputError(f"gamma: alpha + gamma must be >= 0, got alpha={alpha!r}, gamma={gamma!r}")
    h0 = arch_backcast(r) if initial_variance is None else float(initial_variance)
    return _path(r[:, 0], float(omega), float(alpha), float(gamma), float(beta), h0)


@dataclass(frozen=True)
class GJRGarchFit:
    """Result of :func:`fit_gjr_garch` (parameters in the units of the returns given).

    Attributes
    ----------
    omega, alpha, gamma, beta : float
        Variance equation (``gamma = 0`` when not asymmetric).
    dist : str
    shape : tuple of float
        Innovation shape (``(nu,)``, ``(eta, lambda)`` or ``()``).
    loglik : float
    variance : ndarray, shape (n + 1,)
        Conditional variances on the fit sample; ``variance[n]`` forecasts the next day.
    param_names : tuple of str
    params, std_errors, robust_std_errors : ndarray, shape (k,)
        Estimates, classic (inverse Hessian) and Bollerslev-Wooldridge standard errors, in the
        order of ``param_names``. NaN where the Hessian is not invertible.
    n_obs : int
    asymmetric : bool
    initial_variance : float
        Backcast used to start the recursion (kept to filter new data the same way).
    converged : bool
        SLSQP finished normally, or stopped with "positive directional derivative for linesearch"
        (status 8), which it reports at optima on a constraint such as ``alpha + beta -> 1``.
    """

    omega: float
    alpha: float
    gamma: float
    beta: float
    dist: str
    shape: tuple[float, ...]
    loglik: float
    variance: np.ndarray
    param_names: tuple[str, ...]
    params: np.ndarray
    std_errors: np.ndarray
    robust_std_errors: np.ndarray
    n_obs: int
    asymmetric: bool
    initial_variance: float
    converged: bool

    @property
    def innovation(self) -> Innovation:
        return Innovation(self.dist, self.shape)

    @property
    def persistence(self) -> float:
        """``alpha + gamma E[z^2 1{z<0}] + beta`` (the decay of variance forecasts)."""
        return self.alpha + self.gamma * self.innovation.negative_second_moment() + self.beta

    @property
    def long_run_variance(self) -> float:
        p = self.persistence
        return self.omega / (1.0 - p) if p < 1.0 else np.inf

    @property
    def aic(self) -> float:
        return 2.0 * self.params.size - 2.0 * self.loglik

    def variance_path(self, returns: Any) -> np.ndarray:
        """Variance path over ``returns`` with the fitted parameters and backcast (shape (m + 1,)).

        ``returns`` may extend the fit sample (same start): row ``t`` then uses ``returns[:t]`` only.
        """
        r, _ = _as_returns(returns, "returns", min_obs=1)
        return _path(r[:, 0], self.omega, self.alpha, self.gamma, self.beta, self.initial_variance)

    def forecast(self, horizon: int) -> np.ndarray:
        """Daily variance forecasts ``E[h[n+k]]``, ``k = 0..horizon-1`` from the end of the fit sample."""
        horizon = _check_int(horizon, "horizon", 1)
        p = self.persistence
        k = np.arange(horizon, dtype=np.float64)
        if p >= 1.0:
            return self.variance[-1] + self.omega * k
        vl = self.long_run_variance
        return vl + p ** k * (self.variance[-1] - vl)

    def simulate(self, h_next: Any, z: Any) -> np.ndarray:
        """Log returns over ``horizon`` days from next-day variances ``h_next`` (shape (S,)) and
        standardised innovations ``z`` (shape (S, horizon)); returns the ``horizon``-day sums (S,).

        The variance is updated each simulated day with the GJR recursion, so multi-day scenarios
        carry the volatility feedback of their own first days.
        """
        zz = np.atleast_2d(np.asarray(z, dtype=np.float64))
        h = np.broadcast_to(np.asarray(h_next, dtype=np.float64), (zz.shape[0],)).copy()
        total = np.zeros(zz.shape[0])
        for d in range(zz.shape[1]):
            r = np.sqrt(h) * zz[:, d]
            total += r
            h = self.omega + (self.alpha + self.gamma * (r < 0)) * r * r + self.beta * h
        return total


def _split(theta: np.ndarray, asymmetric: bool) -> tuple[float, float, float, float, tuple[float, ...]]:
    if asymmetric:
        return theta[0], theta[1], theta[2], theta[3], tuple(theta[4:])
    return theta[0], theta[1], 0.0, theta[2], tuple(theta[3:])


def fit_gjr_garch(returns: Any, *, dist: str = "t", asymmetric: bool = True, min_obs: int = 100,
                  robust: bool = True) -> GJRGarchFit:
    """Fit a zero-mean GJR-GARCH(1,1) (or GARCH(1,1) with ``asymmetric=False``) by maximum likelihood.

    Returns are scaled to unit mean square before optimising; the likelihood (innovation density
    ``dist`` of :mod:`~dpm.models.calibration.innovations`) is maximised with SLSQP under the
    ``arch`` constraints (module docstring) from the best of a few starting points, and mapped back.

    Parameters
    ----------
    returns : array_like, shape (n,)
        Daily log returns.
    dist : {"normal", "t", "skewt"}
    asymmetric : bool
        Estimate ``gamma`` (GJR); False fixes ``gamma = 0``.
    min_obs : int
    robust : bool
        Compute the classic and robust standard errors (``k`` extra likelihood passes; set False
        in walk-forward refits that do not use them).

    Returns
    -------
    GJRGarchFit
    """
    if dist not in DISTRIBUTIONS:
        raise InvalidInputError(f"dist: expected one of {sorted(DISTRIBUTIONS)}, got {dist!r}")
    r, squeeze = _as_returns(returns, "returns", min_obs=min_obs)
    if not squeeze and r.shape[1] != 1:
        raise InvalidInputError(f"returns: GJR-GARCH is univariate, got shape {r.shape}")
    r = r[:, 0]
    scale2 = float(np.mean(r * r))
    if scale2 <= 0:
        raise InvalidInputError("returns: all zero; GARCH variance is undefined")
    x = r / np.sqrt(scale2)
    bc = arch_backcast(x)
    shape_names = DISTRIBUTIONS[dist]
    names = ("omega", "alpha") + (("gamma",) if asymmetric else ()) + ("beta",) + shape_names

    def loglik_obs(theta: np.ndarray) -> np.ndarray:
        w, a, g, b, shp = _split(theta, asymmetric)
        h = _path(x, w, a, g, b, bc)[:-1]
        if not np.all(h > 0) or not np.all(np.isfinite(h)):
            return np.full(x.size, np.nan)
        return standardized_logpdf(x / np.sqrt(h), dist, shp) - 0.5 * np.log(h)

    def nll(theta: np.ndarray) -> float:
        w, a, g, b, shp = _split(theta, asymmetric)
        if w <= 0 or a < 0 or b < 0 or a + g < 0:
            return 1e300
        val = -float(np.sum(loglik_obs(theta)))
        return val if np.isfinite(val) else 1e300

    bounds = [(1e-8, 10.0), (0.0, 1.0)] + ([(-1.0, 2.0)] if asymmetric else []) + [(0.0, 1.0)]
    bounds += [_SHAPE_BOUNDS[s] for s in shape_names]
    ib = 3 if asymmetric else 2  # index of beta
    cons = [{"type": "ineq", "fun": lambda th: 1.0 - 1e-6 - th[1] - th[ib] - (0.5 * th[2] if asymmetric else 0.0)}]
    if asymmetric:
        cons.append({"type": "ineq", "fun": lambda th: th[1] + th[2]})
    shape0 = [_SHAPE_START[s] for s in shape_names]
    starts = []
    for a0, b0 in ((0.05, 0.90), (0.10, 0.85), (0.15, 0.80), (0.03, 0.95), (0.20, 0.70)):
        for g0 in ((0.0, 0.05) if asymmetric else (0.0,)):
            th = [1.0 - a0 - b0 - 0.5 * g0, a0] + ([g0] if asymmetric else []) + [b0] + shape0
            starts.append(np.array(th))
    # optimise from the two best starting points (a cheap grid search first, as arch does)
    starts.sort(key=nll)
    best = None
    for th0 in starts[:2]:
        res = optimize.minimize(nll, th0, method="SLSQP", bounds=bounds, constraints=cons,
                                options={"maxiter": 500, "ftol": 1e-11})
        if best is None or res.fun < best.fun:
            best = res
    theta = np.asarray(best.x, dtype=np.float64)
    se = np.full(theta.size, np.nan)
    rse = np.full(theta.size, np.nan)
    if robust:
        classic, sandwich = sandwich_covariance(loglik_obs, theta)
        se = np.sqrt(np.where(np.diag(classic) > 0, np.diag(classic), np.nan))
        rse = np.sqrt(np.where(np.diag(sandwich) > 0, np.diag(sandwich), np.nan))
        se[0] *= scale2
        rse[0] *= scale2
    w, a, g, b, shp = _split(theta, asymmetric)
    shp = check_shape(dist, shp) if shp else ()
    omega = w * scale2
    h = _path(r, omega, a, g, b, bc * scale2)
    loglik = float(np.sum(standardized_logpdf(r / np.sqrt(h[:-1]), dist, shp) - 0.5 * np.log(h[:-1])))
    params = theta.copy()
    params[0] = omega
    return GJRGarchFit(float(omega), float(a), float(g), float(b), dist, shp, loglik, h, names, params,
                       se, rse, r.size, bool(asymmetric), bc * scale2, best.status in (0, 8))
