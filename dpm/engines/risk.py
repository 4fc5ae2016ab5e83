"""Full-revaluation VaR / expected shortfall and stress losses for many accounts.

The same two steps as the risk-matrix margin, on the same revaluation plan
(:class:`~dpm.engines.plan.RevaluationPlan`) and kernels, with other scenario sets (historical,
filtered historical, Monte Carlo, named stresses from :mod:`dpm.models.generators`):

1. every instrument is revalued once per joint scenario (USD P&L per contract, the one ``nogil``
   revaluation kernel over chunks of instruments);
2. every account gathers its P&L per scenario through its CSR positions and keeps only its ``k``
   worst losses (a per-account candidate buffer, ``k = ceil(S (1 - level))``), visiting scenarios
   in cache-sized blocks of ``block`` scenarios; the accounts x scenarios matrix is never formed.

:meth:`ScenarioRiskEngine.var_es` runs the two steps chunk by chunk of scenarios (a few hundred at
a time, see ``chunk``): revalue the chunk (threads over instruments), then offer it to every
account's tail buffer (threads over accounts). Memory is ``M x chunk`` doubles for the revalued
chunk (:data:`CHUNK_BYTES`, 8 MB by default) plus ``N x 2k`` losses and scenario indices (12 bytes
each) for the tail buffers and ``N x k`` for the result, whatever the number of scenarios; the
``M x S`` matrix is only built by :meth:`ScenarioRiskEngine.revalue` when asked for. See the
"VaR / ES" section of ``docs/benchmarks.md`` for the measured speed and memory.

VaR and ES follow the conventions of :func:`dpm.models.measures.var_es` (lower empirical quantile;
Acerbi-Tasche ES with a fractional observation), so account results equal ``var_es`` applied to
the account's full scenario P&L.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm._core import _gather
from dpm._util import parallel as _parallel
from dpm.engines.plan import RevaluationPlan, balanced_bounds
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.table import InstrumentTable
from dpm.models.measures import component_es as _component_es
from dpm.models.measures import incremental_es as _incremental_es
from dpm.models.measures import tail_count
from dpm.models.scenarios import DERIBIT_TERM, UNIFORM_TERM, MarketScenarios, VolShock, VolTermStructure
from dpm.portfolio.accounts import AccountBook

__all__ = ["AccountVaRES", "ScenarioRiskEngine", "StressResult"]

#: Target size (bytes) of one revalued chunk of scenarios in :meth:`ScenarioRiskEngine.var_es`:
#: small enough to stay in the last-level cache while the accounts gather from it.
CHUNK_BYTES = 8 << 20
#: Default term structure of the vol shocks of sets that carry none: Deribit's shape,
#: ``(30 / max(DTE, 1))^p`` with p = 0.30 up to 30 days and 0.13 beyond (the shock of a scenario is
#: the 30-day point's).
DEFAULT_VOL_TERM_STRUCTURE = DERIBIT_TERM
#: Capacity of each account's tail candidate buffer, in multiples of k (memory N x cap x 12 bytes).
TAIL_BUFFER_FACTOR = 2.0
#: Largest memory (bytes) for the tail buffers of one group of accounts (only very large
#: ``k = ceil(S (1 - level))`` times ``N`` need more than one group).
MAX_TAIL_BYTES = 1 << 30
#: Block widths with a register-resident kernel (any other width uses a generic loop).
FAST_BLOCKS = (16, 32, 64)
# One account's tail-buffer work counted as this many positions, to balance threads.
_ACCOUNT_COST = 4.0
# Ranges of rows per thread, taken dynamically: enough to even out load from other processes, few
# enough that each range re-reads the revalued chunk from the shared cache only a few times.
_PARTS_PER_WORKER = 4


@dataclass(frozen=True, eq=False)
class AccountVaRES:
    """VaR and ES (USD, positive = loss) per level (rows) and account (columns).

    Attributes
    ----------
    account_id : ndarray of str, length N
    levels : tuple of float, length L
    var, es : ndarray, shape (L, N)
    tail_scenarios : ndarray of int32, shape (N, k)
        Indices of each account's ``k`` worst scenarios, worst first (ties by scenario index).
    tail_losses : ndarray, shape (N, k)
        The corresponding losses (USD, positive = loss), largest first.
    n_scenarios : int
    """

    account_id: np.ndarray
    levels: tuple[float, ...]
    var: np.ndarray
    es: np.ndarray
    tail_scenarios: np.ndarray
    tail_losses: np.ndarray
    n_scenarios: int

    def level_index(self, level: float) -> int:
        """Row of ``var`` / ``es`` holding ``level``."""
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



def _check_levels(levels: Any) -> tuple[float, ...]:
    try:
        arr = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    except (TypeError, ValueError):
        raise InvalidTypeError(f"levels: expected a float or a sequence of floats, got {levels!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInputError(f"levels: expected a float or a non-empty 1-d sequence, got {levels!r}")
    for i, x in enumerate(arr):
        if not 0.0 < x < 1.0:
            raise InvalidInputError(f"levels: each level must be in (0, 1), index {i} is {float(x)!r}")
    return tuple(float(x) for x in arr)


def _check_int(x: Any, name: str, lo: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise InvalidTypeError(f"{name}: expected an int, got {x!r}")
    if int(x) < lo:
        raise InvalidInputError(f"{name}: must be >= {lo}, got {int(x)}")
    return int(x)


class ScenarioRiskEngine:
    """Revalue instruments under joint scenarios and measure accounts' VaR, ES and stress losses.

    Parameters
    ----------
    market : MarketSnapshot
    instruments : InstrumentTable
    workers : int, optional
        Default thread count for the methods (None: all cores).
    vol_term_structure : VolShock or None
        How a scenario's vol shock (the 30-day point's) spreads over expiries: an option expiring in
        ``DTE`` days gets ``vol_shock * (tenor / max(DTE, floor))^p`` (``short_power`` up to the
        tenor, ``long_power`` beyond; default Deribit's 0.30 / 0.13). None: the same relative shock
        for every expiry.

    Notes
    -----
    Scenario ``s`` moves every forward, the perpetual mark and the index of underlying ``u`` by the
    same relative ``price_move[s, u]`` and multiplies every implied vol of ``u`` by
    ``max(0, 1 + c_i * vol_shock[s, u])`` (sticky strike; ``c_i`` the term-structure factor above); options are repriced with ``horizon_days / 365`` less
    time to expiry. P&L is in USD per contract: coin P&L of inverse contracts is converted at the
    scenario's index price.
    """

    def __init__(self, market: MarketSnapshot, instruments: InstrumentTable, *, workers: int | None = None,
                 vol_term_structure: VolTermStructure | VolShock | None = DEFAULT_VOL_TERM_STRUCTURE) -> None:
        if not isinstance(market, MarketSnapshot):
            raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
        if not isinstance(instruments, InstrumentTable):
            raise InvalidTypeError(f"instruments: expected an InstrumentTable, got {type(instruments).__name__}")
        if workers is not None:
            _parallel.resolve_workers(workers)
        if vol_term_structure is None:
            term = UNIFORM_TERM
        elif isinstance(vol_term_structure, VolShock):
            term = vol_term_structure.term_structure
        elif isinstance(vol_term_structure, VolTermStructure):
            term = vol_term_structure
        else:
            raise InvalidTypeError("vol_term_structure: expected a VolTermStructure, a VolShock or None")
        self.market = market
        self.instruments = instruments
        self.workers = workers
        self.vol_term_structure = term
        self.plan = RevaluationPlan(market, instruments, currency="usd", sticky="strike", default_term=term)

    # ------------------------------------------------------------------ helpers
    def _workers(self, workers: int | None) -> int:
        return _parallel.resolve_workers(self.workers if workers is None else workers)

    def _check_book(self, book: AccountBook) -> None:
        if not isinstance(book, AccountBook):
            raise InvalidTypeError(f"accounts: expected an AccountBook, got {type(book).__name__}")
        book.require_table(self.instruments)

    # ------------------------------------------------------------------ revaluation
    def revalue(self, scenarios: MarketScenarios, *, workers: int | None = None) -> np.ndarray:
        """``M x S`` P&L (USD per contract) of every instrument in every scenario.

        The one revaluation kernel of :class:`~dpm.engines.plan.RevaluationPlan`: options age by the
        scenarios' horizon and their vols move by the set's vol shocks with its term structure
        (sticky strike). Instruments that cannot be revalued (underlying not in the market or not
        covered by the scenarios, expired, unusable market data) get NaN rows; :meth:`var_es` and
        :meth:`stress` reject accounts holding them.
        """
        return self.plan.revalue(scenarios, workers=self._workers(workers))

    # ------------------------------------------------------------------ VaR / ES
    def var_es(self, accounts: AccountBook, scenarios: MarketScenarios | np.ndarray,
               levels: float | Sequence[float] = (0.99,), *, workers: int | None = None,
               block: int = 32, chunk: int | None = None) -> AccountVaRES:
        """VaR and ES of every account over the scenarios (full revaluation).

        Parameters
        ----------
        accounts : AccountBook
            Built on the engine's instrument table.
        scenarios : MarketScenarios or ndarray
            Joint scenarios, or an ``M x S`` P&L matrix from :meth:`revalue` (reuse it across books).
        levels : float or sequence of float
            Confidence levels in (0, 1), e.g. ``(0.99, 0.975)``.
        workers : int, optional
            Threads (None: the engine's default). Results are bit-identical for every value.
        block : int
            Scenarios per cache block. 16, 32 and 64 use the register-resident kernel; 32 keeps
            an ``M x 32`` block of 1,600 instruments (400 KB) in L2. Results do not depend on it.
        chunk : int, optional
            Scenarios revalued at a time (rounded up to a multiple of ``block``); default: about
            :data:`CHUNK_BYTES` of ``M x chunk`` P&L. Results do not depend on it.

        Returns
        -------
        AccountVaRES

        Raises
        ------
        MarketDataError
            Naming the first account and instrument that cannot be revalued (underlying missing
            from the market or the scenarios, expired, non-finite P&L in a given matrix).
        InvalidInputError
            Levels outside (0, 1), no scenarios, a book on another instrument table, bad shapes.
        """
        self._check_book(accounts)
        lv = _check_levels(levels)
        block = _check_int(block, "block", 1)
        w = self._workers(workers)
        M = len(self.instruments)
        if isinstance(scenarios, np.ndarray):
            if scenarios.dtype.kind not in "fiu" or scenarios.dtype.kind == "b":
                raise InvalidTypeError(f"scenarios: expected a float P&L matrix, got dtype {scenarios.dtype}")
            P = np.asarray(scenarios, dtype=np.float64)
            if P.ndim != 2 or P.shape[0] != M:
                raise InvalidInputError(f"scenarios: expected a P&L matrix of shape ({M}, S), got {P.shape}")
            S = P.shape[1]
            self.plan.check_held(accounts, np.isfinite(P).all(axis=1) if S else np.ones(M, dtype=bool))
        elif isinstance(scenarios, MarketScenarios):
            packed = self.plan.pack(scenarios)
            S = packed.S
            self.plan.check_held(accounts, self.plan.usable(packed.covered), packed.covered)
        else:
            raise InvalidTypeError(
                f"scenarios: expected MarketScenarios or an M x S ndarray, got {type(scenarios).__name__}")
        if S == 0:
            raise InvalidInputError("scenarios: no scenarios")
        # the gather reads whole groups of 8 scenarios; a block wider than the scenarios only pads
        # with zeros (results never depend on it)
        block = -(-block // 8) * 8
        if block > S:
            block = -(-S // 8) * 8
        if chunk is None:
            nblk = max(1, CHUNK_BYTES // max(1, 8 * M * block))
        else:
            nblk = -(-_check_int(chunk, "chunk", 1) // block)
        nblk = min(nblk, -(-S // block))
        C = nblk * block
        # ceil(n alpha) worst losses give VaR and ES (the last one only for a fractional n alpha)
        k = min(S, max(max(int(np.ceil(tail_count(S, 1.0 - x)[0])), 1) for x in lv))
        N = len(accounts)
        # per-account candidate buffers (see gather.h), compacted to the k best when full;
        # accounts are processed in groups whose buffers fit in MAX_TAIL_BYTES (one group unless k
        # is very large: each further group revalues the scenarios again)
        cap = max(int(TAIL_BUFFER_FACTOR * k), k + 8)
        G = max(1, min(N, MAX_TAIL_BYTES // (12 * cap)))
        indptr, inst, qty = accounts.indptr, accounts.instrument_idx, accounts.quantity
        buf = np.empty((nblk, M, block))
        losses = np.empty((N, k))
        idx = np.empty((N, k), dtype=np.int32)
        cval = np.empty((min(G, N), cap))
        cidx = np.empty((min(G, N), cap), dtype=np.int32)
        for g0 in range(0, N, G):
            g1 = min(N, g0 + G)
            ip = indptr[g0:g1 + 1]  # local account a is account g0 + a; positions stay absolute
            cn = np.zeros(g1 - g0, dtype=np.int32)
            thr = np.full(g1 - g0, -np.inf)
            cv, ci = cval[: g1 - g0], cidx[: g1 - g0]
            acc_cost = np.diff(ip).astype(np.float64) + _ACCOUNT_COST
            acc_bounds = balanced_bounds(acc_cost, _PARTS_PER_WORKER * w if w > 1 else 1)
            for c0 in range(0, S, C):
                c1 = min(S, c0 + C)
                nb = -(-(c1 - c0) // block)
                Pb = buf[:nb]
                if isinstance(scenarios, np.ndarray):
                    Pb[:] = 0.0
                    for b in range(nb):
                        s0 = c0 + b * block
                        Pb[b, :, : min(block, c1 - s0)] = P[:, s0: min(c1, s0 + block)]
                elif M:
                    self.plan.revalue_into(packed, c0, c1, Pb, w)

                def run(a: int, b: int, Pb: np.ndarray = Pb, c0: int = c0, c1: int = c1,
                        ip: np.ndarray = ip, cv: np.ndarray = cv, ci: np.ndarray = ci,
                        cn: np.ndarray = cn, thr: np.ndarray = thr) -> None:
                    _gather.tail_rows(a, b, ip, inst, qty, Pb, c1 - c0, c0, k, cv, ci, cn, thr)

                _parallel.run_bounds(run, acc_bounds, w)

            def finish(a: int, b: int, cv: np.ndarray = cv, ci: np.ndarray = ci, cn: np.ndarray = cn) -> None:
                _gather.tail_finish(a, b, k, cv, ci, cn)

            _parallel.run_bounds(finish, acc_bounds, w)
            # sorted by the kernel: worst first, ties by scenario index (earliest tied scenario kept)
            np.add(cv[:, :k], 0.0, out=losses[g0:g1])  # + 0.0: no -0.0 for flat accounts
            idx[g0:g1] = ci[:, :k]
        var = np.empty((len(lv), N))
        es = np.empty((len(lv), N))
        for r, x in enumerate(lv):
            var[r], es[r] = _var_es_from_worst(losses, S, x)
        _check_finite(accounts, es, "ES", 1)
        return AccountVaRES(accounts.account_id, lv, var, es, idx, losses, S)

    def component_es(self, accounts: AccountBook, index: int, scenarios: MarketScenarios | np.ndarray,
                     level: float = 0.99) -> dict[str, float]:
        """Euler contributions of each position of one account to its ES (they sum to the ES).

        A position's contribution is minus its Acerbi-Tasche-weighted mean P&L over the account's
        tail scenarios: :func:`dpm.models.measures.component_es` on the positions' P&L from the
        engine's full revaluation.

        Returns
        -------
        dict
            Instrument name -> contribution (USD).
        """
        names, x, lv = self._position_pnl(accounts, index, scenarios, level)
        comp = _component_es(x, lv) if x.shape[1] else np.zeros(0)
        return {n: float(v) for n, v in zip(names, comp)}

    def incremental_es(self, accounts: AccountBook, index: int, scenarios: MarketScenarios | np.ndarray,
                       level: float = 0.99) -> dict[str, float]:
        """Incremental ES of each position of one account: ``ES(account) - ES(account without it)``.

        Full revaluation (the engine's ``M x S`` P&L), then :func:`dpm.models.measures.incremental_es`
        on the account's position x scenario P&L.

        Returns
        -------
        dict
            Instrument name -> incremental ES (USD; negative for a position that hedges).
        """
        names, x, lv = self._position_pnl(accounts, index, scenarios, level)
        inc = _incremental_es(x, lv) if x.shape[1] else np.zeros(0)
        return {n: float(v) for n, v in zip(names, inc)}

    def component_es_by_underlying(self, accounts: AccountBook, index: int,
                                   scenarios: MarketScenarios | np.ndarray, level: float = 0.99) -> dict[str, float]:
        """Euler contributions of each underlying to one account's ES (sums of :meth:`component_es`)."""
        comp = self.component_es(accounts, index, scenarios, level)
        unds = self.instruments.underlyings
        ids = self.instruments.index_of(list(comp)) if comp else np.zeros(0, dtype=np.int64)
        out: dict[str, float] = {}
        for j, v in zip(ids, comp.values()):
            u = unds[int(self.plan.und[j])]
            out[u] = out.get(u, 0.0) + v
        return out

    def _position_pnl(self, accounts: AccountBook, index: int, scenarios: MarketScenarios | np.ndarray,
                      level: float) -> tuple[list[str], np.ndarray, float]:
        """Names and the S x n P&L of one account's positions (validated), and the level."""
        self._check_book(accounts)
        lv = _check_levels(level)
        if len(lv) != 1:
            raise InvalidInputError(f"level: expected one level, got {level!r}")
        i = _check_int(index, "index", 0)
        if i >= len(accounts):
            raise InvalidInputError(f"index: account {i} is not in [0, {len(accounts)})")
        sub = accounts.subset([i])
        if isinstance(scenarios, np.ndarray):
            P = scenarios
            self.plan.check_held(sub, np.isfinite(P).all(axis=1) if P.shape[1] else np.ones(P.shape[0], bool))
        else:
            covered = self.plan.pack(scenarios).covered
            self.plan.check_held(sub, self.plan.usable(covered), covered)
            P = self.revalue(scenarios)
        x = (P[sub.instrument_idx] * sub.quantity[:, None]).T
        return [str(self.instruments.name[j]) for j in sub.instrument_idx], x, lv[0]

    # ------------------------------------------------------------------ stress tests
    def account_pnl(self, accounts: AccountBook, scenarios: MarketScenarios, *,
                    workers: int | None = None) -> np.ndarray:
        """``N x S`` P&L (USD) of every account in every scenario: the gather of the revalued matrix.

        Memory is ``N x S``: meant for tens to thousands of scenarios (stress tests, reverse-stress
        searches). Raises ``MarketDataError`` naming the first account holding an instrument that
        cannot be revalued under the scenarios.
        """
        self._check_book(accounts)
        packed = self.plan.pack(scenarios)
        self.plan.check_held(accounts, self.plan.usable(packed.covered), packed.covered)
        S = packed.S
        if S == 0:
            raise InvalidInputError("scenarios: no scenarios")
        w = self._workers(workers)
        N = len(accounts)
        if not len(self.instruments):
            return np.zeros((N, S))
        P = self.plan.revalue(scenarios, workers=w, padded=True, unavailable=0.0)
        out = np.empty((N, P.shape[1]))
        indptr, inst, qty = accounts.indptr, accounts.instrument_idx, accounts.quantity

        def run(a: int, b: int) -> None:
            _gather.gather_rows(a, b, indptr, inst, qty, P, out)

        _parallel.run_bounds(run, balanced_bounds(np.diff(indptr).astype(np.float64) + 1.0, _PARTS_PER_WORKER * w), w)
        _check_finite(accounts, out[:, :S], "scenario P&L", 0)
        return out[:, :S]

    def stress(self, accounts: AccountBook, scenarios: MarketScenarios, *, workers: int | None = None) -> StressResult:
        """Loss of every account in every scenario (full revaluation), and each account's worst.

        Memory is ``N x S`` (the full loss table is the result): meant for tens of named scenarios.
        """
        pnl = self.account_pnl(accounts, scenarios, workers=workers)
        N = len(accounts)
        loss = -pnl
        loss += 0.0  # no negative zeros for flat accounts
        worst = np.argmax(loss, axis=1) if N else np.zeros(0, dtype=np.int64)
        worst_loss = loss[np.arange(N), worst] if N else np.zeros(0)
        return StressResult(accounts.account_id, tuple(scenarios.names), loss, worst, worst_loss)


def _check_finite(book: AccountBook, values: np.ndarray, what: str, account_axis: int) -> None:
    """Fail closed: a loss figure is finite, or the call fails naming the account."""
    bad = ~np.isfinite(values)
    if bad.any():
        a = int(np.argwhere(bad)[0][account_axis])
        raise InvalidInputError(f"account {book.account_id[a]!r}: its {what} is not finite; a quantity is too "
                                "large to measure")


def _var_es_from_worst(losses: np.ndarray, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """VaR/ES (var_es conventions) from the sorted worst losses (largest first) of n scenarios."""
    na, k = tail_count(n, 1.0 - level)
    q = max(int(np.ceil(na)), 1) - 1
    var = losses[:, q]
    head = losses[:, :k].sum(axis=1) if k else np.zeros(losses.shape[0])
    frac = na - k
    tail = head + (frac * losses[:, k] if (frac > 0 and k < losses.shape[1]) else 0.0)
    es = tail / na
    return var, np.maximum(es, var)
