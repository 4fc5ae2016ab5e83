"""OKX's official position-builder example reproduced to 1e-9 relative (see the fixture's README).

OKX does not publish every input the example depends on: the reference (index) prices of MR1, the
USDT/USD rate, and the rates of the perpetual MR4, MR7 and borrowing are read off the example itself
(each one reproduces several independent figures at once, which the test checks). Everything else —
the shock grids, MR6 at 50 %, IMR = 1.3 x MMR, the tier multipliers, the combination rules — comes
from OKX's published parameters and field definitions.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpm.engines.venues import okx_position_builder
from dpm.errors import InvalidInputError
from dpm.market.snapshot import ForwardCurve, MarketSnapshot, UnderlyingMarket

HERE = Path(__file__).parent / "fixtures" / "venues" / "okx_position_builder"
# read off the example (not in it): OKX's reference prices and USDT/USD rate at that instant
REFERENCE = {"BTC": 97078.9, "LTC": 101.9951}
USDT_USD = 0.99954


def _example():
    req = json.loads((HERE / "position_builder_docs_example_2025-01-15.request.json").read_text())
    res = json.loads((HERE / "position_builder_docs_example_2025-01-15.response.json").read_text())["data"][0]
    return req, res


def _market(res):
    marks = {p["instId"].split("-")[0]: float(p["markPx"]) for u in res["riskUnitData"] for p in u["portfolios"]}
    und = {u: UnderlyingMarket(REFERENCE[u], ForwardCurve.from_rate(REFERENCE[u], 0.0), None,
                               perpetual_price=marks[u]) for u in REFERENCE}
    return MarketSnapshot(int(res["ts"]), und, {"USDT": USDT_USD})


def _close(a, b):
    assert float(a) == pytest.approx(float(b), rel=1e-9, abs=1e-9)


def test_position_builder_example_reproduced():
    req, res = _example()
    out = okx_position_builder(_market(res), req["simPos"], {a["ccy"]: a["amt"] for a in req["simAsset"]})
    by_unit = {u["riskUnit"]: u for u in out["riskUnitData"]}
    for unit in res["riskUnitData"]:
        got = by_unit[unit["riskUnit"]]
        # every MR1 grid point: 7 spot shocks x 3 vol states
        for state, points in unit["mr1Scenarios"].items():
            for shock, pnl in points.items():
                _close(got["mr1Scenarios"][state][f"{float(shock):g}"], pnl)
        for key in ("mr1", "mr4", "mr6", "mr7", "mmr", "imr", "delta", "upl"):
            _close(got[key], unit[key])
        for key in ("mr2", "mr3", "mr5", "mr9"):
            assert float(unit[key]) == 0.0  # not modelled: zero for swaps
        _close(got["mr1"], -float(unit["mr1FinalResult"]["pnl"]))
        _close(2 * got["mr6"], -float(unit["mr6FinalResult"]["pnl"]))
    # the account: derivatives MMR, MR8 borrowing, totals, equity
    for key in ("derivMmr", "borrowMmr", "totalMmr", "totalImr", "eq", "upl"):
        _close(out[key], res[key])
    for unit in res["riskUnitData"]:
        _close(out["borrowMmr"], unit["mr8"])  # MR8 is the account's borrowing MMR, shown in every unit
    usdt = {a["ccy"]: a for a in out["assets"]}["USDT"]
    ref_usdt = {a["ccy"]: a for a in res["assets"]}["USDT"]
    _close(usdt["availEq"], ref_usdt["availEq"])
    _close(usdt["borrowImr"], ref_usdt["borrowImr"])


def test_position_builder_bad_inputs():
    req, res = _example()
    mk = _market(res)
    with pytest.raises(InvalidInputError, match="ETH-USD-SWAP"):
        okx_position_builder(mk, [{"instId": "ETH-USD-SWAP", "pos": 1, "avgPx": 1}], {})
    with pytest.raises(InvalidInputError, match=r"positions\[0\].pos"):
        okx_position_builder(mk, [{"instId": "BTC-USDT-SWAP", "pos": "nan", "avgPx": 1}], {})
    with pytest.raises(InvalidInputError, match="ctVal"):
        okx_position_builder(mk, [{"instId": "SOL-USDT-SWAP", "pos": 1, "avgPx": 1}], {})


def test_usd_rates_are_part_of_the_market(tmp_path):
    from dpm.errors import InvalidInputError as Bad
    from dpm.market.loaders import load_market, save_market

    _, res = _example()
    mk = _market(res)
    assert mk.usd_rate("USDT") == USDT_USD and mk.usd_rate("USDC") == 1.0 and mk.usd_rate("XYZ") is None
    for suffix in (".json", ".parquet"):
        back = load_market(save_market(mk, tmp_path / f"m{suffix}"), max_age_s=None)
        assert dict(back.usd_rates) == {"USDT": USDT_USD}
    with pytest.raises(Bad, match="usd_rates"):
        MarketSnapshot(mk.timestamp_ms, dict(mk.underlyings), {"USDT": -1.0})
    with pytest.raises(Bad, match="underlying"):
        MarketSnapshot(mk.timestamp_ms, dict(mk.underlyings), {"BTC": 1.0})
