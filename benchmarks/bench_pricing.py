"""Speed of dpm's pricing kernels against references measured in the same run.

Groups (``benchmark.group``):

- ``price``: dpm.price at 1 and 2 workers, a plain numpy + ``scipy.special.ndtr`` Black-76, and
  per-option loops of QuantLib's BlackCalculator and vollib's ``black``;
- ``greeks``: dpm.greeks (price and all 7 greeks) at 1 and 2 workers, and the numpy reference
  computing price, delta, gamma, vega and theta;
- ``implied_vol``: dpm.implied_vol at 1 and 2 workers, QuantLib ``blackFormulaImpliedStdDev``,
  ``py_lets_be_rational`` (Jaeckel's algorithm, pure Python) and vollib, per option.  Each records
  its worst absolute vol error on its sample in ``extra_info["max_err"]``.

Every benchmark stores its item count in ``extra_info["n"]``; ``benchmarks/report.py`` turns the
JSON of a run into the tables of docs/benchmarks.md.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import ndtr

from dpm.pricing.black import greeks, implied_vol, price

N_VECTOR = 1_000_000  # options per call for the vectorised implementations
N_IV = 100_000        # options for dpm.implied_vol
N_LOOP = 5_000        # options for the per-option Python loops (QuantLib, vollib)
N_LOOP_IV = 1_000


def sample(n: int, seed: int = 1):
    """Options as a BTC book looks: F = 60,000, strikes 0.5x-2x, 1 day to 1 year, vol 30%-150%."""
    rng = np.random.default_rng(seed)
    F = np.full(n, 60_000.0)
    K = F * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    T = rng.uniform(1 / 365, 1.0, n)
    sig = rng.uniform(0.3, 1.5, n)
    cp = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    return F, K, sig, T, cp


@pytest.fixture(scope="module")
def book():
    return sample(N_VECTOR)


@pytest.fixture(scope="module")
def iv_book():
    """N_IV options whose price determines the vol to 1e-13 (deep in-the-money options whose time
    value is lost in the price's rounding are dropped: no solver can recover their vol)."""
    F, K, sig, T, cp = sample(3 * N_IV, seed=2)
    g = greeks(F, K, sig, T, cp)
    time_value = g["price"] - np.maximum(cp * (F - K), 0.0)
    keep = (time_value > 0) & (32 * np.finfo(float).eps * g["price"] <= 1e-13 * g["vega"])
    idx = np.flatnonzero(keep)[:N_IV]
    assert len(idx) == N_IV
    return tuple(a[idx] for a in (F, K, sig, T, cp, g["price"]))


# ---------------------------------------------------------------------------------------------
# numpy + scipy.special.ndtr reference (what one would write without dpm)
# ---------------------------------------------------------------------------------------------
def numpy_price(F, K, sig, T, cp):
    s = sig * np.sqrt(T)
    d1 = np.log(F / K) / s + 0.5 * s
    d2 = d1 - s
    return cp * (F * ndtr(cp * d1) - K * ndtr(cp * d2))


def numpy_greeks(F, K, sig, T, cp):
    """price, delta, gamma, vega, theta (the five of the issue's target)."""
    sqT = np.sqrt(T)
    s = sig * sqT
    d1 = np.log(F / K) / s + 0.5 * s
    d2 = d1 - s
    n1 = ndtr(cp * d1)
    pdf = np.exp(-0.5 * d1 * d1) * (1 / math.sqrt(2 * math.pi))
    return {
        "price": cp * (F * n1 - K * ndtr(cp * d2)),
        "delta": cp * n1,
        "gamma": pdf / (F * s),
        "vega": F * pdf * sqT,
        "theta": -F * pdf * sig / (2 * sqT),
    }


def _run(benchmark, fn, n, rounds, group, unit="option", **extra):
    benchmark.group = group
    benchmark.extra_info.update(n=n, unit=unit, **extra)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


# ---------------------------------------------------------------------------------------------
# price
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_price_dpm(benchmark, book, workers):
    F, K, sig, T, cp = book
    out = np.empty(len(F))
    _run(benchmark, lambda: price(F, K, sig, T, cp, out=out, workers=workers), len(F), 30,
         "price", impl="dpm", workers=workers)
    np.testing.assert_allclose(out, numpy_price(F, K, sig, T, cp), rtol=1e-9, atol=1e-9 * F[0])


def test_price_numpy_reference(benchmark, book):
    _run(benchmark, lambda: numpy_price(*book), len(book[0]), 10, "price", impl="numpy+ndtr",
         workers=1)


def test_price_quantlib_loop(benchmark, book):
    ql = pytest.importorskip("QuantLib")
    F, K, sig, T, cp = (a[:N_LOOP] for a in book)
    stdev = sig * np.sqrt(T)
    types = [ql.Option.Call if c > 0 else ql.Option.Put for c in cp]

    def run():
        return [ql.BlackCalculator(ql.PlainVanillaPayoff(t, k), f, s, 1.0).value()
                for t, k, f, s in zip(types, K, F, stdev)]

    res = _run(benchmark, run, N_LOOP, 3, "price", impl="QuantLib BlackCalculator (loop)", workers=1)
    np.testing.assert_allclose(res, price(F, K, sig, T, cp), rtol=1e-9, atol=1e-9 * F[0])


def test_price_vollib_loop(benchmark, book):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        black_mod = pytest.importorskip("vollib.black")
    F, K, sig, T, cp = (a[:N_LOOP] for a in book)
    flags = ["c" if c > 0 else "p" for c in cp]

    def run():
        return [black_mod.black(fl, f, k, t, 0.0, s) for fl, f, k, t, s in zip(flags, F, K, T, sig)]

    res = _run(benchmark, run, N_LOOP, 3, "price", impl="vollib black (loop)", workers=1)
    np.testing.assert_allclose(res, price(F, K, sig, T, cp), rtol=1e-9, atol=1e-9 * F[0])


# ---------------------------------------------------------------------------------------------
# greeks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_greeks_dpm(benchmark, book, workers):
    F, K, sig, T, cp = book
    out = {g: np.empty(len(F)) for g in ("price", "delta", "gamma", "vega", "theta", "rho",
                                           "vanna", "volga")}
    _run(benchmark, lambda: greeks(F, K, sig, T, cp, out=out, workers=workers), len(F), 20,
         "greeks", impl="dpm (price + 7 greeks)", workers=workers)
    ref = numpy_greeks(F, K, sig, T, cp)
    np.testing.assert_allclose(out["vega"], ref["vega"], rtol=1e-9, atol=1e-9 * F[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_greeks5_dpm(benchmark, book, workers):
    """The issue's target set: price, delta, gamma, vega, theta (the lean kernel variant)."""
    F, K, sig, T, cp = book
    five = ("price", "delta", "gamma", "vega", "theta")
    out = {g: np.empty(len(F)) for g in five}
    _run(benchmark, lambda: greeks(F, K, sig, T, cp, out=out, which=five, workers=workers), len(F), 20,
         "greeks", impl="dpm (price, delta, gamma, vega, theta)", workers=workers)
    ref = numpy_greeks(F, K, sig, T, cp)
    np.testing.assert_allclose(out["theta"], ref["theta"], rtol=1e-9, atol=1e-9 * F[0])


def test_greeks_numpy_reference(benchmark, book):
    _run(benchmark, lambda: numpy_greeks(*book), len(book[0]), 8, "greeks",
         impl="numpy+ndtr (price + delta, gamma, vega, theta)", workers=1)


# ---------------------------------------------------------------------------------------------
# implied vol
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_implied_vol_dpm(benchmark, iv_book, workers):
    F, K, sig, T, cp, P = iv_book
    res = _run(benchmark, lambda: implied_vol(P, F, K, T, cp, workers=workers), len(F), 15,
               "implied_vol", impl="dpm", workers=workers)
    err = float(np.max(np.abs(res - sig)))
    benchmark.extra_info["max_err"] = err
    assert err < 1e-12


def test_implied_vol_quantlib_loop(benchmark, iv_book):
    ql = pytest.importorskip("QuantLib")
    F, K, sig, T, cp, P = (a[:N_LOOP_IV] for a in iv_book)
    types = [ql.Option.Call if c > 0 else ql.Option.Put for c in cp]

    def run():
        return [ql.blackFormulaImpliedStdDev(t, k, f, p, 1.0, 0.0, 0.5, 1e-14, 500) / math.sqrt(tt)
                for t, k, f, p, tt in zip(types, K, F, P, T)]

    res = _run(benchmark, run, N_LOOP_IV, 3, "implied_vol",
               impl="QuantLib blackFormulaImpliedStdDev (loop)", workers=1)
    benchmark.extra_info["max_err"] = float(np.max(np.abs(np.array(res) - sig)))


def test_implied_vol_lets_be_rational_loop(benchmark, iv_book):
    lbr = pytest.importorskip("py_lets_be_rational")
    F, K, sig, T, cp, P = (a[:N_LOOP_IV] for a in iv_book)

    def run():
        return [lbr.implied_volatility_from_a_transformed_rational_guess(p, f, k, t, c)
                for p, f, k, t, c in zip(P, F, K, T, cp)]

    res = _run(benchmark, run, N_LOOP_IV, 3, "implied_vol",
               impl="py_lets_be_rational (Jaeckel, pure Python, loop)", workers=1)
    benchmark.extra_info["max_err"] = float(np.max(np.abs(np.array(res) - sig)))


def test_implied_vol_vollib_loop(benchmark, iv_book):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        iv_mod = pytest.importorskip("vollib.black.implied_volatility")
    F, K, sig, T, cp, P = (a[:N_LOOP_IV] for a in iv_book)
    flags = ["c" if c > 0 else "p" for c in cp]

    def run():
        return [iv_mod.implied_volatility(p, f, k, 0.0, t, fl)
                for p, f, k, t, fl in zip(P, F, K, T, flags)]

    res = _run(benchmark, run, N_LOOP_IV, 3, "implied_vol", impl="vollib (loop)", workers=1)
    benchmark.extra_info["max_err"] = float(np.max(np.abs(np.array(res) - sig)))
