"""Slow, loop-based pure-Python references for dpm.market.surface and dpm.market.

Written from the formulas with ``math`` only (no numpy, no code shared with dpm), one point at a time.
"""
from __future__ import annotations

import math


def svi_w(k, a, b, rho, m, sigma):
    """Raw SVI total variance (Gatheral 2004)."""
    return a + b * (rho * (k - m) + math.sqrt((k - m) ** 2 + sigma ** 2))


def effective_w(slices, lifted, i, k):
    """Total variance of slice ``i`` including the calendar lift: max over the chain of lifted slices."""
    w = svi_w(k, *slices[i][1:])
    while lifted[i]:
        i -= 1
        w = max(w, svi_w(k, *slices[i][1:]))
    return w


def surface_w(slices, lifted, k, T):
    """Total variance at (k, T): linear in T between slices, w proportional to T outside.

    ``slices`` is a list of ``(T_i, a, b, rho, m, sigma)`` sorted by ``T_i``.
    """
    n = len(slices)
    if T < slices[0][0]:
        return effective_w(slices, lifted, 0, k) * T / slices[0][0]
    if T >= slices[-1][0]:
        return effective_w(slices, lifted, n - 1, k) * T / slices[-1][0]
    for j in range(1, n):
        if T < slices[j][0]:
            t0, t1 = slices[j - 1][0], slices[j][0]
            w0 = effective_w(slices, lifted, j - 1, k)
            w1 = effective_w(slices, lifted, j, k)
            return w0 + (T - t0) / (t1 - t0) * (w1 - w0)
    raise AssertionError("unreachable")


def norm_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def black_call_normalised(k, w):
    """Undiscounted Black call with F = 1, K = exp(k), total variance w."""
    if w <= 0:
        return max(1.0 - math.exp(k), 0.0)
    s = math.sqrt(w)
    d1 = -k / s + 0.5 * s
    return norm_cdf(d1) - math.exp(k) * norm_cdf(d1 - s)


def forward(index, times, basis, T):
    """F(T) = S exp(y(T) T) with y linear between nodes and flat beyond them."""
    if T <= times[0]:
        y = basis[0]
    elif T >= times[-1]:
        y = basis[-1]
    else:
        for j in range(1, len(times)):
            if T <= times[j]:
                y = basis[j - 1] + (T - times[j - 1]) / (times[j] - times[j - 1]) * (basis[j] - basis[j - 1])
                break
    return index * math.exp(y * T)
