"""Venue-following smiles: a clamped cubic spline of total variance per expiry, fitted inside bid/ask.

A :class:`SplineSlice` is one expiry's smile ``w(k)`` (total implied variance in log-moneyness
``k = ln(K/F)``): a C2 cubic spline through the values ``w_i`` at knots ``x_0 < ... < x_n`` with zero slope
at both end knots, and **constant beyond them** (implied vol held flat in strike past the last quoted
strike, the way Deribit extrapolates its marks). :func:`fit_spline_slice` fits it by nonlinear least
squares to quotes:

* inside the bid/ask: only the distance *outside* ``[bid_iv, ask_iv]`` (shrunk by a small margin) is
  penalised, strongly;
* a pull to the mark (or mid) implied vol, so the smile follows the venue's own marks where they are
  inside the book;
* a small roughness penalty ``int w''(k)^2 dk`` (smoothing-spline term);
* no butterfly arbitrage: a penalty on ``g(k) < g_min`` on a dense grid, where
  ``g(k) = (1 - k w'/(2w))^2 - w'^2/4 (1/w + 1/4) + w''/2`` is Gatheral's density function;
* no calendar arbitrage against the previous expiry's effective smile ``w_prev`` (when given): a penalty
  on ``w(k) < w_prev(k)`` on a grid covering both smiles' knots.

The knots are the quoted log-strikes (merged where closer than a quarter of the median spacing) plus one
extension knot on each side, so that the smile can level off smoothly. The fit's residual arbitrage is
then checked on a finer grid; :func:`dpm.market.surface.VolSurface.from_marks` repairs what is left.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, MarketDataError


def least_squares(*args: Any, **kwargs: Any) -> Any:
    """:func:`scipy.optimize.least_squares`, imported on first use: importing ``scipy.optimize`` takes
    about 0.5 s, which every ``import dpm.engines.margin`` (and the CLI) would otherwise pay without
    ever fitting a smile."""
    from scipy.optimize import least_squares as _least_squares

    return _least_squares(*args, **kwargs)


__all__ = ["SplineSlice", "fit_spline_slice", "spline_density"]

#: Distance outside [bid, ask] costs ``OUTSIDE_WEIGHT`` times as much as the same distance from the mark.
OUTSIDE_WEIGHT = 20.0
#: Density floor targeted by the fit (g is O(1); g = 1 on a flat smile).
_G_TARGET = 2e-3
_VOL_UNIT = 0.01          # residuals are in vol points
#: Weight of the roughness penalty (1 = a vol curvature of 0.2 per unit k^2 costs like 0.01 vol point of error).
DEFAULT_SMOOTHING = 1.0


# --------------------------------------------------------------------------- clamped cubic spline
def _moments(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Second derivatives ``M_i`` at the knots of the clamped (zero end slope) cubic spline through ``v``.

    ``v`` has shape ``(n,)`` or ``(n, m)`` (``m`` right-hand sides). Thomas algorithm in plain numpy so that
    the result is bit-for-bit reproducible (a saved slice reloads to the same numbers).
    """
    n = x.size
    h = np.diff(x)
    d = np.diff(v, axis=0) / (h[:, None] if v.ndim == 2 else h)
    rhs = np.empty_like(v, dtype=np.float64)
    rhs[0] = 6.0 * d[0]
    rhs[1:-1] = 6.0 * (d[1:] - d[:-1])
    rhs[-1] = -6.0 * d[-1]
    diag = np.empty(n)
    diag[0] = 2.0 * h[0]
    diag[1:-1] = 2.0 * (h[:-1] + h[1:])
    diag[-1] = 2.0 * h[-1]
    upper = h              # a[i, i+1] = h_i
    lower = h              # a[i+1, i] = h_i
    c = np.empty(n - 1)
    r = np.array(rhs, dtype=np.float64)
    dd = diag.copy()
    for i in range(1, n):
        c[i - 1] = lower[i - 1] / dd[i - 1]
        dd[i] -= c[i - 1] * upper[i - 1]
        r[i] -= c[i - 1] * r[i - 1]
    M = np.empty_like(r)
    M[-1] = r[-1] / dd[-1]
    for i in range(n - 2, -1, -1):
        M[i] = (r[i] - upper[i] * M[i + 1]) / dd[i]
    return M


