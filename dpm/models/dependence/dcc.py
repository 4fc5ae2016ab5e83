"""Dynamic conditional correlation (DCC(1,1)), estimated in two steps.

With ``z[t]`` the standardised residuals of univariate volatility models (unit variance),

``Q[t+1] = (1 - a - b) Qbar + a z[t] z[t]^T + b Q[t]``,  ``R[t] = diag(Q[t])^-1/2 Q[t] diag(Q[t])^-1/2``,

``Qbar`` the sample second-moment matrix of ``z`` (correlation targeting) and ``Q[0] = Qbar``.
``a, b`` maximise the correlation part of the Gaussian log-likelihood
``-1/2 sum_t (ln det R[t] + z[t]^T R[t]^-1 z[t] - z[t]^T z[t])`` under ``a, b >= 0``, ``a + b < 1``.
The standard errors (classic and sandwich) treat the first-step residuals as data.

Reference: R. Engle, "Dynamic conditional correlation: a simple class of multivariate generalized
autoregressive conditional heteroskedasticity models", *J. Business & Economic Statistics* 20(3)
(2002) 339-350.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, signal

from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns
from dpm.models.calibration.robust import sandwich_covariance

__all__ = ["DCCFit", "dcc_correlation", "dcc_loglik_obs", "fit_dcc"]


def _q_path(z: np.ndarray, a: float, b: float, qbar: np.ndarray) -> np.ndarray:
    n, u = z.shape
    outer = (z[:, :, None] * z[:, None, :]).reshape(n, u * u)
    x = (1.0 - a - b) * qbar.ravel()[None, :] + a * outer
    out = np.empty((n + 1, u * u))
    out[0] = qbar.ravel()
    if n:
        out[1:] = signal.lfilter([1.0], [1.0, -b], x, axis=0, zi=(b * qbar.ravel())[None, :])[0]
    return out.reshape(n + 1, u, u)


def _normalise(q: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diagonal(q, axis1=-2, axis2=-1))
    r = q / (d[..., :, None] * d[..., None, :])
    idx = np.arange(q.shape[-1])
    r[..., idx, idx] = 1.0
    return r


def dcc_correlation(z: Any, a: float, b: float, qbar: Any = None) -> np.ndarray:
    """Correlation path ``R``, shape (n + 1, U, U): ``R[t]`` uses ``z[:t]`` only (``R[n]`` is tomorrow's).

    ``qbar`` defaults to ``z^T z / n``.
    """
    zz, _ = _as_returns(z, "z", min_obs=1)
    if not (np.isfinite(a) and np.isfinite(b) and a >= 0 and b >= 0 and a + b < 1):
        raise InvalidInputError(f"a, b: need a, b >= 0 and a + b < 1, got a={a!r}, b={b!r}")
    qb = (zz.T @ zz) / zz.shape[0] if qbar is None else np.asarray(qbar, dtype=np.float64)
    if qb.shape != (zz.shape[1],) * 2:
        raise InvalidInputError(f"qbar: expected shape {(zz.shape[1],) * 2}, got {qb.shape}")
    return _normalise(_q_path(zz, float(a), float(b), qb))


def dcc_loglik_obs(z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Per-observation correlation log-likelihood ``-1/2 (ln det R + z^T R^-1 z - z^T z)``.

    ``R`` has shape (n, U, U) aligned with ``z`` (n, U).
    """
    sign, logdet = np.linalg.slogdet(R)
    quad = np.einsum("ti,ti->t", z, np.linalg.solve(R, z[:, :, None])[:, :, 0])
    out = -0.5 * (logdet + quad - np.einsum("ti,ti->t", z, z))
    return np.where(sign > 0, out, np.nan)


@dataclass(frozen=True)
class DCCFit:
    """Result of :func:`fit_dcc`.

    Attributes
    ----------
    a, b : float
    qbar : ndarray, shape (U, U)
    loglik : float
        Correlation part of the log-likelihood.
    correlation : ndarray, shape (n + 1, U, U)
        ``R[t]`` from ``z[:t]``; the last row is the next-day forecast.
    std_errors, robust_std_errors : ndarray, shape (2,)
    n_obs : int
    converged : bool
    """

    a: float
    b: float
    qbar: np.ndarray
    loglik: float
    correlation: np.ndarray
    std_errors: np.ndarray
    robust_std_errors: np.ndarray
    n_obs: int
    converged: bool

    def correlation_path(self, z: Any) -> np.ndarray:
        """Correlation path over ``z`` (may extend the fit sample) with the fitted ``a, b, qbar``."""
        return dcc_correlation(z, self.a, self.b, self.qbar)


def fit_dcc(z: Any, *, min_obs: int = 100) -> DCCFit:
    """Fit DCC(1,1) on standardised residuals ``z`` (shape (n, U), U >= 2) by maximum likelihood.

    Starting points ``(a, b)`` in {(0.02, 0.95), (0.05, 0.90), (0.10, 0.80)}; SLSQP.
    """
    zz, _ = _as_returns(z, "z", min_obs=min_obs)
    n, u = zz.shape
    if u < 2:
        raise InvalidInputError(f"z: DCC needs at least 2 series, got {u}")
    qbar = (zz.T @ zz) / n

    def loglik_obs(theta: np.ndarray) -> np.ndarray:
        a, b = theta
        if a < 0 or b < 0 or a + b >= 1:
            return np.full(n, np.nan)
        R = _normalise(_q_path(zz, a, b, qbar))[:-1]
        return dcc_loglik_obs(zz, R)

    def nll(theta: np.ndarray) -> float:
        v = -float(np.sum(loglik_obs(theta)))
        return v if np.isfinite(v) else 1e300

    cons = [{"type": "ineq", "fun": lambda th: 1.0 - 1e-6 - th[0] - th[1]}]
    best = None
    for th0 in ((0.02, 0.95), (0.05, 0.90), (0.10, 0.80)):
        res = optimize.minimize(nll, np.array(th0), method="SLSQP", bounds=[(0.0, 1.0), (0.0, 1.0)],
                                constraints=cons, options={"maxiter": 300, "ftol": 1e-11})
        if best is None or res.fun < best.fun:
            best = res
    theta = np.asarray(best.x, dtype=np.float64)
    se = np.full(2, np.nan)
    rse = np.full(2, np.nan)
    if np.all(theta > 1e-5) and theta.sum() < 1.0 - 1e-5:
        classic, sandwich = sandwich_covariance(loglik_obs, theta, floor=1e-2)
        se = np.sqrt(np.where(np.diag(classic) > 0, np.diag(classic), np.nan))
        rse = np.sqrt(np.where(np.diag(sandwich) > 0, np.diag(sandwich), np.nan))
    a, b = float(theta[0]), float(theta[1])
    R = _normalise(_q_path(zz, a, b, qbar))
    ll = float(np.sum(dcc_loglik_obs(zz, R[:-1])))
    return DCCFit(a, b, qbar, ll, R, se, rse, n, best.status in (0, 8))


# ---------------------------------------------------------------------------------------------
# DCC-GARCH risk model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DCCModel:
    """DCC-GARCH risk model (:class:`dpm.models.risk_model.RiskModel`).

    Each asset gets a GJR-GARCH(1,1) with ``dist`` innovations (``asymmetric`` for GJR), the
    standardised residuals a DCC(1,1) correlation. Scenarios join the fitted margins with a Gaussian
    copula of the day's DCC correlation; multi-day scenarios run the GARCH recursions (the
    correlation is held at the next day's value over the horizon).
    """

    dist: str = "t"
    asymmetric: bool = False
    min_obs: int = 250
    name: str = "dcc"

    def fit(self, returns: Any) -> _FittedDCC:
        from dpm.models.risk_model import _MarginalGarch  # noqa: PLC0415 - same layer, avoids a cycle

        r, _ = _as_returns(returns, "returns", min_obs=self.min_obs)
        if r.shape[1] < 2:
            raise InvalidInputError("returns: DCC needs at least 2 assets")
        marg = _MarginalGarch(r, self.dist, self.asymmetric)
        z = r / np.sqrt(marg.variances(r)[:-1])
        return _FittedDCC(marg, fit_dcc(z, min_obs=min(self.min_obs, 100)))


class _FittedDCC:
    def __init__(self, marginals: Any, dcc: DCCFit) -> None:
        self.marginals = marginals
        self.dcc = dcc

    def path(self, returns: np.ndarray):
        from dpm.models.risk_model import ModelPath  # noqa: PLC0415

        r, _ = _as_returns(returns, "returns", min_obs=1)
        var = self.marginals.variances(r)
        z = r / np.sqrt(var[:-1])
        return ModelPath(np.sqrt(var), self.dcc.correlation_path(z), {"var": var})

    def sample(self, path: Any, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        from dpm.models.risk_model import _gaussian_copula_z  # noqa: PLC0415

        z = _gaussian_copula_z(path.corr[t], n, horizon, rng, self.marginals.innovations)
        return self.marginals.simulate(path.extras["var"][t], z)
