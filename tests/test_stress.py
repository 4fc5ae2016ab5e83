"""Tests for dpm.models.generators.stress: historical stress scenarios from the data, hypothetical scenarios."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dpm.errors import InvalidInputError
from dpm.market.history import history_from_wide, load_history
from dpm.models.calibration.ranges import realized_log_vol
from dpm.models.generators.stress import (
    CRYPTO_STRESS_EVENTS,
    StressEvent,
    historical_stress_scenarios,
    hypothetical_scenarios,
    stress_event_table,
)
from dpm.models.measures import linear_pnl


@pytest.fixture(scope="module")
def hist():
    return load_history()


@pytest.fixture(scope="module")
def stress(hist):
    return historical_stress_scenarios(hist)


def test_events_select_documented_days(hist):
    rows = stress_event_table(hist)
    assert [r["name"] for r in rows] == [e.name for e in CRYPTO_STRESS_EVENTS]
    for row, ev in zip(rows, CRYPTO_STRESS_EVENTS):
        assert row["end"] == ev.expected_end, ev.name
        base = np.datetime64(row["end"]) - np.datetime64(row["base"])
        assert base == np.timedelta64(ev.horizon_days, "D")


def test_moves_are_computed_from_closes(hist, stress):
    assert stress.underlyings == ("BTC", "ETH", "USDT")
    assert stress.kind == "stress"
    i = stress.names.index("black_thursday_2020")
    assert stress.price_move[i, 0] == pytest.approx(4970.79 / 7911.43 - 1, rel=1e-12)
    assert stress.price_move[i, 0] == pytest.approx(-0.3717, abs=5e-5)  # data/README.md: -37 %
    for j, u in enumerate(stress.underlyings):
        for k, ev in enumerate(CRYPTO_STRESS_EVENTS):
            end = np.datetime64(ev.expected_end)
            base = end - np.timedelta64(ev.horizon_days, "D")
            expected = hist.price_on(u, end) / hist.price_on(u, base) - 1
            assert stress.price_move[k, j] == pytest.approx(expected, rel=1e-12)
    f = stress.names.index("ftx_2022")
    # FTX two-day move: 2022-11-07 close -> 2022-11-09 close (data/README.md quotes 20,601 -> 15,881,
    # i.e. the 2022-11-08 open 20,600.67, which is 2 USD below the 2022-11-07 close)
    assert hist.price_on("BTC", "2022-11-07") == pytest.approx(20601, abs=3)
    assert hist.price_on("BTC", "2022-11-09") == pytest.approx(15881, abs=1)
    assert stress.price_move[f, 0] == pytest.approx(15881 / 20601 - 1, abs=2e-4)
    assert "2022-11-07 close -> 2022-11-09 close" in stress.sources[f]
    u = stress.names.index("usdt_depeg_2020")
    assert stress.price_move[u, 2] < -0.05  # USDT below peg on 2020-03-13


def test_vol_shock_proxy_from_realised_vol(hist, stress):
    i = stress.names.index("celsius_3ac_2022")
    d, p = hist.prices("BTC")
    r = np.diff(np.log(p))
    lv = realized_log_vol(r, 30)
    end = int(np.searchsorted(d, np.datetime64("2022-06-13")))
    # lv[k] is the vol ending at return k, i.e. at date d[k + 1]
    expected = math.expm1(lv[end - 1] - lv[end - 2])
    assert stress.vol_shock[i, 0] == pytest.approx(expected, rel=1e-10)
    doubled = historical_stress_scenarios(hist, iv_beta=2.0)
    np.testing.assert_allclose(np.log1p(doubled.vol_shock), 2 * np.log1p(stress.vol_shock),
                               rtol=1e-10, atol=1e-12)


def test_synthetic_history_and_errors():
    days = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-03-01"))
    a = 100 * np.exp(np.cumsum(np.r_[0, np.full(days.size - 1, 0.001)]))
    a[40:] *= 0.5  # crash on day 40
    b = np.full(days.size, 1.0)
    h = history_from_wide(days, ["AAA", "STB"], np.column_stack([a, b]))
    ev = StressEvent("crash", "2024-01-20", "2024-02-20", "AAA", 1, "down", str(days[40]),
                     "synthetic", "test")
    sc = historical_stress_scenarios(h, [ev], ["AAA", "STB"])
    assert sc.price_move[0, 0] == pytest.approx(0.5 * math.exp(0.001) - 1, rel=1e-12)
    assert sc.price_move[0, 1] == 0.0
    assert sc.vol_shock[0, 0] > 1.0
    with pytest.raises(InvalidInputError, match="'XYZ' is not in the history"):
        historical_stress_scenarios(h, [ev], ["AAA", "XYZ"])
    late = StressEvent("late", "2030-01-01", "2030-02-01", "AAA", 1, "down", "", "", "")
    with pytest.raises(InvalidInputError, match="no AAA data"):
        historical_stress_scenarios(h, [late], ["AAA"])
    old = StressEvent("old", "2015-01-01", "2015-02-01", "BTC", 1, "down", "", "", "")
    with pytest.raises(InvalidInputError, match="no ETH price"):
        historical_stress_scenarios(load_history(), [old], ["BTC", "ETH"])


def test_hypothetical_and_combination(stress):
    hyp = hypothetical_scenarios(
        [{"name": "btc_-50_vol_+100", "price_move": {"BTC": -0.5, "ETH": -0.6},
          "vol_shock": {"BTC": 1.0, "ETH": 1.0}, "source": "house"},
         {"name": "usdt_depeg_10", "price_move": {"USDT": -0.10}}],
        ["BTC", "ETH", "USDT"])
    np.testing.assert_array_equal(hyp.price_move, [[-0.5, -0.6, 0.0], [0.0, 0.0, -0.1]])
    np.testing.assert_array_equal(hyp.vol_shock, [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    allsc = stress.concat(hyp)
    assert len(allsc) == len(stress) + 2 and allsc.kind == "mixed"
    pnl = linear_pnl(allsc, [1e6, -5e5, 2e5])
    assert pnl.shape == (len(allsc),)
    i = allsc.names.index("btc_-50_vol_+100")
    assert pnl[i] == pytest.approx(-0.5e6 + 0.3e6)
    with pytest.raises(InvalidInputError, match="unknown underlying 'SOL'"):
        hypothetical_scenarios([{"name": "x", "price_move": {"SOL": -0.2}}], ["BTC"])
    with pytest.raises(InvalidInputError, match="> -1"):
        hypothetical_scenarios([{"name": "x", "price_move": {"BTC": -1.2}}], ["BTC"])
    with pytest.raises(InvalidInputError, match="needs 'name'"):
        hypothetical_scenarios([{"price_move": {"BTC": -0.2}}], ["BTC"])
    with pytest.raises(InvalidInputError, match="not a number"):
        hypothetical_scenarios([{"name": "x", "price_move": {"BTC": "big"}}], ["BTC"])
