"""The Monte Carlo VaR / ES benchmark computed with plain numpy / scipy (the speed reference).

Same numbers as :meth:`dpm.engines.risk.ScenarioRiskEngine.var_es`, written the way one would
without dpm's kernels:

1. **reprice**: vectorised Black-76 over all instruments x paths (``scipy.special.ndtr``), linear
   contracts by their closed-form P&L -> the full ``M x S`` USD P&L matrix;
2. **aggregate**: ``scipy.sparse`` CSR (accounts x instruments) ``@`` the dense ``M x S`` matrix,
   a chunk of accounts at a time (the full ``N x S`` matrix would be 800 MB for 10,000 x 10,000);
3. **tail**: ``np.partition`` of each account's P&L for its ``ceil(S alpha)`` worst scenarios, then
   VaR / ES with the conventions of :func:`dpm.models.measures.var_es`.

Memory: ``M x S`` doubles plus a few ``M x S`` temporaries of the vectorised pricing, plus
``chunk x S`` for the aggregation.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

from dpm.market.specs import Kind
from dpm.models.measures import tail_count


def reprice(market: Any, table: Any, scenarios: Any) -> np.ndarray:
    """``M x S`` USD P&L per contract (same model as the engine, numpy-vectorised)."""
    inp = market.instrument_inputs(table)
    und_names = list(table.underlyings)
    col = np.array([list(scenarios.underlyings).index(u) for u in und_names])
    und = np.asarray(table.underlying, dtype=np.int64)
    move = scenarios.price_move[:, col[und]].T          # M x S
    kind = np.asarray(table.kind)
    inverse = np.asarray(table.inverse, dtype=bool)
    cs = np.asarray(table.contract_size, dtype=np.float64)
    F, T, S0 = inp.forward, inp.time, inp.index
    # the 30-day vol shock spread over expiries: (30 / max(DTE, 1))^p, p = 0.30 / 0.13 (the engine's
    # default term structure), vol floored at 0
    dte = np.maximum(T * 365.0, 1.0)
    term = (30.0 / dte) ** np.where(dte <= 30.0, 0.30, 0.13)
    vmult = np.maximum(1.0 + term[:, None] * scenarios.vol_shock[:, col[und]].T, 0.0)  # M x S
    dt = scenarios.horizon_days / 365.0
    P = np.empty(move.shape)

    lin = kind != Kind.OPTION
    g = 1.0 + move[lin]
    F0 = F[lin, None]
    P[lin] = np.where(inverse[lin, None], cs[lin, None] * (1.0 / F0 - 1.0 / (F0 * g)) * S0[lin, None] * g,
                      cs[lin, None] * (F0 * g - F0))

    opt = np.flatnonzero(~lin)
    K = np.asarray(table.strike, dtype=np.float64)[opt, None]
    cp = np.where(np.asarray(table.option_type)[opt] > 0, 1.0, -1.0)[:, None]
    vol = inp.vol[opt, None]
    Fo = F[opt, None]
    scale = cs[opt, None] * np.where(inverse[opt, None], S0[opt, None] / Fo, 1.0)

    def black(Fx: np.ndarray, sig: np.ndarray, Tx: np.ndarray) -> np.ndarray:
        s = sig * np.sqrt(Tx)
        live = s > 0
        ss = np.where(live, s, 1.0)
        d1 = np.log(Fx / K) / ss + 0.5 * ss
        d2 = d1 - ss
        val = cp * (Fx * ndtr(cp * d1) - K * ndtr(cp * d2))
        return np.where(live, val, np.maximum(cp * (Fx - K), 0.0))

    T1 = np.maximum(T[opt, None] - dt, 0.0)
    b0 = black(Fo, vol, T[opt, None])
    P[opt] = scale * (black(Fo * (1.0 + move[opt]), vol * vmult[opt], T1) - b0)
    return P


def tail_stats(X: np.ndarray, levels: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """VaR / ES (rows: levels) of the P&L rows of ``X`` from its ``ceil(S alpha)`` worst values."""
    n = X.shape[1]
    kk = min(n, max(max(int(np.ceil(tail_count(n, 1.0 - lv)[0])), 1) for lv in levels))
    worst = np.sort(np.partition(X, kk - 1, axis=1)[:, :kk], axis=1) if kk < n else np.sort(X, axis=1)
    var = np.empty((len(levels), X.shape[0]))
    es = np.empty_like(var)
    for r, lv in enumerate(levels):
        na, k = tail_count(n, 1.0 - lv)
        q = max(int(np.ceil(na)), 1) - 1
        var[r] = -worst[:, q]
        tail = worst[:, :k].sum(axis=1) + ((na - k) * worst[:, k] if na > k else 0.0)
        es[r] = np.maximum(-tail / na, var[r])
    return var, es


def numpy_var_es(market: Any, table: Any, book: Any, scenarios: Any, levels: tuple[float, ...] = (0.99,),
                 account_chunk: int = 1000, timings: dict[str, float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES (levels x accounts) of every account; phase times (s) go into ``timings``."""
    t0 = time.perf_counter()
    P = reprice(market, table, scenarios)
    t1 = time.perf_counter()
    A = sp.csr_matrix((book.quantity, book.instrument_idx, book.indptr), shape=(len(book), len(table)))
    N = len(book)
    var = np.empty((len(levels), N))
    es = np.empty_like(var)
    t_agg = t_tail = 0.0
    for a in range(0, N, account_chunk):
        b = min(N, a + account_chunk)
        ta = time.perf_counter()
        X = A[a:b] @ P
        tb = time.perf_counter()
        var[:, a:b], es[:, a:b] = tail_stats(X, levels)
        t_agg += tb - ta
        t_tail += time.perf_counter() - tb
    if timings is not None:
        timings.update(reprice=t1 - t0, aggregate=t_agg, tail=t_tail, total=time.perf_counter() - t0)
    return var, es
