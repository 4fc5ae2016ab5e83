"""Tests of dpm.portfolio.io: round trips of every format and the Deribit chain reader."""

from __future__ import annotations

import ast
import csv
import json
import math

import numpy as np
import pytest

from dpm.errors import InvalidInputError, MarketDataError, UnknownInstrumentError
from dpm.market.loaders.deribit import DERIBIT_SAMPLE_CHAIN, read_deribit_chain
from dpm.market.sample import default_instruments
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.io import (
    collateral_path_for,
    read_accounts,
    read_columns,
    read_instruments,
    write_accounts,
    write_columns,
    write_instruments,
)
from dpm.portfolio.sample import generate_accounts

FORMATS = ["csv", "json", "parquet"]
NAMES = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC_USDC-PERPETUAL",
    "BTC-27DEC26",
    "BTC-27DEC26-60000-C",
    "BTC-27DEC26-60000-P",
    "XRP_USDC-27DEC26-0d625-C",
    "BTC_USDC",
    "BTC-SPOT",
    "ETH-5JAN27-3100-C",
]


@pytest.fixture(scope="module")
def table():
    return InstrumentTable.from_names(NAMES, contract_size={"BTC_USDC-PERPETUAL": 0.001})


@pytest.mark.parametrize("fmt", FORMATS)
def test_instruments_round_trip(tmp_path, table, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"instruments.{fmt}"
    write_instruments(table, path)
    back = read_instruments(path)
    assert back.equals(table)
    assert back.contract_size[NAMES.index("BTC_USDC-PERPETUAL")] == 0.001


@pytest.mark.parametrize("fmt", FORMATS)
def test_default_listing_round_trip(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    t = default_instruments()
    path = tmp_path / f"listing.{fmt}"
    write_instruments(t, path)
    assert read_instruments(path).equals(t)


def test_instruments_csv_is_plain_and_names_only_file_works(tmp_path, table):
    path = tmp_path / "i.csv"
    write_instruments(table, path)
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0] == {
        "name": "BTC-PERPETUAL",
        "kind": "perpetual",
        "underlying": "BTC",
        "option_type": "",
        "strike": "",
        "expiry_ms": "",
        "inverse": "true",
        "contract_size": "10.0",
        "settlement": "BTC",
    }
    assert rows[4]["option_type"] == "call" and rows[4]["strike"] == "60000.0"
    names_only = tmp_path / "names.csv"
    names_only.write_text("name\n" + "\n".join(NAMES) + "\n")
    assert read_instruments(names_only).equals(InstrumentTable.from_names(NAMES))
    js = tmp_path / "names.json"
    js.write_text(json.dumps(NAMES))
    assert read_instruments(js).equals(InstrumentTable.from_names(NAMES))


def test_instruments_bad_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,strike\nBTC-27DEC26-60000-C,abc\n")
    with pytest.raises(InvalidInputError, match=r"strike.*row 1.*'abc'"):
        read_instruments(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("name\nBTC-PERPETUAL\nBTC-PERPETUAL\n")
    with pytest.raises(InvalidInputError, match="duplicate"):
        read_instruments(dup)
    with pytest.raises(InvalidInputError, match="format"):
        read_instruments(tmp_path / "x.txt")


def _book(table):
    rng = np.random.default_rng(4)
    n, p = 25, 300
    acc = rng.integers(0, n - 3, p)  # the last 3 accounts have no positions
    inst = rng.integers(0, len(table), p)
    qty = rng.normal(size=p) * 10 ** rng.uniform(-3, 4, p)  # awkward floats: exactness matters
    coll = np.where(rng.random((n, 4)) < 0.5, rng.uniform(0, 1e4, (n, 4)) / 3, 0.0)
    ids = [f'acc/{i},"q" {i}' for i in range(n)][::-1]  # commas and quotes survive CSV quoting
    return AccountBook.from_arrays(acc, inst, qty, table, account_ids=ids, collateral=coll)


@pytest.mark.parametrize("fmt", FORMATS)
def test_accounts_round_trip(tmp_path, table, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    book = _book(table)
    path = tmp_path / f"book.{fmt}"
    write_accounts(book, path)
    if fmt != "json":
        assert collateral_path_for(path).exists()
    back = read_accounts(path, table)
    assert back.equals(book)
    assert back['acc/0,"q" 0'].positions == []


def test_accounts_explicit_collateral_path_and_missing(tmp_path, table):
    book = _book(table)
    pos, coll = tmp_path / "p.csv", tmp_path / "c.csv"
    write_accounts(book, pos, collateral_path=coll)
    assert read_accounts(pos, table, collateral_path=coll).equals(book)
    # without a collateral file the book has the accounts with positions and no collateral
    no_coll = read_accounts(pos, table)
    assert len(no_coll) == 22 and not no_coll.collateral.any()
    with pytest.raises(FileNotFoundError):
        read_accounts(pos, table, collateral_path=tmp_path / "missing.csv")


@pytest.mark.parametrize("quoted", [False, True])
def test_csv_rows_with_wrong_field_count(tmp_path, quoted):
    p = tmp_path / "p.csv"
    a = '"a"' if quoted else "a"
    p.write_text(f"account_id,instrument,quantity\n{a},BTC-PERPETUAL,1\n{a},BTC-PERPETUAL\n")
    with pytest.raises(InvalidInputError, match=r"row 2 has 2 fields"):
        read_columns(p)
    p.write_text(f"account_id,instrument,quantity\r\n{a},BTC-PERPETUAL,1\r\n")  # Windows line ends
    assert read_columns(p, {"quantity": "float"})["quantity"].tolist() == [1.0]


def test_accounts_bad_files(tmp_path, table):
    p = tmp_path / "p.csv"
    p.write_text("account_id,instrument,quantity\na,BTC-PERPETUAL,1\nb,BTC-29DEC26,2\n")
    with pytest.raises(UnknownInstrumentError, match="BTC-29DEC26"):
        read_accounts(p, table)
    p.write_text("account_id,instrument,quantity\na,BTC-PERPETUAL,nan\n")
    with pytest.raises(InvalidInputError, match=r"quantity.*'a'.*BTC-PERPETUAL"):
        read_accounts(p, table)
    p.write_text("account_id,instrument,quantity\na,BTC-PERPETUAL,x\n")
    with pytest.raises(InvalidInputError, match=r"quantity.*row 1.*'x'"):
        read_accounts(p, table)
    c = tmp_path / "p.collateral.csv"
    p.write_text("account_id,instrument,quantity\na,BTC-PERPETUAL,1\n")
    c.write_text("account_id,currency,amount\na,BTC,-1\n")
    with pytest.raises(InvalidInputError, match=r"collateral.*'a'.*'BTC'"):
        read_accounts(p, table)
    c.write_text("account_id,currency,amount\na,DOGE,1\n")
    with pytest.raises(InvalidInputError, match=r"currency at row 1 is 'DOGE', not one of the book's currencies"):
        read_accounts(p, table, currencies=("BTC", "USDC"))


def test_generated_book_round_trip_csv(tmp_path):
    t = default_instruments()
    book = generate_accounts(300, t, seed=2)
    write_accounts(book, tmp_path / "g.csv")
    assert read_accounts(tmp_path / "g.csv", t).equals(book)


@pytest.mark.parametrize("fmt", FORMATS)
def test_generic_columns_round_trip(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    cols = {
        "s": np.array(["a", "b,c", None], dtype=object),
        "f": np.array([0.1, np.nan, -1e300]),
        "i": np.array([1, -2, 3]),
        "b": np.array([True, False, True]),
    }
    path = tmp_path / f"c.{fmt}"
    write_columns(path, cols)
    back = read_columns(path, {"f": "float", "i": "int", "b": "bool"})
    assert list(back["s"]) == ["a", "b,c", None]
    np.testing.assert_array_equal(back["f"], cols["f"])
    np.testing.assert_array_equal(back["i"], cols["i"])
    np.testing.assert_array_equal(back["b"], cols["b"])


def test_parquet_without_pyarrow_names_the_extra(tmp_path, table, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImportError, match=r"dpm\[io\]"):
        write_instruments(table, tmp_path / "x.parquet")


# ------------------------------------------------------------------------------------------- Deribit
def test_deribit_chain_loads():
    chain = read_deribit_chain()
    t, m = chain.table, chain.marks
    assert len(t) == 310 and (t.kind == Kind.OPTION).all() and t.underlyings == ("BTC",)
    assert len(np.unique(t.expiry_ms)) == 7
    assert t.inverse.all() and (t.contract_size == 1.0).all()
    for k, v in m.items():
        assert len(v) == 310, k
        assert not v.flags.writeable
    # sorted by expiry, strike, call first
    order = np.lexsort((-t.option_type, t.strike, t.expiry_ms))
    np.testing.assert_array_equal(order, np.arange(310))
    assert t.strike.min() == 2500.0 and t.strike.max() == 36000.0


def test_deribit_chain_values_match_the_raw_file():
    chain = read_deribit_chain(DERIBIT_SAMPLE_CHAIN)
    with open(DERIBIT_SAMPLE_CHAIN) as fh:
        rows = {r["instrument_name"]: r for r in csv.DictReader(fh)}
    t, m = chain.table, chain.marks
    for i in (0, 57, 155, 309):
        r = rows[t.name[i]]
        assert m["mark_price"][i] == float(r["mark_price"])
        assert m["mark_iv"][i] == float(r["mark_iv"]) / 100
        assert m["underlying_price"][i] == float(r["underlying_price"])
        assert m["index_price"][i] == float(r["index_price"])
        assert m["open_interest"][i] == float(r["open_interest"])
        assert m["timestamp_ms"][i] == int(r["timestamp"])
        assert m["expiry_ms"][i] == int(r["expiration_timestamp"]) == t.expiry_ms[i]
        assert t.strike[i] == float(r["strike"])
        assert (t.option_type[i] == 1) == (r["option_type"] == "call")
        g = ast.literal_eval(r["greeks"])
        for k in ("delta", "gamma", "vega", "theta", "rho"):
            assert m[k][i] == g[k]
        assert m["underlying_index"][i] == r["underlying_index"]
    # Deribit marks bid_iv 0 when there is none; empty book sides have NaN prices
    n_zero = sum(float(r["bid_iv"]) == 0 for r in rows.values())
    assert np.isnan(m["bid_iv"]).sum() == n_zero
    assert np.isnan(m["bid_price"]).sum() == sum(float(r["best_bid_amount"]) == 0 for r in rows.values())
    assert 0.2 < np.nanmedian(m["mark_iv"]) < 2.0  # decimal, not percent


def test_deribit_chain_black76_reproduces_marks():
    from scipy.stats import norm

    chain = read_deribit_chain()
    t, m = chain.table, chain.marks
    T = (t.expiry_ms - m["timestamp_ms"]) / (365 * 86400 * 1000)
    F, K, s = m["underlying_price"], t.strike, m["mark_iv"]
    d1 = (np.log(F / K) + 0.5 * s * s * T) / (s * np.sqrt(T))
    d2 = d1 - s * np.sqrt(T)
    call = F * norm.cdf(d1) - K * norm.cdf(d2)
    price = np.where(t.option_type > 0, call, call - F + K) / F
    ok = m["mark_price"] > 1e-3  # tiny marks are dominated by the mark's rounding
    rel = np.abs(price[ok] - m["mark_price"][ok]) / m["mark_price"][ok]
    assert np.median(rel) < 2e-4 and rel.max() < 1e-2


def test_deribit_chain_inconsistent_expiry(tmp_path):
    lines = DERIBIT_SAMPLE_CHAIN.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    row = next(csv.reader([lines[1]]))
    row[header.index("expiration_timestamp")] = "1590134400001"
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows([header, row])
    with pytest.raises(MarketDataError, match="expiration_timestamp"):
        read_deribit_chain(bad)
    assert math.isfinite(float(row[header.index("mark_price")]))
