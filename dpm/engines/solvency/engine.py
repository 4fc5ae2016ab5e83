"""SolvencyEngine: what happens to the venue when the market moves against its accounts.

For each scenario (a named historical stress, a user stress, a reverse-stress move):

1. **move** — every account's positions are revalued by the one revaluation core
   (:class:`~dpm.engines.risk.ScenarioRiskEngine`, sticky strike, options aged by the scenario's
   horizon, the margin period of risk) and its coin collateral moves with its coin;
2. **margin after the move** — the margin model is applied in the stressed market (index, forwards
   and perpetual marks moved, smiles scaled by the vol shock: :func:`~.closeout.stressed_market`);
   an account whose equity is at or below its maintenance margin (or negative) is liquidated;
3. **close-out** — positions are closed in the engine's liquidation order at a cost (half spread +
   square-root-law impact, :class:`~.closeout.CloseOutCostModel`), partially until the venue's
   target is met where the venue does that (:func:`~.closeout.liquidate`);
4. **waterfall** — negative equity is covered by the insurance fund, then auto-deleveraging of
   opposite positions, then socialised loss, per the venue's :class:`~.waterfall.SolvencyPolicy`.

Simplifications (stated, not hidden): entry prices are the snapshot's marks (unrealised PnL for
ADL ranking is the scenario's P&L); the fund covers every deficit of an event by the same fraction;
ADL counterparties are charged against the bankruptcy price without re-margining them; close-out
costs are per account (no crowding across accounts liquidating the same instrument).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpm.engines.margin import MarginEngine
from dpm.engines.risk import ScenarioRiskEngine
from dpm.engines.solvency.closeout import CloseOutCostModel, liquidate, stressed_market
from dpm.engines.solvency.exposure import BookExposure, book_exposure
from dpm.engines.solvency.reverse import (
    ReverseStressResult,
    VenueReverseStress,
    reverse_stress,
    venue_reverse_stress,
)
from dpm.engines.solvency.space import StressSpace
from dpm.engines.solvency.waterfall import (
    SolvencyPolicy,
    adl_score,
    cover_with_fund,
    socialise,
    solvency_policy,
)
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.table import InstrumentTable
from dpm.models.risk_matrix import RiskMatrixModel
from dpm.models.scenarios import ScenarioSet
from dpm.portfolio.accounts import AccountBook

__all__ = ["SCENARIO_COLUMNS", "SolvencyEngine", "SolvencyRun"]

#: Columns of :meth:`SolvencyRun.table`, one row per scenario (amounts in USD).
SCENARIO_COLUMNS = (
    "scenario", "moves", "stress_loss", "accounts_loss_above_equity", "uncovered_before_closeout",
    "accounts_liquidated", "accounts_partially_liquidated", "accounts_bankrupt", "positions_closed",
    "closeout_cost", "liquidation_fees", "surplus_to_fund", "losses", "equity_consumed", "uncovered",
    "fund_start", "fund_income", "fund_used", "fund_end", "deleveraged", "positions_deleveraged",
    "accounts_deleveraged", "socialised", "shortfall",
)


def _check_fund(fund: Any) -> float:
    if isinstance(fund, bool) or not isinstance(fund, (int, float, np.integer, np.floating)) or not (
            np.isfinite(fund) and fund >= 0):
        raise InvalidInputError(f"fund: expected a finite amount >= 0 (USD), got {fund!r}")
    return float(fund)


@dataclass(frozen=True, eq=False)
class SolvencyRun:
    """Outcome of :meth:`SolvencyEngine.run`: one row per scenario, and per-account detail.

    Attributes
    ----------
    scenarios : ScenarioSet
    policy : SolvencyPolicy
    fund : float
        Insurance fund before each scenario (each scenario starts from it).
    columns : dict of str to ndarray
        :data:`SCENARIO_COLUMNS`.
    account_id : ndarray (N,)
    equity_before : ndarray (N,)
    equity_after_move, maintenance_after_move : ndarray (N, S)
        After the move, before the close-out.
    liquidated, bankrupt : ndarray of bool (N, S)
    closeout_cost, deficit, deleveraged, socialised : ndarray (N, S)
        Per account: close-out cost + fee paid, negative equity after the close-out, ADL loss borne
        (as a counterparty) and socialised loss borne.
    equity_final : ndarray (N, S)
        Equity after the move, close-out costs, fees and any surplus taken by the fund, before the
        waterfall (negative = the deficit).
    """

    scenarios: ScenarioSet
    policy: SolvencyPolicy
    fund: float
    columns: dict[str, np.ndarray]
    account_id: np.ndarray
    equity_before: np.ndarray
    equity_after_move: np.ndarray
    maintenance_after_move: np.ndarray
    liquidated: np.ndarray
    bankrupt: np.ndarray
    closeout_cost: np.ndarray
    deficit: np.ndarray
    deleveraged: np.ndarray
    socialised: np.ndarray
    equity_final: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)

    def table(self) -> Any:
        """The per-scenario table: a pandas DataFrame when pandas is installed, else a dict of arrays."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - depends on the environment
            return dict(self.columns)
        return pd.DataFrame(self.columns)

    def row(self, scenario: str | int) -> dict[str, Any]:
        """One scenario's figures as a dict."""
        j = self.scenarios.names.index(scenario) if isinstance(scenario, str) else int(scenario)
        return {k: (v[j].item() if isinstance(v[j], np.generic) else v[j]) for k, v in self.columns.items()}


