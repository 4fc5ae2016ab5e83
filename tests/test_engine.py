"""Tests of dpm.engines.margin.MarginEngine against the slow pure-Python reference and by its properties.

* the engine equals ``tests/reference/margin_ref.py`` (every preset, USD and coin risk currency, sticky
  strike and sticky moneyness, with and without correlation) on hundreds of random accounts;
* a perfectly hedged account has only its contingency charges (scan ~ 0);
* positive homogeneity in size when the add-ons are homogeneous, and its documented failures
  (dampener, delta shock, size tiers);
* subadditivity of the scan per underlying (and its documented failure with the dampener);
* what-if equals a full recompute; results are bit-identical for every ``workers``;
* market updates build a new engine while other threads keep the old one;
* bad inputs raise clear errors.
"""
from __future__ import annotations

import copy
import math
import threading
import zlib
from dataclasses import replace

import numpy as np
import pytest
from reference import margin_ref

from dpm.engines.margin import MarginEngine
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError, UnknownInstrumentError
from dpm.market.sample import default_instruments, default_market
from dpm.market.snapshot import ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.table import InstrumentTable
from dpm.models import (
    DeltaShock,
    RiskMatrixModel,
    SizeCharge,
    UnderlyingParams,
    cme_span,
    deribit_pm,
    dpm_default,
    okx_pm,
    paradex_pm,
)
from dpm.models.calibration.correlation import check_correlation
from dpm.portfolio.accounts import Account, AccountBook
from dpm.portfolio.sample import generate_accounts

CURRENCIES = ("BTC", "ETH", "USDC", "USDT")


# ------------------------------------------------------------------------------------------ data
def _names() -> list[str]:
    names = ["BTC-PERPETUAL", "BTC_USDC-PERPETUAL", "BTC-SPOT", "BTC-4DEC26", "BTC-25DEC26", "BTC-26MAR27",
             "BTC_USDC-25DEC26", "ETH-PERPETUAL", "ETH_USDC-PERPETUAL", "ETH-SPOT", "ETH-25DEC26",
             "ETH-26MAR27"]
    for exp in ("28NOV26", "4DEC26", "25DEC26", "26MAR27", "31DEC27"):
        for k in (70000, 85000, 92000, 100000, 120000):
            names += [f"BTC-{exp}-{k}-C", f"BTC-{exp}-{k}-P"]
    names += ["BTC-26MAR27-50000-P"]
    for k in (80000, 92000, 105000):
        names += [f"BTC_USDC-25DEC26-{k}-C", f"BTC_USDC-25DEC26-{k}-P"]
    for exp in ("29NOV26", "25DEC26", "26MAR27"):
        for k in (2500, 3000, 3100, 3500, 4200):
            names += [f"ETH-{exp}-{k}-C", f"ETH-{exp}-{k}-P"]
    for k in (3000, 3300):
        names += [f"ETH_USDC-26MAR27-{k}-C", f"ETH_USDC-26MAR27-{k}-P"]
    return names


@pytest.fixture(scope="module")
def market():
    return default_market()


@pytest.fixture(scope="module")
def table():
    return InstrumentTable.from_names(_names())


def _quantity(rng, table, i):
    """A random signed size in the instrument's units (coins for options, USD contracts for inverse)."""
    kind, inv, und = int(table.kind[i]), bool(table.inverse[i]), int(table.underlying[i])
    coins = rng.uniform(0.1, 25.0) * (30.0 if und == 1 else 1.0)  # ETH sizes ~ BTC sizes in USD
    if kind != 3 and inv:
        price = 92000.0 if und == 0 else 3100.0
        q = round(coins * price / float(table.contract_size[i]))
    else:
        q = round(coins, 3)
    return q * (1 if rng.random() < 0.5 else -1)


def random_book(table, n, seed, whales=3):
    """``n`` random accounts over both underlyings and every instrument kind, plus a few huge ones."""
    rng = np.random.default_rng(seed)
    und = np.asarray(table.underlying)
    acc, inst, qty = [], [], []
    for a in range(n):
        mode = rng.integers(3)  # BTC only, ETH only, both
        pool = np.flatnonzero(und == mode) if mode < 2 else np.arange(len(table))
        k = int(rng.integers(1, 11))
        for i in rng.choice(pool, size=min(k, pool.size), replace=False):
            acc.append(a)
            inst.append(int(i))
            qty.append(_quantity(rng, table, int(i)))
    # whales: large directional perpetual + short options (delta shock, size tiers, dampener bite)
    names = list(table.name)
    for w in range(whales):
        a = n + w
        for nm, q in (("BTC-PERPETUAL", 3.0e6 * (w + 1)), ("BTC-26MAR27-50000-P", -400.0 * (w + 1)),
                      ("ETH_USDC-PERPETUAL", -4000.0 * (w + 1))):
            acc.append(a)
            inst.append(names.index(nm))
            qty.append(q)
    N = n + whales
    coll = np.round(rng.uniform(0, 1, (N, len(CURRENCIES))) * np.array([5.0, 80.0, 2e5, 1e5]), 2)
    coll[rng.random((N, len(CURRENCIES))) < 0.4] = 0.0
    return AccountBook.from_arrays(np.array(acc), np.array(inst), np.array(qty, dtype=float), table,
                                   collateral=coll, currencies=CURRENCIES, n_accounts=N)


def _model(preset: str) -> RiskMatrixModel:
    """Presets, with their optional add-ons switched on so every code path is exercised."""
    if preset == "deribit":
        return deribit_pm("coin")
    if preset == "okx":
        m = okx_pm()
        for u in ("BTC", "ETH"):  # MR7 raw rate is not published: a documented assumption here
            m = m.with_params(u, size_charge=replace(m.params(u).size_charge, rate=0.02))
        return m
    if preset == "span":
        return cme_span(short_option_minimum=0.02)
    if preset == "paradex":
        return paradex_pm()
    m = dpm_default(correlation=None)
    # a vol-up floor above most ETH vols, so the floor branch of the vol shock is exercised too
    m = m.with_params("ETH", vol_shock=replace(m.params("ETH").vol_shock, min_vol_up=0.9))
    return replace(m, haircuts={"BTC": 0.05, "ETH": 0.1, "USDT": 0.01})


def _gross_usd(book, a, table, market):
    """USD scale of an account (gross notional), for absolute tolerances on near-hedged accounts."""
    lo, hi = book.indptr[a], book.indptr[a + 1]
    g = 0.0
    for k in range(lo, hi):
        i = int(book.instrument_idx[k])
        S = market[table.underlyings[int(table.underlying[i])]].index_price
        cs = float(table.contract_size[i])
        inverse_lin = bool(table.inverse[i]) and int(table.kind[i]) != 3
        g += abs(float(book.quantity[k])) * (cs if inverse_lin else cs * S)
    return g


