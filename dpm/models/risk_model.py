"""One interface for every risk model, and a walk-forward driver that keeps it out of sample.

A **risk model** (:class:`RiskModel`) turns a history of daily log returns ``r`` (shape (n, U))
into forecasts and scenarios for the next days. Three calls make it usable everywhere in dpm:

* ``model.fit(r[:m])`` estimates parameters from those rows only and returns a
  :class:`FittedRiskModel`;
* ``fitted.path(r[:m'])`` runs the model's filters over rows that may extend the fit sample and
  returns a :class:`ModelPath`: row ``t`` holds the forecast of day ``t`` made from ``r[:t]`` — vols
  ``(U,)``, correlation ``(U, U)`` and whatever state the model samples from;
* ``fitted.sample(path, t, n, horizon, rng)`` draws ``horizon``-day log returns ``(n, U)`` of days
  ``t .. t+horizon-1`` given ``r[:t]``.

:class:`WalkForward` drives a model through a history without look-ahead: parameters are refitted
every ``refit_every`` days on the data before (and including) the refit day, and each day's
forecast uses that fit and the returns up to the day. It offers the three places the models plug
into:

1. :meth:`WalkForward.scan_ranges` — a :class:`~dpm.models.calibration.ranges.DynamicScanRange`
   (with per-day correlation) for :func:`dpm.models.dynamic.dynamic_model`;
2. :meth:`WalkForward.scenarios` — :class:`~dpm.models.scenarios.MarketScenarios` for the
   VaR/ES engine (:class:`dpm.engines.risk.ScenarioRiskEngine`);
3. the backtest harness — :func:`dpm.models.backtest.replay` takes a model object or name.

The volatility models live here (EWMA, filtered HS, GARCH family, HAR); the dependence models in
:mod:`dpm.models.dependence` (DCC, regimes, copulas, the learned tail model). :func:`risk_model`
builds any of them by name.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import stats

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.models.calibration._inputs import _as_returns, _check_int, _check_lambda, _check_level
from dpm.models.calibration.ewma import cov_to_corr, ewma_covariance
from dpm.models.calibration.gjr_garch import GJRGarchFit, fit_gjr_garch
from dpm.models.calibration.har import HARFit, fit_har
from dpm.models.calibration.ranges import (
    DynamicScanRange,
    VolShockProxy,
    apply_apc,
    fit_vol_shock_proxy,
    vol_shock_sizes,
)
from dpm.models.scenarios import MarketScenarios

__all__ = [
    "EWMAModel",
    "FHSModel",
    "FittedRiskModel",
    "Forecast",
    "GarchModel",
    "HARModel",
    "MODEL_NAMES",
    "ModelPath",
    "RiskModel",
    "WalkForward",
    "risk_model",
]


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelPath:
    """Forecasts of a fitted model over a return history ``r[:m]``.

    Attributes
    ----------
    vols : ndarray, shape (m + 1, U)
        ``vols[t]`` = daily vol forecast of ``r[t]`` from ``r[:t]`` (NaN while undefined).
    corr : ndarray, shape (m + 1, U, U)
        Correlation forecast, same alignment.
    extras : dict
        Model state used by ``sample`` (standardised residuals, regime probabilities, ...).
    """

    vols: np.ndarray
    corr: np.ndarray
    extras: Mapping[str, Any] = field(default_factory=dict)


class FittedRiskModel(Protocol):
    """A model with its parameters estimated (see the module docstring)."""

    def path(self, returns: np.ndarray) -> ModelPath: ...

    def sample(self, path: ModelPath, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray: ...


@runtime_checkable
class RiskModel(Protocol):
    """A risk model: ``name``, the history it needs (``min_obs`` returns) and ``fit``."""

    name: str
    min_obs: int

    def fit(self, returns: np.ndarray) -> FittedRiskModel: ...


@dataclass(frozen=True)
class Forecast:
    """A model's forecast made at the close of ``date`` for the next day."""

    day: int
    date: np.datetime64 | None
    vols: np.ndarray
    corr: np.ndarray


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

