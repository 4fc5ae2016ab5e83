"""Loss waterfall: hand-computed steps, published ADL examples, conservation on generated books."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from reference.solvency_ref import adl_groups_loop

from dpm.engines.solvency import CloseOutCostModel, SolvencyEngine, SolvencyPolicy, adl_fill, adl_score
from dpm.engines.solvency.engine import _adl_groups
from dpm.engines.solvency.waterfall import POLICIES, cover_with_fund, socialise, solvency_policy
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.sample import default_instruments, default_market
from dpm.models.generators.stress import historical_stress_scenarios, hypothetical_scenarios
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts

NO_COSTS = CloseOutCostModel(half_spread=0.0, impact=0.0)
PUBLISHED = json.loads((Path(__file__).parent / "fixtures" / "solvency" / "published_examples.json").read_text())


@pytest.fixture(scope="module")
def market():
    return default_market()


@pytest.fixture(scope="module")
def table():
    return default_instruments()


# ---------------------------------------------------------------------------------------------
# published examples
# ---------------------------------------------------------------------------------------------
def test_bitmex_published_adl_example():
    # https://www.bitmex.com/app/autoDeleveragingExamples: six longs (account, qty, rank); a short of 20
    # is liquidated: "Account 2 will have their entire position of 10 contracts closed, while the
    # remaining 10 contracts ... will be assigned to account 5."
    ex = PUBLISHED["bitmex_adl_example"]
    accounts = [x["account"] for x in ex["longs"]]
    qty = [x["qty"] for x in ex["longs"]]
    rank = [x["rank"] for x in ex["longs"]]
    fill = adl_fill(rank, qty, ex["liquidated_short_qty"], uncovered=20 * 5.0)
    taken = {str(a): f for a, f in zip(accounts, fill.filled) if f > 0}
    assert taken == {k: float(v) for k, v in ex["expected"].items()}
    assert fill.delta == 5.0 and fill.unfilled_quantity == 0.0
    np.testing.assert_allclose(fill.haircut.sum(), 100.0, rtol=1e-15)


def test_bitmex_ranking_formula_by_hand():
    # Ranking = PnL% * effective leverage (PnL > 0), PnL% / effective leverage (PnL < 0);
    # leverage = |mark value| / (mark value - bankrupt value) = |mark value| / equity (cross margin)
    s = adl_score("pnl_leverage", pnl=[1_000.0, -500.0, 0.0], entry_value=[10_000.0, 10_000.0, 10_000.0],
                  mark_value=[11_000.0, 9_500.0, 10_000.0], equity=[2_200.0, 1_900.0, 1_000.0])
    np.testing.assert_allclose(s, [0.1 * 5.0, -0.05 / 5.0, 0.0], rtol=1e-15)
    # no equity left: infinite leverage, a profitable position ranks first
    assert adl_score("pnl_leverage", pnl=[1.0], entry_value=[10.0], mark_value=[11.0], equity=[0.0])[0] == math.inf


def test_binance_leverage_pnl_forum_example():
    # dev.binance.vision "how to caculating leverage pnl quantile": uPnL 40.2, wallet 4.27, margin ratio
    # 13.42 % -> 40.2 / 4.27 * 0.1342 = 1.2634
    ex = PUBLISHED["binance_leverage_pnl"]
    up, wb, mr = ex["unrealized_pnl"], ex["wallet_balance"], ex["margin_ratio"]
    s = adl_score("binance", account_pnl=[up], wallet=[wb], maintenance_margin=[mr * (wb + up)])
    np.testing.assert_allclose(s, [40.2 / 4.27 * 0.1342], rtol=1e-12)
    assert round(float(s[0]), 2) == ex["expected_rounded"]
    # losses and a wiped-out balance rank 0; wallet below 1 USDT counts as 1
    z = adl_score("binance", account_pnl=[-5.0, 10.0, 2.0], wallet=[100.0, -20.0, 0.5],
                  maintenance_margin=[1.0, 1.0, 1.25])
    np.testing.assert_allclose(z, [0.0, 0.0, 2.0 / 1.0 * 1.25 / 2.5], rtol=1e-15)


def test_cryptocom_socialised_loss_example():
    # help.crypto.com "Insurance Fund and Socialised Loss Mechanism": fund short by 10,000; winners'
    # profits 50,000 / 45,000 / 30,000 / 30,000 / 15,000 / 1,000 (171,000): trader A bears 2,923.98
    ex = PUBLISHED["cryptocom_socialised_loss"]
    charge, shortfall = socialise(ex["shortfall"], ex["profits"] + [-4_000])
    assert round(charge[0], 2) == ex["expected_first"]
    np.testing.assert_allclose(charge.sum(), 10_000.0, rtol=1e-15)
    assert charge[-1] == 0.0 and shortfall == 0.0
    charge, shortfall = socialise(200_000.0, [50_000, 45_000])
    np.testing.assert_allclose(charge, [50_000, 45_000])
    assert shortfall == 105_000.0


def test_fund_covers_every_deficit_by_the_same_fraction():
    used, rem = cover_with_fund([300.0, 100.0, 0.0], 200.0)
    assert used == 200.0
    np.testing.assert_allclose(rem, [150.0, 50.0, 0.0])
    used, rem = cover_with_fund([300.0, 100.0], 1e9)
    assert used == 400.0 and not rem.any()
    used, rem = cover_with_fund([0.0, 0.0], 10.0)
    assert used == 0.0


def test_vectorised_adl_groups_equal_the_loop_reference():
    rng = np.random.default_rng(5)
    for _ in range(30):
        nb, nc = rng.integers(1, 12), rng.integers(0, 40)
        bk_key = rng.integers(0, 6, nb)
        bk_qty = rng.integers(1, 20, nb).astype(float)
        bk_unc = rng.uniform(0, 1000, nb)
        cp_key = rng.integers(0, 7, nc)
        cp_qty = rng.integers(1, 15, nc).astype(float)
        cp_score = rng.integers(0, 5, nc).astype(float)  # many ties
        (take, hair), unf = _adl_groups(bk_key, bk_qty, bk_unc, cp_key, cp_qty, cp_score)
        t2, h2, u2 = adl_groups_loop(bk_key, bk_qty, bk_unc, cp_key, cp_qty, cp_score)
        np.testing.assert_allclose(take, t2, atol=1e-9)
        np.testing.assert_allclose(hair, h2, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(unf, u2, rtol=1e-12, atol=1e-9)
        # conservation per draw: placed + unplaced = uncovered
        np.testing.assert_allclose(hair.sum() + unf, bk_unc.sum(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------------------------
def test_presets_cite_sources_and_validate():
    assert set(POLICIES) == {"deribit", "bitmex", "okx", "binance"}
    for p in POLICIES.values():
        assert p.sources and all("http" in s or "OKX" in s for s in p.sources)
    assert POLICIES["deribit"].adl == "none" and POLICIES["deribit"].socialise == "profit_pro_rata"
    assert POLICIES["bitmex"].surplus_to_fund and POLICIES["binance"].adl == "binance"
    with pytest.raises(InvalidInputError, match="policy"):
        solvency_policy("ftx")
    with pytest.raises(InvalidInputError, match="adl"):
        SolvencyPolicy(adl="random")
    with pytest.raises(InvalidInputError, match="target_ratio"):
        SolvencyPolicy(target_ratio=0.0)
    with pytest.raises(InvalidInputError, match="liquidation_fee"):
        SolvencyPolicy(liquidation_fee=float("nan"))
    with pytest.raises(InvalidTypeError, match="partial"):
        SolvencyPolicy(partial="yes")


# ---------------------------------------------------------------------------------------------
# the whole waterfall on a hand-computed book
# ---------------------------------------------------------------------------------------------
def _hand_book(table):
    # A long 8 linear BTC perpetuals with 20,000 USDC; B, C, E short 4, 6, 5 with 50,000, 10,000 and
    # 1,000,000 USDC; D long 1 linear ETH perpetual with 5,000 USDC.
    pos = [("A", "BTC_USDC-PERPETUAL", 8.0), ("B", "BTC_USDC-PERPETUAL", -4.0), ("C", "BTC_USDC-PERPETUAL", -6.0),
           ("D", "ETH_USDC-PERPETUAL", 1.0), ("E", "BTC_USDC-PERPETUAL", -5.0)]
    ids = ["A", "B", "C", "D", "E"]
    coll = {"USDC": np.array([20_000.0, 50_000.0, 10_000.0, 5_000.0, 1_000_000.0])}
    return AccountBook.from_arrays([ids.index(a) for a, _, _ in pos], table.index_of([p[1] for p in pos]),
                                   [p[2] for p in pos], table, account_ids=ids, collateral=coll,
                                   currencies=("USDC",))


def _crash():
    return hypothetical_scenarios([{"name": "btc-30", "price_move": {"BTC": -0.3, "ETH": 0.0}}], ["BTC", "ETH"])


def _hand(market, policy):
    F = market["BTC"].perpetual_price  # linear perpetual: P&L per contract = F * move
    S = market["BTC"].index_price
    pnl = F * -0.3
    E = {"A": 20_000 + 8 * pnl, "B": 50_000 - 4 * pnl, "C": 10_000 - 6 * pnl, "D": 5_000.0,
         "E": 1_000_000 - 5 * pnl}
    fund = 100_000.0
    R = -E["A"] - fund  # what the fund cannot cover
    return F, S, pnl, E, fund, R


def _conservation(row):
    rhs = row["equity_consumed"] + row["fund_used"] + row["deleveraged"] + row["socialised"] + row["shortfall"]
    assert math.isclose(row["losses"], rhs, rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(row["uncovered"], row["fund_used"] + row["deleveraged"] + row["socialised"]
                        + row["shortfall"], rel_tol=1e-9, abs_tol=1e-6)


def test_hand_waterfall_bitmex_adl(market, table):
    book = _hand_book(table)
    eng = SolvencyEngine(market, table, policy="bitmex", costs=NO_COSTS, workers=1)
    run = eng.run(book, _crash(), fund=100_000.0)
    row = run.row(0)
    F, S, pnl, E, fund, R = _hand(market, "bitmex")
    # step 1, equity: A is bankrupt by -E_A; the others are not liquidated
    assert row["accounts_liquidated"] == 1 and row["accounts_bankrupt"] == 1
    assert math.isclose(row["uncovered"], -E["A"], rel_tol=1e-12)
    assert math.isclose(row["equity_consumed"], 20_000.0, rel_tol=1e-9)
    # step 2, fund: all of it
    assert row["fund_used"] == fund and row["fund_end"] == 0.0
    # step 3, ADL at the bankruptcy price: delta = R / 8 per contract; ranking PnL% x |mark| / equity
    delta = R / 8
    entry = {"B": 4 * S, "C": 6 * S, "E": 5 * S}
    score = {k: (-q * pnl / entry[k]) * (0.7 * entry[k] / E[k]) for k, q in (("B", 4), ("C", 6), ("E", 5))}
    assert score["C"] > score["B"] > score["E"]
    # C (6 contracts) first, then 2 of B's 4; E untouched
    np.testing.assert_allclose(run.deleveraged[:, 0], [0.0, 2 * delta, 6 * delta, 0.0, 0.0], rtol=1e-9)
    assert row["positions_deleveraged"] == 2 and row["accounts_deleveraged"] == 2
    assert math.isclose(row["deleveraged"], R, rel_tol=1e-9)
    assert row["socialised"] == 0.0 and row["shortfall"] == 0.0
    _conservation(row)


def test_hand_waterfall_deribit_socialised(market, table):
    book = _hand_book(table)
    run = SolvencyEngine(market, table, policy="deribit", costs=NO_COSTS, workers=1).run(book, _crash(), 100_000.0)
    row = run.row(0)
    F, S, pnl, E, fund, R = _hand(market, "deribit")
    profit = np.array([0.0, -4 * pnl, -6 * pnl, 0.0, -5 * pnl])
    np.testing.assert_allclose(run.socialised[:, 0], R * profit / profit.sum(), rtol=1e-9)
    assert row["deleveraged"] == 0.0 and math.isclose(row["socialised"], R, rel_tol=1e-9)
    _conservation(row)


def test_hand_waterfall_binance_ranking(market, table):
    book = _hand_book(table)
    run = SolvencyEngine(market, table, policy="binance", costs=NO_COSTS, workers=1).run(book, _crash(), 100_000.0)
    F, S, pnl, E, fund, R = _hand(market, "binance")
    mm = run.maintenance_after_move[:, 0]
    up = np.array([8, -4, -6, 0, -5]) * pnl
    wallet = np.array([20_000.0, 50_000.0, 10_000.0, 5_000.0, 1_000_000.0])
    score = np.maximum(0, up) / np.maximum(1, wallet) * mm / (wallet + up)
    order = [i for i in np.argsort(-score, kind="stable") if i in (1, 2, 4)]
    need, taken = 8.0, np.zeros(5)
    for i in order:
        taken[i] = min(need, abs(book.quantity[i]))
        need -= taken[i]
    np.testing.assert_allclose(run.deleveraged[:, 0], taken * R / 8, rtol=1e-9)
    _conservation(run.row(0))


def test_close_out_cost_enters_the_deficit(market, table):
    book = _hand_book(table)
    costs = CloseOutCostModel(half_spread=0.0005, impact=0.7, exponent=0.5, daily_vol={"BTC": 0.03, "ETH": 0.04})
    run = SolvencyEngine(market, table, policy="deribit", costs=costs, workers=1).run(book, _crash(), 100_000.0)
    S = market["BTC"].index_price
    h, y, V = 0.0005 * S, 0.7 * 0.03 * S, 2e9 / S  # perpetual: delta 1, notional = index
    cost = 8 * h + y * 8 * math.sqrt(8 / V)
    F, _, pnl, E, fund, R = _hand(market, "deribit")
    row = run.row(0)
    assert math.isclose(row["closeout_cost"], cost, rel_tol=1e-12)
    assert math.isclose(row["uncovered"], -E["A"] + cost, rel_tol=1e-12)
    _conservation(row)


# ---------------------------------------------------------------------------------------------
# conservation on generated books, every policy
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_table(table):
    keep = np.isin(np.asarray(table.expiry_ms), np.unique(table.expiry_ms)[:4]) | (np.asarray(table.kind) == 2)
    return table.subset(keep)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_conservation_on_generated_books(market, small_table, policy):
    book = generate_accounts(400, small_table, seed=3)
    eng = SolvencyEngine(market, small_table, policy=policy, workers=2)
    sc = historical_stress_scenarios(underlyings=("BTC", "ETH", "USDT"))
    run = eng.run(book, sc, fund=2e6)
    cols = run.columns
    E0 = run.equity_before
    for s in range(len(sc)):
        row = run.row(s)
        _conservation(row)
        liq = run.liquidated[:, s]
        ef = run.equity_final[:, s]
        # independent: equity consumed and deficits per account
        assert math.isclose(row["equity_consumed"], float((E0 - np.maximum(ef, 0.0))[liq].sum()),
                            rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(row["uncovered"], float(np.maximum(-ef, 0.0)[liq].sum()), rel_tol=1e-9, abs_tol=1e-6)
        np.testing.assert_allclose(run.deficit[:, s], np.where(liq, np.maximum(-ef, 0.0), 0.0), atol=1e-6)
        assert math.isclose(row["deleveraged"], float(run.deleveraged[:, s].sum()), rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(row["socialised"], float(run.socialised[:, s].sum()), rel_tol=1e-9, abs_tol=1e-6)
        assert row["fund_used"] <= row["fund_start"] + row["fund_income"] + 1e-6
        assert row["fund_end"] >= -1e-6
        # nobody bankrupt is not liquidated, deficits only where bankrupt
        assert not (run.bankrupt[:, s] & ~liq).any()
    assert (cols["accounts_liquidated"] >= cols["accounts_bankrupt"]).all()
    # the crash of Black Thursday bankrupts some accounts of this book
    assert cols["accounts_bankrupt"][0] > 0
    if policy == "deribit":
        assert not cols["deleveraged"].any()
    else:
        assert not cols["socialised"].any()


def test_empty_book_costs_nothing(market, small_table):
    book = AccountBook.empty(small_table)
    run = SolvencyEngine(market, small_table, workers=1).run(book, _crash(), fund=1e6)
    row = run.row(0)
    for k in ("losses", "closeout_cost", "uncovered", "fund_used", "deleveraged", "socialised", "shortfall"):
        assert row[k] == 0.0
    assert row["accounts_liquidated"] == 0


def test_run_rejects_bad_input(market, small_table):
    eng = SolvencyEngine(market, small_table, workers=1)
    book = generate_accounts(5, small_table, seed=1)
    with pytest.raises(InvalidInputError, match="fund"):
        eng.run(book, _crash(), fund=-1.0)
    with pytest.raises(InvalidInputError, match="fund"):
        eng.run(book, _crash(), fund=float("inf"))
    with pytest.raises(InvalidTypeError, match="scenarios"):
        eng.run(book, [[-0.3, 0.0]], fund=1.0)
    with pytest.raises(InvalidTypeError, match="costs"):
        SolvencyEngine(market, small_table, costs={"impact": 1})


def test_report_table_markdown_html_and_dict_fallback(market, small_table, tmp_path, monkeypatch):
    import sys

    book = generate_accounts(150, small_table, seed=6)
    eng = SolvencyEngine(market, small_table, policy="okx", workers=2)
    user = hypothetical_scenarios([{"name": "crash", "price_move": {"BTC": -0.3, "ETH": -0.4}}], ["BTC", "ETH"])
    rep = eng.report(book, fund=1e6, user=[user], reverse=False)
    cols = rep.columns()
    assert list(cols["scenario"][-1:]) == ["crash"] and len(cols["scenario"]) == 8
    for i in range(len(cols["scenario"])):
        _conservation({k: v[i] for k, v in cols.items()})
    md = rep.to_markdown(tmp_path / "r.md")
    assert "| crash |" in md and (tmp_path / "r_loss_waterfall.png").exists()
    page = rep.to_html(tmp_path / "r.html", plots=False)
    assert page.startswith("<!DOCTYPE html>") and "crash" in page
    assert rep.table().shape == (8, len(cols))
    monkeypatch.setitem(sys.modules, "pandas", None)  # without pandas: a dict of arrays
    t = rep.table()
    assert isinstance(t, dict) and list(t["scenario"]) == list(cols["scenario"])
    with pytest.raises(InvalidInputError, match="duplicate"):
        eng.report(book, fund=1e6, user=[user, user], reverse=False)