def _check_against_reference(engine, book, ref, correlations):
    table, market, model = engine.instruments, engine.market, engine.model
    res = engine.margin_many(book, workers=2)
    unds = list(engine.underlyings)
    for a, r in enumerate(ref):
        tol = dict(rtol=1e-10, atol=1e-12 * _gross_usd(book, a, table, market) + 1e-9)
        np.testing.assert_allclose(res.initial_margin[a], r["im"], **tol)
        np.testing.assert_allclose(res.maintenance_margin[a], r["mm"], **tol)
        np.testing.assert_allclose(res.equity[a], r["equity"], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(res.collateral_value[a], r["collateral"], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(res.position_value[a], r["value"], rtol=1e-12, atol=1e-9)
        if math.isfinite(r["margin_ratio"]) and r["margin_ratio"] > 0 and r["mm"] > tol["atol"]:
            np.testing.assert_allclose(res.margin_ratio[a], r["margin_ratio"], rtol=1e-9)
        for j, u in enumerate(unds):
            for key, col in (("L", res.charge), ("scan", res.scan), ("roll", res.roll_shock),
                             ("dshock", res.delta_shock), ("floor", res.floor)):
                np.testing.assert_allclose(col[a, j], r[key][u], **tol, err_msg=f"{key} {u} account {a}")
            # the engine's binding scenario is one where the reference sees the worst loss
            w = int(res.worst_scenario[a, j])
            S = market[u].index_price if model.risk_currency == "coin" else 1.0
            if r["scan"][u] > 10 * tol["atol"]:
                assert w >= 0
                np.testing.assert_allclose(-r["weighted"][u][w] * S, r["scan"][u], **tol)
    # correlation variants: only the combine changes, so reuse the reference's charges L_u
    for corr in correlations:
        m2 = replace(model, correlation=corr, correlation_order=("ETH", "BTC") if not isinstance(corr, dict) else (),
                     aggregation="sqrt_corr")
        e2 = engine.with_model(m2)
        res2 = e2.margin_many(book)
        for a, r in enumerate(ref):
            expect = m2.im_factor * margin_ref.combine(m2, unds, [r["L"][u] for u in unds])
            np.testing.assert_allclose(res2.initial_margin[a], expect, rtol=1e-10,
                                       atol=1e-12 * _gross_usd(book, a, table, market) + 1e-9)
        # offsets can only lower the total (every rho <= 1)
        assert np.all(res2.risk <= res.risk * (1 + 1e-12) + 1e-9)


@pytest.mark.parametrize("sticky", ["strike", "moneyness"])
@pytest.mark.parametrize("ccy", ["usd", "coin"])
@pytest.mark.parametrize("preset", ["deribit", "okx", "span", "paradex", "default"])
def test_engine_equals_reference(preset, ccy, sticky, market, table):
    model = replace(_model(preset), risk_currency=ccy, sticky=sticky)
    engine = MarginEngine(market, table, model)
    book = random_book(table, 40, seed=zlib.crc32(f"{preset}-{ccy}-{sticky}".encode()))
    ref = margin_ref.margin_book(model, market, book)
    # add-ons really are exercised somewhere in the sample
    L = np.array([[r["L"][u] for u in ("BTC", "ETH")] for r in ref])
    assert (L > 0).sum() > 40
    col = {k: np.array([[r[k][u] for u in ("BTC", "ETH")] for r in ref]) for k in ("roll", "dshock", "floor")}
    if preset == "deribit":
        assert (col["dshock"] > 0).any() and (col["roll"] > 0).any()
    if preset in ("okx", "span"):
        assert np.isclose(L, col["floor"]).any() and (col["floor"] > 0).any()  # the floor binds somewhere
    _check_against_reference(engine, book, ref, [{("BTC", "ETH"): 0.8},
                                                 np.array([[1.0, -0.3], [-0.3, 1.0]])])


@pytest.mark.parametrize("ccy", ["usd", "coin"])
def test_user_scenarios_on_one_underlying(ccy, market, table):
    """User-supplied scenarios replace ETH's grid (fewer scenarios than BTC: padded columns unused)."""
    from dpm.models.scenarios import ScenarioGrid

    user = ScenarioGrid.user([-0.3, -0.1, 0.1, 0.25, 0.0], [1, 0, -1, 1, -1], weight=[0.5, 1, 1, 0.7, 1],
                            labels=["crash", "dip", "rally", "squeeze", "vol crush"])
    model = replace(deribit_pm(ccy), scenario_sets={"ETH": user})
    engine = MarginEngine(market, table, model)
    assert engine.scenario_labels["ETH"][:5] == ("crash", "dip", "rally", "squeeze", "vol crush")
    assert set(engine.scenario_labels["ETH"][5:]) == {"padding"}
    book = random_book(table, 30, seed=77)
    _check_against_reference(engine, book, margin_ref.margin_book(model, market, book), [])


def test_sticky_moneyness_differs_from_sticky_strike(market, table):
    book = random_book(table, 30, seed=5, whales=0)
    a = MarginEngine(market, table, dpm_default()).margin_many(book)
    b = MarginEngine(market, table, replace(dpm_default(), sticky="moneyness")).margin_many(book)
    assert np.mean(~np.isclose(a.initial_margin, b.initial_margin, rtol=1e-6)) > 0.3


def test_reference_on_generated_sample_book(market):
    """Realistic generated accounts (market makers with up to ~200 positions) on the sample listing."""
    tab = default_instruments()
    book = generate_accounts(25, tab, seed=11)
    for model in (deribit_pm("coin"), dpm_default()):
        engine = MarginEngine(market, tab, model)
        ref = margin_ref.margin_book(model, market, book)
        _check_against_reference(engine, book, ref, [])


def test_addons_exercised(market, table):
    """The whales of the random book trigger the delta shock (Deribit), size tiers (OKX) and SOM (SPAN)."""
    book = random_book(table, 0, seed=1, whales=3)
    d = MarginEngine(market, table, deribit_pm("usd")).margin_many(book)
    assert (d.delta_shock[:, 0] > 0).all()
    o = MarginEngine(market, table, _model("okx")).margin_many(book)
    assert (o.floor[:, 0] > 0).all()
    s = MarginEngine(market, table, _model("span")).margin_many(book)
    assert (s.floor[:, 0] > 0).all()


# ------------------------------------------------------------------------------------------ hedges
def _book(table, positions, collateral=None, currencies=CURRENCIES):
    names = list(table.name)
    inst = [names.index(n) for n, _ in positions]
    qty = [float(q) for _, q in positions]
    coll = None if collateral is None else np.array([[collateral.get(c, 0.0) for c in currencies]])
    return AccountBook.from_arrays(np.zeros(len(inst), dtype=np.int64), inst, qty, table, collateral=coll,
                                   currencies=currencies, n_accounts=1)


@pytest.mark.parametrize("preset", ["deribit", "okx", "span", "paradex", "default"])
def test_linear_perfect_hedge_has_only_contingency_charges(preset, market, table):
    """Long linear future + short linear synthetic (long put, short call, same strike/expiry).

    Put-call parity C - P = F - K makes the scenario P&L zero in every scenario (any vol, any time
    shift), and the net delta of the expiry is zero, so only the floors remain.
    """
    model = replace(_model(preset), risk_currency="usd")
    engine = MarginEngine(market, table, model)
    book = _book(table, [("BTC_USDC-25DEC26", 2.0), ("BTC_USDC-25DEC26-92000-P", 2.0),
                         ("BTC_USDC-25DEC26-92000-C", -2.0)])
    res = engine.margin_many(book)
    assert res.scan[0, 0] < 1e-9 * 2 * 92000
    assert res.roll_shock[0, 0] < 1e-9 * 92000 and res.delta_shock[0, 0] == 0
    # the only charge left is the contingency floor (SOM on the short call / size charge), if any
    np.testing.assert_allclose(res.initial_margin[0], model.im_factor * res.floor[0, 0], rtol=1e-12, atol=1e-8)
    if preset == "span":  # SOM 2 % of one underlying per short option
        np.testing.assert_allclose(res.floor[0, 0], 0.02 * 2 * 92000.0, rtol=1e-12)
    if preset == "okx":  # size charge on the gross cash notional of the three legs, at their forward
        T = float(market.year_fraction(table.expiry_ms[list(table.name).index("BTC_USDC-25DEC26")]))
        np.testing.assert_allclose(res.floor[0, 0], 0.02 * 6 * float(market["BTC"].forward(T)), rtol=1e-12)


def test_linear_perp_hedge_scaled_by_forward(market, table):
    """The linear perpetual hedges the synthetic when its quantity is F/P (forward over perp mark)."""
    engine = MarginEngine(market, table, deribit_pm("usd"))
    F = float(market["BTC"].forward(engine.market.year_fraction(table.expiry_ms[list(table.name).index(
        "BTC_USDC-25DEC26-92000-C")])))
    P = market["BTC"].perpetual_price
    book = _book(table, [("BTC_USDC-PERPETUAL", F / P), ("BTC_USDC-25DEC26-92000-P", 1.0),
                         ("BTC_USDC-25DEC26-92000-C", -1.0)])
    res = engine.margin_many(book)
    assert res.scan[0, 0] < 1e-9 * 92000
    # the perp and the option expiry sit in different roll buckets: the roll shock is the only charge
    assert res.roll_shock[0, 0] > 0
    np.testing.assert_allclose(res.initial_margin[0], res.roll_shock[0, 0], rtol=1e-12)


def test_inverse_perfect_hedge_in_coin(market, table):
    """Inverse equivalent, coin risk: long K USD of inverse future + long put, short call (1 coin each).

    Coin P&L: K (1/F - 1/F1) + K (1/F1 - 1/F) = 0 in every scenario; net coin delta K/F - K/F = 0.
    In USD risk the same book is *not* hedged: its constant coin value moves with the coin price.
    """
    K = 100000.0
    pos = [("BTC-25DEC26", K / 10.0), ("BTC-25DEC26-100000-P", 1.0), ("BTC-25DEC26-100000-C", -1.0)]
    book = _book(table, pos)
    coin = MarginEngine(market, table, deribit_pm("coin")).margin_many(book)
    assert coin.scan[0, 0] < 1e-9 * K
    assert coin.roll_shock[0, 0] < 1e-9 * K
    assert coin.initial_margin[0] < 1e-8 * K
    usd = MarginEngine(market, table, deribit_pm("usd")).margin_many(book)
    assert usd.scan[0, 0] > 100.0


def test_inverse_calendar_hedge_leaves_roll_shock(market, table):
    """Synthetic on 25DEC26 hedged with the 26MAR27 future: scan 0, only the two expiries' roll shocks."""
    model = deribit_pm("coin")
    engine = MarginEngine(market, table, model)
    names = list(table.name)
    T1 = engine.market.year_fraction(table.expiry_ms[names.index("BTC-25DEC26")])
    T2 = engine.market.year_fraction(table.expiry_ms[names.index("BTC-26MAR27")])
    F1, F2 = (float(market["BTC"].forward(t)) for t in (T1, T2))
    K = 92000.0
    book = _book(table, [("BTC-26MAR27", 3.0 * K / F1 * F2 / 10.0), ("BTC-25DEC26-92000-P", 3.0),
                         ("BTC-25DEC26-92000-C", -3.0)])
    res = engine.margin_many(book)
    S = market["BTC"].index_price
    assert res.scan[0, 0] < 1e-9 * S
    roll = model.params("BTC").roll_shock
    expect = 3.0 * K / F1 * (float(roll.rate(T1)) + float(roll.rate(T2))) * S
    np.testing.assert_allclose(res.roll_shock[0, 0], expect, rtol=1e-12)
    np.testing.assert_allclose(res.initial_margin[0], expect, rtol=1e-12)
    np.testing.assert_allclose(res.maintenance_margin[0], 0.8 * expect, rtol=1e-12)


# ------------------------------------------------------------------------------------------ homogeneity
def _acc(book):
    """Account index of every position of a CSR book."""
    return np.repeat(np.arange(len(book)), np.diff(book.indptr))


def _scaled(book, c):
    return AccountBook.from_arrays(_acc(book), book.instrument_idx, c * book.quantity, book.table,
                                   account_ids=book.account_id, collateral=book.collateral,
                                   currencies=book.currencies)


def _homogeneous_models():
    der = deribit_pm("coin")
    for u in ("BTC", "ETH"):  # dampener off; the delta shock is off below its 20M USD threshold
        der = der.with_params(u, extended_dampener_usd=0.0, delta_shock=DeltaShock())
    okx = okx_pm()
    for u in ("BTC", "ETH"):  # a flat size charge (one tier) is homogeneous
        okx = okx.with_params(u, size_charge=SizeCharge(rate=0.02))
    return [der, replace(der, risk_currency="usd", sticky="moneyness"), okx,
            cme_span(short_option_minimum=0.02), paradex_pm(), dpm_default(0.8)]


@pytest.mark.parametrize("k", range(6))
def test_positively_homogeneous(k, market, table):
    model = _homogeneous_models()[k]
    engine = MarginEngine(market, table, model)
    book = random_book(table, 40, seed=100 + k, whales=0)
    base = engine.margin_many(book)
    for c in (0.37, 4.0, 25.0):
        res = engine.margin_many(_scaled(book, c))
        atol = np.array([1e-11 * c * _gross_usd(book, a, table, market) for a in range(len(book))])
        assert np.all(np.abs(res.initial_margin - c * base.initial_margin) <= 1e-11 * c * base.initial_margin + atol)
        assert np.all(np.abs(res.scan - c * base.scan) <= 1e-11 * c * base.scan + atol[:, None])


def test_not_homogeneous_by_design(market, table):
    """The dampener (a fixed USD amount), the delta shock (quadratic above a threshold) and the size
    tiers (step multipliers) make margin grow faster than size: documented concentration charges."""
    # dampener: a short far-OTM put's tail loss is forgiven for small sizes only
    book = _book(table, [("BTC-26MAR27-50000-P", -1.0)])
    der = MarginEngine(market, table, deribit_pm("usd"))
    small, big = der.margin_many(book), der.margin_many(_scaled(book, 2000.0))
    assert big.initial_margin[0] > 2000.0 * small.initial_margin[0] * 1.05
    no_damp = der.with_model(der.model.with_params("BTC", extended_dampener_usd=0.0))
    s2, b2 = no_damp.margin_many(book), no_damp.margin_many(_scaled(book, 2000.0))
    np.testing.assert_allclose(b2.initial_margin[0], 2000.0 * s2.initial_margin[0], rtol=1e-12)
    # delta shock: 10M USD of perpetual is below the 20M threshold, 40M is above it
    perp = _book(table, [("BTC-PERPETUAL", 1.0e6)])
    p1, p4 = der.margin_many(perp), der.margin_many(_scaled(perp, 4.0))
    assert p1.delta_shock[0, 0] == 0 and p4.delta_shock[0, 0] > 0
    assert p4.initial_margin[0] > 4.0 * p1.initial_margin[0] * 1.01
    # size tiers: OKX's multiplier steps up with the raw charge
    okx = MarginEngine(market, table, _model("okx"))
    f1 = okx.margin_many(perp).floor[0, 0]
    f4 = okx.margin_many(_scaled(perp, 4.0)).floor[0, 0]
    f25 = okx.margin_many(_scaled(perp, 25.0)).floor[0, 0]
    assert f1 == pytest.approx(0.02 * 1.0e7)  # raw 200k USD: first tier (x1)
    assert f4 == pytest.approx(0.02 * 4.0e7 * 4.0)  # raw 800k USD: 500k-1M tier (x4)
    assert f25 == pytest.approx(0.02 * 2.5e8 * 12.0)  # raw 5M USD: above the last bound (x12)


# ------------------------------------------------------------------------------------------ subadditivity
@pytest.mark.parametrize("k", range(5))
def test_scan_subadditive_without_dampener(k, market, table):
    models = _homogeneous_models()
    model = replace(models[[0, 1, 2, 3, 4][k]], correlation=None)
    engine = MarginEngine(market, table, model)
    A = random_book(table, 60, seed=300 + k, whales=0)
    B = random_book(table, 60, seed=400 + k, whales=0)
    # offsetting positions: for half the accounts, the negative of A's own positions times 0.2-1.5
    rng = np.random.default_rng(k)
    acc_a = _acc(A)
    sel = (rng.random(len(A)) < 0.5)[acc_a]
    inst_off = A.instrument_idx[sel]
    q_off = -A.quantity[sel] * rng.uniform(0.2, 1.5, sel.sum())
    Boff = AccountBook.from_arrays(acc_a[sel], inst_off, q_off, table, n_accounts=len(A))
    for other in (B, Boff):
        AB = AccountBook.from_arrays(np.concatenate([acc_a, _acc(other)]),
                                     np.concatenate([A.instrument_idx, other.instrument_idx]),
                                     np.concatenate([A.quantity, other.quantity]), table, n_accounts=len(A))
        ra, rb, rab = (engine.margin_many(x) for x in (A, other, AB))
        slack = 1e-10 * (ra.scan + rb.scan) + 1e-7
        assert np.all(rab.scan <= ra.scan + rb.scan + slack)
        assert np.all(rab.charge <= ra.charge + rb.charge + slack)
        assert np.all(rab.initial_margin <= ra.initial_margin + rb.initial_margin + slack.sum(axis=1))


def test_dampener_breaks_subadditivity(market, table):
    """Two identical short far-OTM put books whose tail loss the dampener forgives one at a time.

    The tail (-66 %) loss of one book equals the dampener exactly, so it is forgiven; the sum of two
    books loses twice that and only one dampener is deducted: scan(A + A) = dampener > 2 scan(A).
    """
    model = deribit_pm("usd")
    engine = MarginEngine(market, table, model)
    i = list(table.name).index("BTC-28NOV26-70000-P")
    labels = engine.scenario_labels["BTC"]
    s = labels.index("extended -66%")
    w = model.scenario_grid("BTC").weight[s]
    loss_per_coin = engine.pnl_matrix[i, s] * w  # short one put loses what the long put gains (USD)
    damp = model.scenario_grid("BTC").dampener_usd[s]
    q = damp / loss_per_coin  # tail loss of q short puts exactly equals the dampener
    A = _book(table, [("BTC-28NOV26-70000-P", -q)])
    AA = _scaled(A, 2.0)
    ra, raa = engine.margin_many(A), engine.margin_many(AA)
    assert raa.scan[0, 0] > 2.0 * ra.scan[0, 0] * 1.1  # super-additive: scan(A+A) > scan(A) + scan(A)
    assert labels[raa.worst_scenario[0, 0]] == "extended -66%"


# ------------------------------------------------------------------------------------------ what-if
@pytest.fixture(scope="module")
def sample_engine(market):
    return MarginEngine(market, default_instruments(), deribit_pm("coin"))


def _full(engine, book, a, orders):
    """Full recompute: the account's positions plus the orders, merged, margined from scratch."""
    lo, hi = book.indptr[a], book.indptr[a + 1]
    ids = engine.instruments.index_of([n for n, _ in orders]) if orders else np.zeros(0, np.int64)
    inst = np.concatenate([book.instrument_idx[lo:hi], ids])
    qty = np.concatenate([book.quantity[lo:hi], [q for _, q in orders]])
    nb = AccountBook.from_arrays(np.zeros(len(inst), np.int64), inst, qty, engine.instruments,
                                 collateral=book.collateral[a:a + 1], currencies=book.currencies, n_accounts=1)
    return engine.margin_many(nb), nb


def test_what_if_equals_full_recompute(sample_engine):
    engine = sample_engine
    book = generate_accounts(30, engine.instruments, seed=5)
    names = engine.instruments.name
    rng = np.random.default_rng(9)
    checked = 0
    for a in range(len(book)):
        state = engine.prepare(book, a)
        frozen = state.state.copy()
        lo, hi = book.indptr[a], book.indptr[a + 1]
        held = [(str(names[book.instrument_idx[k]]), float(book.quantity[k])) for k in range(lo, hi)]
        new = [str(names[i]) for i in rng.choice(len(names), 4, replace=False)]
        cases = [[(new[0], 3.0)], [(new[1], -250.0)]]
        if held:
            n0, q0 = held[int(rng.integers(len(held)))]
            cases += [[(n0, -q0)], [(n0, 0.5 * q0)]]  # close a position, add to it
            cases += [[(n, -q) for n, q in held]]  # close everything
            cases += [[(n0, -q0), (new[2], 7.5), (new[3], -2.0), (held[-1][0], 1.0), (new[2], -2.5)]]
        base = engine.margin_many(book.subset([a]))
        np.testing.assert_allclose(state.initial_margin, base.initial_margin[0], rtol=1e-12, atol=1e-12)
        for orders in cases:
            wi = state.what_if(orders)
            full, nb = _full(engine, book, a, orders)
            # cancellation when a position is closed leaves ~1e-16 of the gross notional
            gross = _gross_usd(nb, 0, engine.instruments, engine.market) + sum(abs(q) for _, q in orders) * 1e5
            np.testing.assert_allclose(wi.initial_margin, full.initial_margin[0], rtol=1e-12, atol=1e-12 * gross)
            np.testing.assert_allclose(wi.maintenance_margin, full.maintenance_margin[0], rtol=1e-12,
                                       atol=1e-12 * gross)
            assert wi.initial_margin_before == state.initial_margin
            assert wi.equity == state.equity  # premium paid at mark: equity unchanged by the orders
            assert wi.passes == (state.equity >= wi.initial_margin)
            # ids fast path and the filled state agree
            ids = engine.instruments.index_of([n for n, _ in orders])
            fast = state.what_if_ids(np.asarray(ids, np.int64), np.array([q for _, q in orders], dtype=float))
            assert fast == wi.initial_margin
            filled = state.apply(orders)
            np.testing.assert_allclose(filled.initial_margin, full.initial_margin[0], rtol=1e-12,
                                       atol=1e-12 * gross)
            # filled at mark: the premium moves from cash into position value, equity unchanged
            np.testing.assert_allclose(filled.equity, state.equity, rtol=1e-12, atol=1e-9)
            checked += 1
        np.testing.assert_array_equal(state.state, frozen)  # what-if never changes the cached state
    assert checked > 100


def test_what_if_inputs_and_forms(sample_engine):
    engine = sample_engine
    acct = Account("x", [("BTC-PERPETUAL", 1000.0), ("BTC-25DEC26-90000-C", -2.0)], {"BTC": 1.0})
    orders = {"BTC-25DEC26-90000-P": 2.0}
    before = dict(orders)
    wi1 = engine.what_if(acct, orders)
    wi2 = engine.what_if(acct, [(int(engine.instruments.index_of(["BTC-25DEC26-90000-P"])[0]), 2.0)])
    assert orders == before
    assert wi1 == wi2
    assert wi1.incremental_margin == wi1.initial_margin - wi1.initial_margin_before
    one = engine.margin(acct)
    assert one.initial_margin == pytest.approx(wi1.initial_margin_before, rel=1e-12)
    # an empty account: what-if of an order = margin of the order alone
    empty = engine.prepare(Account("e", [], {"USDC": 1000.0}))
    assert empty.initial_margin == 0.0 and empty.equity == 1000.0
    alone = engine.margin(Account("e", [("BTC-25DEC26-90000-P", -2.0)]))
    assert empty.what_if({"BTC-25DEC26-90000-P": -2.0}).initial_margin == pytest.approx(alone.initial_margin,
                                                                                         rel=1e-12)
    # ids and names resolve alike; by account id too
    book = AccountBook.from_accounts([acct], engine.instruments)
    assert engine.margin(book, "x").initial_margin == one.initial_margin


# ------------------------------------------------------------------------------------------ threads
def _fields(res):
    return [res.initial_margin, res.maintenance_margin, res.risk, res.equity, res.charge, res.scan,
            res.roll_shock, res.delta_shock, res.floor, res.worst_scenario, res.margin_ratio, res.contribution]


def test_workers_bit_identical(market):
    tab = default_instruments()
    book = generate_accounts(2500, tab, seed=21)
    engines = {w: MarginEngine(market, tab, deribit_pm("coin"), workers=w) for w in (1, 2, 3, 7)}
    ref_pnl = engines[1].pnl_matrix
    for w, e in engines.items():
        assert np.array_equal(e.pnl_matrix, ref_pnl)
    e = engines[1]
    base = e.margin_many(book, workers=1, contributions=True)
    for w in (2, 3, 7, None, -1):
        res = e.margin_many(book, workers=w, contributions=True)
        for x, y in zip(_fields(base), _fields(res)):
            assert np.array_equal(x, y)
    with pytest.raises(ValueError):
        e.margin_many(book, workers=0)


def test_with_market_new_engine_old_unchanged_and_thread_safe(market):
    tab = default_instruments()
    book = generate_accounts(1500, tab, seed=3)
    e0 = MarginEngine(market, tab, dpm_default())
    pnl0 = e0.pnl_matrix.copy()
    r0 = e0.margin_many(book)
    errors: list[str] = []
    new_results = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            r = e0.margin_many(book, workers=2)
            if not np.array_equal(r.initial_margin, r0.initial_margin):
                errors.append("old engine result changed while a new engine was being built")

    def writer():
        for k in range(1, 5):
            btc = market["BTC"]
            mk = market.with_underlying("BTC", btc.with_updates(index_price=btc.index_price * (1 + 0.03 * k),
                                                                perpetual_price=btc.perpetual_price * (1 + 0.03 * k)))
            e = e0.with_market(mk)
            new_results.append((mk, e.margin_many(book).initial_margin))

    t = threading.Thread(target=reader)
    t.start()
    writer()
    stop.set()
    t.join()
    assert not errors
    assert np.array_equal(e0.pnl_matrix, pnl0)
    assert e0.market is market and market["BTC"].index_price == 92000.0
    for mk, im in new_results:
        assert not np.array_equal(im, r0.initial_margin)
        assert np.array_equal(im, MarginEngine(mk, tab, dpm_default()).margin_many(book).initial_margin)


def test_model_arrays_are_memoised_per_model_and_equal_a_fresh_build(market):
    """The model-only aggregation inputs (add-on parameters, correlation, joint tables) are built
    once per model and reused by ``with_market``: a rebuild from empty caches gives the same bits,
    another model gets its own arrays, and the shared arrays are read-only."""
    from dpm.engines import margin as mg

    tab = default_instruments()
    book = generate_accounts(400, tab, seed=5)
    model = dpm_default()
    e0 = MarginEngine(market, tab, model)
    btc = market["BTC"]
    mk = market.with_underlying("BTC", btc.with_updates(index_price=btc.index_price * 1.01))
    cached = e0.with_market(mk)
    unds = tuple(tab.underlyings)
    fixed = mg._model_arrays(model, unds, e0.scenarios, e0._plan.Sp)
    assert mg._model_arrays(model, unds, e0.scenarios, e0._plan.Sp) is fixed
    assert all(not a.flags.writeable for a in fixed.values())
    got = cached.margin_many(book)
    mg._MODEL_ARRAY_CACHE.clear()
    mg._SCENARIO_CACHE.clear()
    fresh = MarginEngine(mk, tab, model).margin_many(book)
    for x, y in zip(_fields(got), _fields(fresh)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind in "fiu":
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8))
        else:
            assert x.tolist() == y.tolist()
    other = dpm_default(correlation=0.2)
    e2 = MarginEngine(market, tab, other)
    corr2 = mg._model_arrays(other, unds, e2.scenarios, e2._plan.Sp)["corr"]
    assert not np.array_equal(corr2, mg._model_arrays(model, unds, e0.scenarios, e0._plan.Sp)["corr"])


@pytest.mark.parametrize("sticky,scenario_price", [("strike", "mark"), ("moneyness", "mark"), ("strike", "index")])
def test_with_market_reuses_unchanged_rows_and_equals_a_fresh_engine(market, sticky, scenario_price, monkeypatch):
    """A chain of market updates (one underlying's prices, then the other's surface, a USD rate,
    the time) built with ``with_market``, which copies the P&L rows of instruments whose inputs did
    not change, equals fresh engines bit for bit; a one-underlying update revalues only that
    underlying's instruments, a new time every dated one."""
    from dpm.engines.plan import RevaluationPlan
    from dpm.market import snapshot as snapshot_mod

    tab = default_instruments()
    book = generate_accounts(300, tab, seed=8)
    model = replace(dpm_default(), sticky=sticky, scenario_price=scenario_price)
    computed = []
    orig = RevaluationPlan.revalue_into

    def spy(self, packed, c0, c1, out, workers, rows=None):
        computed.append(len(self) if rows is None else int(rows.sum()))
        return orig(self, packed, c0, c1, out, workers, rows)

    monkeypatch.setattr(RevaluationPlan, "revalue_into", spy)
    inputs_of = []  # the underlyings whose instrument inputs were computed, not taken from the cache
    orig_inputs = MarketSnapshot._underlying_inputs

    def spy_inputs(self, table, uname, *args):
        inputs_of.append(uname)
        return orig_inputs(self, table, uname, *args)

    monkeypatch.setattr(MarketSnapshot, "_underlying_inputs", spy_inputs)
    btc, eth = market["BTC"], market["ETH"]
    und = np.asarray(tab.underlying)
    n_btc = int((und == list(tab.underlyings).index("BTC")).sum())
    surf = eth.vol_surface
    steps = [
        market.with_underlying("BTC", btc.with_updates(index_price=btc.index_price * 1.002,
                                                      perpetual_price=btc.perpetual_price * 1.002)),
        None, None, None,
    ]
    steps[1] = steps[0].with_underlying("ETH", eth.with_updates(vol_surface=copy.copy(surf)))
    steps[2] = MarketSnapshot(steps[1].timestamp_ms, dict(steps[1].underlyings), {"USDC": 0.9998})
    steps[3] = steps[2].with_updates(timestamp_ms=steps[2].timestamp_ms + 60_000)
    # the perpetual's mark alone moves: its scenario price (the index) keeps its P&L row under
    # scenario_price="index", but its add-on delta is taken at the mark
    eth3 = steps[3]["ETH"]
    steps.append(steps[3].with_underlying("ETH", eth3.with_updates(perpetual_price=eth3.perpetual_price * 1.01)))
    engine = MarginEngine(market, tab, model)
    per_step, inputs_step = [], []
    for k, mk in enumerate(steps):
        computed.clear()
        inputs_of.clear()
        engine = engine.with_market(mk)
        per_step.append(sum(computed))
        inputs_step.append(sorted(inputs_of))
        snapshot_mod._INPUTS_CACHE.clear()  # the reference computes its instrument inputs afresh
        fresh = MarginEngine(mk, tab, model)
        assert np.array_equal(engine.pnl_matrix.view(np.uint8), fresh.pnl_matrix.view(np.uint8)), k
        for name in ("delta", "value"):  # add-on inputs, also copied for unchanged instruments
            x, y = getattr(engine._plan, name), getattr(fresh._plan, name)
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), (k, name)
        a, b = engine.margin_many(book), fresh.margin_many(book)
        assert np.array_equal(a.initial_margin.view(np.uint8), b.initial_margin.view(np.uint8))
    # [BTC moved, ETH's surface a new object (the same vols; moneyness re-reads it), USD rates, time]
    assert per_step[0] == n_btc
    assert inputs_step[:4] == [["BTC"], ["ETH"], [], ["BTC", "ETH"]]  # new BTC, new ETH, rates only, time
    assert per_step[1] == (len(tab) - n_btc if sticky == "moneyness" else 0)
    assert 0 < per_step[2] < len(tab)
    from dpm.market.specs import Kind

    assert per_step[3] == int((np.asarray(tab.kind) != Kind.PERPETUAL).sum())  # a perpetual's inputs keep
    assert per_step[4] == (0 if scenario_price == "index" else 2)  # the two ETH perpetuals


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_orders(sample_engine):
    state = sample_engine.prepare(Account("a", [("BTC-PERPETUAL", 10.0)]))
    with pytest.raises(UnknownInstrumentError, match="BTC-1JAN99"):
        state.what_if({"BTC-1JAN99": 1.0})
    with pytest.raises(UnknownInstrumentError, match="999999"):
        state.what_if([(999999, 1.0)])
    with pytest.raises(InvalidInputError, match="BTC-PERPETUAL.*nan"):
        state.what_if({"BTC-PERPETUAL": float("nan")})
    with pytest.raises(InvalidInputError, match="finite"):
        state.what_if({"BTC-PERPETUAL": float("inf")})
    with pytest.raises(InvalidTypeError, match="number"):
        state.what_if({"BTC-PERPETUAL": "ten"})


