"""A learned model of next-day tail risk: gradient-boosted quantile regression on history features.

Features of day ``t`` use returns up to and including ``t`` (:func:`tail_features`): EWMA vol,
realised vols over 5, 22 and 66 days, the last return and 5-day return (in EWMA-vol units), the
drawdown from the 66-day high, rolling 22- and 66-day correlations with the other assets and,
optionally, the stressed-regime probability of a Gaussian HMM. Targets are next-day returns in
EWMA-vol units, ``y[t] = r[t+1] / sigma[t+1|t]``, so the regression learns how the tail *quantiles*
of a standardised return move with the state of the market (a non-linear, data-driven correction
of the EWMA scale that may differ between the up and down side).

:class:`LearnedTailModel` fits, for every tail level, one
``sklearn.ensemble.HistGradientBoostingRegressor(loss="quantile")`` on the rows of all assets
pooled (features of the asset itself plus its mean correlation with the others). Its scenarios are
filtered-historical: the last ``window`` standardised return vectors (joint, so the dependence is
the empirical one), with each asset's down moves rescaled so that the window's lower quantiles match
the predicted ones, and its up moves likewise. :func:`walk_forward_quantiles` fits the same kind of
regression to any target (e.g. a portfolio's standardised P&L) walk-forward, refitting on a
schedule with data before each day only.

scikit-learn is an optional dependency (``pip install dpm[models]``), imported when a model is fitted.

Reference: J. H. Friedman, "Greedy function approximation: a gradient boosting machine", *Annals
of Statistics* 29(5) (2001) 1189-1232 (quantile loss, section 4.6); R. Koenker, G. Bassett,
"Regression quantiles", *Econometrica* 46(1) (1978) 33-50.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns, _check_int, _check_lambda
from dpm.models.calibration.ewma import ewma_covariance

__all__ = ["LearnedTailModel", "tail_features", "walk_forward_quantiles"]


def _sklearn_hgb():
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ImportError("the learned model needs scikit-learn (pip install 'dpm[models]')") from None
    return HistGradientBoostingRegressor


def _thread_limit(threads: int | None):
    """Context limiting OpenMP threads of the boosting library (its thread pool thrashes on small
    data sets and shared machines; one thread is several times faster here)."""
    import contextlib  # noqa: PLC0415

    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="openmp")


def _trailing_mean(x: np.ndarray, k: int) -> np.ndarray:
    c = np.cumsum(np.vstack([np.zeros((1,) + x.shape[1:]), x]), axis=0)
    out = np.full(x.shape, np.nan)
    if x.shape[0] >= k:
        out[k - 1:] = (c[k:] - c[:-k]) / k
    return out


def _rolling_corr(r: np.ndarray, k: int) -> np.ndarray:
    """(n, U, U) trailing ``k``-day correlation (about zero means, as the EWMA ones)."""
    outer = r[:, :, None] * r[:, None, :]
    m = _trailing_mean(outer.reshape(r.shape[0], -1), k).reshape(outer.shape)
    d = np.sqrt(np.diagonal(m, axis1=1, axis2=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return m / (d[:, :, None] * d[:, None, :])


def tail_features(returns: Any, *, lambda_: float = 0.94, warmup: int = 30,
                  regime_prob: Any = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features per day and asset from returns up to that day.

    Parameters
    ----------
    returns : array_like, shape (n, U)
    regime_prob : array_like, shape (n,), optional
        Probability of the stressed regime at each close (filtered, no look-ahead).

    Returns
    -------
    X : ndarray, shape (n, U, F)
        Row ``t`` uses ``returns[:t + 1]`` only (NaN until every window is full).
    sigma : ndarray, shape (n + 1, U)
        EWMA vol forecasts (``sigma[t]`` for ``r[t]`` from ``r[:t]``), for standardising.
    names : tuple of str, length F
    """
    lam = _check_lambda(lambda_)
    r, _ = _as_returns(returns, "returns", min_obs=warmup + 1)
    n, u = r.shape
    cov = ewma_covariance(r, lam, warmup=warmup, path=True)
    sigma = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = r / sigma[:-1]
        feats = {"log_ewma_vol": np.log(sigma[1:])}
        for k in (5, 22, 66):
            feats[f"log_rv_{k}"] = 0.5 * np.log(_trailing_mean(r * r, k))
        feats["vol_ratio_5_66"] = feats["log_rv_5"] - feats["log_rv_66"]
        feats["z_last"] = z
        feats["abs_z_last"] = np.abs(z)
        feats["z_5d"] = _trailing_mean(r, 5) * 5.0 / sigma[1:]
        logp = np.vstack([np.zeros((1, u)), np.cumsum(r, axis=0)])  # log price relative to the start
        peak = np.empty((n, u))
        for t in range(n):  # 66-day high of the log price up to the close of day t
            peak[t] = logp[max(0, t - 65):t + 2].max(axis=0)
        feats["drawdown_66"] = (logp[1:] - peak) / sigma[1:]
        for k in (22, 66):
            rc = _rolling_corr(r, k)
            feats[f"mean_corr_{k}"] = ((rc.sum(axis=2) - 1.0) / max(u - 1, 1)) if u > 1 else np.zeros((n, u))
        ec = cov[1:] / (sigma[1:, :, None] * sigma[1:, None, :])
        feats["mean_corr_ewma"] = ((ec.sum(axis=2) - 1.0) / max(u - 1, 1)) if u > 1 else np.zeros((n, u))
    if regime_prob is not None:
        p = np.asarray(regime_prob, dtype=np.float64).reshape(-1)
        if p.shape != (n,):
            raise InvalidInputError(f"regime_prob: expected shape ({n},), got {p.shape}")
        feats["stressed_regime_prob"] = np.broadcast_to(p[:, None], (n, u))
    names = tuple(feats)
    X = np.stack([np.asarray(feats[k], dtype=np.float64) for k in names], axis=2)
    return X, sigma, names


