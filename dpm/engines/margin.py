"""MarginEngine: binds a market snapshot, an instrument table and a risk-matrix margin model.

Building the engine asks the model for its joint, aligned scenario set
(:meth:`~dpm.models.risk_matrix.RiskMatrixModel.scenario_set`), revalues every instrument once per
scenario through the shared :class:`~dpm.engines.plan.RevaluationPlan` (``pnl_matrix``, M x S per
contract, in the model's risk currency) and precomputes the add-on inputs. Margining accounts then
only gathers rows of that matrix through the accounts' CSR positions (``nogil`` kernels on a thread
pool) and combines underlyings as the model says (joint correlated scenarios by default). The
engine is immutable: :meth:`MarginEngine.with_market` builds a new one for a new snapshot while
other threads keep using the old one.
"""
from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from dpm._core import _gather
from dpm._util import parallel as _parallel
from dpm._util.memo import WeakMemo
from dpm.engines.plan import RevaluationPlan
from dpm.engines.results import AccountMargin, MarginResults, RiskVectors, WhatIfResult, liquidation_order
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError, UnknownInstrumentError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.models.presets import dpm_default
from dpm.models.risk_matrix import AGGREGATIONS, RiskMatrixModel
from dpm.models.scenarios import FLAG_EXTENDED, FLAG_EXTREME, FLAG_PADDING, ScenarioSet
from dpm.portfolio.accounts import Account, AccountBook
from dpm.pricing.black import greeks as _greeks

__all__ = ["MarginEngine", "AccountState", "USD_LIKE", "JOINT_MAX_HELD"]

