"""Behaviour the mutation run (docs/robustness.md, "Mutation testing") found untested in the readers
and the account book: every refusal names its file, the JSON account layout, generic column types,
Deribit chain details, book lookups and subsets."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from dpm.errors import (
    InvalidInputError,
    InvalidTypeError,
    MarketDataError,
    UnknownAccountError,
    UnknownInstrumentError,
)
from dpm.market.loaders.deribit import DERIBIT_SAMPLE_CHAIN, read_deribit_chain
from dpm.market.sample import default_instruments
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import Account, AccountBook
from dpm.portfolio.io import (
    read_accounts,
    read_columns,
    read_instruments,
    write_accounts,
    write_columns,
    write_instruments,
)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def table():
    return default_instruments()


def _acc(accounts, **extra) -> str:
    return json.dumps({"accounts": accounts, **extra})


# ----------------------------------------------------------------------------------------------------
# every refusal names the file, the field and where
# ----------------------------------------------------------------------------------------------------
JSON_CASES = [
    ('[]', "expected {'accounts': [...]}"),
    ('{"accounts": {}}', "expected {'accounts': [...]}"),
    (_acc([{"positions": []}]), "accounts[0] has no 'account_id'"),
    (_acc(["A"]), "accounts[0] has no 'account_id'"),
    (_acc([{"account_id": "A", "positions": {}}]), "positions of accounts[0] is dict, expected a list"),
    (_acc([{"account_id": "A", "positions": [["BTC-PERPETUAL"]]}]), "accounts[0].positions[0] is ['BTC-PERPETUAL']"),
    (_acc([{"account_id": "A", "positions": ["BTC-PERPETUAL"]}]), "accounts[0].positions[0] is 'BTC-PERPETUAL'"),
    (_acc([{"account_id": "A", "collateral": [1]}]), "collateral of accounts[0] is list, expected an object"),
    (_acc([{"account_id": "A", "collateral": {"BTC": -1}}]),
     "amount at accounts[0].collateral['BTC'] (account 'A', currency 'BTC') is -1, must be >= 0"),
    (_acc([{"account_id": "A", "collateral": {"btc": 1}}]),
     "currency at accounts[0].collateral['btc'] is 'btc', not an upper-case currency code"),
    (_acc([{"account_id": "A", "collateral": {"DOGE": 1}}], currencies=["BTC"]),
     "currency at accounts[0].collateral['DOGE'] is 'DOGE', not one of the book's currencies ('BTC',)"),
    (_acc([{"account_id": 7}]), "account_id at accounts[0] is 7, not text"),
    (_acc([{"account_id": "A"}], currencies="BTC"), "currencies is str, expected a list"),
    (_acc([{"account_id": "A"}], currencies=[1]), "currencies at currencies[0] is 1, not text"),
    (_acc([{"account_id": "A", "positions": [[5, 1]]}]), "instrument at accounts[0].positions[0] is 5, not text"),
    (_acc([{"account_id": "A", "positions": [["BTC-PERPETUAL", None]]}]),
     "quantity at accounts[0].positions[0] (account 'A', instrument 'BTC-PERPETUAL') is missing"),
    (_acc([{"account_id": "A"}, {"account_id": "A"}]), "account_id: duplicate id 'A' at indices 0 and 1"),
    (_acc([{"account_id": "A", "positions": [["BTC-NOPE", 1]]}]),
     "instrument at accounts[0].positions[0] (account 'A') is 'BTC-NOPE', not in the instrument table"),
]


@pytest.mark.parametrize(("text", "message"), JSON_CASES, ids=[m[:40] for _, m in JSON_CASES])
def test_json_account_refusals_name_file_and_place(tmp_path, table, text, message) -> None:
    p = tmp_path / "book.json"
    p.write_text(text)
    with pytest.raises((InvalidInputError, InvalidTypeError, UnknownInstrumentError)) as exc:
        read_accounts(p, table)
    assert str(exc.value).startswith(f"{p}: ")
    assert message in str(exc.value)


TABLE_CASES = [
    ("p.csv", "account_id,instrument\nA,BTC-PERPETUAL\n", None, "no 'quantity' column (columns: account_id, instrument)"),
    ("p.csv", "account_id,instrument,quantity\n,BTC-PERPETUAL,1\n", None, "account_id at row 1 is missing"),
    ("p.csv", "account_id,instrument,quantity\nA,,1\n", None, "instrument at row 1 is missing"),
    ("p.csv", POS := "account_id,instrument,quantity\nA,BTC-PERPETUAL,1\n", "account_id,currency\nA,BTC\n",
     "p.collateral.csv: no 'amount' column"),
    ("p.csv", POS, "account_id,currency,amount\nA,BTC,x\n",
     "p.collateral.csv: amount at row 1 (account 'A', currency 'BTC') is 'x', not a number"),
    ("p.csv", POS, "account_id,currency,amount\nA,BTC,\n", "p.collateral.csv: amount at row 1 (account 'A', "
                                                             "currency 'BTC') is missing"),
    ("p.csv", POS, "account_id,currency,amount\nA,,1\n", "p.collateral.csv: currency at row 1 is missing"),
    ("p.csv", POS, "account_id,currency,amount\nA,US D,1\n",
     "p.collateral.csv: currency at row 1 is 'US D', not an upper-case currency code"),
    ("p.csv", POS, "account_id,currency,amount\nA,ÉUR,1\n", "currency at row 1 is 'ÉUR', not an upper-case"),
]


@pytest.mark.parametrize(("name", "positions", "collateral", "message"), TABLE_CASES,
                         ids=[m[:40] for *_, m in TABLE_CASES])
def test_csv_account_refusals_name_file_and_place(tmp_path, table, name, positions, collateral, message) -> None:
    p = tmp_path / name
    p.write_text(positions)
    if collateral is not None:
        (tmp_path / "p.collateral.csv").write_text(collateral)
    with pytest.raises(InvalidInputError) as exc:
        read_accounts(p, table)
    assert str(exc.value).startswith(str(tmp_path))
    assert message in str(exc.value)


def test_instrument_refusals_name_file_and_row(tmp_path) -> None:
    cases = [
        ("i.csv", "strike\n1\n", "i.csv: no 'name' column (columns: strike)"),
        ("i.csv", "name,inverse\nBTC-PERPETUAL,maybe\n", "i.csv: inverse at row 1 is 'maybe', not true/false"),
        ("i.csv", "name,expiry_ms\nBTC-27DEC26,1.5\n", "i.csv: expiry_ms at row 1 is '1.5', not a whole number"),
        ("i.csv", "name,strike\nBTC-27DEC26-100000-C,inf\n", "i.csv: strike at row 1 is 'inf', not a finite number"),
        ("i.csv", "name,contract_size\nBTC-PERPETUAL,nan\n",
         "i.csv: contract_size at row 1 is 'nan', not a finite number"),
        ("i.csv", "name\n\n", None),  # a blank line is no row: an empty listing
        ("i.json", '{"instruments": 5}', "i.json: expected a list of instruments or {'instruments': [...]}"),
        ("i.json", '[{"name": "BTC-PERPETUAL"}, 3]', "i.json: instruments[1] is int, expected a record"),
        ("i.json", '[{"strike": 1}]', "i.json: instruments[0] has no 'name'"),
        ("i.json", '[{"name": "BTC-PERPETUAL", "inverse": "yes"}]',
         "i.json: inverse at instruments[0] is 'yes', not true/false"),
        ("i.json", '["BTC-PERPETUAL", "NOT A NAME"]', "i.json: row 1: name: 'NOT A NAME' is not a Deribit-style"),
        ("i.json", '[{"name": "X-THING", "kind": "perpetual"}]', "i.json: underlying: row 0 ('X-THING') is missing"),
    ]
    for name, text, message in cases:
        p = tmp_path / name
        p.write_text(text)
        if message is None:
            assert len(read_instruments(p)) == 0
            continue
        with pytest.raises(InvalidInputError) as exc:
            read_instruments(p)
        assert message in str(exc.value), str(exc.value)


# ----------------------------------------------------------------------------------------------------
# the JSON account layout
# ----------------------------------------------------------------------------------------------------
def test_json_accounts_layout_dict_positions_currencies_and_small_amounts(tmp_path, table) -> None:
    p = tmp_path / "b.json"
    p.write_text(_acc([
        {"account_id": "A", "positions": [{"instrument": "BTC-PERPETUAL", "quantity": 5},
                                          ["ETH-PERPETUAL", -2.5]], "collateral": {"XYZ": 0.5, "BTC": 0.25}},
        {"account_id": "B"},
    ], currencies=["XYZ", "BTC"]))
    book = read_accounts(p, table)
    assert book.currencies == ("XYZ", "BTC")  # the file's currency list, in its order
    assert book.account_id.tolist() == ["A", "B"]
    assert book["A"].positions == [("BTC-PERPETUAL", 5.0), ("ETH-PERPETUAL", -2.5)]
    assert book.collateral.tolist() == [[0.5, 0.25], [0.0, 0.0]]
    override = read_accounts(p, table, currencies=("BTC", "XYZ", "USDC"))  # the argument wins
    assert override.currencies == ("BTC", "XYZ", "USDC") and override.collateral[0].tolist() == [0.25, 0.5, 0.0]
    with pytest.raises(InvalidInputError, match="collateral_path: a JSON book is one file"):
        write_accounts(book, tmp_path / "c.json", collateral_path=tmp_path / "x.json")
    write_accounts(book, tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["format"] == "dpm.portfolio.accounts" and doc["currencies"] == ["XYZ", "BTC"]
    assert doc["accounts"][0]["collateral"] == {"XYZ": 0.5, "BTC": 0.25} and doc["accounts"][1]["collateral"] == {}
    assert read_accounts(tmp_path / "c.json", table).equals(book)


def test_csv_account_order_collateral_first_and_explicit_collateral_path(tmp_path, table) -> None:
    p, c = tmp_path / "p.csv", tmp_path / "c.csv"
    p.write_text("account_id,instrument,quantity\nB,BTC-PERPETUAL,1\nA,BTC-PERPETUAL,2\n")
    c.write_text("account_id,currency,amount\nZ,USDC,0.5\nA,BTC,0.1\n")
    book = read_accounts(p, table, collateral_path=c)
    assert book.account_id.tolist() == ["Z", "A", "B"]  # collateral file first, then positions
    assert book["Z"].collateral == {"USDC": 0.5} and book["A"].collateral == {"BTC": 0.1}
    assert len(read_accounts(p, table)) == 2  # no default p.collateral.csv: no collateral


# ----------------------------------------------------------------------------------------------------
# generic columns: types without declared dtypes, and writers
# ----------------------------------------------------------------------------------------------------
def test_json_and_parquet_columns_keep_their_own_types(tmp_path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"columns": {"f": [1.5, None], "b": [True, False], "i": [1, -2], "m": [1, "x"],
                                         "big": [2**70, 1]}}))
    cols = read_columns(p)
    assert cols["f"].dtype == np.float64 and np.isnan(cols["f"][1]) and cols["f"][0] == 1.5
    assert cols["b"].dtype == bool and cols["b"].tolist() == [True, False]
    assert cols["i"].dtype == np.int64 and cols["i"].tolist() == [1, -2]
    assert cols["m"].dtype == object and cols["m"].tolist() == [1, "x"]
    assert cols["big"].dtype == object and cols["big"].tolist() == [2**70, 1]  # not wrapped into int64
    p.write_text(json.dumps({"columns": {"e": []}}))
    assert read_columns(p)["e"].dtype == object and len(read_columns(p)["e"]) == 0
    q = tmp_path / "c.parquet"
    pq.write_table(pa.table({"f": pa.array([1.5, None]), "i": pa.array([1, 2]), "n": pa.array([1, None]),
                             "b": pa.array([True, False]), "s": pa.array(["x", None]),
                             "l": pa.array([[1], None], type=pa.list_(pa.int64()))}), q)
    cols = read_columns(q)
    assert cols["f"].dtype == np.float64 and np.isnan(cols["f"][1])
    assert cols["i"].dtype.kind == "i" and cols["i"].tolist() == [1, 2]
    assert cols["n"].tolist() == [1, None] and cols["n"].dtype == object  # an int column with a null
    assert cols["b"].dtype == bool and cols["s"].tolist() == ["x", None] and cols["l"].tolist() == [[1], None]


def test_read_columns_refusals(tmp_path) -> None:
    p = tmp_path / "c.json"
    for text, message in (('{"x": 1}', "expected a JSON object with a 'columns' object"),
                          ('[1]', "expected a JSON object with a 'columns' object"),
                          ('{"columns": {"a": 5}}', "column 'a' is int, expected a list")):
        p.write_text(text)
        with pytest.raises(InvalidInputError, match=f"c.json: {message}"):
            read_columns(p)
    with pytest.raises(InvalidInputError, match="dtypes: unknown dtype 'complex' for column 'a'"):
        p.write_text('{"columns": {"a": [1]}}')
        read_columns(p, {"a": "complex"})
    with pytest.raises(InvalidInputError, match="format: expected 'csv', 'json', 'parquet' or 'arrow', got 'xml'"):
        read_columns(p, format="xml")
    assert read_columns(tmp_path / "c.json", format=".JSON")["a"].tolist() == [1]
    with pytest.raises(InvalidInputError, match=r"cannot tell the format of .*c.txt"):
        read_columns(tmp_path / "c.txt")


def test_write_columns_checks_and_csv_cells(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match=r"columns: lengths differ \(\{'a': 1, 'b': 2\}\)"):
        write_columns(tmp_path / "x.csv", {"a": [1], "b": [1, 2]})
    with pytest.raises(InvalidInputError, match="columns: column names must be non-empty str, got ''"):
        write_columns(tmp_path / "x.csv", {"": [1]})
    with pytest.raises(InvalidInputError, match="column 'm' cannot be stored in Parquet"):
        write_columns(tmp_path / "x.parquet", {"m": np.array([1, "x", 2.5], dtype=object)})
    assert not list(tmp_path.iterdir())
    mixed = np.array([None, True, 2.5, np.nan, 3, "=x", "a,b"], dtype=object)
    write_columns(tmp_path / "m.csv", {"m": mixed, "n": np.arange(7)})
    text = (tmp_path / "m.csv").read_text()
    assert text.splitlines()[1:] == [",0", "true,1", "2.5,2", ",3", "3,4", "'=x,5", '"a,b",6']
    write_columns(tmp_path / "l.csv", {"x": [1.0, 2.5]})  # a list column, not an array
    assert (tmp_path / "l.csv").read_text() == "x\n1.0\n2.5\n"
    write_columns(tmp_path / "e.csv", {"a": np.zeros(0), "b": np.zeros(0)})
    assert (tmp_path / "e.csv").read_text() == "a,b\n"
    write_columns(tmp_path / "f.json", {"f": [1.0, float("nan")], "s": ["x", None], "b": [True, False]})
    assert json.loads((tmp_path / "f.json").read_text()) == {"columns": {"f": [1.0, None], "s": ["x", None],
                                                                        "b": [True, False]}}
    write_columns(tmp_path / "p.parquet", {"f": np.array([1.0, np.nan]), "o": np.array([1, None], dtype=object),
                                           "s": np.array(["x", None], dtype=object)})
    t = pq.read_table(tmp_path / "p.parquet")
    assert t.column("f").to_pylist() == [1.0, None] and t.column("o").to_pylist() == [1, None]
    assert t.column("s").to_pylist() == ["x", None]


def test_instrument_files_in_every_format_hold_the_documented_columns(tmp_path) -> None:
    t = InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-27DEC26", "BTC-27DEC26-100000-C"])
    write_instruments(t, tmp_path / "i.json")
    doc = json.loads((tmp_path / "i.json").read_text())
    assert doc["format"] == "dpm.market" and doc["version"] == 1 and doc["instruments"][2]["option_type"] == "call"
    write_instruments(t, tmp_path / "i.parquet")
    pt = pq.read_table(tmp_path / "i.parquet")
    assert pt.column("expiry_ms").type == pa.int64() and pt.column("expiry_ms").to_pylist()[0] is None
    assert pt.column("strike").to_pylist()[:2] == [None, None] and pt.column("kind").to_pylist()[0] == "perpetual"
    with open(tmp_path / "i.csv", "w"):
        pass
    write_instruments(t, tmp_path / "i.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "i.csv").read_text())))
    assert rows[0]["strike"] == "" and rows[2]["option_type"] == "call" and rows[1]["inverse"] == "true"
    for fmt in ("json", "parquet", "csv"):
        assert read_instruments(tmp_path / f"i.{fmt}").equals(t)
    with pytest.raises(InvalidTypeError, match="table: expected an InstrumentTable, got list"):
        write_instruments([], tmp_path / "x.csv")


# ----------------------------------------------------------------------------------------------------
# Deribit chain details
# ----------------------------------------------------------------------------------------------------
def _chain(tmp_path, edit) -> tuple:
    lines = DERIBIT_SAMPLE_CHAIN.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    rows = [next(csv.reader([line])) for line in lines[1:4]]
    edit(header, rows)
    p = tmp_path / "d.csv"
    with open(p, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    return p, header, rows


def test_deribit_chain_details(tmp_path) -> None:
    def blank_first_greeks(header, rows):
        rows[0][header.index("greeks")] = ""

    p, header, rows = _chain(tmp_path, blank_first_greeks)
    chain = read_deribit_chain(p)
    name = {n: i for i, n in enumerate(chain.table.name.tolist())}
    first, later = rows[0][header.index("instrument_name")], rows[2][header.index("instrument_name")]
    assert np.isnan(chain.marks["delta"][name[first]])
    assert not np.isnan(chain.marks["delta"][name[later]])  # a blank cell skips one row, not the rest

    def small_forward_no_index(header, rows):
        rows[1][header.index("underlying_price")] = "0.5"  # tiny but positive: a valid price
        j = header.index("underlying_index")
        del header[j]
        for r in rows:
            del r[j]

    p, header, rows = _chain(tmp_path, small_forward_no_index)
    chain = read_deribit_chain(p)
    assert 0.5 in chain.marks["underlying_price"].tolist()
    assert chain.marks["underlying_index"].tolist() == ["", "", ""]

    def perpetual_second(header, rows):
        rows[1][header.index("instrument_name")] = "BTC-PERPETUAL"

    p, *_ = _chain(tmp_path, perpetual_second)
    with pytest.raises(MarketDataError, match=r"d.csv: row 2 \('BTC-PERPETUAL'\) is not an option"):
        read_deribit_chain(p)

    def greeks_list(header, rows):
        rows[2][header.index("greeks")] = "[1, 2]"

    p, *_ = _chain(tmp_path, greeks_list)
    with pytest.raises(MarketDataError, match=r"d.csv: greeks at row 3 \('BTC-.*'\) is '\[1, 2\]', not a dict"):
        read_deribit_chain(p)

    def header_only(header, rows):
        rows.clear()

    p, *_ = _chain(tmp_path, header_only)
    with pytest.raises(MarketDataError, match="d.csv: no rows"):
        read_deribit_chain(p)

    def no_mark_iv(header, rows):
        j = header.index("mark_iv")
        del header[j]
        for r in rows:
            del r[j]

    p, *_ = _chain(tmp_path, no_mark_iv)
    with pytest.raises(MarketDataError, match="d.csv: no 'mark_iv' column"):
        read_deribit_chain(p)


# ----------------------------------------------------------------------------------------------------
# the account book: lookups, subsets, other constructors
# ----------------------------------------------------------------------------------------------------
def test_book_lookups_and_subsets(table) -> None:
    book = AccountBook.from_arrays([0, 1, 2, 2], [0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], table,
                                   account_ids=["a", "b", "c"])
    assert book.index_of("b") == 1 and book.index_of(np.array(["c", "a"], dtype=object)).tolist() == [2, 0]
    assert book.index_of([]).tolist() == []
    with pytest.raises(UnknownAccountError, match="account_id: unknown account 'zz' at position 1"):
        book.index_of(["a", "zz"])
    with pytest.raises(UnknownAccountError, match="account_id: unknown account 'zz'$"):
        book.index_of("zz")
    sub = book.subset([-1, 0])
    assert sub.account_id.tolist() == ["c", "a"] and sub.indptr.tolist() == [0, 2, 3]
    assert sub.quantity.tolist() == [3.0, 4.0, 1.0]
    assert book.subset(np.array([False, True, False])).account_id.tolist() == ["b"]
    assert len(book.subset([])) == 0
    with pytest.raises(UnknownAccountError, match=r"account_indices: -4 at position 0 is not in \[0, 3\)"):
        book.subset([-4])
    with pytest.raises(UnknownAccountError, match=r"account_indices: 3 at position 1 is not in \[0, 3\)"):
        book.subset([0, 3])
    with pytest.raises(InvalidInputError, match=r"mask must have shape \(3,\), got \(2,\)"):
        book.subset(np.array([True, False]))
    with pytest.raises(InvalidInputError, match="selected twice"):
        book.subset([1, -2])
    with pytest.raises(InvalidTypeError, match="expected ints or a boolean mask"):
        book.subset(["a"])
    assert book.account(-1).id == "c" and book[2].positions == book["c"].positions
    with pytest.raises(UnknownAccountError, match=r"account: index 3 is not in \[0, 3\)"):
        book.account(3)
    with pytest.raises(UnknownAccountError, match=r"index -4"):
        book.account(-4)
    with pytest.raises(InvalidTypeError, match="account: expected an int index, got True"):
        book.account(True)
    assert book.account_of_position().tolist() == [0, 1, 2, 2]
    assert book.account_of_position().dtype == np.int64
    assert book.first_position_in(np.arange(len(table)) == 3) == (2, 3)
    assert book.first_position_in(np.zeros(len(table), bool)) is None
    cols = book.collateral_columns(include_zero=True)
    assert cols["currency"].tolist()[:4] == ["BTC", "ETH", "USDC", "USDT"] and len(cols["amount"]) == 12
    assert len(book.collateral_columns(include_zero=False)["amount"]) == 0
    empty_c = AccountBook.from_arrays([0], [0], [1.0], table, currencies=())
    assert empty_c.collateral_columns()["currency"].tolist() == []
    e = AccountBook.empty(table, currencies=("USDC",))
    assert len(e) == 0 and e.currencies == ("USDC",) and e.indptr.tolist() == [0]


def test_from_positions_and_from_accounts_refusals(table) -> None:
    with pytest.raises(InvalidInputError, match="positions: columns account_id, instrument and quantity differ"):
        AccountBook.from_positions({"account_id": ["a"], "instrument": [], "quantity": [1.0]}, table)
    with pytest.raises(InvalidInputError, match="account_id: expected a non-empty str, position 0 has ''"):
        AccountBook.from_positions([{"account_id": "", "instrument": "BTC-PERPETUAL", "quantity": 1}], table)
    with pytest.raises(InvalidInputError, match="positions: missing column 'quantity'"):
        AccountBook.from_positions({"account_id": ["a"], "instrument": ["BTC-PERPETUAL"]}, table)
    with pytest.raises(InvalidInputError, match="positions: row 0 has no 'quantity'"):
        AccountBook.from_positions([{"account_id": "a", "instrument": "BTC-PERPETUAL"}], table)
    with pytest.raises(InvalidTypeError, match="positions: row 0 is int, expected a dict"):
        AccountBook.from_positions([5], table)
    with pytest.raises(InvalidInputError, match="account_id: 'b' in positions is not in account_ids"):
        AccountBook.from_positions([{"account_id": "b", "instrument": "BTC-PERPETUAL", "quantity": 1}], table,
                                   account_ids=["a"])
    with pytest.raises(InvalidInputError, match="collateral: account 'z' is not in account_ids"):
        AccountBook.from_positions([], table, collateral={"z": {"BTC": 1.0}}, account_ids=["a"])
    with pytest.raises(InvalidInputError, match="collateral: account_id of row 0 is 3, expected a str"):
        AccountBook.from_positions([], table, collateral={"account_id": [3], "currency": ["BTC"], "amount": [1.0]})
    with pytest.raises(InvalidInputError, match=r"unknown currency 'DOGE' for account 'a' \(row 0\)"):
        AccountBook.from_positions([], table, collateral={"a": {"DOGE": 1.0}}, currencies=("BTC",))
    with pytest.raises(InvalidInputError, match=r"amount must be finite and >= 0; account 'a', currency 'BTC' \(row 1\)"):
        AccountBook.from_positions([], table, collateral=[{"account_id": "a", "currency": "BTC", "amount": 1.0},
                                                          {"account_id": "a", "currency": "BTC", "amount": -1.0}])
    book = AccountBook.from_positions([], table, collateral={"a": {"BTC": 1.0, "XRP": 2.0}, "b": {}})
    assert book.currencies == ("BTC", "ETH", "USDC", "USDT", "XRP") and book.collateral[0].tolist() == [1, 0, 0, 0, 2]
    assert book.account_id.tolist() == ["a"]  # an account with neither positions nor collateral rows is not made
    with pytest.raises(InvalidTypeError, match="accounts: item 1 is str, expected an Account"):
        AccountBook.from_accounts([Account("a"), "b"], table)
    with pytest.raises(InvalidInputError, match=r"positions: account 'a' has \('BTC-PERPETUAL',\), expected"):
        AccountBook.from_accounts([Account("a", [("BTC-PERPETUAL",)])], table)
    with pytest.raises(UnknownInstrumentError, match=r"unknown instrument name 'nope' at position 1 in account 'b'"):
        AccountBook.from_accounts([Account("a", [("BTC-PERPETUAL", 1.0)]), Account("b", [("nope", 1.0)])], table)
    acc = AccountBook.from_accounts([Account("a", [("BTC-PERPETUAL", 1.0)], {"XRP": 3.0}), Account("b")], table)
    assert acc.currencies[-1] == "XRP" and acc["a"].collateral == {"XRP": 3.0} and acc["b"].positions == []
