"""Monte Carlo scenarios: Gaussian (Cholesky) and Student-t copula joint moves."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from dpm._util.validation import as_float_array, check_finite, check_memory
from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _check_int
from dpm.models.calibration.correlation import check_correlation
from dpm.models.calibration.ranges import VolShockProxy
from dpm.models.scenarios import MarketScenarios

__all__ = ['mc_scenarios', 't_copula_tail_dependence']


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    """Lower factor L with L L^T = cov (Cholesky, or eigen-factor for a singular PSD matrix)."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov)
        tol = 1e-12 * max(1.0, float(np.max(np.abs(w))))
        if w[0] < -tol:
            raise InvalidInputError(
                f"cov: not positive semi-definite (smallest eigenvalue {w[0]:.6g}); repair the "
                "correlation with dpm.models.calibration.nearest_psd_correlation") from None
        return v * np.sqrt(np.maximum(w, 0.0))


def mc_scenarios(cov: Any = None, *, vols: Any = None, corr: Any = None, n_paths: int = 10_000,
                 horizon: int = 1, dist: str = "normal", dof: float | None = None,
                 seed: Any = None, mean: Any = None, underlyings: Sequence[str] | None = None,
                 vol_proxy: VolShockProxy | None = None, antithetic: bool = False) -> MarketScenarios:
    """Monte Carlo scenarios of ``horizon``-day log returns.

    Give either the daily covariance ``cov`` (U x U) or daily ``vols`` (U,) and a correlation
    ``corr`` (checked with :func:`~dpm.models.calibration.check_correlation`). The h-day covariance is
    ``horizon * cov`` (square-root-of-time).

    ``dist="normal"``: ``X = mean*h + L Z``, ``Z ~ N(0, I)``, ``L`` the Cholesky factor.

    ``dist="student_t"``: **multivariate Student t** with ``dof`` > 2 degrees of freedom, scaled to
    the target covariance: ``X = mean*h + sqrt((dof - 2) / dof) * L Z / sqrt(W / dof)``,
    ``W ~ chi2(dof)`` shared by all underlyings. Each margin is a Student t rescaled to unit
    variance times the target vol, and the dependence is the **t copula** with correlation matrix
    ``corr`` and ``dof`` degrees of freedom: Kendall's tau is ``(2/pi) arcsin(rho)`` and the tail
    dependence is ``2 t_(dof+1)(-sqrt((dof + 1)(1 - rho)/(1 + rho)))``
    (:func:`t_copula_tail_dependence`). The h-day return is modelled directly as t (a sum of daily
    t variables is not t; the square-root-of-time scaling keeps its variance right).

    Parameters
    ----------
    n_paths : int
        Number of scenarios ``S``.
    seed : int, numpy.random.Generator or None
    antithetic : bool
        Also use ``-Z`` (``n_paths`` must be even); halves variance for symmetric payoffs.
    vol_proxy : VolShockProxy, optional
        Joint vol shock per scenario from the simulated returns; vol shocks are 0 without it.
    """
    n_paths = _check_int(n_paths, "n_paths", 1)
    h = _check_int(horizon, "horizon", 1)
    if cov is not None:
        if vols is not None or corr is not None:
            raise InvalidInputError("cov: give either cov or vols + corr, not both")
        c = as_float_array(cov, "cov")
        if c.ndim == 0:
            c = c.reshape(1, 1)
        if c.ndim != 2 or c.shape[0] != c.shape[1]:
            raise InvalidInputError(f"cov: expected a square matrix, got shape {c.shape}")
        check_finite(c, "cov")
        if not np.allclose(c, c.T, rtol=1e-10, atol=1e-14):
            raise InvalidInputError("cov: not symmetric")
        if np.any(np.diag(c) < 0):
            raise InvalidInputError(f"cov: negative variance on the diagonal {np.diag(c)}")
        c = 0.5 * (c + c.T)
    else:
        if vols is None or corr is None:
            raise InvalidInputError("cov: give cov, or both vols and corr")
        v = np.atleast_1d(as_float_array(vols, "vols"))
        check_finite(v, "vols")
        if np.any(v < 0):
            i = int(np.flatnonzero(v < 0)[0])
            raise InvalidInputError(f"vols: must be >= 0, index {i} is {v[i]!r}")
        rho = check_correlation(np.atleast_2d(corr))
        if rho.shape != (v.size, v.size):
            raise InvalidInputError(f"corr: shape {rho.shape} does not match {v.size} vols")
        c = rho * np.outer(v, v)
    u = c.shape[0]
    # draws, correlated moves, price moves and vol shocks: about six (S, U) float64 arrays
    check_memory(6 * 8 * n_paths * u, f"n_paths: {n_paths:,} paths of {u} underlyings")
    mu = np.zeros(u) if mean is None else np.broadcast_to(as_float_array(mean, "mean"), (u,))
    check_finite(np.asarray(mu), "mean")
    L = _psd_factor(c * h)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if antithetic:
        if n_paths % 2:
            raise InvalidInputError(f"n_paths: must be even with antithetic=True, got {n_paths}")
        z = rng.standard_normal((n_paths // 2, u))
        z = np.vstack([z, -z])
    else:
        z = rng.standard_normal((n_paths, u))
    x = z @ L.T
    if dist == "normal":
        pass
    elif dist == "student_t":
        if dof is None or not np.isfinite(dof) or dof <= 2:
            raise InvalidInputError(f"dof: Student t needs dof > 2 (finite variance), got {dof!r}")
        w = rng.chisquare(dof, size=z.shape[0] if not antithetic else n_paths // 2)
        if antithetic:
            w = np.concatenate([w, w])
        x = x * (np.sqrt((dof - 2.0) / dof) / np.sqrt(w / dof))[:, None]
    else:
        raise InvalidInputError(f"dist: expected 'normal' or 'student_t', got {dist!r}")
    x = x + np.asarray(mu) * h
    return MarketScenarios.from_log_returns(x, underlyings=underlyings, vol_proxy=vol_proxy,
                                            horizon_days=h, kind="monte_carlo")


def t_copula_tail_dependence(rho: Any, dof: float) -> np.ndarray:
    """Upper (= lower) tail-dependence coefficient of a t copula (Embrechts, McNeil, Straumann 2002).

    ``lambda = 2 t_(dof+1)(-sqrt((dof + 1)(1 - rho) / (1 + rho)))``.
    """
    r = as_float_array(rho, "rho")
    return 2.0 * stats.t.cdf(-np.sqrt((dof + 1.0) * (1.0 - r) / (1.0 + r)), dof + 1.0)
