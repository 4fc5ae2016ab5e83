"""Tests of dpm.pricing.price / greeks (Black-76, BSM, inverse) against independent references.

References: a 40-digit mpmath implementation of the textbook closed forms
(tests/reference/black_mp.py, itself checked against mpmath numerical differentiation), QuantLib,
central finite differences of dpm's own prices, hand-derived identities of inverse (coin-settled)
contracts, and hypothesis property tests (monotonicity, no-arbitrage bounds).

Accuracy criterion (issue 2): for every output, relative error <= 1e-12 wherever the reference
value exceeds 1e-10 x its scale, and absolute error <= 1e-15 x its scale elsewhere.  Scales (the
normalisation of greeks that are not in price units), with F the forward:

=========  =====================  ========================
output     linear (Black-76/BSM)  inverse (coin, c = V/F)
=========  =====================  ========================
price      F                      1
delta      1                      1/F
gamma      1/F                    1/F^2
vega       F                      1
theta      F                      1
rho        F                      1
vanna      1                      1/F
volga      F                      1
=========  =====================  ========================

Three outputs can vanish inside the domain because they are differences of terms: vanna (at d2 = 0,
linear; d1 = 0, inverse), volga (at d1 d2 = 0) and theta with rates (r V against the time decay),
and the inverse gamma.  Near such a zero no double-precision method reaches 1e-12 *relative*: the
inputs' own rounding (d = ln(F/K)/s +- s/2 carries an absolute error ~eps (|ln(F/K)|/s + s)) sets
the floor.  For those the test allows, on top of 1e-12 relative, 16 eps times the magnitude of the
cancelling terms (a condition-number bound that is negligible away from the zero), and counts how
often that allowance was needed.
"""
from __future__ import annotations

import math
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import black_mp
from reference.samples import HOUR, random_options

from dpm._core import _black
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.pricing.black import GREEK_NAMES, greeks, price

EPS = np.finfo(float).eps

# random options over the whole range of issue 2: reference.samples.random_options

# (name, model, inverse, with rates, count): 10,000 options in total
GROUPS = [
    ("black76", "black76", False, False, 4000),
    ("black76-rates", "black76", False, True, 2000),
    ("bsm", "bsm", False, True, 2000),
    ("inverse", "black76", True, True, 2000),
]


def scales(F, inverse):
    one = np.ones_like(F)
    if inverse:
        return dict(price=one, delta=1 / F, gamma=1 / F**2, vega=one, theta=one, rho=one,
                    vanna=1 / F, volga=one)
    return dict(price=F, delta=one, gamma=1 / F, vega=F, theta=F, rho=F, vanna=one, volga=F)


def cancellation_magnitude(g, ref, F, K, sig, T, r, q, model, inverse):
    """Magnitude of the terms whose difference gives each output (see the module docstring)."""
    s = sig * np.sqrt(T)
    x = np.log(F / K)
    d1 = x / s + s / 2
    d2 = d1 - s
    dd = np.abs(x) / s + s  # bound of the absolute rounding of d1, d2 (in units of eps)
    mag = {k: np.abs(v) for k, v in ref.items()}
    df = np.exp(-r * T)
    pdf = np.exp(-d1 * d1 / 2) / np.sqrt(2 * np.pi)
    vega_lin = df * F * pdf * np.sqrt(T)
    decay = df * F * pdf * sig / (2 * np.sqrt(T))
    carry_fac = np.exp(-q * T) if model == "bsm" else df
    if inverse:
        mag["vanna"] = df * pdf / (sig * F) * (np.abs(d1) + dd)
        mag["volga"] = vega_lin / F / sig * (np.abs(d1 * d2) + (np.abs(d1) + np.abs(d2)) * dd)
        mag["gamma"] = df * pdf / (F * F * s) + 2 * np.abs(ref["delta"]) / F
        mag["theta"] = (np.abs(r * ref["price"] * F) + decay) / F
    else:
        mag["vanna"] = carry_fac * pdf / sig * (np.abs(d2) + dd)
        mag["volga"] = vega_lin / sig * (np.abs(d1 * d2) + (np.abs(d1) + np.abs(d2)) * dd)
        extra = np.abs(df * F * (r - q)) if model == "bsm" else 0.0
        mag["theta"] = np.abs(r * ref["price"]) + decay + extra
    return {k: np.maximum(mag[k], np.abs(ref[k])) for k in mag}


@pytest.fixture(scope="module")
def reference_sample():
    """The 10,000 options with dpm results and 40-digit references (computed once, ~2 s)."""
    out = []
    for i, (name, model, inverse, rates, n) in enumerate(GROUPS):
        F, K, sig, T, cp, r, q = random_options(n, seed=100 + i, rates=rates)
        ref = black_mp.greeks(F, K, sig, T, cp, r, q, model=model, inverse=inverse)
        got = greeks(F, K, sig, T, cp, rate=r, carry=q, model=model, inverse=inverse)
        fwd = F * np.exp((r - q) * T) if model == "bsm" else F
        out.append(dict(name=name, model=model, inverse=inverse, F=F, K=K, sig=sig, T=T, cp=cp,
                        r=r, q=q, fwd=fwd, ref=ref, got=got))
    return out


def accuracy_table(sample):
    """Rows (group, output, max relative error where it applies, max abs/scale elsewhere, number
    of elements that needed the cancellation allowance)."""
    rows = []
    for grp in sample:
        sc = scales(grp["fwd"], grp["inverse"])
        mag = cancellation_magnitude(None, grp["ref"], grp["fwd"], grp["K"], grp["sig"], grp["T"],
                                     grp["r"], grp["q"], grp["model"], grp["inverse"])
        for g in GREEK_NAMES:
            ref, got = grp["ref"][g], grp["got"][g]
            err = np.abs(got - ref)
            big = np.abs(ref) > 1e-10 * sc[g]
            rel = np.where(big, err / np.where(big, np.abs(ref), 1.0), 0.0)
            small = np.where(big, 0.0, err / sc[g])
            allowed = 1e-12 * np.abs(ref) + 16 * EPS * mag[g]
            needed = big & (rel > 1e-12)
            ok_big = ~big | (err <= allowed)
            rows.append(dict(group=grp["name"], output=g, max_rel=float(rel.max()),
                             max_rel_clean=float(np.where(needed, 0, rel).max()),
                             max_small=float(small.max()), n_allowance=int(needed.sum()),
                             ok=bool(ok_big.all() and (small <= 1e-15).all()),
                             n=len(ref)))
    return rows


