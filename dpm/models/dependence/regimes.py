"""Market regimes: a Gaussian hidden Markov model of joint daily returns, fitted by EM.

``r[t] | s[t] = k ~ N(mu_k, Sigma_k)`` with a hidden state ``s[t]`` following a Markov chain with
transition matrix ``A`` (``A[i, j] = P(s[t+1] = j | s[t] = i)``). States are ordered by the
trace of ``Sigma_k``, so the last state is the **stressed** regime: higher volatilities and, in
crypto, higher correlations. The filtered probabilities ``P(s[t] | r[:t+1])`` use no later data;
``P(s[t+1] | r[:t+1]) = filtered[t] A`` gives the regime mixture for the next day.

The Baum-Welch (EM) algorithm with scaled forward-backward recursions: L. R. Rabiner, "A tutorial
on hidden Markov models and selected applications in speech recognition", *Proc. IEEE* 77(2) (1989)
257-286; regime switching in returns: J. D. Hamilton, "A new approach to the economic analysis of
nonstationary time series and the business cycle", *Econometrica* 57(2) (1989) 357-384.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns, _check_int

__all__ = ["GaussianHMMFit", "fit_gaussian_hmm", "gaussian_hmm_filter"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def _log_emissions(r: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """``ln N(r[t]; mu_k, Sigma_k)``, shape (n, K)."""
    n, u = r.shape
    out = np.empty((n, means.shape[0]))
    for k in range(means.shape[0]):
        L = np.linalg.cholesky(covs[k])
        y = np.linalg.solve(L, (r - means[k]).T)
        out[:, k] = -0.5 * (u * _LOG_2PI + np.sum(y * y, axis=0)) - np.sum(np.log(np.diag(L)))
    return out


def _forward(logb: np.ndarray, startprob: np.ndarray, transmat: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Scaled forward pass: filtered probabilities (n, K), scale factors (n,), log-likelihood."""
    n, K = logb.shape
    mx = logb.max(axis=1)
    b = np.exp(logb - mx[:, None])
    alpha = np.empty((n, K))
    c = np.empty(n)
    a = startprob * b[0]
    c[0] = a.sum()
    alpha[0] = a / c[0]
    At = transmat
    for t in range(1, n):
        a = (alpha[t - 1] @ At) * b[t]
        s = a.sum()
        c[t] = s
        alpha[t] = a / s
    return alpha, c, float(np.sum(np.log(c)) + np.sum(mx))


def _backward(logb: np.ndarray, transmat: np.ndarray, c: np.ndarray) -> np.ndarray:
    n, K = logb.shape
    b = np.exp(logb - logb.max(axis=1)[:, None])
    beta = np.empty((n, K))
    beta[-1] = 1.0
    for t in range(n - 2, -1, -1):
        beta[t] = transmat @ (b[t + 1] * beta[t + 1]) / c[t + 1]
    return beta