class SolvencyEngine:
    """Reverse stress, close-out and loss waterfall of account books on one market.

    Parameters
    ----------
    market : MarketSnapshot
    instruments : InstrumentTable
    model : RiskMatrixModel, optional
        Margin model (default :func:`dpm.models.dpm_default`): equity, maintenance margin, liquidation
        order.
    policy : str or SolvencyPolicy
        Venue preset (``"deribit"``, ``"bitmex"``, ``"okx"``, ``"binance"``) or a policy.
    costs : CloseOutCostModel, optional
    remargin : bool
        Margin after the move in the stressed market (True), or keep the margin before the move.
    workers : int, optional
    """

    def __init__(self, market: MarketSnapshot, instruments: InstrumentTable, model: RiskMatrixModel | None = None,
                 *, policy: str | SolvencyPolicy = "deribit", costs: CloseOutCostModel | None = None,
                 remargin: bool = True, workers: int | None = None) -> None:
        self.margin_engine = MarginEngine(market, instruments, model, workers=workers)
        self.risk_engine = ScenarioRiskEngine(market, instruments, workers=workers)
        self.policy = solvency_policy(policy)
        costs = CloseOutCostModel() if costs is None else costs
        if not isinstance(costs, CloseOutCostModel):
            raise InvalidTypeError(f"costs: expected a CloseOutCostModel, got {type(costs).__name__}")
        self.costs = costs
        self.instrument_costs = costs.parameters(self.risk_engine.plan)
        if not isinstance(remargin, bool):
            raise InvalidTypeError(f"remargin: expected a bool, got {remargin!r}")
        self.remargin = remargin
        self.workers = workers

    @property
    def market(self) -> MarketSnapshot:
        return self.margin_engine.market

    @property
    def instruments(self) -> InstrumentTable:
        return self.margin_engine.instruments

    @property
    def model(self) -> RiskMatrixModel:
        return self.margin_engine.model

    # ------------------------------------------------------------------ inputs
    def exposure(self, accounts: AccountBook | BookExposure) -> BookExposure:
        """Equity, margin and collateral of a book (reuse it across calls)."""
        if isinstance(accounts, BookExposure):
            accounts.book.require_table(self.instruments)
            return accounts
        return book_exposure(self.margin_engine, accounts, workers=self.workers)

    def default_space(self, **kwargs: Any) -> StressSpace:
        """:meth:`StressSpace.from_history` over the book's underlyings that the bundled history has."""
        from dpm.market.history import load_history

        hist = load_history()
        unds = tuple(u for u in self.instruments.underlyings if u in hist.assets)
        if not unds:
            raise InvalidInputError(f"space: none of the underlyings {self.instruments.underlyings} is in the "
                                    "bundled history; build a StressSpace")
        return StressSpace.from_history(unds, hist, **kwargs)

    # ------------------------------------------------------------------ reverse stress
    def reverse_stress(self, accounts: AccountBook | BookExposure, space: StressSpace | None = None,
                       **kwargs: Any) -> ReverseStressResult:
        """Per account, the smallest joint move that exhausts its equity
        (:func:`~dpm.engines.solvency.reverse.reverse_stress`)."""
        return reverse_stress(self.risk_engine, self.exposure(accounts), space or self.default_space(),
                              workers=kwargs.pop("workers", self.workers), **kwargs)

    def venue_reverse_stress(self, accounts: AccountBook | BookExposure, fund: float,
                             space: StressSpace | None = None, **kwargs: Any) -> VenueReverseStress:
        """The smallest joint move under which uncovered losses exceed ``fund``
        (:func:`~dpm.engines.solvency.reverse.venue_reverse_stress`)."""
        return venue_reverse_stress(self.risk_engine, self.exposure(accounts), space or self.default_space(),
                                    _check_fund(fund), workers=kwargs.pop("workers", self.workers), **kwargs)

    # ------------------------------------------------------------------ scenarios
    def run(self, accounts: AccountBook | BookExposure, scenarios: ScenarioSet, fund: float, *,
            workers: int | None = None) -> SolvencyRun:
        """Move, margin, close-out and waterfall of every scenario (each from the same starting point).

        Parameters
        ----------
        accounts : AccountBook or BookExposure
        scenarios : ScenarioSet
            Joint moves; underlyings of the instruments must be covered. A column for a collateral
            currency (e.g. ``USDT``) moves that collateral.
        fund : float
            Insurance fund (USD) available at the start of each scenario.
        """
        import time

        if not isinstance(scenarios, ScenarioSet):
            raise InvalidTypeError(f"scenarios: expected a ScenarioSet, got {type(scenarios).__name__}")
        fund = _check_fund(fund)
        w = self.workers if workers is None else workers
        t0 = time.perf_counter()
        ex = self.exposure(accounts)
        book = ex.book
        N, S = len(book), len(scenarios)
        t1 = time.perf_counter()
        pnl_pos = self.risk_engine.account_pnl(book, scenarios, workers=w)  # N x S
        pnl_coll = ex.collateral_pnl(scenarios.underlyings, scenarios.price_move)
        P = np.nan_to_num(self.risk_engine.revalue(scenarios, workers=w))  # M x S per contract
        t2 = time.perf_counter()
        E0 = ex.equity
        E1 = E0[:, None] + pnl_pos + pnl_coll
        acc_of = book.account_of_position()
        has_pos = np.bincount(acc_of, weights=(book.quantity != 0), minlength=N) > 0 if book.n_positions else \
            np.zeros(N, dtype=bool)
        table = self.instruments
        und_of_inst = np.asarray(table.underlying, dtype=np.int64)
        scen_col = np.array([scenarios.underlyings.index(u) if u in scenarios.underlyings else -1
                             for u in table.underlyings], dtype=np.int64)
        notional = self.instrument_costs.notional
        cols: dict[str, list[Any]] = {c: [] for c in SCENARIO_COLUMNS}
        shape = (N, S)
        mm1 = np.empty(shape)
        liq_m = np.zeros(shape, dtype=bool)
        bk_m = np.zeros(shape, dtype=bool)
        cost_m = np.zeros(shape)
        def_m = np.zeros(shape)
        adl_m = np.zeros(shape)
        soc_m = np.zeros(shape)
        efin_m = E1.copy()
        t_margin = t_liq = t_wf = 0.0
        for s in range(S):
            ta = time.perf_counter()
            if self.remargin:
                eng_s = MarginEngine(stressed_market(self.market, scenarios, s, self.risk_engine.vol_term_structure),
                                     table, self.model, workers=w)
                mm_s = eng_s.margin_many(book, workers=w).maintenance_margin
            else:
                eng_s = self.margin_engine
                mm_s = ex.maintenance_margin
            mm1[:, s] = mm_s
            e1 = E1[:, s]
            liq = has_pos & ((e1 < 0.0) | ((mm_s > 0.0) & (e1 <= mm_s)))
            L = np.flatnonzero(liq)
            tb = time.perf_counter()
            sub = book.subset(L)
            lr = liquidate(eng_s, sub, e1[L], self.instrument_costs, partial=self.policy.partial,
                           target=self.policy.target, target_ratio=self.policy.target_ratio,
                           fee_rate=self.policy.liquidation_fee, workers=w)
            tc = time.perf_counter()
            e_after = lr.equity_after.copy()
            surplus = np.zeros(L.size)
            if self.policy.surplus_to_fund:
                surplus = np.where(lr.full & (e_after > 0.0), e_after, 0.0)
                e_after = e_after - surplus
            deficit = np.maximum(-e_after, 0.0)
            income = float(lr.fee.sum() + surplus.sum())
            used, remaining = cover_with_fund(deficit, fund + income)
            # --- ADL
            adl_cp = np.zeros(N)
            n_pos_deleveraged = 0
            to_socialise = 0.0
            bankrupt_local = np.flatnonzero(deficit > 0.0)
            bankrupt = np.zeros(N, dtype=bool)
            bankrupt[L[bankrupt_local]] = True
            rem_total = float(remaining.sum())
            if rem_total > 0.0 and self.policy.adl != "none":
                # remaining quantity of every position after the close-out
                rem_qty = book.quantity.copy()
                pos_L = _positions_of(book.indptr, L)
                rem_qty[pos_L] = book.quantity[pos_L] - lr.closed
                # uncovered amount of each bankrupt position: pro rata to its loss in the scenario
                pos_b = _positions_of(book.indptr, L[bankrupt_local])
                own_b = np.repeat(np.arange(bankrupt_local.size), np.diff(book.indptr)[L[bankrupt_local]])
                pnl_b = book.quantity[pos_b] * P[book.instrument_idx[pos_b], s]
                wgt = np.maximum(-pnl_b, 0.0) * (book.quantity[pos_b] != 0)
                wsum = np.bincount(own_b, weights=wgt, minlength=bankrupt_local.size)
                rem_b = remaining[bankrupt_local]
                no_pos = wsum <= 0.0
                to_socialise += float(rem_b[no_pos].sum())
                R_p = np.where(wsum[own_b] > 0, rem_b[own_b] * wgt / np.where(wsum[own_b] > 0, wsum[own_b], 1.0), 0.0)
                inst_b = book.instrument_idx[pos_b]
                side_b = np.sign(book.quantity[pos_b])
                keep = R_p > 0.0
                # counterparties: the remaining positions of accounts that are not bankrupt
                cp = np.flatnonzero(~bankrupt[acc_of] & (rem_qty != 0.0))
                owners = acc_of[cp]
                rq = rem_qty[cp]
                ci = book.instrument_idx[cp]
                if self.policy.adl == "binance":
                    score = adl_score("binance", account_pnl=pnl_pos[owners, s], wallet=E0[owners],
                                      maintenance_margin=mm_s[owners])
                else:
                    col = scen_col[und_of_inst[ci]]
                    x = np.where(col >= 0, scenarios.price_move[s, np.maximum(col, 0)], 0.0)
                    entry = np.abs(rq) * notional[ci]
                    eq_after_all = e1.copy()
                    eq_after_all[L] = lr.equity_after
                    score = adl_score("pnl_leverage", pnl=rq * P[ci, s], entry_value=entry,
                                      mark_value=entry * (1.0 + x), equity=eq_after_all[owners])
                # a bankrupt long is taken over by shorts and vice versa: group key instrument x side
                fill, unfilled = _adl_groups(inst_b[keep] * 2 + (side_b[keep] < 0), np.abs(book.quantity[pos_b][keep]),
                                             R_p[keep], ci * 2 + (rq > 0), np.abs(rq), score)
                np.add.at(adl_cp, owners, fill[1])
                n_pos_deleveraged = int((fill[0] > 0).sum())
                to_socialise += unfilled
            else:
                to_socialise = rem_total
            # --- socialised loss, then the venue's shortfall
            soc = np.zeros(N)
            if self.policy.socialise == "profit_pro_rata" and to_socialise > 0.0:
                profit = np.where(bankrupt, 0.0, pnl_pos[:, s] - adl_cp)
                soc, shortfall = socialise(to_socialise, profit)
            else:
                shortfall = to_socialise
            td = time.perf_counter()
            t_margin += tb - ta
            t_liq += tc - tb
            t_wf += td - tc
            market_loss = -(pnl_pos[L, s] + pnl_coll[L, s])
            losses = float(market_loss.sum() + lr.cost.sum() + lr.fee.sum() + surplus.sum())
            tot_def = float(deficit.sum())
            loss_all = -(pnl_pos[:, s] + pnl_coll[:, s])
            cols["scenario"].append(scenarios.names[s])
            cols["moves"].append(", ".join(f"{u} {scenarios.price_move[s, j]:+.1%}"
                                           + (f" vol {scenarios.vol_shock[s, j]:+.0%}" if scenarios.vol_shock[s, j] else "")
                                           for j, u in enumerate(scenarios.underlyings)))
            cols["stress_loss"].append(float(np.maximum(loss_all, 0.0).sum()))
            cols["accounts_loss_above_equity"].append(int((loss_all > E0).sum()))
            cols["uncovered_before_closeout"].append(float(np.maximum(loss_all - E0, 0.0).sum()))
            cols["accounts_liquidated"].append(int(L.size))
            cols["accounts_partially_liquidated"].append(int((~lr.full).sum()))
            cols["accounts_bankrupt"].append(int(bankrupt_local.size))
            cols["positions_closed"].append(int((lr.closed != 0).sum()))
            cols["closeout_cost"].append(float(lr.cost.sum()))
            cols["liquidation_fees"].append(float(lr.fee.sum()))
            cols["surplus_to_fund"].append(float(surplus.sum()))
            cols["losses"].append(losses)
            cols["equity_consumed"].append(losses - tot_def)
            cols["uncovered"].append(tot_def)
            cols["fund_start"].append(fund)
            cols["fund_income"].append(income)
            cols["fund_used"].append(used)
            cols["fund_end"].append(fund + income - used)
            cols["deleveraged"].append(float(adl_cp.sum()))
            cols["positions_deleveraged"].append(n_pos_deleveraged)
            cols["accounts_deleveraged"].append(int((adl_cp > 0).sum()))
            cols["socialised"].append(float(soc.sum()))
            cols["shortfall"].append(float(shortfall))
            liq_m[L, s] = True
            bk_m[:, s] = bankrupt
            cost_m[L, s] = lr.cost + lr.fee
            def_m[L, s] = deficit
            efin_m[L, s] = e_after
            adl_m[:, s] = adl_cp
            soc_m[:, s] = soc
        t3 = time.perf_counter()
        out = {k: np.asarray(v, dtype=object if k in ("scenario", "moves") else None) for k, v in cols.items()}
        timings = {"exposure": t1 - t0, "revalue": t2 - t1, "margin_after_move": t_margin, "closeout": t_liq,
                   "waterfall": t_wf, "total": t3 - t0}
        return SolvencyRun(scenarios, self.policy, fund, out, book.account_id, E0, E1, mm1, liq_m, bk_m, cost_m,
                           def_m, adl_m, soc_m, efin_m, timings)

    def report(self, accounts: AccountBook | BookExposure, fund: float, *, scenarios: ScenarioSet | None = None,
               user: Sequence[ScenarioSet] = (), reverse: bool | VenueReverseStress = True,
               space: StressSpace | None = None, workers: int | None = None) -> "Any":
        """Solvency report: named historical stresses (default
        :func:`~dpm.models.generators.stress.historical_stress_scenarios`), user stresses and the venue's
        reverse-stress move (computed unless ``reverse`` is False or a precomputed result).

        Returns
        -------
        SolvencyReport
        """
        from dpm.engines.solvency.report import SolvencyReport
        from dpm.models.generators.stress import historical_stress_scenarios

        fund = _check_fund(fund)
        ex = self.exposure(accounts)
        unds = tuple(u for u in self.instruments.underlyings)
        if scenarios is None:
            from dpm.market.history import load_history

            hist_assets = load_history().assets
            cover = tuple(u for u in unds if u in hist_assets)
            extra = tuple(c for c in ("USDT",) if c in hist_assets and c in ex.currencies and c not in cover)
            scenarios = historical_stress_scenarios(underlyings=cover + extra)
        sets = [scenarios, *user]
        venue = None
        if reverse is not False:
            venue = reverse if isinstance(reverse, VenueReverseStress) else self.venue_reverse_stress(
                ex, fund, space, workers=workers)
            if np.isfinite(venue.distance):
                sets.append(venue.scenario_set())
        names = [n for st in sets for n in st.names]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"scenarios: duplicate scenario names in {names}")
        # one run per set: each set keeps its own horizon (options age by it) and vol term structure
        runs = [self.run(ex, st, fund, workers=workers) for st in sets]
        return SolvencyReport(runs, venue, self.policy, self.model.name, ex)