def _gaussian_copula_z(corr: np.ndarray, n: int, horizon: int, rng: np.random.Generator,
                       innovations: Sequence[Any] | None = None) -> np.ndarray:
    """(n, horizon, U) standardised innovations with a Gaussian copula ``corr`` and the given
    unit-variance marginal innovations (None: normal margins)."""
    u = corr.shape[0]
    L = np.linalg.cholesky(corr + 1e-12 * np.eye(u))
    x = rng.standard_normal((n, horizon, u)) @ L.T
    if innovations is None or all(inn.dist == "normal" for inn in innovations):
        return x
    p = np.clip(stats.norm.cdf(x), 1e-15, 1 - 1e-15)
    out = np.empty_like(x)
    for j, inn in enumerate(innovations):
        out[:, :, j] = x[:, :, j] if inn.dist == "normal" else inn.ppf(p[:, :, j])
    return out


def _overlapping_sums(x: np.ndarray, h: int) -> np.ndarray:
    c = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
    return c[h:] - c[:-h]


def _ewma_corr_path(r: np.ndarray, lam: float, warmup: int) -> np.ndarray:
    cov = ewma_covariance(r, lam, warmup=warmup, path=True)
    out = np.full_like(cov, np.nan)
    ok = np.all(np.isfinite(cov.reshape(cov.shape[0], -1)), axis=1)
    d = np.sqrt(np.diagonal(cov[ok], axis1=1, axis2=2))
    good = np.flatnonzero(ok)[np.all(d > 0, axis=1)]
    if good.size:
        out[good] = cov_to_corr(cov[good])
    return out


#: Probability cut from each tail of the GARCH innovations in simulated scenarios (see
#: ``_MarginalGarch.simulate``): about 13 standard deviations for a t with 3 degrees of freedom,
#: 3.7 for the normal; it changes a 97.5 % ES by the weight of 1 scenario in 10,000.
TAIL_TRUNCATION = 1e-4

#: Recent univariate fits by (data digest, dist, asymmetric): the DCC and copula models share their
#: margins, so a walk-forward comparison fits each margin once per refit (fits are immutable).
_FIT_CACHE: OrderedDict[tuple[str, str, bool], GJRGarchFit] = OrderedDict()
_FIT_CACHE_SIZE = 512


