"""Correlation-matrix checks and the nearest-correlation repair (numpy only).

Kept apart from :mod:`dpm.models.calibration` (which needs scipy) so that the margin engine can validate
its correlation matrix cheaply; :mod:`dpm.models.calibration` re-exports both functions.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError

__all__ = ["check_correlation", "nearest_psd_correlation"]


def _eig_clip(a: np.ndarray, floor: float) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    out = (v * np.maximum(w, floor)) @ v.T
    return 0.5 * (out + out.T)


def nearest_psd_correlation(matrix: Any, *, tol: float = 1e-12, max_iter: int = 10_000,
                            eig_floor: float = 0.0) -> np.ndarray:
    """Nearest correlation matrix in Frobenius norm (Higham 2002, alternating projections).

    Dykstra-corrected alternating projections onto the PSD cone (eigenvalue clipping) and the
    unit-diagonal set, until the iterates move less than ``tol`` (relative). The result is then
    made exactly PSD with unit diagonal: eigenvalues are clipped at ``eig_floor`` and the matrix
    rescaled ``D^-1/2 X D^-1/2`` (a change of order ``tol``). ``eig_floor > 0`` gives a positive
    definite result (Cholesky-able).

    Parameters
    ----------
    matrix : array_like, shape (A, A)
        Symmetric matrix (the symmetric part is used).

    Returns
    -------
    ndarray, shape (A, A)
    """
    a = as_float_array(matrix, "matrix")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InvalidInputError(f"matrix: expected a square matrix, got shape {a.shape}")
    check_finite(a, "matrix")
    a = 0.5 * (a + a.T)
    y = a.copy()
    ds = np.zeros_like(a)
    diag = np.arange(a.shape[0])
    for _ in range(int(max_iter)):
        r = y - ds
        x = _eig_clip(r, 0.0)
        ds = x - r
        y_new = x.copy()
        y_new[diag, diag] = 1.0
        change = np.linalg.norm(y_new - y) / max(np.linalg.norm(y_new), 1.0)
        y = y_new
        if change < tol:
            break
    x = _eig_clip(y, eig_floor)
    d = np.sqrt(np.diag(x))
    x = x / np.outer(d, d)
    x[diag, diag] = 1.0
    return np.clip(0.5 * (x + x.T), -1.0, 1.0)


def check_correlation(matrix: Any, repair: bool = False, *, names: Sequence[str] | None = None,
                      atol: float = 1e-10) -> np.ndarray:
    """Validate a correlation matrix; optionally repair it to the nearest valid one.

    Checks, in order: square, finite, symmetric, unit diagonal, entries in [-1, 1], positive
    semi-definite (smallest eigenvalue >= ``-atol``). With ``repair=False`` the first failure
    raises :class:`~dpm.errors.InvalidInputError` naming the entry (with ``names`` if given) and
    value. With ``repair=True`` the symmetric part is taken, the diagonal set to 1, entries
    clipped to [-1, 1] and, if still not PSD, :func:`nearest_psd_correlation` is applied; NaN/inf
    and non-square inputs still raise. Returns a new array (the input is never modified).
    """
    a = as_float_array(matrix, "correlation")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InvalidInputError(f"correlation: expected a square matrix, got shape {a.shape}")
    check_finite(a, "correlation")
    p = a.shape[0]
    if names is not None and len(names) != p:
        raise InvalidInputError(f"names: {len(names)} names for a {p}x{p} matrix")
    lab = (lambda i: repr(names[i])) if names is not None else (lambda i: str(i))
    a = a.copy()
    if repair:
        a = 0.5 * (a + a.T)
        np.fill_diagonal(a, 1.0)
        a = np.clip(a, -1.0, 1.0)
        if np.linalg.eigvalsh(a)[0] < -atol:
            a = nearest_psd_correlation(a)
        return a
    asym = np.abs(a - a.T) > atol
    if asym.any():
        i, j = (int(v) for v in np.argwhere(asym)[0])
        raise InvalidInputError(
            f"correlation: not symmetric: [{lab(i)}, {lab(j)}] = {float(a[i, j])!r} but "
            f"[{lab(j)}, {lab(i)}] = {float(a[j, i])!r}"
        )
    bad_diag = np.abs(np.diag(a) - 1.0) > atol
    if bad_diag.any():
        i = int(np.flatnonzero(bad_diag)[0])
        raise InvalidInputError(f"correlation: diagonal [{lab(i)}, {lab(i)}] is {float(a[i, i])!r}, not 1")
    out = np.abs(a) > 1.0 + atol
    if out.any():
        i, j = (int(v) for v in np.argwhere(out)[0])
        raise InvalidInputError(
            f"correlation: entry [{lab(i)}, {lab(j)}] = {float(a[i, j])!r} is outside [-1, 1]"
        )
    w = np.linalg.eigvalsh(a)
    if w[0] < -atol:
        raise InvalidInputError(
            f"correlation: not positive semi-definite (smallest eigenvalue {w[0]:.6g}); "
            "pass repair=True or use nearest_psd_correlation()"
        )
    return a