def test_nan_quantity_in_book(table):
    with pytest.raises(InvalidInputError, match="quantity.*nan"):
        AccountBook.from_arrays([0, 0], [0, 1], [1.0, float("nan")], table)


def _sol_market(market, with_sol=True):
    und = dict(market.underlyings)
    if with_sol:
        und["SOL"] = UnderlyingMarket(150.0, ForwardCurve.from_rate(150.0, 0.0))
    return MarketSnapshot(market.timestamp_ms, und)


def test_missing_underlying_market_names_account_and_instrument(market):
    tab = InstrumentTable.from_names(["BTC-PERPETUAL", "SOL-PERPETUAL"])
    engine = MarginEngine(market, tab, dpm_default())  # builds: SOL instruments are just unavailable
    ok = AccountBook.from_arrays([0], [0], [10.0], tab, account_ids=["fine"])
    assert engine.margin_many(ok).initial_margin[0] > 0
    bad = AccountBook.from_arrays([0, 1, 1], [0, 0, 1], [10.0, 1.0, 5.0], tab, account_ids=["fine", "acc-7"])
    with pytest.raises(MarketDataError, match=r"acc-7.*SOL-PERPETUAL.*SOL"):
        engine.margin_many(bad)
    with pytest.raises(MarketDataError, match="SOL-PERPETUAL"):
        engine.what_if(ok, {"SOL-PERPETUAL": 1.0})