def _adl_groups(bk_key: np.ndarray, bk_qty: np.ndarray, bk_uncovered: np.ndarray, cp_key: np.ndarray,
                cp_qty: np.ndarray, cp_score: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """:func:`~dpm.engines.solvency.waterfall.adl_fill` for every group at once.

    Bankrupt positions with key ``k`` (instrument x side of the counterparties wanted) need
    ``Q_k = sum bk_qty`` contracts at ``delta_k = sum bk_uncovered / Q_k``; counterparties with key
    ``k`` are taken greedily by decreasing score (ties: given order), each up to ``cp_qty``.
    Returns ((contracts taken, haircut) per counterparty, uncovered amount left unplaced).
    """
    if bk_key.size == 0:
        return (np.zeros(cp_key.size), np.zeros(cp_key.size)), 0.0
    keys, inv = np.unique(bk_key, return_inverse=True)
    Q = np.bincount(inv, weights=bk_qty)
    R = np.bincount(inv, weights=bk_uncovered)
    delta = R / Q
    g = np.searchsorted(keys, cp_key)
    g = np.where((g < keys.size) & (keys[np.minimum(g, keys.size - 1)] == cp_key), g, -1)
    sel = np.flatnonzero(g >= 0)
    take = np.zeros(cp_key.size)
    if sel.size:
        order = sel[np.lexsort((sel, -cp_score[sel], g[sel]))]
        gs = g[order]
        qa = cp_qty[order]
        cum = np.cumsum(qa)
        start = np.searchsorted(gs, gs, side="left")
        base = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
        before = cum - qa - base
        t = np.clip(Q[gs] - before, 0.0, qa)
        take[order] = np.where(t > 1e-12 * Q[gs], t, 0.0)  # rounding residue of the running sum
    placed = np.bincount(g[sel], weights=take[sel], minlength=keys.size) if sel.size else np.zeros(keys.size)
    unfilled = float(((Q - placed).clip(min=0.0) * delta).sum())
    return (take, take * np.where(g >= 0, delta[np.maximum(g, 0)], 0.0)), unfilled


def _positions_of(indptr: np.ndarray, accounts: np.ndarray) -> np.ndarray:
    c = indptr[accounts + 1] - indptr[accounts]
    first = np.cumsum(c) - c
    return np.repeat(indptr[accounts] - first, c) + np.arange(int(c.sum()), dtype=np.int64)