# ---------------------------------------------------------------------------------------------
# 1. the mpmath reference itself
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model,inverse,cp,r,q", [
    ("black76", False, 1, 0.0, 0.0), ("black76", False, -1, 0.05, 0.0),
    ("bsm", False, 1, 0.04, 0.02), ("bsm", False, -1, -0.01, 0.03),
    ("black76", True, 1, 0.02, 0.0), ("black76", True, -1, 0.0, 0.0),
])
@pytest.mark.parametrize("F,K,sig,T", [(100.0, 110.0, 0.4, 0.5), (30000.0, 18000.0, 1.2, 0.05),
                                       (2.5, 2.6, 0.08, 3.0)])
def test_reference_closed_forms_match_numerical_derivatives(model, inverse, cp, r, q, F, K, sig, T):
    closed = black_mp.greeks(F, K, sig, T, cp, r, q, model=model, inverse=inverse)
    numeric = black_mp.numerical_greeks(F, K, sig, T, cp, r, q, model=model, inverse=inverse)
    for g, v in numeric.items():
        assert float(closed[g]) == pytest.approx(v, rel=1e-20, abs=1e-25), g


# ---------------------------------------------------------------------------------------------
# 2. 10,000 random options against the 40-digit reference
# ---------------------------------------------------------------------------------------------
def test_sample_covers_the_range(reference_sample):
    n = sum(len(g["F"]) for g in reference_sample)
    assert n >= 10_000
    allF = np.concatenate([g["K"] / g["F"] for g in reference_sample])
    allT = np.concatenate([g["T"] for g in reference_sample])
    assert allF.min() < 0.11 and allF.max() > 9.0
    assert allT.min() < 1.5 * HOUR and allT.max() > 4.5


@pytest.mark.parametrize("group", [g[0] for g in GROUPS])
def test_prices_and_greeks_match_mpmath(reference_sample, group):
    rows = [row for row in accuracy_table(reference_sample) if row["group"] == group]
    bad = [row for row in rows if not row["ok"]]
    assert not bad, bad
    # prices never need the cancellation allowance: plain 1e-12 relative
    price_row = next(row for row in rows if row["output"] == "price")
    assert price_row["max_rel"] <= 1e-12 and price_row["max_small"] <= 1e-15
    # the allowance is for the rare elements next to a zero of the output, not a blanket excuse
    assert sum(row["n_allowance"] for row in rows) <= 0.001 * 8 * rows[0]["n"]


def test_no_nan_or_inf_in_sample(reference_sample):
    for grp in reference_sample:
        for g, arr in grp["got"].items():
            assert np.isfinite(arr).all(), (grp["name"], g)


# ---------------------------------------------------------------------------------------------
# 3. QuantLib
# ---------------------------------------------------------------------------------------------
def test_black76_matches_quantlib_black_calculator():
    ql = pytest.importorskip("QuantLib")
    F, K, sig, T, cp, r, _ = random_options(3000, seed=7, rates=True)
    got = greeks(F, K, sig, T, cp, rate=r)
    n_checked = 0
    for i in range(len(F)):
        df = math.exp(-r[i] * T[i])
        payoff = ql.PlainVanillaPayoff(ql.Option.Call if cp[i] > 0 else ql.Option.Put, K[i])
        calc = ql.BlackCalculator(payoff, F[i], sig[i] * math.sqrt(T[i]), df)
        v = calc.value()
        if v > 0.01:
            n_checked += 1
            assert got["price"][i] == pytest.approx(v, rel=1e-9), i
            assert got["delta"][i] == pytest.approx(calc.deltaForward(), rel=1e-9, abs=1e-12), i
            assert got["gamma"][i] == pytest.approx(calc.gammaForward(), rel=1e-9, abs=1e-15), i
            assert got["vega"][i] == pytest.approx(calc.vega(T[i]), rel=1e-9, abs=1e-12), i
    assert n_checked > 1000


def test_bsm_matches_quantlib_analytic_european_engine():
    ql = pytest.importorskip("QuantLib")
    rng = np.random.default_rng(11)
    today = ql.Date(15, ql.May, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    n_checked = 0
    for _ in range(300):
        S = float(np.exp(rng.uniform(0, np.log(1e5))))
        K = float(S * np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
        days = int(rng.integers(1, 5 * 365))
        T = days / 365.0
        sig = float(rng.uniform(0.05, 3.0))
        r, q = float(rng.uniform(-0.02, 0.1)), float(rng.uniform(-0.05, 0.1))
        cp = 1 if rng.random() < 0.5 else -1
        spot = ql.SimpleQuote(S)
        process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(spot),
            ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), sig, dc)))
        option = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call if cp > 0 else ql.Option.Put, K),
                                  ql.EuropeanExercise(today + days))
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        v = option.NPV()
        if v <= 0.01:
            continue
        n_checked += 1
        g = greeks(S, K, sig, T, cp, rate=r, carry=q, model="bsm")
        assert float(g["price"]) == pytest.approx(v, rel=1e-9)
        assert float(g["delta"]) == pytest.approx(option.delta(), rel=1e-9, abs=1e-12)
        assert float(g["gamma"]) == pytest.approx(option.gamma(), rel=1e-9, abs=1e-15)
        assert float(g["vega"]) == pytest.approx(option.vega(), rel=1e-9, abs=1e-12)
        assert float(g["rho"]) == pytest.approx(option.rho(), rel=1e-9, abs=1e-12)
        assert float(g["theta"]) == pytest.approx(option.theta(), rel=1e-9, abs=1e-9 * S)
    assert n_checked > 100


