"""Input checks that must hold before any ``nogil`` kernel runs.

Each check raises an error naming the argument, the first offending index and the value.
Inputs are never modified: conversions copy when the dtype or layout must change.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError

__all__ = [
    "check_memory",
    "memory_limit",
    "as_float_array",
    "as_int_array",
    "first_bad_index",
    "check_finite",
    "check_positive",
    "check_nonnegative",
    "check_same_length",
    "check_index_range",
    "describe_index",
]


def describe_index(index: tuple[int, ...] | int, labels: Any = None) -> str:
    """Human-readable location of a bad element (``index 3`` or ``row 'BTC-PERPETUAL'``)."""
    if labels is not None:
        try:
            i = index if isinstance(index, int) else index[0]
            return f"row {i} ({labels[i]!r})"
        except (IndexError, TypeError, KeyError):
            pass
    if isinstance(index, tuple):
        index = index[0] if len(index) == 1 else index
    return f"index {index}"


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 ndarray (a new array if any conversion is needed; never a view to mutate).

    Booleans, strings, objects and complex numbers are rejected with :class:`InvalidTypeError`.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise InvalidTypeError(f"{name}: cannot convert to a float array ({exc})") from None
    kind = arr.dtype.kind
    if kind == "b" or kind not in "fiu":
        raise InvalidTypeError(
            f"{name}: expected real numbers, got an array of dtype {arr.dtype}"
        )
    return arr.astype(np.float64, copy=False)


def as_int_array(x: Any, name: str, dtype: Any = np.int64) -> np.ndarray:
    """``x`` as an integer ndarray; floats that are whole numbers are accepted, others rejected."""
    arr = np.asarray(x)
    if arr.dtype.kind in "iu":
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = first_bad_index(bad)
            raise InvalidInputError(f"{name}: expected integers, {describe_index(i)} is {arr[i]!r}")
        return arr.astype(dtype)
    raise InvalidTypeError(f"{name}: expected integers, got an array of dtype {arr.dtype}")


def first_bad_index(mask: np.ndarray) -> tuple[int, ...]:
    """Index tuple of the first True element of ``mask``."""
    flat = int(np.flatnonzero(mask.ravel())[0])
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape)) if mask.ndim else ()


def _raise_at(arr: np.ndarray, mask: np.ndarray, name: str, what: str, labels: Any) -> None:
    idx = first_bad_index(mask)
    value = arr[idx] if arr.ndim else arr[()]
    where = describe_index(idx, labels) if arr.ndim else "value"
    raise InvalidInputError(f"{name}: {what}, {where} is {value!r}")


def check_finite(arr: np.ndarray, name: str, labels: Any = None) -> None:
    """Raise if any element is NaN or ±inf."""
    mask = ~np.isfinite(arr)
    if mask.any():
        _raise_at(arr, mask, name, "must be finite (no NaN or inf)", labels)


def check_positive(arr: np.ndarray, name: str, labels: Any = None) -> None:
    """Raise unless every element is finite and > 0."""
    check_finite(arr, name, labels)
    mask = arr <= 0
    if mask.any():
        _raise_at(arr, mask, name, "must be > 0", labels)


def check_nonnegative(arr: np.ndarray, name: str, labels: Any = None) -> None:
    """Raise unless every element is finite and >= 0."""
    check_finite(arr, name, labels)
    mask = arr < 0
    if mask.any():
        _raise_at(arr, mask, name, "must be >= 0", labels)


def check_same_length(**arrays: np.ndarray) -> int:
    """Raise unless all 1-d arrays have one length; return it."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise InvalidInputError(f"arrays must have the same length: {desc}")
    return next(iter(lengths.values())) if lengths else 0


def check_index_range(idx: np.ndarray, n: int, name: str, labels: Any = None) -> None:
    """Raise unless every element of ``idx`` is in ``[0, n)``."""
    mask = (idx < 0) | (idx >= n)
    if mask.any():
        _raise_at(idx, mask, name, f"must be in [0, {n})", labels)


@functools.lru_cache(maxsize=1)
def memory_limit() -> int:
    """Bytes of memory this process may use: physical memory, or a smaller cgroup (container) limit."""
    limit = 2**63 - 1
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(nbytes: float, what: str) -> None:
    """Refuse work that needs more memory than the machine has, before allocating any of it.

    Without this a request for 10**12 accounts makes numpy try to allocate terabytes (a bare
    ``MemoryError``, or the kernel's OOM killer after a long swap). ``what`` names the argument
    and the size, e.g. ``"n: 10**12 accounts at about 4 KiB each"``.
    """
    limit = memory_limit()
    if nbytes > limit:
        raise InvalidInputError(
            f"{what} need about {_bytes(nbytes)} of memory; this machine has {_bytes(limit)}"
        )