@pytest.mark.parametrize("dtypes", [(np.int64, np.float64), (np.int32, np.float32)])
def test_what_if_ids_refuses_every_bad_order(market, dtypes):
    """The array fast path: a bad id, a quantity that is not finite, an instrument that cannot be revalued
    each raise naming the order (one C pass for good orders, the numpy checks for the message)."""
    tab = InstrumentTable.from_names(["BTC-PERPETUAL", "SOL-PERPETUAL", "ETH-PERPETUAL"])
    engine = MarginEngine(market, tab, dpm_default())
    st = engine.prepare(AccountBook.from_arrays([0], [0], [10.0], tab, account_ids=["a"]), 0)
    it, ft = dtypes
    good = st.what_if_ids(np.array([0, 2], it), np.array([1.0, -3.0], ft))
    assert good == pytest.approx(st.what_if({"BTC-PERPETUAL": 1.0, "ETH-PERPETUAL": -3.0}).initial_margin,
                                 rel=1e-15)
    cases = [([0, 3], [1.0, 1.0], UnknownInstrumentError, "id 3 at index 1"),
             ([-1], [1.0], UnknownInstrumentError, "id -1 at index 0"),
             ([0, 2], [1.0, np.nan], InvalidInputError, r"index 1 \('ETH-PERPETUAL'\) is nan"),
             ([2], [np.inf], InvalidInputError, r"index 0 \('ETH-PERPETUAL'\) is inf"),
             ([0, 1], [1.0, 1.0], MarketDataError, "SOL-PERPETUAL")]
    for ids, qty, err, msg in cases:
        with pytest.raises(err, match=msg):
            st.what_if_ids(np.array(ids, it), np.array(qty, ft))
    with pytest.raises(MarketDataError, match="SOL-PERPETUAL"):
        st.what_if([("SOL-PERPETUAL", 1.0)])