# ---------------------------------------------------------------------------------------------
# 4. finite differences and parity
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model,inverse", [("black76", False), ("bsm", False), ("black76", True)])
def test_greeks_match_central_finite_differences(model, inverse):
    rng = np.random.default_rng(3)
    n = 400
    F = np.exp(rng.uniform(0, np.log(1e5), n))
    K = F * np.exp(rng.uniform(-0.7, 0.7, n))
    T = np.exp(rng.uniform(np.log(0.02), np.log(3.0), n))
    sig = rng.uniform(0.1, 2.0, n)
    cp = rng.choice([-1.0, 1.0], n)
    r = rng.uniform(-0.02, 0.1, n)
    q = rng.uniform(-0.05, 0.1, n) if model == "bsm" else np.zeros(n)
    kw = dict(model=model, inverse=inverse, carry=q)

    def p(F=F, sig=sig, T=T, r=r):
        return price(F, K, sig, T, cp, rate=r, **kw)

    g = greeks(F, K, sig, T, cp, rate=r, **kw)
    hF, hs, hT, hr = 1e-4 * F, 1e-4, 1e-5 * T, 1e-5
    fd = {
        "delta": (p(F=F + hF) - p(F=F - hF)) / (2 * hF),
        "gamma": (p(F=F + hF) - 2 * p() + p(F=F - hF)) / hF**2,
        "vega": (p(sig=sig + hs) - p(sig=sig - hs)) / (2 * hs),
        "theta": -(p(T=T + hT) - p(T=T - hT)) / (2 * hT),
        "rho": (p(r=r + hr) - p(r=r - hr)) / (2 * hr),
        "volga": (p(sig=sig + hs) - 2 * p() + p(sig=sig - hs)) / hs**2,
        "vanna": (greeks(F, K, sig + hs, T, cp, rate=r, **kw)["delta"]
                  - greeks(F, K, sig - hs, T, cp, rate=r, **kw)["delta"]) / (2 * hs),
    }
    sc = scales(F * np.exp((r - q) * T) if model == "bsm" else F, inverse)
    for name, approx in fd.items():
        # FD truncation ~h^2 and rounding ~eps/h^2 for second differences: 1e-5 of the scale
        atol = 2e-5 * sc[name] * (1e2 if name in ("gamma", "volga") else 1.0)
        err = np.abs(g[name] - approx)
        bad = err > 2e-5 * np.abs(approx) + atol
        assert not bad.any(), (name, np.flatnonzero(bad)[:5], g[name][bad][:5], approx[bad][:5])


@pytest.mark.parametrize("model,inverse", [("black76", False), ("bsm", False), ("black76", True)])
def test_put_call_parity(model, inverse):
    F, K, sig, T, _, r, q = random_options(20000, seed=5, rates=True)
    if model == "black76":
        q = np.zeros_like(q)
    C = price(F, K, sig, T, "call", rate=r, carry=q, model=model, inverse=inverse)
    P = price(F, K, sig, T, "put", rate=r, carry=q, model=model, inverse=inverse)
    df = np.exp(-r * T)
    if model == "bsm":
        parity = F * np.exp(-q * T) - K * df
        size = F * np.exp(-q * T) + K * df
    else:
        parity = df * (F - K)
        size = df * (F + K)
    if inverse:
        parity, size = parity / F, size / F
    np.testing.assert_array_less(np.abs((C - P) - parity), 4 * EPS * size + 1e-300)


# ---------------------------------------------------------------------------------------------
# 5. inverse (coin-settled) contracts: hand-derived references
# ---------------------------------------------------------------------------------------------
def _black_by_hand(F, K, sig, T, cp):
    """Black-76 with math.erfc, written out for the hand-derived checks (moderate inputs only)."""
    s = sig * math.sqrt(T)
    d1 = math.log(F / K) / s + s / 2

    def N(z):
        return 0.5 * math.erfc(-z / math.sqrt(2))

    return cp * (F * N(cp * d1) - K * N(cp * (d1 - s)))


def test_inverse_option_coin_value_is_usd_value_over_forward():
    # a Deribit-style BTC option: forward 62,000 USD, strike 70,000, 30 days, vol 55 %
    F, K, sig, T = 62000.0, 70000.0, 0.55, 30 / 365
    for cp in (1, -1):
        usd = _black_by_hand(F, K, sig, T, cp)
        coin = float(price(F, K, sig, T, cp, inverse=True))
        assert coin == pytest.approx(usd / F, rel=1e-13)
        assert float(price(F, K, sig, T, cp)) == pytest.approx(usd, rel=1e-13)


def test_inverse_deep_itm_call_pnl_is_inverse_future_pnl():
    # at zero vol a long call has coin value (F - K)/F = 1 - K/F: moving the forward from F0 to F1
    # earns K (1/F0 - 1/F1) coins, the P&L of an inverse future of notional K USD
    K = 40000.0
    F0, F1 = np.array([50000.0, 61000.0, 45000.0]), np.array([55000.0, 48000.0, 90000.0])
    pnl = price(F1, K, 0.0, 0.25, "call", inverse=True) - price(F0, K, 0.0, 0.25, "call", inverse=True)
    np.testing.assert_allclose(pnl, K * (1 / F0 - 1 / F1), rtol=1e-12)
    # the same at expiry (T = 0: intrinsic value)
    pnl0 = price(F1, K, 0.3, 0.0, "call", inverse=True) - price(F0, K, 0.3, 0.0, "call", inverse=True)
    np.testing.assert_allclose(pnl0, K * (1 / F0 - 1 / F1), rtol=1e-12)


