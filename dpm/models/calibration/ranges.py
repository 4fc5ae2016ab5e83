"""Implied-vol shock proxy and dynamic scan ranges with anti-procyclicality (APC) tools.

Reference: Commission Delegated Regulation (EU) No 153/2013 (EMIR RTS on CCP requirements),
Art. 24 (confidence, look-back), Art. 28 (procyclicality: 25 % buffer, 25 % weight on stressed
observations, 10-year look-back floor).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError
from dpm.models.calibration._inputs import _as_returns, _check_int, _check_level
from dpm.models.calibration.ewma import ewma_variance

__all__ = ['DynamicScanRange', 'VolShockProxy', 'fit_vol_shock_proxy', 'realized_log_vol', 'scale_vol_shock_to_expiry', 'scan_ranges', 'vol_shock_sizes']


def realized_log_vol(returns: Any, window: int = 30) -> np.ndarray:
    """Log of the trailing ``window``-day realised vol: ``0.5 ln(mean(r[t-window+1..t]^2))``.

    Shape as ``returns``; NaN for the first ``window - 1`` rows (and where the window is all zero).
    """
    window = _check_int(window, "window", 2)
    r, squeeze = _as_returns(returns, "returns", min_obs=window)
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r * r]), axis=0)
    out = np.full(r.shape, np.nan)
    ms = (c[window:] - c[:-window]) / window
    with np.errstate(divide="ignore"):
        out[window - 1:] = np.where(ms > 0, 0.5 * np.log(np.maximum(ms, 1e-300)), np.nan)
    return out[:, 0] if squeeze else out


@dataclass(frozen=True)
class VolShockProxy:
    """Joint implied-vol shock as a function of the price move, fitted on realised vol.

    **Proxy, stated plainly**: no implied-vol history is bundled, so the relative change of the
    30-day implied vol over ``horizon`` days is proxied by the change of the log 30-day *realised*
    vol, fitted per underlying by least squares on the same-window log return::

        d ln RV30 = c0 + c1 * r_h + c2 * |r_h|  (+ noise),

    ``vol_shock = expm1(iv_beta * (c0 + c1 * r_h + c2 * |r_h|))`` (relative, 0.3 = vol x 1.3).
    ``c1 < 0`` is the leverage effect, ``c2 > 0`` the "big moves raise vol" effect. ``iv_beta``
    scales realised-vol changes to implied-vol changes (1.0 = take them as they are; implied vol
    usually moves less than 30-day realised vol, so 1.0 is conservative for short-vol books and
    optimistic for none). The shock applies to the 30-day point of the surface; use
    :func:`scale_vol_shock_to_expiry` for other expiries.
    """

    underlyings: tuple[str, ...]
    coef: np.ndarray  # (U, 3): c0, c1, c2
    horizon_days: int
    window: int
    iv_beta: float
    r_squared: np.ndarray  # (U,)

    def apply(self, log_returns: Any) -> np.ndarray:
        """Relative vol shocks for scenario log returns of shape (S, U)."""
        x = as_float_array(log_returns, "log_returns")
        if x.ndim != 2 or x.shape[1] != len(self.underlyings):
            raise InvalidInputError(
                f"log_returns: expected shape (S, {len(self.underlyings)}), got {x.shape}"
            )
        c = self.coef
        z = c[:, 0] + c[:, 1] * x + c[:, 2] * np.abs(x)
        return np.expm1(self.iv_beta * z)


def fit_vol_shock_proxy(returns: Any, *, horizon_days: int = 1, window: int = 30,
                        iv_beta: float = 1.0,
                        underlyings: Sequence[str] | None = None) -> VolShockProxy:
    """Fit :class:`VolShockProxy` on daily log returns (shape (n, U)).

    Uses overlapping ``horizon_days`` windows: the regressand is
    ``ln RV30[t+h] - ln RV30[t]`` and the regressor the log return over ``(t, t+h]``.
    """
    h = _check_int(horizon_days, "horizon_days", 1)
    r, _ = _as_returns(returns, "returns", min_obs=window + h + 10)
    lv = realized_log_vol(r, window)
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r]), axis=0)
    rh = c[h:] - c[:-h]  # rh[s] = sum r[s .. s+h-1]
    coef = np.empty((r.shape[1], 3))
    r2 = np.empty(r.shape[1])
    for u in range(r.shape[1]):
        t_end = np.arange(window - 1 + h, r.shape[0])  # last day of the window
        dlv = lv[t_end, u] - lv[t_end - h, u]
        ret = rh[t_end - h + 1, u]
        ok = np.isfinite(dlv)
        X = np.column_stack([np.ones(ok.sum()), ret[ok], np.abs(ret[ok])])
        beta, *_ = np.linalg.lstsq(X, dlv[ok], rcond=None)
        coef[u] = beta
        resid = dlv[ok] - X @ beta
        tss = np.sum((dlv[ok] - dlv[ok].mean()) ** 2)
        r2[u] = 1.0 - np.sum(resid ** 2) / tss if tss > 0 else 0.0
    names = tuple(underlyings) if underlyings is not None else tuple(
        f"u{j}" for j in range(r.shape[1]))
    if len(names) != r.shape[1]:
        raise InvalidInputError(f"underlyings: {len(names)} names for {r.shape[1]} columns")
    return VolShockProxy(names, coef, h, int(window), float(iv_beta), r2)


def vol_shock_sizes(returns: Any, confidence: float = 0.99, horizon_days: int = 2, *,
                    window: int = 30, lookback: int = 3650, min_obs: int = 250,
                    iv_beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic vol-shock sizes (up, down) per day from the realised-vol proxy.

    For each day ``t``, the empirical ``confidence`` quantile of the ``horizon_days`` changes of
    ``ln RV30`` observed in the trailing ``lookback`` days up to ``t`` gives
    ``up[t] = expm1(iv_beta * q_conf)`` and ``down[t] = -expm1(iv_beta * q_(1-conf))`` (both >= 0,
    relative to the current vol). NaN until ``min_obs`` changes are available. This is a
    **proxy for implied-vol changes** (see :class:`VolShockProxy`).

    Returns
    -------
    up, down : ndarray, shape like ``returns``
    """
    conf = _check_level(confidence)
    h = _check_int(horizon_days, "horizon_days", 1)
    r, squeeze = _as_returns(returns, "returns", min_obs=window + h)
    lv = realized_log_vol(r, window)
    d = np.full_like(lv, np.nan)
    d[h:] = lv[h:] - lv[:-h]
    n, a = r.shape
    up = np.full((n, a), np.nan)
    down = np.full((n, a), np.nan)
    for u in range(a):
        col = d[:, u]
        for t in range(n):
            seg = col[max(0, t - lookback + 1):t + 1]
            seg = seg[np.isfinite(seg)]
            if seg.size >= min_obs:
                qd, qu = np.quantile(seg, [1.0 - conf, conf])
                up[t, u] = np.expm1(iv_beta * max(qu, 0.0))
                down[t, u] = -np.expm1(iv_beta * min(qd, 0.0))
    if squeeze:
        return up[:, 0], down[:, 0]
    return up, down


