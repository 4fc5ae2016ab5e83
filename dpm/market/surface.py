"""Implied-volatility surfaces: raw SVI smiles per expiry, arbitrage checks and repair.

Each expiry (a *slice*) is a raw SVI smile of total implied variance in log-moneyness
``k = ln(K / F)``::

    w(k) = a + b * (rho * (k - m) + sqrt((k - m)**2 + sigma**2)),     w = sigma_imp**2 * T

(Gatheral 2004). Between slices total variance is interpolated linearly in ``T`` at constant ``k``;
before the first slice and after the last one the implied vol at constant ``k`` is held flat
(``w`` proportional to ``T``).

Static arbitrage is checked on a dense ``k`` grid:

* butterfly: Gatheral's density function
  ``g(k) = (1 - k w'/(2w))**2 - w'**2/4 * (1/w + 1/4) + w''/2 >= 0``;
* calendar: ``w(k, T2) >= w(k, T1)`` for ``T2 > T1``;
* Roger Lee's moment bound on the wing slopes, ``b * (1 + |rho|) <= 2`` (in total variance).

Fits are constrained so that Lee's bound and ``w >= 0`` hold by construction (the optimiser works on
the wing slopes ``b(1 -/+ rho)`` and the smile minimum, each with a box bound). Violations that remain are
repaired (see :func:`VolSurface.from_marks`) and recorded in an :class:`ArbitrageReport`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm._util.validation import as_float_array
from dpm.errors import InvalidInputError, MarketDataError
from dpm.market.spline import SplineSlice, fit_spline_slice


def least_squares(*args: Any, **kwargs: Any) -> Any:
    """:func:`scipy.optimize.least_squares`, imported on first use: importing ``scipy.optimize`` takes
    about 0.5 s, which every ``import dpm.engines.margin`` (and the CLI) would otherwise pay without
    ever fitting a smile."""
    from scipy.optimize import least_squares as _least_squares

    return _least_squares(*args, **kwargs)

__all__ = [
    "LEE_MAX_SLOPE",
    "MIN_QUOTES",
    "ArbitrageIssue",
    "ArbitrageReport",
    "SVISlice",
    "SplineSlice",
    "VolSurface",
    "fit_svi",
    "svi_density",
    "svi_derivatives",
    "svi_total_variance",
]

#: Lee's moment formula: total variance grows at most like 2|k| in the wings.
LEE_MAX_SLOPE = 2.0
#: Fewest distinct strikes a slice needs to be fitted (SVI has 5 parameters).
MIN_QUOTES = 5
#: Tolerances below which a violation counts as none (g is O(1); w is total variance).
BUTTERFLY_TOL = 1e-9
CALENDAR_TOL = 1e-10
_GRID_POINTS = 2401
_SLOPE_EPS = 1e-6          # keeps |rho| < 1 strictly
_SLOPE_MAX = LEE_MAX_SLOPE * (1.0 - 1e-6)


# --------------------------------------------------------------------------- SVI closed forms
def svi_total_variance(k: Any, a: Any, b: Any, rho: Any, m: Any, sigma: Any) -> np.ndarray:
    """Raw SVI total variance ``w(k)``; every argument broadcasts."""
    x = np.asarray(k, dtype=np.float64) - m
    return a + b * (rho * x + np.sqrt(x * x + sigma * sigma))


def svi_derivatives(
    k: Any, a: Any, b: Any, rho: Any, m: Any, sigma: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(w, dw/dk, d2w/dk2)`` of raw SVI in closed form."""
    x = np.asarray(k, dtype=np.float64) - m
    r = np.sqrt(x * x + sigma * sigma)
    w = a + b * (rho * x + r)
    w1 = b * (rho + x / r)
    w2 = b * sigma * sigma / (r * r * r)
    return w, w1, w2


def _svi_inplace(k: np.ndarray, a: Any, b: Any, rho: Any, m: Any, sigma: Any) -> np.ndarray:
    """Raw SVI with few temporaries (large-array evaluation is dominated by allocations)."""
    if np.ndim(k) == 0:
        return np.asarray(svi_total_variance(k, a, b, rho, m, sigma), dtype=np.float64)
    x = np.subtract(k, m)
    r = np.multiply(x, x)
    if np.ndim(sigma):
        s2 = np.multiply(sigma, sigma)
        r += s2
    else:
        r += sigma * sigma
    np.sqrt(r, out=r)
    x *= rho
    r += x
    r *= b
    r += a
    return r


def _check_times(T: np.ndarray) -> None:
    ok = np.isfinite(T) & (T >= 0)
    if not ok.all():
        raise InvalidInputError(f"T: time to expiry must be finite and >= 0, got {float(T[~ok].ravel()[0])!r}")


