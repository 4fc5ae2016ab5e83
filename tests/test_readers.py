"""Readers fail closed: encodings, repeated columns, one type rule per field, CSV-injection escaping.

Covers :mod:`dpm.portfolio.io`, :mod:`dpm.market.history` and :mod:`dpm.market.loaders.deribit`.
The Deribit test at the end compares every field of every row with an independent parse of the
raw file (it catches, for example, the bid and ask amount columns swapped).
"""
from __future__ import annotations

import ast
import codecs
import csv
import json
import math

import numpy as np
import pytest

from dpm.errors import DPMError, InvalidInputError, MarketDataError, MissingFileError, UnknownInstrumentError
from dpm.market.history import load_history
from dpm.market.loaders.deribit import DERIBIT_SAMPLE_CHAIN, read_deribit_chain
from dpm.market.sample import default_instruments
from dpm.portfolio.accounts import AccountBook
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

POSITIONS = "account_id,instrument,quantity\nA,BTC-PERPETUAL,1000\nB,ETH-PERPETUAL,-50.5\n"


@pytest.fixture(scope="module")
def table():
    return default_instruments()


# ----------------------------------------------------------------------------------------------------
# encodings
# ----------------------------------------------------------------------------------------------------
def test_utf8_with_bom_reads_like_utf8(tmp_path, table) -> None:
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_bytes(POSITIONS.encode())
    bom.write_bytes(codecs.BOM_UTF8 + POSITIONS.encode())
    (tmp_path / "bom.collateral.csv").write_bytes(codecs.BOM_UTF8 + b"account_id,currency,amount\nA,BTC,2\n")
    a, b = read_accounts(plain, table), read_accounts(bom, table)
    assert b.account_id.tolist() == ["A", "B"] and b.quantity.tolist() == a.quantity.tolist()
    assert b.collateral[0, 0] == 2.0
    inst = tmp_path / "i.csv"
    inst.write_bytes(codecs.BOM_UTF8 + b"name\nBTC-PERPETUAL\n")
    assert read_instruments(inst).name.tolist() == ["BTC-PERPETUAL"]
    hist = tmp_path / "h.csv"
    hist.write_bytes(codecs.BOM_UTF8 + b"date,AAA\n2024-01-01,10\n2024-01-02,11\n")
    assert load_history(hist).assets == ("AAA",)
    js = tmp_path / "a.json"
    js.write_bytes(codecs.BOM_UTF8 + json.dumps({"accounts": [{"account_id": "A"}]}).encode())
    assert read_accounts(js, table).account_id.tolist() == ["A"]


@pytest.mark.parametrize(("encoding", "message"), [
    ("latin-1", r"not UTF-8 text: byte 0xe9 at offset 34 \(line 2\).*Latin-1"),
    ("cp1252", r"not UTF-8 text: byte 0xe9 at offset 34 \(line 2\)"),
    ("utf-16", r"is UTF-16 \(it starts with a UTF-16 byte-order mark\)"),
    ("utf-16-le", r"byte 0x00 at offset 1 \(line 1\); NUL bytes mean UTF-16"),
])
def test_other_encodings_are_named(tmp_path, table, encoding, message) -> None:
    text = "account_id,instrument,quantity\nJosé,BTC-PERPETUAL,1\n"
    for reader, name in ((lambda p: read_accounts(p, table), "p.csv"), (read_instruments, "i.csv"),
                         (load_history, "h.csv"), (read_deribit_chain, "d.csv"), (read_columns, "c.csv")):
        p = tmp_path / name
        p.write_bytes(text.encode(encoding))
        with pytest.raises(InvalidInputError, match=message) as exc:
            reader(p)
        assert str(p) in str(exc.value)


def test_json_in_latin1_is_named(tmp_path, table) -> None:
    p = tmp_path / "a.json"
    p.write_bytes('{"accounts": [{"account_id": "José"}]}'.encode("latin-1"))
    with pytest.raises(InvalidInputError, match=r"a.json: not UTF-8 text: byte 0xe9 at offset 33 \(line 1\)"):
        read_accounts(p, table)