def test_inverse_greeks_relate_to_linear_greeks():
    # V = c F  =>  dV/dF = c + F dc/dF,  d2V/dF2 = 2 dc/dF + F d2c/dF2,  d2V/dF dvol = dc/dvol + F d2c/dF dvol
    F, K, sig, T, cp, r, _ = random_options(5000, seed=9, rates=True)
    lin = greeks(F, K, sig, T, cp, rate=r)
    inv = greeks(F, K, sig, T, cp, rate=r, inverse=True)
    tol = dict(rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(inv["price"] * F, lin["price"], rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(inv["price"] + F * inv["delta"], lin["delta"], **tol)
    np.testing.assert_allclose((2 * inv["delta"] + F * inv["gamma"]) * F, lin["gamma"] * F, **tol)
    np.testing.assert_allclose(inv["vega"] + F * inv["vanna"], lin["vanna"], **tol)
    for g in ("vega", "theta", "rho", "volga"):
        np.testing.assert_allclose(inv[g] * F, lin[g], rtol=1e-14, atol=1e-300, err_msg=g)


# ---------------------------------------------------------------------------------------------
# 6. properties (hypothesis)
# ---------------------------------------------------------------------------------------------
pos = dict(allow_nan=False, allow_infinity=False)
forwards = st.floats(1.0, 1e5, **pos)
moneyness = st.floats(0.1, 10.0, **pos)
vols = st.floats(0.05, 3.0, **pos)
times = st.floats(HOUR, 5.0, **pos)
rates = st.floats(-0.02, 0.1, **pos)
types = st.sampled_from([1.0, -1.0])


@settings(max_examples=300, deadline=None)
@given(forwards, moneyness, vols, times, types, rates, st.floats(1.0001, 1.5, **pos))
def test_monotone_in_forward_vol_and_strike(F, m, sig, T, cp, r, bump):
    K = F * m
    base = float(price(F, K, sig, T, cp, rate=r))
    tol = 8 * EPS * (F + K)
    up_F = float(price(F * bump, K * 1.0, sig, T, cp, rate=r))
    up_K = float(price(F, K * bump, sig, T, cp, rate=r))
    up_s = float(price(F, K, sig * bump, T, cp, rate=r))
    assert cp * (up_F - base) >= -tol * bump
    assert cp * (up_K - base) <= tol * bump
    assert up_s - base >= -tol


@settings(max_examples=300, deadline=None)
@given(forwards, moneyness, vols, times, rates, st.booleans())
def test_no_arbitrage_bounds(F, m, sig, T, r, inverse):
    K = F * m
    df = math.exp(-r * T)
    C = float(price(F, K, sig, T, "call", rate=r, inverse=inverse))
    P = float(price(F, K, sig, T, "put", rate=r, inverse=inverse))
    unit = F if inverse else 1.0
    tol = 8 * EPS * (F + K) / unit
    assert df * max(F - K, 0) / unit - tol <= C <= df * F / unit + tol
    assert df * max(K - F, 0) / unit - tol <= P <= df * K / unit + tol


@settings(max_examples=200, deadline=None)
@given(forwards, moneyness, vols, times, types, rates, st.floats(-0.05, 0.1, **pos))
def test_bsm_equals_black76_on_the_forward(S, m, sig, T, cp, r, q):
    K = S * m
    F = S * math.exp((r - q) * T)
    a = float(price(S, K, sig, T, cp, rate=r, carry=q, model="bsm"))
    b = float(price(F, K, sig, T, cp, rate=r))
    assert a == pytest.approx(b, rel=1e-13, abs=1e-15 * F)


# ---------------------------------------------------------------------------------------------
# 7. edge cases
# ---------------------------------------------------------------------------------------------
def test_expiry_and_zero_vol_give_discounted_intrinsic_value():
    F = np.array([100.0, 100.0, 80.0, 120.0])
    K = np.array([90.0, 110.0, 100.0, 100.0])
    cp = np.array([1.0, 1.0, -1.0, -1.0])
    intrinsic = np.maximum(cp * (F - K), 0.0)
    np.testing.assert_array_equal(price(F, K, 0.5, 0.0, cp), intrinsic)
    np.testing.assert_allclose(price(F, K, 0.0, 2.0, cp, rate=0.05), np.exp(-0.1) * intrinsic, rtol=1e-15)
    g = greeks(F, K, 0.5, 0.0, cp)
    for name in ("gamma", "vega", "vanna", "volga"):
        np.testing.assert_array_equal(g[name], 0.0)
    np.testing.assert_array_equal(g["delta"], np.where(intrinsic > 0, cp, 0.0))


def test_extreme_inputs_give_no_nan_or_overflow():
    # F and K anywhere in [1e-150, 1e150] (F**2 and K/F stay representable), any vol and time
    F = np.array([1e-8, 1e8, 1.0, 1.0, 1.0, 1.0, 1e150, 1e-150, 100.0, 100.0])
    K = np.array([1e8, 1e-8, 1e-12, 1e12, 1.0, 1.0, 1e-150, 1e150, 100.0, 100.0])
    sig = np.array([0.5, 0.5, 3.0, 3.0, 1e-12, 50.0, 1.0, 1.0, 1e-300, 1e6])
    T = np.array([1.0, 1.0, 5.0, 5.0, 1e-9, 100.0, 1.0, 1.0, 1.0, 1.0])
    for cp in (1.0, -1.0):
        for model, inverse in (("black76", False), ("bsm", False), ("black76", True)):
            # coin values scale like K/F and their F-derivatives like K/F**3: inverse options
            # skip the 1e150/1e-150 pairs whose true greeks exceed the double range
            m = [0, 1, 2, 3, 4, 5, 8, 9] if inverse else slice(None)
            g = greeks(F[m], K[m], sig[m], T[m], cp, rate=0.01, model=model, inverse=inverse)
            for name, arr in g.items():
                assert np.isfinite(arr).all(), (cp, model, inverse, name, arr)
            assert (g["price"] >= 0).all()
    # huge total vol: the call tends to F and the put to K
    c, p = price(100.0, 100.0, 1e6, 1.0, ["call", "put"])
    assert c == pytest.approx(100.0, rel=1e-15) and p == pytest.approx(100.0, rel=1e-15)


def test_tiny_time_value_is_accurate_not_zero():
    # far out of the money and short-dated: relative accuracy survives down to ~1e-300
    F, K, sig, T = 100.0, 400.0, 0.5, 0.01
    got = float(price(F, K, sig, T, "call"))
    ref = float(black_mp.price(F, K, sig, T, 1))
    assert 1e-300 < ref < 1e-20
    assert got == pytest.approx(ref, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# 8. API: threads, out=, broadcasting, immutability
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, dict(rate=0.03), dict(rate=0.03, carry=0.01, model="bsm"),
                                dict(inverse=True)])
def test_bit_identical_for_any_number_of_workers(kw):
    # 100,003 elements: several chunks whose boundaries are not multiples of the SIMD width
    F, K, sig, T, cp, _, _ = random_options(100_003, seed=13)
    p1 = price(F, K, sig, T, cp, workers=1, **kw)
    g1 = greeks(F, K, sig, T, cp, workers=1, **kw)
    for w in (2, 3):
        assert np.array_equal(p1.view(np.uint64), price(F, K, sig, T, cp, workers=w, **kw).view(np.uint64))
        gw = greeks(F, K, sig, T, cp, workers=w, **kw)
        for name in GREEK_NAMES:
            assert np.array_equal(g1[name].view(np.uint64), gw[name].view(np.uint64)), (w, name)


def test_result_does_not_depend_on_position_in_array():
    # the same options priced at every offset of a SIMD block give the same bits (the kernels run
    # blocks of a fixed size and cover the tail with an overlapping block, no scalar epilogue)
    F, K, sig, T, cp, _, _ = random_options(600, seed=17)
    ref = price(F, K, sig, T, cp)
    gref = greeks(F, K, sig, T, cp)
    for shift in (1, 3, 7, 8, 15, 16, 31, 63, 64, 65, 100):
        def pad(a, shift=shift):
            return np.concatenate([np.full(shift, a[0]), a])

        got = price(pad(F), pad(K), pad(sig), pad(T), pad(cp))[shift:]
        assert np.array_equal(got.view(np.uint64), ref.view(np.uint64)), shift
        g = greeks(pad(F), pad(K), pad(sig), pad(T), pad(cp))
        for name in GREEK_NAMES:
            assert np.array_equal(g[name][shift:].view(np.uint64), gref[name].view(np.uint64)), (shift, name)


def test_out_arrays_are_filled_and_returned():
    F, K, sig, T, cp, _, _ = random_options(1000, seed=19)
    buf = np.empty(1000)
    res = price(F, K, sig, T, cp, out=buf)
    assert res is buf
    np.testing.assert_array_equal(buf, price(F, K, sig, T, cp))
    d = np.empty(1000)
    g = greeks(F, K, sig, T, cp, out={"delta": d})
    assert g["delta"] is d
    with pytest.raises(InvalidInputError, match="out"):
        price(F, K, sig, T, cp, out=np.empty(999))
    with pytest.raises(InvalidTypeError, match="out"):
        price(F, K, sig, T, cp, out=np.empty(1000, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="unknown greek"):
        greeks(F, K, sig, T, cp, out={"charm": d})


def test_broadcasting_and_scalars():
    p = price(100.0, [[90.0], [110.0]], [0.2, 0.4, 0.6], 0.5, "call")
    assert p.shape == (2, 3)
    assert p[0, 0] == pytest.approx(float(price(100.0, 90.0, 0.2, 0.5, "c")), rel=0, abs=0)
    s = price(100.0, 100.0, 0.5, 1.0, "put")
    assert np.ndim(s) == 0
    assert price(100.0, 100.0, 0.5, 1.0, -1) == s
    assert price([], [], [], [], []).shape == (0,)


def test_inputs_are_never_mutated():
    F, K, sig, T, cp, r, q = random_options(5000, seed=23, rates=True)
    arrays = [F, K, sig, T, cp, r, q]
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.setflags(write=False)  # would raise if any code wrote into them
    price(F, K, sig, T, cp, rate=r, carry=q, model="bsm")
    greeks(F, K, sig, T, cp, rate=r, inverse=True)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------------------------
# 9. bad inputs, and proof that the SIMD build still sees NaN / inf / negatives
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg,value,pattern", [
    ("forward", np.nan, r"forward: must be finite and > 0, index 3 is nan"),
    ("forward", -1.0, r"forward: .* index 3 is -1.0"),
    ("strike", 0.0, r"strike: .* index 3 is 0.0"),
    ("strike", np.inf, r"strike: .* index 3 is inf"),
    ("vol", -0.1, r"vol: must be finite and >= 0, index 3 is -0.1"),
    ("vol", np.inf, r"vol: .* index 3 is inf"),
    ("time", -0.5, r"time: .* index 3 is -0.5 \(the option has expired\)"),
    ("time", np.nan, r"time: .* index 3 is nan"),
    ("rate", np.nan, r"rate: must be finite, index 3 is nan"),
    ("carry", -np.inf, r"carry: must be finite, index 3 is -inf"),
])
def test_bad_values_name_argument_and_index(arg, value, pattern):
    args = dict(forward=np.full(6, 100.0), strike=np.full(6, 100.0), vol=np.full(6, 0.5),
                time=np.full(6, 1.0), rate=np.zeros(6), carry=np.zeros(6))
    args[arg][3] = value
    kw = dict(rate=args.pop("rate"), carry=args.pop("carry"))
    for fn in (price, greeks):
        with pytest.raises(InvalidInputError, match=pattern):
            fn(args["forward"], args["strike"], args["vol"], args["time"], "call", **kw)


