"""Margin coverage backtests (Kupiec, Christoffersen, Basel traffic light), history replay and
procyclicality metrics.

A **breach** (exception) on day ``t`` is a realised loss larger than the margin set for it:
``-realized_pnl[t] > margin[t]``. With a model at confidence ``1 - p`` breaches should be
independent Bernoulli(``p``) draws.

References
----------
* P. Kupiec, "Techniques for verifying the accuracy of risk measurement models", J. Derivatives
  3(2) (1995) 73-84 — proportion-of-failures (POF) likelihood-ratio test, chi2(1).
* P. Christoffersen, "Evaluating interval forecasts", Int. Economic Review 39(4) (1998) 841-862 —
  Markov independence test, chi2(1); conditional coverage ``LR_cc = LR_pof + LR_ind``, chi2(2).
* Basel Committee, "Supervisory framework for the use of backtesting in conjunction with the
  internal models approach to market risk capital requirements", January 1996 — traffic light:
  green while the cumulative binomial probability of the breach count is below 95 %, red from
  99.99 % (for 250 days at 99 %: green 0-4, yellow 5-9, red 10+).
* C. Acerbi and B. Székely, "Backtesting expected shortfall", Risk (December 2014) — the Z2 test
  ``Z2 = sum_t X_t I_t / (T alpha ES_t) + 1`` (``E[Z2] = 0`` when ES is right, negative when ES
  underestimates the tail); 5 % critical value about -0.70 for alpha = 2.5 %, nearly independent
  of the distribution.
* ESMA, Final Report on the review of the RTS on APC margin measures (2023) and CPMI-IOSCO,
  "Review of margining practices" (2022) — peak-to-trough ratio and maximum n-day margin increase as
  procyclicality metrics.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special, stats

from dpm._util.validation import as_float_array, check_finite, check_nonnegative
from dpm.errors import InvalidInputError
from dpm.market.history import PriceHistory, load_history
from dpm.models.calibration._inputs import _check_int, _check_level
from dpm.models.calibration.ewma import ewma_covariance, ewma_variance
from dpm.models.calibration.garch import fit_garch, garch_variance
from dpm.models.calibration.ranges import scan_ranges
from dpm.models.measures import var_es

__all__ = [
    "DEFAULT_STRESS_PERIODS",
    "ESBacktestResult",
    "es_backtest_z2",
    "BacktestReport",
    "ConditionalCoverageResult",
    "IndependenceResult",
    "KupiecResult",
    "ReplayResult",
    "backtest_margin",
    "christoffersen_conditional_coverage",
    "christoffersen_independence",
    "kupiec_pof",
    "model_margins",
    "plot_backtest",
    "procyclicality_report",
    "replay",
    "traffic_light",
]

DEFAULT_STRESS_PERIODS: dict[str, tuple[str, str]] = {
    "march_2020": ("2020-02-01", "2020-04-30"),
    "crypto_2022": ("2022-04-01", "2022-12-31"),
}


def _as_breaches(breaches: Any) -> np.ndarray:
    arr = np.asarray(breaches)
    if arr.ndim != 1:
        raise InvalidInputError(f"breaches: expected a 1-d sequence, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError("breaches: empty sequence")
    if arr.dtype.kind == "b":
        return arr.astype(bool)
    if arr.dtype.kind not in "iuf":
        raise InvalidInputError(f"breaches: expected booleans or 0/1, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(f"breaches: expected 0/1, index {i} is {arr[i].item()!r}")
    return arr.astype(bool)


def _check_p(p: float) -> float:
    pv = float(p)
    if not (0.0 < pv < 1.0):
        raise InvalidInputError(f"p: expected breach probability in (0, 1), got {p!r}")
    return pv


@dataclass(frozen=True)
class KupiecResult:
    """Kupiec POF test: ``n`` days, ``breaches`` observed, ``expected = n p``, LR and p-value."""

    n: int
    breaches: int
    rate: float
    expected: float
    lr: float
    p_value: float


@dataclass(frozen=True)
class IndependenceResult:
    """Christoffersen independence test: transition counts ``n_ij`` (state i then j)."""

    n00: int
    n01: int
    n10: int
    n11: int
    pi0: float
    pi1: float
    pi: float
    lr: float
    p_value: float


@dataclass(frozen=True)
class ConditionalCoverageResult:
    """``lr = lr_pof + lr_ind``, chi2(2) p-value."""

    lr_pof: float
    lr_ind: float
    lr: float
    p_value: float


def kupiec_pof(breaches: Any, p: float) -> KupiecResult:
    """Kupiec (1995) proportion-of-failures test.

    ``LR = -2 ln[(1-p)^(n-x) p^x] + 2 ln[(1-x/n)^(n-x) (x/n)^x]`` with ``0 ln 0 = 0``;
    p-value ``1 - F_chi2(1)(LR)``.

    Parameters
    ----------
    breaches : sequence of bool or 0/1
    p : float
        Expected breach probability (0.01 for 99 % margin).
    """
    b = _as_breaches(breaches)
    p = _check_p(p)
    n = b.size
    x = int(b.sum())
    phat = x / n
    ll0 = special.xlogy(n - x, 1.0 - p) + special.xlogy(x, p)
    ll1 = special.xlogy(n - x, 1.0 - phat) + special.xlogy(x, phat)
    lr = max(0.0, float(-2.0 * (ll0 - ll1)))
    return KupiecResult(n, x, phat, n * p, lr, float(stats.chi2.sf(lr, 1)))


def christoffersen_independence(breaches: Any) -> IndependenceResult:
    """Christoffersen (1998) first-order Markov independence test.

    With ``n_ij`` the number of days in state ``j`` after a day in state ``i`` (1 = breach),
    ``pi0 = n01/(n00+n01)``, ``pi1 = n11/(n10+n11)``, ``pi = (n01+n11)/(n - 1)``:
    ``LR = -2 ln[(1-pi)^(n00+n10) pi^(n01+n11)]
    + 2 ln[(1-pi0)^n00 pi0^n01 (1-pi1)^n10 pi1^n11]``, chi2(1).
    """
    b = _as_breaches(breaches)
    if b.size < 2:
        raise InvalidInputError("breaches: the independence test needs at least 2 days")
    prev, nxt = b[:-1], b[1:]
    n00 = int(np.sum(~prev & ~nxt))
    n01 = int(np.sum(~prev & nxt))
    n10 = int(np.sum(prev & ~nxt))
    n11 = int(np.sum(prev & nxt))
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    ll0 = special.xlogy(n00 + n10, 1.0 - pi) + special.xlogy(n01 + n11, pi)
    ll1 = (special.xlogy(n00, 1.0 - pi0) + special.xlogy(n01, pi0)
           + special.xlogy(n10, 1.0 - pi1) + special.xlogy(n11, pi1))
    lr = max(0.0, float(-2.0 * (ll0 - ll1)))
    return IndependenceResult(n00, n01, n10, n11, pi0, pi1, pi, lr, float(stats.chi2.sf(lr, 1)))


def christoffersen_conditional_coverage(breaches: Any, p: float) -> ConditionalCoverageResult:
    """Conditional coverage ``LR_cc = LR_pof + LR_ind`` (Christoffersen 1998), chi2(2).

    ``LR_pof`` is Kupiec's statistic on the full sequence (the common textbook form; Christoffersen's
    original drops the first day from the unconditional part, a difference of one observation).
    """
    k = kupiec_pof(breaches, p)
    ind = christoffersen_independence(breaches)
    lr = k.lr + ind.lr
    return ConditionalCoverageResult(k.lr, ind.lr, lr, float(stats.chi2.sf(lr, 2)))


def traffic_light(n_breaches: int, n: int, p: float) -> str:
    """Basel traffic-light zone ("green", "yellow", "red") for ``n_breaches`` in ``n`` days.

    Zone boundaries from the cumulative binomial probability ``P(X <= n_breaches)``,
    ``X ~ Bin(n, p)``: green below 95 %, red at or above 99.99 %, yellow between (Basel 1996).
    """
    p = _check_p(p)
    n = _check_int(n, "n", 1)
    x = _check_int(n_breaches, "n_breaches", 0)
    cdf = float(stats.binom.cdf(x, n, p))
    if cdf < 0.95:
        return "green"
    if cdf < 0.9999:
        return "yellow"
    return "red"


@dataclass(frozen=True)
class BacktestReport:
    """Result of :func:`backtest_margin`."""

    n: int
    breaches: int
    expected: float
    rate: float
    p: float
    kupiec: KupiecResult
    independence: IndependenceResult
    conditional_coverage: ConditionalCoverageResult
    zone: str
    breach_index: np.ndarray
    mean_margin: float
    mean_excess_loss: float  # mean of (loss - margin) over breaches, 0 without breaches

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.n, "breaches": self.breaches, "expected": round(self.expected, 2),
            "rate": self.rate, "kupiec_lr": self.kupiec.lr, "kupiec_p": self.kupiec.p_value,
            "ind_lr": self.independence.lr, "ind_p": self.independence.p_value,
            "cc_lr": self.conditional_coverage.lr, "cc_p": self.conditional_coverage.p_value,
            "zone": self.zone, "mean_margin": self.mean_margin,
            "mean_excess_loss": self.mean_excess_loss,
        }

    def summary(self) -> str:
        return (f"{self.breaches} breaches in {self.n} days (expected {self.expected:.1f}, "
                f"rate {self.rate:.4f}); Kupiec LR {self.kupiec.lr:.3f} p={self.kupiec.p_value:.3f}; "
                f"independence LR {self.independence.lr:.3f} p={self.independence.p_value:.3f}; "
                f"cond. coverage LR {self.conditional_coverage.lr:.3f} "
                f"p={self.conditional_coverage.p_value:.3f}; zone {self.zone}")


def backtest_margin(margin: Any, realized_pnl: Any, p: float = 0.01) -> BacktestReport:
    """Coverage backtest of a margin series against realised P&L.

    Parameters
    ----------
    margin : array_like, shape (T,)
        Margin (>= 0) held for day ``t``'s holding period.
    realized_pnl : array_like, shape (T,)
        Realised P&L over the same period (gains positive).
    p : float
        Target breach probability (1 - confidence).

    Returns
    -------
    BacktestReport
    """
    m = np.atleast_1d(as_float_array(margin, "margin"))
    x = np.atleast_1d(as_float_array(realized_pnl, "realized_pnl"))
    if m.ndim != 1 or x.ndim != 1:
        raise InvalidInputError(f"margin/realized_pnl: expected 1-d arrays, got {m.shape}, {x.shape}")
    if m.size != x.size:
        raise InvalidInputError(
            f"margin/realized_pnl: arrays must have the same length: margin has {m.size}, "
            f"realized_pnl has {x.size}")
    if m.size == 0:
        raise InvalidInputError("margin: empty series")
    check_nonnegative(m, "margin")
    check_finite(x, "realized_pnl")
    p = _check_p(p)
    breach = -x > m
    k = kupiec_pof(breach, p)
    ind = christoffersen_independence(breach) if m.size >= 2 else IndependenceResult(
        0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 1.0)
    cc = ConditionalCoverageResult(k.lr, ind.lr, k.lr + ind.lr, float(stats.chi2.sf(k.lr + ind.lr, 2)))
    idx = np.flatnonzero(breach)
    excess = float(np.mean(-x[idx] - m[idx])) if idx.size else 0.0
    return BacktestReport(m.size, k.breaches, k.expected, k.rate, p, k, ind, cc,
                          traffic_light(k.breaches, m.size, p), idx, float(np.mean(m)), excess)


# ---------------------------------------------------------------------------------------------
# Expected-shortfall backtest (Acerbi-Szekely Z2)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ESBacktestResult:
    """Result of :func:`es_backtest_z2`."""

    z2: float
    p_value: float          # P(Z2 <= observed) under H0 (Monte Carlo), small = ES too low
    breaches: int
    n: int
    alpha: float
    critical_value_5pct: float  # 5 % quantile of the simulated null distribution
    reject_5pct: bool


def _unit_var_es(alpha: float, dist: str, dof: float | None) -> tuple[float, float]:
    """VaR and ES (as positive losses) of the standard normal or Student-t at tail ``alpha``."""
    if dist == "normal":
        z = -stats.norm.ppf(alpha)
        return float(z), float(stats.norm.pdf(z) / alpha)
    nu = float(dof)
    t = -stats.t.ppf(alpha, nu)
    return float(t), float((nu + t * t) / (nu - 1.0) * stats.t.pdf(t, nu) / alpha)


def es_backtest_z2(realized_pnl: Any, var: Any, es: Any, alpha: float = 0.025, *,
                   n_sim: int = 10_000, dist: str = "normal", dof: float | None = None,
                   seed: Any = 0) -> ESBacktestResult:
    """Acerbi-Székely Z2 backtest of expected-shortfall forecasts.

    ``Z2 = sum_t X_t I_t / (T alpha ES_t) + 1`` with ``X_t`` the realised P&L (gains positive),
    ``I_t = 1`` when ``X_t < -VaR_t`` and ``VaR_t``, ``ES_t`` the forecasts (positive losses) at tail
    probability ``alpha``. Under the null (the forecast tail is right) ``E[Z2] = 0``; a negative
    value means the ES forecasts were too low. The p-value is ``P(Z2 <= observed)`` over ``n_sim``
    simulated histories in which each day's P&L follows the forecast distribution, taken as a
    zero-mean normal (or Student-t with ``dof``) scaled so that its ES equals ``ES_t`` (its VaR then
    follows from the same distribution).

    Parameters
    ----------
    realized_pnl, var, es : array_like, shape (T,)
    alpha : float
        Tail probability of the forecasts (0.025 for 97.5 % ES).
    n_sim : int
        Simulated histories for the p-value.
    dist : {"normal", "student_t"}
    dof : float, optional
        Degrees of freedom (> 2) for ``dist="student_t"``.
    seed : int or numpy.random.Generator
    """
    x = np.atleast_1d(as_float_array(realized_pnl, "realized_pnl"))
    v = np.atleast_1d(as_float_array(var, "var"))
    e = np.atleast_1d(as_float_array(es, "es"))
    if not (x.ndim == v.ndim == e.ndim == 1 and x.size == v.size == e.size):
        raise InvalidInputError(
            f"realized_pnl/var/es: expected 1-d arrays of one length, got {x.shape}, {v.shape}, {e.shape}")
    if x.size == 0:
        raise InvalidInputError("realized_pnl: empty series")
    check_finite(x, "realized_pnl")
    check_nonnegative(v, "var")
    check_finite(e, "es")
    if (e <= 0).any():
        i = int(np.flatnonzero(e <= 0)[0])
        raise InvalidInputError(f"es: must be > 0, index {i} is {float(e[i])!r}")
    a = _check_p(alpha)
    if dist not in ("normal", "student_t"):
        raise InvalidInputError(f"dist: expected 'normal' or 'student_t', got {dist!r}")
    if dist == "student_t" and (dof is None or not np.isfinite(dof) or dof <= 2):
        raise InvalidInputError(f"dof: Student-t needs dof > 2, got {dof!r}")
    n_sim = _check_int(n_sim, "n_sim", 100)
    T = x.size

    def z2(pnl: np.ndarray, var_: np.ndarray, es_: np.ndarray) -> np.ndarray:
        hit = pnl < -var_
        return (pnl * hit / es_).sum(axis=-1) / (T * a) + 1.0

    observed = float(z2(x, v, e))
    q_unit, es_unit = _unit_var_es(a, dist, dof)
    scale = e / es_unit
    rng = np.random.default_rng(seed)
    sims = np.empty(n_sim)
    step = max(1, 4_000_000 // T)  # simulate in slices of ~4M draws
    for s0 in range(0, n_sim, step):
        k = min(step, n_sim - s0)
        z = rng.standard_normal((k, T)) if dist == "normal" else rng.standard_t(dof, (k, T))
        sims[s0:s0 + k] = z2(z * scale, q_unit * scale, e)
    p_value = float((np.count_nonzero(sims <= observed) + 1) / (n_sim + 1))
    crit = float(np.quantile(sims, 0.05))
    return ESBacktestResult(observed, p_value, int((x < -v).sum()), T, a, crit, bool(observed < crit))


# ---------------------------------------------------------------------------------------------
# History replay
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplayResult:
    """Daily margins of a fixed linear portfolio replayed through history (see :func:`replay`).

    ``margin[t]`` is set at the close of ``dates[t]`` from data up to that close; ``realized_pnl[t]``
    is the P&L from that close to the close ``horizon`` days later; ``gross_exposure[t]`` is
    ``sum |q_u P_u|`` at ``dates[t]`` (``margin_rate = margin / gross_exposure``).
    """

    dates: np.ndarray
    margin: np.ndarray
    realized_pnl: np.ndarray
    gross_exposure: np.ndarray
    model: str
    measure: str
    level: float
    horizon: int
    quantities: dict[str, float]
    report: BacktestReport = field(repr=False)

    @property
    def margin_rate(self) -> np.ndarray:
        return self.margin / self.gross_exposure

    @property
    def breaches(self) -> np.ndarray:
        return -self.realized_pnl > self.margin

    def plot(self, path: Any = None, **kwargs: Any):
        """Plot margin vs realised P&L (see :func:`plot_backtest`)."""
        return plot_backtest(self, path, **kwargs)


def _exposure_rows(hist: PriceHistory, quantities: Mapping[str, float]):
    if not quantities:
        raise InvalidInputError("quantities: empty portfolio")
    assets = list(quantities)
    q = np.array([float(quantities[a]) for a in assets])
    check_finite(q, "quantities", labels=assets)
    if np.all(q == 0):
        raise InvalidInputError("quantities: all zero")
    return assets, q


def replay(quantities: Mapping[str, float], model: Any = "hs", *,
           history: PriceHistory | None = None, level: float = 0.99, measure: str = "es",
           horizon: int = 1, window: int = 500, lambda_: float = 0.94, warmup: int = 30,
           start: Any = None, end: Any = None, static_range: float | Mapping[str, float] = 0.16,
           scan_kwargs: Mapping[str, Any] | None = None, refit_days: int = 250,
           n_scenarios: int = 10_000, seed: int = 0) -> ReplayResult:
    """Roll a fixed linear portfolio through history: each day's margin vs next-horizon P&L.

    Parameters
    ----------
    quantities : mapping asset -> units held (long > 0), e.g. ``{"BTC": 1.0, "ETH": -10.0}``.
        The USD exposure on day t is ``q * close[t]``; P&L over the next ``horizon`` days is
        ``q * (close[t+h] - close[t])``, summed over assets.
    model : {"hs", "fhs", "ewma_normal", "static", "scan"}
        * ``"hs"``: historical simulation on the last ``window`` daily returns (overlapping
          h-day sums), full revaluation of the linear exposures (``q P expm1(R)``).
        * ``"fhs"``: filtered HS — the same window devolatilised by EWMA (``lambda_``) and rescaled
          to today's vol (:func:`dpm.models.measures.filtered_historical_scenarios`).
        * ``"ewma_normal"``: delta-normal with the EWMA covariance; VaR ``z sigma_p``,
          ES ``sigma_p phi(z) / (1 - level)``, ``sigma_p^2 = h e^T C e``.
        * ``"garch_normal"``: as ``"ewma_normal"`` but each asset's variance is a GARCH(1,1)
          forecast (:func:`dpm.models.calibration.fit_garch`, refitted every ``refit_days`` on all
          returns so far, first fit after ``window`` returns; the variance recursion runs daily
          with the latest parameters); correlations from EWMA.
        * ``"static"``: fixed scan range per asset (``static_range``, default 0.16 — Deribit's
          BTC ``price_range``); margin ``sum |q P| range`` = the worst loss over all sign
          combinations of ``±range`` (no correlation offset).
        * ``"scan"``: the same with the dynamic ranges of :func:`dpm.models.calibration.ranges`
          (confidence ``level``, ``horizon_days=horizon``; ``scan_kwargs`` go to it).
        * any other name of :data:`dpm.models.risk_model.MODEL_NAMES` (``"t_garch"``, ``"dcc"``,
          ``"regime"``, ``"t_copula"``, ``"learned"``, ...) or a
          :class:`~dpm.models.risk_model.RiskModel` object: the model is walked forward
          (:class:`~dpm.models.risk_model.WalkForward`, refitted every ``refit_days`` on the
          returns so far, first fit on ``max(window, model.min_obs)`` returns) and each day's
          margin is the VaR/ES of the portfolio over ``n_scenarios`` of its scenarios (seed
          ``seed + row``), revalued in full (``q P expm1(R)``). See :func:`model_margins`.
    measure : {"es", "var"}
        Risk measure for hs/fhs/ewma_normal.
    history : PriceHistory, optional
        Default: the bundled history.
    start, end : date-like, optional
        Restrict the reported margin dates.

    Returns
    -------
    ReplayResult
        With a :class:`BacktestReport` at ``p = 1 - level``. Overlapping horizons (``horizon > 1``)
        make breaches dependent; read the independence test accordingly.
    """
    hist = load_history() if history is None else history
    lv = _check_level(level, "level")
    h = _check_int(horizon, "horizon", 1)
    window = _check_int(window, "window", h + 1)
    if measure not in ("es", "var"):
        raise InvalidInputError(f"measure: expected 'es' or 'var', got {measure!r}")
    assets, q = _exposure_rows(hist, quantities)
    ret = hist.log_returns(assets, min_obs=max(window, warmup) + h + 1)
    r = ret.values
    prices = ret.prices  # prices[t+1] is the close on ret.dates[t]
    n, u = r.shape
    expo = q * prices[1:]                                   # (n, U) USD exposure at each close
    pnl = np.full(n, np.nan)
    pnl[: n - h] = (q * (prices[1 + h:] - prices[1:n + 1 - h])).sum(axis=1)
    margin = np.full(n, np.nan)

    if model in ("hs", "fhs"):
        if model == "hs":
            base = r
            scale = np.ones((n, u))
            first = window - 1
        else:
            var = ewma_variance(r, lambda_, warmup=warmup)
            sig = np.sqrt(var)
            base = np.zeros_like(r)  # rows before warmup are never inside a used window
            base[warmup:] = r[warmup:] / sig[warmup:-1]
            scale = sig[1:]                                # sigma forecast for day t+1
            first = warmup + window - 1
        c = np.cumsum(np.vstack([np.zeros((1, u)), base]), axis=0)
        hsum = c[h:] - c[:-h]                              # hsum[s] = sum base[s..s+h-1]
        n_scen = window - h + 1
        views = sliding_window_view(hsum, n_scen, axis=0)  # (n-h+1-n_scen+1, U, n_scen)
        rows = np.arange(first, n)
        vidx = rows - window + 1                           # window rows t-window+1 .. t
        vidx = vidx[vidx >= 0]
        rows = rows[-vidx.size:] if vidx.size else rows[:0]
        scen = views[vidx] * scale[rows][:, :, None]       # (T, U, S) log returns
        spnl = np.einsum("tu,tus->ts", expo[rows], np.expm1(scen))
        res = var_es(spnl, lv, axis=-1)
        margin[rows] = np.maximum(res.es if measure == "es" else res.var, 0.0)
    elif model in ("ewma_normal", "garch_normal"):
        cov = ewma_covariance(r, lambda_, warmup=warmup, path=True)[1:]  # row t: forecast t+1
        if model == "garch_normal":
            cov = _garch_covariance(r, cov, window, refit_days)
        sp = np.sqrt(np.maximum(np.einsum("tu,tuv,tv->t", expo, cov, expo), 0.0) * h)
        z = stats.norm.ppf(lv)
        margin = sp * (stats.norm.pdf(z) / (1.0 - lv) if measure == "es" else z)
    elif model == "static":
        if isinstance(static_range, Mapping):
            rng_ = np.array([float(static_range[a]) for a in assets])
        else:
            rng_ = np.full(u, float(static_range))
        check_nonnegative(rng_, "static_range", labels=assets)
        margin = (np.abs(expo) * rng_).sum(axis=1)
    elif model == "scan":
        kw = dict(scan_kwargs or {})
        sr = scan_ranges(r, confidence=lv, horizon_days=h, lambda_=lambda_, warmup=warmup,
                         assets=assets, **kw)
        margin = (np.abs(expo) * sr.range).sum(axis=1)
    else:
        from dpm.models.risk_model import MODEL_NAMES, RiskModel, WalkForward, risk_model  # noqa: PLC0415

        if isinstance(model, str):
            if model not in MODEL_NAMES:
                raise InvalidInputError(
                    f"model: expected 'hs', 'fhs', 'ewma_normal', 'garch_normal', 'static', 'scan', one of "
                    f"{MODEL_NAMES} or a RiskModel, got {model!r}")
            model = risk_model(model)
        elif not isinstance(model, RiskModel):
            raise InvalidInputError(f"model: expected a name or a RiskModel, got {type(model).__name__}")
        wf = WalkForward(model, r, dates=ret.dates, underlyings=assets, refit_every=refit_days,
                         first_fit=max(window, int(model.min_obs)), vol_shocks=False)
        rows = np.arange(wf.first_day, n - h)
        if start is not None:
            rows = rows[ret.dates[rows] >= np.datetime64(start, "D")]
        if end is not None:
            rows = rows[ret.dates[rows] <= np.datetime64(end, "D")]
        v, e = model_margins(wf, lambda t, x: np.expm1(x) @ expo[t], rows, [lv], horizon=h,
                             n_scenarios=n_scenarios, seed=seed)
        margin[rows] = np.maximum(e[:, 0] if measure == "es" else v[:, 0], 0.0)
        model = model.name

    ok = np.isfinite(margin) & np.isfinite(pnl)
    if start is not None:
        ok &= ret.dates >= np.datetime64(start, "D")
    if end is not None:
        ok &= ret.dates <= np.datetime64(end, "D")
    if not ok.any():
        raise InvalidInputError(
            f"history: too little history to replay {model!r} with window {window} between "
            f"{start} and {end}")
    gross = np.abs(expo).sum(axis=1)
    report = backtest_margin(margin[ok], pnl[ok], 1.0 - lv)
    return ReplayResult(ret.dates[ok].copy(), margin[ok], pnl[ok], gross[ok], model, measure, lv, h,
                        dict(zip(assets, q.tolist())), report)


def model_margins(walk_forward: Any, revalue: Any, rows: Any, levels: Sequence[float] = (0.99,), *,
                  horizon: int = 1, n_scenarios: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES of one or several books, day by day, from a walked-forward risk model's scenarios.

    Parameters
    ----------
    walk_forward : dpm.models.risk_model.WalkForward
    revalue : callable ``(row, log_returns (S, U)) -> pnl``
        Full revaluation of the book(s) held at the close of ``row`` under the scenario log
        returns of the underlyings over ``horizon`` days: shape (S,) for one book or (B, S) for
        ``B`` books revalued on the same scenarios (USD, gains positive).
    rows : array_like of int
        Rows (closes) to margin; each uses data up to that close only.
    levels : sequence of float
    horizon, n_scenarios, seed
        Scenarios of day ``row`` are drawn with seed ``seed + row`` (reproducible in any order).

    Returns
    -------
    var, es : ndarray, shape (len(rows), len(levels)) or (len(rows), B, len(levels))
        Positive numbers are losses (:func:`dpm.models.measures.var_es` conventions).
    """
    rr = np.asarray(rows, dtype=np.int64).reshape(-1)
    lvls = [_check_level(x, "level") for x in levels]
    v = e = None
    single = True
    for i, t in enumerate(rr):
        x = walk_forward.sample(int(t), n_scenarios, horizon=horizon, seed=seed + int(t))
        pnl = np.asarray(revalue(int(t), x), dtype=np.float64)
        if pnl.ndim == 1:
            pnl = pnl[None, :]
        elif i == 0:
            single = False
        if pnl.ndim != 2 or pnl.shape[1] != x.shape[0]:
            raise InvalidInputError(f"revalue: expected {x.shape[0]} scenario P&Ls per book, got shape {pnl.shape}")
        check_finite(pnl, "revalue")
        if v is None:
            v = np.empty((rr.size, pnl.shape[0], len(lvls)))
            e = np.empty_like(v)
        res = var_es(pnl, np.array(lvls), axis=1)   # (L, B): one sort for all levels
        v[i] = res.var.T
        e[i] = res.es.T
    if v is None:
        shape = (0, len(lvls))
        return np.empty(shape), np.empty(shape)
    return (v[:, 0], e[:, 0]) if single else (v, e)


