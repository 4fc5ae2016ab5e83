"""Close-out of accounts below maintenance margin: cost model, stressed market, partial liquidation.

Cost of closing ``Q`` contracts of one instrument (USD)::

    cost(Q) = Q h + Y s Q (Q / V) ** delta

* ``h`` — half the bid-ask spread per contract: ``half_spread[kind]`` times the contract's
  underlying notional ``n`` (USD: the coin amount times the index for options and linear contracts,
  the USD face for inverse futures and perpetuals);
* ``s`` — one day's USD standard deviation of the contract's value, ``sigma_u |delta| n`` with the
  underlying's daily vol ``sigma_u`` and the contract's Black-76 delta (1 for futures and
  perpetuals);
* ``V`` — the instrument's daily volume in contracts, ``daily_volume_usd[kind] / n``;
* ``Y`` and ``delta`` — the impact prefactor and exponent. ``delta = 0.5`` is the square-root law
  (Toth et al. 2011, Phys. Rev. X 1, 021006; confirmed on Bitcoin by Donier & Bonart 2015), Almgren,
  Thum, Hauptmann & Li (2005, Risk) estimate ``3/5`` for temporary impact; ``Y`` is "of order one".

The impact per contract ``Y s (Q/V)^delta`` is the price concession of a metaorder of size ``Q``; the
total cost grows like ``Q^(1 + delta)``. The defaults are **stated assumptions**, not calibrated
values (no published crypto-derivatives calibration of ``Y``, spreads or volumes was found); set them
from venue data.

Partial liquidation (:func:`liquidate`): positions are closed in the engine's liquidation order
(largest contribution to the binding margin scenario first,
:meth:`MarginEngine.margin_many(..., contributions=True) <dpm.engines.margin.MarginEngine.margin_many>`
in the stressed market), whole positions first and then a fraction of the last one, until the
requirement (MM or IM of the remaining positions in the stressed market) is at most
``target_ratio`` times the equity left after costs — Deribit: "until maintenance margin is below
the margin balance" (``target_ratio = 1``); Bybit PM until the MM rate is 90 %. The searches are
bisections over all liquidated accounts at once (one :meth:`margin_many` per round); margin is not
always monotone in what is closed (closing a hedge can raise it), so the result is a point where
the target is met and slightly less liquidation does not meet it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpm.engines.margin import MarginEngine
from dpm.engines.plan import RevaluationPlan
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.market.surface import SVISlice, VolSurface
from dpm.models.scenarios import DERIBIT_TERM, ScenarioSet
from dpm.portfolio.accounts import AccountBook

__all__ = ["CloseOutCostModel", "LiquidationResult", "liquidate", "stressed_market"]

_KINDS = {"option": Kind.OPTION, "future": Kind.FUTURE, "perpetual": Kind.PERPETUAL, "spot": Kind.SPOT}


def _num(v: Any, name: str, *, lo: float = 0.0, strict: bool = False, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name}: expected a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < lo or (strict and v == lo) or v > hi:
        raise InvalidInputError(f"{name}: expected a finite number {'>' if strict else '>='} {lo:g}"
                                f"{f' and <= {hi:g}' if math.isfinite(hi) else ''}, got {v!r}")
    return v


def _per_kind(value: Any, name: str, default: Mapping[str, float], strict: bool) -> dict[str, float]:
    if isinstance(value, Mapping):
        unknown = set(value) - set(_KINDS)
        if unknown:
            raise InvalidInputError(f"{name}: unknown instrument kind {sorted(unknown)[0]!r}; kinds: {sorted(_KINDS)}")
        out = dict(default)
        out.update({k: _num(v, f"{name}[{k!r}]", strict=strict) for k, v in value.items()})
        return out
    v = _num(value, name, strict=strict)
    return {k: v for k in _KINDS}


@dataclass(frozen=True)
class CloseOutCostModel:
    """Half spread plus market impact ``Y s (Q/V)^delta`` per contract (see the module docs).

    Parameters
    ----------
    half_spread : float or mapping kind -> float
        Half spread as a fraction of the contract's underlying notional, per instrument kind
        (``"option"``, ``"future"``, ``"perpetual"``, ``"spot"``). Default 2 bp for perpetuals,
        5 bp for futures and spot, 10 bp for options (one Deribit option tick, 0.0005 BTC, is about
        5 bp of the underlying).
    impact : float
        Prefactor ``Y`` (>= 0; 0 turns impact off). Default 0.7.
    exponent : float
        ``delta`` in (0, 1]: 0.5 square-root law, 0.6 Almgren et al., 1 linear.
    daily_volume_usd : float or mapping kind -> float
        Daily traded USD notional of *one* instrument of each kind (> 0). Defaults (assumptions):
        perpetual 2e9, future 1e8, option 2e6, spot 1e9.
    daily_vol : mapping underlying -> float, optional
        Daily vol of each underlying; default: the market's 30-day at-the-money implied vol / sqrt(365).
    """

    half_spread: Any = field(default_factory=lambda: {"perpetual": 0.0002, "future": 0.0005, "option": 0.001,
                                                      "spot": 0.0005})
    impact: float = 0.7
    exponent: float = 0.5
    daily_volume_usd: Any = field(default_factory=lambda: {"perpetual": 2e9, "future": 1e8, "option": 2e6,
                                                           "spot": 1e9})
    daily_vol: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        dflt_hs = {"perpetual": 0.0002, "future": 0.0005, "option": 0.001, "spot": 0.0005}
        dflt_v = {"perpetual": 2e9, "future": 1e8, "option": 2e6, "spot": 1e9}
        object.__setattr__(self, "half_spread", _per_kind(self.half_spread, "half_spread", dflt_hs, False))
        object.__setattr__(self, "daily_volume_usd",
                           _per_kind(self.daily_volume_usd, "daily_volume_usd", dflt_v, True))
        object.__setattr__(self, "impact", _num(self.impact, "impact"))
        object.__setattr__(self, "exponent", _num(self.exponent, "exponent", strict=True, hi=1.0))
        if self.daily_vol is not None:
            if not isinstance(self.daily_vol, Mapping):
                raise InvalidTypeError("daily_vol: expected a mapping underlying -> daily vol")
            object.__setattr__(self, "daily_vol", {str(k): _num(v, f"daily_vol[{k!r}]", strict=True)
                                                   for k, v in self.daily_vol.items()})

    def parameters(self, plan: RevaluationPlan) -> "InstrumentCosts":
        """Per-instrument ``h``, ``s``, ``V`` and notional of a revaluation plan's instruments."""
        from dpm.pricing.black import greeks

        M = len(plan)
        kind = np.asarray(plan.kind)
        unds = plan.underlyings
        S = plan.index[plan.und] if M else np.zeros(0)
        inv = plan.inverse == 1
        notional = np.where(inv & (kind != Kind.OPTION), plan.cs, plan.cs * S)
        notional = np.where(plan.available, notional, 0.0)
        delta = np.ones(M)
        opt = np.flatnonzero((kind == Kind.OPTION) & plan.available)
        if opt.size:
            g = greeks(plan.F[opt], plan.K[opt], plan.vol[opt], plan.T[opt], plan.cp[opt], which=("delta",))
            delta[opt] = np.abs(g["delta"])
        sig_u = np.zeros(len(unds))
        for j, u in enumerate(unds):
            if self.daily_vol is not None and u in self.daily_vol:
                sig_u[j] = self.daily_vol[u]
            elif u in plan.market and plan.market[u].vol_surface is not None:
                F30 = float(plan.market[u].forward(30.0 / 365.0))
                atm = float(np.asarray(plan.market[u].vol_surface.implied_vol(F30, 30.0 / 365.0, F30)))
                sig_u[j] = atm / math.sqrt(365.0)
            elif u in plan.market:
                raise InvalidInputError(f"daily_vol: underlying {u!r} has no vol surface; give its daily vol")
        sigma = sig_u[plan.und] if M else np.zeros(0)
        hs = np.zeros(M)
        vol_usd = np.ones(M)
        for name, code in _KINDS.items():
            sel = kind == code
            hs[sel] = self.half_spread[name]
            vol_usd[sel] = self.daily_volume_usd[name]
        with np.errstate(divide="ignore", invalid="ignore"):
            V = np.where(notional > 0, vol_usd / notional, np.inf)
        return InstrumentCosts(self, hs * notional, self.impact * sigma * delta * notional, V, notional)