def _density_from(k: np.ndarray, w: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - k * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    # w <= 0 makes the density undefined: count it as the worst violation.
    return np.where(w > 0, g, -np.inf)


def svi_density(k: Any, a: Any, b: Any, rho: Any, m: Any, sigma: Any) -> np.ndarray:
    """Gatheral's butterfly function ``g(k)``; the risk-neutral density is ``g / sqrt(2 pi w) * exp(-d2^2/2)``.

    ``g >= 0`` everywhere is equivalent to no butterfly arbitrage in the slice.
    """
    k = np.asarray(k, dtype=np.float64)
    w, w1, w2 = svi_derivatives(k, a, b, rho, m, sigma)
    return _density_from(k, w, w1, w2)


# --------------------------------------------------------------------------- slice
@dataclass(frozen=True)
class SVISlice:
    """One expiry's raw SVI smile (immutable).

    Attributes
    ----------
    T : float
        Time to expiry in years (ACT/365).
    a, b, rho, m, sigma : float
        Raw SVI parameters of total variance in ``k = ln(K/F)``.
    forward : float
        Representative forward of the quotes the slice was fitted to (NaN when built from parameters).
    label : str
        Expiry label used in messages and reports (e.g. ``"22MAY20"`` or ``"T=0.0219"``).
    n_quotes : int
        Number of quotes fitted (0 when built from parameters).
    iv_rmse, iv_max_error : float
        Weighted-fit diagnostics: root-mean-square and max absolute error of implied vol (decimal) over the
        quotes, after any repair (NaN when built from parameters).
    k_min, k_max : float
        Range of log-moneyness of the quotes (NaN when built from parameters).
    """

    T: float
    a: float
    b: float
    rho: float
    m: float
    sigma: float
    forward: float = math.nan
    label: str = ""
    n_quotes: int = 0
    iv_rmse: float = math.nan
    iv_max_error: float = math.nan
    k_min: float = math.nan
    k_max: float = math.nan

    @property
    def params(self) -> tuple[float, float, float, float, float]:
        """``(a, b, rho, m, sigma)``."""
        return (self.a, self.b, self.rho, self.m, self.sigma)

    @property
    def wing_slopes(self) -> tuple[float, float]:
        """Asymptotic slopes of ``w`` for ``k -> -inf`` and ``k -> +inf``: ``b(1-rho)``, ``b(1+rho)``."""
        return (self.b * (1.0 - self.rho), self.b * (1.0 + self.rho))

    @property
    def min_total_variance(self) -> float:
        """``min_k w(k) = a + b sigma sqrt(1 - rho^2)``."""
        return self.a + self.b * self.sigma * math.sqrt(max(0.0, 1.0 - self.rho * self.rho))

    def total_variance(self, k: Any) -> np.ndarray:
        """``w(k)`` of this slice."""
        return svi_total_variance(k, *self.params)

    def implied_vol(self, k: Any) -> np.ndarray:
        """``sqrt(w(k) / T)``."""
        return np.sqrt(svi_total_variance(k, *self.params) / self.T)

    def derivatives(self, k: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(w, w', w'')`` at ``k``."""
        return svi_derivatives(k, *self.params)

    def density(self, k: Any) -> np.ndarray:
        """Gatheral's ``g(k)`` (``>= 0`` means no butterfly arbitrage)."""
        return svi_density(k, *self.params)


def _check_params(a: float, b: float, rho: float, m: float, sigma: float, label: str) -> None:
    vals = {"a": a, "b": b, "rho": rho, "m": m, "sigma": sigma}
    for name, v in vals.items():
        if not math.isfinite(v):
            raise InvalidInputError(f"SVI parameter {name} of expiry {label} must be finite, got {v!r}")
    if b < 0:
        raise InvalidInputError(f"SVI parameter b of expiry {label} must be >= 0, got {b!r}")
    if not -1.0 < rho < 1.0:
        raise InvalidInputError(f"SVI parameter rho of expiry {label} must be in (-1, 1), got {rho!r}")
    if sigma <= 0:
        raise InvalidInputError(f"SVI parameter sigma of expiry {label} must be > 0, got {sigma!r}")
    wmin = a + b * sigma * math.sqrt(1.0 - rho * rho)
    if wmin < 0:
        raise InvalidInputError(
            f"SVI parameters of expiry {label} give negative total variance: "
            f"min w = a + b*sigma*sqrt(1-rho^2) = {wmin!r}"
        )


# --------------------------------------------------------------------------- report
@dataclass(frozen=True)
class ArbitrageIssue:
    """One arbitrage finding of a surface build.

    Attributes
    ----------
    kind : str
        ``"butterfly"`` (g < 0 in a slice), ``"calendar"`` (w decreases from the previous slice),
        ``"lee"`` (a wing slope above 2) or ``"interpolation"`` (g < 0 in a slice interpolated halfway
        between two nodes; reported, not repaired).
    label : str
        Expiry label of the slice concerned.
    T : float
        Its time to expiry in years.
    k_range : tuple of float
        ``(k_lo, k_hi)`` range of log-moneyness where the violation was found (before repair).
    max_violation_before, max_violation_after : float
        Size of the violation before and after repair: ``max(-g)`` for butterfly/interpolation,
        ``max(w_prev - w)`` for calendar, ``b(1+|rho|) - 2`` for lee. ``<= 0`` means none.
    action : str
        What was done (``"refit with density penalty"``, ``"wings flattened (b scaled by 0.83)"``,
        ``"refit with calendar penalty"``, ``"lifted to previous slice"``, ``"none"``).
    """

    kind: str
    label: str
    T: float
    k_range: tuple[float, float]
    max_violation_before: float
    max_violation_after: float
    action: str

    @property
    def resolved(self) -> bool:
        tol = CALENDAR_TOL if self.kind == "calendar" else BUTTERFLY_TOL
        return self.max_violation_after <= tol


@dataclass(frozen=True)
class ArbitrageReport:
    """Outcome of the static-arbitrage checks of a :class:`VolSurface`.

    Attributes
    ----------
    issues : tuple of ArbitrageIssue
        Every violation found, in order of detection (empty when the input was arbitrage free).
    k_grid : tuple of float
        ``(k_lo, k_hi, n_points)`` of the widest grid the checks used.
    repair : bool
        Whether repair was requested.
    """

    issues: tuple[ArbitrageIssue, ...] = ()
    k_grid: tuple[float, float, int] = (0.0, 0.0, 0)
    repair: bool = True

    @property
    def arbitrage_free(self) -> bool:
        """True if no butterfly, calendar or Lee violation remains in the slices."""
        return all(i.resolved for i in self.issues if i.kind != "interpolation")

    @property
    def repaired(self) -> tuple[ArbitrageIssue, ...]:
        """Issues that a repair action fixed."""
        return tuple(i for i in self.issues if i.action != "none" and i.resolved)

    def __str__(self) -> str:
        if not self.issues:
            return "ArbitrageReport: no static arbitrage found"
        lines = [f"ArbitrageReport: {len(self.issues)} issue(s), arbitrage_free={self.arbitrage_free}"]
        for i in self.issues:
            lines.append(
                f"  {i.kind:<13} {i.label:<10} T={i.T:.5f} k in [{i.k_range[0]:+.3f}, {i.k_range[1]:+.3f}] "
                f"violation {i.max_violation_before:.3g} -> {i.max_violation_after:.3g}: {i.action}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------- fitting
def _slopes_to_raw(x: np.ndarray) -> tuple[float, float, float, float, float]:
    """Optimiser coordinates ``(vmin, sL, sR, m, sigma)`` to raw SVI ``(a, b, rho, m, sigma)``."""
    v, sl, sr, m, s = (float(t) for t in x)
    b = 0.5 * (sl + sr)
    rho = (sr - sl) / (sr + sl)
    a = v - s * math.sqrt(sl * sr)
    return a, b, rho, m, s


def _raw_to_slopes(a: float, b: float, rho: float, m: float, s: float) -> np.ndarray:
    return np.array([a + b * s * math.sqrt(max(0.0, 1 - rho * rho)), b * (1 - rho), b * (1 + rho), m, s])


def _w_and_jac(x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Total variance and its Jacobian in the optimiser coordinates (closed form)."""
    v, sl, sr, m, s = x
    q = math.sqrt(sl * sr)
    d = k - m
    r = np.sqrt(d * d + s * s)
    w = v - s * q + 0.5 * (sr - sl) * d + 0.5 * (sr + sl) * r
    jac = np.empty((k.size, 5))
    jac[:, 0] = 1.0
    jac[:, 1] = -0.5 * s * sr / q - 0.5 * d + 0.5 * r
    jac[:, 2] = -0.5 * s * sl / q + 0.5 * d + 0.5 * r
    jac[:, 3] = -0.5 * (sr - sl) - 0.5 * (sr + sl) * d / r
    jac[:, 4] = -q + 0.5 * (sr + sl) * s / r
    return w, jac


def _g_and_jac(x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gatheral's ``g(k)`` and its Jacobian in the optimiser coordinates ``(vmin, sL, sR, m, sigma)``."""
    _, sl, sr, m, s = x
    b = 0.5 * (sl + sr)
    d = k - m
    r2 = d * d + s * s
    r = np.sqrt(r2)
    r3 = r2 * r
    r5 = r3 * r2
    w, jw = _w_and_jac(x, k)
    w1 = 0.5 * (sr - sl) + b * d / r
    w2 = b * s * s / r3
    jw1 = np.empty_like(jw)
    jw1[:, 0] = 0.0
    jw1[:, 1] = -0.5 + 0.5 * d / r
    jw1[:, 2] = 0.5 + 0.5 * d / r
    jw1[:, 3] = -b * s * s / r3
    jw1[:, 4] = -b * d * s / r3
    jw2 = np.empty_like(jw)
    jw2[:, 0] = 0.0
    jw2[:, 1] = 0.5 * s * s / r3
    jw2[:, 2] = jw2[:, 1]
    jw2[:, 3] = 3.0 * b * s * s * d / r5
    jw2[:, 4] = b * (2.0 * s / r3 - 3.0 * s ** 3 / r5)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 1.0 - k * w1 / (2.0 * w)
        g = u * u - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
        dg_dw = u * k * w1 / (w * w) + 0.25 * w1 * w1 / (w * w)
        dg_dw1 = -u * k / w - 0.5 * w1 * (1.0 / w + 0.25)
    jac = dg_dw[:, None] * jw + dg_dw1[:, None] * jw1 + 0.5 * jw2
    return g, jac


def _grid_for(T: float, w_atm: float, k_lo: float = math.nan, k_hi: float = math.nan,
              m: float = math.nan, sigma: float = math.nan) -> np.ndarray:
    """Dense check grid: |k| <= max(3, 8 ATM standard deviations, 1.25 x the quotes' range) (at most 8),
    plus a fine patch around the smile's vertex ``m`` (a small ``sigma`` gives a sharp turn there)."""
    half = max(3.0, 8.0 * math.sqrt(max(w_atm, 0.0)))
    if math.isfinite(k_lo):
        half = max(half, 1.25 * abs(k_lo), 1.25 * abs(k_hi))
    half = min(half, 8.0)
    grid = np.linspace(-half, half, _GRID_POINTS)
    if math.isfinite(m) and math.isfinite(sigma):
        patch = m + sigma * np.linspace(-20.0, 20.0, 401)
        grid = _sorted_union(grid, patch[(patch > -half) & (patch < half)])
    return grid


def _sorted_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.union1d`` of finite float arrays (sorted distinct values), without ``np.unique``: that
    imports ``numpy.ma`` to test for masked arrays, 25-35 ms at a command-line run's start."""
    u = np.concatenate((a, b))
    u.sort()
    return u[np.concatenate(([True], u[1:] != u[:-1]))] if u.size else u


def _refine_minima(params: Sequence[float], grid: np.ndarray, g: np.ndarray, n_min: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``g`` between grid points around its lowest local minima (``n_min`` of them), zoomed in twice.

    Without it a repair can tune a slice until the grid points just pass while the density dips below
    zero between two of them (a bisection on ``b`` lands exactly there)."""
    n = g.size
    if n < 3 or not np.isfinite(g).all():
        return np.zeros(0), np.zeros(0)
    inner = np.flatnonzero((g[1:-1] <= g[:-2]) & (g[1:-1] <= g[2:])) + 1
    cand = np.concatenate([inner, [0, n - 1]])
    cand = cand[np.argsort(g[cand])[:n_min]]
    ks, gs = [], []
    for i in cand:
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, n - 1)]
        for _ in range(2):
            kf = np.linspace(lo, hi, 33)
            gf = svi_density(kf, *params)
            ks.append(kf)
            gs.append(gf)
            j = int(np.argmin(gf))
            lo, hi = kf[max(j - 1, 0)], kf[min(j + 1, 32)]
    return np.concatenate(ks), np.concatenate(gs)


def _max_neg_density(params: Sequence[float], grid: np.ndarray) -> tuple[float, float, float]:
    """Largest ``-g`` on the grid (refined around its minima) and the ``k`` range where ``g < 0``."""
    g = svi_density(grid, *params)
    kr, gr = _refine_minima(params, grid, g)
    if kr.size:
        grid, g = np.concatenate([grid, kr]), np.concatenate([g, gr])
    bad = g < -BUTTERFLY_TOL
    if not bad.any():
        return float(max(-g.min(), 0.0) if np.isfinite(g).all() else 0.0), math.nan, math.nan
    kb = grid[bad]
    worst = float(-g.min()) if np.isfinite(g.min()) else math.inf
    return worst, float(kb.min()), float(kb.max())


@dataclass
class _FitData:
    k: np.ndarray
    iv: np.ndarray
    wts: np.ndarray
    T: float
    label: str
    forward: float


def _initial_guesses(fd: _FitData, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """A few starting points from the quotes' level, wing slopes and minimum."""
    k, T = fd.k, fd.T
    w = fd.iv * fd.iv * T
    order = np.argsort(k)
    ks, ws = k[order], w[order]
    span = max(float(ks[-1] - ks[0]), 1e-4)
    n_edge = max(2, ks.size // 4)
    # Wing slopes from the outer quarter of quotes on each side (clipped into the Lee box).
    sl0 = -np.polyfit(ks[:n_edge], ws[:n_edge], 1)[0] if np.ptp(ks[:n_edge]) > 0 else 0.1
    sr0 = np.polyfit(ks[-n_edge:], ws[-n_edge:], 1)[0] if np.ptp(ks[-n_edge:]) > 0 else 0.1
    i_min = int(np.argmin(ws))
    starts = []
    for m0 in (float(ks[i_min]), 0.0):
        for s_frac in (0.1, 0.3, 1.0):
            x = np.array([0.95 * ws[i_min], abs(sl0) + 1e-3, abs(sr0) + 1e-3, m0, s_frac * span])
            starts.append(np.clip(x, lo + 1e-12 * (hi - lo), hi - 1e-12 * (hi - lo)))
    return starts


def _bounds(fd: _FitData) -> tuple[np.ndarray, np.ndarray]:
    w = fd.iv * fd.iv * fd.T
    kmin, kmax = float(fd.k.min()), float(fd.k.max())
    span = max(kmax - kmin, 1e-3)
    lo = np.array([1e-3 * float(w.min()), _SLOPE_EPS, _SLOPE_EPS, kmin - span, 1e-4 * span])
    hi = np.array([2.0 * float(w.max()), _SLOPE_MAX, _SLOPE_MAX, kmax + span, 5.0 * span])
    return lo, hi


def _iv_residual_fn(fd: _FitData):
    def fun(x):
        w, _ = _w_and_jac(x, fd.k)
        return fd.wts * (np.sqrt(np.maximum(w, 1e-300) / fd.T) - fd.iv)

    def jac(x):
        w, j = _w_and_jac(x, fd.k)
        iv = np.sqrt(np.maximum(w, 1e-300) / fd.T)
        return (fd.wts / (2.0 * fd.T * iv))[:, None] * j

    return fun, jac


def _fit_plain(fd: _FitData) -> np.ndarray:
    lo, hi = _bounds(fd)
    fun, jac = _iv_residual_fn(fd)
    best, best_cost = None, math.inf
    for x0 in _initial_guesses(fd, lo, hi):
        try:
            res = least_squares(fun, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=400)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.all(np.isfinite(res.x)) and np.isfinite(res.cost) and res.cost < best_cost:
            best, best_cost = res.x, res.cost
    if best is None:
        raise MarketDataError(f"expiry {fd.label}: SVI fit failed to converge on {fd.k.size} quotes")
    return best


def _fit_penalised(
    fd: _FitData, x0: np.ndarray, grid: np.ndarray, floor_w: np.ndarray | None, lam: float
) -> np.ndarray:
    """Refit with residuals penalising ``g < 0`` (and ``w < floor_w`` when given) on ``grid``."""
    lo, hi = _bounds(fd)
    # Penalties are scaled to IV units so that lam trades vol error against violation.
    iv_scale = float(np.sqrt(np.mean(fd.iv * fd.iv)))
    w_scale = float(np.mean(fd.iv * fd.iv)) * fd.T
    sub = grid[::4]

    fun0, jac0 = _iv_residual_fn(fd)
    scale = lam * iv_scale

    def parts(x):
        g, jg = _g_and_jac(x, sub)
        bad = ~np.isfinite(g) | ~np.isfinite(jg).all(axis=1)
        g = np.where(bad, -1e3, g)
        jg[bad] = 0.0
        act = g < 1e-6
        out = [scale * np.where(act, 1e-6 - g, 0.0)]
        jac = [-scale * jg * act[:, None]]
        if floor_w is not None:
            w, jw = _w_and_jac(x, grid)
            gap = floor_w - w + 1e-9 * w_scale
            act = gap > 0
            out.append(scale * np.where(act, gap, 0.0) / w_scale)
            jac.append(-(scale / w_scale) * jw * act[:, None])
        return out, jac

    def fun(x):
        return np.concatenate([fun0(x)] + parts(x)[0])

    def jac(x):
        return np.vstack([jac0(x)] + parts(x)[1])

    x0 = np.clip(x0, lo, hi)
    res = least_squares(fun, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=150,
                        ftol=1e-12, xtol=1e-12)
    return res.x if np.all(np.isfinite(res.x)) else x0


def _flatten_wings(params: tuple, grid: np.ndarray) -> tuple[tuple, float]:
    """Scale ``b`` by the largest ``t`` in [0, 1] keeping ``g >= 0`` (``t = 0`` is flat: ``g = 1``).

    Keeps the smile minimum ``a + b sigma sqrt(1-rho^2)`` fixed, so ``w`` stays positive.
    """
    a, b, rho, m, s = params
    vmin = a + b * s * math.sqrt(1 - rho * rho)

    def scaled(t):
        bt = b * t
        return (vmin - bt * s * math.sqrt(1 - rho * rho), bt, rho, m, s)

    lo_t, hi_t = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo_t + hi_t)
        if _max_neg_density(scaled(mid), grid)[0] <= BUTTERFLY_TOL:
            lo_t = mid
        else:
            hi_t = mid
    return scaled(lo_t), lo_t


def _fit_diagnostics(fd: _FitData, params: tuple, floor: _Floor | None = None) -> tuple[float, float]:
    w = svi_total_variance(fd.k, *params)
    if floor is not None:
        w = np.maximum(w, floor(fd.k))
    err = np.sqrt(w / fd.T) - fd.iv
    return float(np.sqrt(np.mean(err * err))), float(np.max(np.abs(err)))


def fit_svi(
    k: Any, iv: Any, T: float, weights: Any = None, *, label: str | None = None, forward: float = math.nan
) -> SVISlice:
    """Fit one raw SVI slice to implied vols by bounded weighted least squares (no repair).

    Minimises ``sum_j (weights_j * (sigma_svi(k_j) - iv_j))**2`` over the wing slopes ``b(1-rho)``,
    ``b(1+rho)`` in ``(0, 2)`` (Lee's bound), the smile minimum ``>= 1e-3 * min(w_quotes) > 0``, ``m`` and
    ``sigma``, with a closed-form Jacobian, from several starting points.

    Parameters
    ----------
    k, iv : array_like
        Log-moneyness ``ln(K/F)`` and implied vols (decimal) of the quotes.
    T : float
        Time to expiry (years, > 0).
    weights : array_like, optional
        Residual weights (default 1).
    label : str, optional
        Expiry label for messages.
    forward : float
        Stored in the slice for reference.
    """
    label = label if label is not None else f"T={T:.6g}"
    fd = _prepare_slice(np.asarray(k, float), np.asarray(iv, float), float(T),
                        None if weights is None else np.asarray(weights, float), label, forward,
                        n_strikes=np.unique(np.asarray(k, float)).size)
    params = _slopes_to_raw(_fit_plain(fd))
    rmse, mx = _fit_diagnostics(fd, params)
    return SVISlice(fd.T, *params, forward=forward, label=label, n_quotes=fd.k.size,
                    iv_rmse=rmse, iv_max_error=mx, k_min=float(fd.k.min()), k_max=float(fd.k.max()))


def _prepare_slice(k, iv, T, wts, label, forward, n_strikes) -> _FitData:
    if not (math.isfinite(T) and T > 0):
        raise MarketDataError(f"expiry {label}: time to expiry must be > 0, got {T!r}")
    if n_strikes < MIN_QUOTES:
        raise MarketDataError(
            f"expiry {label}: {n_strikes} usable quote(s) (distinct strikes), at least {MIN_QUOTES} needed "
            "to fit an SVI smile"
        )
    bad = ~np.isfinite(iv) | (iv <= 0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise MarketDataError(f"expiry {label}: implied vol must be finite and > 0, quote {j} has {float(iv[j])!r}")
    if wts is None:
        wts = np.ones_like(iv)
    badw = ~np.isfinite(wts) | (wts < 0)
    if badw.any():
        j = int(np.flatnonzero(badw)[0])
        raise InvalidInputError(f"weights: must be finite and >= 0, quote {j} of expiry {label} has {float(wts[j])!r}")
    if np.count_nonzero(wts) < MIN_QUOTES:
        raise MarketDataError(f"expiry {label}: fewer than {MIN_QUOTES} quotes have a positive weight")
    # Normalise so that penalties have a comparable scale across slices.
    wts = wts / float(np.sqrt(np.mean(wts * wts)))
    return _FitData(k=k, iv=iv, wts=wts, T=T, label=label, forward=forward)


class _Floor:
    """Effective total variance of an already-processed slice (SVI, possibly lifted onto its predecessor)."""

    def __init__(self, params: tuple, below: _Floor | None):
        self.params = params
        self.below = below

    def __call__(self, k: np.ndarray) -> np.ndarray:
        w = svi_total_variance(k, *self.params)
        return w if self.below is None else np.maximum(w, self.below(k))

    def derivatives(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, w1, w2 = svi_derivatives(k, *self.params)
        if self.below is not None:
            bw, bw1, bw2 = self.below.derivatives(k)
            use = bw > w
            w, w1, w2 = np.where(use, bw, w), np.where(use, bw1, w1), np.where(use, bw2, w2)
        return w, w1, w2


# --------------------------------------------------------------------------- surface
def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


class VolSurface:
    """Immutable implied-volatility surface built from SVI slices.

    Use :meth:`from_marks` (fit to quotes) or :meth:`from_svi_params`. Evaluation is vectorised numpy:
    ``total_variance(k, T)`` and ``implied_vol(strike, T, forward)`` broadcast their arguments.

    Attributes
    ----------
    slices : tuple of SVISlice
        The per-expiry smiles, by increasing ``T`` (after any repair).
    lifted : tuple of bool
        ``lifted[i]`` is True when slice ``i`` was lifted onto slice ``i-1`` to remove calendar arbitrage:
        its effective total variance is ``max(w_i(k), w_{i-1}(k))`` (still butterfly free: the call prices of
        the max are the max of two convex functions of strike).
    report : ArbitrageReport
        What the checks found and what was repaired.
    """

    __slots__ = ("_P", "_T", "_all_svi", "_any_lifted", "_lifted", "_lifted_arr", "_report", "_seg", "_slices")

    def __init__(self, slices: Sequence[SVISlice], report: ArbitrageReport | None = None,
                 lifted: Sequence[bool] | None = None):
        slices = tuple(sorted(slices, key=lambda s: s.T))
        if not slices:
            raise MarketDataError("a VolSurface needs at least one slice")
        for s in slices:
            if isinstance(s, SVISlice):
                _check_params(*s.params, s.label or f"T={s.T:.6g}")
            elif not isinstance(s, SplineSlice):
                raise InvalidInputError(f"slices: expected SVISlice or SplineSlice objects, got {type(s).__name__}")
        Ts = np.array([s.T for s in slices])
        if not (np.all(np.isfinite(Ts)) and np.all(Ts > 0)):
            raise InvalidInputError(f"slices: times to expiry must be finite and > 0, got {Ts.tolist()}")
        if np.any(np.diff(Ts) <= 0):
            j = int(np.flatnonzero(np.diff(Ts) <= 0)[0])
            raise InvalidInputError(f"slices: two slices share the time to expiry T={float(Ts[j])!r}")
        lifted = tuple(bool(x) for x in (lifted if lifted is not None else [False] * len(slices)))
        if len(lifted) != len(slices) or lifted[0]:
            raise InvalidInputError("lifted: one flag per slice, and the first slice cannot be lifted")
        object.__setattr__(self, "_slices", slices)
        object.__setattr__(self, "_lifted", lifted)
        object.__setattr__(self, "_lifted_arr", np.array(lifted, dtype=bool))
        object.__setattr__(self, "_any_lifted", any(lifted))
        object.__setattr__(self, "_report", report if report is not None else ArbitrageReport())
        object.__setattr__(self, "_T", _readonly(Ts))
        all_svi = all(isinstance(s, SVISlice) for s in slices)
        object.__setattr__(self, "_all_svi", all_svi)
        # SVI parameters as 5 contiguous read-only rows (a, b, rho, m, sigma) for vectorised gathers.
        object.__setattr__(self, "_P", _readonly(np.array([s.params for s in slices]).T.copy()) if all_svi else None)
        object.__setattr__(self, "_seg", tuple(_readonly(a) if a.dtype.kind == "f" else a
                                               for a in self._build_segment_tables()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("VolSurface is immutable; build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("VolSurface is immutable")

    def __reduce__(self):
        # rebuild through __init__ so that pickled copies are validated and read-only again
        return (VolSurface, (self._slices, self._report, self._lifted))

    def __repr__(self) -> str:
        labels = ", ".join(s.label for s in self._slices)
        return f"VolSurface({len(self._slices)} slices: {labels}; arbitrage_free={self._report.arbitrage_free})"

    # ---- properties
    @property
    def slices(self) -> tuple[SVISlice, ...]:
        return self._slices

    @property
    def lifted(self) -> tuple[bool, ...]:
        return self._lifted

    @property
    def report(self) -> ArbitrageReport:
        return self._report

    @property
    def times(self) -> np.ndarray:
        """Read-only array of the slices' times to expiry."""
        return self._T

    # ---- evaluation
    def _slice_w(self, i: Any, k: np.ndarray) -> np.ndarray:
        """Effective total variance of slice(s) ``i`` (scalar or array aligned with ``k``)."""
        if not self._all_svi:
            return self._slice_w_generic(i, k)
        P = self._P
        if np.ndim(i) == 0:
            i = int(i)
            w = _svi_inplace(k, P[0, i], P[1, i], P[2, i], P[3, i], P[4, i])
            while self._lifted[i]:
                i -= 1
                np.maximum(w, _svi_inplace(k, P[0, i], P[1, i], P[2, i], P[3, i], P[4, i]), out=w)
            return w
        w = _svi_inplace(k, *(P[r].take(i) for r in range(5)))
        if self._any_lifted:
            cur = i.copy()
            mask = self._lifted_arr[cur]
            while mask.any():
                cur = np.where(mask, cur - 1, cur)
                wj = svi_total_variance(k[mask], *(P[r, cur[mask]] for r in range(5)))
                w[mask] = np.maximum(w[mask], wj)
                mask = mask & self._lifted_arr[cur]
        return w

    def _slice_w_generic(self, i: Any, k: np.ndarray) -> np.ndarray:
        if np.ndim(i) == 0:
            i = int(i)
            w = np.array(self._slices[i].total_variance(k), dtype=np.float64)
            while self._lifted[i]:
                i -= 1
                np.maximum(w, self._slices[i].total_variance(k), out=w)
            return w
        w = np.empty(k.shape)
        for j in np.unique(i):
            sel = i == j
            w[sel] = self._slice_w_generic(int(j), k[sel])
        return w

    def total_variance(self, k: Any, T: Any) -> np.ndarray:
        """Total implied variance ``w(k, T) = sigma_imp^2 T`` (broadcasts ``k`` and ``T``).

        Linear in ``T`` at constant ``k`` between slices; ``w = w_first(k) * T / T_first`` before the first
        slice and ``w = w_last(k) * T / T_last`` after the last one (implied vol held flat).
        """
        k = as_float_array(k, "k")
        T = as_float_array(T, "T")
        if not np.isfinite(k).all():
            raise InvalidInputError(f"k: must be finite, got {float(k[~np.isfinite(k)].ravel()[0])!r}")
        _check_times(T)
        return self._total_variance(k, T)

    def _segments(self, T: np.ndarray) -> np.ndarray:
        """Segment index of each time: 0 before the first slice, n at/after the last, j in between."""
        Ts = self._T
        if Ts.size > 16:
            return np.searchsorted(Ts, T, side="right")
        # A few vector comparisons beat a branchy binary search over unsorted times.
        j = np.zeros(T.shape, dtype=np.intp)
        for t in Ts:
            j += T >= t
        return j

    def _total_variance(self, k: np.ndarray, T: np.ndarray) -> np.ndarray:
        Ts = self._T
        n = Ts.size
        if T.ndim == 0:
            t = float(T)
            j = int(np.searchsorted(Ts, t, side="right"))
            if j == 0:
                w = self._slice_w(0, k)
                w *= t / Ts[0]
                return w
            if j == n:
                w = self._slice_w(n - 1, k)
                w *= t / Ts[n - 1]
                return w
            th = (t - Ts[j - 1]) / (Ts[j] - Ts[j - 1])
            w0 = self._slice_w(j - 1, k)
            w1 = self._slice_w(j, k)
            w0 *= 1.0 - th
            w1 *= th
            w0 += w1
            return w0
        if k.shape != T.shape:
            k, T = np.broadcast_arrays(k, T)
        shape = k.shape
        k = k.ravel()
        T = T.ravel()
        j = self._segments(T)
        # w = (A + B T) w_lo(k) + (C + D T) w_hi(k) with per-segment coefficients (see _segment_tables):
        # before the first slice and after the last, w_hi is multiplied by 0 and w_lo scaled by T / T_node.
        lo_i, hi_i, A, B, C, D = self._seg
        lo = lo_i.take(j)
        hi = hi_i.take(j)
        w_lo = self._slice_w(lo, k)
        alpha = B.take(j)
        alpha *= T
        alpha += A.take(j)
        w_lo *= alpha
        if n > 1:
            w_hi = self._slice_w(hi, k)
            beta = D.take(j)
            beta *= T
            beta += C.take(j)
            w_hi *= beta
            w_lo += w_hi
        return w_lo.reshape(shape)

    def _build_segment_tables(self) -> tuple[np.ndarray, ...]:
        Ts = self._T
        n = Ts.size
        lo = np.concatenate([[0], np.arange(n)]).astype(np.intp)
        hi = np.concatenate([np.arange(n), [n - 1]]).astype(np.intp)
        lo.setflags(write=False)
        hi.setflags(write=False)
        A = np.zeros(n + 1)
        B = np.zeros(n + 1)
        C = np.zeros(n + 1)
        D = np.zeros(n + 1)
        B[0] = 1.0 / Ts[0]
        B[n] = 1.0 / Ts[n - 1]
        if n > 1:
            dT = np.diff(Ts)
            A[1:n] = Ts[1:] / dT
            B[1:n] = -1.0 / dT
            C[1:n] = -Ts[:-1] / dT
            D[1:n] = 1.0 / dT
        return lo, hi, A, B, C, D

    def implied_vol(self, strike: Any, T: Any, forward: Any) -> np.ndarray:
        """Implied vol (decimal) at ``strike``, time ``T`` (years) and the forward of that time.

        ``T = 0`` returns the limit ``sqrt(w_first(k) / T_first)``. Arguments broadcast.
        """
        K = as_float_array(strike, "strike")
        F = as_float_array(forward, "forward")
        T = as_float_array(T, "T")
        for arr, name in ((K, "strike"), (F, "forward")):
            bad = ~(np.isfinite(arr) & (arr > 0))
            if bad.any():
                raise InvalidInputError(f"{name}: must be finite and > 0, got {float(arr[bad].ravel()[0])!r}")
        _check_times(T)
        k = np.divide(K, F)
        if k.ndim:
            np.log(k, out=k)
        else:
            k = np.log(k)
        if T.ndim == 0:
            t = float(T)
            if t == 0.0:
                w = self._slice_w(0, k)
                w /= self._T[0]
            else:
                w = self._total_variance(k, T)
                w /= t
            np.sqrt(w, out=w)
            return w
        # T = 0 takes the limit of sqrt(w / T), the first slice's vol.
        Tb = np.where(T > 0, T, self._T[0]) if not (T > 0).all() else T
        w = self._total_variance(k, Tb)
        w /= Tb
        np.sqrt(w, out=w)
        return w

    # ---- construction
    @classmethod
    def from_svi_params(
        cls,
        params: Any,
        expiries_T: Any,
        *,
        forwards: Any = None,
        labels: Sequence[str] | None = None,
        repair: bool = True,
    ) -> VolSurface:
        """Surface from raw SVI parameters ``(a, b, rho, m, sigma)`` per expiry.

        Parameters
        ----------
        params : array_like, shape (n, 5), or sequence of dicts with keys a, b, rho, m, sigma
        expiries_T : array_like, shape (n,)
            Times to expiry (years, > 0, distinct).
        forwards : array_like, optional
            Forward per expiry (kept for reference only).
        labels : sequence of str, optional
            Expiry labels for messages.
        repair : bool
            Repair arbitrage (Lee slopes, butterfly, calendar) by refitting each slice to its own smile
            sampled on a grid; when False, violations are only reported.
        """
        if len(params) and isinstance(params[0], dict):
            try:
                params = [[p["a"], p["b"], p["rho"], p["m"], p["sigma"]] for p in params]
            except KeyError as exc:
                raise InvalidInputError(f"params: SVI parameter dict lacks key {exc}") from None
        P = as_float_array(params, "params")
        if P.ndim != 2 or P.shape[1] != 5:
            raise InvalidInputError(f"params: expected shape (n, 5) of (a, b, rho, m, sigma), got {P.shape}")
        Ts = as_float_array(expiries_T, "expiries_T").ravel()
        if Ts.size != P.shape[0]:
            raise InvalidInputError(f"expiries_T has {Ts.size} values but params has {P.shape[0]} rows")
        Fs = (np.full(Ts.size, math.nan) if forwards is None
              else as_float_array(forwards, "forwards").ravel())
        if Fs.size != Ts.size:
            raise InvalidInputError(f"forwards has {Fs.size} values but expiries_T has {Ts.size}")
        labels = [f"T={t:.6g}" for t in Ts] if labels is None else [str(x) for x in labels]
        if len(labels) != Ts.size:
            raise InvalidInputError(f"labels has {len(labels)} values but expiries_T has {Ts.size}")
        slices = []
        for i in range(Ts.size):
            if not (math.isfinite(Ts[i]) and Ts[i] > 0):
                raise InvalidInputError(f"expiries_T: must be finite and > 0, expiry {labels[i]} has {float(Ts[i])!r}")
            p = tuple(float(v) for v in P[i])
            _check_params(*p, labels[i])
            slices.append(SVISlice(float(Ts[i]), *p, forward=float(Fs[i]), label=labels[i]))
        slices.sort(key=lambda s: s.T)
        # Pseudo-quotes: each slice's own smile on its central region, so that a repair refit stays close.
        fits = []
        for s in slices:
            w0 = float(s.total_variance(0.0))
            half = max(0.1, 3.0 * math.sqrt(w0))
            kq = np.linspace(-half, half, 41)
            iv = s.implied_vol(kq)
            fits.append(_FitData(k=kq, iv=iv, wts=np.ones_like(kq), T=s.T, label=s.label, forward=s.forward))
        return _build(slices, fits, repair)

    @classmethod
    def from_marks(
        cls,
        strikes: Any,
        expiries_T: Any,
        forwards: Any,
        ivs: Any,
        weights: Any = None,
        *,
        bid_ivs: Any = None,
        ask_ivs: Any = None,
        labels: Sequence[str] | None = None,
        repair: bool = True,
        method: str = "svi",
    ) -> VolSurface:
        """Fit one smile per distinct expiry to implied-vol marks, then check and repair arbitrage.

        ``method="svi"`` (default) fits a raw SVI slice per expiry (see below). ``method="spline"`` fits the
        venue-following smile of :mod:`dpm.market.spline`: a clamped cubic spline of total variance that
        stays inside ``[bid_ivs, ask_ivs]`` where there is a two-sided book, is pulled to ``ivs`` (the marks)
        elsewhere, is flat in implied vol beyond the quoted strikes, and is fitted expiry by expiry (in
        order of ``T``) under density (butterfly) and calendar constraints; the ``weights`` then weight the
        pull to the marks. Any violation left after the constrained fit is repaired (a slice whose density
        stays negative is replaced by the repaired SVI fit of its quotes; a slice below its predecessor is
        lifted onto it) and reported.

        Parameters
        ----------
        strikes, expiries_T, forwards, ivs : array_like, shape (n,)
            One row per quote: strike, time to expiry (years; quotes with equal ``T`` form a slice),
            the forward of that expiry, implied vol (decimal).
        weights : array_like, optional
            Residual weights ``>= 0`` per quote. Default: with ``bid_ivs``/``ask_ivs`` given,
            ``1 / (ask - bid)`` (quotes lacking a side get the smallest weight of the slice); otherwise the
            Black vega of the quote relative to the slice's largest, floored at 0.2, so the fit tracks
            prices near the money while still seeing the wings.
        bid_ivs, ask_ivs : array_like, optional
            Bid / ask implied vols; ``0`` or NaN means no quote on that side. A bid above its ask raises.
        labels : sequence of str, optional
            Expiry label per quote (e.g. ``"22MAY20"``) used in errors and the report.
        repair : bool
            Repair arbitrage: a slice with ``g < 0`` is refitted with a density penalty (then, if needed, its
            wings are flattened); a slice below its predecessor is refitted with a calendar penalty and, if
            still below, lifted onto it (see :attr:`lifted`).

        Raises
        ------
        MarketDataError
            NaN / non-positive IVs, crossed bid/ask, a slice with fewer than 5 distinct strikes or one that
            cannot be fitted; the message names the expiry.
        """
        K = as_float_array(strikes, "strikes").ravel()
        Tq = as_float_array(expiries_T, "expiries_T").ravel()
        F = as_float_array(forwards, "forwards").ravel()
        iv = as_float_array(ivs, "ivs").ravel()
        n = iv.size
        for arr, name in ((K, "strikes"), (Tq, "expiries_T"), (F, "forwards")):
            if arr.size != n:
                raise InvalidInputError(f"{name} has {arr.size} values but ivs has {n}")
        if n == 0:
            raise MarketDataError("from_marks: no quotes")
        lab = None if labels is None else np.asarray([str(x) for x in labels], dtype=object)
        if lab is not None and lab.size != n:
            raise InvalidInputError(f"labels has {lab.size} values but ivs has {n}")

        def where(j: int) -> str:
            return f"expiry {lab[j] if lab is not None else f'T={Tq[j]:.6g}'}, strike {K[j]:g}"

        for arr, name in ((Tq, "expiries_T"), (K, "strikes"), (F, "forwards")):
            bad = ~(np.isfinite(arr) & (arr > 0))
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise MarketDataError(f"{name}: must be finite and > 0, quote {j} ({where(j)}) has {float(arr[j])!r}")
        bad = ~(np.isfinite(iv) & (iv > 0))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise MarketDataError(f"ivs: implied vol must be finite and > 0, quote {j} ({where(j)}) has {float(iv[j])!r}")
        W = None if weights is None else as_float_array(weights, "weights").ravel()
        if W is not None and W.size != n:
            raise InvalidInputError(f"weights has {W.size} values but ivs has {n}")
        spread = None
        if (bid_ivs is None) != (ask_ivs is None):
            raise InvalidInputError("give both bid_ivs and ask_ivs, or neither")
        if bid_ivs is not None:
            bid = as_float_array(bid_ivs, "bid_ivs").ravel()
            ask = as_float_array(ask_ivs, "ask_ivs").ravel()
            if bid.size != n or ask.size != n:
                raise InvalidInputError(f"bid_ivs/ask_ivs have {bid.size}/{ask.size} values but ivs has {n}")
            for arr, name in ((bid, "bid_ivs"), (ask, "ask_ivs")):
                neg = np.isfinite(arr) & (arr < 0) | np.isinf(arr)
                if neg.any():
                    j = int(np.flatnonzero(neg)[0])
                    raise MarketDataError(f"{name}: must be >= 0 (0/NaN = no quote), quote {j} ({where(j)}) has {float(arr[j])!r}")
            both = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)
            crossed = both & (bid > ask)
            if crossed.any():
                j = int(np.flatnonzero(crossed)[0])
                raise MarketDataError(f"crossed market: quote {j} ({where(j)}) has bid iv {float(bid[j])!r} > ask iv {float(ask[j])!r}")
            spread = np.where(both, ask - bid, np.nan)

        if method not in ("svi", "spline"):
            raise InvalidInputError(f"method: expected 'svi' or 'spline', got {method!r}")
        if method == "spline":
            bid_a = bid if bid_ivs is not None else None
            ask_a = ask if ask_ivs is not None else None
            return _build_spline(K, Tq, F, iv, W, bid_a, ask_a, lab, repair)
        Tu, inv = np.unique(Tq, return_inverse=True)
        slices, fits = [], []
        for i, t in enumerate(Tu):
            sel = np.flatnonzero(inv == i)
            label = str(lab[sel[0]]) if lab is not None else f"T={t:.6g}"
            k = np.log(K[sel] / F[sel])
            if W is not None:
                w_sel = W[sel]
            elif spread is not None:
                sp = spread[sel]
                have = np.isfinite(sp)
                w_sel = np.empty(sel.size)
                w_sel[have] = 1.0 / np.maximum(sp[have], 1e-3)
                w_sel[~have] = w_sel[have].min() if have.any() else 1.0
            else:
                sq = iv[sel] * math.sqrt(t)
                d1 = -k / sq + 0.5 * sq
                vega = np.exp(-0.5 * d1 * d1)     # Black vega / (F sqrt(T) / sqrt(2 pi)): relative is enough
                w_sel = np.maximum(vega / vega.max(), 0.2)
            fd = _prepare_slice(k, iv[sel], float(t), w_sel, label, float(np.median(F[sel])),
                                n_strikes=np.unique(K[sel]).size)
            params = _slopes_to_raw(_fit_plain(fd))
            slices.append(SVISlice(fd.T, *params, forward=fd.forward, label=label, n_quotes=sel.size,
                                   k_min=float(k.min()), k_max=float(k.max())))
            fits.append(fd)
        return _build(slices, fits, repair)


def _with_params(s: SVISlice, params: tuple) -> SVISlice:
    return SVISlice(s.T, *(float(p) for p in params), forward=s.forward, label=s.label, n_quotes=s.n_quotes,
                    iv_rmse=s.iv_rmse, iv_max_error=s.iv_max_error, k_min=s.k_min, k_max=s.k_max)


def _build(slices: list[SVISlice], fits: list[_FitData], repair: bool) -> VolSurface:
    """Check every slice for Lee / butterfly / calendar arbitrage, repair, and assemble the surface."""
    issues: list[ArbitrageIssue] = []
    grids = [_grid_for(s.T, float(s.total_variance(0.0)), s.k_min, s.k_max, s.m, s.sigma) for s in slices]
    params = [s.params for s in slices]

    # 1) per-slice: Lee wing slopes and butterfly.
    for i, s in enumerate(slices):
        p, grid, fd = params[i], grids[i], fits[i]
        lee = s.b * (1 + abs(s.rho)) - LEE_MAX_SLOPE
        bf, klo, khi = _max_neg_density(p, grid)
        if lee <= 0 and bf <= BUTTERFLY_TOL:
            continue
        before_lee, before_bf = lee, bf
        action = "none"
        if repair:
            x0 = _raw_to_slopes(*p)
            lo, hi = _bounds(fd)
            x0 = np.clip(x0, lo, hi)        # brings the wing slopes inside Lee's box
            x = _fit_penalised(fd, x0, grid, None, lam=1e3)
            p = _slopes_to_raw(x)
            action = "refit with density penalty"
            if _max_neg_density(p, grid)[0] > BUTTERFLY_TOL:
                p, t = _flatten_wings(p, grid)
                action += f", then wings flattened (b scaled by {t:.6f})"
        after_bf = _max_neg_density(p, grid)[0]
        after_lee = p[1] * (1 + abs(p[2])) - LEE_MAX_SLOPE
        if before_lee > 0:
            issues.append(ArbitrageIssue("lee", s.label, s.T, (float(grid[0]), float(grid[-1])),
                                         float(before_lee), float(after_lee), action))
        if before_bf > BUTTERFLY_TOL:
            issues.append(ArbitrageIssue("butterfly", s.label, s.T, (klo, khi),
                                         float(before_bf), float(after_bf), action))
        params[i] = p

    # 2) calendar, in order of T, against the effective (possibly lifted) previous slice.
    lifted = [False] * len(slices)
    floor: _Floor | None = None
    for i, s in enumerate(slices):
        if floor is not None:
            grid = grids[i] if grids[i][-1] >= grids[i - 1][-1] else grids[i - 1]
            prev_w = floor(grid)
            viol = prev_w - svi_total_variance(grid, *params[i])
            before = float(viol.max())
            if before > CALENDAR_TOL:
                kb = grid[viol > CALENDAR_TOL]
                action = "none"
                after = before
                if repair:
                    x = _fit_penalised(fits[i], _raw_to_slopes(*params[i]), grid, prev_w, lam=1e3)
                    p_new = _slopes_to_raw(x)
                    new_bf = _max_neg_density(p_new, grids[i])[0]
                    new_viol = float((prev_w - svi_total_variance(grid, *p_new)).max())
                    if new_bf <= BUTTERFLY_TOL and new_viol < before:
                        params[i] = p_new
                        action = "refit with calendar penalty"
                        after = new_viol
                    if after > CALENDAR_TOL:
                        lifted[i] = True
                        action = (action + ", then " if action != "none" else "") + "lifted to previous slice"
                        after = 0.0
                issues.append(ArbitrageIssue("calendar", s.label, s.T, (float(kb.min()), float(kb.max())),
                                             before, float(after), action))
        floor = _Floor(params[i], floor if lifted[i] else None)

    # 3) fit diagnostics on the final (effective) slices.
    out: list[SVISlice] = []
    floor = None
    for i, s in enumerate(slices):
        cur = _Floor(params[i], floor if lifted[i] else None)
        rmse, mx = (math.nan, math.nan) if s.n_quotes == 0 else _fit_diagnostics(
            fits[i], params[i], floor if lifted[i] else None)
        out.append(SVISlice(s.T, *(float(v) for v in params[i]), forward=s.forward, label=s.label,
                            n_quotes=s.n_quotes, iv_rmse=rmse, iv_max_error=mx, k_min=s.k_min, k_max=s.k_max))
        floor = cur

    # 4) butterfly of interpolated slices halfway between nodes (reported only).
    floors: list[_Floor] = []
    floor = None
    for i in range(len(out)):
        floor = _Floor(out[i].params, floor if lifted[i] else None)
        floors.append(floor)
    for i in range(1, len(out)):
        grid = grids[i]
        a0, a1, a2 = floors[i - 1].derivatives(grid)
        b0, b1, b2 = floors[i].derivatives(grid)
        g = _density_from(grid, 0.5 * (a0 + b0), 0.5 * (a1 + b1), 0.5 * (a2 + b2))
        if g.min() < -BUTTERFLY_TOL:
            kb = grid[g < -BUTTERFLY_TOL]
            v = float(-g.min())
            issues.append(ArbitrageIssue("interpolation", f"{out[i-1].label}|{out[i].label}",
                                         0.5 * (out[i - 1].T + out[i].T), (float(kb.min()), float(kb.max())),
                                         v, v, "none"))
    widest = max(grids, key=lambda g: g[-1])
    report = ArbitrageReport(tuple(issues), (float(widest[0]), float(widest[-1]), int(widest.size)), repair)
    return VolSurface(out, report, lifted)


# --------------------------------------------------------------------------- venue-following (spline) build
class _Effective:
    """Effective total variance of a processed slice: its own smile, or the max with its predecessor's
    effective smile when lifted (calendar repair)."""

    def __init__(self, sl: Any, below: _Effective | None):
        self.sl = sl
        self.below = below

    def __call__(self, k: np.ndarray) -> np.ndarray:
        w = np.asarray(self.sl.total_variance(k), dtype=np.float64)
        return w if self.below is None else np.maximum(w, self.below(k))

    def derivatives(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, w1, w2 = self.sl.derivatives(k)
        if self.below is not None:
            bw, bw1, bw2 = self.below.derivatives(k)
            use = bw > w
            w, w1, w2 = np.where(use, bw, w), np.where(use, bw1, w1), np.where(use, bw2, w2)
        return w, w1, w2

    def span(self) -> tuple[float, float]:
        sl = self.sl
        if isinstance(sl, SplineSlice):
            lo, hi = float(sl.knots[0]), float(sl.knots[-1])
        else:
            lo, hi = -3.0, 3.0
        if self.below is not None:
            blo, bhi = self.below.span()
            lo, hi = min(lo, blo), max(hi, bhi)
        return lo, hi


def _check_grid(sl: Any) -> np.ndarray:
    if isinstance(sl, SplineSlice):
        return sl.check_grid()
    return _grid_for(sl.T, float(sl.total_variance(0.0)), sl.k_min, sl.k_max, sl.m, sl.sigma)


def _build_spline(K, Tq, F, iv, W, bid, ask, lab, repair: bool) -> VolSurface:
    """Fit the venue-following spline slices expiry by expiry, repair what remains, report."""
    Tu, inv = np.unique(Tq, return_inverse=True)
    issues: list[ArbitrageIssue] = []
    slices: list[Any] = []
    lifted: list[bool] = []
    effs: list[_Effective] = []
    prev: _Effective | None = None
    for i, t in enumerate(Tu):
        sel = np.flatnonzero(inv == i)
        label = str(lab[sel[0]]) if lab is not None else f"T={t:.6g}"
        k = np.log(K[sel] / F[sel])
        n_strikes = np.unique(K[sel]).size
        if n_strikes < MIN_QUOTES:
            raise MarketDataError(
                f"expiry {label}: {n_strikes} usable quote(s) (distinct strikes), at least {MIN_QUOTES} needed "
                "to fit a smile"
            )
        w_sel = None if W is None else W[sel]
        if w_sel is not None and np.count_nonzero(w_sel) < MIN_QUOTES:
            raise MarketDataError(f"expiry {label}: fewer than {MIN_QUOTES} quotes have a positive weight")
        fwd = float(np.median(F[sel]))
        b_sel = None if bid is None else bid[sel]
        a_sel = None if ask is None else ask[sel]
        use_floor = repair and prev is not None
        sl = fit_spline_slice(k, iv[sel], float(t), bid_iv=b_sel, ask_iv=a_sel, weights=w_sel,
                              floor=prev if use_floor else None, floor_span=prev.span() if use_floor else None,
                              label=label, forward=fwd)
        grid = sl.check_grid()
        g = sl.density(grid)
        if g.min() < 0:
            bad = grid[g < 0]
            before = float(-g.min())
            action = "none"
            if repair:
                svi = VolSurface.from_marks(K[sel], Tq[sel], F[sel], iv[sel], w_sel, labels=None if lab is None
                                            else lab[sel], repair=True).slices[0]
                sl = svi
                action = "replaced by the repaired SVI fit of its quotes"
            after = float(max(-sl.density(_check_grid(sl)).min(), 0.0))
            issues.append(ArbitrageIssue("butterfly", label, float(t), (float(bad.min()), float(bad.max())),
                                         before, after, action))
        is_lifted = False
        if prev is not None:
            lo, hi = prev.span()
            lo2, hi2 = (float(sl.knots[0]), float(sl.knots[-1])) if isinstance(sl, SplineSlice) else (-3.0, 3.0)
            cg = np.linspace(min(lo, lo2) - 0.1, max(hi, hi2) + 0.1, 4001)
            viol = prev(cg) - np.asarray(sl.total_variance(cg))
            if viol.max() > CALENDAR_TOL:
                kb = cg[viol > CALENDAR_TOL]
                is_lifted = repair
                issues.append(ArbitrageIssue("calendar", label, float(t), (float(kb.min()), float(kb.max())),
                                             float(viol.max()), 0.0 if repair else float(viol.max()),
                                             "lifted to previous slice" if repair else "none"))
        eff = _Effective(sl, prev if is_lifted else None)
        if is_lifted:
            # diagnostics of the effective (lifted) smile
            s_fit = np.sqrt(eff(k) / float(t))
            err = s_fit - iv[sel]
            two = np.zeros(sel.size, bool) if bid is None else np.isfinite(b_sel) & np.isfinite(a_sel) & \
                (b_sel > 0) & (a_sel > 0)
            ins = two & (s_fit >= (b_sel if bid is not None else 0)) & (s_fit <= (a_sel if ask is not None else 0))
            if isinstance(sl, SplineSlice):
                sl = SplineSlice(sl.T, sl.knots, sl.values, forward=sl.forward, label=sl.label,
                                 n_quotes=sl.n_quotes, iv_rmse=float(np.sqrt(np.mean(err * err))),
                                 iv_max_error=float(np.abs(err).max()), k_min=sl.k_min, k_max=sl.k_max,
                                 n_inside=int(ins.sum()), n_two_sided=int(two.sum()))
                eff = _Effective(sl, prev)
        slices.append(sl)
        lifted.append(is_lifted)
        effs.append(eff)
        prev = eff
    # butterfly of interpolated slices halfway between nodes (reported only)
    widest = (0.0, 0.0, 0)
    for i in range(1, len(slices)):
        lo, hi = effs[i].span()
        grid = np.linspace(lo - 0.1, hi + 0.1, 4001)
        a0, a1, a2 = effs[i - 1].derivatives(grid)
        b0, b1, b2 = effs[i].derivatives(grid)
        g = _density_from(grid, 0.5 * (a0 + b0), 0.5 * (a1 + b1), 0.5 * (a2 + b2))
        if g.min() < -BUTTERFLY_TOL:
            kb = grid[g < -BUTTERFLY_TOL]
            v = float(-g.min())
            issues.append(ArbitrageIssue("interpolation", f"{slices[i-1].label}|{slices[i].label}",
                                         0.5 * (slices[i - 1].T + slices[i].T), (float(kb.min()), float(kb.max())),
                                         v, v, "none"))
    for e in effs:
        lo, hi = e.span()
        if hi - lo > widest[1] - widest[0]:
            widest = (lo, hi, 4001)
    report = ArbitrageReport(tuple(issues), widest, repair)
    return VolSurface(slices, report, lifted)
