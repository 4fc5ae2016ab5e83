"""Shared machinery of the fuzz suite (``tests/fuzz``): profiles, the outcome rule, statistics.

Every fuzz target feeds adversarial input to one public entry point and calls :func:`attempt`,
which enforces the suite's property:

* the call returns a result, or raises a :class:`dpm.errors.DPMError` whose message names the
  field (one of the names the target passes);
* any other exception is a **crash**, a call that runs past the watchdog a **hang**, and a changed
  input (array or file) or a result that fails the target's oracle a **wrong number**; each fails
  the test (hypothesis then shrinks the input and prints it).

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default; each target runs its ``ci`` number of inputs,
a few seconds) and ``long`` (each target runs its ``long`` number; the suite totals over a million).
``DPM_FUZZ_SCALE`` multiplies the ``long`` numbers; ``DPM_FUZZ_STATS=path`` writes the per-target
counts as JSON when the session ends (``tests/fuzz/run_long.py`` does both).

Adding a target::

    @fuzz("engine.margin_many", ci=50, long=50_000)
    @given(book=books())
    def test_margin_many_fails_closed(book):
        res = attempt("engine.margin_many", lambda: engine.margin_many(book), fields=("quantity",),
                      inputs=(book.quantity,))
        if res is not None:
            oracle("engine.margin_many", np.isfinite(res.initial_margin).all(), "non-finite margin")
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings

from dpm.errors import DPMError

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"
SCALE = float(os.environ.get("DPM_FUZZ_SCALE", "1"))
#: Byte-level variants tried per generated file: hypothesis builds the structure, a fast mutator
#: derives further inputs from it (1 = only the generated file).
VARIANTS = int(os.environ.get("DPM_FUZZ_VARIANTS", "1" if PROFILE == "ci" else "12"))
#: Seconds one call may take before it counts as a hang.
HANG_SECONDS = float(os.environ.get("DPM_FUZZ_HANG_SECONDS", "30"))

_BASE = dict(
    deadline=None,  # timing is the watchdog's job: a loaded 2-core machine makes deadlines flaky
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture, HealthCheck.large_base_example],
    print_blob=True,
)

#: Counts per target: tried, ok, dpm_error, crash, hang, wrong.
STATS: dict[str, Counter] = defaultdict(Counter)
#: The first failure of each kind per target (for the runner's report).
FAILURES: dict[str, list[str]] = defaultdict(list)


class Hang(Exception):
    """A call ran past :data:`HANG_SECONDS`."""


class FuzzFailure(AssertionError):
    """The property failed: a crash, a hang, a missing field name, or a wrong number."""


def fuzz(target: str, *, ci: int, long: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Settings of a fuzz target: ``ci`` inputs in the ci profile, ``long`` (times the scale) otherwise."""
    n = ci if PROFILE == "ci" else max(1, int(long * SCALE))
    STATS[target]  # noqa: B018 - list the target even if no input reaches it
    apply = settings(max_examples=n, **_BASE)

    def decorate(test: Callable[..., Any]) -> Callable[..., Any]:
        if not hasattr(test, "hypothesis"):  # placed above something other than @given: it would do nothing
            raise TypeError(f"fuzz({target!r}) must decorate a @given test, not {test!r}")
        return apply(test)

    return decorate


