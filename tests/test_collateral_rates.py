"""Collateral is valued by one rule (``MarginEngine.collateral_rates``) in margin, the live book and
solvency: venue USD rates count (a stablecoin slightly off par, a coin that is not an underlying)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.engines.solvency.exposure import book_exposure
from dpm.errors import MarketDataError
from dpm.live import LiveBook
from dpm.market.sample import default_instruments, default_market
from dpm.market.snapshot import MarketSnapshot
from dpm.models import dpm_default
from dpm.portfolio.accounts import AccountBook

CURRENCIES = ("BTC", "USDT", "SOL", "USDC")
RATES = {"USDT": 0.9995, "SOL": 150.0}


@pytest.fixture(scope="module")
def setup():
    base = default_market()
    market = MarketSnapshot(base.timestamp_ms, dict(base.underlyings), RATES)
    table = default_instruments()
    model = dataclasses.replace(dpm_default(), haircuts={"BTC": 0.02, "SOL": 0.25})
    engine = MarginEngine(market, table, model, workers=1)
    coll = np.array([[1.5, 10_000.0, 40.0, 2_500.0], [0.0, 3_000.0, 7.0, 50_000.0]])
    book = AccountBook.from_arrays([0, 1], [0, 0], [1.0, -2.0], table, account_ids=["a", "b"], collateral=coll,
                                   currencies=CURRENCIES)
    return market, engine, book, coll


def test_one_valuation_of_collateral_everywhere(setup):
    market, engine, book, coll = setup
    hc = engine.model.haircuts
    price = np.array([float(market["BTC"].index_price), RATES["USDT"], RATES["SOL"], 1.0])
    want = coll @ (price * np.array([1.0 - float(hc.get(c, 0.0)) for c in CURRENCIES]))
    res = engine.margin_many(book)
    np.testing.assert_allclose(res.collateral_value, want, rtol=1e-15)
    live = LiveBook(engine, book, workers=1).margins()
    np.testing.assert_allclose(live["collateral_value"], res.collateral_value, rtol=1e-15)
    ex = book_exposure(engine, book)
    np.testing.assert_allclose(ex.collateral_usd.sum(axis=1), res.collateral_value, rtol=1e-12)


def test_a_held_currency_without_price_is_refused_by_each(setup):
    market, engine, _, _ = setup
    table = engine.instruments
    book = AccountBook.from_arrays([0], [0], [1.0], table, account_ids=["x"], collateral=np.array([[2.0]]),
                                   currencies=("DOGE",))
    for run in (engine.margin_many, lambda b: LiveBook(engine, b, workers=1), lambda b: book_exposure(engine, b)):
        with pytest.raises(MarketDataError, match=r"'x'.*DOGE"):
            run(book)
