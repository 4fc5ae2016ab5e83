"""Ledoit-Wolf covariance shrinkage.

References: O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional covariance
matrices", *J. Multivariate Analysis* 88 (2004) 365-411 (identity target); "Honey, I shrunk the
sample covariance matrix", *J. Portfolio Management* 30(4) (2004) 110-119 (constant-correlation
target).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns

__all__ = ['ShrinkageEstimate', 'ledoit_wolf']


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