def _evaluate(x: np.ndarray, v: np.ndarray, M: np.ndarray, k: np.ndarray, nu: int) -> np.ndarray:
    """Spline value (nu=0), slope (1) or curvature (2) at ``k``; constant beyond the end knots.

    ``v`` and ``M`` may carry a trailing axis of ``m`` right-hand sides (basis evaluation).
    """
    k = np.asarray(k, dtype=np.float64)
    kc = np.clip(k, x[0], x[-1])
    j = np.clip(np.searchsorted(x, kc, side="right") - 1, 0, x.size - 2)
    h = (x[j + 1] - x[j])
    t = kc - x[j]
    u = x[j + 1] - kc
    extra = (slice(None),) + (None,) * (v.ndim - 1)
    h_, t_, u_ = h[extra], t[extra], u[extra]
    v0, v1, M0, M1 = v[j], v[j + 1], M[j], M[j + 1]
    if nu == 0:
        return (M0 * u_ ** 3 + M1 * t_ ** 3) / (6.0 * h_) + (v0 / h_ - M0 * h_ / 6.0) * u_ \
            + (v1 / h_ - M1 * h_ / 6.0) * t_
    outside = ((k < x[0]) | (k > x[-1]))[extra]
    if nu == 1:
        out = (-M0 * u_ ** 2 + M1 * t_ ** 2) / (2.0 * h_) + (v1 - v0) / h_ - (M1 - M0) * h_ / 6.0
    else:
        out = (M0 * u_ + M1 * t_) / h_
    return np.where(outside, 0.0, out)