def test_bad_types_and_names():
    with pytest.raises(InvalidInputError, match=r"option_type: .* index 1 is 'straddle'"):
        price(100.0, 100.0, 0.5, 1.0, ["call", "straddle"])
    with pytest.raises(InvalidInputError, match=r"option_type: .* index 2 is 0.0"):
        price(100.0, 100.0, 0.5, 1.0, [1, -1, 0])
    with pytest.raises(InvalidTypeError, match="forward"):
        price(np.array([True]), 100.0, 0.5, 1.0, "call")
    with pytest.raises(InvalidTypeError, match="strike"):
        price(100.0, "100", 0.5, 1.0, "call")
    with pytest.raises(InvalidInputError, match="model"):
        price(100.0, 100.0, 0.5, 1.0, "call", model="heston")
    with pytest.raises(InvalidInputError, match="inverse=True needs model='black76'"):
        price(100.0, 100.0, 0.5, 1.0, "call", model="bsm", inverse=True)
    with pytest.raises(InvalidInputError, match="broadcast"):
        price(np.ones(3) * 100, np.ones(4) * 100, 0.5, 1.0, "call")
    with pytest.raises(ValueError, match="workers"):
        price(100.0, 100.0, 0.5, 1.0, "call", workers=0)


def test_simd_build_keeps_nan_inf_and_sign_checks():
    """The kernels are built with libmvec SIMD math and without -ffast-math: the vectorised input
    check must still see NaN, +-inf and negatives at every position of a SIMD block and in the
    tail, which -ffinite-math-only would let the compiler drop."""
    so = pathlib.Path(_black.__file__).read_bytes()
    if _black.HAVE_LIBMVEC and not getattr(_black, "DEBUG_BUILD", False):
        # the vector variants of glibc's math functions are really called (the -O0 debug build
        # does not vectorise)
        assert re.search(rb"_ZGV[a-z]N\d+v_(exp|erfc|log)", so)
    n = 37
    base = dict(F=np.full(n, 100.0), K=np.full(n, 90.0), s=np.full(n, 0.5), T=np.full(n, 1.0),
                cp=np.ones(n), r=np.zeros(n), q=np.zeros(n))
    assert _black.inputs_ok(*base.values())
    bad_values = {"F": [np.nan, np.inf, -np.inf, -1.0, 0.0], "K": [np.nan, np.inf, -2.0, 0.0],
                  "s": [np.nan, np.inf, -1e-300], "T": [np.nan, np.inf, -1e-300],
                  "cp": [np.nan, 0.0, 2.0], "r": [np.nan, np.inf], "q": [np.nan, -np.inf]}
    for name, values in bad_values.items():
        for v in values:
            for i in range(n):
                arrs = {k: a.copy() for k, a in base.items()}
                arrs[name][i] = v
                assert not _black.inputs_ok(*arrs.values()), (name, v, i)
    # and through the public API, with the SIMD kernel doing the check
    F = np.full(1000, 100.0)
    F[777] = np.nan
    with pytest.raises(InvalidInputError, match="index 777 is nan"):
        price(F, 100.0, 0.5, 1.0, "call")


