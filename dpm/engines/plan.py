"""One revaluation plan: the market and the instrument table packed once for the revaluation kernel.

Margin (:mod:`dpm.engines.margin`), VaR/ES and stress (:mod:`dpm.engines.risk`) and solvency all
ask a :class:`RevaluationPlan` for the instrument x scenario P&L of a
:class:`~dpm.models.scenarios.ScenarioSet`; the one kernel (``dpm/_core/revalue.h``) fills it, so
the same set gives the same matrix bit for bit whichever engine asks.

The plan decides, once per (market, table):

* **availability** — an instrument can be revalued when its underlying is in the market, it has not
  expired, and its market data are usable (finite forward > 0; an option's vol finite and > 0).
  The bad-data policy is the same everywhere: an unusable instrument is kept, and any request that
  needs it (an account holding it, an order on it) fails with a
  :class:`~dpm.errors.MarketDataError` naming the account, the instrument and the reason;
* **packing** — forwards, times, base vols, contract sizes and the conversion of each instrument's
  native P&L (coin for inverse, quote currency for linear) into the plan's currency (USD, or the
  coin of the instrument's underlying: Deribit's S:PM);
* **vols** — sticky strike (each option keeps its vol) or sticky moneyness (the surface read at
  each scenario's forward), and each scenario set's vol term structure per expiry.
"""
from __future__ import annotations

import datetime as _dt
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm._core import _revalue
from dpm._util import parallel as _parallel
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.models.scenarios import DERIBIT_TERM, ScenarioSet, VolTermStructure

__all__ = ["CONV_DIV_PRICE", "CONV_MUL_PRICE", "CONV_NONE", "PackedScenarios", "RevaluationPlan",
           "balanced_bounds"]

#: conversion of native P&L into the plan's currency (dpm_types.h DPM_CONV_*)
CONV_NONE, CONV_MUL_PRICE, CONV_DIV_PRICE = 0, 1, 2
# relative cost of revaluing one row (options need Black-76), for balancing threads
_OPTION_COST, _LINEAR_COST = 1.0, 0.05
# ranges of rows per thread, taken dynamically (evens out load from other processes)
_PARTS_PER_WORKER = 4
#: plausibility bounds of the bad-data policy: a forward or perpetual mark within this factor of its
#: index, an option's strike within this factor of its forward, its vol in [VOL_MIN, VOL_MAX]
PRICE_RATIO_MAX = 3.0
STRIKE_RATIO_MAX = 1000.0
VOL_MIN, VOL_MAX = 0.01, 25.0
_MS_PER_YEAR = 365.0 * 86400.0 * 1000.0


