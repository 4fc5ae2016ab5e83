"""Close-out: the cost model, the stressed market, partial liquidation restoring margin."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.engines.plan import RevaluationPlan
from dpm.engines.solvency import CloseOutCostModel, liquidate, stressed_market
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.sample import default_instruments, default_market
from dpm.models.generators.stress import hypothetical_scenarios
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts
from dpm.pricing.black import greeks


@pytest.fixture(scope="module")
def market():
    return default_market()


@pytest.fixture(scope="module")
def table():
    t = default_instruments()
    keep = np.isin(np.asarray(t.expiry_ms), np.unique(t.expiry_ms)[:4]) | (np.asarray(t.kind) == 2)
    return t.subset(keep)


@pytest.fixture(scope="module")
def plan(market, table):
    return RevaluationPlan(market, table)


def test_cost_is_half_spread_plus_square_root_impact_by_hand(market, table, plan):
    model = CloseOutCostModel(half_spread={"perpetual": 0.0002, "option": 0.001}, impact=0.8,
                              daily_vol={"BTC": 0.025, "ETH": 0.035},
                              daily_volume_usd={"perpetual": 1e9, "option": 5e6})
    c = model.parameters(plan)
    S = market["BTC"].index_price
    perp = int(table.index_of(["BTC-PERPETUAL"])[0])  # inverse, 10 USD per contract
    lin = int(table.index_of(["BTC_USDC-PERPETUAL"])[0])  # 1 BTC per contract
    # inverse perpetual: notional 10 USD; V = 1e9 / 10 contracts a day
    for q in (1.0, 1_000.0, 250_000.0):
        want = q * 0.0002 * 10 + 0.8 * 0.025 * 10 * q * math.sqrt(q / 1e8)
        assert math.isclose(c.cost(np.array([perp]), np.array([-q]))[0], want, rel_tol=1e-13)
    want = 3 * 0.0002 * S + 0.8 * 0.025 * S * 3 * math.sqrt(3 / (1e9 / S))
    assert math.isclose(c.cost(np.array([lin]), np.array([3.0]))[0], want, rel_tol=1e-13)
    # an option: s = sigma |delta| S per coin, its Black-76 delta
    opt = int(np.flatnonzero(np.asarray(table.kind) == 3)[5])
    d = abs(greeks(plan.F[opt], plan.K[opt], plan.vol[opt], plan.T[opt], plan.cp[opt])["delta"])
    want = 2 * 0.001 * S + 0.8 * 0.025 * float(d) * S * 2 * math.sqrt(2 / (5e6 / S))
    assert math.isclose(c.cost(np.array([opt]), np.array([2.0]))[0], want, rel_tol=1e-12)


@pytest.mark.parametrize("exponent", [0.5, 0.6, 1.0])
def test_cost_grows_with_size_as_the_model_says(plan, exponent):
    c = CloseOutCostModel(half_spread=0.0, impact=1.0, exponent=exponent).parameters(plan)
    ids = np.arange(len(plan))
    ids = ids[c.notional[ids] > 0]
    q = np.full(ids.size, 7.0)
    ratio = c.cost(ids, 2 * q) / c.cost(ids, q)
    np.testing.assert_allclose(ratio[np.isfinite(ratio)], 2.0 ** (1 + exponent), rtol=1e-12)
    # spread only: linear in size
    c2 = CloseOutCostModel(impact=0.0).parameters(plan)
    np.testing.assert_allclose(c2.cost(ids, 2 * q), 2 * c2.cost(ids, q), rtol=1e-13)
    # nothing closed costs nothing
    assert not c.cost(ids, np.zeros(ids.size)).any()


def test_cost_model_validates():
    with pytest.raises(InvalidInputError, match="exponent"):
        CloseOutCostModel(exponent=0.0)
    with pytest.raises(InvalidInputError, match="exponent"):
        CloseOutCostModel(exponent=1.5)
    with pytest.raises(InvalidInputError, match="impact"):
        CloseOutCostModel(impact=-1)
    with pytest.raises(InvalidInputError, match="daily_volume_usd"):
        CloseOutCostModel(daily_volume_usd=0.0)
    with pytest.raises(InvalidInputError, match="unknown instrument kind"):
        CloseOutCostModel(half_spread={"swap": 0.1})
    with pytest.raises(InvalidTypeError, match="daily_vol"):
        CloseOutCostModel(daily_vol=0.03)


def test_stressed_market_moves_prices_and_scales_vols(market):
    sc = hypothetical_scenarios([{"name": "s", "price_move": {"BTC": -0.2, "ETH": 0.1},
                                  "vol_shock": {"BTC": 0.5}}], ["BTC", "ETH"])
    m1 = stressed_market(market, sc, 0)
    assert math.isclose(m1["BTC"].index_price, 0.8 * market["BTC"].index_price, rel_tol=1e-15)
    assert math.isclose(m1["ETH"].perpetual_price, 1.1 * market["ETH"].perpetual_price, rel_tol=1e-15)
    T = np.array([0.1, 0.5])
    np.testing.assert_allclose(m1["BTC"].forward(T), 0.8 * market["BTC"].forward(T), rtol=1e-14)
    # vols scale by 1 + c(T) v, c = (30 / DTE)^p (Deribit's term structure), on each slice
    for s0, s1 in zip(market["BTC"].vol_surface.slices, m1["BTC"].vol_surface.slices):
        dte = max(s0.T * 365, 1.0)
        c = (30 / dte) ** (0.30 if dte <= 30 else 0.13)
        k = np.array([-0.2, 0.0, 0.3])
        np.testing.assert_allclose(s1.implied_vol(k), s0.implied_vol(k) * (1 + 0.5 * c), rtol=1e-12)
    assert m1["ETH"].vol_surface is market["ETH"].vol_surface  # no vol shock
    assert market["BTC"].index_price == 92_000.0  # the input is not changed


def _liquidation_case(market, table, seed=4):
    book = generate_accounts(600, table, seed=seed)
    sc = hypothetical_scenarios([{"name": "down", "price_move": {"BTC": -0.12, "ETH": -0.15},
                                  "vol_shock": {"BTC": 0.3, "ETH": 0.3}}], ["BTC", "ETH"])
    from dpm.engines.solvency import SolvencyEngine

    eng = SolvencyEngine(market, table, workers=2)
    ex = eng.exposure(book)
    from dpm.engines.risk import ScenarioRiskEngine

    pnl = ScenarioRiskEngine(market, table).account_pnl(book, sc)[:, 0]
    e1 = ex.equity + pnl + ex.collateral_pnl(sc.underlyings, sc.price_move)[:, 0]
    m1 = MarginEngine(stressed_market(market, sc, 0), table, eng.model, workers=2)
    mm1 = m1.margin_many(book).maintenance_margin
    has = np.diff(book.indptr) > 0
    L = np.flatnonzero(has & (mm1 > 0) & (e1 <= mm1) & (e1 > 0))
    return book, m1, eng.instrument_costs, e1, L


def test_partial_liquidation_restores_margin(market, table):
    book, m1, costs, e1, L = _liquidation_case(market, table)
    assert L.size > 5
    sub = book.subset(L)
    res = liquidate(m1, sub, e1[L], costs, target="mm", target_ratio=1.0, fraction_rounds=7)
    # independent check: margin the remaining positions in the stressed market
    rem = AccountBook(sub.account_id, sub.indptr, sub.instrument_idx, sub.quantity - res.closed, sub.collateral,
                      sub.currencies, sub.table)
    mm_after = m1.margin_many(rem).maintenance_margin
    eq_after = e1[L] - res.cost - res.fee
    np.testing.assert_allclose(mm_after, res.requirement_after, rtol=1e-12)
    ok = eq_after >= 0
    assert (mm_after[ok] <= eq_after[ok] * (1 + 1e-12)).all()
    # closed only what it needed to: partial where possible, and never more than held
    assert (~res.full).any()
    assert (np.abs(res.closed) <= np.abs(sub.quantity) * (1 + 1e-12)).all()
    assert (np.sign(res.closed) * np.sign(sub.quantity) >= 0).all()
    # closing less (the last position 1/128 less) does not meet the target
    acc = sub.account_of_position()
    part = np.flatnonzero(~res.full)
    checked = 0
    for a in part[:15]:
        sl = slice(sub.indptr[a], sub.indptr[a + 1])
        frac = np.where(sub.quantity[sl] != 0, res.closed[sl] / np.where(sub.quantity[sl] != 0, sub.quantity[sl], 1), 0)
        j = int(np.argmin(np.where((frac > 0) & (frac < 1), frac, 2.0))) if ((frac > 0) & (frac < 1)).any() else None
        if j is None:
            continue
        less = sub.quantity.copy()
        less[sl] = sub.quantity[sl] - res.closed[sl]
        less[sub.indptr[a] + j] += sub.quantity[sub.indptr[a] + j] / 128
        b = AccountBook(sub.account_id[[a]], [0, sl.stop - sl.start], sub.instrument_idx[sl], less[sl],
                        sub.collateral[[a]], sub.currencies, sub.table)
        closed_less = sub.quantity[sl] - less[sl]
        cost_less = costs.cost(sub.instrument_idx[sl], closed_less).sum()
        assert m1.margin_many(b).maintenance_margin[0] > e1[L][a] - cost_less - 1e-9
        checked += 1
    assert checked >= 3
    assert acc.size == sub.n_positions


def test_full_liquidation_when_partial_is_off_or_costs_exceed_equity(market, table):
    book, m1, costs, e1, L = _liquidation_case(market, table)
    sub = book.subset(L)
    res = liquidate(m1, sub, e1[L], costs, partial=False)
    assert res.full.all()
    np.testing.assert_allclose(res.closed, sub.quantity)
    np.testing.assert_allclose(res.cost, np.bincount(sub.account_of_position(), costs.cost(sub.instrument_idx,
                                                                                     sub.quantity), len(sub)))
    # an account whose equity does not cover the cost of closing everything is closed in full
    poor = liquidate(m1, sub, np.full(len(sub), -1.0), costs)
    assert poor.full.all() and (poor.equity_after < 0).all()


def test_im_target_and_lower_ratio_liquidate_more(market, table):
    book, m1, costs, e1, L = _liquidation_case(market, table)
    sub = book.subset(L)
    mm = liquidate(m1, sub, e1[L], costs, target="mm", target_ratio=1.0, fraction_rounds=0)
    strict = liquidate(m1, sub, e1[L], costs, target="mm", target_ratio=0.9, fraction_rounds=0)
    im = liquidate(m1, sub, e1[L], costs, target="im", target_ratio=1.0, fraction_rounds=0)
    n_closed = lambda r: np.bincount(sub.account_of_position(), (r.closed != 0), len(sub))  # noqa: E731
    assert (n_closed(strict) >= n_closed(mm)).mean() > 0.9
    assert (n_closed(im) >= n_closed(mm)).mean() > 0.9
    assert n_closed(im).sum() > n_closed(mm).sum()


def test_liquidate_empty_book_and_bad_input(market, table):
    m1 = MarginEngine(market, table)
    c = CloseOutCostModel().parameters(RevaluationPlan(market, table))
    res = liquidate(m1, AccountBook.empty(table), np.zeros(0), c)
    assert res.cost.size == 0 and res.closed.size == 0
    book = generate_accounts(3, table, seed=2)
    with pytest.raises(InvalidInputError, match="target"):
        liquidate(m1, book, np.zeros(3), c, target="vm")
    with pytest.raises(InvalidInputError, match="equity"):
        liquidate(m1, book, np.zeros(2), c)
    with pytest.raises(InvalidInputError, match="target_ratio"):
        liquidate(m1, book, np.zeros(3), c, target_ratio=0)
