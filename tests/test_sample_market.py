"""Tests for dpm.market.sample: the bundled Deribit snapshot and the generated default market."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from dpm.market.sample import (
    SAMPLE_TIMESTAMP_MS,
    default_instruments,
    default_market,
    default_marks,
    deribit_marks,
    deribit_snapshot,
    generate_default_market_params,
    load_default_market_params,
)
from dpm.pricing.black import greeks, price


def test_default_market_params_are_reproducible_from_generator():
    p = load_default_market_params()
    assert "GENERATED" in p["description"]
    regen = generate_default_market_params(p["generator"])
    for und in ("BTC", "ETH"):
        assert len(regen[und]) == len(p["svi"][und]) == 11
        for a, b in zip(regen[und], p["svi"][und]):
            assert a["expiry"] == b["expiry"] and a["expiry_ms"] == b["expiry_ms"]
            for key in ("T", "a", "b", "rho", "m", "sigma"):
                assert a[key] == pytest.approx(b[key], rel=1e-14, abs=1e-16)


def test_default_market_shape_is_typical_of_crypto():
    snap = default_market()
    assert snap.timestamp_ms == SAMPLE_TIMESTAMP_MS
    assert snap["BTC"].index_price == 92_000.0 and snap["ETH"].index_price == 3_100.0
    for und, (lo, hi) in {"BTC": (0.45, 0.56), "ETH": (0.60, 0.71)}.items():
        um = snap[und]
        vs = um.vol_surface
        assert vs.report.arbitrage_free and not vs.report.issues
        T = vs.times
        F = um.forward(T)
        atm = vs.implied_vol(F, T, F)
        assert ((atm >= lo) & (atm <= hi)).all(), atm
        assert atm[0] > atm[-1]                                   # short-dated vol above long-dated
        assert (vs.implied_vol(0.9 * F, T, F) > vs.implied_vol(1.1 * F, T, F)).all()   # put skew
        # theta (ATM total variance) increases: no calendar arbitrage at the money
        assert np.all(np.diff(atm**2 * T) > 0)
        assert um.perpetual_price > um.index_price and um.funding_rate == 1e-4


def test_default_marks_cover_every_instrument_and_satisfy_parity():
    table = default_instruments()
    snap = default_market()
    marks = default_marks(table, snap)
    assert marks.shape == (len(table),) and np.isfinite(marks).all() and (marks > 0).all()
    assert not marks.flags.writeable
    inp = snap.instrument_inputs(table)
    kind = np.asarray(table.kind)
    np.testing.assert_array_equal(marks[kind != 3], inp.forward[kind != 3])
    # inverse put-call parity on coin marks: C - P = (F - K) / F
    names = table.name.tolist()
    pos = {n: i for i, n in enumerate(names)}
    calls = [i for i, n in enumerate(names) if n.endswith("-C")]
    puts = [pos[names[i][:-1] + "P"] for i in calls]
    K = np.asarray(table.strike)[calls]
    F = inp.forward[calls]
    np.testing.assert_allclose(marks[calls] - marks[puts], (F - K) / F, atol=1e-12)
    # an ATM BTC option is worth about 0.4 sigma sqrt(T) coins
    i = pos["BTC-25DEC26-92000-C"]
    approx = 0.4 * inp.vol[i] * math.sqrt(inp.time[i])
    assert marks[i] == pytest.approx(approx, rel=0.05)


def test_deribit_snapshot_fields():
    snap = deribit_snapshot()
    c = deribit_marks()
    assert snap.timestamp_ms == int(c["timestamp_ms"].max()) == 1589435046537
    btc = snap["BTC"]
    assert btc.index_price == pytest.approx(float(np.median(c["index_price"])))
    vs = btc.vol_surface
    assert [s.label for s in vs.slices] == ["14MAY20", "15MAY20", "22MAY20", "29MAY20", "26JUN20", "25SEP20", "25DEC20"]
    assert sum(s.n_quotes for s in vs.slices) == 310
    T = (np.unique(c["expiry_ms"]) - snap.timestamp_ms) / (365 * 86_400_000)
    F = [np.median(c["underlying_price"][c["expiry_ms"] == e]) for e in np.unique(c["expiry_ms"])]
    np.testing.assert_allclose(btc.forward(T), F, rtol=1e-14)
    np.testing.assert_allclose(vs.times, T, rtol=1e-15)
    # Black-76 on mark_iv with each row's own timestamp reproduces mark_price (README: ~1e-4 relative)
    Trow = (c["expiry_ms"] - c["timestamp_ms"]) / (365 * 86_400_000)
    p = price(c["underlying_price"], c["strike"], c["mark_iv"], Trow, c["option_type"].astype(float), inverse=True)
    big = c["mark_price"] > 1e-3
    assert np.median(np.abs(p[big] / c["mark_price"][big] - 1)) < 1e-4


def test_deribit_greek_conventions():
    """Deribit's ticker greeks are Black-76 greeks of the USD value (see docs/market-data.md):
    delta = N(d1) (not premium-adjusted), gamma per USD, vega in USD per vol point, theta in USD per
    calendar day, rho = Black-Scholes K T N(d2) per 1% rate."""
    c = deribit_marks()
    F, K, v = c["underlying_price"], c["strike"], c["mark_iv"]
    T = (c["expiry_ms"] - c["timestamp_ms"]) / (365 * 86_400_000)
    cp = c["option_type"].astype(float)
    gu = greeks(F, K, v, T, cp)
    gi = greeks(F, K, v, T, cp, inverse=True)
    np.testing.assert_allclose(gu["delta"], c["delta"], atol=3e-4)
    # dpm's inverse delta is d(V/F)/dF = (N(d1) - V/F) / F: Deribit's delta is F * that + the coin price
    np.testing.assert_allclose(F * gi["delta"] + gi["price"], c["delta"], atol=3e-4)
    assert np.abs(F * gi["delta"] - c["delta"]).max() > 0.5           # the premium term matters deep ITM
    np.testing.assert_allclose(gu["gamma"], c["gamma"], atol=6e-6)
    np.testing.assert_allclose(gu["vega"] / 100, c["vega"], atol=2e-3)
    np.testing.assert_allclose(F * gi["vega"] / 100, c["vega"], atol=2e-3)
    live = T > 0.01                      # within ~1 day of expiry Deribit's theta is not the analytic one
    np.testing.assert_allclose(gu["theta"][live] / 365, c["theta"][live], atol=3e-3)
    sq = v * np.sqrt(T)
    d2 = (np.log(F / K) - 0.5 * sq * sq) / sq
    np.testing.assert_allclose(cp * K * T * norm.cdf(cp * d2) / 100, c["rho"], atol=1e-3)


def test_default_listing_equals_the_table_built_from_specs():
    """default_instruments builds its option grid as columns; the same listing built from one spec
    per instrument (names from format_name) gives the same table, column by column."""
    import dpm.market.sample as sample
    from dpm.market.names import parse_name
    from dpm.market.specs import Future, Option, Perpetual
    from dpm.market.table import InstrumentTable

    params = sample.load_listing_parameters()
    expiries = [(parse_name(f"BTC-{e['code']}").expiry, e["cycle"]) for e in params["expiries"]]
    perps = [parse_name(n) for n in params["perpetuals"]]
    specs = []
    for und, p in params["underlyings"].items():
        for perp in perps:
            if perp.underlying == und:
                size = p["inverse_future_contract_size_usd"] if perp.inverse else p["linear_perpetual_contract_size"]
                specs.append(Perpetual(und, perp.inverse, size, perp.settlement))
        specs += [Future(und, exp, True, p["inverse_future_contract_size_usd"])
                  for exp, cycle in expiries if cycle in set(params["futures_cycles"])]
        for exp, cycle in expiries:
            for k in sample._ladder_strikes(p["reference_price"], p["strike_ladders"][cycle]):
                specs += [Option(und, exp, k, cp, True, p["inverse_option_contract_size_coin"]) for cp in ("call", "put")]
    want = InstrumentTable.from_specs(specs, underlyings=tuple(params["underlyings"]))
    got = sample.default_instruments()
    assert got.underlyings == want.underlyings and len(got) == len(want) > 1600
    for col in ("name", "kind", "underlying", "option_type", "strike", "expiry_ms", "inverse", "contract_size",
                "settlement"):
        a, b = getattr(got, col), getattr(want, col)
        assert a.dtype == b.dtype, col
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), col