_EXP_COUNTER_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
static long calls;
static double (*real_exp)(double);
double exp(double x)
{
    if (!real_exp) real_exp = (double (*)(double))dlsym(RTLD_NEXT, "exp");
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    return real_exp(x);
}
long dpm_scalar_exp_calls(void) { return calls; }
"""

_EXP_COUNTER_RUN = r"""
import ctypes, sys
import numpy as np
from dpm.pricing import greeks, price
lib = ctypes.CDLL(sys.argv[1])
lib.dpm_scalar_exp_calls.restype = ctypes.c_long
rng = np.random.default_rng(0)
n = 100_000  # short-dated (1 hour - 7 days), strikes 0.5-2x: most lanes far below exp's vector range
F = np.full(n, 60_000.0)
K = F * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
T = np.exp(rng.uniform(np.log(1 / 8760), np.log(7 / 365), n))
s = rng.uniform(0.3, 1.5, n)
cp = rng.choice([-1.0, 1.0], n)
out = np.empty(n)
c0 = lib.dpm_scalar_exp_calls()
price(F, K, s, T, cp, out=out, workers=1)
c1 = lib.dpm_scalar_exp_calls()
greeks(F, K, s, T, cp, workers=1)
c2 = lib.dpm_scalar_exp_calls()
print(c1 - c0, c2 - c1)
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
                    reason="glibc's libmvec on x86-64 only")