@dataclass(frozen=True, eq=False)
class InstrumentCosts:
    """Cost parameters per instrument: ``cost(Q) = Q h + y Q (Q / V)^delta`` with ``y = Y s``."""

    model: CloseOutCostModel
    h: np.ndarray
    y: np.ndarray
    V: np.ndarray
    notional: np.ndarray

    def cost(self, instrument: np.ndarray, quantity: np.ndarray) -> np.ndarray:
        """USD cost of closing ``|quantity|`` contracts of each ``instrument`` (vectorised)."""
        q = np.abs(np.asarray(quantity, dtype=np.float64))
        i = np.asarray(instrument, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.where(q > 0, (q / self.V[i]) ** self.model.exponent, 0.0)
        return q * self.h[i] + self.y[i] * q * part


def stressed_market(market: MarketSnapshot, scenarios: ScenarioSet, s: int,
                    default_term: Any = DERIBIT_TERM) -> MarketSnapshot:
    """The market after scenario ``s``: index, forwards and perpetual mark moved by the price move,
    every smile's total variance scaled by ``lambda_T^2`` with ``lambda_T = 1 + c(T) v`` (relative vol
    shock ``v`` spread over expiries by the set's term structure; absolute shocks: ``(atm + v) / atm``),
    ``lambda_T`` floored at 0.05. Same timestamp (margin right after the move)."""
    out = market
    for j, u in enumerate(scenarios.underlyings):
        if u not in market:
            continue
        x = float(scenarios.price_move[s, j])
        v = float(scenarios.vol_shock[s, j])
        um = market[u]
        S1 = um.index_price * (1.0 + x)
        changes: dict[str, Any] = {"index_price": S1, "forward_curve": um.forward_curve.with_index(S1),
                                   "perpetual_price": um.perpetual_price * (1.0 + x)}
        surf = um.vol_surface
        if surf is not None and v != 0.0:
            term = scenarios.term(u, default_term)
            slices = []
            for sl in surf.slices:
                if term.mode == "relative":
                    lam = 1.0 + float(term.factor(np.array([sl.T]))[0]) * v
                else:
                    atm = float(np.sqrt(max(sl.total_variance(np.array([0.0]))[0], 1e-16) / sl.T))
                    lam = (atm + v) / atm
                lam2 = max(lam, 0.05) ** 2
                slices.append(SVISlice(sl.T, sl.a * lam2, sl.b * lam2, sl.rho, sl.m, sl.sigma, sl.forward,
                                       sl.label))
            changes["vol_surface"] = VolSurface(slices, surf.report, surf.lifted)
        out = out.with_underlying(u, um.with_updates(**changes))
    return out


@dataclass(frozen=True, eq=False)
class LiquidationResult:
    """Outcome of liquidating some accounts (arrays over the liquidated accounts / their positions).

    Attributes
    ----------
    closed : ndarray (P,)
        Signed quantity closed per position (CSR positions of the liquidated sub-book).
    cost : ndarray (n,)
        Close-out cost (USD) per account.
    fee : ndarray (n,)
        Liquidation fee (USD) per account.
    full : ndarray of bool (n,)
        Every position closed.
    requirement_after : ndarray (n,)
        The target requirement (MM or IM) of the positions left, in the stressed market.
    equity_after : ndarray (n,)
        Equity after the move, costs and fees.
    rounds : int
        margin_many calls of the search.
    """

    closed: np.ndarray
    cost: np.ndarray
    fee: np.ndarray
    full: np.ndarray
    requirement_after: np.ndarray
    equity_after: np.ndarray
    rounds: int


def _positions_of(indptr: np.ndarray, accounts: np.ndarray) -> np.ndarray:
    """CSR position indices of ``accounts`` (in the given order)."""
    c = indptr[accounts + 1] - indptr[accounts]
    tot = int(c.sum())
    first = np.cumsum(c) - c
    return np.repeat(indptr[accounts] - first, c) + np.arange(tot, dtype=np.int64)


def liquidate(engine: MarginEngine, book: AccountBook, equity: np.ndarray, costs: InstrumentCosts, *,
              partial: bool = True, target: str = "mm", target_ratio: float = 1.0, fee_rate: float = 0.0,
              fraction_rounds: int = 6, workers: int | None = None) -> LiquidationResult:
    """Liquidate every account of ``book`` (accounts below maintenance margin) in ``engine``'s market.

    Parameters
    ----------
    engine : MarginEngine
        Margin in the (stressed) market the close-out happens in.
    book : AccountBook
        The accounts to liquidate.
    equity : ndarray (n,)
        Their equity in that market before the close-out (USD).
    costs : InstrumentCosts
        From :meth:`CloseOutCostModel.parameters` on the same instrument table.
    partial : bool
        Stop as soon as the target is met (else close everything).
    target : {"mm", "im"}
    target_ratio : float
        Stop when ``requirement <= target_ratio * equity_after`` (> 0).
    fee_rate : float
        Liquidation fee per USD of underlying notional closed (to the insurance fund).
    fraction_rounds : int
        Bisection rounds on the fraction of the last position closed (0: whole positions only).
    """
    if target not in ("mm", "im"):
        raise InvalidInputError(f"target: expected 'mm' or 'im', got {target!r}")
    target_ratio = _num(target_ratio, "target_ratio", strict=True)
    fee_rate = _num(fee_rate, "fee_rate")
    n = len(book)
    eq = np.asarray(equity, dtype=np.float64)
    if eq.shape != (n,):
        raise InvalidInputError(f"equity: expected {n} values, got shape {eq.shape}")
    indptr, inst, q = book.indptr, book.instrument_idx, book.quantity
    P = inst.size
    acc = book.account_of_position()
    cnt = np.diff(indptr)
    rounds = 0
    full_cost = costs.cost(inst, q)
    full_fee = fee_rate * np.abs(q) * costs.notional[inst]
    tot_cost = np.bincount(acc, weights=full_cost, minlength=n) if P else np.zeros(n)
    tot_fee = np.bincount(acc, weights=full_fee, minlength=n) if P else np.zeros(n)
    closed = q.copy()
    cost = tot_cost.copy()
    fee = tot_fee.copy()
    req_after = np.zeros(n)
    full = np.ones(n, dtype=bool)
    # full liquidation leaves no requirement: the target holds iff equity after it is >= 0
    search = np.flatnonzero(partial & (eq - tot_cost - tot_fee >= 0.0) & (cnt > 0)) if partial else np.zeros(0, int)
    if search.size == 0 or P == 0:
        return LiquidationResult(closed, cost, fee, full, req_after, eq - cost - fee, rounds)

    # the liquidation order of the accounts that are searched (the others close everything)
    res = engine.margin_many(book.subset(search), workers=workers, contributions=True)
    rounds += 1
    contrib = np.zeros(P)
    contrib[_positions_of(indptr, search)] = res.contribution
    # rank of each position in its account's liquidation order (largest loss contribution first)
    order = np.lexsort((np.arange(P), contrib, acc))
    rank = np.empty(P, dtype=np.int64)
    rank[order] = np.arange(P) - indptr[acc[order]]
    req_now = np.zeros(n)
    req_now[search] = res.maintenance_margin if target == "mm" else res.initial_margin

    def evaluate(frac_pos: np.ndarray, accounts: np.ndarray, pos: np.ndarray,
                 owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Requirement, cost and fee of ``accounts`` with ``frac_pos`` of each of their positions
        ``pos`` closed (``owner``: the index in ``accounts`` of each position)."""
        nonlocal rounds
        c_acc = cnt[accounts]
        sub_ptr = np.zeros(accounts.size + 1, dtype=np.int64)
        np.cumsum(c_acc, out=sub_ptr[1:])
        qp = q[pos]
        # trusted: the book's own accounts, instruments and order, quantities scaled by [0, 1]
        variant = AccountBook(book.account_id[accounts], sub_ptr, inst[pos], qp * (1.0 - frac_pos),
                              book.collateral[accounts], book.currencies, book.table, _trusted=True)
        r = engine.margin_many(variant, workers=workers)
        rounds += 1
        req = r.maintenance_margin if target == "mm" else r.initial_margin
        cq = qp * frac_pos
        c = np.bincount(owner, weights=costs.cost(inst[pos], cq), minlength=accounts.size)
        f = np.bincount(owner, weights=fee_rate * np.abs(cq) * costs.notional[inst[pos]], minlength=accounts.size)
        return req, c, f

    def positions(accounts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _positions_of(indptr, accounts), np.repeat(np.arange(accounts.size), cnt[accounts])

    def meets(req: np.ndarray, c: np.ndarray, f: np.ndarray, accounts: np.ndarray) -> np.ndarray:
        return req <= target_ratio * (eq[accounts] - c - f)

    # k = number of whole positions closed (in liquidation order): lo fails, hi meets the target
    lo = np.zeros(n, dtype=np.int64)
    hi = cnt.copy()
    ok0 = req_now[search] <= target_ratio * eq[search]  # already met (e.g. a target_ratio above the trigger)
    hi[search[ok0]] = 0
    active = search[~ok0]
    # galloping (1, 2, 4, ... positions: most accounts are restored by closing their largest
    # contributors), then bisection once a count that meets the target is found; each round
    # touches only the positions of the accounts still searched
    gallop = np.ones(n, dtype=bool)
    while active.size:
        la, ha = lo[active], hi[active]
        mid = np.where(gallop[active], np.maximum(1, 2 * la), la + (ha - la) // 2)
        mid = np.minimum(mid, ha - 1)
        pos, owner = positions(active)
        frac_pos = (rank[pos] < mid[owner]).astype(np.float64)
        req, c, f = evaluate(frac_pos, active, pos, owner)
        good = meets(req, c, f, active)
        hi[active[good]] = mid[good]
        gallop[active[good]] = False
        lo[active[~good]] = mid[~good]
        active = active[hi[active] - lo[active] > 1]
    k = hi
    # fraction of the k-th position (rank k - 1) closed: between 0 (fails) and 1 (meets)
    flo = np.zeros(n)
    fhi = np.ones(n)
    frac_acc = search[k[search] > 0]
    if frac_acc.size:
        pos, owner = positions(frac_acc)
        r_pos = rank[pos]
        k_pos = k[frac_acc][owner]
    for _ in range(int(fraction_rounds)):
        if not frac_acc.size:
            break
        fm = 0.5 * (flo[frac_acc] + fhi[frac_acc])
        frac_pos = np.where(r_pos < k_pos - 1, 1.0, np.where(r_pos == k_pos - 1, fm[owner], 0.0))
        req, c, f = evaluate(frac_pos, frac_acc, pos, owner)
        good = meets(req, c, f, frac_acc)
        fhi[frac_acc[good]] = fm[good]
        flo[frac_acc[~good]] = fm[~good]
    kk = np.zeros(n, dtype=np.int64)
    kk[search] = k[search]
    last = np.where(kk > 0, fhi, 1.0)
    frac = np.where(rank < kk[acc] - 1, 1.0, np.where(rank == kk[acc] - 1, last[acc], 0.0))
    is_search = np.zeros(n, dtype=bool)
    is_search[search] = True
    frac = np.where(is_search[acc], frac, 1.0)
    pos, owner = positions(search)
    req, c, f = evaluate(frac[pos], search, pos, owner)
    closed = q * frac
    cost[search] = c
    fee[search] = f
    req_after[search] = req
    full[search] = np.bincount(acc, weights=(frac >= 1.0) | (q == 0), minlength=n)[search] >= cnt[search]
    return LiquidationResult(closed, cost, fee, full, req_after, eq - cost - fee, rounds)
