"""Benchmark: Monte Carlo ES (99 %, 10,000 joint BTC/ETH paths, full revaluation) for 10,000 accounts.

Problem: the bundled market (:func:`dpm.market.sample.default_market`) and listing
(:func:`dpm.market.sample.default_instruments`, 1,652 instruments), 10,000 generated accounts
(:func:`dpm.portfolio.sample.generate_accounts`, seed 0, ~385,000 positions), 10,000 one-day joint BTC/ETH
paths from :func:`dpm.models.generators.montecarlo.mc_scenarios` (Student t, 4 degrees of freedom, vols and
correlation of the last year of the bundled history, vol shocks from the fitted realised-vol proxy).

Timed: :meth:`dpm.engines.risk.ScenarioRiskEngine.var_es` at 1 and 2 workers, and in the same run
the same computation with numpy / scipy (``benchmarks/numpy_var_reference.py``). Peak memory of
each is measured in a fresh subprocess: the tracemalloc peak and the increase of the peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs`` after the setup) of the computation alone.

Run::

    python -m pytest benchmarks/bench_var.py --benchmark-only      # pytest-benchmark
    python benchmarks/bench_var.py [--repeat 7]                      # table for docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from numpy_var_reference import numpy_var_es

from dpm.engines.risk import ScenarioRiskEngine
from dpm.market import sample as sample_market
from dpm.portfolio import sample

N_ACCOUNTS = 10_000
N_PATHS = 10_000
LEVELS = (0.99,)


def make_scenarios(n_paths: int = N_PATHS, seed: int = 0) -> Any:
    """The benchmark's joint BTC/ETH Monte Carlo scenarios (1-day, Student t copula, vol shocks)."""
    from dpm.market.history import load_history
    from dpm.models.calibration.ranges import fit_vol_shock_proxy
    from dpm.models.generators.montecarlo import mc_scenarios

    r = load_history().log_returns(["BTC", "ETH"]).values
    proxy = fit_vol_shock_proxy(r, underlyings=("BTC", "ETH"))
    last = r[-365:]
    return mc_scenarios(vols=last.std(axis=0), corr=np.corrcoef(last.T), n_paths=n_paths,
                        dist="student_t", dof=4.0, seed=seed, underlyings=("BTC", "ETH"),
                        vol_proxy=proxy)


def make_problem(n_accounts: int = N_ACCOUNTS, n_paths: int = N_PATHS) -> dict[str, Any]:
    table = sample.default_instruments()
    market = sample_market.default_market()
    book = sample.generate_accounts(n_accounts, table, seed=0)
    return {"table": table, "market": market, "book": book, "scenarios": make_scenarios(n_paths),
            "engine": ScenarioRiskEngine(market, table)}


def run_dpm(p: dict[str, Any], workers: int) -> Any:
    return p["engine"].var_es(p["book"], p["scenarios"], LEVELS, workers=workers)


