"""Dynamic calibration: EWMA and GARCH volatility, covariance shrinkage, correlation repair and
dynamic scan ranges with anti-procyclicality (APC) tools.

Conventions
-----------
* ``returns`` are daily log returns, shape ``(n,)`` or ``(n, A)`` (rows = days, columns = assets),
  as produced by :meth:`dpm.history.PriceHistory.log_returns`. Means are taken as zero (RiskMetrics
  convention) unless a function says otherwise: daily crypto means are far below their standard
  errors.
* Variance paths have ``n + 1`` rows: ``variance[t]`` is the forecast of ``Var(r[t])`` made with
  ``r[:t]`` only (no look-ahead); ``variance[n]`` is the forecast for the next, unseen day.
* Vols are per day unless a name says ``annual`` (multiply by ``sqrt(365)`` for crypto, which
  trades every day).

References
----------
* J.P. Morgan/Reuters, *RiskMetrics — Technical Document*, 4th ed., 1996, ch. 5 (EWMA, lambda 0.94).
* T. Bollerslev, "Generalized autoregressive conditional heteroskedasticity", *J. Econometrics*
  31 (1986) 307-327 (GARCH(1,1)).
* O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
  *J. Multivariate Analysis* 88 (2004) 365-411 (identity target); "Honey, I shrunk the sample
  covariance matrix", *J. Portfolio Management* 30(4) (2004) 110-119 (constant-correlation target).
* N. J. Higham, "Computing the nearest correlation matrix — a problem from finance", *IMA J.
  Numer. Anal.* 22 (2002) 329-343.
* Commission Delegated Regulation (EU) No 153/2013 (EMIR RTS on CCP requirements), Art. 24
  (confidence, look-back), Art. 28 (procyclicality: 25 % buffer, 25 % weight on stressed
  observations, 10-year look-back floor).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, signal, stats

from ._validation import as_float_array, check_finite
from .correlation import check_correlation, nearest_psd_correlation
from .errors import InvalidInputError

__all__ = [
    "DynamicScanRange",
    "GarchFit",
    "ShrinkageEstimate",
    "VolShockProxy",
    "check_correlation",
    "cov_to_corr",
    "ewma_correlation",
    "ewma_covariance",
    "ewma_variance",
    "fit_garch",
    "fit_vol_shock_proxy",
    "garch_loglik",
    "garch_variance",
    "ledoit_wolf",
    "nearest_psd_correlation",
    "realized_log_vol",
    "scale_vol_shock_to_expiry",
    "scan_ranges",
    "vol_shock_sizes",
]


# ---------------------------------------------------------------------------------------------
# Input helpers
# ---------------------------------------------------------------------------------------------

def _as_returns(returns: Any, name: str = "returns", min_obs: int = 1) -> tuple[np.ndarray, bool]:
    """(n, A) float64 copy-safe view of ``returns`` and whether the input was 1-d."""
    arr = as_float_array(returns, name)
    if arr.ndim == 1:
        arr, squeeze = arr[:, None], True
    elif arr.ndim == 2:
        squeeze = False
    else:
        raise InvalidInputError(f"{name}: expected shape (n,) or (n, assets), got {arr.shape}")
    if arr.shape[0] < min_obs:
        raise InvalidInputError(
            f"{name}: too little history: {arr.shape[0]} observations, need at least {min_obs}"
        )
    if arr.shape[1] == 0:
        raise InvalidInputError(f"{name}: no assets (shape {arr.shape})")
    check_finite(arr, name)
    return arr, squeeze


def _check_lambda(lambda_: float) -> float:
    lam = float(lambda_)
    if not (0.0 < lam < 1.0):
        raise InvalidInputError(f"lambda_: decay must be in (0, 1), got {lambda_!r}")
    return lam


def _check_level(level: float, name: str = "confidence") -> float:
    lv = float(level)
    if not (0.0 < lv < 1.0):
        raise InvalidInputError(f"{name}: must be in (0, 1), got {level!r}")
    return lv


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise InvalidInputError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# EWMA
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# GARCH(1,1)
# ---------------------------------------------------------------------------------------------

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
        With variance targeting omega is not estimated and its standard error is NaN.
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
    if variance_targeting:
        alpha, beta = float(theta[0]), float(theta[1])
        omega_s = (1.0 - alpha - beta) * h0
    else:
        omega_s, alpha, beta = (float(v) for v in theta)
    omega = omega_s * scale2
    h = _garch_path(r, omega, alpha, beta, scale2)
    loglik = -_garch_nll(r * r, h)
    return GarchFit(omega, alpha, beta, loglik, h, se, n, bool(variance_targeting),
                    bool(best.success))


# ---------------------------------------------------------------------------------------------
# Ledoit-Wolf shrinkage
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShrinkageEstimate:
    """Result of :func:`ledoit_wolf`: ``covariance = shrinkage * target + (1 - shrinkage) * sample``."""

    covariance: np.ndarray
    sample: np.ndarray
    target: np.ndarray
    shrinkage: float
    target_kind: str


def ledoit_wolf(returns: Any, target: str = "constant_correlation", *,
                demean: bool = True) -> ShrinkageEstimate:
    """Ledoit-Wolf shrinkage of the sample covariance with the analytic optimal intensity.

    Parameters
    ----------
    returns : array_like, shape (n, A)
    target : {"constant_correlation", "identity"}
        ``"constant_correlation"`` (Ledoit & Wolf, JPM 2004): ``F_ii = s_ii``,
        ``F_ij = rbar sqrt(s_ii s_jj)`` with ``rbar`` the average sample correlation; intensity
        ``max(0, min(1, (pi - rho) / gamma / n))``.
        ``"identity"`` (Ledoit & Wolf, JMVA 2004): ``F = mu I``, ``mu = tr(S)/A``; intensity
        ``min(bbar^2, d^2) / d^2`` with ``d^2 = ||S - mu I||^2``,
        ``bbar^2 = n^-2 sum_k ||x_k x_k^T - S||^2`` (norm ``||M||^2 = tr(M M^T)/A``).
    demean : bool
        Subtract column means first (the papers do); the sample covariance divides by ``n``.

    Returns
    -------
    ShrinkageEstimate
    """
    r, _ = _as_returns(returns, "returns", min_obs=2)
    n, p = r.shape
    x = r - r.mean(axis=0) if demean else r.copy()
    sample = (x.T @ x) / n
    if target == "identity":
        mu = np.trace(sample) / p
        prior = mu * np.eye(p)
        d2 = np.sum((sample - prior) ** 2) / p
        row2 = np.sum(x * x, axis=1)
        b2bar = (np.sum(row2 * row2) - n * np.sum(sample * sample)) / (p * n * n)
        b2 = min(b2bar, d2)
        shrink = 0.0 if d2 == 0 else float(b2 / d2)
    elif target == "constant_correlation":
        if p < 2:
            raise InvalidInputError("returns: the constant-correlation target needs >= 2 assets")
        var = np.diag(sample).copy()
        if np.any(var <= 0):
            j = int(np.flatnonzero(var <= 0)[0])
            raise InvalidInputError(f"returns: column {j} has zero variance")
        sd = np.sqrt(var)
        corr = sample / np.outer(sd, sd)
        rbar = (corr.sum() - p) / (p * (p - 1))
        prior = rbar * np.outer(sd, sd)
        np.fill_diagonal(prior, var)
        y = x * x
        phi_mat = (y.T @ y) / n - 2.0 * (x.T @ x) * sample / n + sample ** 2
        phi = phi_mat.sum()
        term1 = ((x ** 3).T @ x) / n
        term2 = var[:, None] * sample
        theta = term1 - term2  # theta_ii,ij = E[(x_i^2 - s_ii)(x_i x_j - s_ij)] (terms 3, 4 cancel)
        np.fill_diagonal(theta, 0.0)
        rho = np.trace(phi_mat) + rbar * np.sum(np.outer(1.0 / sd, sd) * theta)
        gamma = np.sum((sample - prior) ** 2)
        # gamma = 0 when the target equals the sample (always for 2 assets): nothing to shrink
        kappa = (phi - rho) / gamma if gamma > 1e-24 * np.sum(sample ** 2) else 0.0
        shrink = float(max(0.0, min(1.0, kappa / n)))
    else:
        raise InvalidInputError(
            f"target: expected 'constant_correlation' or 'identity', got {target!r}"
        )
    cov = shrink * prior + (1.0 - shrink) * sample
    return ShrinkageEstimate(cov, sample, prior, shrink, target)


# ---------------------------------------------------------------------------------------------
# Correlation matrices
# ---------------------------------------------------------------------------------------------

# check_correlation and nearest_psd_correlation live in dpm.correlation (numpy only, so that the
# margin engine can validate correlations without importing scipy.stats/signal); re-exported above.


# ---------------------------------------------------------------------------------------------
# Implied-vol shock proxy (no implied-vol history is bundled)
# ---------------------------------------------------------------------------------------------

def realized_log_vol(returns: Any, window: int = 30) -> np.ndarray:
    """Log of the trailing ``window``-day realised vol: ``0.5 ln(mean(r[t-window+1..t]^2))``.

    Shape as ``returns``; NaN for the first ``window - 1`` rows (and where the window is all zero).
    """
    window = _check_int(window, "window", 2)
    r, squeeze = _as_returns(returns, "returns", min_obs=window)
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r * r]), axis=0)
    out = np.full(r.shape, np.nan)
    ms = (c[window:] - c[:-window]) / window
    with np.errstate(divide="ignore"):
        out[window - 1:] = np.where(ms > 0, 0.5 * np.log(np.maximum(ms, 1e-300)), np.nan)
    return out[:, 0] if squeeze else out


@dataclass(frozen=True)
class VolShockProxy:
    """Joint implied-vol shock as a function of the price move, fitted on realised vol.

    **Proxy, stated plainly**: no implied-vol history is bundled, so the relative change of the
    30-day implied vol over ``horizon`` days is proxied by the change of the log 30-day *realised*
    vol, fitted per underlying by least squares on the same-window log return::

        d ln RV30 = c0 + c1 * r_h + c2 * |r_h|  (+ noise),

    ``vol_shock = expm1(iv_beta * (c0 + c1 * r_h + c2 * |r_h|))`` (relative, 0.3 = vol x 1.3).
    ``c1 < 0`` is the leverage effect, ``c2 > 0`` the "big moves raise vol" effect. ``iv_beta``
    scales realised-vol changes to implied-vol changes (1.0 = take them as they are; implied vol
    usually moves less than 30-day realised vol, so 1.0 is conservative for short-vol books and
    optimistic for none). The shock applies to the 30-day point of the surface; use
    :func:`scale_vol_shock_to_expiry` for other expiries.
    """

    underlyings: tuple[str, ...]
    coef: np.ndarray  # (U, 3): c0, c1, c2
    horizon_days: int
    window: int
    iv_beta: float
    r_squared: np.ndarray  # (U,)

    def apply(self, log_returns: Any) -> np.ndarray:
        """Relative vol shocks for scenario log returns of shape (S, U)."""
        x = as_float_array(log_returns, "log_returns")
        if x.ndim != 2 or x.shape[1] != len(self.underlyings):
            raise InvalidInputError(
                f"log_returns: expected shape (S, {len(self.underlyings)}), got {x.shape}"
            )
        c = self.coef
        z = c[:, 0] + c[:, 1] * x + c[:, 2] * np.abs(x)
        return np.expm1(self.iv_beta * z)


def fit_vol_shock_proxy(returns: Any, *, horizon_days: int = 1, window: int = 30,
                        iv_beta: float = 1.0,
                        underlyings: Sequence[str] | None = None) -> VolShockProxy:
    """Fit :class:`VolShockProxy` on daily log returns (shape (n, U)).

    Uses overlapping ``horizon_days`` windows: the regressand is
    ``ln RV30[t+h] - ln RV30[t]`` and the regressor the log return over ``(t, t+h]``.
    """
    h = _check_int(horizon_days, "horizon_days", 1)
    r, _ = _as_returns(returns, "returns", min_obs=window + h + 10)
    lv = realized_log_vol(r, window)
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r]), axis=0)
    rh = c[h:] - c[:-h]  # rh[s] = sum r[s .. s+h-1]
    coef = np.empty((r.shape[1], 3))
    r2 = np.empty(r.shape[1])
    for u in range(r.shape[1]):
        t_end = np.arange(window - 1 + h, r.shape[0])  # last day of the window
        dlv = lv[t_end, u] - lv[t_end - h, u]
        ret = rh[t_end - h + 1, u]
        ok = np.isfinite(dlv)
        X = np.column_stack([np.ones(ok.sum()), ret[ok], np.abs(ret[ok])])
        beta, *_ = np.linalg.lstsq(X, dlv[ok], rcond=None)
        coef[u] = beta
        resid = dlv[ok] - X @ beta
        tss = np.sum((dlv[ok] - dlv[ok].mean()) ** 2)
        r2[u] = 1.0 - np.sum(resid ** 2) / tss if tss > 0 else 0.0
    names = tuple(underlyings) if underlyings is not None else tuple(
        f"u{j}" for j in range(r.shape[1]))
    if len(names) != r.shape[1]:
        raise InvalidInputError(f"underlyings: {len(names)} names for {r.shape[1]} columns")
    return VolShockProxy(names, coef, h, int(window), float(iv_beta), r2)


def vol_shock_sizes(returns: Any, confidence: float = 0.99, horizon_days: int = 2, *,
                    window: int = 30, lookback: int = 3650, min_obs: int = 250,
                    iv_beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic vol-shock sizes (up, down) per day from the realised-vol proxy.

    For each day ``t``, the empirical ``confidence`` quantile of the ``horizon_days`` changes of
    ``ln RV30`` observed in the trailing ``lookback`` days up to ``t`` gives
    ``up[t] = expm1(iv_beta * q_conf)`` and ``down[t] = -expm1(iv_beta * q_(1-conf))`` (both >= 0,
    relative to the current vol). NaN until ``min_obs`` changes are available. This is a
    **proxy for implied-vol changes** (see :class:`VolShockProxy`).

    Returns
    -------
    up, down : ndarray, shape like ``returns``
    """
    conf = _check_level(confidence)
    h = _check_int(horizon_days, "horizon_days", 1)
    r, squeeze = _as_returns(returns, "returns", min_obs=window + h)
    lv = realized_log_vol(r, window)
    d = np.full_like(lv, np.nan)
    d[h:] = lv[h:] - lv[:-h]
    n, a = r.shape
    up = np.full((n, a), np.nan)
    down = np.full((n, a), np.nan)
    for u in range(a):
        col = d[:, u]
        for t in range(n):
            seg = col[max(0, t - lookback + 1):t + 1]
            seg = seg[np.isfinite(seg)]
            if seg.size >= min_obs:
                qd, qu = np.quantile(seg, [1.0 - conf, conf])
                up[t, u] = np.expm1(iv_beta * max(qu, 0.0))
                down[t, u] = -np.expm1(iv_beta * min(qd, 0.0))
    if squeeze:
        return up[:, 0], down[:, 0]
    return up, down