@dataclass(frozen=True)
class GaussianHMMFit:
    """Result of :func:`fit_gaussian_hmm` (states ordered calm -> stressed).

    Attributes
    ----------
    means : ndarray, shape (K, U)
    covariances : ndarray, shape (K, U, U)
    transmat : ndarray, shape (K, K)
    startprob : ndarray, shape (K,)
    loglik : float
    filtered : ndarray, shape (n, K)
        ``P(s[t] | r[:t+1])`` on the fit sample.
    n_obs, n_iter : int
    converged : bool
    """

    means: np.ndarray
    covariances: np.ndarray
    transmat: np.ndarray
    startprob: np.ndarray
    loglik: float
    filtered: np.ndarray
    n_obs: int
    n_iter: int
    converged: bool

    @property
    def n_states(self) -> int:
        return self.means.shape[0]

    @property
    def stressed_state(self) -> int:
        """Index of the state with the largest total variance (the last one)."""
        return self.n_states - 1

    @property
    def n_params(self) -> int:
        K, u = self.means.shape
        return K * u + K * u * (u + 1) // 2 + K * (K - 1) + (K - 1)

    @property
    def bic(self) -> float:
        return self.n_params * np.log(self.n_obs) - 2.0 * self.loglik

    def vols(self) -> np.ndarray:
        """Daily vol of each asset in each state, shape (K, U)."""
        return np.sqrt(np.diagonal(self.covariances, axis1=1, axis2=2))

    def correlations(self) -> np.ndarray:
        """Correlation matrix of each state, shape (K, U, U)."""
        v = self.vols()
        return self.covariances / (v[:, :, None] * v[:, None, :])

    def expected_durations(self) -> np.ndarray:
        """Mean stay in each state, ``1 / (1 - A[k, k])`` days."""
        return 1.0 / (1.0 - np.diag(self.transmat))

    def filter(self, returns: Any) -> tuple[np.ndarray, float]:
        """Filtered probabilities ``P(s[t] | r[:t+1])`` (shape (n, K)) and log-likelihood of ``returns``."""
        return gaussian_hmm_filter(returns, self.means, self.covariances, self.transmat, self.startprob)

    def smoothed(self, returns: Any) -> np.ndarray:
        """Smoothed probabilities ``P(s[t] | r[:n])`` (uses later data: for plots, not forecasts)."""
        r, _ = _as_returns(returns, "returns", min_obs=1)
        logb = _log_emissions(r, self.means, self.covariances)
        alpha, c, _ = _forward(logb, self.startprob, self.transmat)
        beta = _backward(logb, self.transmat, c)
        g = alpha * beta
        return g / g.sum(axis=1, keepdims=True)

    def mixture_moments(self, prob: Any, *, use_means: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Mean (U,) and covariance (U, U) of the regime mixture with state probabilities ``prob``."""
        p = np.asarray(prob, dtype=np.float64)
        mu = self.means if use_means else np.zeros_like(self.means)
        m = p @ mu
        second = np.einsum("k,kij->ij", p, self.covariances + mu[:, :, None] * mu[:, None, :])
        return m, second - np.outer(m, m)

    def sample(self, prob: Any, n: int, rng: np.random.Generator, *, horizon: int = 1,
               use_means: bool = False) -> np.ndarray:
        """``horizon``-day log returns (n, U): first state from ``prob``, then the Markov chain."""
        p = np.asarray(prob, dtype=np.float64)
        K, u = self.means.shape
        chol = np.linalg.cholesky(self.covariances)
        cum = np.cumsum(self.transmat, axis=1)
        state = np.minimum(np.searchsorted(np.cumsum(p), rng.random(n) * p.sum()), K - 1)
        total = np.zeros((n, u))
        for d in range(horizon):
            if d:
                state = np.minimum((rng.random(n)[:, None] > cum[state]).sum(axis=1), K - 1)
            z = rng.standard_normal((n, u))
            draw = np.einsum("nij,nj->ni", chol[state], z)
            if use_means:
                draw += self.means[state]
            total += draw
        return total


def gaussian_hmm_filter(returns: Any, means: Any, covariances: Any, transmat: Any,
                        startprob: Any) -> tuple[np.ndarray, float]:
    """Forward filter of a Gaussian HMM: ``P(s[t] | r[:t+1])`` (n, K) and the log-likelihood."""
    r, _ = _as_returns(returns, "returns", min_obs=1)
    logb = _log_emissions(r, np.asarray(means, float), np.asarray(covariances, float))
    alpha, _, ll = _forward(logb, np.asarray(startprob, float), np.asarray(transmat, float))
    return alpha, ll


def _initial_states(r: np.ndarray, K: int, window: int = 20) -> np.ndarray:
    """Hard initial labels: quantile bins of the trailing ``window``-day mean squared return."""
    sq = np.mean(r * r, axis=1)
    c = np.concatenate([[0.0], np.cumsum(sq)])
    idx = np.arange(r.shape[0])
    lo = np.maximum(0, idx - window + 1)
    level = (c[idx + 1] - c[lo]) / (idx - lo + 1)
    edges = np.quantile(level, np.linspace(0, 1, K + 1)[1:-1])
    return np.searchsorted(edges, level)


def fit_gaussian_hmm(returns: Any, n_states: int = 2, *, max_iter: int = 200, tol: float = 1e-6,
                     min_obs: int = 100, init: GaussianHMMFit | None = None,
                     reg_covar: float = 1e-6) -> GaussianHMMFit:
    """Fit a Gaussian HMM with full covariances by EM (Baum-Welch).

    Parameters
    ----------
    returns : array_like, shape (n, U)
    n_states : int
    max_iter, tol : EM stops when the log-likelihood gains less than ``tol * n``.
    init : GaussianHMMFit, optional
        Start from these parameters (e.g. the previous walk-forward fit); default: states from
        quantiles of the trailing 20-day squared returns, transition probabilities 0.95 to stay.
    reg_covar : float
        Added to covariance diagonals relative to the average variance (keeps them invertible).

    Returns
    -------
    GaussianHMMFit
        With states ordered by total variance (last = stressed).
    """
    K = _check_int(n_states, "n_states", 1)
    r, _ = _as_returns(returns, "returns", min_obs=max(min_obs, 5 * K))
    n, u = r.shape
    base_var = float(np.mean(r * r))
    if base_var <= 0:
        raise InvalidInputError("returns: all zero")
    reg = reg_covar * base_var * np.eye(u)
    if init is not None:
        if init.means.shape != (K, u):
            raise InvalidInputError(f"init: has shape {init.means.shape}, need ({K}, {u})")
        means, covs = init.means.copy(), init.covariances.copy()
        A, pi = init.transmat.copy(), init.startprob.copy()
    else:
        lab = _initial_states(r, K)
        means = np.empty((K, u))
        covs = np.empty((K, u, u))
        for k in range(K):
            x = r[lab == k] if np.any(lab == k) else r
            means[k] = x.mean(axis=0)
            d = x - means[k]
            covs[k] = d.T @ d / max(len(x), 1) + reg
        A = np.full((K, K), 0.05 / max(K - 1, 1))
        np.fill_diagonal(A, 0.95 if K > 1 else 1.0)
        pi = np.full(K, 1.0 / K)
    prev = -np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        logb = _log_emissions(r, means, covs)
        alpha, c, ll = _forward(logb, pi, A)
        beta = _backward(logb, A, c)
        gamma = alpha * beta
        gamma /= gamma.sum(axis=1, keepdims=True)
        b = np.exp(logb - logb.max(axis=1)[:, None])
        # expected transitions: sum_t alpha[t-1, i] A[i, j] b[t, j] beta[t, j] / c[t]
        w = (b[1:] * beta[1:]) / c[1:, None]
        xi = A * (alpha[:-1].T @ w)
        pi = gamma[0] + 1e-12
        pi /= pi.sum()
        A = xi / xi.sum(axis=1, keepdims=True)
        nk = gamma.sum(axis=0)
        means = (gamma.T @ r) / nk[:, None]
        for k in range(K):
            d = r - means[k]
            covs[k] = (gamma[:, k, None] * d).T @ d / nk[k] + reg
        if ll - prev < tol * n:
            converged = True
            break
        prev = ll
    logb = _log_emissions(r, means, covs)
    alpha, _, ll = _forward(logb, pi, A)
    order = np.argsort(np.trace(covs, axis1=1, axis2=2))
    return GaussianHMMFit(means[order], covs[order], A[np.ix_(order, order)], pi[order], ll,
                          alpha[:, order], n, it, converged)


# ---------------------------------------------------------------------------------------------
# Regime-switching risk model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RegimeModel:
    """Gaussian-HMM regime model (:class:`dpm.models.risk_model.RiskModel`).

    The next day's return is a mixture of the state Gaussians with weights
    ``P(s[t+1] | r[:t+1]) = filtered[t] A``; scenarios draw the state, then the Gaussian (multi-day
    scenarios follow the Markov chain). ``vols``/``corr`` of the path are the mixture's moments.
    State means are estimated but, with ``use_means=False`` (default), not used in scenarios: a
    fitted positive drift would lower a long position's margin.
    """

    n_states: int = 2
    use_means: bool = False
    max_iter: int = 200
    min_obs: int = 250
    name: str = "regime"

    def fit(self, returns: Any) -> _FittedRegime:
        r, _ = _as_returns(returns, "returns", min_obs=self.min_obs)
        return _FittedRegime(self, fit_gaussian_hmm(r, self.n_states, max_iter=self.max_iter))


class _FittedRegime:
    def __init__(self, model: RegimeModel, hmm: GaussianHMMFit) -> None:
        self.model = model
        self.hmm = hmm

    def path(self, returns: np.ndarray):
        from dpm.models.risk_model import ModelPath  # noqa: PLC0415

        r, _ = _as_returns(returns, "returns", min_obs=1)
        filt, _ = self.hmm.filter(r)
        prob = np.vstack([self.hmm.startprob[None, :], filt @ self.hmm.transmat])
        cov = np.einsum("tk,kij->tij", prob, self.hmm.covariances)
        if self.model.use_means:
            mu = self.hmm.means
            m = prob @ mu
            cov = cov + np.einsum("tk,ki,kj->tij", prob, mu, mu) - m[:, :, None] * m[:, None, :]
        vols = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        corr = cov / (vols[:, :, None] * vols[:, None, :])
        return ModelPath(vols, corr, {"prob": prob, "filtered": filt})

    def sample(self, path: Any, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        return self.hmm.sample(path.extras["prob"][t], n, rng, horizon=horizon, use_means=self.model.use_means)
