"""Print the measured accuracy tables of docs/pricing.md (Markdown).

    python tests/reference/accuracy_report.py

Uses exactly the samples and criteria of tests/test_pricing.py (10,000 options against the
40-digit mpmath reference) and tests/test_implied.py (200,000 implied-vol round trips), so the
tables document what the tests check.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import test_implied as ti  # noqa: E402
import test_pricing as tp  # noqa: E402

from dpm._core import _implied  # noqa: E402
from dpm.pricing.black import price  # noqa: E402
from reference import black_mp  # noqa: E402


def pricing_table() -> str:
    sample = []
    for i, (name, model, inverse, rates, n) in enumerate(tp.GROUPS):
        F, K, sig, T, cp, r, q = tp.random_options(n, seed=100 + i, rates=rates)
        ref = black_mp.greeks(F, K, sig, T, cp, r, q, model=model, inverse=inverse)
        got = tp.greeks(F, K, sig, T, cp, rate=r, carry=q, model=model, inverse=inverse)
        fwd = F * np.exp((r - q) * T) if model == "bsm" else F
        sample.append(dict(name=name, model=model, inverse=inverse, F=F, K=K, sig=sig, T=T, cp=cp,
                           r=r, q=q, fwd=fwd, ref=ref, got=got))
    rows = tp.accuracy_table(sample)
    out = ["| group (options) | output | max rel. error (value > 1e-10 × scale) | "
           "max abs. error / scale (elsewhere) | cancellation allowance used |",
           "|---|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['group']} ({r['n']:,}) | {r['output']} | {r['max_rel']:.1e} | "
                   f"{r['max_small']:.1e} | {r['n_allowance']} |")
    return "\n".join(out)


def implied_tables() -> str:
    trips = [ti.round_trip(*grp, seed=200 + i) for i, grp in enumerate(ti.GROUPS)]
    out = ["| group | cases | informative | max abs. error (informative) | max rel. error | "
           "flag 0 / 2 / 3 |", "|---|---:|---:|---:|---:|---|"]
    worst = []
    for t in trips:
        m = t["informative"]
        f = t["flags"]
        out.append(f"| {t['name']} | {len(f):,} | {int(m.sum()):,} | {t['err'][m].max():.1e} | "
                   f"{(t['err'][m] / t['sig'][m]).max():.1e} | {int((f == 0).sum()):,} / "
                   f"{int((f == 2).sum()):,} / {int((f == 3).sum()):,} |")
        for i in np.argsort(np.where(m, t["err"], -1))[::-1][:4]:
            worst.append((t["err"][i], t["name"], t["F"][i], t["K"][i] / t["F"][i], t["T"][i],
                          t["sig"][i], "call" if t["cp"][i] > 0 else "put", t["P"][i]))
    worst.sort(reverse=True)
    out += ["", "Worst informative round trips:", "",
            "| group | F | K/F | T (years) | vol | type | price | abs. vol error |",
            "|---|---:|---:|---:|---:|---|---:|---:|"]
    for e, name, F, m, T, s, typ, P in worst[:10]:
        out.append(f"| {name} | {F:.6g} | {m:.4f} | {T:.3g} | {s:.4f} | {typ} | {P:.4g} | {e:.1e} |")
    # evaluation counts
    F, K, sig, T, cp, _, _ = ti.random_cases(50_000, 7, False)
    P = price(F, K, sig, T, cp)
    e = np.empty(0)
    vol = np.empty(len(F))
    flags = np.empty(len(F), np.int8)
    iters = np.zeros(len(F), np.uint8)
    _implied.implied_chunk(P, F, K, T, cp, e, e, 0, 0, vol, flags, iters, 0, len(F))
    normal = (flags == 0) & (P - np.maximum(cp * (F - K), 0) > 1e-290 * F)
    hist = np.bincount(iters[normal], minlength=7)
    out += ["", "Objective evaluations per option (50,000 random options with a normal time "
            "value; includes the evaluation at the inflection point):", "",
            "| evaluations | " + " | ".join(str(k) for k in range(2, len(hist))) + " |",
            "|---|" + "---:|" * (len(hist) - 2),
            "| share | " + " | ".join(f"{h / normal.sum():.1%}" for h in hist[2:]) + " |",
            "", f"mean {iters[normal].mean():.2f}, max {iters[normal].max()} "
            f"(hard cap {_implied.MAX_EVALS})."]
    return "\n".join(out)


def normalised_table() -> str:
    xs = np.concatenate([[0.0], -np.geomspace(1e-10, 5.0, 30)])
    ss = np.geomspace(5e-4, 7.0, 30)
    worst_rel, worst_vol, n = 0.0, 0.0, 0
    for x in xs:
        for s in ss:
            beta = float(black_mp.normalised_call(x, s))
            gam = float(black_mp.normalised_gap(x, s))
            if beta < 1e-290 or gam < 1e-290:
                continue
            n += 1
            s_hat, _ = _implied.normalised_implied(float(x), beta, gam)
            worst_rel = max(worst_rel, abs(s_hat - s) / s)
            worst_vol = max(worst_vol, abs(s_hat - s) / max(np.sqrt(ti.HOUR), s / 3.0))
    return (f"Normalised solver against 40-digit targets on a {len(xs)} × {len(ss)} grid "
            f"(x = ln(F/K) from 0 to -5, total vol s from 5e-4 to 7; {n} points with normal "
            f"targets): worst relative error in s {worst_rel:.1e}, worst vol error for the "
            f"shortest expiry consistent with s and vol <= 300 % {worst_vol:.1e}.")


if __name__ == "__main__":
    print("## Prices and greeks vs mpmath\n")
    print(pricing_table())
    print("\n## Implied vol round trips\n")
    print(implied_tables())
    print()
    print(normalised_table())