def scale_vol_shock_to_expiry(shock_30d: Any, dte_days: Any, *, power_short: float = 0.30,
                              power_long: float = 0.13, dte_floor: float = 1.0) -> np.ndarray:
    """Scale a 30-day relative vol shock to other expiries: ``shock * (30 / max(DTE, floor))^p``.

    ``p = power_short`` for ``DTE <= 30`` else ``power_long`` — the form Deribit's clones publish
    (Derive, Paradex; METHODOLOGY.md §1.2, §6), with Deribit's powers 0.30 / 0.13. Broadcasts.
    """
    s = as_float_array(shock_30d, "shock_30d")
    dte = as_float_array(dte_days, "dte_days")
    check_finite(s, "shock_30d")
    check_finite(dte, "dte_days")
    eff = np.maximum(dte, dte_floor)
    p = np.where(eff <= 30.0, power_short, power_long)
    return s * (30.0 / eff) ** p


# ---------------------------------------------------------------------------------------------
# Dynamic scan ranges with anti-procyclicality
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DynamicScanRange:
    """Daily price-scan ranges (relative moves) per asset; see :func:`scan_ranges`.

    Every array has shape ``(n, A)``; row ``t`` is the range set at the close of day ``t`` (it uses
    returns up to and including day ``t``) and applies to the next ``horizon_days`` days.

    Attributes
    ----------
    dates : ndarray of datetime64[D] or None
    assets : tuple of str
    confidence, horizon_days : float, int
    ewma_vol : daily EWMA vol forecast for day t+1.
    raw : ``expm1(z * ewma_vol * sqrt(h))`` — the purely dynamic range.
    floor : APC floor range (NaN where not yet available or ``floor=None``).
    buffer_rate : buffer applied on the day (0 .. ``buffer``); 0 while released.
    buffer_released : bool, the release trigger fired (raw range rising fast).
    capped : bool, the daily-increase cap bound.
    range : final scan range (buffered, released or capped as described in :func:`scan_ranges`).
    vol_up, vol_down : relative 30-day implied-vol shock sizes from the realised-vol proxy.
    """

    dates: np.ndarray | None
    assets: tuple[str, ...]
    confidence: float
    horizon_days: int
    ewma_vol: np.ndarray
    raw: np.ndarray
    floor: np.ndarray
    buffer_rate: np.ndarray
    buffer_released: np.ndarray
    capped: np.ndarray
    range: np.ndarray
    vol_up: np.ndarray
    vol_down: np.ndarray

    def latest(self) -> dict[str, dict[str, float]]:
        """Last day's final price range and vol shocks per asset."""
        return {a: {"price_range": float(self.range[-1, j]), "vol_up": float(self.vol_up[-1, j]),
                    "vol_down": float(self.vol_down[-1, j])} for j, a in enumerate(self.assets)}