def _garch_covariance(r: np.ndarray, ewma_cov: np.ndarray, first_fit: int,
                      refit_days: int) -> np.ndarray:
    """EWMA correlations with per-asset GARCH(1,1) variances; row t forecasts day t+1.

    Parameters are refitted at rows ``first_fit - 1, first_fit - 1 + refit_days, ...`` on
    ``r[:fit_row + 1]``; rows before the first fit are NaN. No row uses a later return.
    """
    n, u = r.shape
    refit_days = _check_int(refit_days, "refit_days", 1)
    var = np.full((n, u), np.nan)
    fits = list(range(first_fit - 1, n, refit_days))
    for k, t_fit in enumerate(fits):
        t_end = fits[k + 1] if k + 1 < len(fits) else n
        for j in range(u):
            f = fit_garch(r[: t_fit + 1, j])
            # h0 from the fit sample only; the path over r[:t_end] forecasts rows t_fit .. t_end-1
            h = garch_variance(r[:t_end, j], f.omega, f.alpha, f.beta,
                               initial_variance=float(np.mean(r[: t_fit + 1, j] ** 2)))
            var[t_fit:t_end, j] = h[t_fit + 1:t_end + 1]
    sd = np.sqrt(np.diagonal(ewma_cov, axis1=1, axis2=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = ewma_cov / (sd[:, :, None] * sd[:, None, :])
    g = np.sqrt(var)
    return corr * g[:, :, None] * g[:, None, :]


def plot_backtest(result: ReplayResult, path: Any = None, *, ax: Any = None,
                  title: str | None = None, dpi: int = 120):
    """Margin (drawn as ``-margin``) against realised P&L, breaches marked (matplotlib, lazy).

    Returns the matplotlib Figure; saves it to ``path`` if given.
    """
    try:
        from matplotlib.figure import Figure  # lazy: optional dependency
    except ImportError:
        raise ImportError("plotting needs matplotlib (pip install matplotlib)") from None
    if ax is None:
        fig = Figure(figsize=(11, 4.8))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    d = result.dates
    ax.plot(d, result.realized_pnl, lw=0.6, color="0.55", label="realised P&L")
    ax.plot(d, -result.margin, lw=1.0, color="tab:blue",
            label=f"-margin ({result.model}, {result.measure.upper()} {result.level:.1%})")
    b = result.breaches
    ax.scatter(d[b], result.realized_pnl[b], s=14, color="tab:red", zorder=3,
               label=f"breaches ({int(b.sum())} of {b.size}, expected {b.size * (1 - result.level):.0f})")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_ylabel("USD")
    pos = ", ".join(f"{v:+g} {k}" for k, v in result.quantities.items())
    ax.set_title(title or f"Margin backtest: {pos}, {result.horizon}-day horizon")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


# ---------------------------------------------------------------------------------------------
# Procyclicality
# ---------------------------------------------------------------------------------------------

def procyclicality_report(margin: Any, dates: Any, periods: Mapping[str, Sequence[Any]] | None = None,
                          *, long_window: int = 30) -> dict[str, dict[str, float]]:
    """Procyclicality metrics of a margin series over named periods.

    For each period ``[start, end]`` (inclusive):

    * ``peak_to_trough``: max margin / min margin within the period;
    * ``max_1d_increase``: max of ``m[t] / m[t-1] - 1`` for ``t`` in the period;
    * ``max_{long_window}d_increase``: max of ``m[t] / m[t-long_window] - 1`` for ``t`` in the period
      (the earlier day may precede the period);
    * ``mean``: average margin.

    Pass a **margin rate** (margin / exposure, :attr:`ReplayResult.margin_rate`) to compare models
    independently of price changes of the portfolio.

    Parameters
    ----------
    margin : array_like, shape (T,)
    dates : array_like of datetime64[D], shape (T,), consecutive days
    periods : mapping name -> (start, end); default :data:`DEFAULT_STRESS_PERIODS`.
    """
    m = np.atleast_1d(as_float_array(margin, "margin"))
    d = np.asarray(dates).astype("datetime64[D]")
    if m.ndim != 1 or d.shape != m.shape:
        raise InvalidInputError(f"margin/dates: shapes {m.shape} and {d.shape} differ")
    check_finite(m, "margin")
    if np.any(m <= 0):
        i = int(np.flatnonzero(m <= 0)[0])
        raise InvalidInputError(f"margin: must be > 0 for ratios, index {i} is {float(m[i])!r}")
    lw = _check_int(long_window, "long_window", 1)
    inc1 = np.full(m.shape, np.nan)
    inc1[1:] = m[1:] / m[:-1] - 1.0
    incl = np.full(m.shape, np.nan)
    incl[lw:] = m[lw:] / m[:-lw] - 1.0
    out: dict[str, dict[str, float]] = {}
    for name, (s, e) in (periods or DEFAULT_STRESS_PERIODS).items():
        mask = (d >= np.datetime64(s, "D")) & (d <= np.datetime64(e, "D"))
        if not mask.any():
            raise InvalidInputError(f"periods: no data in {name!r} ({s} .. {e})")
        mm = m[mask]
        out[name] = {
            "peak_to_trough": float(mm.max() / mm.min()),
            "max_1d_increase": float(np.nanmax(inc1[mask])) if np.isfinite(inc1[mask]).any() else np.nan,
            f"max_{lw}d_increase": float(np.nanmax(incl[mask])) if np.isfinite(incl[mask]).any() else np.nan,
            "mean": float(mm.mean()),
        }
    return out
