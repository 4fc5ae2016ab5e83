"""Outputs never share memory with inputs: an input that could alias an output is copied.

A caller may keep writing to the arrays it passed in (or make a read-only array writeable again);
that must not change a book, a market or a history dpm already built.
"""
from __future__ import annotations

import numpy as np

from dpm.market.history import history_from_wide
from dpm.market.sample import default_instruments
from dpm.market.snapshot import ForwardCurve
from dpm.portfolio.accounts import AccountBook


def _no_alias(outputs, inputs):
    for o in outputs:
        for i in inputs:
            assert not np.shares_memory(o, i)


def test_account_book_copies_its_inputs():
    table = default_instruments()
    acc = np.array([0, 0, 1], dtype=np.int64)
    inst = np.array([0, 5, 2], dtype=np.int64)  # already CSR order: the kernel's copy-only path
    qty = np.array([1.0, -2.0, 3.0])
    coll = np.ones((2, 4))
    book = AccountBook.from_arrays(acc, inst, qty, table, collateral=coll)
    _no_alias([book.indptr, book.instrument_idx, book.quantity, book.collateral], [acc, inst, qty, coll])
    direct = AccountBook(["a", "b"], book.indptr.copy(), inst[[0, 1, 2]].copy(), qty, coll, book.currencies, table)
    _no_alias([direct.instrument_idx, direct.quantity, direct.collateral], [qty, coll])
    qty[0] = 99.0
    coll[0, 0] = 99.0
    assert book.quantity[0] == 1.0 and direct.quantity[0] == 1.0 and direct.collateral[0, 0] == 1.0
    cols = book.to_columns()
    _no_alias([cols["quantity"]], [book.quantity])


def test_forward_curve_copies_even_read_only_inputs():
    times = np.array([0.5, 1.0])
    basis = np.array([0.01, 0.02])
    times.setflags(write=False)  # a read-only array the caller owns can be made writeable again
    basis.setflags(write=False)
    curve = ForwardCurve(100.0, times, basis)
    _no_alias([curve.times, curve.basis], [times, basis])
    basis.setflags(write=True)
    basis[0] = 5.0
    assert curve.basis[0] == 0.01


def test_history_copies_the_price_matrix():
    close = np.array([[1.0, 2.0], [1.5, 2.5], [2.0, 3.0]])
    h = history_from_wide(["2024-01-01", "2024-01-02", "2024-01-03"], ["A", "B"], close)
    _no_alias([h.close], [close])
