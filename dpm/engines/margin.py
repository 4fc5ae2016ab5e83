"""MarginEngine: binds a market snapshot, an instrument table and a margin model.

Building the engine revalues every instrument once per scenario (``pnl_matrix``, M x S per contract,
in the model's risk currency) and precomputes the per-instrument add-on inputs. Margining accounts
then only gathers rows of that matrix through the accounts' CSR positions (``nogil`` kernels on a
thread pool). The engine is immutable: :meth:`MarginEngine.with_market` builds a new one for a new
snapshot while other threads keep using the old one.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from dpm._core import _risk
from dpm._util import parallel as _parallel
from dpm.engines.results import AccountMargin, MarginResults, WhatIfResult, liquidation_order
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError, UnknownInstrumentError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.models.presets import dpm_default
from dpm.models.risk_matrix import RiskMatrixModel
from dpm.portfolio.accounts import Account, AccountBook
from dpm.pricing.black import greeks as _greeks

__all__ = ["MarginEngine", "AccountState", "USD_LIKE"]

#: currencies valued at 1 USD (stablecoin de-peg is a stress scenario, not a margin input)
USD_LIKE = ("USD", "USDC", "USDT")
_MS_PER_YEAR = 365.0 * 86400.0 * 1000.0
_CONV_NONE, _CONV_MUL, _CONV_DIV = 0, 1, 2


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _result_arrays(N: int, U: int) -> tuple[np.ndarray, ...]:
    """Uninitialised outputs of margin_many: total, value (N), L, scan, roll, dshock, floor (N x U)
    and worst (N x U int32), carved from one allocation.

    One block of ~12 MB for 100,000 accounts (instead of eight) is large enough for numpy to ask for
    transparent huge pages, which cuts the page faults of the first write by the kernel.
    """
    nu = N * U
    blk = np.empty(2 * N + 5 * nu + (nu + 1) // 2)
    total, value = blk[:N], blk[N: 2 * N]
    per = [blk[2 * N + j * nu: 2 * N + (j + 1) * nu].reshape(N, U) for j in range(5)]
    worst = blk[2 * N + 5 * nu:].view(np.int32)[:nu].reshape(N, U)
    return (total, value, *per, worst)


_SCENARIO_CACHE: dict[int, tuple[Any, tuple[str, ...], dict]] = {}


def _scenario_sets(model: RiskMatrixModel, unds: tuple[str, ...]) -> dict:
    """``model.scenario_set(u)`` for every underlying, memoised per model object.

    Scenario sets depend on the (immutable) model only, not on the market, and building them
    (grids, validation) costs about as much as revaluing the whole market; a market update
    (``with_market``) or a second engine on the same model reuses them. The cache holds a weak
    reference to the model, so an entry never outlives its model or serves another one.
    """
    key = id(model)
    hit = _SCENARIO_CACHE.get(key)
    if hit is not None and hit[0]() is model and hit[1] == unds:
        return hit[2]
    sets = {u: model.scenario_set(u) for u in unds}
    try:
        ref = weakref.ref(model)
    except TypeError:  # pragma: no cover - a model type without weak references: no caching
        return sets
    if len(_SCENARIO_CACHE) >= 64:
        _SCENARIO_CACHE.clear()
    _SCENARIO_CACHE[key] = (ref, unds, sets)
    return sets


def _zeros_aligned(shape: tuple[int, int], align: int = 64) -> np.ndarray:
    """C-contiguous float64 zeros whose data starts on an ``align``-byte boundary.

    The P&L matrix rows (a multiple of 8 doubles) then start on cache-line boundaries, so the gather
    kernel reads each row with whole-line vector loads instead of loads split across two lines.
    """
    n = int(np.prod(shape))
    buf = np.zeros(n + align // 8)
    off = (-buf.ctypes.data % align) // 8
    return buf[off: off + n].reshape(shape)


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything the kernels need, precomputed once per (market, table, model)."""

    S: int
    Sp: int
    pnl: np.ndarray            # M x Sp
    base_value: np.ndarray     # M, risk currency
    available: np.ndarray      # M bool: priced (underlying in market, not expired)
    unavailable_reason: dict   # instrument id -> reason, for errors
    inst_und: np.ndarray
    scen_labels: dict
    weight: np.ndarray         # U x Sp
    und_price: np.ndarray      # U
    risk_to_usd: np.ndarray    # U
    agg: Any                   # _risk.AggregationPlan
    delta: np.ndarray          # M, delta per contract in underlying units