def run_numpy(p: dict[str, Any], timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    return numpy_var_es(p["market"], p["table"], p["book"], p["scenarios"], LEVELS, timings=timings)


def check_same(res: Any, ref: tuple[np.ndarray, np.ndarray]) -> float:
    """Largest VaR/ES difference relative to the account's ES (both computations agree)."""
    var, es = ref
    scale = 1.0 + np.abs(es)
    d = max(np.max(np.abs(res.var - var) / scale), np.max(np.abs(res.es - es) / scale))
    assert d < 1e-9, d
    return float(d)


# ------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _memory_child(which: str) -> None:
    import tracemalloc

    p = make_problem()
    if which.startswith("dpm"):
        run_dpm(p, 1)  # warm the thread pool and code paths
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so the peak
    # below is that of the computation alone (setup of the problem excluded)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status_kb("VmRSS")
    tracemalloc.start()
    t = time.perf_counter()
    if which == "dpm1":
        run_dpm(p, 1)
    elif which == "dpm2":
        run_dpm(p, 2)
    else:
        run_numpy(p)
    dt = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_kb("VmHWM")
    print(json.dumps({"which": which, "tracemalloc_peak_mb": peak / 2**20,
                      "rss_peak_increase_mb": (hwm - base) / 1024.0, "rss_before_mb": base / 1024.0,
                      "seconds_traced": dt}))


def measure_memory(which: str) -> dict[str, float]:
    """Peak memory of one computation, in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", which], check=True,
                         capture_output=True, text=True, cwd=str(ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- pytest-benchmark
try:
    import pytest
except ImportError:  # pragma: no cover - the script mode needs no pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="module")
    def problem() -> dict[str, Any]:
        return make_problem()

    @pytest.fixture(scope="module")
    def reference(problem: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return run_numpy(problem)

    @pytest.mark.parametrize("workers", [1, 2])
    def test_dpm_mc_es(benchmark: Any, problem: dict[str, Any], reference: Any, workers: int) -> None:
        benchmark.group = "MC ES 99% 10k accounts x 10k paths"
        benchmark.extra_info.update(n=N_ACCOUNTS, unit="account", impl="dpm", workers=workers)
        res = benchmark.pedantic(run_dpm, args=(problem, workers), rounds=5, warmup_rounds=1)
        benchmark.extra_info["max_err"] = check_same(res, reference)

    def test_numpy_reference_mc_es(benchmark: Any, problem: dict[str, Any]) -> None:
        benchmark.group = "MC ES 99% 10k accounts x 10k paths"
        benchmark.extra_info.update(n=N_ACCOUNTS, unit="account", impl="numpy/scipy", workers=1)
        timings: dict[str, float] = {}
        res = benchmark.pedantic(run_numpy, args=(problem, timings), rounds=3, warmup_rounds=0)
        benchmark.extra_info.update({f"last_{k}_s": v for k, v in timings.items()})
        check_same(run_dpm(problem, 2), res)

    @pytest.mark.parametrize("which", ["dpm2", "numpy"])
    def test_peak_memory(benchmark: Any, which: str) -> None:
        benchmark.group = "peak memory (subprocess)"
        mem = benchmark.pedantic(measure_memory, args=(which,), rounds=1, iterations=1)
        benchmark.extra_info.update(mem)
        if which == "dpm2":
            # revalued chunk (8 MB) + heaps (10,000 x 100 x 12 B) + results: bounded, not M x S or N x S
            assert mem["tracemalloc_peak_mb"] < 64, mem


# ------------------------------------------------------------------------------- script mode
def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{info['Model name'].strip()}, {info['CPU(s)'].strip()} CPUs, L2 {info.get('L2 cache', '?').strip()}"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-memory", action="store_true")
    a = ap.parse_args(argv)
    if a.memory_child:
        _memory_child(a.memory_child)
        return
    p = make_problem()
    ref_t: dict[str, list[float]] = {}
    t_np: list[float] = []
    t_dpm: dict[int, list[float]] = {1: [], 2: []}
    ref = None
    run_dpm(p, 1), run_dpm(p, 2)  # warm-up
    for _ in range(a.repeat):  # interleaved, so that machine load hits all alike
        for w in (1, 2):
            t = time.perf_counter()
            res = run_dpm(p, w)
            t_dpm[w].append(time.perf_counter() - t)
        if len(t_np) < max(3, a.repeat // 2):
            tm: dict[str, float] = {}
            t = time.perf_counter()
            ref = run_numpy(p, tm)
            t_np.append(time.perf_counter() - t)
            for k, v in tm.items():
                ref_t.setdefault(k, []).append(v)
    diff = check_same(res, ref)
    best = {w: min(v) for w, v in t_dpm.items()}
    med = {w: float(np.median(v)) for w, v in t_dpm.items()}
    npb = min(t_np)
    print(f"date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; CPU: {_cpu_model()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"accounts {len(p['book'])}, positions {p['book'].n_positions}, instruments {len(p['table'])}, "
          f"paths {len(p['scenarios'])}; max |diff| / (1 + |ES|) dpm vs numpy = {diff:.1e}")
    print("| computation | best (s) | median (s) | numpy / dpm (best) |")
    print("|---|---|---|---|")
    print(f"| numpy/scipy reference | {npb:.3f} | {np.median(t_np):.3f} | 1.0 |")
    print("|   reprice / aggregate / tail | " + " / ".join(f"{min(ref_t[k]):.3f}" for k in ("reprice", "aggregate", "tail")) + " | | |")
    for w in (1, 2):
        print(f"| dpm, {w} worker{'s' if w > 1 else ''} | {best[w]:.3f} | {med[w]:.3f} | {npb / best[w]:.1f} |")
    if not a.no_memory:
        for which in ("dpm1", "dpm2", "numpy"):
            m = measure_memory(which)
            print(f"memory {which}: tracemalloc peak {m['tracemalloc_peak_mb']:.1f} MB, "
                  f"peak RSS increase {m['rss_peak_increase_mb']:.1f} MB (RSS before {m['rss_before_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