def test_missing_file_is_a_dpm_error_and_a_file_not_found_error(tmp_path, table) -> None:
    for reader in (lambda p: read_accounts(p, table), read_instruments, load_history, read_deribit_chain):
        with pytest.raises(MissingFileError, match="nope.csv: no such file") as exc:
            reader(tmp_path / "nope.csv")
        assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, DPMError)


# ----------------------------------------------------------------------------------------------------
# repeated and unnamed columns
# ----------------------------------------------------------------------------------------------------
def test_repeated_columns_are_refused_in_every_format(tmp_path, table) -> None:
    p = tmp_path / "p.csv"
    p.write_text("account_id,instrument,quantity,quantity\nA,BTC-PERPETUAL,1,2\n")
    with pytest.raises(InvalidInputError, match=r"column 'quantity' appears twice in the header \(columns 3 and 4\)"):
        read_accounts(p, table)
    p.write_text("account_id,instrument, quantity ,quantity\nA,BTC-PERPETUAL,1,2\n")  # after stripping
    with pytest.raises(InvalidInputError, match="appears twice"):
        read_accounts(p, table)
    pqf = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["A"]), pa.array(["BTC-PERPETUAL"]), pa.array([1.0]),
                                         pa.array([2.0])], names=["account_id", "instrument", "quantity",
                                                                  "quantity"]), pqf)
    with pytest.raises(InvalidInputError, match="column 'quantity' appears twice"):
        read_accounts(pqf, table)
    js = tmp_path / "p.json"
    js.write_text('{"accounts": [{"account_id": "A", "positions": [], "account_id": "B"}]}')
    with pytest.raises(InvalidInputError, match="key 'account_id' appears twice"):
        read_accounts(js, table)
    h = tmp_path / "h.csv"
    h.write_text("date,AAA,aaa\n2024-01-01,10,20\n2024-01-02,11,21\n")  # history looks columns up ignoring case
    with pytest.raises(InvalidInputError, match="appears twice"):
        load_history(h)
    d = tmp_path / "d.csv"
    lines = DERIBIT_SAMPLE_CHAIN.read_text().splitlines()
    d.write_text(lines[0] + ",mark_price\n" + lines[1] + ",0.5\n")
    with pytest.raises(InvalidInputError, match="column 'mark_price' appears twice"):
        read_deribit_chain(d)


def test_unnamed_columns_such_as_a_pandas_index_are_ignored(tmp_path, table) -> None:
    p = tmp_path / "p.csv"
    p.write_text(",account_id,instrument,quantity,\n0,A,BTC-PERPETUAL,1,x\n1,B,BTC-PERPETUAL,2,y\n")
    assert read_accounts(p, table).quantity.tolist() == [1.0, 2.0]
    assert list(read_columns(p)) == ["account_id", "instrument", "quantity"]