#: currencies valued at 1 USD (stablecoin de-peg is a stress scenario, not a margin input)
USD_LIKE = ("USD", "USDC", "USDT")
_MS_PER_YEAR = 365.0 * 86400.0 * 1000.0
#: joint aggregation enumerates correlated combinations over at most this many held underlyings
#: (dpm_types.h / gather.h DPM_JOINT_MAX); an account holding more is charged the sum (conservative)
JOINT_MAX_HELD = 4
#: up to this many underlyings in a table, subsets of 3 and 4 get their own inverse correlation
_JOINT_MASK_MAX_U = 16


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _result_arrays(N: int, U: int) -> tuple[np.ndarray, ...]:
    """Uninitialised outputs of margin_many, carved from one allocation: total, value, joint (N),
    L, scan, worst (int32), roll, dshock, floor (N x U), in the kernel's binding order.

    One block (~14 MB for 100,000 accounts) instead of nine is large enough for numpy to ask for
    transparent huge pages, which cuts the page faults of the first write by the kernel.
    """
    nu = N * U
    blk = np.empty(3 * N + 5 * nu + (nu + 1) // 2)
    total, value, joint = blk[:N], blk[N: 2 * N], blk[2 * N: 3 * N]
    per = [blk[3 * N + j * nu: 3 * N + (j + 1) * nu].reshape(N, U) for j in range(5)]
    worst = blk[3 * N + 5 * nu:].view(np.int32)[:nu].reshape(N, U)
    L, scan, roll, dshock, floor = per
    return total, value, joint, L, scan, worst, roll, dshock, floor


_SCENARIO_CACHE = WeakMemo()


def _model_scenarios(model: RiskMatrixModel, unds: tuple[str, ...]) -> ScenarioSet:
    """``model.scenario_set(unds)``, memoised per model object.

    The set depends on the (immutable) model only, not on the market, and building it costs about
    as much as revaluing the whole market; a market update (``with_market``) reuses it. The memo
    holds a weak reference to the model, so an entry never outlives its model or serves another.
    """
    hit = _SCENARIO_CACHE.get((model,), unds)
    if hit is not None:
        return hit
    return _SCENARIO_CACHE.put((model,), unds, model.scenario_set(unds))


_MODEL_ARRAY_CACHE = WeakMemo()


def _model_arrays(model: RiskMatrixModel, unds: tuple[str, ...], sset: ScenarioSet, Sp: int) -> dict[str, np.ndarray]:
    """The aggregation inputs that depend on the model alone (add-on parameters, correlation, the
    joint tables), read-only, memoised per (model, scenario set) like :func:`_model_scenarios`: a
    market tick rebuilds the plan, and these took about 0.7 ms of it."""
    hit = _MODEL_ARRAY_CACHE.get((model, sset), (unds, Sp))
    if hit is not None:
        return hit
    U = len(unds)
    ds_thr = np.array([model.params(u).delta_shock.threshold_usd for u in unds], dtype=np.float64)
    ds_thr = np.where(np.isfinite(ds_thr), ds_thr, np.finfo(np.float64).max)
    ds_m = np.array([model.params(u).delta_shock.m_inc for u in unds], dtype=np.float64)
    ds_max = np.array([model.params(u).delta_shock.max_delta_shock for u in unds], dtype=np.float64)
    size_rate = np.array([model.params(u).size_charge.rate for u in unds], dtype=np.float64)
    tiers = {(model.params(u).size_charge.bounds_usd, model.params(u).size_charge.multipliers) for u in unds}
    if len(tiers) > 1:
        raise InvalidInputError("size_charge: bounds_usd and multipliers must be the same for every underlying")
    bounds, mults = next(iter(tiers))
    agg_name = model.aggregation_mode
    corr = model.correlation_matrix(unds) if model.correlation is not None else None
    corr_arr = np.ascontiguousarray(corr if corr is not None else np.eye(U), dtype=np.float64)
    if agg_name == "joint":
        joint = _joint_tables(sset, corr_arr, Sp)
    else:
        joint = dict(grp=np.full((U, Sp), -1, dtype=np.int32), ngrp=np.zeros(U, dtype=np.int32),
                     gz=np.zeros((U, 1)), pair_off=np.full(U * U, -1, dtype=np.int64), ctab=np.zeros(0),
                     mask_off=np.zeros(0, dtype=np.int64), qsub=np.zeros(0))
    offset = np.array([float(model.pnl_offset.get(u, 0.0)) for u in unds])
    max_offset = np.array([float(model.max_offsetable_pnl.get(u, np.inf)) for u in unds])
    credits = [c for c in model.spread_credits if c.leg_a in unds and c.leg_b in unds]
    sp_leg = np.array([[unds.index(c.leg_a), unds.index(c.leg_b)] for c in credits], dtype=np.int32).reshape(-1, 2)
    sp_rate = np.array([c.rate for c in credits], dtype=np.float64)
    sp_ratio = np.array([c.ratio for c in credits], dtype=np.float64)
    out = dict(ds_threshold=ds_thr, ds_m_inc=ds_m, ds_max=ds_max, size_rate=size_rate,
               tier_bound=np.asarray(bounds, dtype=np.float64), tier_mult=np.asarray(mults, dtype=np.float64),
               corr=corr_arr, offset=offset, max_offset=max_offset, sp_leg=np.ascontiguousarray(sp_leg),
               sp_rate=sp_rate, sp_ratio=sp_ratio, **joint)
    for a in out.values():
        a.setflags(write=False)
    return _MODEL_ARRAY_CACHE.put((model, sset), (unds, Sp), out)


def _mahalanobis_sq(R: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """``z' R^+ z`` for each row of ``Z`` (inf for a move outside the span of a singular ``R``)."""
    lam, V = np.linalg.eigh(R)
    proj = Z @ V
    tol = 1e-12
    live = lam > tol
    out = (proj[:, live] ** 2 / lam[live]).sum(axis=1)
    if (~live).any():
        off = np.abs(proj[:, ~live]).max(axis=1) > 1e-9
        out = np.where(off, np.inf, out)
    return out


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything the kernels need, precomputed once per (market, table, model)."""

    revaluation: RevaluationPlan
    scenarios: ScenarioSet
    S: int
    Sp: int
    pnl: np.ndarray            # M x Sp, risk currency
    inst_und: np.ndarray
    weight: np.ndarray         # U x Sp
    damp: np.ndarray           # U x Sp, risk currency
    und_price: np.ndarray      # U
    risk_to_usd: np.ndarray    # U
    agg: Any                   # _gather.AggregationPlan
    delta: np.ndarray          # M, delta per contract in underlying units
    value: np.ndarray          # M, USD value per contract counted in equity


class MarginEngine:
    """Portfolio margin of accounts under a scenario model.

    Parameters
    ----------
    market : MarketSnapshot
        Index prices, forward curves and vol surfaces.
    instruments : InstrumentTable
        Every instrument accounts may hold. Instruments that cannot be revalued (underlying missing
        from the market, expired, unusable market data) are kept; an account or order holding one
        fails with a ``MarketDataError`` naming it.
    model : RiskMatrixModel, optional
        Defaults to :func:`dpm.models.dpm_default`.
    workers : int, optional
        Default number of threads of every call (None: all cores); each method also takes
        ``workers``. Results are identical for every value.

    Examples
    --------
    >>> from dpm.market.sample import default_instruments, default_market
    >>> from dpm.portfolio.sample import generate_accounts
    >>> from dpm.models import deribit_pm
    >>> engine = MarginEngine(default_market(), default_instruments(), deribit_pm())
    >>> book = generate_accounts(100, engine.instruments, seed=1)
    >>> res = engine.margin_many(book)
    >>> bool((res.initial_margin >= res.maintenance_margin).all())
    True
    """

    def __init__(self, market: MarketSnapshot, instruments: InstrumentTable,
                 model: RiskMatrixModel | None = None, *, workers: int | None = None) -> None:
        self._init(market, instruments, model, workers, None)

    def _init(self, market: MarketSnapshot, instruments: InstrumentTable, model: RiskMatrixModel | None,
              workers: int | None, previous: "_Plan | None") -> None:
        if not isinstance(market, MarketSnapshot):
            raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
        if not isinstance(instruments, InstrumentTable):
            raise InvalidTypeError(f"instruments: expected an InstrumentTable, got {type(instruments).__name__}")
        model = dpm_default() if model is None else model
        if not isinstance(model, RiskMatrixModel):
            raise InvalidTypeError(f"model: expected a RiskMatrixModel, got {type(model).__name__}")
        if workers is not None:
            _parallel.resolve_workers(workers)
        self.market = market
        self.instruments = instruments
        self.model = model
        self.workers = workers
        self._plan = _build_plan(market, instruments, model, self._workers(None), prev=previous)

    def _workers(self, workers: int | None) -> int:
        return _parallel.resolve_workers(self.workers if workers is None else workers)

    # ------------------------------------------------------------------ properties
    @property
    def underlyings(self) -> tuple[str, ...]:
        return tuple(self.instruments.underlyings)

    @property
    def scenarios(self) -> ScenarioSet:
        """The model's joint scenario set the engine revalued (aligned across underlyings)."""
        return self._plan.scenarios

    @property
    def revaluation_plan(self) -> RevaluationPlan:
        """The shared revaluation plan (the same kernel as VaR/ES and stress)."""
        return self._plan.revaluation

    @property
    def pnl_matrix(self) -> np.ndarray:
        """Instrument x scenario P&L per contract in the risk currency (read-only view, M x S)."""
        return self._plan.pnl[:, : self._plan.S]

    @property
    def scenario_labels(self) -> dict[str, tuple[str, ...]]:
        """Per underlying, the label of each scenario of its own grid."""
        sset = self._plan.scenarios
        return {u: tuple(sset.label(s, u) for s in range(len(sset))) for u in self.underlyings
                if u in self.market}

    def with_market(self, market: MarketSnapshot, *, workers: int | None = None) -> "MarginEngine":
        """A new engine on a new snapshot (this one is unchanged and stays usable)."""
        engine = MarginEngine.__new__(MarginEngine)
        # the new plan reuses this one's P&L rows of instruments whose inputs did not change
        engine._init(market, self.instruments, self.model, self.workers if workers is None else workers, self._plan)
        return engine

    def with_model(self, model: RiskMatrixModel, *, workers: int | None = None) -> "MarginEngine":
        return MarginEngine(self.market, self.instruments, model, workers=self.workers if workers is None else workers)

    # ------------------------------------------------------------------ many accounts
    def _check_book(self, book: AccountBook) -> None:
        if not isinstance(book, AccountBook):
            raise InvalidTypeError(f"accounts: expected an AccountBook, got {type(book).__name__}")
        book.require_table(self.instruments)
        rp = self._plan.revaluation
        rp.check_held(book, rp.available)

    def collateral_rates(self, currencies: Any, book: AccountBook | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(price, rate)`` per currency: USD per unit (:meth:`MarketSnapshot.usd_rate`; 0 without a
        price) and the same after the model's haircut, the value one unit counts for in equity.

        With ``book`` (holding ``currencies`` in that order), a currency without a price that an
        account holds raises ``MarketDataError`` naming the account.
        """
        price = np.zeros(len(currencies))
        rate = np.zeros(len(currencies))
        for j, ccy in enumerate(currencies):
            p = self.market.usd_rate(ccy)
            if p is None:
                if book is not None and book.collateral.shape[0] and np.any(book.collateral[:, j] != 0):
                    a = int(np.flatnonzero(book.collateral[:, j] != 0)[0])
                    raise MarketDataError(
                        f"account {book.account_id[a]!r}: collateral currency {ccy!r} has no price in the market"
                    )
                continue
            price[j] = p
            rate[j] = p * (1.0 - float(self.model.haircuts.get(ccy, 0.0)))
        return price, rate

    def _collateral_usd(self, book: AccountBook) -> np.ndarray:
        _, rates = self.collateral_rates(book.currencies, book)
        if book.collateral.size == 0:
            return np.zeros(len(book))
        # A column at a time, not `collateral @ rates`: numpy hands that to BLAS (dgemv), whose
        # summation order depends on the build and the CPU, and whose threads then spin for about
        # 0.1 s on the cores the margin kernel's workers are about to use (a 1M-account
        # margin_many took 0.26 instead of 0.22 s on 2 workers).  Products and sums are rounded
        # one by one, in currency order.
        coll = book.collateral
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused by name afterwards
            out = coll[:, 0] * rates[0]
            for j in range(1, coll.shape[1]):
                out += coll[:, j] * rates[j]
        return out

    def margin_many(self, accounts: AccountBook, *, workers: int | None = None,
                    contributions: bool = False) -> MarginResults:
        """Margin of every account of ``accounts`` (an :class:`AccountBook`).

        Parameters
        ----------
        accounts : AccountBook
        workers : int, optional
            Threads (None: the engine's default); results are identical for every value.
        contributions : bool
            Also return each position's P&L in the binding scenario (its share of the loss).

        Raises
        ------
        MarketDataError
            An account holds an instrument that cannot be revalued (named with the reason).
        InvalidInputError
            A margin figure is not finite (an absurd quantity): named with the account.
        """
        self._check_book(accounts)
        plan = self._plan
        N, U = len(accounts), len(self.underlyings)
        coll = self._collateral_usd(accounts)  # before the kernel: each chunk's finish needs it
        outs = _result_arrays(N, U)
        total, value, joint, L, scan, worst, roll, dshock, floor = outs
        job = plan.agg.margin_job(accounts.indptr, accounts.instrument_idx, accounts.quantity, outs)
        finish = _RowFinish(N, total, value, coll, self.model.im_factor, self.model.mm_factor)

        def run(start: int, stop: int) -> None:
            job.run(start, stop)
            finish(start, stop)  # the per-account arithmetic on the rows just computed, in the same thread

        _parallel.run_chunked(run, N, self._workers(workers), min_chunk=256, chunks_per_worker=4)
        finish.check(accounts)
        contrib = self._contributions(accounts, worst, joint) if contributions else None
        return self._results(accounts.account_id, total, value, joint, coll, L, scan, worst, roll, dshock, floor,
                             contrib, accounts, finish.arrays)

    def _results(self, ids, total, value, joint, coll, L, scan, worst, roll, dshock, floor, contrib,
                 book, finished: tuple[np.ndarray, ...] | None = None) -> MarginResults:
        if finished is None:
            im, mm, equity, ratio, excess = _finish_arrays(total, value, coll, self.model.im_factor,
                                                           self.model.mm_factor)
        else:
            im, mm, equity, ratio, excess = finished
        return MarginResults(
            account_id=ids, initial_margin=im, maintenance_margin=mm, risk=total, equity=equity,
            collateral_value=coll, position_value=value, margin_ratio=ratio, excess=excess,
            underlyings=self.underlyings, charge=L, scan=scan, roll_shock=roll, delta_shock=dshock,
            floor=floor, worst_scenario=worst, scenario_labels=self.scenario_labels,
            model_name=self.model.name, contribution=contrib, usd_prices=self._usd_prices(), _book=book,
            combined_scan=joint, aggregation=self.model.aggregation_mode,
        )

    def _usd_prices(self) -> dict[str, float]:
        prices = {c: 1.0 for c in USD_LIKE}
        prices.update(self.market.usd_rates)
        prices.update({u: float(self.market[u].index_price) for u in self.market.underlyings})
        return prices

    def _contributions(self, book: AccountBook, worst: np.ndarray, joint: np.ndarray) -> np.ndarray:
        """Each position's share (USD) of the binding loss: its P&L in the binding scenario of its
        underlying, weighted, with the underlying's dampener, pnl_offset and joint scaling shared pro
        rata, so that an account's contributions sum to minus its combined scan."""
        plan = self._plan
        if book.n_positions == 0:
            return np.zeros(0)
        U = len(self.underlyings)
        acc = np.repeat(np.arange(len(book)), np.diff(book.indptr))
        u = plan.inst_und[book.instrument_idx]
        s = worst[acc, u]
        hit = s >= 0
        s0 = np.where(hit, s, 0)
        x = plan.risk_to_usd[u]
        pnl = np.where(hit, book.quantity * plan.pnl[book.instrument_idx, s0] * plan.weight[u, s0] * x, 0.0)
        # per (account, underlying): the weighted P&L v, and h, what the aggregation counts of it
        key = acc * U + u
        v = np.bincount(key, weights=pnl, minlength=len(book) * U)
        uk, first = np.unique(key, return_index=True)
        damp = np.zeros_like(v)
        damp[uk] = np.where(hit[first], plan.damp[u[first], s0[first]] * x[first], 0.0)
        h = np.where(v < 0, np.minimum(v + damp, 0.0), np.maximum(v - damp, 0.0))
        mode = self.model.aggregation_mode
        n_und = np.bincount(uk // U, minlength=len(book))
        ku = np.arange(len(book) * U) % U
        if mode == "pnl_offset":
            off = np.array([self.model.pnl_offset.get(x_, 0.0) for x_ in self.underlyings])[ku]
            cap = np.array([self.model.max_offsetable_pnl.get(x_, np.inf) for x_ in self.underlyings])[ku]
            multi = n_und[np.arange(len(book) * U) // U] > 1
            h = np.where(multi & (h > 0), np.minimum(h, cap) * off, h)
        elif mode == "joint":
            tot = h.reshape(len(book), U).sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                c = np.where((n_und > 1) & (tot < 0), joint / np.where(tot < 0, -tot, 1.0), 1.0)
            h = h * np.repeat(c, U)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(v != 0, h / np.where(v != 0, v, 1.0), 0.0)
        return pnl * share[key]

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
        held = set(self._plan.inst_und[book.instrument_idx].tolist())
        by_und = {}
        for j, u in enumerate(self.underlyings):
            if j not in held:
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
            model_name=self.model.name, risk=float(res.risk[0]),
            combined_scan=float(res.combined_scan[0]), aggregation=self.model.aggregation_mode,
            usd_prices=res.usd_prices,
        )

    def risk_vectors(self, account: Account | AccountBook, index: int | str | None = None) -> RiskVectors:
        """One account's scenario P&L vectors, the way a venue reports them.

        Per underlying: the raw vector (sum of its positions' P&L per scenario, risk currency) and
        the weighted, dampened one (what the worst case is taken over), both split into standard and
        extended scenarios by the scenario flags; the aggregated vector across underlyings (USD:
        the sum for ``sum`` / ``sqrt_corr`` / ``spread``, losses plus ``pnl_offset`` x gains for
        ``pnl_offset``); the worst scenario of each. Deribit's ``private/pme/simulate`` calls these
        ``pre_aggregated_risk_vectors`` / ``aggregated_risk_vectors``.
        """
        book = self._single_book(account, index)
        self._check_book(book)
        plan = self._plan
        S = plan.S
        sset = plan.scenarios
        U = len(self.underlyings)
        raw = np.zeros((U, S))
        np.add.at(raw, plan.inst_und[book.instrument_idx],
                  book.quantity[:, None] * plan.pnl[book.instrument_idx, :S])
        held = np.zeros(U, dtype=bool)
        held[plan.inst_und[book.instrument_idx]] = True
        v = plan.weight[:, :S] * raw
        d = plan.damp[:, :S]
        weighted = np.where(v < 0, np.minimum(v + d, 0.0), np.maximum(v - d, 0.0))
        usd = weighted * plan.risk_to_usd[:, None]
        if self.model.aggregation_mode == "pnl_offset" or self.model.pnl_offset:
            # Deribit's aggregated vectors count gains at pnl_offset even for one currency
            off = np.array([self.model.pnl_offset.get(u, 0.0) for u in self.underlyings])
            cap = np.array([self.model.max_offsetable_pnl.get(u, np.inf) for u in self.underlyings])
            contrib = np.where(usd > 0, np.minimum(usd, cap[:, None]) * off[:, None], usd)
        else:
            contrib = usd
        real = (sset.flags & FLAG_PADDING) == 0
        aggregated = np.where(real, contrib[held].sum(axis=0), 0.0)
        ext = (sset.flags & (FLAG_EXTENDED | FLAG_EXTREME)) != 0
        return RiskVectors(
            account_id=str(book.account_id[0]), underlyings=tuple(u for j, u in enumerate(self.underlyings) if held[j]),
            scenario_names=tuple(sset.names), labels={u: tuple(sset.label(s, u) for s in range(S))
                                                      for j, u in enumerate(self.underlyings) if held[j]},
            extended=ext & real, padding=~real,
            raw={u: raw[j] for j, u in enumerate(self.underlyings) if held[j]},
            weighted={u: weighted[j] for j, u in enumerate(self.underlyings) if held[j]},
            aggregated_usd=aggregated, risk_currency=self.model.risk_currency,
            to_usd={u: float(plan.risk_to_usd[j]) for j, u in enumerate(self.underlyings) if held[j]},
        )

    def risk_matrix(self, account: Account | AccountBook, index: int | str | None = None, *,
                    underlying: str | None = None, moves: Any = None,
                    vol_shocks: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """One account's P&L (USD) on a price x vol grid of one underlying (others unchanged).

        Parameters
        ----------
        underlying : str, optional
            Default: the underlying with the account's largest standalone charge.
        moves : array_like, optional
            Relative price moves (default 41 moves over +-1.5 x the model's range for it).
        vol_shocks : array_like, optional
            Vol shocks at the model's reference tenor, spread over expiries by the model's term
            structure for the underlying (default -0.5 .. +0.5 relative, or the model's absolute sizes).

        Returns
        -------
        moves, vol_shocks, pnl, underlying
            ``pnl[v, m]`` is the account's P&L (USD) with vol shock ``v`` and price move ``m``.
        """
        book = self._single_book(account, index)
        self._check_book(book)
        held = [self.underlyings[j] for j in sorted(set(self._plan.inst_und[book.instrument_idx].tolist()))]
        if underlying is None:
            if not held:
                raise InvalidInputError("account: no positions, so no risk matrix")
            res = self.margin_many(book, workers=1)
            underlying = self.underlyings[int(np.argmax(res.charge[0]))]
        if underlying not in self.underlyings:
            raise InvalidInputError(f"underlying: {underlying!r} is not in the instrument table {self.underlyings}")
        params = self.model.params(underlying)
        shock = params.vol_shock
        mv = np.linspace(-1.5 * params.price_range, 1.5 * params.price_range, 41) if moves is None else \
            np.asarray(moves, dtype=np.float64).ravel()
        if vol_shocks is None:
            vs = np.linspace(-shock.down, shock.up, 9) if shock.mode == "absolute" else np.linspace(-0.5, 0.5, 11)
        else:
            vs = np.asarray(vol_shocks, dtype=np.float64).ravel()
        V, P = vs.size, mv.size
        unds = self.underlyings
        j = unds.index(underlying)
        pm = np.zeros((V * P, len(unds)))
        vsh = np.zeros((V * P, len(unds)))
        pm[:, j] = np.tile(mv, V)
        vsh[:, j] = np.repeat(vs, P)
        names = tuple(f"{m:+.1%} vol {v:+.2f}" for v in vs for m in mv)
        terms = tuple(self.model.params(u).vol_shock.term_structure for u in unds)
        sset = ScenarioSet(pm, vsh, names, unds, self._plan.scenarios.horizon_days, "risk_matrix", vol_terms=terms)
        P_ = self._plan.revaluation.revalue(sset, workers=1, unavailable=0.0)
        x = self._plan.risk_to_usd[self._plan.inst_und[book.instrument_idx]]
        pnl = (book.quantity[:, None] * P_[book.instrument_idx] * x[:, None]).sum(axis=0)
        return mv, vs, pnl.reshape(V, P), underlying

    def prepare(self, account: Account | AccountBook, index: int | str | None = None) -> "AccountState":
        """Cache one account's scenario P&L vector and add-on state for fast what-if checks."""
        book = self._single_book(account, index)
        self._check_book(book)
        return AccountState(self, book)

    def what_if(self, account: Account | AccountBook, orders: Any, index: int | str | None = None) -> WhatIfResult:
        """Margin after ``orders`` (``{name: qty}`` or ``[(name or id, qty), ...]``) are added."""
        return self.prepare(account, index).what_if(orders)

    # ------------------------------------------------------------------ live book support (issue 14)
    # Read-only access for dpm.live.LiveBook, which keeps its own mutable positions and calls the
    # same kernels account by account (the values are the ones margin_many uses, not copies).
    @property
    def aggregation_plan(self) -> Any:
        """The C aggregation plan (``dpm._core._gather.AggregationPlan``) bound to this engine's P&L
        matrix: ``margin_job`` (the kernel of :meth:`margin_many`), ``account_state`` and ``WhatIf``."""
        return self._plan.agg

    @property
    def position_value(self) -> np.ndarray:
        """USD mark value per contract counted in equity, per instrument (read-only; options and spot
        at their mark, 0 for futures and perpetuals, whose P&L is settled into collateral)."""
        return self._plan.value


def _finish_arrays(total: np.ndarray, value: np.ndarray, coll: np.ndarray, im_factor: float,
                   mm_factor: float) -> tuple[np.ndarray, ...]:
    """IM, MM, equity, margin ratio (MM / equity: inf when equity <= 0 < MM, 0 when MM = 0) and excess."""
    im = im_factor * total
    mm = mm_factor * total
    equity = coll + value
    # over: MM / equity beyond the double range (a huge MM on a sliver of equity) is the same inf
    # ratio as equity <= 0, not a condition to warn about
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(mm > 0, np.where(equity > 0, mm / np.where(equity > 0, equity, 1.0), np.inf), 0.0)
    return im, mm, equity, ratio, equity - im


class _RowFinish:
    """:func:`_finish_arrays` and the finite-results check, chunk by chunk inside ``margin_many``'s
    threaded job: the rows are still in cache, and these passes (1-1.5 % of the kernel's time)
    no longer run on one thread after it. Per element the arithmetic is :func:`_finish_arrays`'s,
    so the results are the same bits."""

    def __init__(self, n: int, total: np.ndarray, value: np.ndarray, coll: np.ndarray, im_factor: float,
                 mm_factor: float) -> None:
        self.inputs = (total, value, coll)
        self.factors = (im_factor, mm_factor)
        block = np.empty((5, n))  # one allocation (transparent huge pages), five contiguous rows
        self.arrays = tuple(block)
        self.first_bad = [n, n, n]
        self.lock = threading.Lock()

    def __call__(self, start: int, stop: int) -> None:
        total, value, coll = (a[start:stop] for a in self.inputs)
        for k, arr in enumerate((total, value, coll)):
            ok = np.isfinite(arr)
            if not ok.all():
                with self.lock:
                    self.first_bad[k] = min(self.first_bad[k], start + int(np.argmin(ok)))
        for out, part in zip(self.arrays, _finish_arrays(total, value, coll, *self.factors)):
            out[start:stop] = part

    def check(self, book: AccountBook) -> None:
        """Fail closed: a margin figure is finite or the call fails naming the first such account."""
        for (arr, what), a in zip(((self.inputs[0], "margin"), (self.inputs[1], "position value"),
                                   (self.inputs[2], "collateral value")), self.first_bad):
            if a < len(arr):
                raise InvalidInputError(
                    f"account {book.account_id[a]!r}: the {what} is not finite ({float(arr[a])!r}); a quantity or "
                    f"collateral amount is too large to margin")


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
        # C-level evaluator with its own work buffers: a what-if call allocates nothing; it knows the
        # positions, so an order on a held instrument is margined as the merged position
        self._wi = _gather.WhatIf(agg, self.state, book.instrument_idx, book.quantity)
        self._wi.bind_available(engine._plan.revaluation.available.view(np.uint8))
        self.collateral_usd = float(engine._collateral_usd(book)[0])
        r, v = self._wi.total(np.zeros(0, dtype=np.int64), np.zeros(0))
        self._check(r, v)
        self._base_value = v
        m = engine.model
        self.initial_margin = m.im_factor * r
        self.maintenance_margin = m.mm_factor * r
        self.equity = self.collateral_usd + self.cash_usd + self._base_value

    def _check(self, r: float, v: float) -> None:
        if not (math.isfinite(r) and math.isfinite(v)):
            raise InvalidInputError(
                f"account {self.book.account_id[0]!r}: the margin is not finite ({r!r}); a quantity is too "
                "large to margin")

    def _orders(self, orders: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(orders, Mapping):
            items = list(orders.items())
        elif isinstance(orders, (list, tuple)):
            items = list(orders)
        else:
            raise InvalidTypeError(
                f"orders: expected a dict {{instrument: quantity}} or a list of (instrument, quantity) pairs, "
                f"got {type(orders).__name__}")
        n = len(items)
        ids = np.empty(n, dtype=np.int64)
        qty = np.empty(n)
        table = self.engine.instruments
        M = len(table)
        names = getattr(table, "_index", None)
        names = names if isinstance(names, dict) else None
        for k, item in enumerate(items):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise InvalidInputError(f"orders: entry {k} must be an (instrument, quantity) pair, got {item!r}")
            inst, q = item
            if isinstance(inst, (int, np.integer)) and not isinstance(inst, (bool, np.bool_)):
                i = int(inst)
                if not 0 <= i < M:
                    raise UnknownInstrumentError(f"orders: instrument id {i} is not in the table (0..{M - 1})")
            elif isinstance(inst, str):
                # the table's name -> id dict when it has one (no array round trip per order)
                i = names.get(inst) if names is not None else None
                if i is None:
                    i = int(table.index_of([inst])[0])
            else:
                raise InvalidTypeError(f"orders: entry {k}: instrument must be a name or an id, got {inst!r}")
            if isinstance(q, (bool, np.bool_)):
                raise InvalidTypeError(f"orders: quantity of {inst!r} must be a number, got {q!r}")
            try:
                qf = float(q)
            except (TypeError, ValueError):
                raise InvalidTypeError(f"orders: quantity of {inst!r} must be a number, got {q!r}") from None
            if not math.isfinite(qf):
                raise InvalidInputError(f"orders: quantity of {inst!r} must be finite, got {qf!r}")
            ids[k] = i
            qty[k] = qf
        if self._wi.first_bad_order(ids, qty) >= 0:  # ids and quantities are checked above: availability
            self.engine._plan.revaluation.check_orders(ids)
        return ids, qty

    def _evaluate(self, ids: np.ndarray, qty: np.ndarray) -> tuple[float, float, float]:
        r, v = self._wi.total(ids, qty)
        self._check(r, v)
        m = self.engine.model
        # equity of the account *before* the orders: their premium is paid at mark (cash out = value in)
        return m.im_factor * r, m.mm_factor * r, v

    def what_if(self, orders: Any) -> WhatIfResult:
        """Margin after adding ``orders``; the order premium is assumed paid at mark (equity unchanged)."""
        ids, qty = self._orders(orders)
        im, mm, _ = self._evaluate(ids, qty)
        return WhatIfResult(im, mm, self.initial_margin, self.equity, bool(self.equity >= im))

    def what_if_ids(self, instrument_ids: Any, quantities: Any) -> float:
        """Fast path: IM after orders given as arrays of instrument ids and quantities.

        Ids must be integers in the table (``UnknownInstrumentError``) of instruments that can be
        revalued (``MarketDataError``) and quantities finite numbers (``InvalidInputError``): a NaN
        order would otherwise turn the margin into a silent wrong number.
        """
        ids, qty = self._checked_arrays(instrument_ids, quantities)
        return self._evaluate(ids, qty)[0]

    def _checked_arrays(self, instrument_ids: Any, quantities: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(instrument_ids)
        qty = np.asarray(quantities)
        # the common case in one C pass (ids in the table, finite quantities, revaluable instruments);
        # anything else goes through the checks below, which name the problem
        if (ids.dtype == np.int64 and qty.dtype == np.float64 and ids.ndim == 1 and ids.shape == qty.shape
                and ids.flags.c_contiguous and qty.flags.c_contiguous
                and self._wi.first_bad_order(ids, qty) < 0):
            return ids, qty
        if ids.ndim != 1 or qty.ndim != 1 or ids.shape != qty.shape:
            raise InvalidInputError(
                f"orders: instrument_ids and quantities must be 1-d of the same length, got shapes "
                f"{ids.shape} and {qty.shape}")
        if ids.dtype.kind not in "iu":
            raise InvalidTypeError(f"instrument_ids: expected integers, got dtype {ids.dtype}")
        if qty.dtype.kind not in "iuf":
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
            raise InvalidInputError(f"quantities: index {k} ({str(self.engine.instruments.name[ids[k]])!r}) is "
                                    f"{float(qty[k])!r}, "
                                    "must be finite")
        self.engine._plan.revaluation.check_orders(ids)
        return ids, qty

    def apply(self, orders: Any) -> "AccountState":
        """A new state with the orders filled at mark (this one unchanged; equity unchanged)."""
        ids, qty = self._orders(orders)
        _, _, v = self._evaluate(ids, qty)
        premium = v - self._base_value  # mark value bought (> 0) or sold (< 0)
        book = self.book
        inst = np.concatenate([book.instrument_idx, ids])
        q = np.concatenate([book.quantity, qty])
        new = AccountBook.from_arrays(np.zeros(len(inst), dtype=np.int64), inst, q, self.engine.instruments,
                                      account_ids=book.account_id, collateral=book.collateral,
                                      currencies=book.currencies)
        return AccountState(self.engine, new, cash_usd=self.cash_usd - premium)


# ---------------------------------------------------------------------------------------------
def _addon_inputs(rp: RevaluationPlan, model: RiskMatrixModel, coin: bool) -> dict[str, np.ndarray]:
    """Per-instrument add-on inputs: delta, short-option minimum, notional, equity value, expiry
    bucket, and the per-bucket roll-shock rates."""
    table = rp.instruments
    M, unds = len(table), rp.underlyings
    U = len(unds)
    kind, und, avail = rp.kind, rp.und, rp.available
    is_opt = (kind == Kind.OPTION) & avail
    F, K, T, vol, cp, cs = rp.F, rp.K, rp.T, rp.vol, rp.cp, rp.cs
    inverse = rp.inverse == 1
    und_price = rp.index
    delta = np.zeros(M)
    value = np.zeros(M)
    opt_idx = np.flatnonzero(is_opt)
    if opt_idx.size:
        g = _greeks(F[opt_idx], K[opt_idx], vol[opt_idx], T[opt_idx], cp[opt_idx], which=("price", "delta"))
        inv = inverse[opt_idx]
        d = g["delta"] - np.where(inv, g["price"] / F[opt_idx], 0.0)
        delta[opt_idx] = cs[opt_idx] * d
        # USD mark value counted in equity: linear cs*B, inverse cs*B*S/F
        value[opt_idx] = cs[opt_idx] * g["price"] * np.where(inv, und_price[und[opt_idx]] / F[opt_idx], 1.0)
    lin = avail & (kind != Kind.OPTION)
    delta[lin] = np.where(inverse[lin], cs[lin] / F[lin], cs[lin])
    if model.scenario_price == "index":
        # OKX: linear cash deltas at the instrument's own mark / forward (the scenarios move the index)
        cash = avail & ~inverse
        delta[cash] *= rp.mark[cash] / und_price[und[cash]]
    is_spot = (kind == Kind.SPOT) & avail
    value[is_spot] = cs[is_spot] * F[is_spot]  # spot holdings count at their value; futures settle P&L
    index_of_inst = und_price[und] if M else np.zeros(0)
    price_of_inst = index_of_inst
    if model.scenario_price == "index":  # OKX: linear contracts at their own mark / forward
        price_of_inst = np.where(~inverse, rp.mark, index_of_inst)
    notional = np.where(inverse & (kind != Kind.OPTION), cs, cs * price_of_inst)
    notional[~avail] = 0.0
    som = np.zeros(M)
    now = rp.market.timestamp_ms
    expiry = np.asarray(table.expiry_ms, dtype=np.int64)
    bucket = np.zeros(M, dtype=np.int32)
    bucket_ptr = np.zeros(U + 1, dtype=np.int64)
    rates: list[float] = []
    for j, u in enumerate(unds):
        params = model.params(u)
        sel = np.flatnonzero(und == j)
        if sel.size:
            key = np.where(kind[sel] == Kind.SPOT, -2, np.where(kind[sel] == Kind.PERPETUAL, -1, expiry[sel]))
            uniq, inv_ = np.unique(key, return_inverse=True)
            bucket[sel] = len(rates) + inv_
            for kval in uniq:
                if kval == -2:
                    rates.append(0.0)
                elif kval == -1:
                    rates.append(params.roll_shock.perpetual() * (1.0 if coin else und_price[j]))
                else:
                    tb = max((int(kval) - now) / _MS_PER_YEAR, 0.0)
                    rates.append(float(params.roll_shock.rate(tb)) * (1.0 if coin else und_price[j]))
            if params.short_option_minimum:
                o = sel[kind[sel] == Kind.OPTION]
                som[o] = params.short_option_minimum * cs[o] * (1.0 if coin else und_price[j])
        bucket_ptr[j + 1] = len(rates)
    return dict(inst_delta=delta, inst_som=som, inst_notional=notional, inst_value=value,
                inst_bucket=bucket, bucket_ptr=bucket_ptr, bucket_rate=np.asarray(rates, dtype=np.float64))


def _joint_tables(sset: ScenarioSet, corr: np.ndarray, Sp: int) -> dict[str, np.ndarray]:
    """Groups (distinct price moves) per underlying, their normalised moves, and the correlation
    scalings of the joint aggregation: a c-table per pair, inverse correlations of 3- and 4-subsets."""
    U = len(sset.underlyings)
    S = len(sset)
    grp = np.full((U, Sp), -1, dtype=np.int32)
    ngrp = np.zeros(U, dtype=np.int32)
    real = (sset.flags & FLAG_PADDING) == 0
    zs = []
    for j in range(U):
        moves = sset.price_move[:, j]
        uniq, inv = np.unique(moves[real], return_inverse=True)
        g = np.full(S, -1, dtype=np.int32)
        g[real] = inv
        grp[j, :S] = g
        ngrp[j] = uniq.size
        rng = sset.scan_range[j]
        if not np.isfinite(rng):
            rng = max(float(np.max(np.abs(uniq))), 1e-12) if uniq.size else 1.0
        # a move beyond the standard range (extended / extreme) counts as the range's edge: the tail
        # scenarios keep their own weights, the correlation only decides which co-moves are plausible
        zs.append(np.clip(uniq / rng, -1.0, 1.0))
    G = max(int(ngrp.max()) if U else 1, 1)
    gz = np.zeros((U, G))
    for j in range(U):
        gz[j, : ngrp[j]] = zs[j]
    pair_off = np.full(U * U, -1, dtype=np.int64)
    ctab: list[np.ndarray] = []
    off = 0
    for a, b in itertools.combinations(range(U), 2):
        R = corr[np.ix_([a, b], [a, b])]
        Z = np.stack(np.meshgrid(zs[a], zs[b], indexing="ij"), axis=-1).reshape(-1, 2)
        m2 = _mahalanobis_sq(R, Z)
        with np.errstate(divide="ignore"):
            c = np.where(m2 > 1.0, 1.0 / np.sqrt(m2), 1.0)
        # rows padded with zeros to a multiple of 8 columns: the kernel reads whole vectors
        na, nb = len(zs[a]), len(zs[b])
        cp = np.zeros((na, -(-nb // 8) * 8))
        cp[:, :nb] = c.reshape(na, nb)
        pair_off[a * U + b] = off
        ctab.append(cp.ravel())
        off += cp.size
    mask_off = np.zeros(0, dtype=np.int64)
    qsub: list[np.ndarray] = []
    if 3 <= U <= _JOINT_MASK_MAX_U:
        mask_off = np.full(1 << U, -1, dtype=np.int64)
        qoff = 0
        for k in (3, 4):
            for sub in itertools.combinations(range(U), k):
                R = corr[np.ix_(sub, sub)]
                # a tiny ridge keeps a singular correlation invertible: moves off its span get a huge
                # Mahalanobis norm, so they are scaled (nearly) to zero
                Q = np.linalg.inv(R + 1e-12 * np.eye(k))
                mask_off[sum(1 << s for s in sub)] = qoff
                qsub.append(Q.ravel())
                qoff += k * k
    return dict(grp=grp, ngrp=ngrp, gz=gz, pair_off=pair_off,
                ctab=np.concatenate(ctab) if ctab else np.zeros(0),
                mask_off=mask_off, qsub=np.concatenate(qsub) if qsub else np.zeros(0))


def _build_plan(market: MarketSnapshot, table: InstrumentTable, model: RiskMatrixModel, workers: int,
                prev: "_Plan | None" = None) -> _Plan:
    unds = tuple(table.underlyings)
    U = len(unds)
    coin = model.risk_currency == "coin"
    rp = RevaluationPlan(market, table, currency=model.risk_currency, sticky=model.sticky,
                         perpetual_basis=model.scenario_price)
    sset = _model_scenarios(model, unds) if U else None
    if sset is None:
        raise InvalidInputError("instruments: the table has no underlyings")
    S = len(sset)
    # rows whose inputs a market update left as they were (another underlying moved) are the
    # previous plan's rows: the same bits, half a one-underlying tick's revaluation
    reuse = (prev.revaluation, prev.pnl) if prev is not None and prev.scenarios is sset else None
    pnl = rp.revalue(sset, workers=workers, padded=True, unavailable=0.0, reuse=reuse)
    Sp = pnl.shape[1]
    und_price = rp.index
    to_risk = 1.0 / und_price if coin else np.ones(U)
    risk_to_usd = und_price.copy() if coin else np.ones(U)
    weight = np.zeros((U, Sp))
    damp = np.zeros((U, Sp))
    in_market = np.array([u in market for u in unds])
    weight[:, :S] = sset.weight.T
    weight[~in_market] = 0.0
    # the dampener is in USD; in coin mode it shrinks coin P&L at the scenario's price
    damp[:, :S] = sset.dampener_usd.T * (1.0 / (und_price[:, None] * (1.0 + sset.price_move.T)) if coin else 1.0)
    addons = _addon_inputs(rp, model, coin)

    agg_name = model.aggregation_mode
    fixed = _model_arrays(model, unds, sset, Sp)
    arrays = dict(
        pnl=pnl, inst_und=rp.und, weight=weight, damp=damp, und_price=und_price, to_risk=to_risk,
        risk_to_usd=risk_to_usd, **fixed, **addons,
    )
    for a in arrays.values():
        if isinstance(a, np.ndarray) and a.flags.writeable:
            a.setflags(write=False)
    agg = _gather.AggregationPlan(S=S, scan_round=1e9 if model.exact_venue else 0.0, agg=AGGREGATIONS[agg_name],
                                  keep=arrays, **arrays)
    return _Plan(revaluation=rp, scenarios=sset, S=S, Sp=Sp, pnl=pnl, inst_und=rp.und, weight=weight,
                 damp=damp, und_price=und_price, risk_to_usd=risk_to_usd, agg=agg,
                 delta=addons["inst_delta"], value=addons["inst_value"])

