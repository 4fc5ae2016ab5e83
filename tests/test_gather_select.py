"""The account-list gathers of the reverse stress (``gather_select``, ``gather_own``) against a slow
pure-Python reference, and their refusals of indices that would read outside the arrays."""
from __future__ import annotations

import numpy as np
import pytest

from dpm._core import _gather


def _book(rng: np.random.Generator, N: int, M: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = rng.integers(0, 9, N)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    inst = rng.integers(0, M, int(indptr[-1])).astype(np.int64)
    qty = rng.normal(size=inst.size) * 10.0
    return indptr, inst, qty


def _slow_row(indptr, inst, qty, P, a, s):  # noqa: ANN001, ANN202
    return sum(float(qty[p]) * float(P[inst[p], s]) for p in range(indptr[a], indptr[a + 1]))


def test_gather_select_equals_slow_reference_and_gather_rows() -> None:
    rng = np.random.default_rng(5)
    N, M, S = 60, 13, 21
    indptr, inst, qty = _book(rng, N, M)
    P = np.zeros((M, 24))
    P[:, :S] = rng.normal(size=(M, S))
    acc = rng.choice(N, 25, replace=False).astype(np.int64)
    out = np.full((acc.size, 24), np.nan)
    _gather.gather_select(acc, indptr, inst, qty, P, out)
    ref = np.array([[_slow_row(indptr, inst, qty, P, a, s) for s in range(S)] for a in acc])
    np.testing.assert_allclose(out[:, :S], ref, rtol=1e-13, atol=1e-12)
    # the same kernel as the contiguous-range gather, bit for bit
    full = np.empty((N, 24))
    _gather.gather_rows(0, N, indptr, inst, qty, P, full)
    assert np.array_equal(out, full[acc])


def test_gather_own_equals_slow_reference() -> None:
    rng = np.random.default_rng(6)
    N, M, S = 50, 17, 9
    indptr, inst, qty = _book(rng, N, M)
    held = np.unique(inst)
    imap = np.full(M, -1, dtype=np.int64)
    imap[held] = np.arange(held.size)
    Pt = rng.normal(size=(S, held.size))
    acc = rng.integers(0, N, 40).astype(np.int64)  # repeats allowed
    col = rng.integers(0, S, acc.size).astype(np.int64)
    out = np.empty(acc.size)
    _gather.gather_own(acc, col, indptr, inst, imap, qty, Pt, out)
    ref = [sum(float(qty[p]) * float(Pt[c, imap[inst[p]]]) for p in range(indptr[a], indptr[a + 1]))
           for a, c in zip(acc, col)]
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-12)


def test_gather_own_gives_nan_for_an_instrument_outside_the_map() -> None:
    indptr = np.array([0, 2, 3], np.int64)
    inst = np.array([0, 1, 2], np.int64)
    qty = np.ones(3)
    imap = np.array([0, -1, 1], np.int64)  # instrument 1 is not in the sub-table
    Pt = np.ones((1, 2))
    out = np.empty(2)
    _gather.gather_own(np.array([0, 1], np.int64), np.zeros(2, np.int64), indptr, inst, imap, qty, Pt, out)
    assert np.isnan(out[0]) and out[1] == 1.0
    # an id past the map and a map entry past the sub-table: NaN too, never a read outside
    _gather.gather_own(np.array([0], np.int64), np.zeros(1, np.int64), indptr, np.array([0, 7, 2], np.int64),
                       np.array([0, 0, 5], np.int64), qty, Pt, out)
    assert np.isnan(out[0])


@pytest.mark.parametrize("acc, col", [([2], [0]), ([-1], [0]), ([0], [3]), ([0], [-1])])
def test_gather_own_refuses_out_of_range_accounts_and_scenarios(acc: list[int], col: list[int]) -> None:
    indptr = np.array([0, 1, 2], np.int64)
    with pytest.raises(IndexError):
        _gather.gather_own(np.array(acc, np.int64), np.array(col, np.int64), indptr, np.zeros(2, np.int64),
                           np.zeros(1, np.int64), np.ones(2), np.ones((3, 1)), np.empty(1))


@pytest.mark.parametrize("acc", [[2], [-1]])
def test_gather_select_refuses_out_of_range_accounts(acc: list[int]) -> None:
    with pytest.raises(IndexError):
        _gather.gather_select(np.array(acc, np.int64), np.array([0, 1, 2], np.int64), np.zeros(2, np.int64),
                              np.ones(2), np.zeros((1, 8)), np.empty((1, 8)))