def test_vector_kernels_never_fall_back_to_scalar_exp(tmp_path):
    """Far out-of-the-money lanes (most of a short-dated book) must keep libmvec's vector ``exp``.
    Its lanes below exp's range each go to glibc's scalar ``exp``; the kernel clamps the argument
    (e^-708 at most, then counts the factor as 0), and a compiler that drops the clamp made such
    books 1.6x slower with the same bits. An LD_PRELOAD shim counts calls of the scalar ``exp``
    (libmvec reaches it through libm's PLT) while a short-dated book is priced."""
    if not _black.HAVE_LIBMVEC or getattr(_black, "DEBUG_BUILD", False):
        pytest.skip("needs the optimised build with libmvec (the debug build does not vectorise)")
    cpu = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path("/proc/cpuinfo").exists() else ""
    if " avx2" not in cpu:
        pytest.skip("the baseline clone calls the scalar exp by design")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the counting shim")
    src = tmp_path / "count_exp.c"
    src.write_text(_EXP_COUNTER_C)
    shim = tmp_path / "count_exp.so"
    subprocess.run([cc, "-O1", "-shared", "-fPIC", str(src), "-o", str(shim), "-ldl"], check=True, timeout=120)
    env = dict(os.environ, LD_PRELOAD=str(shim),
               PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", _EXP_COUNTER_RUN, str(shim)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    price_calls, greeks_calls = (int(v) for v in res.stdout.split())
    assert (price_calls, greeks_calls) == (0, 0)


def test_greeks_which_selects_outputs_and_the_lean_kernel_matches_the_full_one() -> None:
    rng = np.random.default_rng(42)
    n = 5000
    F = rng.uniform(50, 150, n)
    K = F * np.exp(rng.uniform(-2, 2, n))
    sig = rng.uniform(0.05, 3.0, n)
    T = rng.uniform(1 / 8760, 5, n)
    cp = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    for kw in ({}, {"inverse": True}, {"rate": 0.03}, {"model": "bsm", "rate": 0.02, "carry": 0.01}):
        full = greeks(F, K, sig, T, cp, **kw)
        lean = greeks(F, K, sig, T, cp, which=("price", "delta", "gamma", "vega", "theta"), **kw)
        assert set(lean) == {"price", "delta", "gamma", "vega", "theta"}
        for g, v in lean.items():
            np.testing.assert_array_equal(v, full[g])  # the same arithmetic, bit for bit
    only = greeks(F, K, sig, T, cp, which=["volga"])
    np.testing.assert_array_equal(only["volga"], greeks(F, K, sig, T, cp)["volga"])
    with pytest.raises(InvalidInputError, match="which"):
        greeks(F, K, sig, T, cp, which=["charm"])
    with pytest.raises(InvalidInputError, match="not computed"):
        greeks(F, K, sig, T, cp, which=["delta"], out={"gamma": np.empty(n)})


# ---------------------------------------------------------------------------------------------
# 10. out= sharing memory with an input (regression: the old kernels re-read overwritten inputs)
# ---------------------------------------------------------------------------------------------
def _aliasing_case(n, seed):
    rng = np.random.default_rng(seed)
    return dict(forward=np.linspace(90.0, 110.0, n), strike=rng.uniform(80.0, 120.0, n),
                vol=rng.uniform(0.05, 1.5, n), time=rng.uniform(0.01, 2.0, n))


@pytest.mark.parametrize("arg", ["forward", "strike", "vol", "time"])
def test_out_that_is_an_input_gives_the_same_prices(arg):
    for n in range(1, 301):
        case = _aliasing_case(n, n)
        expected = price(*(a.copy() for a in case.values()), "call")
        price(*case.values(), "call", out=case[arg])
        assert np.array_equal(case[arg], expected), (arg, n)


@pytest.mark.parametrize("arg", ["forward", "strike", "vol", "time", "rate", "carry"])
@pytest.mark.parametrize("shift", [-65, -3, -1, 1, 2, 64, 70])
def test_out_partially_overlapping_an_input_view(arg, shift):
    # out and the input are different views of one buffer, offset by `shift` elements
    for n in (1, 5, 63, 64, 65, 100, 129, 300):
        rng = np.random.default_rng(n)
        base = dict(forward=rng.uniform(90, 110, n), strike=rng.uniform(80, 120, n),
                    vol=rng.uniform(0.05, 1.5, n), time=rng.uniform(0.01, 2.0, n),
                    rate=rng.uniform(0.0, 0.05, n), carry=rng.uniform(0.0, 0.03, n))
        kw = dict(model="bsm")
        expected = price(base["forward"], base["strike"], base["vol"], base["time"], "put",
                         rate=base["rate"], carry=base["carry"], **kw)
        buf = np.zeros(n + abs(shift))
        lo_in, lo_out = (0, shift) if shift > 0 else (-shift, 0)
        buf[lo_in:lo_in + n] = base[arg]
        args = dict(base)
        args[arg] = buf[lo_in:lo_in + n]
        out = buf[lo_out:lo_out + n]
        res = price(args["forward"], args["strike"], args["vol"], args["time"], "put",
                    rate=args["rate"], carry=args["carry"], out=out, **kw)
        assert res is out
        assert np.array_equal(out, expected), (arg, shift, n)


def test_greeks_out_that_is_an_input():
    for n in (1, 63, 64, 65, 100, 200, 300):
        case = _aliasing_case(n, 7 * n)
        ref = greeks(*(a.copy() for a in case.values()), "put")
        for arg, g in (("forward", "delta"), ("strike", "price"), ("vol", "vega"), ("time", "theta"),
                       ("forward", "volga")):
            c = {k: v.copy() for k, v in case.items()}
            res = greeks(*c.values(), "put", out={g: c[arg]})
            assert res[g] is c[arg]
            for name in GREEK_NAMES:
                assert np.array_equal(res[name], ref[name]), (n, arg, g, name)


def test_bad_input_with_out_aliasing_an_input_leaves_it_untouched():
    F = np.linspace(90.0, 110.0, 200)
    K = np.full(200, 100.0)
    K[150] = -1.0
    before = F.copy()
    with pytest.raises(InvalidInputError, match="strike: .* index 150 is -1.0"):
        price(F, K, 0.5, 1.0, "call", out=F)
    np.testing.assert_array_equal(F, before)


def test_overlapping_greek_outputs_are_refused():
    buf = np.empty(100)
    with pytest.raises(InvalidInputError, match="overlap"):
        greeks(100.0, np.linspace(90, 110, 100), 0.5, 1.0, "call",
               out={"delta": buf, "gamma": buf})


def test_invalid_element_in_every_block_position_is_named():
    # the input check runs inside the kernel block by block (and in the padded tail)
    for n, i in ((70, 0), (70, 63), (70, 64), (70, 69), (1000, 777), (129, 128), (5, 4)):
        vol = np.full(n, 0.4)
        vol[i] = np.nan
        for fn in (price, greeks):
            with pytest.raises(InvalidInputError, match=f"vol: .* index {i} is nan"):
                fn(100.0, 100.0, vol, 1.0, "call")


# ---------------------------------------------------------------------------------------------
# 11. argument types: masked arrays, flags, out=
# ---------------------------------------------------------------------------------------------
def test_masked_arrays_are_refused_with_a_clear_error():
    m = np.ma.array([100.0, -1.0, 100.0], mask=[False, True, False])
    for name, args in (("forward", (m, 100.0, 0.5, 1.0, "call")),
                       ("strike", (100.0, m, 0.5, 1.0, "call")),
                       ("vol", (100.0, 100.0, np.ma.array([0.5, 0.5]), 1.0, "call")),
                       ("option_type", (100.0, 100.0, 0.5, 1.0, np.ma.array([1.0, -1.0])))):
        for fn in (price, greeks):
            with pytest.raises(InvalidTypeError, match=f"{name}: masked arrays are not supported"):
                fn(*args)


def test_inverse_must_be_a_real_bool():
    for bad in ("no", "False", 1, 0, np.array([True]), np.array(False), None):
        for fn in (price, greeks):
            with pytest.raises(InvalidTypeError, match="inverse: expected True or False"):
                fn(100.0, 100.0, 0.5, 1.0, "call", inverse=bad)
    a = float(price(100.0, 90.0, 0.5, 1.0, "call", inverse=np.bool_(True)))
    assert a == float(price(100.0, 90.0, 0.5, 1.0, "call", inverse=True))
    assert float(price(100.0, 90.0, 0.5, 1.0, "call", inverse=np.False_)) == pytest.approx(a * 100.0)


def test_greeks_out_must_be_a_mapping():
    with pytest.raises(InvalidTypeError, match="out: expected a dict mapping greek names"):
        greeks(100.0, np.full(3, 100.0), 0.5, 1.0, "call", out=np.empty(3))
    with pytest.raises(InvalidTypeError, match="out: must be a float64 numpy array"):
        price(100.0, np.full(3, 100.0), 0.5, 1.0, "call", out={"price": np.empty(3)})


# ---------------------------------------------------------------------------------------------
# 12. the vectorised accurate formulation (no scalar redo any more)
# ---------------------------------------------------------------------------------------------
def test_erfcx_polynomial_against_mpmath():
    mp = pytest.importorskip("mpmath")
    u = np.concatenate([[0.0, 1e-300, 1e-8], np.linspace(0.0, 30.0, 1501),
                        np.geomspace(30.0, 1e8, 200)])
    worst = 0.0
    with mp.workdps(30):
        for v in u:
            ref = mp.exp(mp.mpf(v) ** 2) * mp.erfc(mp.mpf(v)) if v < 1e4 else \
                (1 - 1 / (2 * mp.mpf(v) ** 2)) / (mp.sqrt(mp.pi) * v)
            worst = max(worst, abs(_black.erfcx(float(v)) - float(ref)) / float(ref))
    assert 0 < worst < 1e-15
    assert _black.erfcx(np.inf) == 0.0


@pytest.mark.parametrize("model,inverse,rates", [("black76", False, False), ("bsm", False, True),
                                                 ("black76", True, True)])
def test_short_dated_out_of_the_money_prices_match_mpmath(model, inverse, rates):
    """The mix that used to take the scalar extended-precision redo: expiries of 1 hour to 7 days,
    out-of-the-money strikes, vols 5 %-300 %: 1e-12 relative wherever the price exceeds 1e-10 F
    (and 1e-11 down to 1e-300 F, where only the absolute bound is promised)."""
    rng = np.random.default_rng(31)
    n = 3000
    F = np.exp(rng.uniform(0.0, np.log(1e5), n))
    K = F * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    T = np.exp(rng.uniform(np.log(HOUR), np.log(7 / 365), n))
    sig = rng.uniform(0.05, 3.0, n)
    r = rng.uniform(-0.02, 0.1, n) if rates else np.zeros(n)
    q = rng.uniform(-0.05, 0.1, n) if model == "bsm" else np.zeros(n)
    fwd = F * np.exp((r - q) * T) if model == "bsm" else F
    cp = np.where(K > fwd, 1.0, -1.0)
    ref = black_mp.price(F, K, sig, T, cp, r, q, model=model, inverse=inverse)
    got = price(F, K, sig, T, cp, rate=r, carry=q, model=model, inverse=inverse)
    unit = np.ones(n) if inverse else fwd
    big = np.abs(ref) > 1e-10 * unit
    tiny = (np.abs(ref) > 1e-300 * unit) & ~big
    rel = np.abs(got - ref) / np.where(ref != 0, np.abs(ref), 1.0)
    assert big.sum() > 1000 and tiny.sum() > 100
    assert rel[big].max() <= 1e-12
    assert rel[tiny].max() <= 1e-11
    assert (np.abs(got - ref)[~big] <= 1e-15 * unit[~big]).all()


def test_one_second_at_the_money_price():
    T = 1.0 / (365.25 * 86400)
    for sig in (0.05, 0.5, 3.0):
        for K in (100.0, 100.0 * (1 + 1e-9), 100.0 * (1 - 1e-7)):
            for cp in (1, -1):
                ref = float(black_mp.price(100.0, K, sig, T, cp))
                assert float(price(100.0, K, sig, T, cp)) == pytest.approx(ref, rel=1e-13, abs=0)


def test_series_and_erfcx_lanes_agree_at_the_switch():
    # either side of the series threshold t = s/2 = 0.1 (and |h| t = 0.72): both formulas are
    # accurate, so the price is continuous to 1e-14 relative
    F = 100.0
    for x in (0.0, -0.01, -0.3, -1.0):
        for t0 in (0.1, 0.72 / max(abs(x) / 0.2, 1e-9)):
            s = 2 * t0 * np.array([1 - 1e-12, 1.0, 1 + 1e-12])
            if not (0 < s[1] < 7):
                continue
            K = F * np.exp(-x)
            p = price(F, K, s, 1.0, "call")
            ref = np.array([float(black_mp.price(F, K, v, 1.0, 1)) for v in s])
            np.testing.assert_allclose(p, ref, rtol=1e-13, atol=0)


def test_plain_reference_kernel_is_the_textbook_formula():
    F, K, sig, T, cp, _, _ = random_options(2000, seed=41)
    keep = (np.abs(np.log(F / K)) < 0.5) & (T > 0.05)
    F, K, sig, T, cp = (a[keep].copy() for a in (F, K, sig, T, cp))
    outs = [np.empty(len(F)) for _ in range(5)]
    _black.plain_chunk(F, K, sig, T, cp, True, *outs)
    g = greeks(F, K, sig, T, cp)
    for got, name in zip(outs, ("price", "delta", "gamma", "vega", "theta")):
        np.testing.assert_allclose(got, g[name], rtol=1e-9, atol=1e-12 * F.max(), err_msg=name)


# ---------------------------------------------------------------------------------------------
# results that do not fit in a double: an error naming the element, never inf or NaN
# (found by the long fuzz profile: a put on a denormal forward, inverse, priced +inf)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn, args, kw, what, where", [
    (price, (5e-324, 1.0, 0.0, 0.0, "put"), dict(inverse=True), "price", "row 0"),
    (price, ([1.0, 2.0, 1e-310], 1.0, 0.5, 1.0, "put"), dict(inverse=True), "price", "row 2"),
    (greeks, ([1.0, 1e-200], 1.0, 0.5, 1.0, "call"), dict(inverse=True), "delta", "row 1"),
    (greeks, ([[100.0, 1e-310]], 1.0, 1e-300, 1.0, "call"), {}, "gamma", r"element \(0, 1\)"),
])
def test_results_that_overflow_raise_naming_the_element(fn, args, kw, what, where):
    with pytest.raises(InvalidInputError, match=rf"forward/strike: {where}: the {what} is not finite"):
        fn(*args, **kw)


def test_results_in_range_are_unaffected_by_the_finiteness_check():
    F = np.array([1e-100, 1.0, 1e100])
    p = price(F, F, 0.5, 1.0, "put", inverse=True)
    assert np.isfinite(p).all() and np.all(p > 0)
    g = greeks(F, F, 0.5, 1.0, "put")
    assert all(np.isfinite(v).all() for v in g.values())