@contextlib.contextmanager
def watchdog(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM; POSIX main thread only)."""
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _snapshot(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return ("array", x.dtype, x.shape, x.copy())
    if isinstance(x, Path):
        return ("file", x.read_bytes() if x.exists() else None)
    return ("object", copy.deepcopy(x))


def _unchanged(x: Any, snap: Any) -> bool:
    kind = snap[0]
    if kind == "array":
        _, dtype, shape, data = snap
        if x.dtype != dtype or x.shape != shape:
            return False
        if dtype.kind == "f" or dtype.kind == "c":
            return bool(np.array_equal(x, data, equal_nan=True))
        return bool(np.array_equal(x, data)) if dtype.kind != "O" else x.tolist() == data.tolist()
    if kind == "file":
        return (x.read_bytes() if x.exists() else None) == snap[1]
    try:
        return bool(x == snap[1])
    except Exception:  # objects without a usable ==: only arrays and files are compared
        return True


def _fail(target: str, kind: str, message: str) -> FuzzFailure:
    STATS[target][kind] += 1
    if len(FAILURES[target]) < 5:
        FAILURES[target].append(f"{kind}: {message}")
    return FuzzFailure(f"[{target}] {kind}: {message}")


def attempt(target: str, call: Callable[[], Any], *, fields: Iterable[str], inputs: Iterable[Any] = (),
            seconds: float = HANG_SECONDS, describe: str = "") -> Any:
    """Run ``call`` under the suite's property; return its result, or None after a dpm error.

    ``fields``: words of which a dpm error message must contain at least one (field names, the file
    name); ``inputs``: arrays, paths (their bytes) or plain objects that must be unchanged afterwards;
    ``describe``: the input, for the failure message when hypothesis did not generate it directly.
    """
    try:
        return _attempt(target, call, fields, inputs, seconds)
    except FuzzFailure as exc:
        if describe:
            raise FuzzFailure(f"{exc}\n  input: {describe}") from exc.__cause__
        raise


_TOKENS = [b'"', b",", b"\n", b"\r", b"\r\n", b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xe9", b"nan", b"inf", b"-",
           b"1e400", b"=", b"'", b"{", b"}", b"[", b"]", b":", b"null", b"NaN", b"9" * 30, b" ", b"\t", b"PAR1"]


def variants(data: bytes, seed: int, k: int | None = None) -> Iterator[bytes]:
    """``data`` and ``k - 1`` byte-level mutations of it (flips, interesting tokens, deletions, splices)."""
    k = VARIANTS if k is None else k
    yield data
    rng = random.Random(seed)
    for _ in range(k - 1):
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            n = len(b)
            op = rng.randrange(5)
            i = rng.randrange(n + 1)
            if op == 0 and n:
                b[min(i, n - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                b[i:i] = rng.choice(_TOKENS)
            elif op == 2 and n:
                del b[i:i + rng.randint(1, 8)]
            elif op == 3 and n:
                j = rng.randrange(n)
                b[i:i] = b[j:j + rng.randint(1, 16)]
            elif n:
                b[min(i, n - 1)] = rng.choice(b'",\n\r\x00;=-+9e.\xff ')
        yield bytes(b)


def attempt_file(target: str, path: Path, data: bytes, seed: int, call: Callable[[], Any], *,
                 fields: Iterable[str], inputs: Iterable[Any] = ()) -> list[Any]:
    """:func:`attempt` on ``data`` and its :func:`variants`, each written to ``path``; the results."""
    out = []
    fields = tuple(fields)
    for v in variants(data, seed):
        path.write_bytes(v)
        out.append(attempt(target, call, fields=fields, inputs=[path, *inputs], describe=repr(v[:400])))
    return out


def _attempt(target: str, call: Callable[[], Any], fields: Iterable[str], inputs: Iterable[Any],
             seconds: float) -> Any:
    inputs = list(inputs)
    snaps = [_snapshot(x) for x in inputs]
    STATS[target]["tried"] += 1
    t0 = time.perf_counter()
    result = None
    try:
        with watchdog(seconds):
            result = call()
    except Hang as exc:
        raise _fail(target, "hang", str(exc)) from None
    except DPMError as exc:
        msg = str(exc)
        names = [str(f) for f in fields]
        if not msg or not any(f in msg for f in names):
            raise _fail(target, "crash", f"{type(exc).__name__} names none of {names}: {msg!r}") from exc
        STATS[target]["dpm_error"] += 1
    except MemoryError as exc:
        raise _fail(target, "crash", f"MemoryError: {exc}") from exc
    except Exception as exc:
        raise _fail(target, "crash", f"{type(exc).__name__}: {exc}") from exc
    else:
        STATS[target]["ok"] += 1
    finally:
        STATS[target]["seconds"] += time.perf_counter() - t0
        _flush_now()
    for x, snap in zip(inputs, snaps):
        if not _unchanged(x, snap):
            raise _fail(target, "wrong", f"the call changed its input {type(x).__name__}")
    return result


def oracle(target: str, condition: Any, message: str) -> None:
    """A check of a result (round trip, invariant, reference value): failure counts as a wrong number."""
    if not condition:
        raise _fail(target, "wrong", message)


def no_crash(target: str, condition: Any, message: str) -> None:
    """A check that the call did not fail in a way it must not (an internal error, a traceback)."""
    if not condition:
        raise _fail(target, "crash", message)


_STATS_PATH = os.environ.get("DPM_FUZZ_STATS")
_last_flush = [time.monotonic()]


def _flush_now() -> None:
    """Write the statistics every 20 s, so that a run stopped by a time bound still reports."""
    if _STATS_PATH and time.monotonic() - _last_flush[0] > 20:
        _last_flush[0] = time.monotonic()
        write_stats(_STATS_PATH)


def write_stats(path: str | os.PathLike) -> None:
    """Counts per target (and the first failures) as JSON."""
    data = {t: {**{k: (round(v, 3) if isinstance(v, float) else v) for k, v in c.items()},
                "failures": FAILURES.get(t, [])} for t, c in sorted(STATS.items())}
    Path(path).write_text(json.dumps({"profile": PROFILE, "scale": SCALE, "targets": data}, indent=1))