def test_expired_instrument_is_rejected(market):
    tab = InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-28NOV26-92000-C"])
    later = market.with_updates(timestamp_ms=market.timestamp_ms + 2 * 86_400_000)
    engine = MarginEngine(later, tab, dpm_default())
    with pytest.raises(MarketDataError, match=r"acc.*BTC-28NOV26-92000-C.*expired"):
        engine.margin_many(AccountBook.from_arrays([0], [1], [1.0], tab, account_ids=["acc"]))


def test_book_on_other_table(market, table):
    engine = MarginEngine(market, table, dpm_default())
    other = InstrumentTable.from_names(["BTC-PERPETUAL"])
    with pytest.raises(InvalidInputError, match="different InstrumentTable"):
        engine.margin_many(AccountBook.from_arrays([0], [0], [1.0], other))
    with pytest.raises(InvalidTypeError, match="AccountBook"):
        engine.margin_many([("BTC-PERPETUAL", 1.0)])


def test_collateral_currency_without_price(market, table):
    engine = MarginEngine(market, table, dpm_default())
    book = AccountBook.from_arrays([0, 1], [0, 0], [1.0, 1.0], table, account_ids=["a", "b"],
                                   collateral=np.array([[1.0, 0.0], [1.0, 2.0]]), currencies=("BTC", "SOL"))
    with pytest.raises(MarketDataError, match=r"'b'.*SOL"):
        engine.margin_many(book)
    # a currency without a price is fine while nobody holds it
    ok = AccountBook.from_arrays([0], [0], [1.0], table, collateral=np.array([[1.0, 0.0]]), currencies=("BTC", "SOL"))
    np.testing.assert_allclose(engine.margin_many(ok).collateral_value[0], 92000.0)


