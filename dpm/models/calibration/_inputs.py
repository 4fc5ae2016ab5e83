"""Input checks shared by the calibration modules (returns arrays, lambdas, levels, counts)."""
from __future__ import annotations

from typing import Any

import numpy as np

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError

__all__ = []


def _as_returns(returns: Any, name: str = "returns", min_obs: int = 1) -> tuple[np.ndarray, bool]:
    """(n, A) float64 copy-safe view of ``returns`` and whether the input was 1-d."""
    arr = as_float_array(returns, name)
    if arr.ndim == 1:
        arr, squeeze = arr[:, None], True
    elif arr.ndim == 2:
        squeeze = False
    else:
        raise InvalidInputError(f"{name}: expected shape (n,) or (n, assets), got {arr.shape}")
    if arr.shape[0] < min_obs:
        raise InvalidInputError(
            f"{name}: too little history: {arr.shape[0]} observations, need at least {min_obs}"
        )
    if arr.shape[1] == 0:
        raise InvalidInputError(f"{name}: no assets (shape {arr.shape})")
    check_finite(arr, name)
    return arr, squeeze


def _check_lambda(lambda_: float) -> float:
    lam = float(lambda_)
    if not (0.0 < lam < 1.0):
        raise InvalidInputError(f"lambda_: decay must be in (0, 1), got {lambda_!r}")
    return lam


def _check_level(level: float, name: str = "confidence") -> float:
    lv = float(level)
    if not (0.0 < lv < 1.0):
        raise InvalidInputError(f"{name}: must be in (0, 1), got {level!r}")
    return lv


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise InvalidInputError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)
