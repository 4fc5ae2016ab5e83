"""Arbitrary-precision (mpmath) reference for Black-76 / BSM prices and greeks, linear and inverse.

Textbook closed forms evaluated with 40 significant digits, written independently of
``dpm/_core/black_math.h`` (no out-of-the-money/parity tricks are needed at this precision), and
:func:`numerical_greeks`, which differentiates :func:`value` numerically with ``mpmath.diff`` so
that the closed forms themselves can be checked.  Inputs are float arrays (broadcast); outputs are
float64 arrays rounded from the 40-digit results.

Conventions (the ones of ``dpm.pricing``): ``V = exp(-r T) * B(F, K, sigma, T)`` with the forward
``F`` (Black-76) or ``F = S exp((r - q) T)`` (BSM, first argument the spot ``S``); the inverse (coin)
value is ``c = V / F`` (Black-76 only).  ``delta = dV/dF`` (``dV/dS`` for BSM), ``gamma`` its
derivative, ``vega = dV/dsigma``, ``theta = -dV/dT`` (spot or forward held fixed), ``rho = dV/dr``
(forward held fixed for Black-76, spot fixed for BSM), ``vanna = d2V/dF dsigma``,
``volga = d2V/dsigma2``; with ``inverse=True`` each is the same derivative of ``c``.
"""
from __future__ import annotations

import mpmath as mp
import numpy as np

DPS = 40
GREEKS = ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga")


def _ncdf(z):
    return mp.erfc(-z / mp.sqrt(2)) / 2


def _npdf(z):
    return mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)


def _value_mp(F_in, K, sigma, T, cp, r, q, model, inverse):
    """Value of one option with mpmath numbers (sigma, T > 0)."""
    F = F_in * mp.exp((r - q) * T) if model == "bsm" else F_in
    s = sigma * mp.sqrt(T)
    d1 = mp.log(F / K) / s + s / 2
    d2 = d1 - s
    V = mp.exp(-r * T) * cp * (F * _ncdf(cp * d1) - K * _ncdf(cp * d2))
    return V / F if inverse else V


def _greeks_mp(F_in, K, sigma, T, cp, r, q, model, inverse):
    """All eight outputs of one option, closed forms, mpmath numbers."""
    df = mp.exp(-r * T)
    S = F_in
    F = S * mp.exp((r - q) * T) if model == "bsm" else F_in
    sqT = mp.sqrt(T)
    s = sigma * sqT
    d1 = mp.log(F / K) / s + s / 2
    d2 = d1 - s
    n1, n2 = _ncdf(cp * d1), _ncdf(cp * d2)
    pdf = _npdf(d1)
    V = df * cp * (F * n1 - K * n2)
    vega = df * F * pdf * sqT
    volga = vega * d1 * d2 / sigma
    decay = df * F * pdf * sigma / (2 * sqT)  # df * dB/dT at fixed forward
    if model == "bsm":
        carry = mp.exp(-q * T)
        return {
            "price": V,
            "delta": carry * cp * n1,
            "gamma": carry * pdf / (S * s),
            "vega": vega,
            "theta": r * V - df * cp * n1 * F * (r - q) - decay,
            "rho": T * df * cp * K * n2,
            "vanna": -carry * pdf * d2 / sigma,
            "volga": volga,
        }
    delta = df * cp * n1
    gamma = df * pdf / (F * s)
    out = {
        "price": V,
        "delta": delta,
        "gamma": gamma,
        "vega": vega,
        "theta": r * V - decay,
        "rho": -T * V,
        "vanna": -df * pdf * d2 / sigma,
        "volga": volga,
    }
    if inverse:
        # c = V / F: quotient rule, derived by hand (c' = V'/F - V/F^2, c'' = V''/F - 2c'/F, ...)
        dc = delta / F - V / F**2
        out = {
            "price": V / F,
            "delta": dc,
            "gamma": gamma / F - 2 * dc / F,
            "vega": vega / F,
            "theta": out["theta"] / F,
            "rho": out["rho"] / F,
            "vanna": out["vanna"] / F - vega / F**2,
            "volga": volga / F,
        }
    return out