def scale_vol_shock_to_expiry(shock_30d: Any, dte_days: Any, *, power_short: float = 0.30,
                              power_long: float = 0.13, dte_floor: float = 1.0) -> np.ndarray:
    """Scale a 30-day relative vol shock to other expiries: ``shock * (30 / max(DTE, floor))^p``.

    ``p = power_short`` for ``DTE <= 30`` else ``power_long`` — the form Deribit's clones publish
    (Derive, Paradex; sources in docs/methodology.md), with Deribit's powers 0.30 / 0.13. Broadcasts.
    """
    s = as_float_array(shock_30d, "shock_30d")
    dte = as_float_array(dte_days, "dte_days")
    check_finite(s, "shock_30d")
    check_finite(dte, "dte_days")
    eff = np.maximum(dte, dte_floor)
    p = np.where(eff <= 30.0, power_short, power_long)
    return s * (30.0 / eff) ** p


# ---------------------------------------------------------------------------------------------
# Dynamic scan ranges with anti-procyclicality
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DynamicScanRange:
    """Daily price-scan ranges (relative moves) per asset; see :func:`scan_ranges`.

    Every array has shape ``(n, A)``; row ``t`` is the range set at the close of day ``t`` (it uses
    returns up to and including day ``t``) and applies to the next ``horizon_days`` days.

    Attributes
    ----------
    dates : ndarray of datetime64[D] or None
    assets : tuple of str
    confidence, horizon_days : float, int
    ewma_vol : daily EWMA vol forecast for day t+1.
    raw : ``expm1(z * ewma_vol * sqrt(h))`` — the purely dynamic range.
    floor : APC floor range (NaN where not yet available or ``floor=None``).
    buffer_rate : buffer applied on the day (0 .. ``buffer``); 0 while released.
    buffer_released : bool, the release trigger fired (raw range rising fast).
    capped : bool, the daily-increase cap bound.
    range : final scan range (buffered, released or capped as described in :func:`scan_ranges`).
    vol_up, vol_down : relative 30-day implied-vol shock sizes from the realised-vol proxy.
    """

    dates: np.ndarray | None
    assets: tuple[str, ...]
    confidence: float
    horizon_days: int
    ewma_vol: np.ndarray
    raw: np.ndarray
    floor: np.ndarray
    buffer_rate: np.ndarray
    buffer_released: np.ndarray
    capped: np.ndarray
    range: np.ndarray
    vol_up: np.ndarray
    vol_down: np.ndarray

    def latest(self) -> dict[str, dict[str, float]]:
        """Last day's final price range and vol shocks per asset."""
        return {a: {"price_range": float(self.range[-1, j]), "vol_up": float(self.vol_up[-1, j]),
                    "vol_down": float(self.vol_down[-1, j])} for j, a in enumerate(self.assets)}