def _cached_gjr_fit(x: np.ndarray, dist: str, asymmetric: bool) -> GJRGarchFit:
    key = (hashlib.sha1(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest(), dist, bool(asymmetric))
    fit = _FIT_CACHE.get(key)
    if fit is None:
        fit = fit_gjr_garch(x, dist=dist, asymmetric=asymmetric, robust=False)
        _FIT_CACHE[key] = fit
        while len(_FIT_CACHE) > _FIT_CACHE_SIZE:
            _FIT_CACHE.popitem(last=False)
    else:
        _FIT_CACHE.move_to_end(key)
    return fit


class _MarginalGarch:
    """Per-asset GJR-GARCH fits: vol paths and standardised residuals on any extension of the data."""

    def __init__(self, returns: np.ndarray, dist: str, asymmetric: bool) -> None:
        self.fits: list[GJRGarchFit] = [_cached_gjr_fit(returns[:, j], dist, asymmetric)
                                        for j in range(returns.shape[1])]

    @property
    def innovations(self):
        return [f.innovation for f in self.fits]

    def variances(self, r: np.ndarray) -> np.ndarray:
        return np.column_stack([f.variance_path(r[:, j]) for j, f in enumerate(self.fits)])

    def simulate(self, h_next: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(n, U) horizon sums from next-day variances (U,) and innovations (n, horizon, U).

        Innovations are truncated at their :data:`TAIL_TRUNCATION` and ``1 - TAIL_TRUNCATION``
        quantiles: with Student-t log returns the price ``exp(r)`` has no finite mean, so a short
        position's simulated ES would grow without bound with the number of scenarios.
        """
        out = []
        for j, f in enumerate(self.fits):
            lo, hi = f.innovation.ppf([TAIL_TRUNCATION, 1.0 - TAIL_TRUNCATION])
            out.append(f.simulate(h_next[j], np.clip(z[:, :, j], lo, hi)))
        return np.column_stack(out)


# ---------------------------------------------------------------------------------------------
# Volatility models
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EWMAModel:
    """RiskMetrics EWMA covariance with normal scenarios (``N(0, h C[t])``, square-root of time).

    Nothing is estimated (``lambda_`` is fixed); ``fit`` only checks the data.
    """

    lambda_: float = 0.94
    warmup: int = 30
    name: str = "ewma"

    @property
    def min_obs(self) -> int:
        return self.warmup + 1

    def fit(self, returns: np.ndarray) -> _FittedEWMA:
        _check_lambda(self.lambda_)
        _as_returns(returns, "returns", min_obs=self.min_obs)
        return _FittedEWMA(self)


class _FittedEWMA:
    def __init__(self, model: EWMAModel) -> None:
        self.model = model

    def path(self, returns: np.ndarray) -> ModelPath:
        r, _ = _as_returns(returns, "returns", min_obs=self.model.warmup)
        cov = ewma_covariance(r, self.model.lambda_, warmup=self.model.warmup, path=True)
        vols = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        return ModelPath(vols, _ewma_corr_path(r, self.model.lambda_, self.model.warmup), {"cov": cov})

    def sample(self, path: ModelPath, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        cov = path.extras["cov"][t] * horizon
        u = cov.shape[0]
        w, v = np.linalg.eigh(0.5 * (cov + cov.T))
        return rng.standard_normal((n, u)) @ (v * np.sqrt(np.maximum(w, 0.0))).T


@dataclass(frozen=True)
class FHSModel:
    """Filtered historical simulation: the last ``window`` EWMA-standardised return vectors,
    rescaled by today's EWMA vols (Barone-Adesi et al. 1999). ``sample`` returns the
    ``window - horizon + 1`` overlapping scenarios of the window whatever ``n`` (a historical set).
    """

    lambda_: float = 0.94
    window: int = 500
    warmup: int = 30
    name: str = "fhs"

    @property
    def min_obs(self) -> int:
        return self.warmup + self.window

    def fit(self, returns: np.ndarray) -> _FittedFHS:
        _check_lambda(self.lambda_)
        _as_returns(returns, "returns", min_obs=self.min_obs)
        return _FittedFHS(self)


class _FittedFHS:
    def __init__(self, model: FHSModel) -> None:
        self.model = model

    def path(self, returns: np.ndarray) -> ModelPath:
        m = self.model
        r, _ = _as_returns(returns, "returns", min_obs=m.warmup)
        cov = ewma_covariance(r, m.lambda_, warmup=m.warmup, path=True)
        vols = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = r / vols[:-1]
        return ModelPath(vols, _ewma_corr_path(r, m.lambda_, m.warmup), {"z": z})

    def sample(self, path: ModelPath, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        w = self.model.window
        lo = max(self.model.warmup, t - w)
        z = path.extras["z"][lo:t]
        if z.shape[0] < horizon or not np.all(np.isfinite(z)):
            raise InvalidInputError(f"history: FHS needs {w} standardised returns before row {t}")
        return _overlapping_sums(z, horizon) * path.vols[t]


@dataclass(frozen=True)
class GarchModel:
    """Per-asset GJR-GARCH(1,1) (:func:`~dpm.models.calibration.gjr_garch.fit_gjr_garch`) with a
    static correlation.

    ``dist="normal", asymmetric=False`` is the Gaussian GARCH(1,1); ``dist="t"`` the t-GARCH;
    ``dist="skewt", asymmetric=True`` the GJR-GARCH with Hansen's skewed t. Scenarios join the
    fitted innovation margins with a Gaussian copula whose correlation is ``correlation``:
    ``"ewma"`` (RiskMetrics correlation of the returns, moving daily — as the ``garch_normal``
    backtest) or ``"constant"`` (the correlation of the standardised residuals in the fit sample).
    Multi-day scenarios run the GARCH recursion day by day.
    """

    dist: str = "normal"
    asymmetric: bool = False
    correlation: str = "ewma"
    lambda_: float = 0.94
    min_obs: int = 250
    name: str = "garch"

    def fit(self, returns: np.ndarray) -> _FittedGarch:
        if self.correlation not in ("ewma", "constant"):
            raise InvalidInputError(f"correlation: expected 'ewma' or 'constant', got {self.correlation!r}")
        r, _ = _as_returns(returns, "returns", min_obs=self.min_obs)
        return _FittedGarch(self, r)


class _FittedGarch:
    def __init__(self, model: GarchModel, r: np.ndarray) -> None:
        self.model = model
        self.marginals = _MarginalGarch(r, model.dist, model.asymmetric)
        z = r / np.sqrt(self.marginals.variances(r)[:-1])
        self.constant_corr = np.corrcoef(z, rowvar=False) if r.shape[1] > 1 else np.ones((1, 1))

    def path(self, returns: np.ndarray) -> ModelPath:
        r, _ = _as_returns(returns, "returns", min_obs=1)
        var = self.marginals.variances(r)
        if self.model.correlation == "ewma" and r.shape[0] >= 30:
            corr = _ewma_corr_path(r, self.model.lambda_, 30)
            corr[:30] = self.constant_corr
        else:
            corr = np.broadcast_to(self.constant_corr, (r.shape[0] + 1,) + self.constant_corr.shape).copy()
        return ModelPath(np.sqrt(var), corr, {"var": var})

    def sample(self, path: ModelPath, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        z = _gaussian_copula_z(path.corr[t], n, horizon, rng, self.marginals.innovations)
        return self.marginals.simulate(path.extras["var"][t], z)


@dataclass(frozen=True)
class HARModel:
    """HAR forecasts of each asset's variance (:mod:`~dpm.models.calibration.har`) with filtered
    historical residuals.

    ``realized`` is the daily realised-variance measure aligned with the returns the model will see
    (row ``t`` measures ``r[t]``; e.g. Garman-Klass from :func:`dpm.market.history.load_ohlc`);
    ``None`` uses squared returns. ``log`` (default: True for a given measure, False for squared
    returns, whose logarithm is dominated by near-zero days) models log realised variance. The HAR
    forecast of the measure is rescaled by
    ``mean(r^2) / mean(measure)`` over the fit sample (range estimators miss part of the
    close-to-close variance). Scenarios: the last ``window`` return vectors divided by their HAR
    vol forecasts, times today's forecast (as FHS, with HAR instead of EWMA vols).
    """

    realized: np.ndarray | None = None
    windows: tuple[int, ...] = (1, 7, 30)
    log: bool | None = None
    window: int = 500
    lambda_: float = 0.94
    min_obs: int = 600
    name: str = "har"

    def _measure(self, r: np.ndarray) -> np.ndarray:
        if self.realized is None:
            return r * r
        rv = np.asarray(self.realized, dtype=np.float64)
        if rv.ndim == 1:
            rv = rv[:, None]
        if rv.shape[1] != r.shape[1] or rv.shape[0] < r.shape[0]:
            raise InvalidInputError(f"realized: shape {rv.shape} does not cover returns {r.shape}")
        return rv[: r.shape[0]]

    @property
    def use_log(self) -> bool:
        return (self.realized is not None) if self.log is None else bool(self.log)

    def fit(self, returns: np.ndarray) -> _FittedHAR:
        r, _ = _as_returns(returns, "returns", min_obs=self.min_obs)
        rv = self._measure(r)
        fits = []
        ratio = []
        floor = np.zeros(r.shape[1])
        for j in range(r.shape[1]):
            x = rv[:, j]
            if self.use_log:
                # zero measures (a flat day) have no logarithm: floor them at the smallest positive
                # measure of the fit sample (kept, so new data are treated the same way)
                pos = x[np.isfinite(x) & (x > 0)]
                floor[j] = pos.min() if pos.size else 1e-12
                x = np.where(np.isfinite(x), np.maximum(x, floor[j]), x)
            fits.append(fit_har(x, self.windows, log=self.use_log))
            ok = np.isfinite(rv[:, j])
            ratio.append(float(np.mean(r[ok, j] ** 2) / np.mean(rv[ok, j])))
        return _FittedHAR(self, fits, np.array(ratio), floor)


class _FittedHAR:
    def __init__(self, model: HARModel, fits: list[HARFit], ratio: np.ndarray, floor: np.ndarray) -> None:
        self.model = model
        self.fits = fits
        self.ratio = ratio
        self.floor = floor

    def path(self, returns: np.ndarray) -> ModelPath:
        r, _ = _as_returns(returns, "returns", min_obs=1)
        rv = self.model._measure(r)
        if self.model.use_log:
            rv = np.where(np.isfinite(rv), np.maximum(rv, self.floor), rv)
        var = np.column_stack([f.forecast_path(rv[:, j]) * self.ratio[j] for j, f in enumerate(self.fits)])
        vols = np.sqrt(var)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = r / vols[:-1]
        corr = _ewma_corr_path(r, self.model.lambda_, 30) if r.shape[0] >= 30 else np.full(
            (r.shape[0] + 1, r.shape[1], r.shape[1]), np.nan)
        return ModelPath(vols, corr, {"z": z})

    def sample(self, path: ModelPath, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        z = path.extras["z"][max(0, t - self.model.window):t]
        z = z[np.all(np.isfinite(z), axis=1)]
        if z.shape[0] < horizon or not np.all(np.isfinite(path.vols[t])):
            raise InvalidInputError(f"history: HAR has no forecast at row {t}")
        return _overlapping_sums(z, horizon) * path.vols[t]


# ---------------------------------------------------------------------------------------------
# Walk-forward driver
# ---------------------------------------------------------------------------------------------

class WalkForward:
    """Out-of-sample driver: refit every ``refit_every`` days, forecast each day from the data so far.

    Parameters
    ----------
    model : RiskModel
    returns : array_like, shape (n, U), or :class:`~dpm.market.history.LogReturns`
        Daily log returns (with ``LogReturns``, ``dates`` and ``underlyings`` come from it).
    dates : array_like of datetime64, optional
    underlyings : sequence of str, optional
    refit_every : int
        Days between refits (30: monthly).
    first_fit : int, optional
        Returns in the first fit (default ``model.min_obs``); the first forecast is for the day
        after row ``first_fit - 1``.
    vol_shocks : bool
        Give scenarios the joint implied-vol shock of :class:`~dpm.models.calibration.ranges.VolShockProxy`,
        refitted with the model on the same data (otherwise vol shocks are 0).

    Notes
    -----
    Row ``day`` is the close of ``dates[day]``: the forecast made there uses the parameters of the
    last refit at or before ``day`` (estimated on ``returns[:refit + 1]``) and ``returns[:day + 1]``.
    """

    def __init__(self, model: RiskModel, returns: Any, *, dates: Any = None,
                 underlyings: Sequence[str] | None = None, refit_every: int = 30,
                 first_fit: int | None = None, vol_shocks: bool = True) -> None:
        if not isinstance(model, RiskModel):
            raise InvalidTypeError(f"model: expected a RiskModel (name, min_obs, fit), got {type(model).__name__}")
        if hasattr(returns, "values") and hasattr(returns, "assets") and hasattr(returns, "dates"):
            dates = returns.dates if dates is None else dates
            underlyings = returns.assets if underlyings is None else underlyings
            returns = returns.values
        r, _ = _as_returns(returns, "returns", min_obs=1)
        self.model = model
        self.returns = r
        n, u = r.shape
        self.underlyings = tuple(underlyings) if underlyings is not None else tuple(f"u{j}" for j in range(u))
        if len(self.underlyings) != u:
            raise InvalidInputError(f"underlyings: {len(self.underlyings)} names for {u} columns")
        self.dates = None if dates is None else np.asarray(dates).astype("datetime64[D]")
        if self.dates is not None and self.dates.shape != (n,):
            raise InvalidInputError(f"dates: expected {n} dates, got {self.dates.shape}")
        self.refit_every = _check_int(refit_every, "refit_every", 1)
        first = int(model.min_obs) if first_fit is None else _check_int(first_fit, "first_fit", 1)
        if first > n:
            raise InvalidInputError(f"returns: {model.name!r} needs {first} returns before its first fit, have {n}")
        self.fit_rows = np.arange(first - 1, n, self.refit_every)
        self.vol_shocks = bool(vol_shocks)
        self._fits: dict[int, FittedRiskModel] = {}
        self._paths: dict[int, ModelPath] = {}
        self._proxies: dict[tuple[int, int], VolShockProxy | None] = {}

    # ------------------------------------------------------------------ bookkeeping
    @property
    def name(self) -> str:
        return self.model.name

    @property
    def first_day(self) -> int:
        """First row with a forecast (the first refit day)."""
        return int(self.fit_rows[0])

    def row(self, day: int | str | np.datetime64) -> int:
        """Row index of ``day`` (an int row, negative from the end, or a date in ``dates``)."""
        n = self.returns.shape[0]
        if isinstance(day, (str, np.datetime64)):
            if self.dates is None:
                raise InvalidInputError("day: no dates given; pass a row number")
            hits = np.flatnonzero(self.dates == np.datetime64(day, "D"))
            if hits.size == 0:
                raise InvalidInputError(f"day: {day!r} is not in dates")
            return int(hits[0])
        t = int(day)
        if not -n <= t < n:
            raise InvalidInputError(f"day: row {t} out of range for {n} days")
        t %= n
        if t < self.first_day:
            raise InvalidInputError(
                f"day: row {t} is before the first fit of {self.name!r} (row {self.first_day}): not enough history")
        return t

    def _block(self, t: int) -> int:
        return int(np.searchsorted(self.fit_rows, t, side="right") - 1)

    def fitted(self, block: int) -> FittedRiskModel:
        """The fit of refit ``block`` (estimated on ``returns[:fit_rows[block] + 1]``)."""
        if block not in self._fits:
            self._fits[block] = self.model.fit(self.returns[: int(self.fit_rows[block]) + 1])
        return self._fits[block]

    def _path(self, block: int) -> ModelPath:
        if block not in self._paths:
            end = int(self.fit_rows[block + 1]) if block + 1 < self.fit_rows.size else self.returns.shape[0] - 1
            self._paths[block] = self.fitted(block).path(self.returns[: end + 1])
            # only the current block's path is kept for long histories
            for old in [k for k in self._paths if k < block - 1]:
                del self._paths[old]
        return self._paths[block]

    def _proxy(self, block: int, horizon: int) -> VolShockProxy | None:
        key = (block, horizon)
        if key not in self._proxies:
            r = self.returns[: int(self.fit_rows[block]) + 1]
            try:
                self._proxies[key] = fit_vol_shock_proxy(r, horizon_days=horizon, underlyings=self.underlyings)
            except InvalidInputError:
                self._proxies[key] = None
        return self._proxies[key]

    # ------------------------------------------------------------------ the three outputs
    def forecast(self, day: int | str | np.datetime64) -> Forecast:
        """Vols (U,) and correlation (U, U) for the day after ``day``."""
        t = self.row(day)
        p = self._path(self._block(t))
        return Forecast(t, None if self.dates is None else self.dates[t], p.vols[t + 1].copy(), p.corr[t + 1].copy())

    def sample(self, day: int | str | np.datetime64, n: int = 10_000, *, horizon: int = 1,
               seed: Any = None) -> np.ndarray:
        """``horizon``-day log-return scenarios (S, U) after ``day`` (S = n, or the window for historical models)."""
        t = self.row(day)
        h = _check_int(horizon, "horizon", 1)
        n = _check_int(n, "n", 1)
        b = self._block(t)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x = self.fitted(b).sample(self._path(b), t + 1, n, h, rng)
        if not np.all(np.isfinite(x)):
            raise InvalidInputError(f"{self.name}: non-finite scenario on row {t}")
        return x

    def scenarios(self, day: int | str | np.datetime64, n: int = 10_000, *, horizon: int = 1,
                  seed: Any = None) -> MarketScenarios:
        """:class:`MarketScenarios` for the VaR/ES engine (vol shocks from the refitted proxy)."""
        t = self.row(day)
        h = _check_int(horizon, "horizon", 1)
        x = self.sample(t, n, horizon=h, seed=seed)
        proxy = self._proxy(self._block(t), h) if self.vol_shocks else None
        label = "" if self.dates is None else f"@{self.dates[t]}"
        return MarketScenarios.from_log_returns(
            x, underlyings=self.underlyings, vol_proxy=proxy, horizon_days=h, kind=f"model:{self.name}",
            names=tuple(f"{self.name}{label}_{i}" for i in range(x.shape[0])))

    def forecast_path(self) -> tuple[np.ndarray, np.ndarray]:
        """Vols (n, U) and correlations (n, U, U) for every row (row t: forecast for t + 1; NaN
        before the first fit)."""
        n, u = self.returns.shape
        vols = np.full((n, u), np.nan)
        corr = np.full((n, u, u), np.nan)
        for b, f in enumerate(self.fit_rows):
            end = int(self.fit_rows[b + 1]) if b + 1 < self.fit_rows.size else n
            p = self._path(b)
            vols[f:end] = p.vols[f + 1:end + 1]
            corr[f:end] = p.corr[f + 1:end + 1]
        return vols, corr

    def extras_path(self, key: str) -> np.ndarray:
        """A model-state series from the paths (``path.extras[key]``, which must have a row per
        forecast), aligned like :meth:`forecast_path`: row t is the value for day t + 1, made at the
        close of t (NaN before the first fit). E.g. ``"prob"`` of the regime model."""
        n = self.returns.shape[0]
        out = None
        for b, f in enumerate(self.fit_rows):
            end = int(self.fit_rows[b + 1]) if b + 1 < self.fit_rows.size else n
            p = self._path(b)
            if key not in p.extras:
                raise InvalidInputError(f"key: {self.name!r} has no state {key!r} (has {sorted(p.extras)})")
            x = np.asarray(p.extras[key])
            if out is None:
                out = np.full((n,) + x.shape[1:], np.nan)
            out[f:end] = x[f + 1:end + 1]
        return out

    def scan_ranges(self, confidence: float = 0.99, horizon_days: int = 2, *, n_scenarios: int = 20_000,
                    seed: int = 0, vol_window: int = 30, long_term_days: int = 3650, min_floor_obs: int = 250,
                    iv_beta: float = 1.0, **apc: Any) -> DynamicScanRange:
        """Per-day scan ranges from this model, with the APC tools of
        :func:`~dpm.models.calibration.ranges.scan_ranges` (``apc``: floor, buffer, ...).

        ``raw[t] = expm1(max(q_c, -q_(1-c)))`` with ``q`` the quantiles of the model's
        ``horizon_days`` log-return scenarios (``n_scenarios``, seed ``seed + t``) — both tails, so
        skewed models widen the side that is riskier. Correlations are the model's for day t + 1.
        """
        conf = _check_level(confidence)
        h = _check_int(horizon_days, "horizon_days", 1)
        n, u = self.returns.shape
        raw = np.full((n, u), np.nan)
        for t in range(self.first_day, n):
            x = self.sample(t, n_scenarios, horizon=h, seed=seed + t)
            lo, hi = np.quantile(x, [1.0 - conf, conf], axis=0)
            raw[t] = np.expm1(np.maximum(hi, -lo))
        vols, corr = self.forecast_path()
        floor_rng, rate, released, capped, final = apply_apc(
            raw, self.returns, conf, h, long_term_days=long_term_days, min_floor_obs=min_floor_obs, **apc)
        up, down = vol_shock_sizes(self.returns, conf, h, window=vol_window, lookback=long_term_days,
                                   min_obs=min(min_floor_obs, max(n - vol_window - h, 1)), iv_beta=iv_beta)
        return DynamicScanRange(self.dates, self.underlyings, conf, h, vols, raw, floor_rng, rate, released,
                                capped, final, up, down, corr, self.name)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

def _registry() -> dict[str, Any]:
    from dpm.models.dependence.copulas import CopulaModel  # noqa: PLC0415 - same layer, avoids a cycle
    from dpm.models.dependence.dcc import DCCModel  # noqa: PLC0415
    from dpm.models.dependence.learned import LearnedTailModel  # noqa: PLC0415
    from dpm.models.dependence.regimes import RegimeModel  # noqa: PLC0415

    return {
        "ewma": lambda **kw: EWMAModel(**kw),
        "fhs": lambda **kw: FHSModel(**kw),
        "garch": lambda **kw: GarchModel(**{"dist": "normal", "name": "garch", **kw}),
        "t_garch": lambda **kw: GarchModel(**{"dist": "t", "name": "t_garch", **kw}),
        "gjr_skewt_garch": lambda **kw: GarchModel(**{"dist": "skewt", "asymmetric": True,
                                                     "name": "gjr_skewt_garch", **kw}),
        "har": lambda **kw: HARModel(**kw),
        "dcc": lambda **kw: DCCModel(**kw),
        "regime": lambda **kw: RegimeModel(**kw),
        "t_copula": lambda **kw: CopulaModel(**{"family": "t", "name": "t_copula", **kw}),
        "clayton_copula": lambda **kw: CopulaModel(**{"family": "clayton", "name": "clayton_copula", **kw}),
        "gumbel_survival_copula": lambda **kw: CopulaModel(**{"family": "gumbel_survival",
                                                             "name": "gumbel_survival_copula", **kw}),
        "empirical_copula": lambda **kw: CopulaModel(**{"family": "empirical", "name": "empirical_copula", **kw}),
        "learned": lambda **kw: LearnedTailModel(**kw),
    }


#: Names accepted by :func:`risk_model` (and by :func:`dpm.models.backtest.replay`).
MODEL_NAMES = ("ewma", "fhs", "garch", "t_garch", "gjr_skewt_garch", "har", "dcc", "regime", "t_copula",
               "clayton_copula", "gumbel_survival_copula", "empirical_copula", "learned")


def risk_model(name: str, /, **kwargs: Any) -> RiskModel:
    """Build a risk model by name (see :data:`MODEL_NAMES`); ``kwargs`` go to its constructor."""
    reg = _registry()
    if name not in reg:
        raise InvalidInputError(f"model: expected one of {MODEL_NAMES}, got {name!r}")
    return reg[name](**kwargs)
