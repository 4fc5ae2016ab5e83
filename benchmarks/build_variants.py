"""Build dpm's pricing kernels several ways and time each: what runtime dispatch and libmvec buy.

    python benchmarks/build_variants.py [--n 1000000] [--n-iv 100000] [--json out.json]

Each variant is a fresh copy of setup.py, pyproject.toml and dpm/ in a temporary directory, built
with ``python setup.py build_ext --inplace`` under its own environment, then timed in a subprocess
(kernel calls on 1 and 2 workers, best and median of several rounds):

- ``portable``: the default build; GCC ``target_clones`` compiles the SIMD kernels for x86-64-v4
  (AVX-512), x86-64-v3 (AVX2+FMA) and baseline x86-64, and the loader picks the clone for the CPU;
- ``native``: ``DPM_NATIVE=1`` (``-march=native``, no clones);
- ``avx2``: only the x86-64-v3 code path (``-DDPM_NATIVE -march=x86-64-v3``), i.e. what the
  portable wheel runs on an AVX2 machine;
- ``baseline``: only the baseline x86-64 path (``-DDPM_NATIVE``), what it runs on an old CPU
  (scalar libm calls: libmvec has no SSE2 variants GCC uses here);
- ``no-simd``: ``-DDPM_NO_SIMD_MATH`` (no ``omp simd``, no libmvec declarations);
- ``no-fma``: the baseline path with ``-DDPM_FORCE_NO_FMA``: the kernels' exact products use
  Dekker's splitting instead of fma(), as on a CPU without FMA (checks that path's accuracy).

It prints a Markdown table (ns/option) and checks that every variant agrees with the portable one
to 1e-13 relative (the SIMD math functions round differently, so bits may differ between builds).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "portable": {},
    "native": {"DPM_NATIVE": "1"},
    "avx2": {"CFLAGS": "-DDPM_NATIVE -march=x86-64-v3"},
    "baseline": {"CFLAGS": "-DDPM_NATIVE"},
    "no-simd": {"CFLAGS": "-DDPM_NO_SIMD_MATH"},
    "no-fma": {"CFLAGS": "-DDPM_NATIVE -DDPM_FORCE_NO_FMA"},
}

TIMER = r'''
import json, sys, time
import numpy as np
from dpm._core import _black
from dpm._core import _implied
from dpm.pricing.black import price
n, n_iv, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(1)
F = np.full(n, 60_000.0)
K = F * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
T = rng.uniform(1 / 365, 1.0, n)
sig = rng.uniform(0.3, 1.5, n)
cp = np.where(rng.random(n) < 0.5, 1.0, -1.0)
e = np.empty(0)
fix = np.empty(n, np.uint8)
outs = [np.empty(n) for _ in range(8)]

def stats(fn, items):
    fn()
    ts = []
    for _ in range(rounds):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    ts.sort()
    return {"best": ts[0] / items * 1e9, "median": ts[len(ts) // 2] / items * 1e9}

res = {}
res["price"] = stats(lambda: _black.price_chunk(F, K, sig, T, cp, e, e, 0, 0, outs[0], fix, 0, n), n)
res["greeks"] = stats(lambda: _black.greeks_chunk(F, K, sig, T, cp, e, e, 0, 0, *outs, fix, 0, n), n)
res["price_api_w1"] = stats(lambda: price(F, K, sig, T, cp, workers=1, out=outs[0]), n)
res["price_api_w2"] = stats(lambda: price(F, K, sig, T, cp, workers=2, out=outs[0]), n)
P = price(F[:n_iv], K[:n_iv], sig[:n_iv], T[:n_iv], cp[:n_iv])
vol = np.empty(n_iv); flags = np.empty(n_iv, np.int8); it = np.empty(0, np.uint8)
res["implied_vol"] = stats(
    lambda: _implied.implied_chunk(P, F, K, T, cp, e, e, 0, 0, vol, flags, it, 0, n_iv), n_iv)
price(F, K, sig, T, cp, workers=1, out=outs[0])
np.save(sys.argv[4], outs[0])
res["libmvec"] = bool(_black.HAVE_LIBMVEC)
print(json.dumps(res))
'''


def build(name: str, env_extra: dict, workdir: Path) -> Path:
    dest = workdir / name
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "setup.py", dest)
    shutil.copy(ROOT / "pyproject.toml", dest)
    shutil.copytree(ROOT / "dpm", dest / "dpm",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("CFLAGS", "DPM_NATIVE", "DPM_DEBUG")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j", "2"],
                          cwd=dest, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build of {name} failed:\n{proc.stderr[-3000:]}")
    return dest


def time_variant(dest: Path, n: int, n_iv: int, rounds: int) -> tuple[dict, Path]:
    out = dest / "prices.npy"
    env = dict(os.environ, PYTHONPATH=str(dest))
    proc = subprocess.run([sys.executable, "-c", TIMER, str(n), str(n_iv), str(rounds), str(out)],
                          cwd=dest, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]), out


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-iv", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args(argv)

    results = {}
    with tempfile.TemporaryDirectory(prefix="dpm-variants-") as tmp:
        prices = {}
        for name in args.variants:
            dest = build(name, VARIANTS[name], Path(tmp))
            results[name], path = time_variant(dest, args.n, args.n_iv, args.rounds)
            prices[name] = np.load(path)
            print(f"built and timed {name}", file=sys.stderr)
        ref = prices[args.variants[0]]
        big = np.abs(ref) > 1e-10 * 60_000.0  # where the 1e-12 relative accuracy target applies
        for name in args.variants:
            rel = np.abs(prices[name] - ref)[big] / np.abs(ref[big])
            results[name]["max_rel_diff_vs_first"] = float(rel.max())
            results[name]["bit_identical_to_first"] = bool(np.array_equal(prices[name], ref))

    base = results[args.variants[0]]
    print("| build | price ns/option | price + 7 greeks ns/option | implied vol ns/option "
          "| price via API, 1 → 2 workers | max rel. diff vs portable (prices > 1e-10 F) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.variants:
        r = results[name]
        speed = r["price_api_w1"]["median"] / r["price_api_w2"]["median"]
        print(f"| {name} | {r['price']['median']:.2f} (best {r['price']['best']:.2f}) "
              f"| {r['greeks']['median']:.2f} (best {r['greeks']['best']:.2f}) "
              f"| {r['implied_vol']['median']:.0f} "
              f"| {r['price_api_w1']['median']:.2f} → {r['price_api_w2']['median']:.2f} ({speed:.2f}×) "
              f"| {r['max_rel_diff_vs_first']:.1e} |")
    print(f"\nprice kernel: no-simd / portable = "
          f"{results.get('no-simd', base)['price']['median'] / base['price']['median']:.1f}×"
          if "no-simd" in results else "")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
