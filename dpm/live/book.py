"""LiveBook: a mutable, thread-safe book of accounts margined incrementally as events arrive.

Layout
------
Positions live in CSR arrays (``indptr``, ``inst``, ``qty``), the layout ``MarginEngine.margin_many``
and its C kernel read, with one *row* per account and, for an account with resting orders, two
more rows: the positions with every buy order filled and with every sell order filled (the open-
orders rule, ``docs/live.md``). Rows are grouped by the set of underlyings the account touches, so
the accounts a market tick exposes are a few contiguous row ranges.

A fill that only changes the size of an existing position (the common case) writes the quantity
in place. A fill that opens or closes a position, and any order change, moves the account's rows
to a small per-account overflow ("dirty" accounts); the CSR is rebuilt without them from time to
time (:meth:`LiveBook.compact`, vectorised). Either way an account is re-margined alone: its rows
are copied into a scratch CSR bound once to the kernel (``MarginJob.run`` on one account, a few
microseconds), never by rebuilding a book.

A market tick builds the new engine once (``MarginEngine.with_market``), then runs the same kernel
over the row ranges of the exposed accounts and over the dirty ones. Because every account is
reduced by the same kernel over the same positions in the same order, incremental results are
bit-for-bit those of ``MarginEngine(market).margin_many`` on the same book (tests check it).

Money
-----
Balances are per account and currency (they may go negative: a debt). Equity is the collateral
value (``max(b, 0) * price * (1 - haircut) + min(b, 0) * price`` summed over currencies in their
order) plus the mark value of options and spot (``MarginEngine.position_value``). Futures and
perpetuals are marked to market into the balance of their settlement currency: at a fill
(``q * cs * (mark - price)``, inverse ``q * cs * (1/price - 1/mark)``), at every tick
(``q * cs * (F_new - F_old)``, inverse ``q * cs * (1/F_old - 1/F_new)``) and at expiry; option and
spot premiums (``q * cs * price``) and fees are paid from it. ``docs/live.md`` has the rules.

Concurrency
-----------
One writer at a time changes the book (:meth:`apply`, or :meth:`prepare` then :meth:`commit`);
:meth:`prepare` computes a change without modifying anything, so readers (:meth:`check`,
:meth:`margin`, ...) run during the expensive part of a tick and are excluded only during the
short :meth:`commit`.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dpm._core import _checkpath, _gather, _live
from dpm._util import parallel as _parallel
from dpm._util.release import held_back, release_later
from dpm.engines.margin import MarginEngine
from dpm.errors import (
    DPMError,
    InvalidInputError,
    InvalidTypeError,
    MarketDataError,
    UnknownAccountError,
    UnknownInstrumentError,
)
from dpm.live.alerts import (
    CALL,
    LEVELS,
    LIQUIDATION,
    OK,
    Alert,
    AlertBus,
    AlertPolicy,
    alert_kind,
    next_level,
    next_levels,
)
from dpm.live.events import (
    MAX_QUANTITY,
    CancelOrder,
    Event,
    EventRejected,
    Fill,
    Funding,
    MarketTick,
    OpenAccount,
    PlaceOrder,
    Settle,
    Transfer,
)
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.portfolio.accounts import DEFAULT_CURRENCIES, AccountBook

__all__ = ["AccountStatus", "CheckResult", "LiveBook"]

#: rows of an account with resting orders: positions, + all buys, + all sells
_VARIANTS_WITH_ORDERS = 3
#: an order whose remaining quantity is within this fraction of a fill is filled completely
_ORDER_FILL_TOLERANCE = 1e-9
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)
_EMPTY_I.setflags(write=False)
_EMPTY_F.setflags(write=False)


@dataclass(frozen=True)
class CheckResult:
    """Answer of a pre-trade check (USD)."""

    accepted: bool
    initial_margin: float          # now (open orders included)
    initial_margin_after: float    # with the checked orders resting
    maintenance_margin: float
    equity: float
    reason: str = ""


@dataclass(frozen=True)
class AccountStatus:
    """Margin of one live account (USD)."""

    account: str
    initial_margin: float
    maintenance_margin: float
    equity: float
    collateral_value: float
    position_value: float
    margin_ratio: float
    level: str
    version: int
    open_orders: int
    as_of_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _gray_rank(mask: np.ndarray) -> np.ndarray:
    """Position of each mask in the binary-reflected Gray code sequence: sorting by it makes the
    masks containing any given bit a few contiguous runs (one run for two underlyings)."""
    r = mask.astype(np.int64).copy()
    shift = 1
    while shift < 64:
        r ^= r >> shift
        shift *= 2
    return r


def _result_buffers(n: int, U: int) -> tuple[np.ndarray, ...]:
    """Kernel outputs for ``n`` rows: total, value, joint (n), L, scan, worst (int32), roll, dshock,
    floor (n x U), in the kernel's binding order; the five per-underlying arrays are views of one
    (5, n, U) block (the last item) so one call checks them all."""
    n = max(n, 1)
    f = [np.empty(n) for _ in range(3)]
    per = np.empty((5, n, U))
    worst = np.empty((n, U), dtype=np.int32)
    return f[0], f[1], f[2], per[0], per[1], worst, per[2], per[3], per[4], per


def _bad_rows(outs: tuple, rows: Any) -> np.ndarray:
    """Rows whose figures are not all finite. The kernel turns a NaN charge of an underlying into
    its floor (``lu > floor ? lu : floor`` is false for NaN), so a finite total can hide a
    non-finite scan or add-on: every per-underlying figure is checked (fail closed)."""
    fin = np.isfinite(outs[9][:, rows, :])
    # plane by plane (an .all over axes (0, 2) is a strided reduction, 8x slower)
    both = fin[0]
    for k in range(1, fin.shape[0]):
        both &= fin[k]
    ok = np.isfinite(outs[0][rows]) & np.isfinite(outs[1][rows])
    for u in range(fin.shape[2]):
        ok &= both[:, u]
    return np.flatnonzero(~ok)


class _Generation:
    """Everything derived from one engine (one market): replaced as a whole by a tick."""

    __slots__ = ("engine", "agg", "F", "value", "available", "price", "rate_pos", "number", "im_factor",
                 "mm_factor", "scratch", "F_l", "value_l", "price_l", "rate_pos_l")

    def __init__(self, engine: MarginEngine, currencies: Sequence[str], number: int) -> None:
        self.engine = engine
        self.number = number
        self.agg = engine.aggregation_plan
        rp = engine.revaluation_plan
        self.F = rp.F
        self.value = engine.position_value
        self.available = rp.available
        # no price: 0, and a balance in it is refused (deposit) or fails the book (init)
        price, rate_pos = engine.collateral_rates(currencies)
        self.price = price
        self.rate_pos = rate_pos
        # plain lists for the one-account paths (scalar reads of a list are several times cheaper)
        self.F_l = self.F.tolist()
        self.value_l = self.value.tolist()
        self.price_l = price.tolist()
        self.rate_pos_l = rate_pos.tolist()
        self.im_factor = float(engine.model.im_factor)
        self.mm_factor = float(engine.model.mm_factor)
        self.scratch = _Scratch(self.agg, len(engine.underlyings))


class _Scratch:
    """A CSR of up to three rows bound once to the kernel: one account is margined by copying its
    rows in and calling ``MarginJob.run`` (no binding, no allocation per call)."""

    def __init__(self, agg: Any, U: int, capacity: int = 512) -> None:
        self.agg = agg
        self.U = U
        self._bind(capacity)

    def _bind(self, capacity: int) -> None:
        self.capacity = capacity
        self.indptr = np.zeros(_VARIANTS_WITH_ORDERS + 1, dtype=np.int64)
        self.inst = np.zeros(capacity, dtype=np.int64)
        self.qty = np.zeros(capacity)
        self.outs = _result_buffers(_VARIANTS_WITH_ORDERS, self.U)
        self.job = self.agg.margin_job(self.indptr, self.inst, self.qty, self.outs[:9])
        # views made once: the per-call cost is the copy in, the kernel, one check, the copy out
        n_max = _VARIANTS_WITH_ORDERS + 1
        self._figures = [self.outs[9][:, :n, :] for n in range(n_max)]
        self._tot = [self.outs[0][:n] for n in range(n_max)]
        self._val = [self.outs[1][:n] for n in range(n_max)]

    def run(self, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[list[float], list[float]]:
        n = len(rows)
        if n == 1:
            inst, qty = rows[0]
            m = len(inst)
            if m > self.capacity:
                self._bind(max(m, 2 * self.capacity))
            self.inst[:m] = inst
            self.qty[:m] = qty
            self.indptr[1] = m
        else:
            total = sum(len(r[0]) for r in rows)
            if total > self.capacity:
                self._bind(max(total, 2 * self.capacity))
            k = 0
            for j, (inst, qty) in enumerate(rows):
                m = len(inst)
                self.inst[k:k + m] = inst
                self.qty[k:k + m] = qty
                k += m
                self.indptr[j + 1] = k
        self.job.run(0, n)
        # one reduction: a non-finite (or overflowing) figure anywhere makes the sum non-finite
        if not math.isfinite(np.add.reduce(self._figures[n], axis=None)):
            return [math.nan] * n, [math.nan] * n  # the caller refuses the change
        return self._tot[n].tolist(), self._val[n].tolist()


def _merge(inst: np.ndarray, qty: np.ndarray, adds: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Positions plus ``adds`` (instrument, quantity) summed left to right (position + first add +
    second add ...), sorted by instrument, zero results dropped (a fill that closes a position)."""
    if not adds:
        return inst, qty
    q = qty.copy()
    extra: dict[int, float] = {}
    n = len(inst)
    for i, dq in adds:
        k = int(np.searchsorted(inst, i))
        if k < n and inst[k] == i:
            q[k] = q[k] + dq
        else:
            extra[i] = extra.get(i, 0.0) + dq
    if extra:
        ei = np.fromiter(extra.keys(), dtype=np.int64, count=len(extra))
        eq = np.fromiter(extra.values(), dtype=np.float64, count=len(extra))
        allv_i = np.concatenate([inst, ei])
        allv_q = np.concatenate([q, eq])
        o = np.argsort(allv_i, kind="stable")
        inst2, q = allv_i[o], allv_q[o]
    else:
        inst2 = inst
    keep = q != 0.0
    if not keep.all():
        inst2, q = inst2[keep], q[keep]
    return np.ascontiguousarray(inst2), np.ascontiguousarray(q)


