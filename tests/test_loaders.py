"""Tests for dpm.market.loaders: load_market on venue payloads (Deribit, OKX), marks tables and saved
snapshots; staleness and consistency checks; exact save/load round trips.

Venue payloads: the published examples in tests/fixtures/venues/*_docs_* (verbatim, see the README there)
and the bundled real Deribit chain re-formatted as documented responses (tests/fixtures/make_venue_fixtures.py).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from dpm.errors import InvalidInputError, MarketDataError
from dpm.market.loaders import load_market, okx_name, save_market
from dpm.market.loaders.deribit import DERIBIT_SAMPLE_CHAIN, read_deribit_chain
from dpm.market.sample import default_market
from dpm.market.snapshot import MS_PER_YEAR

V = Path(__file__).parent / "fixtures" / "venues"
DERIBIT = [V / "deribit_btc_book_summary_option_2020-05-14.json", V / "deribit_btc_book_summary_future_2020-05-14.json",
           V / "deribit_btc_instruments_option_2020-05-14.json", V / "deribit_index_btc_usd_2020-05-14.json"]
OKX = [V / "okx_btc_opt_summary_2020-05-14.json", V / "okx_btc_mark_price_swap_2020-05-14.json",
       V / "okx_btc_index_tickers_2020-05-14.json"]
CHAIN_TS = 1589435046537          # last row of the bundled chain, 2020-05-14 05:44:06.537 UTC


@pytest.fixture(scope="module")
def deribit_market():
    return load_market(DERIBIT, now_ms=CHAIN_TS + 60_000)


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def _load_json(p):
    return json.loads(Path(p).read_text())


# --------------------------------------------------------------------------- Deribit
def test_deribit_payloads_build_the_chain_market(deribit_market):
    snap = deribit_market
    assert snap.timestamp_ms == CHAIN_TS
    btc = snap["BTC"]
    index = _load_json(V / "deribit_index_btc_usd_2020-05-14.json")["result"]["index_price"]
    assert btc.index_price == index and btc.perpetual_price == index
    # futures marks become the forward curve at their expiries (exactly)
    fut = {r["instrument_name"]: r for r in _load_json(DERIBIT[1])["result"] if r["instrument_name"] != "BTC-PERPETUAL"}
    chain = read_deribit_chain()
    for name, r in fut.items():
        exp = chain.marks["expiry_ms"][np.char.startswith(chain.marks["name"].astype(str), name + "-")][0]
        T = (exp - snap.timestamp_ms) / MS_PER_YEAR
        np.testing.assert_allclose(btc.forward(T), r["mark_price"], rtol=1e-12)
    vs = btc.vol_surface
    assert len(vs.slices) == 7 and vs.report.arbitrage_free
    # the surface follows the chain's marks: bid/ask vols implied from the payload's prices
    m = chain.marks
    T = (m["expiry_ms"] - snap.timestamp_ms) / MS_PER_YEAR
    iv = vs.implied_vol(m["strike"], T, m["underlying_price"])
    longer = T > 1 / 365
    err = (iv - m["mark_iv"])[longer]
    assert np.sqrt(np.mean(err ** 2)) < 0.015


@pytest.mark.slow  # surface fits of real chains (scipy); skipped by the sanitizer run
def test_deribit_payloads_agree_with_the_marks_csv_and_okx_payloads(deribit_market):
    csv = load_market(DERIBIT_SAMPLE_CHAIN, now_ms=CHAIN_TS)
    okx = load_market(OKX, now_ms=CHAIN_TS)
    m = read_deribit_chain().marks
    T = (m["expiry_ms"] - CHAIN_TS) / MS_PER_YEAR
    a = deribit_market["BTC"].vol_surface.implied_vol(m["strike"], T, m["underlying_price"])
    b = csv["BTC"].vol_surface.implied_vol(m["strike"], T, m["underlying_price"])
    c = okx["BTC"].vol_surface.implied_vol(m["strike"], T, m["underlying_price"])
    # CSV and OKX carry the same bid/ask vols (the chain's columns): same fit; the Deribit payload has only
    # prices, whose implied vols differ from Deribit's rounded ones
    np.testing.assert_allclose(b, c, atol=1e-9)
    assert np.abs(a - b)[T > 1 / 365].max() < 0.015
    assert okx["BTC"].index_price == deribit_market["BTC"].index_price


def test_published_deribit_ticker_example_gives_perpetual_index_and_funding(tmp_path):
    t = _load_json(V / "deribit_docs_public_ticker_perpetual.response.json")
    snap = load_market(V / "deribit_docs_public_ticker_perpetual.response.json", now_ms=t["result"]["timestamp"])
    btc = snap["BTC"]
    assert (btc.index_price, btc.perpetual_price, btc.funding_rate) == (36297.02, 36288.31, 0.00002203)
    assert btc.vol_surface is None and snap.timestamp_ms == 1623059681955


def test_published_book_summary_example_fails_closed():
    """The published example is one ETH put (and inconsistent: mark 80 vs bid/ask 0.15/0.34, no mark_iv):
    a mark of 80 ETH for one ETH put is above any option price, so no vol can be implied from it."""
    with pytest.raises(MarketDataError, match=r"ETH-22FEB19-140-P.*'mark_price' 80.0 has no implied vol"):
        load_market(V / "deribit_docs_public_get_book_summary_by_currency.response.json", max_age_s=None)


def test_instruments_listing_only_is_not_a_market():
    with pytest.raises(MarketDataError, match="no market records"):
        load_market(V / "deribit_docs_public_get_instruments.response.json", max_age_s=None)


# --------------------------------------------------------------------------- OKX
def test_okx_names():
    assert okx_name("BTC-USD-220309-33000-C")[0] == "BTC-9MAR22-33000-C"
    assert okx_name("BTC-USD-220325")[0] == "BTC-25MAR22"
    assert okx_name("BTC-USD-SWAP")[0] == "BTC-PERPETUAL"
    assert okx_name("BTC-USDT-SWAP")[0] == "BTC_USDT-PERPETUAL"
    with pytest.raises(MarketDataError, match="only coin-margined"):
        okx_name("BTC-USDT-220325-30000-C")
    with pytest.raises(MarketDataError, match="YYMMDD"):
        okx_name("BTC-USD-2203-30000-C")


def test_published_okx_examples():
    # two options of one strike: too few to fit a smile; the message names the expiry and instruments
    with pytest.raises(MarketDataError, match=r"expiry 9MAR22 of BTC has 1 strike\(s\)"):
        load_market([V / "okx_docs_public_opt_summary.response.json", V / "okx_btc_index_tickers_2020-05-14.json"],
                    max_age_s=None, max_skew_s=None)
    # placeholders: mark 200 for BTC-USDT-SWAP; without an index payload the loader says what is missing
    with pytest.raises(MarketDataError, match="no index price"):
        load_market(V / "okx_docs_public_mark_price.response.json", max_age_s=None)
    # placeholder tickers (LTC and BTC swaps at 9999.99/8888.88): the BTC index is there, LTC's is not
    with pytest.raises(MarketDataError, match="underlying LTC: no index price"):
        load_market([V / "okx_docs_market_tickers.response.json", V / "okx_btc_index_tickers_2020-05-14.json"],
                    max_age_s=None, max_skew_s=None)


# --------------------------------------------------------------------------- checks
def test_stale_and_future_marks(deribit_market):
    with pytest.raises(MarketDataError, match=r"stale mark: .*more than max_age_s=300"):
        load_market(DERIBIT, now_ms=CHAIN_TS + 10 * 60_000)
    with pytest.raises(MarketDataError, match="after now"):
        load_market(DERIBIT, now_ms=CHAIN_TS - 3_600_000)
    # max_age_s=None: a historical market
    assert load_market(DERIBIT, now_ms=CHAIN_TS + 10**9, max_age_s=None).timestamp_ms == CHAIN_TS


def test_marks_of_different_instants(tmp_path):
    d = _load_json(DERIBIT[0])
    d["result"][5]["creation_timestamp"] -= 3_600_000
    p = _write(tmp_path, "summary.json", d)
    with pytest.raises(MarketDataError, match=rf"marks of different instants: .*{d['result'][5]['instrument_name']}"):
        load_market([p, *DERIBIT[1:]], now_ms=CHAIN_TS, max_age_s=None)


def test_future_mark_disagreeing_with_option_forward(tmp_path):
    d = _load_json(DERIBIT[1])
    i = next(i for i, r in enumerate(d["result"]) if r["instrument_name"] == "BTC-26JUN20")
    d["result"][i]["mark_price"] *= 1.01
    p = _write(tmp_path, "futures.json", d)
    with pytest.raises(MarketDataError, match=r"forward of expiry 26JUN20 .*future 'BTC-26JUN20'.*differ by 0\.99%"):
        load_market([DERIBIT[0], p, DERIBIT[3]], now_ms=CHAIN_TS)


def test_missing_expiry_and_thin_expiry(tmp_path):
    d = _load_json(DERIBIT[2])
    extra = copy.deepcopy(d["result"][0])
    extra.update(instrument_name="BTC-31JUL20-9000-C", expiration_timestamp=1596182400000)
    d["result"].append(extra)
    p = _write(tmp_path, "instruments.json", d)
    with pytest.raises(MarketDataError, match=r"expiry 31JUL20 .*listed but has no option marks"):
        load_market([DERIBIT[0], DERIBIT[1], p, DERIBIT[3]], now_ms=CHAIN_TS)
    s = _load_json(DERIBIT[0])
    s["result"] = [r for r in s["result"] if "25DEC20" not in r["instrument_name"]
                   or r["instrument_name"].split("-")[2] in ("8000", "9000", "10000")]
    p = _write(tmp_path, "summary.json", s)
    with pytest.raises(MarketDataError, match=r"expiry 25DEC20 of BTC has 3 strike\(s\)"):
        load_market([p, DERIBIT[1], DERIBIT[3]], now_ms=CHAIN_TS)


@pytest.mark.parametrize("field,value,message", [
    ("mark_iv", -5.0, r"'mark_iv' is -0\.05"),
    ("mark_price", float("inf"), r"'mark_price' is inf"),
    ("underlying_price", None, r"'underlying_price' \(forward\) is nan"),
    ("creation_timestamp", "soon", r"'creation_timestamp' is 'soon', not a number"),
])
def test_bad_values_name_file_instrument_field(tmp_path, field, value, message):
    d = _load_json(DERIBIT[0])
    d["result"][3][field] = value
    p = tmp_path / "summary.json"
    p.write_text(json.dumps(d, allow_nan=True))
    name = d["result"][3]["instrument_name"]
    with pytest.raises(MarketDataError, match=rf"summary\.json: instrument '{name}': .*{message}"):
        load_market([p, *DERIBIT[1:]], now_ms=CHAIN_TS)


def test_argument_and_file_errors(tmp_path):
    with pytest.raises(MarketDataError, match="no such file"):
        load_market(tmp_path / "nope.json")
    p = _write(tmp_path, "x.json", {"hello": 1})
    with pytest.raises(MarketDataError, match="not a recognised venue payload"):
        load_market(p, max_age_s=None)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MarketDataError, match="not valid JSON"):
        load_market(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError, match="format"):
        load_market(p, format="excel")
    err = _write(tmp_path, "err.json", {"jsonrpc": "2.0", "error": {"code": 10009, "message": "not_enough_funds"}})
    with pytest.raises(MarketDataError, match="is an error"):
        load_market(err)


# --------------------------------------------------------------------------- marks tables
@pytest.mark.slow  # surface fits of a real chain (scipy); skipped by the sanitizer run
def test_marks_csv_with_prices_only_and_iso_timestamps(tmp_path):
    """A plain marks table: name, mark price (coin), forward, index, ISO timestamp; vols are implied."""
    m = read_deribit_chain().marks
    lines = ["instrument_name,mark_price,underlying_price,index_price,timestamp"]
    import datetime as dt
    for i in range(len(m["name"])):
        t = dt.datetime.fromtimestamp(m["timestamp_ms"][i] / 1000, tz=dt.timezone.utc).isoformat()
        lines.append(f"{m['name'][i]},{float(m['mark_price'][i])!r},{float(m['underlying_price'][i])!r},"
                     f"{float(m['index_price'][i])!r},{t}")
    p = tmp_path / "marks.csv"
    p.write_text("\n".join(lines))
    snap = load_market(p, now_ms=CHAIN_TS)
    T = (m["expiry_ms"] - snap.timestamp_ms) / MS_PER_YEAR
    iv = snap["BTC"].vol_surface.implied_vol(m["strike"], T, m["underlying_price"])
    ok = T > 1 / 365
    assert np.sqrt(np.mean((iv - m["mark_iv"])[ok] ** 2)) < 0.03
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    cols = {c: [x.split(",")[j] for x in lines[1:]] for j, c in enumerate(lines[0].split(","))}
    pq.write_table(pa.table(cols), tmp_path / "marks.parquet")
    snap2 = load_market(tmp_path / "marks.parquet", now_ms=CHAIN_TS)
    np.testing.assert_array_equal(snap2["BTC"].vol_surface.implied_vol(m["strike"], T, m["underlying_price"]), iv)


# --------------------------------------------------------------------------- saved snapshots
@pytest.mark.parametrize("suffix", [".json", ".parquet", ".arrow"])
@pytest.mark.parametrize("which", ["chain", "default"])
def test_save_load_round_trip_is_exact(tmp_path, deribit_market, suffix, which):
    if suffix != ".json":
        pytest.importorskip("pyarrow")
    snap = deribit_market if which == "chain" else default_market()
    p = save_market(snap, tmp_path / f"snap{suffix}")
    back = load_market(p, now_ms=snap.timestamp_ms)
    assert back.timestamp_ms == snap.timestamp_ms and list(back.underlyings) == list(snap.underlyings)
    rng = np.random.default_rng(1)
    for name, um in snap.underlyings.items():
        bm = back[name]
        assert (bm.index_price, bm.perpetual_price, bm.funding_rate) == (um.index_price, um.perpetual_price,
                                                                        um.funding_rate)
        np.testing.assert_array_equal(bm.forward_curve.times, um.forward_curve.times)
        np.testing.assert_array_equal(bm.forward_curve.basis, um.forward_curve.basis)
        K = um.index_price * np.exp(rng.uniform(-2, 2, 500))
        T = rng.uniform(0, 1.5, 500)
        F = um.forward(T)
        np.testing.assert_array_equal(bm.vol_surface.implied_vol(K, T, F), um.vol_surface.implied_vol(K, T, F))
        assert bm.vol_surface.report == um.vol_surface.report
        assert bm.vol_surface.lifted == um.vol_surface.lifted
        for a, b in zip(bm.vol_surface.slices, um.vol_surface.slices):
            assert type(a) is type(b) and a.label == b.label and a.T == b.T
    with pytest.raises(MarketDataError, match="stale snapshot"):
        load_market(p, now_ms=snap.timestamp_ms + 3_600_000)


def test_saved_snapshot_tampering_fails_closed(tmp_path, deribit_market):
    p = save_market(deribit_market, tmp_path / "s.json")
    d = json.loads(p.read_text())
    d["underlyings"]["BTC"]["vol_surface"]["slices"][2]["values"][3] = -1.0
    p.write_text(json.dumps(d))
    with pytest.raises(MarketDataError, match="invalid values.*total variance must be finite and > 0"):
        load_market(p, max_age_s=None)
    del d["underlyings"]["BTC"]["forward_curve"]
    p.write_text(json.dumps(d))
    with pytest.raises(MarketDataError, match="malformed"):
        load_market(p, max_age_s=None)


def test_check_market_covers(deribit_market):
    from dpm.market.loaders import check_market_covers
    from dpm.market.table import InstrumentTable

    ok = InstrumentTable.from_names(["BTC-22MAY20-9250-P", "BTC-26JUN20", "BTC-PERPETUAL", "BTC-25DEC20-12000-C"])
    check_market_covers(deribit_market, ok)
    with pytest.raises(MarketDataError, match=r"'BTC-31JUL20-9000-C': the market has no smile for its expiry 2020-07-31"):
        check_market_covers(deribit_market, InstrumentTable.from_names(["BTC-22MAY20-9250-P", "BTC-31JUL20-9000-C"]))
    with pytest.raises(MarketDataError, match=r"'BTC-31JUL20': the market has no forward"):
        check_market_covers(deribit_market, InstrumentTable.from_names(["BTC-31JUL20"]))
    with pytest.raises(MarketDataError, match=r"underlying 'ETH' is not in the market"):
        check_market_covers(deribit_market, InstrumentTable.from_names(["ETH-PERPETUAL"]))
