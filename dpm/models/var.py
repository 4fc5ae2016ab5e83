"""Full-revaluation VaR / expected shortfall and stress losses for many accounts.

The same two steps as the risk-matrix margin, with other scenario sets (historical, filtered
historical, Monte Carlo, named stresses from :mod:`dpm.risk_measures` / :mod:`dpm.stress`):

1. every instrument is revalued once per joint scenario (``M x S`` USD P&L per contract, a ``nogil``
   kernel over chunks of instruments);
2. every account gathers its P&L per scenario through its CSR positions and keeps only its ``k``
   worst losses (a per-account heap), visiting scenarios in cache-sized blocks; the accounts x
   scenarios matrix is never formed, so memory is ``M x S + N x k`` doubles whatever the number of
   accounts.

VaR and ES follow the conventions of :func:`dpm.risk_measures.var_es` (lower empirical quantile;
Acerbi-Tasche ES with a fractional observation), so account results equal ``var_es`` applied to
the account's full scenario P&L.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .. import _parallel
from .._core import _tail
from ..accounts import AccountBook
from ..errors import InvalidInputError, InvalidTypeError, MarketDataError
from ..instruments import InstrumentTable, Kind
from ..market import MarketSnapshot
from ..risk_measures import MarketScenarios, _tail_count

__all__ = ["ScenarioRiskEngine", "AccountVaRES", "StressResult"]


@dataclass(frozen=True, eq=False)
class AccountVaRES:
    """VaR and ES (USD, positive = loss) per level (rows) and account (columns)."""

    account_id: np.ndarray
    levels: tuple[float, ...]
    var: np.ndarray
    es: np.ndarray
    tail_scenarios: np.ndarray  # N x k scenario indices of the worst losses, worst first
    tail_losses: np.ndarray     # N x k losses, largest first
    n_scenarios: int

    def level_index(self, level: float) -> int:
        for i, lv in enumerate(self.levels):
            if abs(lv - level) < 1e-12:
                return i
        raise InvalidInputError(f"level {level!r} was not computed (have {self.levels})")


@dataclass(frozen=True, eq=False)
class StressResult:
    """Loss (USD, positive = loss) of each account (rows) in each scenario (columns)."""

    account_id: np.ndarray
    scenario_names: tuple[str, ...]
    loss: np.ndarray
    worst_scenario: np.ndarray  # per account, index into scenario_names
    worst_loss: np.ndarray


class ScenarioRiskEngine:
    """Revalue instruments under joint scenarios and measure accounts' VaR, ES and stress losses.

    Parameters
    ----------
    market : MarketSnapshot
    instruments : InstrumentTable
    workers : int, optional
        Default thread count for the methods (None: all cores).
    """

    def __init__(self, market: MarketSnapshot, instruments: InstrumentTable, *, workers: int | None = None) -> None:
        if not isinstance(market, MarketSnapshot):
            raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
        if not isinstance(instruments, InstrumentTable):
            raise InvalidTypeError(f"instruments: expected an InstrumentTable, got {type(instruments).__name__}")
        self.market = market
        self.instruments = instruments
        self.workers = workers
        t = instruments
        M = len(t)
        self._kind = np.asarray(t.kind, dtype=np.int8)
        self._inverse = np.asarray(t.inverse, dtype=np.uint8)
        self._und = np.asarray(t.underlying, dtype=np.int32)
        unds = tuple(t.underlyings)
        self._index = np.array([float(market[u].index_price) if u in market else 1.0 for u in unds])
        in_market = np.array([u in market for u in unds], dtype=bool)
        self._available = in_market[self._und] if M else np.zeros(0, dtype=bool)
        expiry = np.asarray(t.expiry_ms, dtype=np.int64)
        dated = (self._kind == Kind.FUTURE) | (self._kind == Kind.OPTION)
        self._available &= ~(dated & (expiry <= market.timestamp_ms))
        self._F = np.ones(M)
        self._T = np.zeros(M)
        self._vol = np.zeros(M)
        idx = np.flatnonzero(self._available)
        if idx.size:
            sub = t if idx.size == M else t.subset(self._available)
            inp = market.instrument_inputs(sub)
            self._F[idx] = inp.forward
            self._T[idx] = inp.time
            self._vol[idx] = np.where(np.isfinite(inp.vol), inp.vol, 0.0)
        self._K = np.where(self._kind == Kind.OPTION, np.nan_to_num(np.asarray(t.strike, dtype=np.float64), nan=1.0), 1.0)
        self._cp = np.where(np.asarray(t.option_type) < 0, -1.0, 1.0)
        self._cs = np.asarray(t.contract_size, dtype=np.float64)

    # ------------------------------------------------------------------ revaluation
    def revalue(self, scenarios: MarketScenarios, *, workers: int | None = None) -> np.ndarray:
        """``M x S`` P&L (USD per contract) of every instrument in every scenario.

        (Internally :meth:`var_es` uses a blocked layout of the same numbers; see ``_revalue``.)

        Options age by the scenarios' horizon and their vols are multiplied by ``1 + vol_shock``
        (sticky strike). Instruments whose underlying the scenarios do not cover get NaN rows, so an
        account holding one is reported, never silently unshocked.
        """
        S = len(scenarios.names) if isinstance(scenarios, MarketScenarios) else 0
        return self._revalue(scenarios, max(S, 1), workers)[0]

    def _revalue(self, scenarios: MarketScenarios, block: int, workers: int | None) -> np.ndarray:
        """Blocked P&L: ``n_blocks x M x block`` (scenario ``s`` in block ``s // block``)."""
        if not isinstance(scenarios, MarketScenarios):
            raise InvalidTypeError(f"scenarios: expected MarketScenarios, got {type(scenarios).__name__}")
        unds = tuple(self.instruments.underlyings)
        S = len(scenarios.names)
        U = len(unds)
        move = np.zeros((U, S))
        vmult = np.ones((U, S))
        covered = np.zeros(U, dtype=bool)
        for j, u in enumerate(unds):
            if u in scenarios.underlyings:
                c = scenarios.underlyings.index(u)
                move[j] = scenarios.price_move[:, c]
                vmult[j] = 1.0 + scenarios.vol_shock[:, c]
                covered[j] = True
        M = len(self.instruments)
        nblocks = -(-S // block)
        out = np.empty((nblocks, M, block))
        dt = float(scenarios.horizon_days) / 365.0

        def run(a: int, b: int) -> None:
            _tail.revalue_joint(a, b, self._kind, self._inverse, self._und, self._F, self._K, self._cp,
                                self._T, self._cs, self._vol, self._index, move, vmult, dt, out)

        _parallel.run_chunked(run, M, self.workers if workers is None else workers, min_chunk=64)
        bad = ~(self._available & covered[self._und]) if M else np.zeros(0, dtype=bool)
        out[:, bad, :] = np.nan
        return out

    def _check(self, book: AccountBook, P: np.ndarray) -> None:
        if not isinstance(book, AccountBook):
            raise InvalidTypeError(f"accounts: expected an AccountBook, got {type(book).__name__}")
        if book.table is not self.instruments and not book.table.equals(self.instruments):
            raise InvalidInputError("accounts: the AccountBook was built on a different InstrumentTable")
        if P.ndim != 2 or P.shape[0] != len(self.instruments):
            raise InvalidInputError(f"P: expected shape ({len(self.instruments)}, S), got {P.shape}")
        if book.n_positions:
            nanrow = np.isnan(P[:, 0]) if P.shape[1] else np.zeros(P.shape[0], dtype=bool)
            if nanrow.any():
                bad = nanrow[book.instrument_idx]
                if bad.any():
                    k = int(np.flatnonzero(bad)[0])
                    a = int(np.searchsorted(book.indptr, k, side="right") - 1)
                    name = self.instruments.name[book.instrument_idx[k]]
                    raise MarketDataError(
                        f"account {book.account_id[a]!r}: {name!r} is not covered by the scenarios (no "
                        f"market data, expired, or its underlying has no scenario moves)"
                    )

    # ------------------------------------------------------------------ VaR / ES
    def var_es(self, accounts: AccountBook, scenarios: MarketScenarios | np.ndarray,
               levels: float | Sequence[float] = (0.99,), *, workers: int | None = None,
               block: int = 64) -> AccountVaRES:
        """VaR and ES of every account over the scenarios (full revaluation).

        Parameters
        ----------
        accounts : AccountBook
        scenarios : MarketScenarios or ndarray
            Joint scenarios, or an ``M x S`` P&L matrix from :meth:`revalue` (reuse it across books).
        levels : float or sequence of float
            Confidence levels, e.g. ``(0.99, 0.975)``.
        workers : int, optional
        block : int
            Scenarios per cache block (64 keeps an ``M x 64`` block of 1,600 instruments in L2).
        """
        if int(block) < 1:
            raise InvalidInputError(f"block: must be >= 1, got {block!r}")
        block = int(block)
        if isinstance(scenarios, np.ndarray):
            P = np.asarray(scenarios, dtype=np.float64)
            self._check(accounts, P)
            S = P.shape[1]
            nb = -(-S // block)
            Pb = np.zeros((nb, P.shape[0], block))
            for b in range(nb):
                Pb[b, :, : min(block, S - b * block)] = P[:, b * block:(b + 1) * block]
        else:
            S = len(scenarios.names)
            Pb = self._revalue(scenarios, block, workers)
            self._check(accounts, Pb[0])
        lv = tuple(float(x) for x in np.atleast_1d(np.asarray(levels, dtype=np.float64)))
        for x in lv:
            if not 0.0 < x < 1.0:
                raise InvalidInputError(f"levels: each must be in (0, 1), got {x!r}")
        if S == 0:
            raise InvalidInputError("scenarios: no scenarios")
        k = min(S, max(_tail_count(S, 1.0 - x)[1] + 1 for x in lv))
        N = len(accounts)
        heap_val = np.empty((N, k))
        heap_idx = np.empty((N, k), dtype=np.int32)
        heap_n = np.empty(N, dtype=np.int32)
        indptr, inst, qty = accounts.indptr, accounts.instrument_idx, accounts.quantity

        def run(a: int, b: int) -> None:
            acc = np.empty(block)
            _tail.tail_rows(a, b, indptr, inst, qty, Pb, S, acc, heap_val, heap_idx, heap_n)

        _parallel.run_chunked(run, N, self.workers if workers is None else workers, min_chunk=64,
                              chunks_per_worker=4)
        # heaps -> worst first; ties broken by scenario index so results do not depend on heap order
        order = np.lexsort((heap_idx, -heap_val), axis=-1) if N else np.zeros((0, k), dtype=np.int64)
        losses = np.take_along_axis(heap_val, order, axis=-1)
        idx = np.take_along_axis(heap_idx, order, axis=-1)
        var = np.empty((len(lv), N))
        es = np.empty((len(lv), N))
        for r, x in enumerate(lv):
            var[r], es[r] = _var_es_from_worst(losses, S, x)
        return AccountVaRES(accounts.account_id, lv, var, es, idx, losses, S)

    def component_es(self, accounts: AccountBook, index: int, scenarios: MarketScenarios | np.ndarray,
                     level: float = 0.99) -> dict[str, float]:
        """Euler contributions of each position of one account to its ES (they sum to the ES).

        A position's contribution is minus its Acerbi-Tasche-weighted mean P&L over the account's
        tail scenarios.
        """
        P = scenarios if isinstance(scenarios, np.ndarray) else self.revalue(scenarios)
        sub = accounts.subset([int(index)])
        res = self.var_es(sub, P, (level,), workers=1)
        S = P.shape[1]
        na, kf = _tail_count(S, 1.0 - level)
        w = np.zeros(res.tail_scenarios.shape[1])
        w[: min(kf, w.size)] = 1.0 / na
        if kf < w.size and na > kf:
            w[kf] = (na - kf) / na
        tail = res.tail_scenarios[0]
        out: dict[str, float] = {}
        for i, q in zip(sub.instrument_idx, sub.quantity):
            out[str(self.instruments.name[i])] = float(-(q * P[i, tail]) @ w)
        return out

    # ------------------------------------------------------------------ stress tests
    def stress(self, accounts: AccountBook, scenarios: MarketScenarios, *, workers: int | None = None) -> StressResult:
        """Loss of every account in every scenario (full revaluation), and each account's worst."""
        P = self.revalue(scenarios, workers=workers)
        P = np.ascontiguousarray(P)
        self._check(accounts, P)
        N, S = len(accounts), P.shape[1]
        out = np.empty((N, S))
        indptr, inst, qty = accounts.indptr, accounts.instrument_idx, accounts.quantity

        def run(a: int, b: int) -> None:
            _tail.gather_rows(a, b, indptr, inst, qty, P, out)

        _parallel.run_chunked(run, N, self.workers if workers is None else workers, min_chunk=256)
        loss = -out
        worst = np.argmax(loss, axis=1) if S else np.zeros(N, dtype=np.int64)
        worst_loss = loss[np.arange(N), worst] if N else np.zeros(0)
        return StressResult(accounts.account_id, tuple(scenarios.names), loss, worst, worst_loss)


def _var_es_from_worst(losses: np.ndarray, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """VaR/ES (var_es conventions) from the sorted worst losses (largest first) of n scenarios."""
    na, k = _tail_count(n, 1.0 - level)
    q = max(int(np.ceil(na)), 1) - 1
    var = losses[:, q]
    head = losses[:, :k].sum(axis=1) if k else np.zeros(losses.shape[0])
    frac = na - k
    tail = head + (frac * losses[:, k] if (frac > 0 and k < losses.shape[1]) else 0.0)
    es = tail / na
    return var, np.maximum(es, var)