def test_correlation_errors(market):
    tab = InstrumentTable.from_names(["BTC-PERPETUAL", "ETH-PERPETUAL", "SOL-PERPETUAL"])
    mk = _sol_market(market)
    bad = {("BTC", "ETH"): 0.9, ("BTC", "SOL"): 0.9, ("ETH", "SOL"): -0.9}  # entries valid, matrix not PSD
    with pytest.raises(InvalidInputError, match="semi-definite|PSD|eigen"):
        MarginEngine(mk, tab, replace(dpm_default(), correlation=bad))
    C = np.array([[1, .9, .9], [.9, 1, -.9], [.9, -.9, 1]])
    with pytest.raises(InvalidInputError):
        check_correlation(C)
    with pytest.raises(InvalidInputError, match="BTC|ETH"):
        MarginEngine(mk, tab, replace(dpm_default(), correlation={("BTC", "ETH"): 1.5}))
    with pytest.raises(InvalidInputError, match="shape"):
        MarginEngine(mk, tab, replace(dpm_default(), correlation=np.eye(2)))
    with pytest.raises(InvalidInputError, match="SOL"):
        MarginEngine(mk, tab, replace(dpm_default(), correlation=np.eye(2), correlation_order=("BTC", "ETH")))
    fixed = check_correlation(C, repair=True)
    e = MarginEngine(mk, tab, replace(dpm_default(), correlation=fixed, correlation_order=("BTC", "ETH", "SOL"),
                                      aggregation="sqrt_corr"))
    book = AccountBook.from_arrays([0, 0, 0], [0, 1, 2], [1e5, 3e3, 1e3], tab)
    res = e.margin_many(book)
    L = res.charge[0]
    np.testing.assert_allclose(res.risk[0], math.sqrt(L @ fixed @ L), rtol=1e-12)