class MarginEngine:
    """Portfolio margin of accounts under a scenario model.

    Parameters
    ----------
    market : MarketSnapshot
        Index prices, forward curves and vol surfaces.
    instruments : InstrumentTable
        Every instrument accounts may hold. Instruments whose underlying is missing from the market,
        or that have expired, are kept but cannot be margined (an error names them if an account
        holds one).
    model : RiskMatrixModel, optional
        Defaults to :func:`dpm.models.dpm_default`.
    workers : int, optional
        Threads for the revaluation (None: all cores).

    Examples
    --------
    >>> from dpm.portfolio.sample import default_instruments, generate_accounts
    >>> from dpm.market.sample import default_market
    >>> from dpm.models import deribit_pm
    >>> engine = MarginEngine(default_market(), default_instruments(), deribit_pm())
    >>> book = generate_accounts(100, engine.instruments, seed=1)
    >>> res = engine.margin_many(book)
    >>> bool((res.initial_margin >= res.maintenance_margin).all())
    True
    """

    def __init__(self, market: MarketSnapshot, instruments: InstrumentTable,
                 model: RiskMatrixModel | None = None, *, workers: int | None = None) -> None:
        if not isinstance(market, MarketSnapshot):
            raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
        if not isinstance(instruments, InstrumentTable):
            raise InvalidTypeError(f"instruments: expected an InstrumentTable, got {type(instruments).__name__}")
        model = dpm_default() if model is None else model
        if not isinstance(model, RiskMatrixModel):
            raise InvalidTypeError(f"model: expected a RiskMatrixModel, got {type(model).__name__}")
        self.market = market
        self.instruments = instruments
        self.model = model
        self._plan = _build_plan(market, instruments, model, workers)

    # ------------------------------------------------------------------ properties
    @property
    def underlyings(self) -> tuple[str, ...]:
        return tuple(self.instruments.underlyings)

    @property
    def pnl_matrix(self) -> np.ndarray:
        """Instrument x scenario P&L per contract in the risk currency (read-only view, M x S)."""
        return self._plan.pnl[:, : self._plan.S]

    @property
    def scenario_labels(self) -> dict[str, tuple[str, ...]]:
        return dict(self._plan.scen_labels)

    def with_market(self, market: MarketSnapshot, *, workers: int | None = None) -> "MarginEngine":
        """A new engine on a new snapshot (this one is unchanged and stays usable)."""
        return MarginEngine(market, self.instruments, self.model, workers=workers)

    def with_model(self, model: RiskMatrixModel, *, workers: int | None = None) -> "MarginEngine":
        return MarginEngine(self.market, self.instruments, model, workers=workers)

    # ------------------------------------------------------------------ many accounts
    def _check_book(self, book: AccountBook) -> None:
        if not isinstance(book, AccountBook):
            raise InvalidTypeError(f"accounts: expected an AccountBook, got {type(book).__name__}")
        book.require_table(self.instruments)
        plan = self._plan
        hit = book.first_position_in(~plan.available) if plan.unavailable_reason else None
        if hit is not None:
            a, i = hit
            raise MarketDataError(
                f"account {book.account_id[a]!r}: position in {self.instruments.name[i]!r} cannot be "
                f"margined: {plan.unavailable_reason[i]}"
            )

    def _collateral_usd(self, book: AccountBook) -> np.ndarray:
        rates = np.empty(len(book.currencies))
        for j, ccy in enumerate(book.currencies):
            if ccy in USD_LIKE:
                price = 1.0
            elif ccy in self.market:
                price = float(self.market[ccy].index_price)
            else:
                if book.collateral.shape[0] and np.any(book.collateral[:, j] != 0):
                    a = int(np.flatnonzero(book.collateral[:, j] != 0)[0])
                    raise MarketDataError(
                        f"account {book.account_id[a]!r}: collateral currency {ccy!r} has no price in the market"
                    )
                price = 0.0
            rates[j] = price * (1.0 - float(self.model.haircuts.get(ccy, 0.0)))
        if book.collateral.size == 0:
            return np.zeros(len(book))
        return book.collateral @ rates

    def margin_many(self, accounts: AccountBook, *, workers: int | None = None,
                    contributions: bool = False) -> MarginResults:
        """Margin of every account of ``accounts`` (an :class:`AccountBook`).

        Parameters
        ----------
        accounts : AccountBook
        workers : int, optional
            Threads (None: all cores); results are identical for every value.
        contributions : bool
            Also return each position's P&L in its underlying's binding scenario.
        """
        self._check_book(accounts)
        plan = self._plan
        N, U = len(accounts), len(self.underlyings)
        total, value, L, scan, roll, dshock, floor, worst = _result_arrays(N, U)
        indptr, inst, qty = accounts.indptr, accounts.instrument_idx, accounts.quantity
        agg = plan.agg

        # pointers bound once: a chunk costs one call (its own C scratch state, GIL released)
        job = agg.margin_job(indptr, inst, qty, total, value, L, scan, worst, roll, dshock, floor)
        _parallel.run_chunked(job.run, N, workers, min_chunk=256, chunks_per_worker=4)
        coll = self._collateral_usd(accounts)
        contrib = self._contributions(accounts, worst) if contributions else None
        return self._results(accounts.account_id, total, value, coll, L, scan, worst, roll, dshock, floor,
                             contrib, accounts)

    def _results(self, ids, total, value, coll, L, scan, worst, roll, dshock, floor, contrib, book) -> MarginResults:
        im = self.model.im_factor * total
        mm = self.model.mm_factor * total
        equity = coll + value
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(mm > 0, np.where(equity > 0, mm / np.where(equity > 0, equity, 1.0), np.inf), 0.0)
        return MarginResults(
            account_id=ids, initial_margin=im, maintenance_margin=mm, risk=total, equity=equity,
            collateral_value=coll, position_value=value, margin_ratio=ratio, excess=equity - im,
            underlyings=self.underlyings, charge=L, scan=scan, roll_shock=roll, delta_shock=dshock,
            floor=floor, worst_scenario=worst, scenario_labels=self.scenario_labels,
            model_name=self.model.name, contribution=contrib, usd_prices=self._usd_prices(), _book=book,
        )

    def _usd_prices(self) -> dict[str, float]:
        prices = {c: 1.0 for c in USD_LIKE}
        prices.update({u: float(self.market[u].index_price) for u in self.market.underlyings})
        return prices

    def _contributions(self, book: AccountBook, worst: np.ndarray) -> np.ndarray:
        plan = self._plan
        if book.n_positions == 0:
            return np.zeros(0)
        acc = np.repeat(np.arange(len(book)), np.diff(book.indptr))
        u = plan.inst_und[book.instrument_idx]
        s = worst[acc, u]
        hit = s >= 0
        s0 = np.where(hit, s, 0)
        w = plan.weight[u, s0]
        pnl = book.quantity * plan.pnl[book.instrument_idx, s0] * w * plan.risk_to_usd[u]
        return np.where(hit, pnl, 0.0)

    # ------------------------------------------------------------------ one account
    def _single_book(self, account: Account | AccountBook, index: int | str | None) -> AccountBook:
        if isinstance(account, AccountBook):
            if index is None:
                if len(account) != 1:
                    raise InvalidInputError("account: pass index= to pick one account of the book")
                return account
            i = account.index_of(index) if isinstance(index, str) else int(index)
            return account.subset([i])
        if isinstance(account, Account):
            return AccountBook.from_accounts([account], self.instruments)
        raise InvalidTypeError(f"account: expected an Account or AccountBook, got {type(account).__name__}")

    def margin(self, account: Account | AccountBook, index: int | str | None = None) -> AccountMargin:
        """Readable margin of one account, with its breakdown and liquidation order."""
        book = self._single_book(account, index)
        res = self.margin_many(book, workers=1, contributions=True)
        names = self.instruments.name[book.instrument_idx]
        by_und = {}
        for j, u in enumerate(self.underlyings):
            if res.charge[0, j] == 0 and res.scan[0, j] == 0 and not np.any(self._plan.inst_und[book.instrument_idx] == j):
                continue
            k = int(res.worst_scenario[0, j])
            labels = res.scenario_labels.get(u, ())
            by_und[u] = {
                "charge": float(res.charge[0, j]), "scan": float(res.scan[0, j]),
                "roll_shock": float(res.roll_shock[0, j]), "delta_shock": float(res.delta_shock[0, j]),
                "floor": float(res.floor[0, j]),
                "worst_scenario": labels[k] if 0 <= k < len(labels) else "none",
            }
        return AccountMargin(
            account_id=str(book.account_id[0]), initial_margin=float(res.initial_margin[0]),
            maintenance_margin=float(res.maintenance_margin[0]), equity=float(res.equity[0]),
            margin_ratio=float(res.margin_ratio[0]), excess=float(res.excess[0]), by_underlying=by_und,
            liquidation_order=liquidation_order(names, book.quantity, res.contribution),
            model_name=self.model.name,
        )

    def prepare(self, account: Account | AccountBook, index: int | str | None = None) -> "AccountState":
        """Cache one account's scenario P&L vector and add-on state for fast what-if checks."""
        book = self._single_book(account, index)
        self._check_book(book)
        return AccountState(self, book)

    def what_if(self, account: Account | AccountBook, orders: Any, index: int | str | None = None) -> WhatIfResult:
        """Margin after ``orders`` (``{name: qty}`` or ``[(name or id, qty), ...]``) are added."""
        return self.prepare(account, index).what_if(orders)


