"""Deribit's published ``private/pme/simulate`` responses reproduced from their own inputs.

Fixtures (``tests/fixtures/venues/deribit_pme/``, see its README): the official docs example
(BTC S:PM, 2024-06-17: BTC-PERPETUAL +0.314538364 BTC, BTC-28JUN24 -0.001187534 BTC) and a live
capture (ETH X:PM, 2026-02-15: ETH-PERPETUAL -0.999487053 ETH, pnl_offset 0.6). The model comes from
each response's ``model_params``; positions are given in coins, as the API gives them; the market is
the response's ``ticker`` and ``index_price``. With the exact-venue rounding the published
``risk_matrix_margin`` and ``maintenance_margin`` match to 1e-12.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.market.names import parse_name
from dpm.market.snapshot import ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.table import InstrumentTable
from dpm.models.presets import deribit_pm_from_model_params
from dpm.portfolio.venue import contracts_from_size, deribit_account

HERE = Path(__file__).parent / "fixtures" / "venues" / "deribit_pme"
EXAMPLES = ["pme_simulate_docs_example_2024-06-17_btc", "pme_simulate_live_2026-02-15_eth_xpm"]


def _load(name):
    return json.loads((HERE / f"{name}.response.json").read_text())["result"]


def _setup(r, exact=True):
    mp = r["model_params"]
    ts = int(mp["general"]["timestamp"])
    (pair, index), = r["index_price"].items()
    coin = pair.split("_")[0].upper()
    positions = r["portfolio"]["position"]
    table = InstrumentTable.from_names(list(positions))
    perp = next((t["mark_price"] for n, t in r["ticker"].items() if n.endswith("PERPETUAL")), index)
    fut = [(parse_name(n).expiry_ms, t["mark_price"]) for n, t in r["ticker"].items() if not n.endswith("PERPETUAL")]
    if fut:
        times = [(e - ts) / (365.0 * 86400e3) for e, _ in fut]
        curve = ForwardCurve.from_futures(index, times, [p for _, p in fut])
    else:
        curve = ForwardCurve.from_rate(index, 0.0)
    market = MarketSnapshot(ts, {coin: UnderlyingMarket(index, curve, None, perpetual_price=perp)})
    model = deribit_pm_from_model_params(mp, exact_venue=exact)
    account = deribit_account("example", positions, table, market)
    return coin, market, table, model, account


@pytest.mark.parametrize("name", EXAMPLES)
def test_risk_matrix_margin_and_mm_match_the_published_response(name):
    r = _load(name)
    coin, market, table, model, account = _setup(r)
    engine = MarginEngine(market, table, model)
    res = engine.margin(account).in_currency(coin)
    m = r["margins"][coin.lower()]
    det = m["initial_margin_details"]
    rmm = det["risk_matrix_margin"]
    # IM/MM factors of this model: IM = risk (the risk-matrix margin), MM = mm_factor x risk
    assert res["risk"] == pytest.approx(rmm, rel=1e-12, abs=0)
    assert res["maintenance_margin"] == pytest.approx(m["maintenance_margin"], rel=1e-12, abs=0)
    # the rounding matters: without it the result misses by more than the tolerance
    coin2, market2, table2, model2, account2 = _setup(r, exact=False)
    loose = MarginEngine(market2, table2, model2).margin(account2).in_currency(coin)["risk"]
    assert abs(loose - rmm) > 1e-10 * rmm
    # contingencies as published
    ub = res["by_underlying"][coin]
    assert ub["roll_shock"] == pytest.approx(det["risk_matrix_margin_details"]["roll_shock"], rel=1e-12)
    assert ub["delta_shock"] == pytest.approx(det["risk_matrix_margin_details"]["delta_shock"], abs=1e-15)
    # Deribit's IM adds margins outside the risk matrix, rounded to 9 decimals: with its published
    # MMP and open-order parts (their inputs are not in the example) the published IM follows
    im = round(res["risk"] + det["spot_margin"] + det["mmp_margin"] + det["open_orders_margin"], 9)
    assert im == pytest.approx(m["initial_margin"], abs=1e-15)


@pytest.mark.parametrize("name", EXAMPLES)
def test_risk_vectors_match_the_published_vectors(name):
    r = _load(name)
    coin, market, table, model, account = _setup(r)
    engine = MarginEngine(market, table, model)
    rv = engine.risk_vectors(account)
    ext = rv.extended
    std = ~ext & ~rv.padding
    # per instrument: standard vectors raw, extended vectors with the extended-table factor
    irv = r["initial_risk_vectors"]
    ids = table.index_of(list(irv))
    q = contracts_from_size(table, list(irv), [r["portfolio"]["position"][n] for n in irv], market)
    S = len(engine.scenarios)
    w = engine.scenarios.weight[:, 0]
    for i, n, qi in zip(ids, irv, q):
        row = qi * engine.pnl_matrix[i, :S]
        np.testing.assert_allclose(row[std], irv[n]["standard"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose((row * w)[ext], irv[n]["extended"], rtol=1e-12, atol=1e-15)
    # the aggregated vector: gains at pnl_offset, extended entries dampened (to 0 here)
    agg = r["aggregated_risk_vectors"][f"{coin.lower()}_{coin.lower()}"]
    price = market[coin].index_price
    np.testing.assert_allclose(rv.aggregated_usd[std] / price, agg["standard"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rv.aggregated_usd[ext] / price, agg["extended"], rtol=1e-12, atol=1e-15)
    # the worst case, unrounded, and its bucket (Deribit reports the middle of three tied vol states;
    # dpm the first, the vol-up state of the same bucket)
    s, loss = rv.worst(coin)
    det = r["margins"][coin.lower()]["initial_margin_details"]["risk_matrix_margin_details"]
    assert loss == pytest.approx(det["worst_case"], rel=1e-12)
    assert s // 3 + 1 == det["worst_case_bucket"]["bucket"]


def test_positions_from_get_positions_payload():
    """``private/get_positions`` gives futures in USD (``size``) and coins (``size_currency``)."""
    payload = json.loads((HERE / "docs_private_get_positions.response.json").read_text())["result"]
    p = payload[0]
    table = InstrumentTable.from_names([p["instrument_name"]])
    ts = int(dt.datetime(2020, 3, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    mk = MarketSnapshot(ts, {"BTC": UnderlyingMarket(p["index_price"], ForwardCurve.from_rate(p["index_price"], 0.0),
                                                     None, perpetual_price=p["mark_price"])})
    acc = deribit_account("a", payload, table, mk)
    assert acc.positions[0][1] == pytest.approx(p["size"] / 10.0)  # 10 USD per BTC inverse contract
    # the same position given in coins converts to the same contracts (to Deribit's 9 decimals)
    coins = contracts_from_size(table, [p["instrument_name"]], [p["size_currency"]], mk, "base")
    assert coins[0] == pytest.approx(p["size"] / 10.0, rel=1e-8)
