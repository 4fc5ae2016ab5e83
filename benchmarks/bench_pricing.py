"""Speed of dpm's pricing kernels on realistic input mixes, against references run in the same session.

Two ways to run it:

- pytest-benchmark (JSON for ``benchmarks/report.py``)::

      python -m pytest benchmarks/bench_pricing.py --benchmark-only --benchmark-json=bench.json

- script mode, one Markdown table per computation with every mix, the references of the same run
  and the ratios (what ``docs/benchmarks.md`` shows)::

      python benchmarks/bench_pricing.py [--n 1000000] [--n-iv 100000] [--rounds 7]

Mixes (1,000,000 options each unless ``--n``; calls and puts):

- ``whole``: the accuracy sample of the tests (F 1-1e5, K/F 0.1-10, T 1 hour-5 years log-uniform,
  vol 5-300 %);
- ``chain``: shaped like the bundled Deribit BTC chain (``dpm/data/deribit_btc_options_2020-05-14.csv``,
  310 options, 7 expiries from 2 hours to 7.5 months): each option is a random row of the chain
  with its expiry, moneyness and mark vol jittered (T x e^{N(0, 0.1)}, ln K/F + N(0, 0.02),
  vol x e^{N(0, 0.05)});
- ``otm`` / ``itm``: out-of-the-money / in-the-money only, T log-uniform 1 day-1 year, K/F 0.5-2,
  vol 30-150 %;
- ``short``: T log-uniform 1 hour-7 days, K/F 0.5-2, vol 30-150 %;
- ``logT``: the same book with both sides, T log-uniform 1 day-1 year;
- ``friendly``: the old sample (T uniform 1 day-1 year: few short-dated options).

References in the same run: a numpy + ``scipy.special.ndtr`` Black-76 and a plain SIMD C loop of
the textbook formula over glibc's libmvec (``dpm._core._black.plain_chunk``: what a hand-written
vectorised kernel without accuracy safeguards costs).  Implied vols: dpm on ``--n-iv`` options of
the chain book, against py_vollib (Jaeckel's "Let's be rational", per option) on 2,000 of them.
Times are per option, through the public API on preallocated outputs (``out=``), best of
``--rounds`` calls (the machine may be shared; the best run is the least disturbed one).
Next to each mix's "2 vs 1" the script prints the host's floating-point 2-thread ceiling measured
just before that mix (``benchmarks/host_probe.py``: an FMA-saturating loop on 1 and 2 threads): a
kernel cannot scale past what the host gives the second thread at that moment.
"""
from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from host_probe import fp_ceiling
from scipy.special import ndtr

from dpm._core import _black
from dpm.pricing.black import greeks, implied_vol, price

ROOT = Path(__file__).resolve().parents[1]
CHAIN_CSV = ROOT / "dpm" / "data" / "deribit_btc_options_2020-05-14.csv"
HOUR = 1.0 / 8760.0
DAY = 1.0 / 365.0
FIVE = ("price", "delta", "gamma", "vega", "theta")
MIXES = ("whole", "chain", "otm", "itm", "short", "logT", "friendly")
N_VECTOR = 1_000_000
N_IV = 100_000
N_LOOP_IV = 2_000