def _regressor(level: float, max_iter: int, learning_rate: float, max_leaf_nodes: int,
               min_samples_leaf: int, seed: int):
    hgb = _sklearn_hgb()
    return hgb(loss="quantile", quantile=float(level), max_iter=max_iter, learning_rate=learning_rate,
               max_leaf_nodes=max_leaf_nodes, min_samples_leaf=min_samples_leaf, l2_regularization=1.0,
               early_stopping=False, random_state=seed)


def walk_forward_quantiles(features: Any, target: Any, levels: Sequence[float], *, first_train: int,
                           refit_every: int = 30, max_iter: int = 200, learning_rate: float = 0.05,
                           max_leaf_nodes: int = 15, min_samples_leaf: int = 40, seed: int = 0,
                           threads: int | None = 1) -> np.ndarray:
    """Walk-forward gradient-boosted quantile forecasts of ``target[t]`` from ``features[t]``.

    ``target[t]`` must be known only after the close of day ``t + 1`` (a next-day quantity). At
    each refit row ``f`` (``first_train - 1``, then every ``refit_every`` rows) one regressor per
    level is trained on the rows ``i <= f - 1`` with finite features and target (their targets are
    known at the close of ``f``), and predicts rows ``f`` up to the next refit.

    Parameters
    ----------
    features : array_like, shape (n, F)
    target : array_like, shape (n,)
    levels : sequence of float in (0, 1)

    Returns
    -------
    ndarray, shape (n, len(levels))
        NaN before the first refit and where features are NaN.
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise InvalidInputError(f"features/target: expected (n, F) and (n,), got {X.shape}, {y.shape}")
    n = X.shape[0]
    first = _check_int(first_train, "first_train", 2)
    step = _check_int(refit_every, "refit_every", 1)
    lv = [float(v) for v in levels]
    if not lv or any(not 0.0 < v < 1.0 for v in lv):
        raise InvalidInputError(f"levels: expected probabilities in (0, 1), got {levels!r}")
    out = np.full((n, len(lv)), np.nan)
    okx = np.all(np.isfinite(X), axis=1)
    for f in range(first - 1, n, step):
        train = np.flatnonzero(okx[:f] & np.isfinite(y[:f]))
        if train.size < 50:
            continue
        rows = np.arange(f, min(f + step, n))
        rows = rows[okx[rows]]
        if rows.size == 0:
            continue
        for j, q in enumerate(lv):
            reg = _regressor(q, max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, seed)
            with _thread_limit(threads):
                reg.fit(X[train], y[train])
                out[rows, j] = reg.predict(X[rows])
    return out


@dataclass(frozen=True)
class LearnedTailModel:
    """Gradient-boosted quantile model of next-day tail risk (:class:`dpm.models.risk_model.RiskModel`).

    Attributes
    ----------
    lower_levels, upper_levels : tuple of float
        Tail levels of the standardised next-day return that are learned (one regressor each).
    window : int
        Standardised return vectors in the scenario set (filtered-historical).
    regime_states : int
        If > 1, a Gaussian HMM with this many states is fitted on the same data and its filtered
        stressed-regime probability is a feature.
    multiplier_bounds : (float, float)
        Clip of the learned scale multipliers (guards against a wild extrapolation).
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, seed
        Passed to ``HistGradientBoostingRegressor``.
    threads : int or None
        OpenMP threads for the boosting (None: the library's default).
    """

    lower_levels: tuple[float, ...] = (0.01, 0.025)
    upper_levels: tuple[float, ...] = (0.975, 0.99)
    lambda_: float = 0.94
    window: int = 500
    warmup: int = 30
    regime_states: int = 2
    multiplier_bounds: tuple[float, float] = (0.5, 3.0)
    max_iter: int = 150
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    seed: int = 0
    threads: int | None = 1
    min_obs: int = 500
    name: str = "learned"

    def _features(self, r: np.ndarray, hmm: Any) -> tuple[np.ndarray, np.ndarray]:
        prob = None
        if hmm is not None:
            filt, _ = hmm.filter(r)
            prob = filt[:, hmm.stressed_state]
        X, sigma, _ = tail_features(r, lambda_=self.lambda_, warmup=self.warmup, regime_prob=prob)
        return X, sigma

    def fit(self, returns: Any) -> _FittedLearned:
        r, _ = _as_returns(returns, "returns", min_obs=self.min_obs)
        hmm = None
        if self.regime_states > 1:
            from dpm.models.dependence.regimes import fit_gaussian_hmm  # noqa: PLC0415

            hmm = fit_gaussian_hmm(r, self.regime_states)
        X, sigma = self._features(r, hmm)
        n, u, f = X.shape
        with np.errstate(invalid="ignore", divide="ignore"):
            y = r[1:] / sigma[1:-1]                 # y[t] = r[t+1] / sigma[t+1|t], rows 0..n-2
        Xt = X[:-1].reshape(-1, f)
        yt = y.reshape(-1)
        ok = np.all(np.isfinite(Xt), axis=1) & np.isfinite(yt)
        if ok.sum() < 200:
            raise InvalidInputError(f"returns: too little history for the learned model ({int(ok.sum())} rows)")
        regs = {}
        for q in tuple(self.lower_levels) + tuple(self.upper_levels):
            reg = _regressor(q, self.max_iter, self.learning_rate, self.max_leaf_nodes, self.min_samples_leaf,
                             self.seed)
            with _thread_limit(self.threads):
                reg.fit(Xt[ok], yt[ok])
            regs[q] = reg
        return _FittedLearned(self, hmm, regs)


class _FittedLearned:
    def __init__(self, model: LearnedTailModel, hmm: Any, regs: dict[float, Any]) -> None:
        self.model = model
        self.hmm = hmm
        self.regs = regs

    def path(self, returns: np.ndarray):
        from dpm.models.risk_model import ModelPath, _ewma_corr_path  # noqa: PLC0415

        m = self.model
        r, _ = _as_returns(returns, "returns", min_obs=m.warmup + 1)
        X, sigma = m._features(r, self.hmm)
        n, u, f = X.shape
        flat = X.reshape(-1, f)
        ok = np.all(np.isfinite(flat), axis=1)
        pred = {}
        for q, reg in self.regs.items():
            p = np.full(n * u, np.nan)
            if ok.any():
                with _thread_limit(self.model.threads):
                    p[ok] = reg.predict(flat[ok])
            shifted = np.full((n + 1, u), np.nan)
            shifted[1:] = p.reshape(n, u)           # row t + 1: predicted from features of day t
            pred[q] = shifted
        with np.errstate(invalid="ignore", divide="ignore"):
            z = r / sigma[:-1]
        lo = np.mean([np.abs(pred[q]) for q in m.lower_levels], axis=0)
        hi = np.mean([np.abs(pred[q]) for q in m.upper_levels], axis=0)
        # effective vol for the forecast output: the EWMA vol times the mean learned tail width
        # relative to the normal one at the same levels
        from scipy import stats  # noqa: PLC0415

        ref = np.mean([abs(stats.norm.ppf(q)) for q in m.lower_levels + m.upper_levels])
        vols = sigma * 0.5 * (lo + hi) / ref
        corr = _ewma_corr_path(r, m.lambda_, m.warmup)
        return ModelPath(vols, corr, {"z": z, "sigma": sigma, "pred": pred})

    def sample(self, path: Any, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        from dpm.models.risk_model import _overlapping_sums  # noqa: PLC0415

        m = self.model
        lo_row = max(m.warmup, t - m.window)
        z = path.extras["z"][lo_row:t]
        z = z[np.all(np.isfinite(z), axis=1)]
        sig = path.extras["sigma"][t]
        if z.shape[0] < max(horizon, 50) or not np.all(np.isfinite(sig)):
            raise InvalidInputError(f"history: the learned model has no scenario window at row {t}")
        down = np.empty(z.shape[1])
        up = np.empty(z.shape[1])
        lb, ub = m.multiplier_bounds
        for j in range(z.shape[1]):
            dm = [path.extras["pred"][q][t, j] / np.quantile(z[:, j], q) for q in m.lower_levels]
            um = [path.extras["pred"][q][t, j] / np.quantile(z[:, j], q) for q in m.upper_levels]
            down[j] = np.clip(np.mean(dm), lb, ub) if np.all(np.isfinite(dm)) else 1.0
            up[j] = np.clip(np.mean(um), lb, ub) if np.all(np.isfinite(um)) else 1.0
        scaled = np.where(z < 0, z * down, z * up)
        return _overlapping_sums(scaled, horizon) * sig
