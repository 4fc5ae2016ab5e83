"""Full-revaluation VaR / expected shortfall and stress losses for many accounts.

The same two steps as the risk-matrix margin, with other scenario sets (historical, filtered
historical, Monte Carlo, named stresses from :mod:`dpm.models.measures` / :mod:`dpm.models.generators.stress`):

1. every instrument is revalued once per joint scenario (USD P&L per contract, a ``nogil`` kernel
   over chunks of instruments);
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

import datetime as _dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm._core import _tail
from dpm._util import parallel as _parallel
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.models.market_scenarios import MarketScenarios
from dpm.models.measures import component_es as _component_es
from dpm.models.measures import incremental_es as _incremental_es
from dpm.models.measures import tail_count
from dpm.models.scenarios import VolShock
from dpm.portfolio.accounts import AccountBook

__all__ = ["AccountVaRES", "ScenarioRiskEngine", "StressResult"]

#: Target size (bytes) of one revalued chunk of scenarios in :meth:`ScenarioRiskEngine.var_es`:
#: small enough to stay in the last-level cache while the accounts gather from it.
CHUNK_BYTES = 8 << 20
#: Default term structure of the vol shocks: Deribit's shape, ``(30 / max(DTE, 1))^p`` with
#: p = 0.30 up to 30 days and 0.13 beyond (the shock of a scenario is the 30-day point's).
DEFAULT_VOL_TERM_STRUCTURE = VolShock(short_power=0.30, long_power=0.13, tenor_days=30.0, floor_days=1.0)
_TERM_STRUCTURE = DEFAULT_VOL_TERM_STRUCTURE
#: Capacity of each account's tail candidate buffer, in multiples of k (memory N x cap x 12 bytes).
TAIL_BUFFER_FACTOR = 2.0
#: Largest memory (bytes) for the tail buffers of one group of accounts (only very large
#: ``k = ceil(S (1 - level))`` times ``N`` need more than one group).
MAX_TAIL_BYTES = 1 << 30
#: Block widths with a register-resident kernel (any other width uses a generic loop).
FAST_BLOCKS = (16, 32, 64)
# Relative cost of one instrument row in the revaluation (options need Black-76) and of one account
# (its tail-buffer work counted as this many positions), used to balance the work between threads.
_OPTION_COST, _LINEAR_COST, _ACCOUNT_COST = 1.0, 0.05, 4.0
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


def _iso(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _balanced_bounds(cost: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Split ``range(len(cost))`` into at most ``parts`` contiguous ranges of about equal cost."""
    n = cost.size
    if n == 0:
        return []
    parts = max(1, min(parts, n))
    c = np.cumsum(cost)
    cuts = np.searchsorted(c, c[-1] * np.arange(1, parts) / parts, side="right")
    edges = np.unique(np.concatenate(([0], np.clip(cuts, 1, n - 1) if n > 1 else [], [n]))).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


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
                 vol_term_structure: VolShock | None = _TERM_STRUCTURE) -> None:
        if not isinstance(market, MarketSnapshot):
            raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
        if not isinstance(instruments, InstrumentTable):
            raise InvalidTypeError(f"instruments: expected an InstrumentTable, got {type(instruments).__name__}")
        if workers is not None:
            _parallel.resolve_workers(workers)
        self.market = market
        self.instruments = instruments
        self.workers = workers
        t = instruments
        M = len(t)
        self._kind = np.ascontiguousarray(t.kind, dtype=np.int8)
        self._inverse = np.ascontiguousarray(t.inverse, dtype=np.uint8)
        self._und = np.ascontiguousarray(t.underlying, dtype=np.int32)
        unds = tuple(t.underlyings)
        self._index = np.array([float(market[u].index_price) if u in market else 1.0 for u in unds])
        in_market = np.array([u in market for u in unds], dtype=bool)
        self._in_market = in_market[self._und] if M else np.zeros(0, dtype=bool)
        expiry = np.asarray(t.expiry_ms, dtype=np.int64)
        dated = (self._kind == Kind.FUTURE) | (self._kind == Kind.OPTION)
        self._expired = dated & (expiry <= market.timestamp_ms)
        self._available = self._in_market & ~self._expired
        self._F = np.ones(M)
        self._T = np.zeros(M)
        self._vol = np.zeros(M)
        idx = np.flatnonzero(self._available)
        if idx.size:
            sub = t if idx.size == M else t.subset(self._available)
            inp = market.instrument_inputs(sub)
            self._F[idx] = inp.forward
            self._T[idx] = inp.time
            self._vol[idx] = np.where(self._kind[idx] == Kind.OPTION, inp.vol, 0.0)
        # market data the kernel cannot use (a forward <= 0, a NaN or negative vol) make the
        # instrument unavailable, reported by name if an account holds it (never priced silently)
        self._bad_data = ~(np.isfinite(self._F) & (self._F > 0.0) & np.isfinite(self._vol) & (self._vol >= 0.0))
        self._available &= ~self._bad_data
        self._bad_inputs = {int(j): (float(self._F[j]), float(self._vol[j])) for j in np.flatnonzero(self._bad_data)}
        self._F[self._bad_data] = 1.0
        self._vol[self._bad_data] = 0.0
        self._K = np.where(self._kind == Kind.OPTION, np.nan_to_num(np.asarray(t.strike, dtype=np.float64), nan=1.0), 1.0)
        self._cp = np.where(np.asarray(t.option_type) < 0, -1.0, 1.0)
        self._cs = np.ascontiguousarray(t.contract_size, dtype=np.float64)
        self._cost = np.where(self._kind == Kind.OPTION, _OPTION_COST, _LINEAR_COST)
        # a scenario's vol shock is the 30-day point's (MarketScenarios); other expiries move by
        # (tenor / max(DTE, floor))^p times as much, as in the risk-matrix vol shocks
        if vol_term_structure is not None and not isinstance(vol_term_structure, VolShock):
            raise InvalidTypeError("vol_term_structure: expected a dpm.models.scenarios.VolShock or None")
        self.vol_term_structure = vol_term_structure
        if vol_term_structure is None:
            self._vscale = np.ones(M)
        else:
            vt = vol_term_structure
            dte = np.maximum(self._T * 365.0, vt.floor_days)
            power = np.where(dte <= vt.tenor_days, vt.short_power, vt.long_power)
            self._vscale = np.ascontiguousarray((vt.tenor_days / dte) ** power)

    # ------------------------------------------------------------------ helpers
    def _workers(self, workers: int | None) -> int:
        return _parallel.resolve_workers(self.workers if workers is None else workers)

    def _moves(self, scenarios: MarketScenarios) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
        """``U x (S + 8)`` price moves and vol multipliers in the table's underlying order (8 padding
        columns of no move: the kernel revalues options in full groups of 8), coverage, ``S``, dt."""
        if not isinstance(scenarios, MarketScenarios):
            raise InvalidTypeError(f"scenarios: expected MarketScenarios, got {type(scenarios).__name__}")
        unds = tuple(self.instruments.underlyings)
        S = len(scenarios.names)
        U = len(unds)
        move = np.zeros((U, S + 8))
        vshock = np.zeros((U, S + 8))
        covered = np.zeros(U, dtype=bool)
        pm, vs = scenarios.price_move, scenarios.vol_shock
        # MarketScenarios validates on construction; checked again because its arrays are what
        # the nogil kernel reads (a NaN or a move <= -1 would give silent garbage there).
        for arr, nm in ((pm, "price_move"), (vs, "vol_shock")):
            bad = ~np.isfinite(arr) | (arr <= -1.0)
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0])
                raise InvalidInputError(
                    f"scenarios.{nm}: must be finite and > -1: scenario {scenarios.names[i]!r}, "
                    f"underlying {scenarios.underlyings[j]!r} has {arr[i, j]!r}")
        for j, u in enumerate(unds):
            if u in scenarios.underlyings:
                c = scenarios.underlyings.index(u)
                move[j, :S] = pm[:, c]
                vshock[j, :S] = vs[:, c]
                covered[j] = True
        h = scenarios.horizon_days
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 0:
            raise InvalidInputError(f"scenarios.horizon_days: expected an int >= 0, got {h!r}")
        return move, vshock, covered, S, float(h) / 365.0

    def _why_uncovered(self, i: int, covered: np.ndarray | None) -> str:
        unds = self.instruments.underlyings
        u = unds[int(self._und[i])]
        if not self._in_market[i]:
            return f"its underlying {u!r} is not in the market snapshot"
        if self._expired[i]:
            e = int(self.instruments.expiry_ms[i])
            return (f"it has expired: expiry {_iso(e)} is not after the snapshot time "
                    f"{_iso(self.market.timestamp_ms)}")
        if self._bad_data[i]:
            f, v = self._bad_inputs[i]
            return f"unusable market data: forward {f!r}, implied vol {v!r}"
        if covered is not None and not covered[int(self._und[i])]:
            return f"the scenarios have no moves for its underlying {u!r}"
        return "its scenario P&L is not finite"

    def _check_book(self, book: AccountBook) -> None:
        if not isinstance(book, AccountBook):
            raise InvalidTypeError(f"accounts: expected an AccountBook, got {type(book).__name__}")
        book.require_table(self.instruments)

    def _check_held(self, book: AccountBook, ok: np.ndarray, covered: np.ndarray | None) -> None:
        """MarketDataError naming the first account holding an instrument with ``ok[i]`` False."""
        hit = None if ok.all() else book.first_position_in(~ok)
        if hit is not None:
            a, i = hit
            raise MarketDataError(
                f"account {book.account_id[a]!r}: instrument {self.instruments.name[i]!r} cannot be "
                f"revalued: {self._why_uncovered(i, covered)}")

    def _fill(self, move: np.ndarray, vshock: np.ndarray, dt: float, c0: int, c1: int,
              out: np.ndarray, workers: int) -> None:
        """Revalue scenarios ``[c0, c1)`` of every instrument into the blocked buffer ``out``."""
        M = len(self.instruments)

        def run(a: int, b: int) -> None:
            _tail.revalue_joint(a, b, c0, c1, self._kind, self._inverse, self._und, self._F, self._K,
                                self._cp, self._T, self._cs, self._vol, self._vscale, self._index, move,
                                vshock, dt, out)

        if M:
            _parallel.run_bounds(run, _balanced_bounds(self._cost, _PARTS_PER_WORKER * workers), workers)

    # ------------------------------------------------------------------ revaluation
    def revalue(self, scenarios: MarketScenarios, *, workers: int | None = None) -> np.ndarray:
        """``M x S`` P&L (USD per contract) of every instrument in every scenario.

        Options age by the scenarios' horizon and their vols are multiplied by ``1 + vol_shock``
        (sticky strike). Instruments that cannot be revalued (underlying not in the market or not
        covered by the scenarios, or expired) get NaN rows; :meth:`var_es` and :meth:`stress`
        reject accounts holding them.
        """
        move, vshock, covered, S, dt = self._moves(scenarios)
        w = self._workers(workers)
        M = len(self.instruments)
        out = np.empty((1, M, S))
        if S:
            self._fill(move, vshock, dt, 0, S, out, w)
        P = out[0]
        bad = ~(self._available & covered[self._und]) if M else np.zeros(0, dtype=bool)
        P[bad, :] = np.nan
        return P

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
            self._check_held(accounts, np.isfinite(P).all(axis=1) if S else np.ones(M, dtype=bool), None)
        elif isinstance(scenarios, MarketScenarios):
            move, vshock, covered, S, dt = self._moves(scenarios)
            self._check_held(accounts, self._available & covered[self._und] if M else self._available, covered)
        else:
            raise InvalidTypeError(
                f"scenarios: expected MarketScenarios or an M x S ndarray, got {type(scenarios).__name__}")
        if S == 0:
            raise InvalidInputError("scenarios: no scenarios")
        # a block wider than the scenarios only pads with zeros (results never depend on it)
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
        # per-account candidate buffers (see tail_kernels.h), compacted to the k best when full;
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
            acc_bounds = _balanced_bounds(acc_cost, _PARTS_PER_WORKER * w if w > 1 else 1)
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
                    self._fill(move, vshock, dt, c0, c1, Pb, w)

                def run(a: int, b: int, Pb: np.ndarray = Pb, c0: int = c0, c1: int = c1,
                        ip: np.ndarray = ip, cv: np.ndarray = cv, ci: np.ndarray = ci,
                        cn: np.ndarray = cn, thr: np.ndarray = thr) -> None:
                    _tail.tail_rows(a, b, ip, inst, qty, Pb, c1 - c0, c0, k, cv, ci, cn, thr)

                _parallel.run_bounds(run, acc_bounds, w)

            def finish(a: int, b: int, cv: np.ndarray = cv, ci: np.ndarray = ci, cn: np.ndarray = cn) -> None:
                _tail.tail_finish(a, b, k, cv, ci, cn)

            _parallel.run_bounds(finish, acc_bounds, w)
            # sorted by the kernel: worst first, ties by scenario index (earliest tied scenario kept)
            np.add(cv[:, :k], 0.0, out=losses[g0:g1])  # + 0.0: no -0.0 for flat accounts
            idx[g0:g1] = ci[:, :k]
        var = np.empty((len(lv), N))
        es = np.empty((len(lv), N))
        for r, x in enumerate(lv):
            var[r], es[r] = _var_es_from_worst(losses, S, x)
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
            u = unds[int(self._und[j])]
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
        P = scenarios if isinstance(scenarios, np.ndarray) else self.revalue(scenarios)
        sub = accounts.subset([i])
        self._check_held(sub, np.isfinite(P).all(axis=1) if P.shape[1] else np.ones(P.shape[0], bool), None)
        x = (P[sub.instrument_idx] * sub.quantity[:, None]).T
        return [str(self.instruments.name[j]) for j in sub.instrument_idx], x, lv[0]

    # ------------------------------------------------------------------ stress tests
    def stress(self, accounts: AccountBook, scenarios: MarketScenarios, *, workers: int | None = None) -> StressResult:
        """Loss of every account in every scenario (full revaluation), and each account's worst.

        Memory is ``N x S`` (the full loss table is the result): meant for tens of named scenarios.
        """
        self._check_book(accounts)
        covered = self._moves(scenarios)[2]
        M = len(self.instruments)
        self._check_held(accounts, self._available & covered[self._und] if M else self._available, covered)
        P = self.revalue(scenarios, workers=workers)
        N, S = len(accounts), P.shape[1]
        if S == 0:
            raise InvalidInputError("scenarios: no scenarios")
        out = np.empty((N, S))
        indptr, inst, qty = accounts.indptr, accounts.instrument_idx, accounts.quantity
        w = self._workers(workers)

        def run(a: int, b: int) -> None:
            _tail.gather_rows(a, b, indptr, inst, qty, P, out)

        _parallel.run_bounds(run, _balanced_bounds(np.diff(indptr).astype(np.float64) + 1.0, _PARTS_PER_WORKER * w), w)
        loss = -out
        loss += 0.0  # no negative zeros for flat accounts
        worst = np.argmax(loss, axis=1) if N else np.zeros(0, dtype=np.int64)
        worst_loss = loss[np.arange(N), worst] if N else np.zeros(0)
        return StressResult(accounts.account_id, tuple(scenarios.names), loss, worst, worst_loss)


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