# ---------------------------------------------------------------------------------------------
# input mixes
# ---------------------------------------------------------------------------------------------
def _chain_rows():
    import csv

    with open(CHAIN_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    T = np.array([(float(r["expiration_timestamp"]) - float(r["timestamp"])) / (365.25 * 86400e3)
                  for r in rows])
    m = np.array([float(r["strike"]) / float(r["underlying_price"]) for r in rows])
    vol = np.array([float(r["mark_iv"]) / 100.0 for r in rows])
    cp = np.array([1.0 if r["option_type"] == "call" else -1.0 for r in rows])
    return T, m, vol, cp


def sample(mix: str, n: int, seed: int = 1):
    """``F, K, sig, T, cp`` of ``n`` options of one mix (see the module docstring)."""
    rng = np.random.default_rng(seed)
    if mix == "whole":
        F = np.exp(rng.uniform(0.0, np.log(1e5), n))
        K = F * np.exp(rng.uniform(np.log(0.1), np.log(10.0), n))
        T = np.exp(rng.uniform(np.log(HOUR), np.log(5.0), n))
        return F, K, rng.uniform(0.05, 3.0, n), T, rng.choice([-1.0, 1.0], n)
    if mix == "chain":
        Tc, mc, vc, cc = _chain_rows()
        i = rng.integers(0, len(Tc), n)
        F = np.full(n, 9350.0) * np.exp(rng.normal(0.0, 0.01, n))
        K = F * mc[i] * np.exp(rng.normal(0.0, 0.02, n))
        T = Tc[i] * np.exp(rng.normal(0.0, 0.1, n))
        return F, K, vc[i] * np.exp(rng.normal(0.0, 0.05, n)), T, cc[i]
    F = np.full(n, 60_000.0)
    K = F * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    sig = rng.uniform(0.3, 1.5, n)
    if mix == "friendly":
        T = rng.uniform(DAY, 1.0, n)
    elif mix == "short":
        T = np.exp(rng.uniform(np.log(HOUR), np.log(7 * DAY), n))
    else:
        T = np.exp(rng.uniform(np.log(DAY), 0.0, n))
    if mix == "otm":
        cp = np.where(K > F, 1.0, -1.0)
    elif mix == "itm":
        cp = np.where(K > F, -1.0, 1.0)
    else:
        cp = rng.choice([-1.0, 1.0], n)
    return F, K, sig, T, cp


def iv_book(n: int, seed: int = 2):
    """Chain-shaped options whose price determines the vol to 1e-13 (deep in-the-money options
    whose time value is lost in the price's rounding are dropped: no solver recovers them)."""
    F, K, sig, T, cp = sample("chain", 3 * n, seed)
    g = greeks(F, K, sig, T, cp, which=("price", "vega"))
    tv = g["price"] - np.maximum(cp * (F - K), 0.0)
    keep = (tv > 1e-250 * F) & (32 * np.finfo(float).eps * g["price"] <= 1e-13 * g["vega"])
    idx = np.flatnonzero(keep)[:n]
    return tuple(a[idx] for a in (F, K, sig, T, cp, g["price"]))


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------
def numpy_price(F, K, sig, T, cp):
    s = sig * np.sqrt(T)
    d1 = np.log(F / K) / s + 0.5 * s
    return cp * (F * ndtr(cp * d1) - K * ndtr(cp * (d1 - s)))


def numpy_greeks(F, K, sig, T, cp):
    """price, delta, gamma, vega, theta (textbook formulas, numpy + ndtr)."""
    sqT = np.sqrt(T)
    s = sig * sqT
    d1 = np.log(F / K) / s + 0.5 * s
    n1 = ndtr(cp * d1)
    pdf = np.exp(-0.5 * d1 * d1) * (1 / math.sqrt(2 * math.pi))
    return {"price": cp * (F * n1 - K * ndtr(cp * (d1 - s))), "delta": cp * n1,
            "gamma": pdf / (F * s), "vega": F * pdf * sqT, "theta": -F * pdf * sig / (2 * sqT)}


_E = np.empty(0)


def plain_price(F, K, sig, T, cp, out):
    _black.plain_chunk(F, K, sig, T, cp, False, out, _E, _E, _E, _E)


def plain_greeks(F, K, sig, T, cp, outs):
    _black.plain_chunk(F, K, sig, T, cp, True, *outs)


def vollib_iv():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from py_vollib.black.implied_volatility import implied_volatility
        except ImportError:
            return None
    return implied_volatility


# ---------------------------------------------------------------------------------------------
# pytest-benchmark
# ---------------------------------------------------------------------------------------------
_CACHE: dict = {}


def _mix(mix):
    if mix not in _CACHE:
        _CACHE[mix] = sample(mix, N_VECTOR)
    return _CACHE[mix]


def _run(benchmark, fn, n, rounds, group, **extra):
    benchmark.group = group
    benchmark.extra_info.update(n=n, unit="option", **extra)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("workers", [1, 2])
def test_price_dpm(benchmark, mix, workers):
    F, K, sig, T, cp = _mix(mix)
    out = np.empty(len(F))
    _run(benchmark, lambda: price(F, K, sig, T, cp, out=out, workers=workers), len(F), 15,
         f"price {mix}", impl="dpm", workers=workers, mix=mix)
    ok = np.abs(out) > 1e-10 * F
    np.testing.assert_allclose(out[ok], numpy_price(F, K, sig, T, cp)[ok], rtol=1e-6)


@pytest.mark.parametrize("mix", MIXES)
def test_price_references(benchmark, mix):
    F, K, sig, T, cp = _mix(mix)
    out = np.empty(len(F))
    _run(benchmark, lambda: plain_price(F, K, sig, T, cp, out), len(F), 15, f"price {mix}",
         impl="plain SIMD loop (libmvec)", workers=1, mix=mix)


@pytest.mark.parametrize("mix", MIXES)
def test_price_numpy(benchmark, mix):
    F, K, sig, T, cp = _mix(mix)
    _run(benchmark, lambda: numpy_price(F, K, sig, T, cp), len(F), 5, f"price {mix}",
         impl="numpy+ndtr", workers=1, mix=mix)


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("workers", [1, 2])
def test_greeks5_dpm(benchmark, mix, workers):
    F, K, sig, T, cp = _mix(mix)
    out = {g: np.empty(len(F)) for g in FIVE}
    _run(benchmark, lambda: greeks(F, K, sig, T, cp, which=FIVE, out=out, workers=workers),
         len(F), 10, f"greeks {mix}", impl="dpm (price, delta, gamma, vega, theta)",
         workers=workers, mix=mix)


@pytest.mark.parametrize("mix", MIXES)
def test_greeks5_references(benchmark, mix):
    F, K, sig, T, cp = _mix(mix)
    outs = [np.empty(len(F)) for _ in FIVE]
    _run(benchmark, lambda: plain_greeks(F, K, sig, T, cp, outs), len(F), 10, f"greeks {mix}",
         impl="plain SIMD loop (libmvec)", workers=1, mix=mix)
    _CACHE.setdefault("np5", {})[mix] = True


@pytest.mark.parametrize("mix", MIXES)
def test_greeks5_numpy(benchmark, mix):
    F, K, sig, T, cp = _mix(mix)
    _run(benchmark, lambda: numpy_greeks(F, K, sig, T, cp), len(F), 4, f"greeks {mix}",
         impl="numpy+ndtr", workers=1, mix=mix)


@pytest.fixture(scope="module")
def ivb():
    return iv_book(N_IV)


@pytest.mark.parametrize("workers", [1, 2])
def test_implied_vol_dpm(benchmark, ivb, workers):
    F, K, sig, T, cp, P = ivb
    res = _run(benchmark, lambda: implied_vol(P, F, K, T, cp, workers=workers), len(F), 10,
               "implied_vol chain", impl="dpm", workers=workers)
    benchmark.extra_info["max_err"] = float(np.max(np.abs(res - sig)))
    assert benchmark.extra_info["max_err"] < 1e-12


def test_implied_vol_vollib(benchmark, ivb):
    iv = vollib_iv()
    if iv is None:
        pytest.skip("py_vollib not installed")
    F, K, sig, T, cp, P = (a[:N_LOOP_IV] for a in ivb)
    flags = ["c" if c > 0 else "p" for c in cp]

    def run():
        return [iv(p, f, k, 0.0, t, fl) for p, f, k, t, fl in zip(P, F, K, T, flags)]

    res = _run(benchmark, run, N_LOOP_IV, 3, "implied_vol chain", impl="py_vollib (loop)", workers=1)
    benchmark.extra_info["max_err"] = float(np.max(np.abs(np.array(res) - sig)))


# ---------------------------------------------------------------------------------------------
# script mode
# ---------------------------------------------------------------------------------------------
def best_ns(fn, n, rounds):
    fn()
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts) / n * 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N_VECTOR)
    ap.add_argument("--n-iv", type=int, default=N_IV)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--mixes", nargs="*", default=list(MIXES))
    args = ap.parse_args(argv)
    n, r = args.n, args.rounds
    rows = {"price": [], "greeks": []}
    for mix in args.mixes:
        F, K, sig, T, cp = sample(mix, n)
        out = np.empty(n)
        outs = {g: np.empty(n) for g in FIVE}
        lst = list(outs.values())
        # interleave the implementations round by round so that a disturbance hits all of them
        t = {k: [] for k in ("p1", "p2", "pp", "pn", "g1", "g2", "gp", "gn")}
        fns = {"p1": lambda: price(F, K, sig, T, cp, out=out, workers=1),
               "p2": lambda: price(F, K, sig, T, cp, out=out, workers=2),
               "pp": lambda: plain_price(F, K, sig, T, cp, out),
               "pn": lambda: numpy_price(F, K, sig, T, cp),
               "g1": lambda: greeks(F, K, sig, T, cp, which=FIVE, out=outs, workers=1),
               "g2": lambda: greeks(F, K, sig, T, cp, which=FIVE, out=outs, workers=2),
               "gp": lambda: plain_greeks(F, K, sig, T, cp, lst),
               "gn": lambda: numpy_greeks(F, K, sig, T, cp)}
        for f in fns.values():
            f()
        ceiling = fp_ceiling()  # what the host gives a second thread right now
        for i in range(r):
            for k, f in fns.items():
                if k in ("pn", "gn") and i >= max(2, r // 2):
                    continue
                t0 = time.perf_counter()
                f()
                t[k].append(time.perf_counter() - t0)
        b = {k: min(v) / n * 1e9 for k, v in t.items()}
        rows["price"].append((mix, b["p1"], b["p2"], b["pp"], b["pn"], ceiling))
        rows["greeks"].append((mix, b["g1"], b["g2"], b["gp"], b["gn"], ceiling))
    for what, title in (("price", "price"), ("greeks", "price, delta, gamma, vega, theta")):
        if not rows[what]:  # --mixes with no mix: implied vol only
            continue
        worst = max(rows[what], key=lambda x: x[1])
        fastest = min(rows[what], key=lambda x: x[1])
        print(f"\n**{title}** (ns/option, best of {r}; worst mix: {worst[0]} {worst[1]:.1f} ns, "
              f"slowest/fastest mix {worst[1] / fastest[1]:.2f}x)\n")
        print("| mix | dpm 1 worker | dpm 2 workers | 2 vs 1 | host FP ceiling | plain SIMD loop | dpm / plain | "
              "numpy + ndtr | numpy / dpm |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for mix, d1, d2, pl, npy, ceil in rows[what]:
            print(f"| {mix} | {d1:.1f} | {d2:.1f} | {d1 / d2:.2f}x | {ceil:.2f}x | {pl:.1f} | {d1 / pl:.2f} | "
                  f"{npy:.1f} | {npy / d1:.1f}x |")
    # why 2 workers do (not) scale here: CPU time against wall time.  If the 2-worker run uses the
    # same CPU time as the 1-worker run but does not halve the wall time, its threads waited for a
    # CPU (another process holds the second core), not for memory.
    import os
    import resource

    F, K, sig, T, cp = sample("chain", n)
    out = np.empty(n)
    print("\n**2-worker diagnosis** (chain mix, price; CPU time = user + system of this process)\n")
    print("| workers | wall ns/option | CPU ns/option | CPU / wall | load average at start |")
    print("|---:|---:|---:|---:|---|")
    for w in (1, 2):
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        best = None
        for _ in range(r):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            price(F, K, sig, T, cp, out=out, workers=w)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            if best is None or wall < best[0]:
                best = (wall, cpu)
        print(f"| {w} | {best[0] / n * 1e9:.1f} | {best[1] / n * 1e9:.1f} | {best[1] / best[0]:.2f} | {load} |")
    F, K, sig, T, cp, P = iv_book(args.n_iv)
    m = len(F)
    d1 = best_ns(lambda: implied_vol(P, F, K, T, cp, workers=1), m, r)
    d2 = best_ns(lambda: implied_vol(P, F, K, T, cp, workers=2), m, r)
    err = float(np.max(np.abs(implied_vol(P, F, K, T, cp) - sig)))
    print(f"\n**implied vol, chain-shaped book** ({m:,} options; max abs. vol error {err:.1e})\n")
    print("| implementation | workers | ns/option | max abs. error |")
    print("|---|---:|---:|---:|")
    print(f"| dpm | 1 | {d1:.1f} | {err:.1e} |")
    print(f"| dpm | 2 | {d2:.1f} ({d1 / d2:.2f}x) | |")
    iv = vollib_iv()
    if iv is not None:
        k = min(N_LOOP_IV, m)
        flags = ["c" if c > 0 else "p" for c in cp[:k]]
        args_ = list(zip(P[:k], F[:k], K[:k], T[:k], flags))
        res = []
        v = best_ns(lambda: res.append([iv(p, f, kk, 0.0, t, fl) for p, f, kk, t, fl in args_]),
                    k, 2)
        e2 = float(np.max(np.abs(np.array(res[-1]) - sig[:k])))
        print(f"| py_vollib (loop, {k:,} options) | 1 | {v:,.0f} | {e2:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