def test_bad_model_parameters():
    from dpm.models import DeltaShock, RollShock, preset
    from dpm.models.scenarios import ScenarioGrid, VolShock

    cases = [
        (lambda: preset("cme"), "unknown preset"),
        (lambda: VolShock(up=-0.1), "up"),
        (lambda: VolShock(mode="sticky"), "mode"),
        (lambda: VolShock(floor_days=0), "floor_days"),
        (lambda: RollShock(annualised_move_risk=float("nan")), "annualised_move_risk"),
        (lambda: DeltaShock(threshold_usd=-1.0), "threshold_usd"),
        (lambda: SizeCharge(rate=0.1, bounds_usd=(1.0, 2.0), multipliers=(1.0,)), "multipliers"),
        (lambda: SizeCharge(rate=0.1, bounds_usd=(2.0, 1.0), multipliers=(1.0, 2.0, 3.0)), "increasing"),
        (lambda: UnderlyingParams(price_range=0.0), "price_range"),
        (lambda: UnderlyingParams(price_range=float("nan")), "price_range"),
        (lambda: UnderlyingParams(steps_per_side=0), "steps_per_side"),
        (lambda: UnderlyingParams(vol_dirs=(2,)), "vol_dirs"),
        (lambda: UnderlyingParams(extended_moves=(-1.2,)), "extended_moves"),
        (lambda: UnderlyingParams(extended_moves=(0.5,), extended_weights=(0.1, 0.2)), "extended_weights"),
        (lambda: UnderlyingParams(extreme_moves=(-1.0,)), "extreme_moves"),
        (lambda: UnderlyingParams(extreme_cover=-0.5), "extreme_cover"),
        (lambda: UnderlyingParams(short_option_minimum=float("inf")), "short_option_minimum"),
        (lambda: UnderlyingParams(vol_shock=0.5), "vol_shock"),
        (lambda: RiskMatrixModel(risk_currency="eur"), "risk_currency"),
        (lambda: RiskMatrixModel(sticky="delta"), "sticky"),
        (lambda: RiskMatrixModel(im_factor=0.0), "im_factor"),
        (lambda: RiskMatrixModel(haircuts={"BTC": 1.0}), "haircuts"),
        (lambda: ScenarioGrid([-1.0], [0]), "price_move"),
        (lambda: ScenarioGrid([0.1, 0.2], [0, 3]), "vol_dir"),
        (lambda: ScenarioGrid([0.1], [0], weight=[-1.0]), "weight"),
        (lambda: RiskMatrixModel(aggregation="max"), "aggregation"),
        (lambda: RiskMatrixModel(aggregation="joint"), "correlation"),
        (lambda: RiskMatrixModel(aggregation="pnl_offset", pnl_offset={"BTC": 1.5}), "pnl_offset"),
    ]
    for make, field in cases:
        with pytest.raises(InvalidInputError, match=field):
            make()