class AccountState:
    """One account's cached aggregation state: what-if costs O(scenarios) per order.

    Created by :meth:`MarginEngine.prepare`. ``what_if`` never changes the state; ``apply`` returns a
    new state with the orders filled. Order premiums are paid at mark: ``cash_usd`` carries the cash
    paid (< 0) or received by filled orders, so filling an order leaves the equity unchanged.

    Not thread-safe: a what-if reuses the state's own work buffers (that is what makes it
    allocation-free). Give each thread its own state (``engine.prepare`` is cheap); the engine
    itself is immutable and can be shared.
    """

    def __init__(self, engine: MarginEngine, book: AccountBook, *, cash_usd: float = 0.0) -> None:
        self.engine = engine
        self.book = book
        self.cash_usd = float(cash_usd)
        agg = engine._plan.agg
        self.state = np.empty(agg.state_size)
        agg.account_state(np.ascontiguousarray(book.instrument_idx, dtype=np.int64),
                          np.ascontiguousarray(book.quantity, dtype=np.float64), self.state)
        self.state.setflags(write=False)
        # C-level evaluator with its own work buffers: a what-if call allocates nothing
        self._wi = _risk.WhatIf(agg, self.state)
        self._total = np.empty(1)
        self._value = np.empty(1)
        self.collateral_usd = float(engine._collateral_usd(book)[0])
        self._base_value = 0.0
        before = self._evaluate(np.zeros(0, dtype=np.int64), np.zeros(0))
        self._base_value = float(self._value[0])
        before = (before[0], before[1], self.collateral_usd + self.cash_usd + self._base_value)
        self.initial_margin = before[0]
        self.maintenance_margin = before[1]
        self.equity = before[2]

    def _evaluate(self, ids: np.ndarray, qty: np.ndarray) -> tuple[float, float, float]:
        r, v = self._wi.total(ids, qty)
        self._total[0] = r
        self._value[0] = v
        m = self.engine.model
        # equity of the account *before* the orders: their premium is paid at mark (cash out = value in)
        return m.im_factor * r, m.mm_factor * r, self.collateral_usd + self.cash_usd + self._base_value

    def _orders(self, orders: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(orders, Mapping):
            items = list(orders.items())
        else:
            items = list(orders)
        n = len(items)
        ids = np.empty(n, dtype=np.int64)
        qty = np.empty(n)
        table = self.engine.instruments
        plan = self.engine._plan
        M = len(table)
        names = getattr(table, "_index", None)
        names = names if isinstance(names, dict) else None
        for k, (inst, q) in enumerate(items):
            if isinstance(inst, (int, np.integer)) and not isinstance(inst, bool):
                i = int(inst)
                if not 0 <= i < M:
                    raise UnknownInstrumentError(f"orders: instrument id {i} is not in the table (0..{M - 1})")
            else:
                # the table's name -> id dict when it has one (no array round trip per order)
                i = names.get(inst) if names is not None and isinstance(inst, str) else None
                if i is None:
                    i = int(table.index_of([inst])[0])
            try:
                qf = float(q)
            except (TypeError, ValueError):
                raise InvalidTypeError(f"orders: quantity of {inst!r} must be a number, got {q!r}") from None
            if not math.isfinite(qf):
                raise InvalidInputError(f"orders: quantity of {inst!r} must be finite, got {qf!r}")
            if not plan.available[i]:
                raise MarketDataError(f"orders: {table.name[i]!r} cannot be margined: {plan.unavailable_reason[i]}")
            ids[k] = i
            qty[k] = qf
        return ids, qty

    def what_if(self, orders: Any) -> WhatIfResult:
        """Margin after adding ``orders``; the order premium is assumed paid at mark (equity unchanged)."""
        ids, qty = self._orders(orders)
        im, mm, equity = self._evaluate(ids, qty)
        return WhatIfResult(im, mm, self.initial_margin, equity, bool(equity >= im))

    def what_if_ids(self, instrument_ids: np.ndarray, quantities: np.ndarray) -> float:
        """Fast path: IM after orders given as arrays of instrument ids and quantities.

        Ids must be integers in the table (``UnknownInstrumentError``) of priced instruments
        (``MarketDataError``) and quantities finite numbers (``InvalidInputError``): a NaN order
        would otherwise turn the margin into a silent wrong number.
        """
        ids, qty = self._checked_arrays(instrument_ids, quantities)
        return self.engine.model.im_factor * self._wi.total(ids, qty)[0]

    def _checked_arrays(self, instrument_ids: Any, quantities: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(instrument_ids)
        qty = np.asarray(quantities)
        if ids.ndim != 1 or qty.ndim != 1 or ids.shape != qty.shape:
            raise InvalidInputError(
                f"orders: instrument_ids and quantities must be 1-d of the same length, got shapes "
                f"{ids.shape} and {qty.shape}")
        if ids.dtype.kind not in "iu" or ids.dtype == np.bool_:
            raise InvalidTypeError(f"instrument_ids: expected integers, got dtype {ids.dtype}")
        if qty.dtype.kind not in "iuf" or qty.dtype == np.bool_:
            raise InvalidTypeError(f"quantities: expected numbers, got dtype {qty.dtype}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        qty = np.ascontiguousarray(qty, dtype=np.float64)
        M = len(self.engine.instruments)
        out = (ids < 0) | (ids >= M)
        if out.any():
            k = int(np.flatnonzero(out)[0])
            raise UnknownInstrumentError(f"instrument_ids: id {int(ids[k])} at index {k} is not in the table (0..{M - 1})")
        bad = ~np.isfinite(qty)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"quantities: index {k} ({self.engine.instruments.name[ids[k]]!r}) is {qty[k]!r}, "
                                    "must be finite")
        plan = self.engine._plan
        na = ~plan.available[ids]
        if na.any():
            i = int(ids[np.flatnonzero(na)[0]])
            raise MarketDataError(f"orders: {self.engine.instruments.name[i]!r} cannot be margined: "
                                  f"{plan.unavailable_reason[i]}")
        return ids, qty

    def apply(self, orders: Any) -> "AccountState":
        """A new state with the orders filled at mark (this one unchanged; equity unchanged)."""
        ids, qty = self._orders(orders)
        self._evaluate(ids, qty)
        premium = float(self._value[0]) - self._base_value  # mark value bought (> 0) or sold (< 0)
        book = self.book
        inst = np.concatenate([book.instrument_idx, ids])
        q = np.concatenate([book.quantity, qty])
        new = AccountBook.from_arrays(np.zeros(len(inst), dtype=np.int64), inst, q, self.engine.instruments,
                                      account_ids=book.account_id, collateral=book.collateral,
                                      currencies=book.currencies)
        return AccountState(self.engine, new, cash_usd=self.cash_usd - premium)


# ---------------------------------------------------------------------------------------------
def _build_plan(market: MarketSnapshot, table: InstrumentTable, model: RiskMatrixModel,
                workers: int | None) -> _Plan:
    M = len(table)
    unds = tuple(table.underlyings)
    U = len(unds)
    kind = np.asarray(table.kind, dtype=np.int8)
    und = np.asarray(table.underlying, dtype=np.int32)
    expiry = np.asarray(table.expiry_ms, dtype=np.int64)
    now = market.timestamp_ms
    dated = (kind == Kind.FUTURE) | (kind == Kind.OPTION)

    # which instruments can be priced: underlying in the market and not expired
    available = np.ones(M, dtype=bool)
    reason: dict[int, str] = {}
    for j, u in enumerate(unds):
        if u not in market:
            for i in np.flatnonzero(und == j):
                available[i] = False
                reason[int(i)] = f"no market data for underlying {u!r}"
    expired = dated & (expiry <= now) & available
    for i in np.flatnonzero(expired):
        available[i] = False
        reason[int(i)] = "the instrument has expired at the market's timestamp"

    F = np.ones(M)
    T = np.zeros(M)
    vol = np.zeros(M)
    index_of_inst = np.ones(M)
    if available.any():
        sub_idx = np.flatnonzero(available)
        sub = table if sub_idx.size == M else table.subset(available)
        inp = market.instrument_inputs(sub)
        F[sub_idx] = inp.forward
        T[sub_idx] = inp.time
        v = np.asarray(inp.vol, dtype=np.float64)
        vol[sub_idx] = np.where(np.isfinite(v), v, 0.0)
        index_of_inst[sub_idx] = inp.index
    is_opt = (kind == Kind.OPTION) & available
    bad_vol = is_opt & ~(vol > 0)
    if bad_vol.any():
        i = int(np.flatnonzero(bad_vol)[0])
        raise MarketDataError(f"instrument {table.name[i]!r}: surface vol must be > 0, got {vol[i]!r}")

    und_price = np.ones(U)
    for j, u in enumerate(unds):
        if u in market:
            und_price[j] = float(market[u].index_price)
    coin_mode = model.risk_currency == "coin"
    to_risk = 1.0 / und_price if coin_mode else np.ones(U)
    risk_to_usd = und_price.copy() if coin_mode else np.ones(U)

    # scenarios per underlying, padded to a common length; padded entries have weight 0
    all_sets = _scenario_sets(model, unds)
    sets = {u: all_sets[u] for u in unds if u in market}
    S = max((len(s) for s in sets.values()), default=1)
    Sp = -(-S // 8) * 8
    move = np.zeros((U, Sp))
    vdir = np.zeros((U, Sp), dtype=np.int8)
    weight = np.zeros((U, Sp))
    damp = np.zeros((U, Sp))
    labels: dict[str, tuple[str, ...]] = {}
    for j, u in enumerate(unds):
        s = sets.get(u)
        if s is None:
            continue
        n = len(s)
        move[j, :n] = s.price_move
        vdir[j, :n] = s.vol_dir
        weight[j, :n] = s.weight
        damp[j, :n] = s.dampener_usd * (1.0 / (und_price[j] * (1.0 + s.price_move)) if coin_mode else 1.0)
        labels[u] = s.labels
    price = und_price[:, None] * (1.0 + move)

    # vol columns: sticky strike -> [base, down, up]; sticky moneyness -> one column per scenario
    if model.sticky == "strike":
        vol_cols = np.zeros((M, 3))
        vol_cols[:, 0] = vol
        for j, u in enumerate(unds):
            sel = np.flatnonzero((und == j) & is_opt)
            if sel.size == 0:
                continue
            shock = model.params(u).vol_shock
            vol_cols[sel, 1] = shock.shocked(vol[sel], T[sel], -1)
            vol_cols[sel, 2] = shock.shocked(vol[sel], T[sel], +1)
        volcol = np.where(vdir < 0, 1, np.where(vdir > 0, 2, 0)).astype(np.int32)
    else:
        vol_cols = np.zeros((M, 1 + Sp))
        vol_cols[:, 0] = vol
        volcol = np.tile(np.arange(1, Sp + 1, dtype=np.int32), (U, 1))
        for j, u in enumerate(unds):
            sel = np.flatnonzero((und == j) & is_opt)
            if sel.size == 0 or u not in market:
                continue
            surf = market[u].vol_surface
            shock = model.params(u).vol_shock
            for s_ in range(Sp):
                F1 = F[sel] * (1.0 + move[j, s_])
                base = surf.implied_vol(np.asarray(table.strike)[sel], T[sel], F1)
                vol_cols[sel, 1 + s_] = shock.shocked(base, T[sel], int(vdir[j, s_]))
    vol_cols = np.ascontiguousarray(vol_cols)

    inverse = np.asarray(table.inverse, dtype=np.uint8)
    conv = np.where(inverse == 1, _CONV_NONE if coin_mode else _CONV_MUL,
                    _CONV_DIV if coin_mode else _CONV_NONE).astype(np.int8)
    K = np.where(kind == Kind.OPTION, np.asarray(table.strike, dtype=np.float64), 1.0)
    K = np.where(np.isfinite(K), K, 1.0)
    cp = np.where(np.asarray(table.option_type) < 0, -1.0, 1.0)
    cs = np.asarray(table.contract_size, dtype=np.float64)
    dt = max(model.params(u).time_shift_days for u in unds) / 365.0 if unds else 0.0
    if len({model.params(u).time_shift_days for u in unds}) > 1:
        raise InvalidInputError("time_shift_days: must be the same for every underlying")

    pnl = _zeros_aligned((M, Sp))
    base = np.zeros(M)

    def run(start: int, stop: int) -> None:
        _risk.revalue_rows(start, stop, S, kind, inverse, conv, und, F, K, cp, T, cs, vol_cols, move, volcol,
                           price, und_price, dt, base, pnl)

    _parallel.run_chunked(run, M, workers, min_chunk=256)
    pnl[~available] = 0.0
    base[~available] = 0.0

    # per-instrument add-on inputs
    delta = np.zeros(M)
    opt_idx = np.flatnonzero(is_opt)
    if opt_idx.size:
        g = _greeks(F[opt_idx], K[opt_idx], vol[opt_idx], T[opt_idx], cp[opt_idx])
        d = g["delta"] - np.where(inverse[opt_idx] == 1, g["price"] / F[opt_idx], 0.0)
        delta[opt_idx] = cs[opt_idx] * d
    lin = available & (kind != Kind.OPTION)
    delta[lin] = np.where(inverse[lin] == 1, cs[lin] / F[lin], cs[lin])

    notional = np.where((inverse == 1) & (kind != Kind.OPTION), cs, cs * index_of_inst)
    notional[~available] = 0.0
    som = np.zeros(M)
    # mark value counted in equity: options and spot holdings (futures/perpetuals settle their P&L)
    is_spot = (kind == Kind.SPOT) & available
    value = np.where(is_opt | is_spot, base * risk_to_usd[und], 0.0)

    # expiry buckets per underlying for the roll shock (perpetuals: T = 0; spot: never charged)
    bucket = np.zeros(M, dtype=np.int32)
    bucket_ptr = np.zeros(U + 1, dtype=np.int64)
    rates: list[float] = []
    for j, u in enumerate(unds):
        params = model.params(u)
        sel = np.flatnonzero(und == j)
        if sel.size:
            key = np.where(kind[sel] == Kind.SPOT, -2, np.where(kind[sel] == Kind.PERPETUAL, -1, expiry[sel]))
            uniq, inv = np.unique(key, return_inverse=True)
            bucket[sel] = len(rates) + inv
            for kval in uniq:
                if kval == -2:
                    rates.append(0.0)
                else:
                    tb = 0.0 if kval == -1 else max((int(kval) - now) / _MS_PER_YEAR, 0.0)
                    rates.append(float(params.roll_shock.rate(tb)) * (1.0 if coin_mode else und_price[j]))
            som_rate = params.short_option_minimum
            if som_rate:
                o = sel[kind[sel] == Kind.OPTION]
                som[o] = som_rate * cs[o] * (1.0 if coin_mode else und_price[j])
        bucket_ptr[j + 1] = len(rates)
    bucket_rate = np.asarray(rates, dtype=np.float64)

    ds_thr = np.array([model.params(u).delta_shock.threshold_usd for u in unds], dtype=np.float64)
    ds_thr = np.where(np.isfinite(ds_thr), ds_thr, np.finfo(np.float64).max)
    ds_m = np.array([model.params(u).delta_shock.m_inc for u in unds], dtype=np.float64)
    ds_max = np.array([model.params(u).delta_shock.max_delta_shock for u in unds], dtype=np.float64)
    size_rate = np.array([model.params(u).size_charge.rate for u in unds], dtype=np.float64)
    tiers = {(model.params(u).size_charge.bounds_usd, model.params(u).size_charge.multipliers) for u in unds}
    if len(tiers) > 1:
        raise InvalidInputError("size_charge: bounds_usd and multipliers must be the same for every underlying")
    bounds, mults = next(iter(tiers)) if tiers else ((), (1.0,))
    tier_bound = np.asarray(bounds, dtype=np.float64)
    tier_mult = np.asarray(mults, dtype=np.float64)
    corr = model.correlation_matrix(unds) if U else None
    corr = None if corr is None else np.ascontiguousarray(corr, dtype=np.float64)

    arrays = dict(
        pnl=pnl, inst_und=und, inst_bucket=bucket, inst_delta=delta, inst_som=som, inst_notional=notional,
        inst_value=value, weight=weight, damp=damp, bucket_ptr=bucket_ptr, bucket_rate=bucket_rate,
        und_price=und_price, to_risk=to_risk, risk_to_usd=risk_to_usd, ds_threshold=ds_thr, ds_m_inc=ds_m,
        ds_max=ds_max, size_rate=size_rate, tier_bound=tier_bound, tier_mult=tier_mult,
    )
    for a in arrays.values():
        _ro(a)
    agg = _risk.AggregationPlan(S=S, corr=corr, keep=(arrays, corr), **arrays)
    return _Plan(S=S, Sp=Sp, pnl=pnl, base_value=base, available=_ro(available), unavailable_reason=reason,
                 inst_und=und, scen_labels=labels, weight=weight, und_price=und_price, risk_to_usd=risk_to_usd,
                 agg=agg, delta=_ro(delta))
