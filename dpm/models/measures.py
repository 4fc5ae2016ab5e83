"""VaR / expected shortfall and the scenario generators the margin engine plugs into.

Scenario format
---------------
Every generator returns a :class:`MarketScenarios`: ``price_move[S, U]`` (relative moves of each
underlying, ``0.1`` = +10 %), ``vol_shock[S, U]`` (relative implied-vol shocks, ``0.3`` = vol x 1.3),
``names[S]`` and ``underlyings[U]`` — the same layout as the margin engine's scenario sets, so a
generated set can be revalued instrument by instrument (``M x S``) and aggregated per account.
``log_return[S, U]`` (``log1p(price_move)``) is kept for statistics.

Risk-measure conventions
------------------------
P&L is positive for gains. For a tail probability ``alpha = 1 - level`` and ``n`` scenarios with
sorted P&L ``X(1) <= ... <= X(n)``:

* ``VaR = -X(ceil(n alpha))`` — minus the lower empirical ``alpha``-quantile (the inverse of the
  empirical CDF, numpy's ``method="inverted_cdf"``);
* ``ES = -(sum_{i <= floor(n alpha)} X(i) + (n alpha - floor(n alpha)) X(floor(n alpha) + 1)) / (n alpha)``
  (Acerbi & Tasche, "On the coherence of expected shortfall", J. Banking & Finance 26 (2002)
  1487-1503, eq. for the empirical ES with a fractional observation). Every term is <= the VaR
  observation, so ``ES >= VaR``; the result is also floored at VaR to absorb rounding.

``n alpha`` is snapped to the nearest integer when within 1e-9 of it (``1 - 0.99`` is not exactly
0.01 in binary floating point).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ._validation import as_float_array, check_finite
from .calibration import (
    VolShockProxy,
    _as_returns,
    _check_int,
    _check_lambda,
    _check_level,
    check_correlation,
    ewma_variance,
)
from .errors import InvalidInputError

__all__ = [
    "MarketScenarios",
    "VaRES",
    "component_es",
    "filtered_historical_scenarios",
    "historical_scenarios",
    "incremental_es",
    "linear_pnl",
    "mc_scenarios",
    "t_copula_tail_dependence",
    "tail_weights",
    "tail_count",
    "var_es",
]


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Scenario container
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MarketScenarios:
    """Joint price moves and vol shocks per scenario and underlying (read-only arrays).

    Attributes
    ----------
    price_move : ndarray, shape (S, U)
        Relative price move ``P1 / P0 - 1`` (> -1).
    vol_shock : ndarray, shape (S, U)
        Relative implied-vol shock ``vol1 / vol0 - 1`` (> -1), for the 30-day point of the surface.
    names : tuple of str, length S
    underlyings : tuple of str, length U
    horizon_days : int
    kind : str
        Generator: "historical", "filtered_historical", "monte_carlo", "stress", "hypothetical".
    sources : tuple of str, length S (optional documentation per scenario, e.g. data source)
    """

    price_move: np.ndarray
    vol_shock: np.ndarray
    names: tuple[str, ...]
    underlyings: tuple[str, ...]
    horizon_days: int = 1
    kind: str = ""
    sources: tuple[str, ...] = ()
    log_return: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pm = np.ascontiguousarray(as_float_array(self.price_move, "price_move"))
        vs = np.ascontiguousarray(as_float_array(self.vol_shock, "vol_shock"))
        if pm.ndim != 2:
            raise InvalidInputError(f"price_move: expected shape (S, U), got {pm.shape}")
        if vs.shape != pm.shape:
            raise InvalidInputError(f"vol_shock: shape {vs.shape} differs from price_move {pm.shape}")
        s, u = pm.shape
        if len(self.names) != s:
            raise InvalidInputError(f"names: {len(self.names)} names for {s} scenarios")
        if len(self.underlyings) != u:
            raise InvalidInputError(f"underlyings: {len(self.underlyings)} names for {u} columns")
        check_finite(pm, "price_move", labels=self.names)
        check_finite(vs, "vol_shock", labels=self.names)
        for arr, nm in ((pm, "price_move"), (vs, "vol_shock")):
            bad = arr <= -1.0
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0])
                raise InvalidInputError(
                    f"{nm}: must be > -1: scenario {self.names[i]!r}, underlying "
                    f"{self.underlyings[j]!r} has {arr[i, j]!r}"
                )
        if self.sources and len(self.sources) != s:
            raise InvalidInputError(f"sources: {len(self.sources)} entries for {s} scenarios")
        if pm is self.price_move:
            pm = pm.copy()
        if vs is self.vol_shock:
            vs = vs.copy()
        pm.flags.writeable = False
        vs.flags.writeable = False
        lr = np.log1p(pm)
        lr.flags.writeable = False
        object.__setattr__(self, "price_move", pm)
        object.__setattr__(self, "vol_shock", vs)
        object.__setattr__(self, "names", tuple(str(x) for x in self.names))
        object.__setattr__(self, "underlyings", tuple(str(x) for x in self.underlyings))
        object.__setattr__(self, "sources", tuple(str(x) for x in self.sources))
        object.__setattr__(self, "log_return", lr)

    def __len__(self) -> int:
        return self.price_move.shape[0]

    @property
    def n_scenarios(self) -> int:
        return self.price_move.shape[0]

    @classmethod
    def from_log_returns(cls, log_return: Any, *, names: Sequence[str] | None = None,
                         underlyings: Sequence[str] | None = None, vol_shock: Any = None,
                         vol_proxy: VolShockProxy | None = None, horizon_days: int = 1,
                         kind: str = "", sources: Sequence[str] = ()) -> MarketScenarios:
        """Build from log returns ``(S, U)``; vol shocks given, from ``vol_proxy``, or zero."""
        lr = as_float_array(log_return, "log_return")
        if lr.ndim != 2:
            raise InvalidInputError(f"log_return: expected shape (S, U), got {lr.shape}")
        check_finite(lr, "log_return")
        s, u = lr.shape
        if underlyings is None:
            underlyings = vol_proxy.underlyings if vol_proxy is not None else tuple(
                f"u{j}" for j in range(u))
        if vol_shock is not None:
            vs = np.broadcast_to(as_float_array(vol_shock, "vol_shock"), lr.shape)
        elif vol_proxy is not None:
            if tuple(vol_proxy.underlyings) != tuple(underlyings):
                raise InvalidInputError(
                    f"vol_proxy: fitted for {vol_proxy.underlyings}, scenarios are for "
                    f"{tuple(underlyings)}")
            vs = vol_proxy.apply(lr)
        else:
            vs = np.zeros_like(lr)
        if names is None:
            names = tuple(f"{kind or 'scenario'}_{i}" for i in range(s))
        return cls(np.expm1(lr), np.array(vs, dtype=np.float64), tuple(names), tuple(underlyings),
                   int(horizon_days), kind, tuple(sources))

    def concat(self, *others: MarketScenarios) -> MarketScenarios:
        """Stack scenario sets over the same underlyings (in the same order)."""
        sets = (self,) + others
        for o in others:
            if o.underlyings != self.underlyings:
                raise InvalidInputError(
                    f"underlyings: cannot concatenate {o.underlyings} with {self.underlyings}")
        srcs: tuple[str, ...] = ()
        if all(o.sources for o in sets):
            srcs = tuple(x for o in sets for x in o.sources)
        return MarketScenarios(np.vstack([o.price_move for o in sets]),
                               np.vstack([o.vol_shock for o in sets]),
                               tuple(x for o in sets for x in o.names), self.underlyings,
                               max(o.horizon_days for o in sets),
                               self.kind if all(o.kind == self.kind for o in sets) else "mixed",
                               srcs)

    def select(self, underlyings: Sequence[str]) -> MarketScenarios:
        """The same scenarios restricted to / reordered as ``underlyings``."""
        idx = []
        for u in underlyings:
            if u not in self.underlyings:
                raise InvalidInputError(f"underlyings: {u!r} not in {self.underlyings}")
            idx.append(self.underlyings.index(u))
        return MarketScenarios(self.price_move[:, idx], self.vol_shock[:, idx], self.names,
                               tuple(underlyings), self.horizon_days, self.kind, self.sources)


# ---------------------------------------------------------------------------------------------
# VaR / ES
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VaRES:
    """``var`` and ``es`` (losses, positive numbers = money at risk), same shape."""

    var: np.ndarray | float
    es: np.ndarray | float


def tail_count(n: int, alpha: float) -> tuple[float, int]:
    """``(n*alpha, floor(n*alpha))`` with ``n*alpha`` snapped to an integer within 1e-9 (see the
    module docstring): the tail size of the VaR/ES conventions, shared by every tail statistic."""
    na = n * alpha
    ra = round(na)
    if abs(na - ra) <= 1e-9 * max(1.0, na):
        na = float(ra)
    return na, int(np.floor(na))


def tail_weights(n: int, level: float) -> np.ndarray:
    """Acerbi-Tasche weights on the sorted P&L (ascending), summing to 1; ES = -weights @ sorted.

    Weight ``1 / (n alpha)`` on the ``floor(n alpha)`` worst observations and
    ``(n alpha - floor(n alpha)) / (n alpha)`` on the next one.
    """
    lv = _check_level(level, "level")
    n = _check_int(n, "n", 1)
    na, k = tail_count(n, 1.0 - lv)
    w = np.zeros(n)
    w[:k] = 1.0 / na
    if k < n and na > k:
        w[k] = (na - k) / na
    return w


def var_es(pnl: Any, levels: Any = 0.99, axis: int = -1) -> VaRES:
    """Historical-simulation VaR and ES of scenario P&L.

    Parameters
    ----------
    pnl : array_like
        Scenario P&L (gains positive) along ``axis``; other axes are independent portfolios.
    levels : float or array_like
        Confidence levels in (0, 1), e.g. 0.99. An array adds leading dimensions to the result.
    axis : int
        Scenario axis.

    Returns
    -------
    VaRES
        ``var`` and ``es`` with shape ``levels.shape + pnl.shape without axis`` (floats for a scalar
        level and 1-d ``pnl``). See the module docstring for the quantile and ES conventions.
    """
    x = as_float_array(pnl, "pnl")
    if x.ndim == 0:
        raise InvalidInputError("pnl: expected at least one scenario axis, got a scalar")
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    if n == 0:
        raise InvalidInputError("pnl: no scenarios")
    check_finite(x, "pnl")
    lv = np.asarray(levels, dtype=np.float64)
    flat = lv.ravel()
    for v in flat:
        _check_level(v, "levels")
    srt = np.sort(x, axis=-1)
    csum = np.cumsum(srt, axis=-1)
    var_out = np.empty((flat.size,) + x.shape[:-1])
    es_out = np.empty_like(var_out)
    for i, level in enumerate(flat):
        na, k = tail_count(n, 1.0 - float(level))
        q = max(int(np.ceil(na)), 1) - 1  # index of X(ceil(n alpha))
        var_i = -srt[..., q]
        head = csum[..., k - 1] if k >= 1 else 0.0
        frac = na - k
        tail = head + (frac * srt[..., k] if (frac > 0 and k < n) else 0.0)
        es_i = -tail / na
        var_out[i] = var_i
        es_out[i] = np.maximum(es_i, var_i)
    shape = lv.shape + x.shape[:-1]
    var_r = var_out.reshape(shape)
    es_r = es_out.reshape(shape)
    if var_r.ndim == 0:
        return VaRES(float(var_r), float(es_r))
    return VaRES(var_r, es_r)


# ---------------------------------------------------------------------------------------------
# Scenario generators
# ---------------------------------------------------------------------------------------------

def _horizon_sums(r: np.ndarray, h: int) -> np.ndarray:
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r]), axis=0)
    return c[h:] - c[:-h]


def historical_scenarios(returns: Any, horizon: int = 1, *, underlyings: Sequence[str] | None = None,
                         dates: Any = None, vol_proxy: VolShockProxy | None = None,
                         window: int | None = None) -> MarketScenarios:
    """Historical-simulation scenarios: overlapping ``horizon``-day log returns.

    Scenario ``s`` is ``sum(r[s : s + horizon])`` (rows of ``returns``), ``S = n - horizon + 1``;
    with ``window`` only the last ``window`` daily returns are used. Overlapping windows are
    dependent, so the effective sample is about ``S / horizon`` (Basel's 10-day-from-1-day
    practice; see the docs).

    Parameters
    ----------
    returns : array_like, shape (n, U) or (n,)
        Daily log returns.
    horizon : int
        Holding period in days (margin period of risk).
    underlyings : names of the columns; dates : optional (n,) dates (names the scenarios by the
        last day of each window).
    vol_proxy : VolShockProxy, optional
        Gives the joint vol shock of each scenario; without it vol shocks are 0.
    """
    h = _check_int(horizon, "horizon", 1)
    r, _ = _as_returns(returns, "returns", min_obs=h)
    if window is not None:
        window = _check_int(window, "window", h)
        r = r[-window:]
    lr = _horizon_sums(r, h)
    names = None
    if dates is not None:
        d = np.asarray(dates).astype("datetime64[D]")
        if window is not None:
            d = d[-window:]
        if d.shape != (r.shape[0],):
            raise InvalidInputError(f"dates: expected {r.shape[0]} dates, got {d.shape}")
        names = tuple(f"hist_{x}" for x in d[h - 1:])
    return MarketScenarios.from_log_returns(lr, names=names, underlyings=underlyings,
                                            vol_proxy=vol_proxy, horizon_days=h, kind="historical")


def filtered_historical_scenarios(returns: Any, lambda_: float = 0.94, horizon: int = 1, *,
                                  warmup: int = 30, window: int | None = None,
                                  underlyings: Sequence[str] | None = None,
                                  vol_proxy: VolShockProxy | None = None) -> MarketScenarios:
    """Filtered historical simulation (Barone-Adesi et al. 1999; Hull & White 1998).

    Each daily return is devolatilised by the EWMA vol forecast made the day before it,
    ``z[t] = r[t] / sigma[t]``, then rescaled by today's forecast for tomorrow,
    ``r*[t] = z[t] * sigma[n]``, per asset (diagonal scaling: correlations are those of the
    standardised history). ``horizon``-day scenarios are overlapping sums of the rescaled daily
    returns, i.e. the current vol is assumed to persist over the horizon. The first ``warmup``
    returns seed the EWMA and are not used as scenarios.
    """
    h = _check_int(horizon, "horizon", 1)
    lam = _check_lambda(lambda_)
    r, _ = _as_returns(returns, "returns", min_obs=warmup + h)
    var = ewma_variance(r, lam, warmup=warmup)
    sig = np.sqrt(var)
    if np.any(sig[warmup:] <= 0):
        raise InvalidInputError("returns: an EWMA vol is 0 (constant prices); cannot devolatilise")
    z = r[warmup:] / sig[warmup:-1]
    scaled = z * sig[-1]
    if window is not None:
        window = _check_int(window, "window", h)
        scaled = scaled[-window:]
    lr = _horizon_sums(scaled, h)
    return MarketScenarios.from_log_returns(lr, underlyings=underlyings, vol_proxy=vol_proxy,
                                            horizon_days=h, kind="filtered_historical")


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
                "correlation with dpm.calibration.nearest_psd_correlation") from None
        return v * np.sqrt(np.maximum(w, 0.0))


def mc_scenarios(cov: Any = None, *, vols: Any = None, corr: Any = None, n_paths: int = 10_000,
                 horizon: int = 1, dist: str = "normal", dof: float | None = None,
                 seed: Any = None, mean: Any = None, underlyings: Sequence[str] | None = None,
                 vol_proxy: VolShockProxy | None = None, antithetic: bool = False) -> MarketScenarios:
    """Monte Carlo scenarios of ``horizon``-day log returns.

    Give either the daily covariance ``cov`` (U x U) or daily ``vols`` (U,) and a correlation
    ``corr`` (checked with :func:`~dpm.calibration.check_correlation`). The h-day covariance is
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
    mu = np.zeros(u) if mean is None else np.broadcast_to(as_float_array(mean, "mean"), (u,))
    check_finite(np.asarray(mu), "mean")
    L = _psd_factor(c * h)
    rng = _rng(seed)
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