def test_bad_engine_arguments(market, table):
    with pytest.raises(InvalidTypeError, match="market"):
        MarginEngine({"BTC": 1}, table)
    with pytest.raises(InvalidTypeError, match="instruments"):
        MarginEngine(market, ["BTC-PERPETUAL"])
    with pytest.raises(InvalidTypeError, match="model"):
        MarginEngine(market, table, "deribit")
    two = dpm_default().with_params("BTC", time_shift_days=1.0)
    with pytest.raises(InvalidInputError, match="time_shift_days"):
        MarginEngine(market, table, two)


def test_inputs_not_mutated(market, table):
    book = random_book(table, 20, seed=8)
    snap = [a.copy() for a in (book.indptr, book.instrument_idx, book.quantity, book.collateral)]
    engine = MarginEngine(market, table, deribit_pm("coin"))
    engine.margin_many(book, contributions=True)
    ids = np.array([0, 3], dtype=np.int64)
    q = np.array([1.0, -2.0])
    st = engine.prepare(book, 0)
    st.what_if_ids(ids, q)
    for x, y in zip(snap, (book.indptr, book.instrument_idx, book.quantity, book.collateral)):
        assert np.array_equal(x, y)
    assert ids.tolist() == [0, 3] and q.tolist() == [1.0, -2.0]


# ------------------------------------------------------------------------------------------ results
def test_contributions_and_liquidation_order(market, table):
    """Without a dampener the position contributions of an underlying sum to minus its scan loss."""
    model = dpm_default(None)
    engine = MarginEngine(market, table, model)
    book = random_book(table, 30, seed=17, whales=0)
    res = engine.margin_many(book, contributions=True)
    u_of_pos = np.asarray(table.underlying)[book.instrument_idx]
    acc = _acc(book)
    for a in range(len(book)):
        for j in range(2):
            sel = (acc == a) & (u_of_pos == j)
            np.testing.assert_allclose(res.contribution[sel].sum(), -res.scan[a, j], rtol=1e-9,
                                       atol=1e-9 * _gross_usd(book, a, table, market) + 1e-9)
    a = int(np.argmax(res.initial_margin))
    one = engine.margin(book, a)
    losses = [c.pnl_in_worst_scenario for c in one.liquidation_order]
    assert losses == sorted(losses) and all(x < 0 for x in losses)
    assert one.initial_margin == pytest.approx(res.initial_margin[a], rel=1e-12)
    assert "initial margin" in str(one)


def test_equity_margin_ratio_and_haircuts(market, table):
    model = replace(dpm_default(None), haircuts={"BTC": 0.1})
    engine = MarginEngine(market, table, model)
    book = _book(table, [("BTC-SPOT", 2.0), ("BTC-25DEC26-92000-C", -1.0)], collateral={"BTC": 1.0, "USDC": 500.0})
    res = engine.margin_many(book)
    ref = margin_ref.margin_book(model, market, book)[0]
    # spot holdings count at index value in equity; collateral after the 10 % haircut
    np.testing.assert_allclose(res.collateral_value[0], 0.9 * 92000 + 500.0, rtol=1e-15)
    np.testing.assert_allclose(res.position_value[0], ref["value"], rtol=1e-12)
    assert ref["value"] > 2 * 92000 - 92000  # spot 184k minus a call worth less than the index
    np.testing.assert_allclose(res.margin_ratio[0], res.maintenance_margin[0] / res.equity[0], rtol=1e-15)
    np.testing.assert_allclose(res.excess[0], res.equity[0] - res.initial_margin[0], rtol=1e-15)
    empty = AccountBook.from_arrays(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), table, n_accounts=2)
    r2 = engine.margin_many(empty)
    assert np.all(r2.initial_margin == 0) and np.all(r2.margin_ratio == 0) and np.all(r2.worst_scenario == -1)


def test_results_in_coin_at_the_index():
    from dpm.market.sample import default_instruments, default_market
    from dpm.models import deribit_pm
    from dpm.portfolio.sample import generate_accounts

    market, table = default_market(), default_instruments()
    res = MarginEngine(market, table, deribit_pm()).margin_many(generate_accounts(50, table, seed=2))
    btc = res.in_currency("BTC")
    np.testing.assert_allclose(btc["initial_margin"] * market["BTC"].index_price, res.initial_margin, rtol=1e-15)
    np.testing.assert_array_equal(res.in_currency("USDC")["equity"], res.equity)
    with pytest.raises(InvalidInputError, match="no price"):
        res.in_currency("DOGE")
