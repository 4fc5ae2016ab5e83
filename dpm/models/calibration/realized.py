"""Daily realised-variance measures from close-to-close returns or the day's price range.

On daily data there are no intraday returns to sum, so the day's variance is measured by

* ``"squared"``: ``r[t]^2`` (unbiased, very noisy);
* ``"parkinson"``: ``(ln H/L)^2 / (4 ln 2)`` — M. Parkinson, "The extreme value method for
  estimating the variance of the rate of return", *J. Business* 53(1) (1980) 61-65;
* ``"garman_klass"``: ``0.5 (ln H/L)^2 - (2 ln 2 - 1) (ln C/O)^2`` — M. B. Garman, M. J. Klass,
  "On the estimation of security price volatilities from historical data", *J. Business* 53(1)
  (1980) 67-78 (about 7 times as efficient as the squared return for a driftless diffusion);
* ``"rogers_satchell"``: ``ln(H/C) ln(H/O) + ln(L/C) ln(L/O)`` — L. C. G. Rogers, S. E. Satchell,
  "Estimating variance from high, low and closing prices", *Ann. Applied Probability* 1(4) (1991)
  504-512 (unbiased with a drift).

Range estimators measure the variance between the day's open and close; with ``include_gap`` the
squared gap from the previous close to the open, ``ln(O[t]/C[t-1])^2``, is added so that the measure
covers the same span as the close-to-close return (the bundled days open at 00:00 UTC, usually at
the previous close, but not always).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError

__all__ = ["REALIZED_METHODS", "realized_variance"]

REALIZED_METHODS = ("squared", "parkinson", "garman_klass", "rogers_satchell")


def realized_variance(open_: Any, high: Any, low: Any, close: Any, method: str = "garman_klass", *,
                      include_gap: bool = True) -> np.ndarray:
    """Realised variance of each day, shape (T,).

    Parameters
    ----------
    open_, high, low, close : array_like, shape (T,)
        Daily prices (> 0, ``low <= open, close <= high``), e.g. from
        :func:`dpm.market.history.load_ohlc`.
    method : {"squared", "parkinson", "garman_klass", "rogers_satchell"}
    include_gap : bool
        Add ``ln(open[t]/close[t-1])^2`` to the range estimators.

    Returns
    -------
    ndarray
        Row ``t`` measures the variance of ``ln(close[t]/close[t-1])``; row 0 is NaN for
        ``"squared"`` and for range estimators with ``include_gap`` (no previous close).
    """
    arrs = {}
    for name, v in (("open", open_), ("high", high), ("low", low), ("close", close)):
        a = np.atleast_1d(as_float_array(v, name))
        if a.ndim != 1:
            raise InvalidInputError(f"{name}: expected shape (T,), got {a.shape}")
        check_finite(a, name)
        if np.any(a <= 0):
            i = int(np.flatnonzero(a <= 0)[0])
            raise InvalidInputError(f"{name}: prices must be > 0, index {i} is {a[i]!r}")
        arrs[name] = a
    sizes = {a.size for a in arrs.values()}
    if len(sizes) != 1:
        raise InvalidInputError(f"open/high/low/close: lengths differ {[a.size for a in arrs.values()]}")
    o, h, lo, c = (np.log(arrs[k]) for k in ("open", "high", "low", "close"))
    bad = (h < np.maximum(o, c) - 1e-12) | (lo > np.minimum(o, c) + 1e-12)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(f"high/low: row {i} does not bracket open and close")
    out = np.full(o.size, np.nan)
    if method == "squared":
        out[1:] = np.diff(c) ** 2
        return out
    if method == "parkinson":
        v = (h - lo) ** 2 / (4.0 * np.log(2.0))
    elif method == "garman_klass":
        v = 0.5 * (h - lo) ** 2 - (2.0 * np.log(2.0) - 1.0) * (c - o) ** 2
    elif method == "rogers_satchell":
        v = (h - c) * (h - o) + (lo - c) * (lo - o)
    else:
        raise InvalidInputError(f"method: expected one of {REALIZED_METHODS}, got {method!r}")
    v = np.maximum(v, 0.0)
    if include_gap:
        out[1:] = v[1:] + (o[1:] - c[:-1]) ** 2
        return out
    return v
