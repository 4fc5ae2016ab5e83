"""Presets reproduce the published parameters and worked examples (sources in ``docs/methodology.md``).

Published examples used (see docs/methodology.md for the sources):

* Deribit PME, June-2024 ``private/pme/simulate`` example: roll shock 0.00315726 BTC =
  1 % x 0.31454 (perpetual delta) + 1 % x 0.0011875 (11-day future delta); MM = 0.8 x risk-matrix
  margin (0.06284313 -> 0.05027450 BTC); the extended-table entries of a linear/perpetual instrument
  equal the -16 % / +16 % standard entries (coin P&L).
* Paradex: extended weights 24, 48, 32, 16, 8, 5.33, 4, 3.2 %.
* OKX ``position-builder`` LTC example: MR1 183.51, MR4 8.16, MR6 183.51, MR7 7.14 ->
  MMR = max(max(MR1, MR6) + MR4, MR7) = 191.66 (191.67 from the rounded parts), IMR = 1.3 x MMR = 249.16.
* CME SPAN: 16 scenarios; the CME worked example's scenario-15 loss = 0.99 x the full-range loss
  (3x extreme move covered at 33 %).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import numpy as np
import pytest
from reference import margin_ref

from dpm.engines.margin import MarginEngine
from dpm.errors import InvalidInputError
from dpm.market.sample import default_instruments, default_market
from dpm.market.snapshot import MS_PER_YEAR, ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.specs import to_ms
from dpm.market.table import InstrumentTable
from dpm.models import (
    PRESETS,
    RiskMatrixModel,
    RollShock,
    cme_span,
    deribit_pm,
    dpm_default,
    okx_pm,
    paradex_pm,
    preset,
)
from dpm.models.scenarios import VolShock
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts


def _one(table, positions):
    names = list(table.name)
    return AccountBook.from_arrays(np.zeros(len(positions), np.int64), [names.index(n) for n, _ in positions],
                                   [float(q) for _, q in positions], table, n_accounts=1)


# ------------------------------------------------------------------------------------------ Deribit
JUNE_17_2024 = to_ms(dt.datetime(2024, 6, 17, 8, tzinfo=dt.timezone.utc))


def _deribit_june_2024():
    S, perp = 66_000.0, 66_050.0
    mk = MarketSnapshot(JUNE_17_2024, {"BTC": UnderlyingMarket(S, ForwardCurve.from_rate(S, 0.05),
                                                               perpetual_price=perp)})
    table = InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-28JUN24"])  # the future expires in 11 days
    return mk, table


def test_deribit_roll_shock_worked_example():
    """0.00315726 BTC = 1 % x 0.31454 (perpetual) + 1 % x 0.0011875 (11-day future)."""
    mk, table = _deribit_june_2024()
    engine = MarginEngine(mk, table, deribit_pm("coin"))
    T_fut = mk.year_fraction(table.expiry_ms[1])
    assert float(T_fut) * 365 == pytest.approx(11.0)
    F_fut = float(mk["BTC"].forward(T_fut))
    # inverse contracts: delta (BTC) = contracts x 10 USD / price
    book = _one(table, [("BTC-PERPETUAL", 0.31454 * 66_050.0 / 10.0), ("BTC-28JUN24", 0.0011875 * F_fut / 10.0)])
    res = engine.margin_many(book)
    roll_btc = res.roll_shock[0, 0] / mk["BTC"].index_price
    np.testing.assert_allclose(roll_btc, 0.01 * 0.31454 + 0.01 * 0.0011875, rtol=1e-12)
    # the published figure, to the precision of the published (rounded) deltas
    assert abs(roll_btc - 0.00315726) < 5e-8
    # 11 days: exp(0.075 T) - 1 = 0.23 % is below the 1 % minimum; a 1-year expiry pays exp(0.075) - 1
    roll = deribit_pm().params("BTC").roll_shock
    assert float(roll.rate(11 / 365)) == 0.01 and float(roll.rate(0.0)) == 0.01
    assert float(roll.rate(1.0)) == pytest.approx(math.expm1(0.075), rel=1e-15)
    assert float(deribit_pm().params("ETH").roll_shock.rate(0.0)) == 0.005


def test_deribit_mm_is_0_8_of_risk_matrix_margin():
    """Risk-matrix margin 0.06284313 BTC -> MM 0.05027450 BTC (MM = 0.8 x RM margin)."""
    mk, table = _deribit_june_2024()
    engine = MarginEngine(mk, table, deribit_pm("coin"))
    # long perpetual of coin delta D: worst coin loss D*0.16/0.84 at -16 % plus roll 1 % x D
    D = 0.06284313 / (0.16 / 0.84 + 0.01)
    res = engine.margin_many(_one(table, [("BTC-PERPETUAL", D * 66_050.0 / 10.0)]))
    S = mk["BTC"].index_price
    np.testing.assert_allclose(res.initial_margin[0] / S, 0.06284313, rtol=1e-12)
    assert round(res.maintenance_margin[0] / S, 8) == 0.05027450
    assert engine.scenario_labels["BTC"][res.worst_scenario[0, 0]].startswith("-16.0%")
    # and on generated accounts, MM = 0.8 IM exactly
    tab = default_instruments()
    r = MarginEngine(default_market(), tab, deribit_pm()).margin_many(generate_accounts(300, tab, seed=2))
    np.testing.assert_array_equal(r.maintenance_margin, 0.8 * r.risk)
    np.testing.assert_array_equal(r.initial_margin, r.risk)


@pytest.mark.parametrize("ccy", ["coin", "usd"])
def test_deribit_extended_entries_of_linear_instruments_equal_edge_entries(ccy):
    """Extended-table entries (counted at range/|move| x (1+move)/(1+sign*range) in coin) of perpetuals
    and futures equal the -range / +range standard entries: a linear position never loses more in the
    extended table than at the edge of the range. Checked against the June-2024
    example in coin; it holds in USD risk too with weights range/|move|."""
    tab = default_instruments()
    model = deribit_pm(ccy)
    engine = MarginEngine(default_market(), tab, model)
    names = list(tab.name)
    for und, rng in (("BTC", 0.16), ("ETH", 0.18)):
        ss = model.scenario_grid(und)
        lo = int(np.flatnonzero(np.isclose(ss.price_move, -rng) & (ss.vol_dir == 0))[0])
        hi = int(np.flatnonzero(np.isclose(ss.price_move, rng) & (ss.vol_dir == 0))[0])
        ext = np.flatnonzero(ss.dampener_usd > 0)
        assert len(ext) == 8 and np.all(ss.vol_dir[ext] == 1)  # evaluated with vol up only
        for nm in (f"{und}-PERPETUAL", f"{und}_USDC-PERPETUAL", f"{und}-25DEC26", f"{und}-26MAR27"):
            row = engine.pnl_matrix[names.index(nm)]
            for s in ext:
                edge = row[lo] if ss.price_move[s] < 0 else row[hi]
                np.testing.assert_allclose(row[s] * ss.weight[s], edge, rtol=1e-12, err_msg=f"{nm} {s}")


def test_deribit_grid_and_parameters():
    m = deribit_pm()
    assert m.risk_currency == "coin" and m.mm_factor == 0.8 and m.im_factor == 1.0
    for und, rng, up, damp in (("BTC", 0.16, 0.5, 100_000.0), ("ETH", 0.18, 0.4, 200_000.0)):
        ss = m.scenario_grid(und)
        assert len(ss) == 27 + 8
        std = np.unique(ss.price_move[:27])
        np.testing.assert_allclose(std, rng * np.arange(-4, 5) / 4, rtol=0, atol=1e-15)
        assert list(ss.vol_dir[:27]) == [1, 0, -1] * 9
        moves = ss.price_move[27:]
        np.testing.assert_array_equal(moves, [-0.66, -0.33, 0.50, 1.00, 2.00, 3.00, 4.00, 5.00])
        np.testing.assert_allclose(ss.weight[27:], rng / np.abs(moves) * (1 + moves) / (1 + np.sign(moves) * rng),
                                   rtol=1e-15)
        np.testing.assert_allclose(ss.dampener_usd[27:], (np.abs(moves) / rng - 1) * damp, rtol=1e-15)
        p = m.params(und)
        assert (p.vol_shock.up, p.vol_shock.down, p.vol_shock.min_vol_up) == (up, 0.25, 0.5)
        assert (p.vol_shock.short_power, p.vol_shock.long_power) == (0.30, 0.13)
        assert p.delta_shock.threshold_usd == 20e6 and p.delta_shock.max_delta_shock == 0.10
    assert m.params("BTC").delta_shock.m_inc == 0.00005 and m.params("ETH").delta_shock.m_inc == 0.000004
    # in USD risk the extended weights are range/|move| (no coin conversion)
    ss = deribit_pm("usd").scenario_grid("BTC")
    np.testing.assert_allclose(ss.weight[27:], 0.16 / np.abs(ss.price_move[27:]), rtol=1e-15)


def test_deribit_delta_shock_formula():
    """min(max(N - 20M, 0) * |delta| * m_inc, 10 % N) on the net delta notional N (USD)."""
    mk, table = _deribit_june_2024()
    engine = MarginEngine(mk, table, deribit_pm("usd"))
    S, P = 66_000.0, 66_050.0
    for usd in (15e6, 25e6, 400e6):
        res = engine.margin_many(_one(table, [("BTC-PERPETUAL", usd / 10.0)]))
        delta = usd / P
        N = delta * S
        expect = min(max(N - 20e6, 0.0) * delta * 0.00005, 0.10 * N)
        np.testing.assert_allclose(res.delta_shock[0, 0], expect, rtol=1e-12, atol=1e-9)
    assert expect == 0.10 * N  # the cap binds for the largest


@pytest.mark.parametrize("dte, direction", [(7, 1), (7, -1), (30, 1), (45, 1), (90, -1), (0.1, 1), (400, 1)])
def test_vol_shock_formula(dte, direction):
    """sigma_up = max(sigma (1 + up (30/max(DTE,1))^p), 0.5), sigma_down = sigma max(0, 1 - down (...)^p),
    p = 0.30 if DTE <= 30 else 0.13 (Deribit/Derive/Paradex form)."""
    shock = deribit_pm().params("BTC").vol_shock
    for sigma in (0.2, 0.6, 1.4):
        p = 0.30 if dte <= 30 else 0.13
        scale = (30.0 / max(dte, 1.0)) ** p
        expect = max(sigma * (1 + 0.5 * scale), 0.5) if direction > 0 else sigma * max(0.0, 1 - 0.25 * scale)
        got = float(shock.shocked(np.array([sigma]), np.array([dte / 365.0]), direction)[0])
        assert got == pytest.approx(expect, rel=1e-14)
    assert VolShock(up=0.1, down=0.1, mode="absolute").shocked(np.array([0.05]), np.array([0.1]), -1)[0] == 0.0


# ------------------------------------------------------------------------------------------ Paradex
def test_paradex_weights_and_grid():
    m = paradex_pm()
    ss = m.scenario_grid("BTC")
    assert len(ss) == 24 and m.mm_factor == 0.5 and m.im_factor == 1.0
    std, ext = slice(0, 16), slice(16, 24)
    assert np.all(ss.weight[std] == 1.0)
    edge = np.isclose(np.abs(ss.price_move[std]), 0.16)
    assert edge.sum() == 2 and np.all(ss.vol_dir[std][edge] == 1)  # +-16 % with vol up only
    assert sorted(set(np.round(ss.price_move[std], 12))) == pytest.approx([-0.16, -0.12, -0.08, -0.04, 0, 0.04, 0.08,
                                                                          0.12, 0.16])
    published = [24, 48, 32, 16, 8, 5.33, 4, 3.2]  # % (rounded in the source)
    np.testing.assert_array_equal(ss.price_move[ext], [-0.66, -0.33, 0.5, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(ss.weight[ext], 0.16 / np.abs(ss.price_move[ext]), rtol=1e-15)
    # each published percentage is 0.16/|move| rounded to the digits shown (24.24 -> 24, 48.48 -> 48)
    for w, pub in zip(100 * ss.weight[ext], published):
        digits = len(str(pub).split(".")[1]) if "." in str(pub) else 0
        assert round(w, digits) == pub
    assert np.all(ss.vol_dir[ext] == 1) and np.all(ss.dampener_usd == 0)
    p = m.params("BTC").vol_shock
    assert (p.up, p.down) == (0.40, 0.22)


# ------------------------------------------------------------------------------------------ OKX
def _okx_ltc(mr4=8.16, mr7=7.14, mr1=183.51):
    """An LTC risk unit built so the engine's components are the example's MR1, MR4, MR6, MR7.

    LTC tier (Jan 2025): spot shocks 0, +-6, +-12, +-18 %; extreme +-36 % counted at 50 %; basis 15 %
    annualised. A long linear future of notional X loses 0.18 X at -18 % (MR1) and 0.5 x 0.36 X at
    -36 % (MR6 = MR1, as in the example); its expiry is set so the basis charge (X (exp(0.15 T) - 1))
    is MR4; the raw minimum-charge rate so MR7 = rate x X.
    """
    X = mr1 / 0.18
    T = math.log1p(mr4 / X) / 0.15
    table = InstrumentTable.from_names(["LTC_USDC-27DEC24"])
    now = int(table.expiry_ms[0]) - int(round(T * MS_PER_YEAR))
    mk = MarketSnapshot(now, {"LTC": UnderlyingMarket(100.0, ForwardCurve.from_rate(100.0, 0.0))})
    base = okx_pm()
    model = base.with_params("LTC", price_range=0.18, steps_per_side=3, extreme_moves=(-0.36, 0.36),
                             roll_shock=RollShock(annualised_move_risk=0.15),
                             size_charge=replace(base.default.size_charge, rate=mr7 / X))
    engine = MarginEngine(mk, table, model)
    return engine, _one(table, [("LTC_USDC-27DEC24", X / 100.0)])


def test_okx_ltc_worked_example():
    engine, book = _okx_ltc()
    res = engine.margin_many(book)
    np.testing.assert_allclose(res.scan[0, 0], 183.51, rtol=1e-12)  # max(MR1, MR6)
    np.testing.assert_allclose(res.roll_shock[0, 0], 8.16, rtol=1e-9)  # MR4
    np.testing.assert_allclose(res.floor[0, 0], 7.14, rtol=1e-12)  # MR7
    # MR1 and MR6 are both 183.51 and enter through a max, not a sum
    ss = engine.model.scenario_grid("LTC")
    pnl = engine.pnl_matrix[0] * book.quantity[0] * ss.weight
    mr1 = -pnl[np.abs(ss.price_move) <= 0.18 + 1e-12].min()
    mr6 = -pnl[np.isclose(np.abs(ss.price_move), 0.36)].min()
    np.testing.assert_allclose([mr1, mr6], [183.51, 183.51], rtol=1e-12)
    mmr, imr = res.maintenance_margin[0], res.initial_margin[0]
    np.testing.assert_allclose(mmr, max(max(183.51, 183.51) + 8.16, 7.14), rtol=1e-9)
    assert 191.66 - 0.005 <= mmr <= 191.67 + 0.005  # published 191.66 (from unrounded parts)
    assert imr == pytest.approx(1.3 * mmr, rel=1e-15)
    assert abs(imr - 249.16) < 0.015  # published 249.16 = 1.3 x 191.66


def test_okx_minimum_charge_binds_through_the_max():
    engine, book = _okx_ltc(mr7=250.0)
    res = engine.margin_many(book)
    np.testing.assert_allclose(res.maintenance_margin[0], 250.0, rtol=1e-12)  # MR7 > max(MR1, MR6) + MR4
    np.testing.assert_allclose(res.initial_margin[0], 325.0, rtol=1e-12)


def test_okx_grid_and_tiers():
    m = okx_pm()
    ss = m.scenario_grid("BTC")
    assert len(ss) == 7 * 3 + 2 and m.im_factor == 1.3 and m.mm_factor == 1.0
    np.testing.assert_allclose(np.unique(ss.price_move[:21]), [-0.12, -0.08, -0.04, 0, 0.04, 0.08, 0.12], atol=1e-15)
    np.testing.assert_array_equal(ss.price_move[21:], [-0.24, 0.24])
    assert np.all(ss.weight[21:] == 0.5) and np.all(ss.vol_dir[21:] == 0)
    sc = m.params("BTC").size_charge
    assert sc.bounds_usd == (250e3, 500e3, 1e6, 2e6, 3e6, 4e6)
    assert sc.multipliers == (1, 2, 4, 6, 8, 10, 12)
    assert m.params("ETH").roll_shock.annualised_move_risk == 0.05


# ------------------------------------------------------------------------------------------ SPAN
def test_span_sixteen_scenarios_settable_extremes():
    ss = cme_span().scenario_grid("ES")
    assert len(ss) == 16
    expect = sorted([s * k / 3 for k in (1, 2, 3) for s in (-1, 1) for _ in (1, -1)] + [0, 0])
    np.testing.assert_allclose(np.sort(ss.price_move[:14] / 0.30), expect, atol=1e-12)
    assert sorted(ss.vol_dir[:14]) == [-1] * 7 + [1] * 7 and np.all(ss.weight[:14] == 1)
    np.testing.assert_allclose(ss.price_move[14:], [0.9, -0.9])
    assert np.all(ss.weight[14:] == 0.33) and np.all(ss.vol_dir[14:] == 0)
    nse = cme_span(price_scan_range=0.1, extreme_multiplier=2.0, cover_fraction=0.35).scenario_grid("X")
    np.testing.assert_allclose(nse.price_move[14:], [0.2, -0.2])
    assert np.all(nse.weight[14:] == 0.35)
    assert cme_span().default.time_shift_days == 1.0


def test_span_cme_worked_example_extreme_is_0_99_of_full_range():
    """Scenario 15 of a long future = 3 x range moved, 33 % covered = 0.99 x the full-range loss."""
    mk = default_market()
    table = InstrumentTable.from_names(["BTC_USDC-25DEC26", "BTC-25DEC26-60000-P", "BTC-25DEC26-92000-C"])
    model = cme_span()
    engine = MarginEngine(mk, table, model)
    ss = model.scenario_grid("BTC")
    row = engine.pnl_matrix[0]
    full_down = row[np.isclose(ss.price_move, -0.30)][0]
    ext_down = row[np.isclose(ss.price_move, -0.90)][0] * ss.weight[np.isclose(ss.price_move, -0.90)][0]
    np.testing.assert_allclose(ext_down / full_down, 0.99, rtol=1e-12)
    res = engine.margin_many(_one(table, [("BTC_USDC-25DEC26", 1.0)]))
    np.testing.assert_allclose(res.scan[0, 0], -full_down, rtol=1e-12)
    # next-day revaluation: the option rows are repriced one day closer to expiry
    T = float(mk.year_fraction(table.expiry_ms[2]))
    F = float(mk["BTC"].forward(T))
    vol = float(mk["BTC"].vol_surface.implied_vol(92000.0, T, F))
    up0 = int(np.flatnonzero((ss.price_move == 0) & (ss.vol_dir == 1))[0])
    expect = (margin_ref.black76(F, 92000.0, vol + 0.10, T - 1 / 365, 1) - margin_ref.black76(F, 92000.0, vol, T, 1)) / F
    np.testing.assert_allclose(engine.pnl_matrix[2, up0], expect * mk["BTC"].index_price, rtol=1e-10)
    # short option minimum: a far-OTM short put is charged at least SOM
    som = engine.with_model(cme_span(short_option_minimum=0.05))
    r = som.margin_many(_one(table, [("BTC-25DEC26-60000-P", -2.0)]))
    np.testing.assert_allclose(r.floor[0, 0], 0.05 * 2 * mk["BTC"].index_price, rtol=1e-12)
    assert r.initial_margin[0] == pytest.approx(max(r.scan[0, 0], r.floor[0, 0]), rel=1e-12)


# ------------------------------------------------------------------------------------------ others
def test_default_preset_and_registry():
    m = dpm_default()
    ss = m.scenario_grid("BTC")
    assert len(ss) == 63
    np.testing.assert_allclose(np.unique(ss.price_move), np.arange(-10, 11) * 0.02, atol=1e-15)
    assert m.correlation == {("BTC", "ETH"): 0.8} and dpm_default(None).correlation is None
    assert m.mm_factor == 0.8
    for name in PRESETS:
        mod = preset(name)
        assert isinstance(mod, RiskMatrixModel) and mod.source
    with pytest.raises(InvalidInputError, match="unknown preset 'binance'"):
        preset("binance")


def test_with_params_changes_one_underlying_only():
    m = deribit_pm().with_params("ETH", price_range=0.2)
    assert m.params("ETH").price_range == 0.2 and m.params("BTC").price_range == 0.16
    assert deribit_pm().params("ETH").price_range == 0.18  # the preset itself is untouched
