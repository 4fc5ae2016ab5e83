"""Input checks that must hold before any ``nogil`` kernel runs.

Each check raises an error naming the argument, the first offending index and the value.
Inputs are never modified: conversions copy when the dtype or layout must change.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError

__all__ = [
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
