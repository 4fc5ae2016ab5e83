"""Slow pure-Python reference for the CSR building of dpm.portfolio.accounts.AccountBook.

Dict-based and loop-only (no numpy sorting), so it shares no code path with the kernel.
Duplicates are summed left to right in input order, as the kernel promises.
"""

from __future__ import annotations

import numpy as np


def build_csr_reference(account_index, instrument_idx, quantity, n_accounts):
    """Return (indptr, instrument_idx, quantity) as Python lists."""
    rows = [{} for _ in range(n_accounts)]
    for a, i, q in zip(list(account_index), list(instrument_idx), list(quantity)):
        row = rows[int(a)]
        i = int(i)
        if i in row:
            row[i] = row[i] + float(q)
        else:
            row[i] = float(q)
    indptr = [0]
    inst, qty = [], []
    for row in rows:
        for i in sorted(row):
            inst.append(i)
            qty.append(row[i])
        indptr.append(len(inst))
    return indptr, inst, qty


def build_csr_numpy(
    acc: np.ndarray, inst: np.ndarray, qty: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same CSR with numpy only (lexsort + add.at), a second, vectorised reference."""
    order = np.lexsort((inst, acc))  # stable: duplicates keep their input order
    a, k, q = acc[order], inst[order], qty[order]
    if len(a):
        start = np.ones(len(a), dtype=bool)
        start[1:] = (a[1:] != a[:-1]) | (k[1:] != k[:-1])
        first = np.flatnonzero(start)
        group = np.cumsum(start) - 1
        out_q = np.zeros(len(first))
        np.add.at(out_q, group, q)  # unbuffered, applied in index order: left-to-right sums
        a, k = a[first], k[first]
    else:
        out_q = np.zeros(0)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(a, minlength=n), out=indptr[1:])
    return indptr, k.astype(np.int64), out_q