def _density(k: np.ndarray, w: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g = (1.0 - k * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    return np.where(w > 0, g, -np.inf)


def spline_density(x: Any, v: Any, k: Any) -> np.ndarray:
    """Gatheral's ``g(k)`` of the clamped spline through ``(x, v)`` (``>= 0``: no butterfly arbitrage)."""
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    M = _moments(x, v)
    return _density(k, _evaluate(x, v, M, k, 0), _evaluate(x, v, M, k, 1), _evaluate(x, v, M, k, 2))


def _readonly(a: Any) -> np.ndarray:
    arr = np.array(a, dtype=np.float64, copy=True)
    arr.setflags(write=False)
    return arr


# --------------------------------------------------------------------------- slice
@dataclass(frozen=True, eq=False)
class SplineSlice:
    """One expiry's smile as a clamped cubic spline of total variance (immutable).

    ``w(k)`` is the C2 cubic spline through ``(knots[i], values[i])`` with ``w'(k) = 0`` at the first and
    last knot, and constant beyond them (flat implied vol in strike).

    Attributes
    ----------
    T : float
        Time to expiry in years (ACT/365).
    knots, values : ndarray
        Knot log-moneyness ``x_i`` (strictly increasing, at least 3) and total variance ``w(x_i) > 0``.
    forward, label, n_quotes, iv_rmse, iv_max_error, k_min, k_max
        As for :class:`~dpm.market.surface.SVISlice` (fit diagnostics against the marks the slice was
        fitted to; NaN/0 when built from values).
    n_inside, n_two_sided : int
        Quotes whose fitted vol lies inside their bid/ask, and quotes with both sides (0 when not fitted
        to a book).
    """

    T: float
    knots: np.ndarray
    values: np.ndarray
    forward: float = math.nan
    label: str = ""
    n_quotes: int = 0
    iv_rmse: float = math.nan
    iv_max_error: float = math.nan
    k_min: float = math.nan
    k_max: float = math.nan
    n_inside: int = 0
    n_two_sided: int = 0
    moments: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        x = _readonly(np.ravel(self.knots))
        v = _readonly(np.ravel(self.values))
        name = self.label or f"T={self.T!r}"
        if not (isinstance(self.T, (int, float)) and math.isfinite(self.T) and self.T > 0):
            raise InvalidInputError(f"spline slice {name}: T must be finite and > 0, got {self.T!r}")
        if x.size < 3 or x.size != v.size:
            raise InvalidInputError(
                f"spline slice {name}: need >= 3 knots and one value per knot, got {x.size} and {v.size}")
        if not (np.isfinite(x).all() and np.all(np.diff(x) > 0)):
            raise InvalidInputError(f"spline slice {name}: knots must be finite and strictly increasing")
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"spline slice {name}: total variance must be finite and > 0, knot {i} has {float(v[i])!r}")
        M = _moments(x, v)
        M.setflags(write=False)
        object.__setattr__(self, "T", float(self.T))
        object.__setattr__(self, "knots", x)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "moments", M)
        # the spline must stay positive between knots (a cubic can dip below its knot values)
        kk = np.linspace(x[0], x[-1], 20 * x.size)
        if float(_evaluate(x, v, M, kk, 0).min()) <= 0:
            raise InvalidInputError(f"spline slice {name}: the spline through the values dips to w <= 0")

    def __reduce__(self):
        return (_rebuild_spline, (self.T, np.asarray(self.knots), np.asarray(self.values), self.forward,
                                  self.label, self.n_quotes, self.iv_rmse, self.iv_max_error, self.k_min,
                                  self.k_max, self.n_inside, self.n_two_sided))

    @property
    def wing_slopes(self) -> tuple[float, float]:
        """Asymptotic slopes of ``w``: 0 on both sides (flat wings)."""
        return (0.0, 0.0)

    @property
    def min_total_variance(self) -> float:
        x = self.knots
        kk = np.linspace(x[0], x[-1], 40 * x.size)
        return float(self.total_variance(kk).min())

    def total_variance(self, k: Any) -> np.ndarray:
        """``w(k)``."""
        return _evaluate(self.knots, self.values, self.moments, np.asarray(k, dtype=np.float64), 0)

    def implied_vol(self, k: Any) -> np.ndarray:
        """``sqrt(w(k) / T)``."""
        return np.sqrt(self.total_variance(k) / self.T)

    def derivatives(self, k: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(w, w', w'')`` at ``k`` (``w'' `` is 0 beyond the end knots)."""
        k = np.asarray(k, dtype=np.float64)
        return tuple(_evaluate(self.knots, self.values, self.moments, k, nu) for nu in (0, 1, 2))

    def density(self, k: Any) -> np.ndarray:
        """Gatheral's ``g(k)`` (``>= 0`` means no butterfly arbitrage)."""
        k = np.asarray(k, dtype=np.float64)
        return _density(k, *self.derivatives(k))

    def check_grid(self, n: int = 4001) -> np.ndarray:
        """Dense grid over the knots (density checks): ``n`` uniform points plus points just inside
        each knot interval's ends (the curvature is continuous, so ``g`` is too)."""
        x = self.knots
        uni = np.linspace(x[0], x[-1], n)
        eps = 1e-9 * max(1.0, float(x[-1] - x[0]))
        return np.union1d(uni, np.concatenate([x[:-1] + eps, x[1:] - eps]))


def _rebuild_spline(T, knots, values, forward, label, n_quotes, iv_rmse, iv_max_error, k_min, k_max,
                    n_inside, n_two_sided) -> SplineSlice:
    return SplineSlice(T, knots, values, forward=forward, label=label, n_quotes=n_quotes, iv_rmse=iv_rmse,
                       iv_max_error=iv_max_error, k_min=k_min, k_max=k_max, n_inside=n_inside,
                       n_two_sided=n_two_sided)


# --------------------------------------------------------------------------- fit
def _cluster(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group quotes of one strike (calls and puts quoted against slightly different forwards).

    Returns the cluster centres (increasing) and each quote's cluster index. Quotes closer than a quarter
    of the typical strike spacing (75th percentile of the gaps) belong to one cluster.
    """
    order = np.argsort(k, kind="stable")
    ks = k[order]
    gaps = np.diff(ks)
    thr = 0.25 * float(np.percentile(gaps, 75)) if gaps.size else 0.0
    ids_sorted = np.concatenate([[0], np.cumsum(gaps > thr)]) if ks.size else np.zeros(0, dtype=int)
    ids = np.empty(k.size, dtype=np.intp)
    ids[order] = ids_sorted
    centres = np.array([float(ks[ids_sorted == i].mean()) for i in range(int(ids_sorted[-1]) + 1)])
    return centres, ids


def _knots_for(core: np.ndarray, w_atm: float) -> np.ndarray:
    """Cluster centres plus two knots on each side over which the smile levels off."""
    gaps = np.diff(core)
    med = float(np.median(gaps)) if gaps.size else 0.1
    span = float(core[-1] - core[0]) if core.size > 1 else 0.1
    ext = max(2.0 * med, 0.15 * span, 0.5 * math.sqrt(max(w_atm, 1e-8)))
    left = core[0] - np.array([ext, 0.4 * ext])
    right = core[-1] + np.array([0.4 * ext, ext])
    return np.concatenate([left, core, right])


def _target_band(ids: np.ndarray, iv: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per quote, the band the fit should stay in: the intersection of the two-sided books quoted at that
    strike (a call and a put share one implied vol), shrunk by a small margin. Where the books of one
    strike do not overlap (put-call parity broken against the venue's forward) the book that contains the
    mark -- or else the one nearest to it -- is kept, so that at most one quote of the strike is missed."""
    two = np.isfinite(bid) & np.isfinite(ask)
    spread = np.where(two, ask - bid, np.nan)
    margin = np.where(two, np.minimum(0.1 * spread, 0.002), 0.0)
    lo = np.where(np.isfinite(bid), bid + margin, np.nan)
    hi = np.where(np.isfinite(ask), ask - margin, np.nan)
    lo_out, hi_out = lo.copy(), hi.copy()
    for c in np.unique(ids):
        sel = np.flatnonzero(ids == c)
        if sel.size < 2:
            continue
        L = np.nanmax(lo[sel]) if np.isfinite(lo[sel]).any() else np.nan
        H = np.nanmin(hi[sel]) if np.isfinite(hi[sel]).any() else np.nan
        if not (np.isfinite(L) and np.isfinite(H)) or L <= H:
            lo_out[sel], hi_out[sel] = L, H
            continue
        # disjoint books: keep the one closest to the strike's mark
        mark = float(np.mean(iv[sel]))
        dist = np.where(np.isfinite(lo[sel]) & np.isfinite(hi[sel]),
                        np.maximum(np.maximum(lo[sel] - mark, mark - hi[sel]), 0.0), np.inf)
        j = sel[int(np.argmin(dist))]
        lo_out[sel], hi_out[sel] = lo[j], hi[j]
    return lo_out, hi_out


@dataclass
class _Basis:
    q0: np.ndarray           # (n_quotes, n_knots): w at the quotes
    rough: np.ndarray        # roughness residual rows (linear in v)
    Mb: np.ndarray           # moments of the unit vectors


def _grid_basis(x: np.ndarray, Mb: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    eye = np.eye(x.size)
    return tuple(_evaluate(x, eye, Mb, grid, nu) for nu in (0, 1, 2))


def _single_threaded_blas():
    """Small dense least-squares problems run fastest on one BLAS thread (several threads spin against
    each other on a loaded machine: measured 30x slower); threadpoolctl is used when installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def fit_spline_slice(
    k: Any,
    iv: Any,
    T: float,
    *,
    bid_iv: Any = None,
    ask_iv: Any = None,
    weights: Any = None,
    floor: Any = None,
    floor_span: tuple[float, float] | None = None,
    label: str = "",
    forward: float = math.nan,
    smoothing: float = DEFAULT_SMOOTHING,
) -> SplineSlice:
    """Fit one expiry's :class:`SplineSlice` to quotes (see the module docstring for the objective).

    Parameters
    ----------
    k, iv : array_like
        Log-moneyness ``ln(K/F)`` and mark (or mid) implied vol (decimal, > 0) per quote.
    T : float
        Time to expiry (years, > 0).
    bid_iv, ask_iv : array_like, optional
        Bid / ask implied vols per quote; NaN (or <= 0) where the side has no quote.
    weights : array_like, optional
        Weight of each quote's pull to ``iv`` (default 1; the bid/ask penalty is not weighted).
    floor : callable, optional
        ``floor(k) -> w`` of the previous expiry (calendar constraint ``w >= floor``).
    floor_span : (float, float), optional
        Range of ``k`` over which ``floor`` varies (its knots); the calendar grid covers it.
    label, forward : str, float
        Stored in the slice.
    smoothing : float
        Multiplier of the roughness penalty.

    Raises
    ------
    MarketDataError
        If the optimiser fails (the message names the expiry).
    """
    with _single_threaded_blas():
        return _fit_spline_slice(k, iv, T, bid_iv, ask_iv, weights, floor, floor_span, label, forward, smoothing)


def _fit_spline_slice(k, iv, T, bid_iv, ask_iv, weights, floor, floor_span, label, forward, smoothing):
    kq = np.asarray(k, dtype=np.float64).ravel()
    ivq = np.asarray(iv, dtype=np.float64).ravel()
    n = kq.size
    wts = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    bid = np.full(n, np.nan) if bid_iv is None else np.asarray(bid_iv, dtype=np.float64).ravel()
    ask = np.full(n, np.nan) if ask_iv is None else np.asarray(ask_iv, dtype=np.float64).ravel()
    bid = np.where(bid > 0, bid, np.nan)
    ask = np.where(ask > 0, ask, np.nan)
    core, ids = _cluster(kq)
    lo_t, hi_t = _target_band(ids, ivq, bid, ask)
    wq = ivq * ivq * T
    order = np.argsort(kq)
    w_atm = float(np.interp(0.0, kq[order], wq[order]))
    x = _knots_for(core, w_atm)
    eye = np.eye(x.size)
    Mb = _moments(x, eye)
    q0 = _evaluate(x, eye, Mb, kq, 0)
    h = np.diff(x)
    # int w''^2 dk = sum_i h_i [((M_i + M_{i+1}) / 2)^2 + (M_{i+1} - M_i)^2 / 12]
    rough = np.vstack([np.sqrt(h)[:, None] * 0.5 * (Mb[:-1] + Mb[1:]),
                       np.sqrt(h / 12.0)[:, None] * (Mb[1:] - Mb[:-1])])
    sig_atm = math.sqrt(w_atm / T)
    rough_scale = smoothing * 2e-3 / (2.0 * sig_atm * T)     # w'' / (2 sigma T) ~ vol curvature
    w_scale = max(w_atm, 1e-12)

    lo_c, hi_c = x[0], x[-1]
    if floor is not None and floor_span is not None:
        lo_c, hi_c = min(lo_c, floor_span[0]), max(hi_c, floor_span[1])
    cal_grid = np.linspace(lo_c - 0.05, hi_c + 0.05, 301) if floor is not None else None
    fl_w = np.asarray(floor(cal_grid), dtype=np.float64) if floor is not None else None
    C0 = _evaluate(x, eye, Mb, cal_grid, 0) if floor is not None else None
    grid = np.linspace(x[0], x[-1], 241)

    def residuals(v, G, gp, cp):
        s = np.sqrt(np.maximum(q0 @ v, 1e-300) / T)
        above = np.where(np.isfinite(hi_t), np.maximum(s - hi_t, 0.0), 0.0)
        below = np.where(np.isfinite(lo_t), np.maximum(lo_t - s, 0.0), 0.0)
        g = _density(G[3], np.maximum(G[0] @ v, 1e-300), G[1] @ v, G[2] @ v)
        out = [wts * (s - ivq) / _VOL_UNIT, OUTSIDE_WEIGHT * (above + below) / _VOL_UNIT,
               rough_scale * (rough @ v) / _VOL_UNIT, gp * np.maximum(_G_TARGET - g, 0.0)]
        if C0 is not None:
            out.append(cp * np.maximum(fl_w * (1 + 1e-7) - C0 @ v, 0.0) / w_scale)
        return np.concatenate(out)

    def jacobian(v, G, gp, cp):
        s = np.sqrt(np.maximum(q0 @ v, 1e-300) / T)
        ds = (0.5 / (s * T))[:, None] * q0
        sign = (np.isfinite(hi_t) & (s > hi_t)).astype(float) - (np.isfinite(lo_t) & (s < lo_t)).astype(float)
        kg = G[3]
        w = np.maximum(G[0] @ v, 1e-300)
        w1, w2 = G[1] @ v, G[2] @ v
        with np.errstate(over="ignore", invalid="ignore"):
            u = 1.0 - kg * w1 / (2.0 * w)
            g = u * u - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
            dg_dw = u * kg * w1 / (w * w) + 0.25 * w1 * w1 / (w * w)
            dg_dw1 = -u * kg / w - 0.5 * w1 * (1.0 / w + 0.25)
            jg = dg_dw[:, None] * G[0] + dg_dw1[:, None] * G[1] + 0.5 * G[2]
        act = (g < _G_TARGET).astype(float)
        jg = np.nan_to_num(jg, nan=0.0, posinf=0.0, neginf=0.0)
        rows = [(wts / _VOL_UNIT)[:, None] * ds, (OUTSIDE_WEIGHT / _VOL_UNIT) * sign[:, None] * ds,
                (rough_scale / _VOL_UNIT) * rough, -gp * act[:, None] * jg]
        if C0 is not None:
            act_c = (fl_w * (1 + 1e-7) - C0 @ v > 0).astype(float)
            rows.append(-(cp / w_scale) * act_c[:, None] * C0)
        return np.vstack(rows)

    v = np.interp(x, kq[order], wq[order])
    if fl_w is not None:
        v = np.maximum(v, np.interp(x, cal_grid, fl_w) * 1.001)
    lo = np.full(x.size, 1e-4 * float(wq.min()))
    hi = np.full(x.size, 25.0 * float(wq.max()))
    v = np.clip(v, lo * 1.01, hi * 0.99)
    gp, cp = 300.0, 300.0
    for attempt in range(5):
        G = (*_grid_basis(x, Mb, grid), grid)
        try:
            res = least_squares(residuals, v, jac=jacobian, bounds=(lo, hi), args=(G, gp, cp), method="trf",
                                x_scale="jac", ftol=1e-10, xtol=1e-12, gtol=1e-10, max_nfev=200)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise MarketDataError(f"expiry {label}: smile fit failed on {n} quotes ({exc})") from None
        if not np.all(np.isfinite(res.x)):
            raise MarketDataError(f"expiry {label}: smile fit failed on {n} quotes (non-finite result)")
        v = res.x
        try:
            sl = SplineSlice(T, x, v)
        except InvalidInputError:
            gp *= 10.0
            continue
        fine = sl.check_grid()
        g = sl.density(fine)
        bad_g = fine[g < 0.0]
        bad_c = np.zeros(0)
        if fl_w is not None:
            bad_c = cal_grid[sl.total_variance(cal_grid) < fl_w]
        if bad_g.size == 0 and bad_c.size == 0:
            break
        # add the violating points (and their neighbourhood) to the penalty grid, stiffen the penalties
        if bad_g.size:
            grid = np.union1d(grid, bad_g[:: max(1, bad_g.size // 200)])
            gp *= 10.0
        if bad_c.size:
            cp *= 10.0
    sl = SplineSlice(T, x, v)
    s = np.sqrt(sl.total_variance(kq) / T)
    err = s - ivq
    two = np.isfinite(bid) & np.isfinite(ask)
    inside = two & (s >= bid) & (s <= ask)
    return SplineSlice(T, x, v, forward=forward, label=label, n_quotes=n,
                       iv_rmse=float(np.sqrt(np.mean(err * err))), iv_max_error=float(np.abs(err).max()),
                       k_min=float(kq.min()), k_max=float(kq.max()), n_inside=int(inside.sum()),
                       n_two_sided=int(two.sum()))