# ----------------------------------------------------------------------------------------------------
# one type rule per field in every format
# ----------------------------------------------------------------------------------------------------
def _positions_file(tmp_path, fmt: str, quantity) -> str:
    path = tmp_path / f"p.{fmt}"
    if fmt == "csv":
        path.write_text(f"account_id,instrument,quantity\nA,BTC-PERPETUAL,{quantity}\n")
    elif fmt == "json":
        path.write_text(json.dumps({"accounts": [{"account_id": "A", "positions": [["BTC-PERPETUAL", quantity]]}]}))
    else:
        pq.write_table(pa.table({"account_id": ["A"], "instrument": ["BTC-PERPETUAL"], "quantity": [quantity]}),
                       path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_quantity_rule_is_the_same_in_every_format(tmp_path, table, fmt) -> None:
    for good in (3, 2.5, -1e-3):
        assert read_accounts(_positions_file(tmp_path, fmt, good), table).quantity.tolist() == [float(good)]
    with pytest.raises(InvalidInputError, match=r"quantity at .*\(account 'A', instrument 'BTC-PERPETUAL'\) "
                                                r"is 'abc', not a number"):
        read_accounts(_positions_file(tmp_path, fmt, "abc"), table)
    if fmt != "csv":  # a number stored as text: JSON and Parquet refuse it alike
        with pytest.raises(InvalidInputError, match=r"is '1.5', not a number \(a text value"):
            read_accounts(_positions_file(tmp_path, fmt, "1.5"), table)
        with pytest.raises(InvalidInputError, match=r"is True, a boolean, not a number"):
            read_accounts(_positions_file(tmp_path, fmt, True), table)
    missing = "" if fmt == "csv" else None
    with pytest.raises(InvalidInputError, match=r"quantity at .* is missing"):
        read_accounts(_positions_file(tmp_path, fmt, missing), table)
    if fmt != "json":  # JSON cannot write inf; CSV text and a Parquet double can
        with pytest.raises(InvalidInputError, match=r"is inf, not a finite number|is 'inf', not a finite number"):
            read_accounts(_positions_file(tmp_path, fmt, "inf" if fmt == "csv" else math.inf), table)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_text_and_instrument_rules_are_the_same_in_every_format(tmp_path, table, fmt) -> None:
    path = tmp_path / f"p.{fmt}"
    if fmt == "csv":
        path.write_text("account_id,instrument,quantity\nA,BTC-NOPE,1\n")
    elif fmt == "json":
        path.write_text(json.dumps({"accounts": [{"account_id": "A", "positions": [["BTC-NOPE", 1]]}]}))
    else:
        pq.write_table(pa.table({"account_id": ["A"], "instrument": ["BTC-NOPE"], "quantity": [1.0]}), path)
    with pytest.raises(UnknownInstrumentError, match=r"instrument at .* \(account 'A'\) is 'BTC-NOPE', not in"):
        read_accounts(path, table)
    if fmt == "json":
        path.write_text(json.dumps({"accounts": [{"account_id": 7, "positions": []}]}))
    elif fmt == "parquet":
        pq.write_table(pa.table({"account_id": [7], "instrument": ["BTC-PERPETUAL"], "quantity": [1.0]}), path)
    else:
        return  # every CSV cell is text
    with pytest.raises(InvalidInputError, match=r"account_id at .* is 7, not text"):
        read_accounts(path, table)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_instrument_fields_follow_the_same_rules(tmp_path, fmt) -> None:
    path = tmp_path / f"i.{fmt}"
    rows = {"name": ["MYCOIN-OPT"], "kind": ["option"], "underlying": ["BTC"], "option_type": ["call"],
            "strike": ["60000"], "expiry_ms": [1798358400000], "inverse": [True], "contract_size": [1.0],
            "settlement": ["BTC"]}
    if fmt == "csv":
        path.write_text(",".join(rows) + "\n" + ",".join(str(v[0]).lower() if isinstance(v[0], bool) else str(v[0])
                                                         for v in rows.values()) + "\n")
        assert read_instruments(path).strike.tolist() == [60000.0]
        return
    if fmt == "json":
        path.write_text(json.dumps({"instruments": [{k: v[0] for k, v in rows.items()}]}))
    else:
        pq.write_table(pa.table(rows), path)
    with pytest.raises(InvalidInputError, match=r"strike at .* is '60000', not a number \(a text value"):
        read_instruments(path)


def test_integer_and_boolean_fields(tmp_path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("e,b\n1.7e12,TRUE\n5,0\n")
    cols = read_columns(p, {"e": "int", "b": "bool"})
    assert cols["e"].tolist() == [1_700_000_000_000, 5] and cols["b"].tolist() == [True, False]
    p.write_text("e\n1.5\n")
    with pytest.raises(InvalidInputError, match=r"e at row 1 is '1.5', not a whole number"):
        read_columns(p, {"e": "int"})
    p.write_text("e\n1e30\n")
    with pytest.raises(InvalidInputError, match="out of the int64 range"):
        read_columns(p, {"e": "int"})
    js = tmp_path / "c.json"
    js.write_text('{"columns": {"e": [1.5]}}')
    with pytest.raises(InvalidInputError, match=r"e at row 1 is 1.5, not a whole number"):
        read_columns(js, {"e": "int"})
    js.write_text('{"columns": {"b": ["yes"]}}')
    with pytest.raises(InvalidInputError, match=r"b at row 1 is 'yes', not true/false"):
        read_columns(js, {"b": "bool"})
    js.write_text('{"columns": {"a": [1, 2], "b": [1]}}')
    with pytest.raises(InvalidInputError, match="column 'b' has 1 values, the others 2"):
        read_columns(js)


def test_malformed_files_name_file_and_place(tmp_path, table) -> None:
    p = tmp_path / "p.json"
    p.write_text('{"accounts": [\n{"account_id": "A",}]}')
    with pytest.raises(InvalidInputError, match=r"p.json: not valid JSON: .* at line 2, column 20"):
        read_accounts(p, table)
    p.write_text('{"accounts": [{"account_id": "A", "positions": [["BTC-PERPETUAL", Infinity]]}]}')
    with pytest.raises(InvalidInputError, match="Infinity is not a JSON number"):
        read_accounts(p, table)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidInputError, match="p.json"):
        read_accounts(p, table)
    q = tmp_path / "p.parquet"
    q.write_bytes(b"PAR1" + bytes(range(256)) + b"PAR1")
    with pytest.raises(InvalidInputError, match=r"p.parquet: not a readable Parquet file"):
        read_accounts(q, table)
    c = tmp_path / "p.csv"
    c.write_text('account_id,instrument,quantity\n"A"x,BTC-PERPETUAL,1\n')
    with pytest.raises(InvalidInputError, match=r"p.csv: malformed CSV at line 2"):
        read_accounts(c, table)


# ----------------------------------------------------------------------------------------------------
# history: decimal commas, partial dates
# ----------------------------------------------------------------------------------------------------
def test_history_refuses_a_decimal_comma_and_a_partial_date(tmp_path) -> None:
    p = tmp_path / "h.csv"
    p.write_text('date,AAA\n2024-01-01,"1,234.5"\n2024-01-02,"1,300"\n')
    assert load_history(p).close[:, 0].tolist() == [1234.5, 1300.0]  # thousands separators
    p.write_text('date,AAA\n2024-01-01,"1,5"\n2024-01-02,2\n')  # 1.5 in a decimal-comma locale, not 15
    with pytest.raises(InvalidInputError, match=r"cannot read '1,5' as a number.*decimal comma"):
        load_history(p)
    p.write_text("date,AAA\n2024-01,1\n2024-02,2\n")  # numpy would read these as the 1st of the month
    with pytest.raises(InvalidInputError, match=r"row 1 is '2024-01', not a date as YYYY-MM-DD"):
        load_history(p)


def test_history_parquet_text_prices_are_refused(tmp_path) -> None:
    p = tmp_path / "h.parquet"
    pq.write_table(pa.table({"date": ["2024-01-01", "2024-01-02"], "AAA": ["10", "11"]}), p)
    with pytest.raises(InvalidInputError, match=r"AAA at row 1 is '10', not a number \(a text value"):
        load_history(p)
    p.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match="h.parquet: not a readable Parquet file"):
        load_history(p)