def _rolling_mean_sq(r: np.ndarray, window: int) -> np.ndarray:
    """Mean of r^2 over the trailing ``window`` rows (NaN for the first window-1 rows)."""
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r * r]), axis=0)
    out = np.full(r.shape, np.nan)
    out[window - 1:] = (c[window:] - c[:-window]) / window
    return out


def scan_ranges(returns: Any, confidence: float = 0.99, horizon_days: int = 2,
                lambda_: float = 0.94, *, floor: str | float | None = "stressed",
                stressed_window: int = 250, stress_weight: float = 0.25,
                long_term_days: int = 3650, min_floor_obs: int = 250, buffer: float = 0.25,
                release_trigger: float = 0.25, release_lookback: int = 5, rebuild_days: int = 20,
                max_daily_increase: float | None = None, warmup: int = 30,
                vol_window: int = 30, iv_beta: float = 1.0, dates: Any = None,
                assets: Sequence[str] | None = None) -> DynamicScanRange:
    """Dynamic price-scan ranges from EWMA vol, with EMIR-style anti-procyclicality tools.

    Steps for each day ``t`` and asset (``z`` = standard normal ``confidence`` quantile):

    1. ``raw = expm1(z * sigma_t * sqrt(horizon_days))`` with ``sigma_t`` the EWMA vol forecast for
       day ``t+1`` (``lambda_``). ``expm1`` of the log-return quantile is larger than both
       ``1 - exp(-x)`` (down move) and the log move, so the symmetric range ``±raw`` is
       conservative on both sides.
    2. Floor (RTS 153/2013 Art. 28(1)(b)/(c)):

       * ``"long_term"``: vol over the trailing ``long_term_days`` (10 years, expanding before
         that) — tool (c).
       * ``"stressed"``: ``sqrt(w * sigma_S^2 + (1 - w) * sigma_LT^2)``, ``w = stress_weight``
         (>= 25 %, tool (b)) and ``sigma_S`` the highest ``stressed_window``-day realised vol seen
         up to ``t`` (the worst window, no look-ahead), ``sigma_LT`` the long-term vol.
       * a float: a fixed range floor; ``None``: no floor.

       The floor needs ``min_floor_obs`` returns; before that it is NaN and not applied.
    3. Buffer (tool (a)): with ``base = max(raw, floor)``,
       ``range_t = max(base_t (1 + b_t), min(range_(t-1), base_t (1 + buffer)))``.
       ``b_t = buffer`` normally, so ``range = base (1 + buffer)``. The buffer is released
       (``b_t = 0``) on days when ``raw`` exceeds ``(1 + release_trigger)`` times its value
       ``release_lookback`` days earlier, and rebuilt linearly over ``rebuild_days`` afterwards. A
       released buffer absorbs the rise: the range stays at its previous level until ``base``
       overtakes it, then follows ``base`` without a buffer on top (it never drops because of a
       release). While margins fall, the buffer is back in full as soon as that costs no call.
    4. Optional speed limit: ``range_t <= range_(t-1) * (1 + max_daily_increase)``. This is a
       governance tool, not an EMIR one; it may push margin below the model level on crash days
       (``capped`` marks them) and so costs coverage.

    Vol-shock sizes come from :func:`vol_shock_sizes` (a realised-vol proxy for implied-vol
    changes; no implied-vol history exists in the bundled data).

    Parameters
    ----------
    returns : array_like, shape (n,) or (n, A)
        Daily log returns.
    dates, assets : optional labels stored on the result.

    Returns
    -------
    DynamicScanRange
    """
    conf = _check_level(confidence)
    h = _check_int(horizon_days, "horizon_days", 1)
    r, _ = _as_returns(returns, "returns", min_obs=max(warmup + 1, vol_window + h))
    n, a = r.shape
    if buffer < 0 or release_trigger < 0:
        raise InvalidInputError(f"buffer/release_trigger: must be >= 0, got {buffer}, {release_trigger}")
    if not (0.0 <= stress_weight <= 1.0):
        raise InvalidInputError(f"stress_weight: must be in [0, 1], got {stress_weight!r}")
    if max_daily_increase is not None and max_daily_increase <= 0:
        raise InvalidInputError(f"max_daily_increase: must be > 0, got {max_daily_increase!r}")
    z = stats.norm.ppf(conf)
    scale = z * np.sqrt(h)
    var = ewma_variance(r, lambda_, warmup=warmup)
    vol = np.sqrt(var[1:])  # row t: forecast for day t+1
    raw = np.expm1(scale * vol)

    # --- floor
    floor_rng = np.full((n, a), np.nan)
    if floor is not None:
        if isinstance(floor, str):
            if floor not in ("stressed", "long_term"):
                raise InvalidInputError(
                    f"floor: expected 'stressed', 'long_term', a number or None, got {floor!r}")
            c = np.cumsum(np.vstack([np.zeros((1, a)), r * r]), axis=0)
            idx = np.arange(n)
            lo = np.maximum(0, idx - long_term_days + 1)
            cnt = (idx - lo + 1)[:, None]
            lt_var = (c[idx + 1] - c[lo]) / cnt
            lt_var[cnt[:, 0] < min_floor_obs] = np.nan
            if floor == "long_term":
                fvar = lt_var
            else:
                sw = _check_int(stressed_window, "stressed_window", 2)
                roll = _rolling_mean_sq(r, sw)
                stressed = np.fmax.accumulate(np.where(np.isnan(roll), -np.inf, roll), axis=0)
                stressed[~np.isfinite(stressed)] = np.nan
                fvar = stress_weight * stressed + (1.0 - stress_weight) * lt_var
            floor_rng = np.expm1(scale * np.sqrt(fvar))
        else:
            fv = float(floor)
            if not np.isfinite(fv) or fv < 0:
                raise InvalidInputError(f"floor: a fixed floor must be finite and >= 0, got {floor!r}")
            floor_rng = np.full((n, a), fv)
    base = np.where(np.isnan(floor_rng), raw, np.fmax(raw, floor_rng))

    # --- buffer with release and rebuild, then the speed limit (sequential by nature)
    rate = np.zeros((n, a))
    released = np.zeros((n, a), dtype=bool)
    capped = np.zeros((n, a), dtype=bool)
    final = np.full((n, a), np.nan)
    b = np.full(a, float(buffer))
    step = float(buffer) / max(int(rebuild_days), 1)
    prev = np.full(a, np.nan)
    for t in range(n):
        if t >= release_lookback:
            past = raw[t - release_lookback]
            fire = np.isfinite(past) & (raw[t] > (1.0 + release_trigger) * past)
        else:
            fire = np.zeros(a, dtype=bool)
        b = np.where(fire, 0.0, np.minimum(float(buffer), b + step))
        released[t] = fire
        rate[t] = b
        # a released buffer absorbs the rise: margin keeps its previous level (up to the fully
        # buffered base) instead of dropping on the first day of stress
        val = base[t] * (1.0 + b)
        held = np.fmin(prev, base[t] * (1.0 + float(buffer)))
        val = np.where(np.isfinite(held), np.fmax(val, held), val)
        if max_daily_increase is not None:
            lim = prev * (1.0 + max_daily_increase)
            hit = np.isfinite(lim) & (val > lim)
            capped[t] = hit
            val = np.where(hit, lim, val)
        final[t] = val
        prev = np.where(np.isfinite(val), val, prev)

    up, down = vol_shock_sizes(r, conf, h, window=vol_window, lookback=long_term_days,
                               min_obs=min(min_floor_obs, max(n - vol_window - h, 1)),
                               iv_beta=iv_beta)
    names = tuple(assets) if assets is not None else tuple(f"u{j}" for j in range(a))
    if len(names) != a:
        raise InvalidInputError(f"assets: {len(names)} names for {a} columns")
    d = None if dates is None else np.asarray(dates).astype("datetime64[D]")
    if d is not None and d.shape != (n,):
        raise InvalidInputError(f"dates: expected {n} dates, got {d.shape}")
    return DynamicScanRange(d, names, conf, h, vol, raw, floor_rng, rate, released, capped,
                            final, up, down)
