"""Dynamic risk-matrix parameters from the EWMA calibration."""
from __future__ import annotations

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.errors import InvalidInputError
from dpm.market.history import load_history
from dpm.market.sample import default_instruments, default_market
from dpm.models import RollShock, dpm_default
from dpm.models.calibration.ranges import scan_ranges
from dpm.models.dynamic import dynamic_model
from dpm.portfolio.accounts import Account


@pytest.fixture(scope="module")
def ranges():
    lr = load_history().log_returns(["BTC", "ETH"])
    return scan_ranges(lr.values, dates=lr.dates, assets=lr.assets)


@pytest.fixture(scope="module")
def setup():
    return default_market(), default_instruments()


def test_dynamic_model_takes_the_days_ranges(ranges) -> None:
    day = "2020-03-13"
    t = int(np.flatnonzero(ranges.dates == np.datetime64(day))[0])
    m = dynamic_model(dpm_default(), ranges, day)
    assert m.params("BTC").price_range == pytest.approx(ranges.range[t, 0], rel=0, abs=0)
    assert m.params("ETH").price_range == ranges.range[t, 1]
    assert m.params("BTC").vol_shock.up == ranges.vol_up[t, 0]
    assert m.params("BTC").steps_per_side == dpm_default().params("BTC").steps_per_side
    assert "dynamic@2020-03-13" in m.name


def test_linear_position_margin_scales_with_the_dynamic_range(ranges, setup) -> None:
    market, table = setup
    # a linear perpetual only: scan loss = |q| * size * range * F (P&L is linear in the move)
    acc = Account("a", [("BTC_USDC-PERPETUAL", 3.0)], {"USDC": 1e6})
    base = dpm_default(correlation=None)
    for day in ("2020-02-03", "2020-03-13", "2024-06-03"):
        m = dynamic_model(base, ranges, day).with_params("BTC", roll_shock=RollShock())
        res = MarginEngine(market, table, m).margin(acc)
        F = market["BTC"].perpetual_price
        expected = 3.0 * F * m.params("BTC").price_range
        assert res.by_underlying["BTC"]["scan"] == pytest.approx(expected, rel=1e-12)


def test_margin_rises_through_the_march_2020_crash(ranges, setup) -> None:
    market, table = setup
    acc = Account("a", [("BTC-PERPETUAL", 10_000.0), ("ETH-PERPETUAL", -5_000.0)], {"BTC": 1.0})
    before = MarginEngine(market, table, dynamic_model(dpm_default(), ranges, "2020-02-14")).margin(acc)
    after = MarginEngine(market, table, dynamic_model(dpm_default(), ranges, "2020-03-13")).margin(acc)
    static = MarginEngine(market, table, dpm_default()).margin(acc)
    assert after.initial_margin > 1.5 * before.initial_margin
    assert static.initial_margin != after.initial_margin


def test_bad_days_are_rejected(ranges) -> None:
    with pytest.raises(InvalidInputError, match="not in ranges.dates"):
        dynamic_model(dpm_default(), ranges, "1999-01-01")
    with pytest.raises(InvalidInputError, match="out of range"):
        dynamic_model(dpm_default(), ranges, 10**7)
    with pytest.raises(InvalidInputError, match="not enough history|range of"):
        dynamic_model(dpm_default(), ranges, 0)  # the first day has no EWMA forecast yet
    with pytest.raises(InvalidInputError, match="DynamicScanRange"):
        dynamic_model(dpm_default(), {"BTC": 0.1})