# ----------------------------------------------------------------------------------------------------
# CSV injection
# ----------------------------------------------------------------------------------------------------
FORMULA_IDS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=already", "''-x", "'plain",
               "plain", "a=b", "-"]


def test_account_ids_are_escaped_against_spreadsheet_formulas(tmp_path, table) -> None:
    n = len(FORMULA_IDS)
    book = AccountBook.from_arrays(np.arange(n), np.zeros(n, np.int64), -np.arange(1.0, n + 1), table,
                                   account_ids=FORMULA_IDS)
    path = tmp_path / "p.csv"
    write_accounts(book, path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    cells = [r[0] for r in rows]
    for cell, original in zip(cells, FORMULA_IDS):
        if original.lstrip("'")[:1] in "=+-@\t\r" and original:
            assert cell == "'" + original
        else:
            assert cell == original
        assert cell[:1] not in "=+-@\t\r"  # nothing a spreadsheet would evaluate
    assert [r[2] for r in rows] == [repr(-float(i)) for i in range(1, n + 1)]  # numbers stay numbers
    assert read_accounts(path, table).equals(book)  # the reader undoes the escape exactly
    cols = {"s": np.array(FORMULA_IDS, dtype=object), "x": np.arange(n) - 5.0}
    write_columns(tmp_path / "c.csv", cols)
    back = read_columns(tmp_path / "c.csv", {"x": "float"})
    assert back["s"].tolist() == FORMULA_IDS and back["x"].tolist() == cols["x"].tolist()


def test_json_and_parquet_are_not_escaped(tmp_path, table) -> None:
    book = AccountBook.from_arrays([0], [0], [1.0], table, account_ids=["=1+1"])
    for fmt in ("json", "parquet"):
        path = tmp_path / f"p.{fmt}"
        write_accounts(book, path)
        assert read_accounts(path, table).account_id.tolist() == ["=1+1"]
    assert "=1+1" in (tmp_path / "p.json").read_text()


def test_writers_refuse_what_they_cannot_write_and_leave_no_file(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match=r"column 'x', row 2 is inf; JSON has no infinity"):
        write_columns(tmp_path / "c.json", {"x": np.array([1.0, np.inf])})
    with pytest.raises(InvalidInputError, match="NUL"):
        write_columns(tmp_path / "c.csv", {"s": np.array(["a\x00b"], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_a_single_text_column_with_empty_cells_round_trips(tmp_path) -> None:
    cols = {"s": np.array([None, "a", None], dtype=object)}
    write_columns(tmp_path / "c.csv", cols)
    assert read_columns(tmp_path / "c.csv")["s"].tolist() == [None, "a", None]


def test_instrument_round_trip_escapes_names(tmp_path) -> None:
    from dpm.market.table import InstrumentTable

    t = InstrumentTable.from_records([{"name": "=HYPERLINK(x)", "kind": "perpetual", "underlying": "BTC",
                                       "inverse": True, "contract_size": 10.0, "settlement": "BTC"}])
    write_instruments(t, tmp_path / "i.csv")
    assert (tmp_path / "i.csv").read_text().splitlines()[1].startswith("'=HYPERLINK(x)")
    assert read_instruments(tmp_path / "i.csv").equals(t)


# ----------------------------------------------------------------------------------------------------
# Deribit chain
# ----------------------------------------------------------------------------------------------------
_RAW_FLOATS = {
    "underlying_price": "underlying_price", "index_price": "index_price", "mark_price": "mark_price",
    "open_interest": "open_interest", "interest_rate": "interest_rate", "settlement_price": "settlement_price",
    "last_price": "last_price", "min_price": "min_price", "max_price": "max_price",
    "estimated_delivery_price": "estimated_delivery_price", "best_bid_amount": "bid_amount",
    "best_ask_amount": "ask_amount",
}


def _raw_float(text: str) -> float:
    return float("nan") if text.strip() in ("", "nan", "NaN", "None") else float(text)


def test_deribit_chain_every_field_of_every_row_matches_the_raw_file() -> None:
    chain = read_deribit_chain()
    with open(DERIBIT_SAMPLE_CHAIN, newline="") as fh:
        raw = {r["instrument_name"]: r for r in csv.DictReader(fh)}
    m = chain.marks
    assert len(raw) == len(chain.table) == 310
    both_sides = 0
    for i, name in enumerate(chain.table.name.tolist()):
        r = raw[name]
        for src, dst in _RAW_FLOATS.items():
            np.testing.assert_equal(m[dst][i], _raw_float(r[src]), err_msg=f"{dst} of {name}")
        bid_amt, ask_amt = float(r["best_bid_amount"]), float(r["best_ask_amount"])
        both_sides += bid_amt > 0 and ask_amt > 0 and bid_amt != ask_amt
        np.testing.assert_equal(m["bid_price"][i], float(r["best_bid_price"]) if bid_amt > 0 else np.nan)
        np.testing.assert_equal(m["ask_price"][i], float(r["best_ask_price"]) if ask_amt > 0 else np.nan)
        for side in ("bid", "ask"):
            iv = float(r[f"{side}_iv"]) / 100
            np.testing.assert_equal(m[f"{side}_iv"][i], iv if iv > 0 else np.nan)
        assert m["mark_iv"][i] == float(r["mark_iv"]) / 100
        assert m["timestamp_ms"][i] == int(r["timestamp"])
        assert m["underlying_index"][i] == r["underlying_index"]
        greeks = ast.literal_eval(r["greeks"])
        for g in ("delta", "gamma", "vega", "theta", "rho"):
            assert m[g][i] == greeks[g]
    assert both_sides > 50  # the amounts differ between sides, so a swap cannot go unnoticed


@pytest.mark.parametrize(("column", "value", "message"), [
    ("mark_price", "abc", r"mark_price at row 1 \('BTC-22MAY20-9250-P'\) is 'abc', not a number"),
    ("mark_price", "inf", r"mark_price at row 1 \('BTC-22MAY20-9250-P'\) is 'inf', not a finite number"),
    ("best_bid_amount", "-3", r"best_bid_amount at row 1 .* is '-3', negative"),
    ("underlying_price", "0", r"underlying_price at row 1 .* must be a price > 0"),
    ("timestamp", "nan", r"timestamp at row 1 .* is 'nan', not a whole number"),
    ("timestamp", "12x", r"timestamp at row 1 .* is '12x', not an integer"),
    ("expiration_timestamp", "1e400", r"expiration_timestamp at row 1 .* is '1e400', not a whole number"),
    ("greeks", "{'delta': 'x'}", r"greeks\['delta'\] at row 1 .* is 'x', not a finite number"),
    ("greeks", "{'delta': (", r"greeks at row 1 .* unreadable"),
    ("instrument_name", "BTC-NOTANAME", r"d.csv: instrument_name: row 0"),
])
def test_deribit_chain_bad_fields_name_file_column_row_and_instrument(tmp_path, column, value, message) -> None:
    lines = DERIBIT_SAMPLE_CHAIN.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    row = next(csv.reader([lines[1]]))
    row[header.index(column)] = value
    bad = tmp_path / "d.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows([header, row])
    with pytest.raises(MarketDataError, match=message):
        read_deribit_chain(bad)


def test_deribit_chain_short_row_is_an_error(tmp_path) -> None:
    lines = DERIBIT_SAMPLE_CHAIN.read_text().splitlines()
    bad = tmp_path / "d.csv"
    row = next(csv.reader([lines[1]]))[:-3]
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows([next(csv.reader([lines[0]])), row])
    with pytest.raises(InvalidInputError, match=r"d.csv: row 1 has \d+ fields, the header has \d+"):
        read_deribit_chain(bad)


def test_parquet_column_names_that_are_not_utf8_are_named(tmp_path, table) -> None:
    # found by the fuzz suite: pyarrow raised UnicodeDecodeError when the names were decoded
    p = tmp_path / "h.parquet"
    pq.write_table(pa.table({"date": ["2024-01-01", "2024-01-02"], "AAA": [1.0, 2.0]}), p)
    p.write_bytes(p.read_bytes().replace(b"AAA", b"\xffAA"))
    with pytest.raises(InvalidInputError, match="h.parquet: not a readable Parquet file"):
        load_history(p)
    with pytest.raises(InvalidInputError, match="h.parquet: not a readable Parquet file"):
        read_columns(p)