def _order_adds(orders: dict[str, list]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Buy and sell legs of an account's resting orders, in the order they were placed."""
    buys = [(o[0], o[1]) for o in orders.values() if o[1] > 0.0]
    sells = [(o[0], o[1]) for o in orders.values() if o[1] < 0.0]
    return buys, sells


def _rows_of(inst: np.ndarray, qty: np.ndarray, orders: dict[str, list] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The kernel rows of an account: positions, and with orders, + all buys and + all sells."""
    if not orders:
        return [(inst, qty)]
    buys, sells = _order_adds(orders)
    return [(inst, qty), _merge(inst, qty, buys), _merge(inst, qty, sells)]


class _Overlay:
    """The rows of the dirty accounts (changed since the last compaction), packed in one arena.

    A change appends the account's rows (positions; with resting orders, also + buys and + sells)
    and points the account's entry at them; the rows they replace become garbage, dropped at the
    next compaction or when garbage outgrows the live rows. A tick gathers the rows of every
    exposed dirty account with a few numpy calls: the Python loop over per-account lists it
    replaces took about 4 ms of a 100,000-account tick with 1,200 dirty accounts.
    """

    def __init__(self) -> None:
        self.inst = np.empty(1 << 12, dtype=np.int64)
        self.qty = np.empty(1 << 12)
        self.used = 0   # arena entries written since the last clear
        self.live = 0   # of which the current rows of some account
        self.start = np.zeros((0, _VARIANTS_WITH_ORDERS), dtype=np.int64)
        self.length = np.zeros((0, _VARIANTS_WITH_ORDERS), dtype=np.int64)
        self.nrows = np.zeros(0, dtype=np.int64)  # 0: the account is clean (its rows are in the CSR)
        self.repacks = 0

    def grow_accounts(self, cap: int) -> None:
        n = self.nrows.shape[0]
        if cap <= n:
            return
        for name in ("start", "length"):
            old = getattr(self, name)
            new = np.zeros((cap, _VARIANTS_WITH_ORDERS), dtype=np.int64)
            new[:n] = old
            setattr(self, name, new)
        nr = np.zeros(cap, dtype=np.int64)
        nr[:n] = self.nrows
        self.nrows = nr

    def put(self, a: int, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """The rows of account ``a`` are now ``rows``."""
        need = 0
        for inst, _ in rows:
            need += len(inst)
        if self.nrows[a]:  # its old rows become garbage (and are not kept by a repack)
            self.live -= int(self.length[a].sum())
            self.nrows[a] = 0
            self.length[a] = 0
        if self.used + need > self.inst.shape[0]:
            self._make_room(need)
        k = self.used
        for v, (inst, qty) in enumerate(rows):
            m = len(inst)
            self.inst[k: k + m] = inst
            self.qty[k: k + m] = qty
            self.start[a, v] = k
            self.length[a, v] = m
            k += m
        self.used = k
        self.live += need
        self.nrows[a] = len(rows)

    def _make_room(self, need: int) -> None:
        if self.used - self.live > self.live:  # mostly garbage: repack the live rows
            accs = np.flatnonzero(self.nrows)
            row_acc, var, first = self.rows(accs)
            st, ln = self.start[row_acc, var], self.length[row_acc, var]
            idx, ptr = _segments(st, ln)
            size = max(self.inst.shape[0], 2 * (idx.size + need))
            inst, qty = np.empty(size, dtype=np.int64), np.empty(size)
            inst[: idx.size], qty[: idx.size] = self.inst[idx], self.qty[idx]
            self.start[row_acc, var] = ptr[:-1]
            self.inst, self.qty, self.used, self.live = inst, qty, idx.size, idx.size
            self.repacks += 1
        else:
            size = max(2 * self.inst.shape[0], self.used + 2 * need)
            for name, dtype in (("inst", np.int64), ("qty", np.float64)):
                old = getattr(self, name)
                new = np.empty(size, dtype=dtype)
                new[: self.used] = old[: self.used]
                setattr(self, name, new)

    def clear(self) -> None:
        self.nrows[:] = 0
        self.length[:] = 0
        self.used = self.live = 0

    def rows(self, accs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row of ``accs`` in order: its account, its variant, and each account's first row."""
        nr = self.nrows[accs]
        first = np.cumsum(nr) - nr
        row_acc = np.repeat(accs, nr)
        var = np.arange(row_acc.size, dtype=np.int64) - np.repeat(first, nr)
        return row_acc, var, first

    def gather(self, accs: np.ndarray) -> tuple[np.ndarray, ...]:
        """The rows of ``accs`` as one CSR: ``(indptr, inst, qty, row_acc, var, first)``."""
        row_acc, var, first = self.rows(accs)
        idx, indptr = _segments(self.start[row_acc, var], self.length[row_acc, var])
        return indptr, self.inst[idx], self.qty[idx], row_acc, var, first


def _segments(start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the concatenated segments ``[start, start + length)`` and their CSR pointers."""
    ptr = np.zeros(length.size + 1, dtype=np.int64)
    np.cumsum(length, out=ptr[1:])
    idx = np.arange(int(ptr[-1]), dtype=np.int64) + np.repeat(start - ptr[:-1], length)
    return idx, ptr


class _Change:
    """A prepared change of the book (see :meth:`LiveBook.prepare`)."""

    __slots__ = ("event", "kind", "data", "alerts_in")

    def __init__(self, event: Event | None, kind: str, **data: Any) -> None:
        self.event = event
        self.kind = kind
        self.data = data


class LiveBook:
    """Accounts, positions, resting orders and balances, margined as events arrive.

    Parameters
    ----------
    engine : MarginEngine
        Market, instrument table and model at the start; ticks replace the market.
    book : AccountBook, optional
        Initial accounts (positions and collateral); positions of net quantity 0 are dropped
        (a closed position is not a position). Default: no accounts.
    currencies : sequence of str, optional
        Balance currencies (default: the book's, else ``DEFAULT_CURRENCIES``).
    policy : AlertPolicy, optional
        Alert thresholds (hysteresis).
    workers : int, optional
        Threads of the tick re-margining (None: all cores); results do not depend on it.
    bus : AlertBus, optional
        Where alerts are published (a new one by default, :attr:`bus`).
    check_cache : int
        Accounts whose what-if state is kept for pre-trade checks (least recently used beyond).

    Examples
    --------
    >>> from dpm.engines.margin import MarginEngine
    >>> from dpm.market.sample import default_instruments, default_market
    >>> from dpm.live import LiveBook, OpenAccount, Transfer, Fill
    >>> live = LiveBook(MarginEngine(default_market(), default_instruments()))
    >>> _ = live.apply(OpenAccount("alice"))
    >>> _ = live.apply(Transfer("alice", "USDC", 50_000.0))
    >>> _ = live.apply(Fill("alice", "BTC-PERPETUAL", 10_000.0))
    >>> round(live.margin("alice").initial_margin) > 0
    True
    """

    def __init__(self, engine: MarginEngine, book: AccountBook | None = None, *,
                 currencies: Sequence[str] | None = None, policy: AlertPolicy | None = None,
                 workers: int | None = None, bus: AlertBus | None = None, check_cache: int = 8192,
                 compact_min: int = 1024, compact_fraction: float = 0.02) -> None:
        if book is not None and not isinstance(book, AccountBook):
            raise InvalidTypeError(f"book: expected an AccountBook or None, got {type(book).__name__}")
        if isinstance(engine, MarginEngine) and book is not None:
            book.require_table(engine.instruments)
        if book is not None and currencies is not None and tuple(book.currencies) != tuple(currencies):
            raise InvalidInputError(f"currencies: {tuple(currencies)} differ from the book's {tuple(book.currencies)}")
        cur = tuple(currencies) if currencies is not None else (tuple(book.currencies) if book is not None
                                                                 else DEFAULT_CURRENCIES)
        self._setup(engine, cur, policy, workers, bus, check_cache, compact_min, compact_fraction)
        if book is None or len(book) == 0:
            self._load([], np.zeros(0, np.int64), _EMPTY_I, _EMPTY_F, np.zeros((0, len(cur))), [], [], None, None)
            return
        N = len(book)
        keep = np.asarray(book.quantity) != 0.0
        acc = np.repeat(np.arange(N), np.diff(book.indptr))[keep]
        counts = np.bincount(acc, minlength=N).astype(np.int64)
        self._load(book.account_id.tolist(), counts, np.asarray(book.instrument_idx)[keep],
                   np.asarray(book.quantity)[keep], np.asarray(book.collateral, dtype=np.float64).reshape(N, -1),
                   [], [], None, None)

    def _setup(self, engine: MarginEngine, cur: tuple[str, ...], policy: AlertPolicy | None, workers: int | None,
               bus: AlertBus | None, check_cache: int, compact_min: int, compact_fraction: float) -> None:
        if not isinstance(engine, MarginEngine):
            raise InvalidTypeError(f"engine: expected a MarginEngine, got {type(engine).__name__}")
        if workers is not None:
            _parallel.resolve_workers(workers)
        if policy is not None and not isinstance(policy, AlertPolicy):
            raise InvalidTypeError(f"policy: expected an AlertPolicy, got {type(policy).__name__}")
        for name, v in (("check_cache", check_cache), ("compact_min", compact_min)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name}: must be an int >= 1, got {v!r}")
        if not (isinstance(compact_fraction, (int, float)) and 0.0 < compact_fraction <= 1.0):
            raise InvalidInputError(f"compact_fraction: must be in (0, 1], got {compact_fraction!r}")
        for c in cur:
            if not isinstance(c, str) or not c.isalnum() or c.upper() != c:
                raise InvalidInputError(f"currencies: expected upper-case codes like 'BTC', got {c!r}")
        if len(set(cur)) != len(cur):
            raise InvalidInputError(f"currencies: duplicate codes in {cur!r}")
        self.currencies: tuple[str, ...] = cur
        self._ccy_index = {c: j for j, c in enumerate(cur)}
        self.policy = policy if policy is not None else AlertPolicy()
        self.workers = workers
        self.bus = bus if bus is not None else AlertBus()
        self._check_cache_size = check_cache
        self._compact_min = compact_min
        self._compact_fraction = float(compact_fraction)
        self._lock = threading.RLock()      # readers vs commit
        self._writer = threading.RLock()    # one writer at a time
        self.base_market = engine.market
        self.instruments = engine.instruments
        self.model = engine.model
        t = engine.instruments
        self._M = len(t)
        self._U = len(t.underlyings)
        self._kind = np.asarray(t.kind, dtype=np.int8)
        self._und = np.asarray(t.underlying, dtype=np.int64)
        self._und_bit = (np.int64(1) << self._und).astype(np.int64)
        self._inverse = np.asarray(t.inverse, dtype=bool)
        self._cs = np.asarray(t.contract_size, dtype=np.float64)
        self._strike = np.asarray(t.strike, dtype=np.float64)
        self._cp = np.asarray(t.option_type, dtype=np.float64)
        self._lin = (self._kind == Kind.FUTURE) | (self._kind == Kind.PERPETUAL)
        self._settle_ccy = np.array([self._ccy_index.get(s, -1) for s in t.settlement.tolist()], dtype=np.int64)
        self._lin_l = self._lin.tolist()
        self._inverse_l = self._inverse.tolist()
        self._cs_l = self._cs.tolist()
        self._settle_l = self._settle_ccy.tolist()
        self._und_bit_l = self._und_bit.tolist()
        self._names = t.name
        # what the binary channel's C check path reads; the book writes those figures through it
        self._checks = _checkpath.CheckTable(t.name.tolist(), MAX_QUANTITY, check_cache)
        self._name_index = {n: i for i, n in enumerate(t.name.tolist())}
        self._settled = np.zeros(self._M, dtype=bool)
        self._market = engine.market
        self._gen = _Generation(engine, cur, 0)
        self._tradable = self._gen.available & ~self._settled & (self._settle_ccy >= 0)
        self._tradable_l = self._tradable.tolist()
        self.last_seq = 0
        self._alert_seq = 0
        self._check_cache: OrderedDict[int, tuple] = OrderedDict()
        # the entries of the market before the last tick (their plans stay alive only until the next)
        self._check_stale: dict[int, tuple] = {}
        self._n = 0
        self._cap = 0
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._orders: dict[int, dict[str, list]] = {}
        self._over: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._ov = _Overlay()  # the same rows packed for the tick and the compaction
        self._pos_count = np.zeros(self._M, dtype=np.int64)
        self._ord_count = np.zeros(self._M, dtype=np.int64)
        self._grow(0)

    # ================================================================== storage
    def _grow(self, need: int) -> None:
        if need <= self._cap and self._cap:
            return
        cap = max(64, need, 2 * self._cap)
        C = len(self.currencies)

        def grow(name: str, shape: tuple, dtype: Any, fill: Any = 0) -> None:
            out = np.full(shape, fill, dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                out[: old.shape[0]] = old
            setattr(self, name, out)

        grow("_bal", (cap, C), np.float64)
        for name in ("_tp", "_tb", "_ta", "_val", "_coll", "_eq", "_im", "_mm"):
            grow(name, (cap,), np.float64)
        grow("_lvl", (cap,), np.int8)
        grow("_ver", (cap,), np.int64)
        grow("_mask", (cap,), np.int64)
        grow("_dirty", (cap,), bool)
        grow("_acc_row", (cap,), np.int64, -1)
        self._ov.grow_accounts(cap)
        self._cap = cap
        self._bind_checks()
        if hasattr(self, "_indptr"):  # not in _setup: _load builds the CSR and binds it
            self._bind_positions()

    def _bind_checks(self) -> None:
        """Point the C check table at the current arrays and plan (after they are replaced)."""
        gen = self._gen
        self._checks.bind(gen.agg, gen.number, gen.im_factor, self._ver, self._tp,
                          self._tb, self._ta, self._im, self._mm, self._eq, self._tradable.view(np.uint8))

    def _bind_positions(self) -> None:
        """Point the C check table at the CSR (after it is rebuilt, or its per-account arrays grow)."""
        self._checks.bind_positions(self._indptr, self._inst, self._qty, self._row_acc, self._acc_row,
                                    self._dirty.view(np.uint8))

    def _load(self, ids: list[str], counts: np.ndarray, inst: np.ndarray, qty: np.ndarray, bal: np.ndarray,
              orders: list, settled: list, levels: np.ndarray | None, versions: np.ndarray | None) -> None:
        """Fill the book with accounts (positions as CSR counts/inst/qty, balances, resting orders)."""
        N = len(ids)
        if len(set(ids)) != N:
            raise InvalidInputError("account ids: duplicates")
        self._grow(N)
        self._ids = list(ids)
        self._index = {a: i for i, a in enumerate(ids)}
        self._n = N
        self._checks.set_accounts(self._ids)
        self._settled[np.asarray(settled, dtype=np.int64)] = True
        self._tradable = self._gen.available & ~self._settled & (self._settle_ccy >= 0)
        self._tradable_l = self._tradable.tolist()
        self._bind_checks()
        inst = np.ascontiguousarray(inst, dtype=np.int64)
        qty = np.ascontiguousarray(qty, dtype=np.float64)
        acc = np.repeat(np.arange(N), counts)
        if bal.size:
            no_price = (bal != 0) & (self._gen.price == 0.0)[None, :]
            if no_price.any():
                a, c = (int(x[0]) for x in np.nonzero(no_price))
                raise MarketDataError(f"account {ids[a]!r}: collateral currency {self.currencies[c]!r} has no "
                                      "price in the market")
            self._bal[:N] = bal
        if inst.size:
            if int(inst.min()) < 0 or int(inst.max()) >= self._M or not np.isfinite(qty).all() or (qty == 0).any():
                raise InvalidInputError("positions: instrument ids out of range or quantities not finite/non-zero")
            bad = ~self._tradable[inst]
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise MarketDataError(f"account {ids[acc[j]]!r}: instrument {self._names[inst[j]]!r} cannot be "
                                      f"margined: {self._why_not_tradable(int(inst[j]))}")
            np.bitwise_or.at(self._mask, acc, self._und_bit[inst])
            self._pos_count[:] = np.bincount(inst, minlength=self._M)
        indptr = np.zeros(N + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        self._indptr, self._inst, self._qty = indptr, inst, qty
        self._row_acc = np.arange(N, dtype=np.int64)
        self._row_var = np.zeros(N, dtype=np.int8)
        self._acc_row[:N] = np.arange(N)
        self._classes: list[tuple[int, int, int]] = []
        self._fut = _live.FuturesGroups(_EMPTY_I, _EMPTY_I, _EMPTY_I, self._settle_ccy)
        for aid, oid, i, q, p in orders:
            a = self._index.get(aid)
            if a is None:
                raise UnknownAccountError(f"orders: unknown account {aid!r}")
            i = int(i)
            if not (0 <= i < self._M) or not self._tradable[i]:
                raise MarketDataError(f"orders: order {oid!r} of {aid!r} is on an instrument that cannot be traded")
            self._orders.setdefault(a, {})[oid] = [i, float(q), p]
            self._ord_count[i] += 1
        for a, od in self._orders.items():
            pi, pq = self._positions(a)
            self._set_rows(a, _rows_of(pi.copy(), pq.copy(), od))
            self._dirty[a] = True
            self._mask[a] = self._mask_of(pi, od)
        self._compact_arrays()
        self._full_margin()
        if levels is None:
            e, im, mm = self._eq[:N], self._im[:N], self._mm[:N]
            self._lvl[:N] = np.where(e < mm, LIQUIDATION, np.where(e < im, CALL, OK))
        else:
            self._lvl[:N] = levels
        if versions is not None:
            self._ver[:N] = versions
        self.bus.next_seq = self._alert_seq + 1

    # ================================================================== compaction
    def _rows(self, a: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Kernel rows of account ``a`` (views of the CSR for a clean account)."""
        if self._dirty[a]:
            return self._over[a]
        r = int(self._acc_row[a])
        nr = _VARIANTS_WITH_ORDERS if a in self._orders else 1
        ip = self._indptr
        return [(self._inst[ip[r + v]: ip[r + v + 1]], self._qty[ip[r + v]: ip[r + v + 1]]) for v in range(nr)]

    def _set_rows(self, a: int, rows: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Account ``a`` is dirty with kernel rows ``rows`` (in the overlay until the next compaction)."""
        self._over[a] = rows
        self._ov.put(a, rows)

    def _positions(self, a: int) -> tuple[np.ndarray, np.ndarray]:
        if self._dirty[a]:
            return self._over[a][0]
        r = int(self._acc_row[a])
        s, e = int(self._indptr[r]), int(self._indptr[r + 1])
        return self._inst[s:e], self._qty[s:e]

    def compact(self) -> None:
        """Rebuild the CSR with every account's current rows (no dirty account left).

        Called automatically when dirty accounts exceed ``max(compact_min, compact_fraction * N)``;
        results never depend on when it runs.
        """
        with self._writer:
            new = self._compact_build()
            with self._lock:
                self._compact_swap(new)

    def _compact_arrays(self) -> None:
        self._compact_swap(self._compact_build())

    def _compact_build(self) -> dict[str, Any]:
        N = self._n
        has_orders = np.zeros(N, dtype=bool)
        if self._orders:
            has_orders[np.fromiter(self._orders.keys(), dtype=np.int64)] = True
        nr = np.where(has_orders, _VARIANTS_WITH_ORDERS, 1).astype(np.int64)
        key = _gray_rank(self._mask[:N])
        order = np.lexsort((np.arange(N), key))
        nr_o = nr[order]
        R = int(nr_o.sum())
        row_acc = np.repeat(order, nr_o)
        first = np.cumsum(nr_o) - nr_o
        row_var = (np.arange(R) - np.repeat(first, nr_o)).astype(np.int8)
        dirty_row = self._dirty[row_acc]
        old_row = np.where(dirty_row, -1, self._acc_row[row_acc] + row_var)
        ip = self._indptr
        safe = np.where(old_row >= 0, old_row, 0)
        lengths = np.where(old_row >= 0, ip[safe + 1] - ip[safe], 0)
        acc_first = np.empty(N, dtype=np.int64)
        acc_first[order] = first
        dirty_accs = np.flatnonzero(self._dirty[:N])
        ov = self._ov
        d_acc, d_var, _ = ov.rows(dirty_accs)
        d_row = acc_first[d_acc] + d_var  # the new rows of the dirty accounts' overlay rows
        lengths[d_row] = ov.length[d_acc, d_var]
        indptr = np.zeros(R + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        P = int(indptr[-1])
        inst_new = np.empty(P, dtype=np.int64)
        qty_new = np.empty(P)
        # clean rows: copied whole from the old CSR (one C pass without the GIL); dirty rows below
        _live.compact_copy(old_row, ip, self._inst, self._qty, indptr, inst_new, qty_new)
        if d_row.size:
            src_idx, _ = _segments(ov.start[d_acc, d_var], lengths[d_row])
            dst_idx, _ = _segments(indptr[d_row], lengths[d_row])
            inst_new[dst_idx] = ov.inst[src_idx]
            qty_new[dst_idx] = ov.qty[src_idx]
        # class ranges (rows of accounts with the same set of underlyings are contiguous)
        masks = self._mask[:N][order]
        classes: list[tuple[int, int, int]] = []
        if N:
            cut = np.flatnonzero(np.diff(key[order])) + 1
            starts = np.concatenate([[0], cut])
            ends = np.concatenate([cut, [N]])
            row_start = np.concatenate([first, [R]])
            for s, e in zip(starts.tolist(), ends.tolist()):
                classes.append((int(masks[s]), int(row_start[s]), int(row_start[e])))
        # futures / perpetual positions of the position rows (variation margin at ticks)
        lin_pos, fut_acc = _live.linear_positions(indptr, inst_new, row_var, row_acc, self._lin.view(np.uint8))
        fut = _live.FuturesGroups(lin_pos, fut_acc, inst_new[lin_pos], self._settle_ccy)
        return dict(indptr=indptr, inst=inst_new, qty=qty_new, row_acc=row_acc, row_var=row_var,
                    acc_first=acc_first, classes=classes, fut=fut)

    def _compact_swap(self, new: dict[str, Any]) -> None:
        N = self._n
        self._checks.suspend_positions()  # rebound below, once the new CSR is whole
        self._indptr, self._inst, self._qty = new["indptr"], new["inst"], new["qty"]
        self._row_acc, self._row_var = new["row_acc"], new["row_var"]
        self._acc_row[:N] = new["acc_first"]
        self._classes = new["classes"]
        # instrument ids of the CSR never change between compactions (fills on the same positions
        # change quantities in place): the futures positions' groups are kept with them
        self._fut = new["fut"]
        self._dirty[:N] = False
        release_later(self._over)  # thousands of dirty accounts' rows: freed off the lock
        self._over = {}
        self._ov.clear()
        self._rebuild_tick_buffers()
        self._bind_positions()

    def _rebuild_tick_buffers(self) -> None:
        self._tick_outs = _result_buffers(len(self._row_acc), self._U)

    def _maybe_compact(self) -> None:
        d = len(self._over)
        if d and d > max(self._compact_min, self._compact_fraction * self._n):
            new = self._compact_build()
            with self._lock:
                self._compact_swap(new)

    # ================================================================== margin kernels
    def _run_rows(self, agg: Any, rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Totals and values of many rows at once (one mini-CSR, one kernel call)."""
        n = len(rows)
        if n == 0:
            return _EMPTY_F, _EMPTY_F
        lens = np.fromiter((len(r[0]) for r in rows), dtype=np.int64, count=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        inst = np.concatenate([r[0] for r in rows]) if indptr[-1] else np.zeros(0, dtype=np.int64)
        qty = np.concatenate([r[1] for r in rows]) if indptr[-1] else np.zeros(0)
        return self._run_csr(agg, indptr, inst, qty)

    def _run_csr(self, agg: Any, indptr: np.ndarray, inst: np.ndarray, qty: np.ndarray,
                 workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Totals and values of the rows of a CSR (NaN total: a non-finite figure, refused by the caller)."""
        n = indptr.size - 1
        if n == 0:
            return _EMPTY_F, _EMPTY_F
        outs = _result_buffers(n, self._U)
        job = agg.margin_job(indptr, np.ascontiguousarray(inst, dtype=np.int64),
                             np.ascontiguousarray(qty, dtype=np.float64), outs[:9])
        w = self.workers if workers is None else workers
        bounds = _parallel.chunk_bounds(n, max(256, n // (4 * _parallel.resolve_workers(w)) + 1))
        _parallel.run_bounds(job.run, bounds, w)
        tot, val = outs[0][:n].copy(), outs[1][:n].copy()
        bad = _bad_rows(outs, slice(0, n))
        tot[bad] = math.nan  # refused by the caller's finiteness check
        return tot, val

    def _full_margin(self) -> None:
        """Margin of every account from the CSR (initialisation)."""
        N = self._n
        R = len(self._row_acc)
        gen = self._gen
        if R:
            outs = self._tick_outs
            job = gen.agg.margin_job(self._indptr, self._inst, self._qty, outs[:9])
            bounds = _parallel.chunk_bounds(R, max(256, R // (4 * _parallel.resolve_workers(self.workers)) + 1))
            _parallel.run_bounds(job.run, bounds, self.workers)
            _live.assign_rows(0, R, self._row_acc, self._row_var, self._dirty.view(np.uint8), outs[0], outs[1],
                              outs[9], self._tp, self._tb, self._ta, self._val)
        self._check_finite(np.arange(N))
        self._coll[:N] = self._collateral(self._bal[:N], gen)
        self._eq[:N] = self._coll[:N] + self._val[:N]
        self._im[:N] = gen.im_factor * np.maximum(self._tp[:N], np.maximum(self._tb[:N], self._ta[:N]))
        self._mm[:N] = gen.mm_factor * self._tp[:N]

    def _check_finite(self, accs: np.ndarray) -> None:
        for arr, what in ((self._tp, "margin"), (self._tb, "margin with open buy orders"),
                          (self._ta, "margin with open sell orders"), (self._val, "position value")):
            bad = ~np.isfinite(arr[accs])
            if bad.any():
                a = int(accs[np.flatnonzero(bad)[0]])
                raise InvalidInputError(f"account {self._ids[a]!r}: the {what} is not finite; a quantity is too "
                                        "large to margin")

    @staticmethod
    def _collateral(bal: np.ndarray, gen: _Generation, out: np.ndarray | None = None) -> np.ndarray:
        """Collateral value (USD) of balance rows: currencies summed in order, debts at full price
        (one C pass; the same bits as :meth:`_collateral_one` account by account)."""
        if out is None:
            out = np.empty(bal.shape[0])
        _live.collateral_rows(np.ascontiguousarray(bal, dtype=np.float64), gen.rate_pos, gen.price, out)
        return out

    @staticmethod
    def _collateral_one(bal: Sequence[float], gen: _Generation) -> float:
        out = 0.0
        rate, price = gen.rate_pos_l, gen.price_l
        for c, b in enumerate(bal):
            out = out + (b * rate[c] if b > 0.0 else b * price[c])
        return out

    # ================================================================== lookup and validation
    def _acc(self, account: Any) -> int:
        if isinstance(account, str):
            a = self._index.get(account)
            if a is None:
                raise UnknownAccountError(f"account: unknown account {account!r}")
            return a
        if isinstance(account, (int, np.integer)) and not isinstance(account, (bool, np.bool_)):
            a = int(account)
            if not 0 <= a < self._n:
                raise UnknownAccountError(f"account: index {a} is not in the book (0..{self._n - 1})")
            return a
        raise InvalidTypeError(f"account: expected an id (str) or an index (int), got {account!r}")

    def _instrument(self, instrument: Any) -> int:
        if isinstance(instrument, str):
            i = self._name_index.get(instrument)
            if i is None:
                raise UnknownInstrumentError(f"instrument: unknown instrument name {instrument!r}")
            return i
        if isinstance(instrument, (int, np.integer)) and not isinstance(instrument, (bool, np.bool_)):
            i = int(instrument)
            if not 0 <= i < self._M:
                raise UnknownInstrumentError(f"instrument: id {i} is not in the table (0..{self._M - 1})")
            return i
        raise InvalidTypeError(f"instrument: expected a name or an id, got {instrument!r}")

    def _why_not_tradable(self, i: int) -> str:
        if self._settled[i]:
            return "it has been settled"
        if self._settle_ccy[i] < 0:
            return f"its settlement currency {self.instruments.settlement[i]!r} is not a balance currency " \
                   f"{self.currencies}"
        return self._gen.engine.revaluation_plan.reason(i)

    def _require_tradable(self, i: int) -> None:
        if not self._tradable[i]:
            raise EventRejected(f"instrument {self._names[i]!r} cannot be traded: {self._why_not_tradable(i)}")

    # ================================================================== public API: events
    def apply(self, event: Event, seq: int | None = None) -> list[Alert]:
        """Apply one event (prepare, commit, publish its alerts); returns the alerts it raised.

        Raises a :mod:`dpm.errors` exception (nothing changed) when the event is invalid or refused.
        """
        with self._writer:
            change = self.prepare(event)
            alerts = self.commit(change, seq)
        self.bus.publish(alerts)
        return alerts

    def prepare(self, event: Event) -> _Change:
        """Validate ``event`` and compute its effect without changing the book (writer only).

        The returned change must be committed (:meth:`commit`) before the next ``prepare``.
        """
        if isinstance(event, Fill):
            return self._prep_fill(event)
        if isinstance(event, MarketTick):
            return self._prep_tick(event)
        if isinstance(event, Transfer):
            return self._prep_transfer(event)
        if isinstance(event, PlaceOrder):
            return self._prep_place(event)
        if isinstance(event, CancelOrder):
            return self._prep_cancel(event)
        if isinstance(event, OpenAccount):
            if event.account in self._index:
                raise InvalidInputError(f"account: {event.account!r} already exists")
            return _Change(event, "open", account=event.account)
        if isinstance(event, Funding):
            return self._prep_funding(event)
        if isinstance(event, Settle):
            return self._prep_settle(event)
        raise InvalidTypeError(f"event: expected a dpm.live event, got {type(event).__name__}")

    def commit(self, change: _Change, seq: int | None = None) -> list[Alert]:
        """Apply a prepared change (cannot fail); returns the alerts it raised (not yet published)."""
        with self._writer:
            seq = self.last_seq + 1 if seq is None else int(seq)
            with self._lock:
                alerts = getattr(self, "_commit_" + change.kind)(change, seq)
                self.last_seq = seq
            self._maybe_compact()
            return alerts

    # ------------------------------------------------------------------ per-account changes
    def _account_change(self, event: Event, a: int, inst: np.ndarray, qty: np.ndarray,
                        orders: dict[str, list] | None, bal: list[float], *, in_place: int = -1,
                        rows: list | None = None, margin_known: tuple | None = None) -> _Change:
        """Margin of account ``a`` with new positions / orders / balances, as a change record."""
        gen = self._gen
        if margin_known is not None:
            tp, tb, ta, val = margin_known
        else:
            rows = _rows_of(inst, qty, orders) if rows is None else rows
            tot, vals = gen.scratch.run(rows)
            tp = tot[0]
            tb, ta = (tot[1], tot[2]) if len(rows) > 1 else (tp, tp)
            val = vals[0]
            for x, what in ((tp, "margin"), (tb, "margin with open buy orders"),
                            (ta, "margin with open sell orders"), (val, "position value")):
                if not math.isfinite(x):
                    raise InvalidInputError(f"account {self._ids[a]!r}: the {what} would not be finite ({x!r}); "
                                            "a quantity is too large to margin")
        coll = self._collateral_one(bal, gen)
        eq = coll + val
        im = gen.im_factor * max(tp, max(tb, ta))
        mm = gen.mm_factor * tp
        if not math.isfinite(eq):
            raise InvalidInputError(f"account {self._ids[a]!r}: the equity would not be finite; an amount is too "
                                    "large")
        return _Change(event, "account", a=a, inst=inst, qty=qty, orders=orders, bal=bal, rows=rows,
                       in_place=in_place, tp=tp, tb=tb, ta=ta, val=val, coll=coll, eq=eq, im=im, mm=mm)

    def _commit_account(self, ch: _Change, seq: int) -> list[Alert]:
        d = ch.data
        a = d["a"]
        bump = dirty = False  # the positions or orders changed: a new version
        slot, slot_qty = -1, 0.0
        if d["in_place"] >= 0:  # a new size of an existing position of a clean account: in the CSR
            slot = d["in_place"]
            slot_qty = d["qty"][slot - int(self._indptr[self._acc_row[a]])]  # written by store_account
            bump = True
        elif d["rows"] is not None:  # positions or orders changed
            old_inst, _ = self._positions(a)
            old_orders = self._orders.get(a)
            if not np.array_equal(old_inst, d["inst"]):
                self._count_positions(old_inst, -1)
                self._count_positions(d["inst"], +1)
            self._set_rows(a, d["rows"])
            dirty = True  # self._dirty[a], written by store_account
            if old_orders is not d["orders"]:
                for o in (old_orders or {}).values():
                    self._ord_count[o[0]] -= 1
                for o in (d["orders"] or {}).values():
                    self._ord_count[o[0]] += 1
                if d["orders"]:
                    self._orders[a] = d["orders"]
                else:
                    self._orders.pop(a, None)
            self._mask[a] = self._mask_of(d["inst"], d["orders"])
            bump = True
        self._bal[a] = d["bal"]
        self._val[a], self._coll[a] = d["val"], d["coll"]
        # the version, the figures a check reads and where the positions are, as one step of the C
        # check path's table
        self._checks.store_account(a, bump, d["tp"], d["tb"], d["ta"], d["im"], d["mm"], d["eq"], dirty, slot,
                                   slot_qty)
        if self._checks.users and self._checks.has_record(a):
            # an account the binary channel checks: its new what-if states now, on the writer, so
            # that its next check is answered in C instead of waiting for the interpreter lock
            try:
                self._what_if_states(a)
            except Exception:  # noqa: BLE001 - a commit cannot fail: the record then stays stale
                pass
        return self._level_one(a, seq)

    def _count_positions(self, inst: np.ndarray, sign: int) -> None:
        if len(inst):
            np.add.at(self._pos_count, inst, sign)

    def _mask_of(self, inst: np.ndarray, orders: dict[str, list] | None) -> int:
        m = int(np.bitwise_or.reduce(self._und_bit[inst])) if len(inst) else 0
        for o in (orders or {}).values():
            m |= self._und_bit_l[o[0]]
        return m

    def _level_one(self, a: int, seq: int) -> list[Alert]:
        old = int(self._lvl[a])
        new = next_level(old, float(self._eq[a]), float(self._im[a]), float(self._mm[a]), self.policy.hysteresis)
        if new == old:
            return []
        self._lvl[a] = new
        self._alert_seq += 1
        return [Alert(self._alert_seq, seq, self._ids[a], alert_kind(old, new), LEVELS[old], LEVELS[new],
                      float(self._eq[a]), float(self._im[a]), float(self._mm[a]), int(self._market.timestamp_ms))]

    def _levels(self, accs: np.ndarray | None, seq: int) -> list[Alert]:
        """Move the levels of ``accs`` (None: every account; state machine with hysteresis); the
        alerts of the changes."""
        if accs is None:  # slices, not index arrays: no gathered copies of four 100k arrays per tick
            N = self._n
            accs = np.arange(N)
            old = self._lvl[:N]
            new = next_levels(old, self._eq[:N], self._im[:N], self._mm[:N], self.policy.hysteresis)
        else:
            old = self._lvl[accs]
            new = next_levels(old, self._eq[accs], self._im[accs], self._mm[accs], self.policy.hysteresis)
        changed = np.flatnonzero(new != old)
        if changed.size == 0:
            return []
        old = old[changed]  # before the levels move (old may be a view of them)
        self._lvl[accs[changed]] = new[changed]
        ts = int(self._market.timestamp_ms)
        out = []
        for j, k in enumerate(changed.tolist()):
            a = int(accs[k])
            self._alert_seq += 1
            o, n = int(old[j]), int(new[k])
            out.append(Alert(self._alert_seq, seq, self._ids[a], alert_kind(o, n), LEVELS[o], LEVELS[n],
                             float(self._eq[a]), float(self._im[a]), float(self._mm[a]), ts))
        return out

    # ------------------------------------------------------------------ open
    def _commit_open(self, ch: _Change, seq: int) -> list[Alert]:
        a = self._n
        self._grow(a + 1)
        self._ids.append(ch.data["account"])
        self._index[ch.data["account"]] = a
        self._n = a + 1
        self._bal[a] = 0.0
        for arr in (self._tp, self._tb, self._ta, self._val, self._coll, self._eq, self._im, self._mm):
            arr[a] = 0.0
        self._lvl[a] = OK
        self._mask[a] = 0
        self._acc_row[a] = -1
        self._set_rows(a, [(_EMPTY_I, _EMPTY_F)])
        self._dirty[a] = True
        self._checks.add_account(ch.data["account"], a)  # last: the C path can name it from now on
        return []

    # ------------------------------------------------------------------ fill
    def _prep_fill(self, ev: Fill) -> _Change:
        a = self._acc(ev.account)
        i = self._instrument(ev.instrument)
        self._require_tradable(i)
        inst, qty = self._positions(a)
        orders = self._orders.get(a)
        if ev.order_id is not None:
            o = (orders or {}).get(ev.order_id)
            if o is None:
                raise InvalidInputError(f"fill: account {ev.account!r} has no resting order {ev.order_id!r}")
            if o[0] != i:
                raise InvalidInputError(f"fill: order {ev.order_id!r} is for {self._names[o[0]]!r}, not {ev.instrument!r}")
            if (o[1] > 0) != (ev.quantity > 0) or abs(ev.quantity) > abs(o[1]) * (1.0 + _ORDER_FILL_TOLERANCE):
                raise InvalidInputError(f"fill: quantity {ev.quantity!r} does not fit the remaining {o[1]!r} of "
                                        f"order {ev.order_id!r}")
            orders = dict(orders)
            rest = o[1] - ev.quantity
            if abs(rest) <= _ORDER_FILL_TOLERANCE * abs(o[1]):
                del orders[ev.order_id]
            else:
                orders[ev.order_id] = [o[0], rest, o[2]]
        n = len(inst)
        k = int(np.searchsorted(inst, i))
        exists = k < n and inst[k] == i
        new_q = qty[k] + ev.quantity if exists else ev.quantity
        if abs(new_q) > MAX_QUANTITY:
            raise InvalidInputError(f"fill: the position of {ev.account!r} in {ev.instrument!r} would be {new_q!r} "
                                    f"contracts, beyond the largest accepted ({MAX_QUANTITY:g})")
        in_place = -1
        if exists and new_q != 0.0:
            inst2, qty2 = inst, qty.copy()
            qty2[k] = new_q
            if not self._dirty[a] and not orders and a not in self._orders:
                in_place = int(self._indptr[self._acc_row[a]]) + k  # CSR slot of the position
        elif exists:
            inst2, qty2 = np.concatenate((inst[:k], inst[k + 1:])), np.concatenate((qty[:k], qty[k + 1:]))
        else:
            inst2 = np.concatenate((inst[:k], (i,), inst[k:])).astype(np.int64, copy=False)
            qty2 = np.concatenate((qty[:k], (ev.quantity,), qty[k:]))
        bal = self._bal[a].tolist()
        c = self._settle_l[i]
        bal[c] = bal[c] + self._fill_cash(i, ev.quantity, ev.price)
        if ev.fee:
            bal[c] = bal[c] - ev.fee
        return self._account_change(ev, a, inst2, qty2, orders, bal, in_place=in_place)

    def _fill_cash(self, i: int, q: float, price: float | None) -> float:
        """Cash (settlement currency) of a fill: premium paid, or a future marked to market at once."""
        gen = self._gen
        if self._lin_l[i]:
            if price is None:
                return 0.0
            F = gen.F_l[i]
            cs = self._cs_l[i]
            if self._inverse_l[i]:
                if price <= 0.0:
                    raise InvalidInputError(f"fill: price of {self._names[i]!r} must be > 0, got {price!r}")
                return q * cs * (1.0 / price - 1.0 / F)
            return q * cs * (F - price)
        if price is None:  # at mark: the equity value of the contract, in the settlement currency
            px = gen.price_l[self._settle_l[i]]
            if px <= 0.0:
                raise MarketDataError(f"fill: no price for the settlement currency of {self._names[i]!r}")
            return -(q * (gen.value_l[i] / px))
        return -(q * self._cs_l[i] * price)

    # ------------------------------------------------------------------ transfer
    def _prep_transfer(self, ev: Transfer) -> _Change:
        a = self._acc(ev.account)
        c = self._ccy_index.get(ev.currency)
        if c is None:
            raise InvalidInputError(f"currency: {ev.currency!r} is not a balance currency of the book "
                                    f"{self.currencies}")
        if self._gen.price[c] <= 0.0:
            raise MarketDataError(f"currency: {ev.currency!r} has no price in the market")
        bal = self._bal[a].tolist()
        new = bal[c] + ev.amount
        if ev.amount < 0.0 and new < 0.0:
            raise EventRejected(f"withdrawal of {-ev.amount!r} {ev.currency} from {ev.account!r} exceeds the "
                                f"balance {bal[c]!r}")
        bal[c] = new
        ch = self._account_change(ev, a, *self._positions(a), self._orders.get(a), bal,
                                  margin_known=(self._tp[a], self._tb[a], self._ta[a], self._val[a]))
        if ev.amount < 0.0 and ch.data["eq"] < ch.data["im"]:
            raise EventRejected(f"withdrawal of {-ev.amount!r} {ev.currency} from {ev.account!r} would leave the "
                                f"equity {ch.data['eq']:.2f} below the initial margin {ch.data['im']:.2f} USD")
        return ch

    # ------------------------------------------------------------------ orders
    def _prep_place(self, ev: PlaceOrder) -> _Change:
        a = self._acc(ev.account)
        i = self._instrument(ev.instrument)
        self._require_tradable(i)
        orders = self._orders.get(a) or {}
        if ev.order_id in orders:
            raise InvalidInputError(f"order: account {ev.account!r} already has an order {ev.order_id!r}")
        orders = dict(orders)
        orders[ev.order_id] = [i, ev.quantity, ev.price]
        inst, qty = self._positions(a)
        ch = self._account_change(ev, a, inst, qty, orders, self._bal[a].tolist())
        if ev.check:
            im, eq = ch.data["im"], ch.data["eq"]
            if not (eq >= im or im <= self._im[a]):
                raise EventRejected(f"order {ev.order_id!r} of {ev.account!r}: the initial margin with the order "
                                    f"{im:.2f} exceeds the equity {eq:.2f} USD")
        return ch

    def _prep_cancel(self, ev: CancelOrder) -> _Change:
        a = self._acc(ev.account)
        orders = self._orders.get(a) or {}
        if ev.order_id not in orders:
            raise InvalidInputError(f"cancel: account {ev.account!r} has no resting order {ev.order_id!r}")
        orders = {k: v for k, v in orders.items() if k != ev.order_id}
        inst, qty = self._positions(a)
        return self._account_change(ev, a, inst, qty, orders or None, self._bal[a].tolist())

    # ------------------------------------------------------------------ funding and settlement
    def _holders(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Accounts holding a position in instrument ``i`` and their quantities (account order)."""
        pos = np.flatnonzero(self._inst == i)
        if pos.size:
            rows = np.searchsorted(self._indptr, pos, side="right") - 1
            acc = self._row_acc[rows]
            ok = (self._row_var[rows] == 0) & ~self._dirty[acc]
            acc, q = acc[ok], self._qty[pos[ok]]
        else:
            acc, q = _EMPTY_I, _EMPTY_F
        extra_a, extra_q = [], []
        for a, rows_ in self._over.items():
            inst, qty = rows_[0]
            k = int(np.searchsorted(inst, i))
            if k < len(inst) and inst[k] == i:
                extra_a.append(a)
                extra_q.append(float(qty[k]))
        if extra_a:
            acc = np.concatenate([acc, np.array(extra_a, dtype=np.int64)])
            q = np.concatenate([q, np.array(extra_q)])
        o = np.argsort(acc, kind="stable")
        return acc[o], q[o]

    def _prep_funding(self, ev: Funding) -> _Change:
        i = self._instrument(ev.instrument)
        if self._kind[i] != Kind.PERPETUAL:
            raise InvalidInputError(f"funding: {ev.instrument!r} is not a perpetual")
        self._require_tradable(i)
        F = float(self._gen.F[i])
        cs = float(self._cs[i])
        pay = -(cs * ev.rate / F) if self._inverse[i] else -(cs * F * ev.rate)
        acc, q = self._holders(i)
        c = int(self._settle_ccy[i])
        new_b = self._bal[acc, c] + q * pay
        return _Change(ev, "cash", acc=acc, col=c, new_b=new_b)

    def _commit_cash(self, ch: _Change, seq: int) -> list[Alert]:
        d = ch.data
        acc = d["acc"]
        if acc.size == 0:
            return []
        self._bal[acc, d["col"]] = d["new_b"]
        self._coll[acc] = self._collateral(self._bal[acc], self._gen)
        self._checks.store_equity(np.ascontiguousarray(acc, dtype=np.int64),
                                  self._coll[acc] + self._val[acc])  # writes self._eq[acc]
        return self._levels(acc, seq)

    def _prep_settle(self, ev: Settle) -> _Change:
        i = self._instrument(ev.instrument)
        k = self._kind[i]
        if k not in (Kind.FUTURE, Kind.OPTION):
            raise InvalidInputError(f"settle: {ev.instrument!r} does not expire")
        if self._settled[i]:
            raise EventRejected(f"settle: {ev.instrument!r} is already settled")
        X = ev.price
        cs = float(self._cs[i])
        if k == Kind.OPTION:
            intrinsic = max(float(self._cp[i]) * (X - float(self._strike[i])), 0.0)
            pay = cs * intrinsic / X if self._inverse[i] else cs * intrinsic
        else:
            F = float(self._gen.F[i])
            pay = cs * (1.0 / F - 1.0 / X) if self._inverse[i] else cs * (X - F)
        acc, q = self._holders(i)
        affected = set(acc.tolist())
        with_orders = [a for a, od in self._orders.items() if any(o[0] == i for o in od.values())]
        affected.update(with_orders)
        c = int(self._settle_ccy[i])
        qty_of = dict(zip(acc.tolist(), q.tolist()))
        changes = []
        rows_all = []
        for a in sorted(affected):
            inst, qty = self._positions(a)
            orders = self._orders.get(a)
            if a in qty_of:
                kk = int(np.searchsorted(inst, i))
                inst, qty = np.delete(inst, kk), np.delete(qty, kk)
            if orders and any(o[0] == i for o in orders.values()):
                orders = {oid: o for oid, o in orders.items() if o[0] != i} or None
            bal = self._bal[a].tolist()
            if a in qty_of:
                bal[c] = bal[c] + qty_of[a] * pay
            rows = _rows_of(inst, qty, orders)
            changes.append((a, inst, qty, orders, bal, rows))
            rows_all.extend(rows)
        tot, val = self._run_rows(self._gen.agg, rows_all)
        out = []
        r = 0
        for a, inst, qty, orders, bal, rows in changes:
            nr = len(rows)
            t = tot[r: r + nr].tolist()
            known = (t[0], t[1] if nr > 1 else t[0], t[2] if nr > 1 else t[0], float(val[r]))
            r += nr
            ch = self._account_change(ev, a, inst, qty, orders, bal, rows=rows, margin_known=known)
            for x in known:
                if not math.isfinite(x):
                    raise InvalidInputError(f"account {self._ids[a]!r}: the margin after settlement is not finite")
            out.append(ch)
        return _Change(ev, "settle", instrument=i, changes=out)

    def _commit_settle(self, ch: _Change, seq: int) -> list[Alert]:
        alerts = []
        for sub in ch.data["changes"]:
            alerts.extend(self._commit_account(sub, seq))
        i = ch.data["instrument"]
        self._settled[i] = True
        self._checks.mark_untradable(i)  # writes self._tradable[i] (and drops the C path's records)
        self._tradable_l[i] = False
        release_later(self._check_cache)
        release_later(self._check_stale)
        self._check_cache = OrderedDict()
        self._check_stale = {}
        return alerts

    # ------------------------------------------------------------------ market tick
    def _prep_tick(self, ev: MarketTick) -> _Change:
        market = self._market
        unds = list(self.instruments.underlyings)
        und = dict(market.underlyings)
        moved = 0
        for t in ev.underlyings:
            if t.underlying not in und:
                raise MarketDataError(f"tick: underlying {t.underlying!r} is not in the market "
                                      f"(has {sorted(und)})")
            um = und[t.underlying]
            perp = t.perpetual_price if t.perpetual_price is not None else \
                um.perpetual_price * (t.index_price / um.index_price)
            changes: dict[str, Any] = {"index_price": t.index_price, "perpetual_price": perp}
            if t.funding_rate is not None:
                changes["funding_rate"] = t.funding_rate
            und[t.underlying] = um.with_updates(**changes)
            if t.underlying in unds:
                moved |= 1 << unds.index(t.underlying)
        ts = market.timestamp_ms
        if ev.timestamp_ms is not None:
            if ev.timestamp_ms < ts:
                raise InvalidInputError(f"tick: timestamp_ms {ev.timestamp_ms} is before the market time {ts}")
            if ev.timestamp_ms != ts:
                moved = (1 << self._U) - 1
                ts = ev.timestamp_ms
        new_market = MarketSnapshot(ts, und, dict(market.usd_rates))
        # the kernel takes every CPU for a few ms: cached states the last tick handed over are freed
        # after it, not beside it
        with held_back():
            return self._prep_market(ev, new_market, moved)

    def _prep_market(self, ev: Event | None, new_market: MarketSnapshot, moved: int) -> _Change:
        old = self._gen
        engine = old.engine.with_market(new_market, workers=self.workers)
        # 1. clean accounts: the kernel over the row ranges of the exposed classes, started on the pool
        #    threads as soon as the new plan exists; this thread does the rest of the tick beside it
        #    (checks, copies, steps 2-4: Python that would otherwise leave a core idle), then joins it
        ranges = []
        for mask, r0, r1 in self._classes:
            if mask & moved and r1 > r0:
                if ranges and ranges[-1][1] == r0:
                    ranges[-1] = (ranges[-1][0], r1)
                else:
                    ranges.append((r0, r1))
        join = None
        if ranges:
            outs = self._tick_outs
            job = engine.aggregation_plan.margin_job(self._indptr, self._inst, self._qty, outs[:9])
            w = _parallel.resolve_workers(self.workers)
            total_rows = sum(r1 - r0 for r0, r1 in ranges)
            # small ranges: this thread joins late and takes what is left, so the ends even out
            chunk = max(256, total_rows // (64 * w) + 1)
            bounds = np.array([(s, min(s + chunk, r1)) for r0, r1 in ranges for s in range(r0, r1, chunk)],
                              dtype=np.int64).reshape(-1, 2)
            counter = np.zeros(1, dtype=np.int64)
            join = _parallel.start_beside(lambda: job.run_shared(bounds, counter), self.workers)
        try:
            gen = _Generation(engine, self.currencies, old.number + 1)
            held = (self._pos_count + self._ord_count) > 0
            bad = held & ~gen.available
            if bad.any():  # refused: the kernel's rows of this market are never used
                i = int(np.flatnonzero(bad)[0])
                raise MarketDataError(f"tick: instrument {self._names[i]!r} is held but cannot be margined on the "
                                      f"new market: {engine.revaluation_plan.reason(i)}")
            N = self._n
            tp, tb, ta, val = self._tp.copy(), self._tb.copy(), self._ta.copy(), self._val.copy()
            dirty_exposed, bal, coll = self._tick_beside(gen, old, moved, tp, tb, ta, val)
        finally:
            if join is not None:
                join()  # the kernel's outputs are complete (and no thread writes them) after this
        if ranges:
            # one C pass per part of the rows: their finiteness check and their scatter to the
            # accounts (rows of different parts write different entries: run on the workers)
            dirty = self._dirty.view(np.uint8)
            parts = [(s, min(s + chunk * 8, r1)) for r0, r1 in ranges for s in range(r0, r1, chunk * 8)]
            _parallel.run_bounds(lambda s, e: _live.assign_rows(s, e, self._row_acc, self._row_var, dirty, outs[0],
                                                                outs[1], outs[9], tp, tb, ta, val),
                                 parts, self.workers)
        # every figure finite: the unexposed accounts' are (each commit checks), so whole contiguous
        # slices are checked, which is cheaper than gathering the exposed accounts
        for arr, what in ((tp, "margin"), (tb, "margin with open buy orders"),
                          (ta, "margin with open sell orders"), (val, "position value")):
            if not np.isfinite(arr[:N]).all():
                a = int(np.flatnonzero(~np.isfinite(arr[:N]))[0])
                raise InvalidInputError(f"tick: account {self._ids[a]!r}: the {what} is not finite on the new market")
        # 5. equity and margins of every account, into whole new arrays (the commit swaps them in)
        eq, im, mm = (self._new_column(N) for _ in range(3))
        np.add(coll[:N], val[:N], out=eq[:N])
        np.maximum(tb[:N], ta[:N], out=im[:N])
        np.maximum(tp[:N], im[:N], out=im[:N])
        np.multiply(gen.im_factor, im[:N], out=im[:N])
        np.multiply(gen.mm_factor, tp[:N], out=mm[:N])
        if not np.isfinite(eq[:N]).all():
            a = int(np.flatnonzero(~np.isfinite(eq[:N]))[0])
            raise InvalidInputError(f"tick: account {self._ids[a]!r}: the equity is not finite on the new market")
        return _Change(ev, "tick", market=new_market, gen=gen, tp=tp, tb=tb, ta=ta, val=val, bal=bal, coll=coll,
                       eq=eq, im=im, mm=mm)

    def _new_column(self, N: int) -> np.ndarray:
        """A per-account array of the book's capacity, zero past the ``N`` accounts."""
        out = np.empty(self._cap)
        out[N:] = 0.0
        return out

    def _tick_beside(self, gen: _Generation, old: _Generation, moved: int, tp: np.ndarray, tb: np.ndarray,
                     ta: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tick's work beside the kernel of the clean accounts (the caller's thread, one core):
        the exposed dirty accounts' margins, variation margin, collateral. Returns the exposed dirty
        accounts, the new balances and the collateral values."""
        N = self._n
        # 2. dirty accounts exposed: their rows as one mini-CSR, one kernel call on this thread
        d_all = np.fromiter(self._over.keys(), dtype=np.int64, count=len(self._over))
        dirty_exposed = d_all[(self._mask[d_all] & moved) != 0] if d_all.size else _EMPTY_I
        d_inst, d_qty, d_acc = _EMPTY_I, _EMPTY_F, _EMPTY_I
        if dirty_exposed.size:
            indptr, inst, qty, row_acc, var, first = self._ov.gather(dirty_exposed)
            tot, vals = self._run_csr(gen.agg, indptr, inst, qty, workers=1)
            multi = self._ov.nrows[dirty_exposed] > 1
            tp[dirty_exposed] = tot[first]
            tb[dirty_exposed] = np.where(multi, tot[np.where(multi, first + 1, first)], tot[first])
            ta[dirty_exposed] = np.where(multi, tot[np.where(multi, first + 2, first)], tot[first])
            val[dirty_exposed] = vals[first]
            lens = np.diff(indptr)
            pos = np.repeat(var == 0, lens)  # the positions rows (variation margin below)
            d_inst, d_qty, d_acc = inst[pos], qty[pos], np.repeat(row_acc, lens)[pos]
        # 3. futures and perpetuals marked to market into their settlement currency: per account and
        #    currency the sum of q * dF over its positions in instrument order, added to the balance
        bal = self._bal.copy()
        dF = np.zeros(self._M)
        lin_moved = self._lin & ((self._und_bit & moved) != 0)
        Fo, Fn = old.F, gen.F
        li = np.flatnonzero(lin_moved)
        dF[li] = np.where(self._inverse[li], self._cs[li] * (1.0 / Fo[li] - 1.0 / Fn[li]),
                          self._cs[li] * (Fn[li] - Fo[li]))
        if li.size:
            # clean accounts: one C pass over the CSR's futures positions (grouped by account and
            # settlement currency at the last compaction)
            self._fut.settle(self._qty, lin_moved.view(np.uint8), self._dirty.view(np.uint8), dF, bal)
            # dirty accounts (their positions are in the overlay): the same sums with numpy
            dsel = lin_moved[d_inst]
            if dsel.any():
                acc, ins, q = d_acc[dsel], d_inst[dsel], d_qty[dsel]
                C = len(self.currencies)
                key = acc * C + self._settle_ccy[ins]
                # only the balances with a position move, each summed from 0 in position order
                # (bins over the distinct keys: no pass over every account's balances)
                uk, inv = np.unique(key, return_inverse=True)
                bal.reshape(-1)[uk] += np.bincount(inv, weights=q * dF[ins], minlength=uk.size)
        # 4. collateral of every account (its prices moved too)
        coll = self._new_column(N)
        self._collateral(bal[:N], gen, out=coll[:N])
        return dirty_exposed, bal, coll

    def _commit_tick(self, ch: _Change, seq: int) -> list[Alert]:
        d = ch.data
        self._market = d["market"]
        self._gen = d["gen"]
        self._tradable = self._gen.available & ~self._settled & (self._settle_ccy >= 0)
        self._tradable_l = self._tradable.tolist()
        self._tp, self._tb, self._ta, self._val, self._bal = d["tp"], d["tb"], d["ta"], d["val"], d["bal"]
        self._coll, self._eq, self._im, self._mm = d["coll"], d["eq"], d["im"], d["mm"]
        self._bind_checks()
        # the cached what-if states were for the old market; kept aside (this tick's only), so that the
        # first check of an account after it computes them again from the positions they keep. The
        # ones kept at the previous tick are freed on the release thread: thousands of them (13 ms of
        # frees under the interpreter lock) would otherwise lengthen this tick
        release_later(self._check_stale)
        self._check_stale = self._check_cache
        self._check_cache = OrderedDict()
        return self._levels(None, seq)

    # ================================================================== public API: queries
    @property
    def market(self) -> MarketSnapshot:
        """The current market snapshot."""
        return self._market

    @property
    def engine(self) -> MarginEngine:
        """The margin engine of the current market."""
        return self._gen.engine

    def __len__(self) -> int:
        return self._n

    @property
    def account_ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def index_of(self, account: str) -> int:
        """Dense index of an account id (stable for the life of the book)."""
        return self._acc(account)

    def margin(self, account: str | int) -> AccountStatus:
        """Current margin of one account."""
        with self._lock:
            a = self._acc(account)
            return self._status(a)

    def _status(self, a: int) -> AccountStatus:
        eq, mm = float(self._eq[a]), float(self._mm[a])
        ratio = (mm / eq if eq > 0 else math.inf) if mm > 0 else 0.0
        return AccountStatus(self._ids[a], float(self._im[a]), mm, eq, float(self._coll[a]), float(self._val[a]),
                             ratio, LEVELS[int(self._lvl[a])], int(self._ver[a]), len(self._orders.get(a, ())),
                             self.last_seq)

    def margins(self) -> dict[str, np.ndarray]:
        """Columns of every account (copies): ids, IM, MM, equity, collateral and position value, level."""
        with self._lock:
            N = self._n
            return {"account_id": np.array(self._ids, dtype=object), "initial_margin": self._im[:N].copy(),
                    "maintenance_margin": self._mm[:N].copy(), "equity": self._eq[:N].copy(),
                    "collateral_value": self._coll[:N].copy(), "position_value": self._val[:N].copy(),
                    "level": self._lvl[:N].copy()}

    def positions(self, account: str | int) -> dict[str, float]:
        """``{instrument name: quantity}`` of one account."""
        with self._lock:
            inst, qty = self._positions(self._acc(account))
            return {str(self._names[i]): float(q) for i, q in zip(inst.tolist(), qty.tolist())}

    def orders(self, account: str | int) -> dict[str, tuple[str, float, float | None]]:
        """``{order id: (instrument, remaining quantity, price)}`` of one account."""
        with self._lock:
            od = self._orders.get(self._acc(account), {})
            return {k: (str(self._names[o[0]]), float(o[1]), o[2]) for k, o in od.items()}

    def balances(self, account: str | int) -> dict[str, float]:
        with self._lock:
            a = self._acc(account)
            return {c: float(self._bal[a, j]) for j, c in enumerate(self.currencies)}

    def to_book(self) -> AccountBook:
        """The positions and balances as an (immutable) :class:`AccountBook` (negative balances are
        clipped to 0: an AccountBook holds collateral only)."""
        with self._lock:
            N = self._n
            parts_i, parts_q, parts_a = [], [], []
            for a in range(N):
                inst, qty = self._positions(a)
                parts_i.append(inst)
                parts_q.append(qty)
                parts_a.append(np.full(len(inst), a, dtype=np.int64))
            cat = (lambda p, dt: np.concatenate(p) if p else np.zeros(0, dtype=dt))  # noqa: E731
            return AccountBook.from_arrays(cat(parts_a, np.int64), cat(parts_i, np.int64), cat(parts_q, np.float64),
                                           self.instruments, account_ids=list(self._ids),
                                           collateral=np.maximum(self._bal[:N], 0.0), currencies=self.currencies,
                                           n_accounts=N, workers=1)

    # ------------------------------------------------------------------ pre-trade checks
    def _what_if_states(self, a: int) -> tuple:
        """Cached what-if evaluators of account ``a``: ``(version, market generation, positions + buys,
        positions + sells, R(positions), R(+ buys), R(+ sells), im_factor, initial margin now)``."""
        e = self._check_cache.get(a)
        gen = self._gen
        if e is not None and e[0] == self._ver[a] and e[1] == gen.number:
            self._check_cache.move_to_end(a)
            return e
        old = self._check_stale.pop(a, None)
        if old is not None and old[0] == self._ver[a]:
            # the same positions and orders as before the last tick: each evaluator computes its
            # state on the new market from the positions it keeps (no rows, copies or checks again)
            wis = [old[2].rebuilt(gen.agg)]
            if old[3] is not old[2]:
                wis.append(old[3].rebuilt(gen.agg))
        else:
            rows = self._rows(a)
            agg = gen.agg
            wis = []
            # without orders both sides start from the positions: one evaluator serves both
            for inst, qty in (rows[1:] if len(rows) > 1 else rows):
                st = np.empty(agg.state_size)
                agg.account_state(np.ascontiguousarray(inst, dtype=np.int64), np.ascontiguousarray(qty), st)
                st.setflags(write=False)
                wis.append(_gather.WhatIf(agg, st, inst, qty))  # the positions: orders on held instruments
        tp, tb, ta = float(self._tp[a]), float(self._tb[a]), float(self._ta[a])
        e = (int(self._ver[a]), gen.number, wis[0], wis[-1], tp, tb, ta, gen.im_factor,
             gen.im_factor * max(tp, tb, ta))
        self._check_cache[a] = e
        if self._checks.users:  # a binary channel answers checks in C: give it this account's states
            (ib, qb), (ia, qa) = wis[0].held, wis[-1].held
            self._checks.publish(a, e[0], gen.number, wis[0].state, ib, qb, wis[-1].state, ia, qa,
                                 wis[0] is wis[-1])
        if len(self._check_cache) > self._check_cache_size:
            self._check_cache.popitem(last=False)
        return e

    def check(self, account: str | int, orders: Any) -> CheckResult:
        """Pre-trade check: can ``account`` afford ``orders`` resting on top of its book?

        ``orders`` is ``[(instrument name or id, signed quantity), ...]`` or ``{name: quantity}``.
        The initial margin after is ``im_factor * max(R(positions), R(positions + buys),
        R(positions + sells))`` with the checked orders added to the resting ones (what-if on the
        cached account state: microseconds). Accepted when the equity covers it or the orders do not
        raise the initial margin. Nothing changes.
        """
        items = list(orders.items()) if isinstance(orders, dict) else orders
        if not isinstance(items, (list, tuple)) or not items:
            raise InvalidInputError("orders: expected a non-empty list of (instrument, quantity) pairs or a dict")
        ids = np.empty(len(items), dtype=np.int64)
        qty = np.empty(len(items))
        for k, it in enumerate(items):
            if not (isinstance(it, (tuple, list)) and len(it) == 2):
                raise InvalidInputError(f"orders: entry {k} must be an (instrument, quantity) pair, got {it!r}")
            ids[k] = self._instrument(it[0])
            q = it[1]
            if isinstance(q, (bool, np.bool_)) or not isinstance(q, (int, float, np.integer, np.floating)):
                raise InvalidTypeError(f"orders: quantity of {it[0]!r} must be a number, got {q!r}")
            q = float(q)
            if not math.isfinite(q) or q == 0.0 or abs(q) > MAX_QUANTITY:
                raise InvalidInputError(f"orders: quantity of {it[0]!r} must be finite and non-zero, got {q!r}")
            qty[k] = q
        with self._lock:
            a = self._acc(account)
            for i in ids.tolist():
                self._require_tradable(i)
            wb, wa = self._what_if_states(a)[2:4]
            f = self._gen.im_factor
            if len(items) == 1:
                # one order (most checks): the scalar entry of the same C what-if, the same bits
                # as the arrays below without their masks and copies (10.9 -> 7.3 µs p50 a check)
                i, q = int(ids[0]), float(qty[0])
                if q > 0.0:
                    tb, ta = wb.total_one(i, q)[0], float(self._ta[a])
                else:
                    tb, ta = float(self._tb[a]), wa.total_one(i, q)[0]
            else:
                buy = qty > 0
                tb = wb.total(ids[buy], qty[buy])[0] if buy.any() else float(self._tb[a])
                ta = wa.total(ids[~buy], qty[~buy])[0] if (~buy).any() else float(self._ta[a])
            return self._verdict(a, f * max(float(self._tp[a]), max(tb, ta)))

    def _verdict(self, a: int, im_after: float) -> CheckResult:
        im, eq = float(self._im[a]), float(self._eq[a])
        if not math.isfinite(im_after):
            return CheckResult(False, im, im_after, float(self._mm[a]), eq, "the margin is not finite")
        ok = eq >= im_after or im_after <= im
        reason = "" if ok else f"initial margin {im_after:.2f} would exceed equity {eq:.2f} USD"
        return CheckResult(ok, im, im_after, float(self._mm[a]), eq, reason)

    def check_one(self, a: int, i: int, q: float) -> tuple[bool, float]:
        """Fast pre-trade check of one order by dense indices (``index_of``, instrument id):
        ``(accepted, initial margin after)``. Same rule as :meth:`check`."""
        if not (0 <= a < self._n and 0 <= i < self._M) or not (q == q and q != 0.0 and abs(q) <= MAX_QUANTITY):
            raise InvalidInputError(f"check_one: bad account {a!r}, instrument {i!r} or quantity {q!r}")
        with self._lock:
            if not self._tradable_l[i]:
                self._require_tradable(i)
            e = self._check_cache.get(a)  # inlined hit path of _what_if_states (no LRU touch)
            if e is None or e[1] != self._gen.number or e[0] != self._ver.item(a):
                e = self._what_if_states(a)
            _, _, wb, wa, tp, tb, ta, f, im_now = e
            if q > 0.0:
                r, other = wb.risk_one(i, q), ta
            else:
                r, other = wa.risk_one(i, q), tb
            if r != r:  # a NaN risk is refused (the selects below would drop it)
                return False, r
            # conditional expressions, not max(): this path is a few microseconds in all
            t = r if r > other else other
            im2 = f * (t if t > tp else tp)
            return self._eq.item(a) >= im2 or im2 <= im_now, im2

    # ================================================================== state (snapshots)
    def market_state(self) -> dict[str, Any]:
        """The market as ticks left it: time and per underlying index, perpetual mark, funding."""
        m = self._market
        return {"timestamp_ms": int(m.timestamp_ms),
                "underlyings": {u: [float(um.index_price), float(um.perpetual_price), float(um.funding_rate)]
                                for u, um in m.underlyings.items()}}

    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the book exactly (see :meth:`from_state`): JSON-able metadata
        and numpy arrays (``arrays``)."""
        with self._writer, self._lock:
            N = self._n
            counts = np.zeros(N, dtype=np.int64)
            parts_i, parts_q = [_EMPTY_I], [_EMPTY_F]
            for a in range(N):
                inst, qty = self._positions(a)
                counts[a] = len(inst)
                parts_i.append(inst)
                parts_q.append(qty)
            inst_all = np.concatenate(parts_i).astype(np.int64, copy=False)
            qty_all = np.concatenate(parts_q).astype(np.float64, copy=False)
            orders = [[self._ids[a], oid, int(o[0]), float(o[1]), o[2]] for a in sorted(self._orders)
                      for oid, o in self._orders[a].items()]
            meta = {"version": 1, "currencies": list(self.currencies), "ids": list(self._ids), "orders": orders,
                    "market": self.market_state(), "last_seq": self.last_seq, "alert_seq": self._alert_seq,
                    "settled": np.flatnonzero(self._settled).tolist(), "hysteresis": self.policy.hysteresis}
            arrays = {"counts": counts, "inst": inst_all, "qty": qty_all, "balances": self._bal[:N].copy(),
                      "levels": self._lvl[:N].copy(), "versions": self._ver[:N].copy()}
            return {"meta": meta, "arrays": arrays}

    @classmethod
    def from_state(cls, engine: MarginEngine, state: dict[str, Any], *, policy: AlertPolicy | None = None,
                   workers: int | None = None, bus: AlertBus | None = None, check_cache: int = 8192,
                   compact_min: int = 1024, compact_fraction: float = 0.02) -> "LiveBook":
        """Rebuild a book from :meth:`to_state` on ``engine`` (its market is the *base* market: the
        state's marks and time are applied to it exactly as ticks did, so margins come out bit for
        bit as they were)."""
        try:
            meta, arr = state["meta"], state["arrays"]
            if meta.get("version") != 1:
                raise InvalidInputError(f"state: unknown version {meta.get('version')!r}")
            ms = meta["market"]
            base = engine.market
            und = dict(base.underlyings)
            for u, (S, perp, fr) in ms["underlyings"].items():
                if u not in und:
                    raise MarketDataError(f"state: underlying {u!r} is not in the base market")
                und[u] = und[u].with_updates(index_price=S, perpetual_price=perp, funding_rate=fr)
            market = MarketSnapshot(int(ms["timestamp_ms"]), und, dict(base.usd_rates))
            ids = [str(x) for x in meta["ids"]]
            cur = tuple(meta["currencies"])
            N = len(ids)
            counts = np.asarray(arr["counts"], dtype=np.int64)
            bal = np.asarray(arr["balances"], dtype=np.float64).reshape(N, len(cur))
            if counts.shape != (N,) or int(counts.sum()) != len(arr["inst"]) or len(arr["inst"]) != len(arr["qty"]):
                raise InvalidInputError("state: position counts do not match the accounts")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DPMError):
                raise
            raise InvalidInputError(f"state: malformed snapshot ({type(exc).__name__}: {exc})") from None
        self = cls.__new__(cls)
        if policy is None:
            policy = AlertPolicy(float(meta.get("hysteresis", 0.02)))
        self._setup(engine.with_market(market), cur, policy, workers, bus, check_cache, compact_min,
                    compact_fraction)
        self.base_market = base
        self._alert_seq = int(meta["alert_seq"])
        self._load(ids, counts, arr["inst"], arr["qty"], bal, meta["orders"], meta["settled"],
                   np.asarray(arr["levels"], dtype=np.int8), np.asarray(arr["versions"], dtype=np.int64))
        self.last_seq = int(meta["last_seq"])
        return self

    def digest(self) -> str:
        """SHA-256 of the complete state, margins included, bit for bit (equal digests: equal books)."""
        with self._writer, self._lock:
            h = hashlib.sha256()
            st = self.to_state()
            h.update(json.dumps(st["meta"], sort_keys=True).encode())
            for k in sorted(st["arrays"]):
                h.update(k.encode())
                h.update(np.ascontiguousarray(st["arrays"][k]).tobytes())
            N = self._n
            for arr in (self._tp, self._tb, self._ta, self._val, self._coll, self._eq, self._im, self._mm):
                h.update(arr[:N].tobytes())
            return h.hexdigest()