# ---------------------------------------------------------------------------------------------
# Portfolio P&L and ES attribution
# ---------------------------------------------------------------------------------------------

def linear_pnl(scenarios: MarketScenarios | Any, exposures: Any, *, by_position: bool = False
               ) -> np.ndarray:
    """P&L of linear exposures (in money, e.g. USD held per underlying) under relative moves.

    ``pnl[s] = sum_u exposures[u] * price_move[s, u]``; ``by_position=True`` returns the (S, U)
    terms instead of their sum. ``scenarios`` is a :class:`MarketScenarios` or a (S, U) array of
    relative moves.
    """
    pm = scenarios.price_move if isinstance(scenarios, MarketScenarios) else as_float_array(
        scenarios, "price_move")
    e = np.atleast_1d(as_float_array(exposures, "exposures"))
    check_finite(e, "exposures")
    if pm.ndim != 2 or pm.shape[1] != e.size:
        raise InvalidInputError(f"exposures: {e.size} exposures for moves of shape {pm.shape}")
    terms = pm * e
    return terms if by_position else terms.sum(axis=1)


def _position_pnl(position_pnl: Any) -> np.ndarray:
    x = as_float_array(position_pnl, "position_pnl")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidInputError(f"position_pnl: expected shape (S, P), got {x.shape}")
    check_finite(x, "position_pnl")
    return x


def component_es(position_pnl: Any, level: float = 0.99) -> np.ndarray:
    """Euler allocation of historical ES to positions.

    ``position_pnl[s, i]`` is position ``i``'s P&L in scenario ``s``; the portfolio P&L is the row
    sum. Scenarios are ranked by portfolio P&L and each position receives minus its weighted mean
    P&L over the tail with the Acerbi-Tasche weights of :func:`tail_weights` (the same ones ES
    uses), so the components sum to the portfolio ES (up to rounding). This is the discrete form
    of ``ES_i = -E[X_i | X <= VaR]`` (Tasche 1999).

    Returns
    -------
    ndarray, shape (P,)
    """
    x = _position_pnl(position_pnl)
    total = x.sum(axis=1)
    order = np.argsort(total, kind="stable")
    w = tail_weights(x.shape[0], level)
    return -(w @ x[order])


def incremental_es(position_pnl: Any, level: float = 0.99) -> np.ndarray:
    """Incremental ES: ``ES(portfolio) - ES(portfolio without position i)`` for each ``i``."""
    x = _position_pnl(position_pnl)
    total = x.sum(axis=1)
    es_all = var_es(total, level).es
    without = total[:, None] - x
    return es_all - var_es(without, level, axis=0).es
