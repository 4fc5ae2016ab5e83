"""Benchmark: reverse stress and the solvency report for 100,000 accounts.

Problem: the bundled market and listing (:func:`dpm.market.sample.default_market`,
:func:`dpm.market.sample.default_instruments`, 1,652 instruments), 100,000 generated accounts
(:func:`dpm.portfolio.sample.generate_accounts`, seed 1, ~3.8 M positions), the dpm_default margin
model, the bundled history's EWMA covariance of BTC/ETH price and vol moves
(:meth:`StressSpace.from_history`), two workers.

Timed (wall and process CPU, median of ``--repeat`` runs, each from a built engine and exposure):

* ``reverse``: :meth:`SolvencyEngine.reverse_stress` for every account (certified to rtol 1 %);
* ``brute reference``: what a hand-written reverse stress does, in the same run: one revaluation of
  20 directions x 19 radii (380 joint moves of BTC/ETH price and vol, Mahalanobis) for every account
  (``account_pnl``), each account's distance = the smallest grid move that exhausts it. Its answers
  are compared with the certified search (how far above they are);
* ``report``: :meth:`SolvencyEngine.run` of the 7 named historical stresses (move, margin in the
  stressed market, close-out with partial liquidation, waterfall), Deribit policy, fund 30 M USD;
  also with ``remargin=False`` (maintenance margin before the move);
* ``venue reverse``: :meth:`SolvencyEngine.venue_reverse_stress` (fund 30 M USD);
* ``margin_many``: the margin of the same book, as the machine's yardstick.

Run::

    python benchmarks/bench_solvency.py [--accounts 100000] [--repeat 3] [--json out.json]
    python -m pytest benchmarks/bench_solvency.py --benchmark-only     # pytest-benchmark, 10,000 accounts
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpm.engines.solvency import SolvencyEngine, StressSpace  # noqa: E402
from dpm.market.sample import default_instruments, default_market  # noqa: E402
from dpm.models.generators.stress import historical_stress_scenarios  # noqa: E402
from dpm.portfolio.sample import generate_accounts  # noqa: E402

WORKERS = 2
FUND = 30e6


def setup(n: int, seed: int = 1, remargin: bool = True) -> dict[str, Any]:
    market, table = default_market(), default_instruments()
    book = generate_accounts(n, table, seed=seed)
    eng = SolvencyEngine(market, table, workers=WORKERS, remargin=remargin)
    ex = eng.exposure(book)
    space = StressSpace.from_history()
    scen = historical_stress_scenarios(underlyings=("BTC", "ETH", "USDT"))
    return dict(market=market, table=table, book=book, engine=eng, exposure=ex, space=space, scenarios=scen)


def brute_reverse(ctx: dict[str, Any], n_dir: int = 20, n_rad: int = 19, r_max: float = 40.0) -> np.ndarray:
    """The hand-written reference: min distance over a fixed grid of joint moves (no refinement)."""
    space, ex, eng = ctx["space"], ctx["exposure"], ctx["engine"].risk_engine
    from scipy.special import ndtri
    from scipy.stats import qmc

    # directions on the Mahalanobis unit sphere of all four factors
    u = ndtri(np.clip(qmc.Sobol(4, scramble=True, seed=3).random(32)[:n_dir], 1e-9, 1 - 1e-9))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    d = u @ np.linalg.cholesky(space.cov).T
    radii = 0.25 * (r_max / 0.25) ** (np.arange(n_rad) / (n_rad - 1))
    z = (radii[None, :, None] * d[:, None, :]).reshape(-1, 4)
    z = z[(z > space.floor).all(axis=1)]
    sset = space.scenario_set(z)
    dist = space.mahalanobis(z)
    out = np.full(len(ex), np.inf)
    for a0 in range(0, len(ex), 8192):
        idx = np.arange(a0, min(len(ex), a0 + 8192))
        loss = -(eng.account_pnl(ex.book.subset(idx), sset) + ex.collateral_pnl(space.underlyings, sset.price_move, idx))
        hit = loss >= ex.equity[idx, None]
        out[idx] = np.where(hit.any(axis=1), np.where(hit, dist[None, :], np.inf).min(axis=1), np.inf)
    return out


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus)), out


def machine() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    except OSError:  # pragma: no cover
        model = platform.processor()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return f"{model}, {len(__import__('os').sched_getaffinity(0))} CPUs, {platform.python_version()}, " \
           f"numpy {np.__version__}, load average {' '.join(load)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ctx = setup(args.accounts)
    eng, ex, space, scen = ctx["engine"], ctx["exposure"], ctx["space"], ctx["scenarios"]
    rows: dict[str, tuple[float, float]] = {}
    rows["margin_many (yardstick)"] = timed(lambda: eng.margin_engine.margin_many(ex.book), args.repeat)[:2]
    w, c, rev = timed(lambda: eng.reverse_stress(ex, space), args.repeat)
    rows["reverse stress, every account"] = (w, c)
    w, c, brute = timed(lambda: brute_reverse(ctx), args.repeat)
    rows["brute reference (380 joint moves)"] = (w, c)
    w, c, run = timed(lambda: eng.run(ex, scen, FUND), args.repeat)
    rows["solvency run, 7 named stresses"] = (w, c)
    parts = run.timings
    eng2 = SolvencyEngine(ctx["market"], ctx["table"], workers=WORKERS, remargin=False)
    rows["solvency run, 7 stresses, remargin=False"] = timed(lambda: eng2.run(ex, scen, FUND), args.repeat)[:2]
    w, c, venue = timed(lambda: eng.venue_reverse_stress(ex, FUND, space), 1)
    rows["venue reverse stress (fund 30 M USD)"] = (w, c)
    fin = np.isfinite(rev.distance) & (rev.distance > 0)
    both = fin & np.isfinite(brute)
    ratio = brute[both] / rev.distance[both]
    acc = {
        "accounts": len(ex), "positions": int(ex.book.n_positions),
        "exhausted_within_search": int(np.isfinite(rev.distance).sum()),
        "certified": float(rev.certified.mean()),
        "median_distance": float(np.median(rev.distance[fin])),
        "brute_missed": int((fin & ~np.isfinite(brute)).sum()),
        "brute_over_certified_median": float(np.median(ratio)), "brute_over_certified_p90": float(
            np.percentile(ratio, 90)),
        "brute_below_certified": int((ratio < 1 / 1.01 - 1e-12).sum()),
        "venue_distance": float(venue.distance), "venue_move": space.describe(venue.move[None, :])[0],
        "venue_evaluations": int(venue.evaluations),
        "report_breakdown_s": {k: round(v, 3) for k, v in parts.items()},
    }
    print(f"machine: {machine()}")
    print(f"{args.accounts:,} accounts, {ex.book.n_positions:,} positions, {WORKERS} workers, median of {args.repeat}\n")
    print("| what | wall s | CPU s (both threads) | wall / margin_many |")
    print("|---|---:|---:|---:|")
    base = rows["margin_many (yardstick)"][0]
    for k, (w, c) in rows.items():
        print(f"| {k} | {w:.3f} | {c:.3f} | {w / base:.1f} |")
    print()
    print(json.dumps(acc, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows, "accuracy": acc}, indent=1))
    return 0


# ------------------------------------------------------------------ pytest-benchmark (10,000 accounts)
def _ctx():
    if not hasattr(_ctx, "c"):
        _ctx.c = setup(10_000)
    return _ctx.c


def test_reverse_stress(benchmark):
    c = _ctx()
    benchmark.extra_info.update(n=len(c["exposure"]), unit="account")
    benchmark.pedantic(lambda: c["engine"].reverse_stress(c["exposure"], c["space"]), rounds=3)


def test_solvency_run(benchmark):
    c = _ctx()
    benchmark.extra_info.update(n=len(c["exposure"]), unit="account")
    benchmark.pedantic(lambda: c["engine"].run(c["exposure"], c["scenarios"], FUND), rounds=3)


if __name__ == "__main__":
    sys.exit(main())
