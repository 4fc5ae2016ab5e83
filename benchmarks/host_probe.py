"""How much of a second core the host gives right now, for floating-point work.

``fp_ceiling()`` times the same FMA-saturating loop (``dpm._core._black.fp_probe``: 64 independent
multiply-adds per round, no memory traffic, GIL released) on one thread and on two threads at once;
the ratio ``2 t1 / t2`` is the 2-thread speed-up the host allows at that moment (2.0 on two free
physical cores; about 1.0 when the two vCPUs of a VM share one physical core's FMA units or one
vCPU is taken by another guest). Benchmarks print it next to their own 2-worker ratios: a kernel
cannot scale past it. (The SHA-256 ceiling of ``bench_end_to_end.machine_ceiling`` uses the SHA
units instead, which the pricing kernels do not.)

    python benchmarks/host_probe.py            # ten probes, one line each
"""
from __future__ import annotations

import threading
import time

from dpm._core import _black


def _calibrate(seconds: float) -> int:
    n = 100_000
    while True:
        t0 = time.perf_counter()
        _black.fp_probe(n)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4:
            return max(1, int(n * seconds / dt))
        n *= 4


def fp_ceiling(seconds: float = 0.1, iterations: int | None = None) -> float:
    """The 2-thread FP-throughput speed-up of the host now (best of two tries of each)."""
    n = iterations or _calibrate(seconds)

    def one() -> float:
        t0 = time.perf_counter()
        _black.fp_probe(n)
        return time.perf_counter() - t0

    def two() -> float:
        threads = [threading.Thread(target=_black.fp_probe, args=(n,)) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    t1 = min(one(), one())
    t2 = min(two(), two())
    return 2.0 * t1 / t2


if __name__ == "__main__":
    print(" ".join(f"{fp_ceiling():.2f}" for _ in range(10)))
