"""Slow pure-Python reference for the CSR building of dpm.portfolio.accounts.AccountBook.

Dict-based and loop-only (no numpy sorting), so it shares no code path with the kernel.
Duplicates are summed left to right in input order, as the kernel promises.
"""

from __future__ import annotations


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