def balanced_bounds(cost: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Split ``range(len(cost))`` into at most ``parts`` contiguous ranges of about equal cost."""
    n = cost.size
    if n == 0:
        return []
    parts = max(1, min(parts, n))
    c = np.cumsum(cost)
    cuts = np.searchsorted(c, c[-1] * np.arange(1, parts) / parts, side="right")
    # a few cut points: a Python set (np.unique would import numpy.ma, 25-35 ms, in every process)
    edges = sorted({0, n, *(np.clip(cuts, 1, n - 1).tolist() if n > 1 else [])})
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _iso(ms: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # beyond datetime's range: the raw number says it
        return f"{ms} ms since 1970"


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class PackedScenarios:
    """A scenario set laid out for the kernel in the table's underlying order.

    ``move`` / ``vshock``: U x (S + 8) (8 padding columns of no move: options are revalued in full
    groups of 8); ``covered``: U, the set moves this underlying; ``vscale`` / ``vmode``: M, each
    instrument's term-structure factor and vol-shock mode; ``min_up``: U; ``dt``: years.
    """

    scenarios: ScenarioSet
    S: int
    move: np.ndarray
    vshock: np.ndarray
    covered: np.ndarray
    vscale: np.ndarray
    vmode: np.ndarray
    min_up: np.ndarray
    dt: float


class RevaluationPlan:
    """The market and instrument table packed once for the revaluation kernel.

    Parameters
    ----------
    market : MarketSnapshot
    instruments : InstrumentTable
    currency : {"usd", "coin"}
        Currency of the P&L: USD, or the coin of each instrument's underlying (coin-settled risk).
    sticky : {"strike", "moneyness"}
        Base vols fixed per option, or read from the surface at each scenario's forward.
    default_term : VolTermStructure
        Term structure for scenario sets that carry none (Deribit's shape by default).
    perpetual_basis : {"mark", "index"}
        Price a scenario moves for perpetuals: their mark (Deribit) or the index (OKX shocks a
        reference price); ``mark`` keeps each perpetual's own mark either way.
    """

    def __init__(self, market: MarketSnapshot, instruments: InstrumentTable, *, currency: str = "usd",
                 sticky: str = "strike", default_term: VolTermStructure = DERIBIT_TERM,
                 perpetual_basis: str = "mark") -> None:
        if not isinstance(market, MarketSnapshot):
            raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
        if not isinstance(instruments, InstrumentTable):
            raise InvalidTypeError(f"instruments: expected an InstrumentTable, got {type(instruments).__name__}")
        if currency not in ("usd", "coin"):
            raise InvalidInputError(f"currency: expected 'usd' or 'coin', got {currency!r}")
        if sticky not in ("strike", "moneyness"):
            raise InvalidInputError(f"sticky: expected 'strike' or 'moneyness', got {sticky!r}")
        if not isinstance(default_term, VolTermStructure):
            raise InvalidTypeError("default_term: expected a VolTermStructure")
        if perpetual_basis not in ("mark", "index"):
            raise InvalidInputError(f"perpetual_basis: expected 'mark' or 'index', got {perpetual_basis!r}")
        self.market = market
        self.instruments = instruments
        self.currency = currency
        self.perpetual_basis = perpetual_basis
        self.sticky = sticky
        self.default_term = default_term
        t = instruments
        M = len(t)
        self.underlyings: tuple[str, ...] = tuple(t.underlyings)
        U = len(self.underlyings)
        self.kind = _ro(np.ascontiguousarray(t.kind, dtype=np.int8))
        self.inverse = _ro(np.ascontiguousarray(t.inverse, dtype=np.uint8))
        self.und = _ro(np.ascontiguousarray(t.underlying, dtype=np.int32))
        in_market = np.array([u in market for u in self.underlyings], dtype=bool)
        self.index = _ro(np.array([float(market[u].index_price) if in_market[j] else 1.0
                                   for j, u in enumerate(self.underlyings)]))
        self._in_market = in_market[self.und] if M else np.zeros(0, dtype=bool)
        expiry = np.asarray(t.expiry_ms, dtype=np.int64)
        dated = (self.kind == Kind.FUTURE) | (self.kind == Kind.OPTION)
        self._expired = dated & (expiry <= market.timestamp_ms)
        available = self._in_market & ~self._expired
        F = np.ones(M)
        T = np.zeros(M)
        vol = np.zeros(M)
        self.K_raw = np.where(self.kind == Kind.OPTION, np.asarray(t.strike, dtype=np.float64), 1.0) if M else np.zeros(0)
        idx = np.flatnonzero(available)
        if idx.size:
            sub = t if idx.size == M else t.subset(available)
            inp = market.instrument_inputs(sub)
            F[idx] = inp.forward
            T[idx] = inp.time
            vol[idx] = np.where(self.kind[idx] == Kind.OPTION, inp.vol, 0.0)
        is_opt = self.kind == Kind.OPTION
        # the bad-data policy: unusable market data make the instrument unavailable, reported by
        # name when something needs it; never priced with a substitute value
        reasons: dict[int, str] = {}

        def refuse(mask: np.ndarray, why) -> None:
            for j in np.flatnonzero(mask & available):
                reasons.setdefault(int(j), why(int(j)))

        S_i = self.index[self.und] if M else np.zeros(0)
        refuse(~(np.isfinite(F) & (F > 0.0)), lambda j: f"unusable market data: forward {float(F[j])!r}")
        refuse(~(np.isfinite(T) & (T >= 0.0)), lambda j: f"unusable market data: time {float(T[j])!r}")
        refuse(is_opt & ~(np.isfinite(vol) & (vol > 0.0)), lambda j: f"unusable market data: implied vol {float(vol[j])!r}")
        # implausible values, checked against the rest of the market: one absurd number (a price off by
        # a factor, a vol in percent) must stop the call instead of giving a margin that may be lower
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = F / S_i
            moneyness = self.K_raw / F
        refuse(~((ratio >= 1.0 / PRICE_RATIO_MAX) & (ratio <= PRICE_RATIO_MAX)),
               lambda j: f"implausible market data: forward/mark {float(F[j])!r} against index {float(S_i[j])!r}")
        refuse(is_opt & ~((vol >= VOL_MIN) & (vol <= VOL_MAX)),
               lambda j: f"implausible market data: implied vol {float(vol[j])!r} outside [{VOL_MIN}, {VOL_MAX}]")
        refuse(is_opt & ~((moneyness >= 1.0 / STRIKE_RATIO_MAX) & (moneyness <= STRIKE_RATIO_MAX)),
               lambda j: f"implausible market data: strike {float(self.K_raw[j])!r} against forward {float(F[j])!r}")
        # an underlying whose perpetual mark and index disagree: none of its prices can be trusted
        for jj, u in enumerate(self.underlyings):
            if not in_market[jj]:
                continue
            perp = float(market[u].perpetual_price)
            r = perp / float(self.index[jj])
            if not (1.0 / PRICE_RATIO_MAX <= r <= PRICE_RATIO_MAX):
                refuse(self.und == jj, lambda j, perp=perp, u=u: (
                    f"implausible market data: {u} perpetual mark {perp!r} against index {float(self.index[jj])!r}"))
        bad = np.zeros(M, dtype=bool)
        bad[list(reasons)] = True
        self._bad_inputs = reasons
        available &= ~bad
        F[~available] = 1.0
        vol[~available] = 0.0
        T[~available] = 0.0
        self.available = _ro(available)
        #: each instrument's own mark / forward (add-on deltas and notionals are taken at it)
        self.mark = _ro(F.copy())
        if perpetual_basis == "index":
            perp = available & (self.kind == Kind.PERPETUAL)
            F[perp] = self.index[self.und[perp]]
        self.F = _ro(F)
        self.T = _ro(T)
        self.vol = _ro(vol)
        self.K = _ro(np.where(is_opt, np.nan_to_num(np.asarray(t.strike, dtype=np.float64), nan=1.0), 1.0))
        self.cp = _ro(np.where(np.asarray(t.option_type) < 0, -1.0, 1.0))
        # a linear contract settled in a currency with a USD rate (USDT at 0.99954): its P&L and value
        # are that many USD per unit of settlement currency, so its size in USD terms scales by the rate
        cs = np.array(t.contract_size, dtype=np.float64)
        for ccy, rate in market.usd_rates.items():
            cs[(np.asarray(t.settlement) == ccy) & (self.inverse == 0)] *= rate
        self.cs = _ro(cs)
        coin = currency == "coin"
        self.conv = _ro(np.where(self.inverse == 1, CONV_NONE if coin else CONV_MUL_PRICE,
                                 CONV_DIV_PRICE if coin else CONV_NONE).astype(np.int8))
        #: plan currency -> USD per underlying (the index in coin mode, 1 in USD mode)
        self.to_usd = _ro(self.index.copy() if coin else np.ones(U))
        self._cost = np.where(is_opt, _OPTION_COST, _LINEAR_COST)
        self._pack_cache: dict[int, tuple[Any, PackedScenarios]] = {}

    # ------------------------------------------------------------------ availability
    def __len__(self) -> int:
        return len(self.instruments)

    def reason(self, i: int, covered: np.ndarray | None = None) -> str:
        """Why instrument ``i`` cannot be revalued (or by the scenarios ``covered``)."""
        u = self.underlyings[int(self.und[i])]
        if not self._in_market[i]:
            return f"no market data for its underlying {u!r}"
        if self._expired[i]:
            e = int(self.instruments.expiry_ms[i])
            return (f"it has expired: expiry {_iso(e)} is not after the snapshot time "
                    f"{_iso(self.market.timestamp_ms)}")
        if i in self._bad_inputs:
            return self._bad_inputs[i]
        if covered is not None and not covered[int(self.und[i])]:
            return f"the scenarios have no moves for its underlying {u!r}"
        return "its scenario P&L is not finite"

    def usable(self, covered: np.ndarray | None = None) -> np.ndarray:
        """Instruments that can be revalued (and whose underlying the scenarios cover)."""
        if covered is None or not len(self):
            return self.available
        return self.available & covered[self.und]

    def check_held(self, book: Any, ok: np.ndarray, covered: np.ndarray | None = None) -> None:
        """MarketDataError naming the first account holding an instrument with ``ok[i]`` False."""
        hit = None if ok.all() else book.first_position_in(~ok)
        if hit is not None:
            a, i = hit
            raise MarketDataError(
                f"account {book.account_id[a]!r}: instrument {self.instruments.name[i]!r} cannot be "
                f"revalued: {self.reason(i, covered)}")

    def check_orders(self, ids: np.ndarray) -> None:
        """MarketDataError naming the first order on an instrument that cannot be revalued."""
        na = ~self.available[ids] if ids.size else np.zeros(0, dtype=bool)
        if na.any():
            i = int(ids[np.flatnonzero(na)[0]])
            raise MarketDataError(f"orders: {self.instruments.name[i]!r} cannot be revalued: {self.reason(i)}")

    # ------------------------------------------------------------------ scenarios
    def pack(self, scenarios: ScenarioSet) -> PackedScenarios:
        """The set laid out in the table's underlying order (memoised per set object)."""
        if not isinstance(scenarios, ScenarioSet):
            raise InvalidTypeError(f"scenarios: expected a ScenarioSet, got {type(scenarios).__name__}")
        hit = self._pack_cache.get(id(scenarios))
        if hit is not None and hit[0] is scenarios:
            return hit[1]
        U, M = len(self.underlyings), len(self)
        S = len(scenarios)
        # checked again (cheap) because these arrays are what the nogil kernel reads: a NaN or a move
        # <= -1 would give silent garbage there
        for nm in ("price_move", "vol_shock"):
            arr = getattr(scenarios, nm)
            if not (isinstance(arr, np.ndarray) and arr.shape == (S, len(scenarios.underlyings))):
                raise InvalidInputError(f"scenarios.{nm}: expected shape {(S, len(scenarios.underlyings))}")
            bad = ~np.isfinite(arr) | (arr <= -1.0)
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0])
                raise InvalidInputError(
                    f"scenarios.{nm}: must be finite and > -1: scenario {scenarios.names[i]!r}, "
                    f"underlying {scenarios.underlyings[j]!r} has {arr[i, j]!r}")
        h = scenarios.horizon_days
        if not (np.isfinite(h) and h >= 0):
            raise InvalidInputError(f"scenarios.horizon_days: expected a finite number >= 0, got {h!r}")
        move = np.zeros((U, S + 8))
        vshock = np.zeros((U, S + 8))
        covered = np.zeros(U, dtype=bool)
        vscale = np.ones(M)
        vmode = np.zeros(M, dtype=np.int8)
        min_up = np.zeros(U)
        for j, u in enumerate(self.underlyings):
            if u not in scenarios.underlyings:
                continue
            c = scenarios.underlyings.index(u)
            move[j, :S] = scenarios.price_move[:, c]
            vshock[j, :S] = scenarios.vol_shock[:, c]
            covered[j] = True
            term = scenarios.term(u, self.default_term)
            sel = self.und == j
            vscale[sel] = term.factor(self.T[sel])
            vmode[sel] = term.code
            min_up[j] = term.min_vol_up
        packed = PackedScenarios(scenarios, S, _ro(move), _ro(vshock), _ro(covered), _ro(vscale), _ro(vmode),
                                 _ro(min_up), float(scenarios.horizon_days) / 365.0)
        if len(self._pack_cache) > 16:
            self._pack_cache.clear()
        self._pack_cache[id(scenarios)] = (scenarios, packed)
        return packed

    def _volmat(self, packed: PackedScenarios, c0: int, c1: int) -> np.ndarray | None:
        """Sticky moneyness: each option's vol read from its surface at each scenario's forward."""
        if self.sticky == "strike":
            return None
        M = len(self)
        width = -(-(c1 - c0) // 8) * 8
        vm = np.zeros((M, width))
        opt = np.flatnonzero((self.kind == Kind.OPTION) & self.available)
        for j, u in enumerate(self.underlyings):
            sel = opt[self.und[opt] == j]
            if sel.size == 0 or not packed.covered[j]:
                continue
            surf = self.market[u].vol_surface
            m = packed.move[j, c0:c0 + width]
            K = np.repeat(self.K[sel], width)
            T = np.repeat(self.T[sel], width)
            F1 = (self.F[sel][:, None] * (1.0 + m[None, :])).ravel()
            v = np.asarray(surf.implied_vol(K, T, F1), dtype=np.float64).reshape(sel.size, width)
            bad = ~(np.isfinite(v) & (v > 0))
            if bad.any():
                r, k = (int(x) for x in np.argwhere(bad)[0])
                raise MarketDataError(
                    f"instrument {self.instruments.name[sel[r]]!r}: the vol surface gives {v[r, k]!r} at the "
                    f"forward of scenario {packed.scenarios.names[c0 + k]!r} (sticky moneyness)")
            vm[sel] = v
        return vm

    def revalue_into(self, packed: PackedScenarios, c0: int, c1: int, out: np.ndarray, workers: int,
                     rows: np.ndarray | None = None) -> None:
        """Scenarios ``[c0, c1)`` of every instrument (or of the instruments ``rows``, a boolean mask)
        into the blocked buffer ``out`` (n_blocks x M x B)."""
        M = len(self)
        if not M or c1 <= c0:
            return
        volmat = self._volmat(packed, c0, c1)

        def run(a: int, b: int) -> None:
            _revalue.revalue(a, b, c0, c1, self.kind, self.inverse, self.conv, self.und, self.F, self.K, self.cp,
                             self.T, self.cs, self.vol, packed.vscale, packed.vmode, self.index, packed.min_up,
                             packed.move, packed.vshock, packed.dt, volmat, out)

        if rows is None:
            bounds = balanced_bounds(self._cost, _PARTS_PER_WORKER * workers)
        else:  # the runs of rows to compute, each split by cost like the whole table
            bounds = []
            edges = np.flatnonzero(np.diff(np.concatenate([[False], rows, [False]]).astype(np.int8)))
            for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
                bounds += [(a + x, a + y) for x, y in balanced_bounds(self._cost[a:b], _PARTS_PER_WORKER * workers)]
        _parallel.run_bounds(run, bounds, workers)

    def _same_rows(self, prev: "RevaluationPlan", packed: PackedScenarios, prev_packed: PackedScenarios) -> np.ndarray:
        """Instruments whose revaluation inputs are bit for bit those of ``prev`` (a plan of the same
        table and conventions on an earlier market; both packings are of the one scenario set the
        caller revalues): their P&L rows are the same."""
        M = len(self)
        if (prev.instruments is not self.instruments or len(prev) != M or prev.currency != self.currency
                or prev.sticky != self.sticky or prev.default_term is not self.default_term
                or prev.perpetual_basis != self.perpetual_basis):
            return np.zeros(M, dtype=bool)

        def eq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return x.view(np.int64) == y.view(np.int64)  # bits: NaN rows are never reused

        same = (eq(self.F, prev.F) & eq(self.T, prev.T) & eq(self.vol, prev.vol) & eq(self.K, prev.K)
                & eq(self.cs, prev.cs) & (self.available == prev.available) & eq(packed.vscale, prev_packed.vscale)
                & (packed.vmode == prev_packed.vmode))
        und_same = eq(self.index, prev.index) & (packed.covered == prev_packed.covered) \
            & eq(packed.min_up, prev_packed.min_up)
        if self.sticky != "strike":  # the scenarios' vols are read from the surfaces
            for j, u in enumerate(self.underlyings):
                if u in self.market and u in prev.market and \
                        self.market[u].vol_surface is not prev.market[u].vol_surface:
                    und_same[j] = False
        return same & und_same[self.und] if M else same

    def revalue(self, scenarios: ScenarioSet, *, workers: int | None = None, padded: bool = False,
                unavailable: float = np.nan,
                reuse: "tuple[RevaluationPlan, np.ndarray] | None" = None) -> np.ndarray:
        """``M x S`` P&L per contract, in the plan's currency, of every instrument in every scenario.

        Rows of instruments that cannot be revalued (or whose underlying the set does not move)
        are filled with ``unavailable`` (NaN by default). ``padded=True`` returns the ``M x Sp``
        matrix with ``Sp`` a multiple of 8 (zero columns after the last scenario), rows on 64-byte
        boundaries: the layout the gather kernels read.

        ``reuse=(prev, P_prev)``: the same call's result on a plan of an earlier market (same
        table, conventions, ``padded`` and ``unavailable``, and the same ``scenarios`` object: the
        caller guarantees it, P_prev does not record its set); rows whose inputs did not change are
        copied from it instead of revalued (a tick that moves one underlying).
        """
        packed = self.pack(scenarios)
        w = _parallel.resolve_workers(workers)
        M, S = len(self), packed.S
        Sp = max(8, -(-S // 8) * 8)
        out = _zeros_aligned((1, M, Sp))
        rows = None
        if reuse is not None:
            prev, P_prev = reuse
            same = self._same_rows(prev, packed, prev.pack(scenarios))
            if P_prev.shape == ((M, Sp) if padded else (M, S)) and same.any():
                out[0][same, : P_prev.shape[1]] = P_prev[same]
                rows = ~same
        if rows is None or rows.any():
            self.revalue_into(packed, 0, S, out, w, rows)
        P = out[0]
        bad = ~self.usable(packed.covered)
        if bad.any():
            P[bad, :] = unavailable
            if padded:
                P[bad, S:] = 0.0
        return P if padded else P[:, :S]


def _zeros_aligned(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
    """C-contiguous float64 zeros whose data starts on an ``align``-byte boundary (rows of a multiple
    of 8 doubles then start on cache lines: whole-line vector loads in the gather)."""
    n = int(np.prod(shape))
    buf = np.zeros(n + align // 8)
    off = (-buf.ctypes.data % align) // 8
    return buf[off: off + n].reshape(shape)
