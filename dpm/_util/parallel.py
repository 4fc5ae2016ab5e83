"""One helper that splits a range of rows into chunks over a thread pool.

The kernels release the GIL, so Python threads run them in parallel. Every kernel computes each row
(an option, an instrument, an account) on its own, in a fixed order, by the one thread that owns
it, so where the chunk boundaries fall never changes a result: results are bit-identical for every
number of workers (tests check it), while the chunk size may follow the worker count.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from dpm.errors import InvalidInputError, InvalidTypeError

__all__ = ["resolve_workers", "chunk_bounds", "run_bounds", "run_chunked", "start_beside"]

_POOLS: dict[int, ThreadPoolExecutor] = {}


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """Number of threads for ``workers`` (scipy convention).

    ``None`` or ``-1``: all usable cores; ``k > 0``: ``k`` threads; ``0`` or other negatives: error.
    """
    if workers is None:
        return _cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, (int,)) and not hasattr(workers, "__index__"):
        raise InvalidTypeError(f"workers: expected an int or None, got {type(workers).__name__}")
    workers = int(workers)
    if workers == -1:
        return _cpu_count()
    if workers <= 0:
        raise InvalidInputError(f"workers: must be None, -1 or a positive int, got {workers}")
    return workers


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """Fixed ``[start, stop)`` chunks of ``range(n)`` of size ``chunk`` (last one shorter)."""
    chunk = max(1, int(chunk))
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def _pool(k: int) -> ThreadPoolExecutor:
    pool = _POOLS.get(k)
    if pool is None:
        pool = _POOLS.setdefault(k, ThreadPoolExecutor(max_workers=k, thread_name_prefix="dpm"))
    return pool


def run_bounds(
    fn: Callable[[int, int], object],
    bounds: Sequence[tuple[int, int]],
    workers: int | None,
) -> list[object]:
    """Call ``fn(start, stop)`` for every range of ``bounds`` on ``workers`` threads.

    With one worker, or a single range, everything runs in the calling thread. Otherwise the
    calling thread and ``workers - 1`` pool threads take ranges from a shared queue until none is
    left (so exactly ``workers`` threads run, and a thread slowed down by the rest of the machine
    simply takes fewer ranges). Returns ``fn``'s results in range order; the first exception raised
    by a range is re-raised after the running ranges finish.
    """
    k = resolve_workers(workers)
    if k == 1 or len(bounds) <= 1:
        return [fn(s, e) for s, e in bounds]
    results: list[object] = [None] * len(bounds)
    errors: list[BaseException] = []
    lock = threading.Lock()
    next_range = iter(range(len(bounds)))

    def drain() -> None:
        while True:
            with lock:
                if errors:
                    return
                j = next(next_range, None)
            if j is None:
                return
            try:
                results[j] = fn(*bounds[j])
            except Exception as exc:  # noqa: BLE001 - re-raised in the calling thread
                with lock:
                    errors.append(exc)
                return

    helpers = min(k, len(bounds)) - 1
    pool = _pool(helpers)
    futures = [pool.submit(drain) for _ in range(helpers)]
    drain()
    for f in futures:
        f.result()
    if errors:
        raise errors[0]
    return results


def run_chunked(
    fn: Callable[[int, int], object],
    n: int,
    workers: int | None,
    min_chunk: int = 4096,
    chunks_per_worker: int = 1,
) -> list[object]:
    """Call ``fn(start, stop)`` over chunks of ``range(n)`` on ``workers`` threads (:func:`run_bounds`).

    ``fn`` must compute each row independently of the chunk boundaries (all dpm kernels do: one
    option, one instrument or one account per row, reduced sequentially by the thread that owns it),
    so results are bit-identical for every ``workers``. Chunks hold at least ``min_chunk`` rows;
    ``chunks_per_worker > 1`` evens out rows of unequal cost.
    """
    k = resolve_workers(workers)
    if n <= 0:
        return []
    chunk = max(int(min_chunk), -(-n // (k * max(1, int(chunks_per_worker)))))
    return run_bounds(fn, chunk_bounds(n, chunk), k)


def start_beside(fn: Callable[[], object], workers: int | None) -> Callable[[], None]:
    """Start ``fn()`` on ``workers - 1`` pool threads now; returns ``join()``, which runs ``fn()`` on
    the calling thread too and then waits for the pool threads.

    For work the caller overlaps with its own Python: ``fn`` drains a shared queue of ranges
    without the GIL (``MarginJob.run_shared``), so the pool threads work while the caller runs
    Python, and the caller takes what is left when it joins. Returns once every helper has
    entered ``fn`` (a helper still waiting for the GIL would otherwise wait for the caller's next
    thread switch, up to ``sys.getswitchinterval()``). ``join`` must be called, also when the
    caller's own work fails: until then the helpers may still write to ``fn``'s outputs.
    """
    k = resolve_workers(workers)
    helpers = k - 1
    futures = []
    if helpers > 0:
        started = [threading.Event() for _ in range(helpers)]

        def helper(ev: threading.Event) -> object:
            ev.set()
            return fn()

        pool = _pool(helpers)
        futures = [pool.submit(helper, ev) for ev in started]
        for ev in started:
            ev.wait()

    def join() -> None:
        try:
            fn()
        finally:
            for f in futures:
                f.result()

    return join
