"""Why two workers price at less than twice the speed of one on some hosts: three probes in one run.

    python benchmarks/probe_two_workers.py            # about 30 s

1. **Compute alone.** Two Python threads each price their own 16,384 in-the-money options (0.9 MB
   of inputs, cache-resident) 400 times with ``workers=1`` into their own ``out=`` array: no shared
   data, no page faults, no thread pool, the GIL released inside the kernel. The aggregate speed-up
   over running the two loops one after the other is what the two CPUs give this SIMD
   floating-point code.
2. **Memory bandwidth.** ``np.multiply`` over 40 MB arrays (40 MB read + 40 MB written), two
   arrays each on one thread and on two threads (separate arrays).
3. **Fresh outputs.** ``price`` on 1,000,000 options at 1 and 2 workers, into a new output array
   (page faults on first touch) and into ``out=``.

On the 2-vCPU AMD EPYC (Zen 3, AVX2) guest of docs/benchmarks.md (2026-12-01, 23:00-23:10 UTC),
probe 1 gave 1.18-1.85x from one round to the next (seven rounds in two runs), with the two threads
together always at 17.6-22.8 ns/option while one thread alone moved between 24 and 36 ns: what the
two vCPUs give this code together is set by the host at the time (the guest reports two cores of one
thread each; the host's placement is not visible from inside). Probe 2: 14.5-17 GB/s with one thread
and the same with two, so memory bandwidth does not scale at all here, but pricing moves under
5 GB/s at two workers (56 bytes per option at 12 ns). Probe 3: fresh outputs cost the same as
``out=`` (22.7 / 12.2 ns against 22.5 / 11.7 ns), so page faults are not it either.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pricing import sample  # noqa: E402

from dpm.pricing import price  # noqa: E402


def serial_and_together(work, first: tuple, second: tuple) -> tuple[float, float]:
    """Seconds to run ``work(*first)`` and ``work(*second)`` one after the other, then on two threads."""
    t0 = time.perf_counter()
    work(*first)
    work(*second)
    serial = time.perf_counter() - t0
    threads = [threading.Thread(target=work, args=a) for a in (first, second)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return serial, time.perf_counter() - t0


def compute_alone(rounds: int, n: int = 16_384) -> tuple[float, float]:
    data = [sample("itm", n, seed=s) for s in (1, 2)]
    outs = [np.empty(n) for _ in range(2)]

    def loop(j: int) -> None:
        F, K, sig, T, cp = data[j]
        for _ in range(rounds):
            price(F, K, sig, T, cp, workers=1, out=outs[j])

    loop(0)  # warm-up
    serial, both = serial_and_together(loop, (0,), (1,))
    per = 2 * rounds * n
    return serial / per * 1e9, both / per * 1e9


def bandwidth(n: int = 5_000_000) -> tuple[float, float]:
    arrs = [np.random.default_rng(k).random(n) for k in range(4)]
    outs = [np.empty(n) for _ in range(4)]

    def work(i: int, j: int) -> None:
        np.multiply(arrs[i], 1.0001, out=outs[i])
        np.multiply(arrs[j], 1.0001, out=outs[j])

    work(0, 1)  # fault the outputs in
    work(2, 3)
    one, two = serial_and_together(work, (0, 1), (2, 3))
    moved = 2 * 2 * 2 * n * 8  # each call: two arrays read and written
    return moved / one / 1e9, moved / two / 1e9


def fresh_outputs(n: int = 1_000_000, rounds: int = 5) -> dict[tuple[int, str], float]:
    F, K, sig, T, cp = sample("itm", n)
    out = np.empty(n)
    best: dict[tuple[int, str], float] = {}
    for _ in range(rounds):
        for w in (1, 2):
            for mode in ("fresh", "out="):
                t0 = time.perf_counter()
                if mode == "fresh":
                    price(F, K, sig, T, cp, workers=w)
                else:
                    price(F, K, sig, T, cp, workers=w, out=out)
                ns = (time.perf_counter() - t0) / n * 1e9
                best[(w, mode)] = min(best.get((w, mode), ns), ns)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args()
    for r in range(args.repeat):
        s, b = compute_alone(args.rounds)
        print(f"[{r}] compute alone (cache-resident, 2 threads x workers=1): serial {s:.1f} ns/option, "
              f"both threads {b:.1f} ns/option aggregate -> {s / b:.2f}x")
        one, two = bandwidth()
        print(f"[{r}] memory bandwidth (np.multiply, 40 MB arrays): 1 thread {one:.1f} GB/s, "
              f"2 threads {two:.1f} GB/s -> {two / one:.2f}x")
    best = fresh_outputs()
    for mode in ("fresh", "out="):
        print(f"price of 1,000,000 options, {mode:5s}: 1 worker {best[(1, mode)]:.1f} ns, 2 workers "
              f"{best[(2, mode)]:.1f} ns -> {best[(1, mode)] / best[(2, mode)]:.2f}x")


if __name__ == "__main__":
    main()
