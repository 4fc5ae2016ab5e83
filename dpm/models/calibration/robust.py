"""Standard errors of maximum-likelihood estimates: classic (inverse Hessian) and robust (sandwich).

With ``l_t(theta)`` the log-likelihood of observation ``t``, ``H = -sum_t d2 l_t / dtheta2`` (the
observed information) and ``J = sum_t s_t s_t^T`` the outer product of the scores
``s_t = dl_t / dtheta``:

* classic covariance ``H^-1`` — right only when the assumed density is the true one;
* robust covariance ``H^-1 J H^-1`` — the quasi-maximum-likelihood (sandwich) covariance, consistent
  when the conditional mean and variance are right but the innovation density is not (e.g. a
  Gaussian GARCH fitted to fat-tailed returns).

Derivatives are central finite differences.

Reference: T. Bollerslev, J. M. Wooldridge, "Quasi-maximum likelihood estimation and inference in
dynamic models with time-varying covariances", *Econometric Reviews* 11(2) (1992) 143-172.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["sandwich_covariance"]


def _steps(theta: np.ndarray, rel: float, floor: float) -> np.ndarray:
    return np.maximum(np.abs(theta), floor) * rel


def sandwich_covariance(loglik_obs: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, *,
                        rel_step: float = 1e-4, floor: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Classic and robust covariance matrices of the estimate ``theta``.

    Parameters
    ----------
    loglik_obs : callable
        ``theta -> (n,)`` per-observation log-likelihoods (may return non-finite values off the
        parameter space; then the result is NaN).
    theta : ndarray, shape (k,)
        The maximum-likelihood estimate.
    rel_step, floor : float
        Finite-difference step ``rel_step * max(|theta_i|, floor)``.

    Returns
    -------
    classic, robust : ndarray, shape (k, k)
        NaN-filled when the Hessian is singular or not negative definite.
    """
    th = np.asarray(theta, dtype=np.float64)
    k = th.size
    h = _steps(th, rel_step, floor)
    # scores by central differences of the per-observation log-likelihoods
    plus = np.empty((k,), dtype=object)
    minus = np.empty((k,), dtype=object)
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        plus[i] = np.asarray(loglik_obs(th + e), dtype=np.float64)
        minus[i] = np.asarray(loglik_obs(th - e), dtype=np.float64)
    scores = np.column_stack([(plus[i] - minus[i]) / (2.0 * h[i]) for i in range(k)])
    total = float(np.sum(loglik_obs(th)))
    hess = np.empty((k, k))
    for i in range(k):
        hess[i, i] = (plus[i].sum() - 2.0 * total + minus[i].sum()) / (h[i] * h[i])
        for j in range(i + 1, k):
            ei = np.zeros(k)
            ej = np.zeros(k)
            ei[i] = h[i]
            ej[j] = h[j]
            f = (lambda x: float(np.sum(loglik_obs(x))))
            val = (f(th + ei + ej) - f(th + ei - ej) - f(th - ei + ej) + f(th - ei - ej)) / (4.0 * h[i] * h[j])
            hess[i, j] = hess[j, i] = val
    nan = np.full((k, k), np.nan)
    if not (np.all(np.isfinite(hess)) and np.all(np.isfinite(scores))):
        return nan, nan.copy()
    info = -hess
    try:
        w = np.linalg.eigvalsh(0.5 * (info + info.T))
        if w[0] <= 0:
            return nan, nan.copy()
        inv = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return nan, nan.copy()
    inv = 0.5 * (inv + inv.T)
    outer = scores.T @ scores
    robust = inv @ outer @ inv
    return inv, 0.5 * (robust + robust.T)