def _broadcast(*args):
    arrs = np.broadcast_arrays(*[np.asarray(a, dtype=float) for a in args])
    return [a.ravel() for a in arrs], arrs[0].shape


def greeks(forward, strike, vol, time, option_type, rate=0.0, carry=0.0, model="black76",
           inverse=False):
    """Dict of float64 arrays (price and the seven greeks), 40-digit closed forms.

    Elements with ``vol * sqrt(time) == 0`` get the intrinsic value and zero greeks."""
    (F, K, sig, T, cp, r, q), shape = _broadcast(forward, strike, vol, time, option_type, rate, carry)
    res = {g: np.empty(F.size) for g in GREEKS}
    with mp.workdps(DPS):
        for i in range(F.size):
            Fi, Ki, ri, qi, Ti = (mp.mpf(float(v)) for v in (F[i], K[i], r[i], q[i], T[i]))
            if sig[i] * np.sqrt(T[i]) == 0.0:
                fwd = Fi * mp.exp((ri - qi) * Ti) if model == "bsm" else Fi
                V = mp.exp(-ri * Ti) * max(cp[i] * (fwd - Ki), 0)
                vals = dict.fromkeys(GREEKS, mp.mpf(0))
                vals["price"] = V / fwd if inverse else V
            else:
                vals = _greeks_mp(Fi, Ki, mp.mpf(float(sig[i])), Ti, int(cp[i]), ri, qi, model, inverse)
            for g in GREEKS:
                res[g][i] = float(vals[g])
    return {g: a.reshape(shape) for g, a in res.items()}


def price(forward, strike, vol, time, option_type, rate=0.0, carry=0.0, model="black76",
          inverse=False):
    """Float64 prices, 40-digit closed form."""
    return greeks(forward, strike, vol, time, option_type, rate, carry, model, inverse)["price"]


def value(F, K, sigma, T, cp, r=0, q=0, model="black76", inverse=False):
    """Value of one option as an mpmath number (arguments may be mpmath numbers)."""
    with mp.workdps(DPS):
        return _value_mp(*(mp.mpf(v) for v in (F, K, sigma, T)), int(cp), mp.mpf(r), mp.mpf(q),
                         model, inverse)


def numerical_greeks(F, K, sigma, T, cp, r=0.0, q=0.0, model="black76", inverse=False):
    """The seven greeks of one option by mpmath numerical differentiation of :func:`value`.

    Independent of the closed forms above; used to check them."""
    args = dict(cp=int(cp), model=model, inverse=inverse)
    with mp.workdps(DPS):
        F, K, sigma, T, r, q = (mp.mpf(float(v)) for v in (F, K, sigma, T, r, q))

        def v(f=F, s=sigma, t=T, rr=r):
            return _value_mp(f, K, s, t, args["cp"], rr, q, model, inverse)

        out = {
            "delta": mp.diff(lambda f: v(f=f), F),
            "gamma": mp.diff(lambda f: v(f=f), F, 2),
            "vega": mp.diff(lambda s: v(s=s), sigma),
            "theta": -mp.diff(lambda t: v(t=t), T),
            "rho": mp.diff(lambda rr: v(rr=rr), r),
            "vanna": mp.diff(lambda f, s: v(f=f, s=s), (F, sigma), (1, 1)),
            "volga": mp.diff(lambda s: v(s=s), sigma, 2),
        }
        return {k: float(val) for k, val in out.items()}


def normalised_call(x, s):
    """b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2) as an mpmath number."""
    with mp.workdps(DPS):
        x, s = mp.mpf(float(x)), mp.mpf(float(s))
        h, t = x / s, s / 2
        return mp.exp(x / 2) * _ncdf(h + t) - mp.exp(-x / 2) * _ncdf(h - t)


def normalised_gap(x, s):
    """e^{x/2} - b(x, s) for x <= 0, computed as a sum of positive terms (no cancellation)."""
    with mp.workdps(DPS):
        x, s = mp.mpf(float(x)), mp.mpf(float(s))
        h, t = x / s, s / 2
        return mp.exp(x / 2) * _ncdf(-h - t) + mp.exp(-x / 2) * _ncdf(h - t)