def _rolling_mean_sq(r: np.ndarray, window: int) -> np.ndarray:
    """Mean of r^2 over the trailing ``window`` rows (NaN for the first window-1 rows)."""
    c = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r * r]), axis=0)
    out = np.full(r.shape, np.nan)
    out[window - 1:] = (c[window:] - c[:-window]) / window
    return out


def scan_ranges(returns: Any, confidence: float = 0.99, horizon_days: int = 2,
                lambda_: float = 0.94, *, floor: str | float | None = "stressed",
                stressed_window: int = 250, stress_weight: float = 0.25,
                long_term_days: int = 3650, min_floor_obs: int = 250, buffer: float = 0.25,
                release_trigger: float = 0.25, release_lookback: int = 5, rebuild_days: int = 20,
                max_daily_increase: float | None = None, warmup: int = 30,
                vol_window: int = 30, iv_beta: float = 1.0, dates: Any = None,
                assets: Sequence[str] | None = None) -> DynamicScanRange:
    """Dynamic price-scan ranges from EWMA vol, with EMIR-style anti-procyclicality tools.

    Steps for each day ``t`` and asset (``z`` = standard normal ``confidence`` quantile):

    1. ``raw = expm1(z * sigma_t * sqrt(horizon_days))`` with ``sigma_t`` the EWMA vol forecast for
       day ``t+1`` (``lambda_``). ``expm1`` of the log-return quantile is larger than both
       ``1 - exp(-x)`` (down move) and the log move, so the symmetric range ``±raw`` is
       conservative on both sides.
    2. Floor (RTS 153/2013 Art. 28(1)(b)/(c)):

       * ``"long_term"``: vol over the trailing ``long_term_days`` (10 years, expanding before
         that) — tool (c).
       * ``"stressed"``: ``sqrt(w * sigma_S^2 + (1 - w) * sigma_LT^2)``, ``w = stress_weight``
         (>= 25 %, tool (b)) and ``sigma_S`` the highest ``stressed_window``-day realised vol seen
         up to ``t`` (the worst window, no look-ahead), ``sigma_LT`` the long-term vol.
       * a float: a fixed range floor; ``None``: no floor.

       The floor needs ``min_floor_obs`` returns; before that it is NaN and not applied.
    3. Buffer (tool (a)): with ``base = max(raw, floor)``,
       ``range_t = max(base_t (1 + b_t), min(range_(t-1), base_t (1 + buffer)))``.
       ``b_t = buffer`` normally, so ``range = base (1 + buffer)``. The buffer is released
       (``b_t = 0``) on days when ``raw`` exceeds ``(1 + release_trigger)`` times its value
       ``release_lookback`` days earlier, and rebuilt linearly over ``rebuild_days`` afterwards. A
       released buffer absorbs the rise: the range stays at its previous level until ``base``
       overtakes it, then follows ``base`` without a buffer on top (it never drops because of a
       release). While margins fall, the buffer is back in full as soon as that costs no call.
    4. Optional speed limit: ``range_t <= range_(t-1) * (1 + max_daily_increase)``. This is a
       governance tool, not an EMIR one; it may push margin below the model level on crash days
       (``capped`` marks them) and so costs coverage.

    Vol-shock sizes come from :func:`vol_shock_sizes` (a realised-vol proxy for implied-vol
    changes; no implied-vol history exists in the bundled data).

    Parameters
    ----------
    returns : array_like, shape (n,) or (n, A)
        Daily log returns.
    dates, assets : optional labels stored on the result.

    Returns
    -------
    DynamicScanRange
    """
    conf = _check_level(confidence)
    h = _check_int(horizon_days, "horizon_days", 1)
    r, _ = _as_returns(returns, "returns", min_obs=max(warmup + 1, vol_window + h))
    n, a = r.shape
    if buffer < 0 or release_trigger < 0:
        raise InvalidInputError(f"buffer/release_trigger: must be >= 0, got {buffer}, {release_trigger}")
    if not (0.0 <= stress_weight <= 1.0):
        raise InvalidInputError(f"stress_weight: must be in [0, 1], got {stress_weight!r}")
    if max_daily_increase is not None and max_daily_increase <= 0:
        raise InvalidInputError(f"max_daily_increase: must be > 0, got {max_daily_increase!r}")
    z = stats.norm.ppf(conf)
    scale = z * np.sqrt(h)
    var = ewma_variance(r, lambda_, warmup=warmup)
    vol = np.sqrt(var[1:])  # row t: forecast for day t+1
    raw = np.expm1(scale * vol)

    # --- floor
    floor_rng = np.full((n, a), np.nan)
    if floor is not None:
        if isinstance(floor, str):
            if floor not in ("stressed", "long_term"):
                raise InvalidInputError(
                    f"floor: expected 'stressed', 'long_term', a number or None, got {floor!r}")
            c = np.cumsum(np.vstack([np.zeros((1, a)), r * r]), axis=0)
            idx = np.arange(n)
            lo = np.maximum(0, idx - long_term_days + 1)
            cnt = (idx - lo + 1)[:, None]
            lt_var = (c[idx + 1] - c[lo]) / cnt
            lt_var[cnt[:, 0] < min_floor_obs] = np.nan
            if floor == "long_term":
                fvar = lt_var
            else:
                sw = _check_int(stressed_window, "stressed_window", 2)
                roll = _rolling_mean_sq(r, sw)
                stressed = np.fmax.accumulate(np.where(np.isnan(roll), -np.inf, roll), axis=0)
                stressed[~np.isfinite(stressed)] = np.nan
                fvar = stress_weight * stressed + (1.0 - stress_weight) * lt_var
            floor_rng = np.expm1(scale * np.sqrt(fvar))
        else:
            fv = float(floor)
            if not np.isfinite(fv) or fv < 0:
                raise InvalidInputError(f"floor: a fixed floor must be finite and >= 0, got {floor!r}")
            floor_rng = np.full((n, a), fv)
    base = np.where(np.isnan(floor_rng), raw, np.fmax(raw, floor_rng))

    # --- buffer with release and rebuild, then the speed limit (sequential by nature)
    rate = np.zeros((n, a))
    released = np.zeros((n, a), dtype=bool)
    capped = np.zeros((n, a), dtype=bool)
    final = np.full((n, a), np.nan)
    b = np.full(a, float(buffer))
    step = float(buffer) / max(int(rebuild_days), 1)
    prev = np.full(a, np.nan)
    for t in range(n):
        if t >= release_lookback:
            past = raw[t - release_lookback]
            fire = np.isfinite(past) & (raw[t] > (1.0 + release_trigger) * past)
        else:
            fire = np.zeros(a, dtype=bool)
        b = np.where(fire, 0.0, np.minimum(float(buffer), b + step))
        released[t] = fire
        rate[t] = b
        # a released buffer absorbs the rise: margin keeps its previous level (up to the fully
        # buffered base) instead of dropping on the first day of stress
        val = base[t] * (1.0 + b)
        held = np.fmin(prev, base[t] * (1.0 + float(buffer)))
        val = np.where(np.isfinite(held), np.fmax(val, held), val)
        if max_daily_increase is not None:
            lim = prev * (1.0 + max_daily_increase)
            hit = np.isfinite(lim) & (val > lim)
            capped[t] = hit
            val = np.where(hit, lim, val)
        final[t] = val
        prev = np.where(np.isfinite(val), val, prev)

    up, down = vol_shock_sizes(r, conf, h, window=vol_window, lookback=long_term_days,
                               min_obs=min(min_floor_obs, max(n - vol_window - h, 1)),
                               iv_beta=iv_beta)
    names = tuple(assets) if assets is not None else tuple(f"u{j}" for j in range(a))
    if len(names) != a:
        raise InvalidInputError(f"assets: {len(names)} names for {a} columns")
    d = None if dates is None else np.asarray(dates).astype("datetime64[D]")
    if d is not None and d.shape != (n,):
        raise InvalidInputError(f"dates: expected {n} dates, got {d.shape}")
    return DynamicScanRange(d, names, conf, h, vol, raw, floor_rng, rate, released, capped,
                            final, up, down)
