"""Fuzz the readers: random bytes and values as CSV, JSON and Parquet accounts, collateral,
instruments, generic columns, price history and Deribit chains; and write/read round trips."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from fuzz_harness import attempt, attempt_file, fuzz, oracle
from fuzz_strategies import (
    COLLATERAL_SCHEMA,
    COLUMN_NAMES,
    CURRENCIES,
    INSTRUMENTS,
    INSTRUMENTS_SCHEMA,
    NASTY_TEXT,
    POSITIONS_SCHEMA,
    cells,
    csv_text,
    encoded,
    history_csv,
    json_dumps_loose,
    json_scalars,
    json_values,
    mutated,
    parquet_bytes,
    valid_table_csv,
)
from hypothesis import given
from hypothesis import strategies as st

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
)

pytest.importorskip("pyarrow")

TABLE = default_instruments()
POSITION_COLUMNS = ["account_id", "instrument", "quantity", "account_id", "quantity", "", "extra"]
COLLATERAL_COLUMNS = ["account_id", "currency", "amount", "amount", ""]
ACCOUNT_FIELDS = ("account_id", "instrument", "quantity", "currency", "amount", "p.csv", "p.json", "p.parquet",
                  "p.collateral")
position_cells = st.one_of(cells, st.sampled_from(INSTRUMENTS + CURRENCIES))
seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_readers")


def _check_book(target: str, book: AccountBook) -> None:
    oracle(target, np.isfinite(book.quantity).all(), "a non-finite quantity in the book")
    oracle(target, (np.isfinite(book.collateral) & (book.collateral >= 0)).all(), "bad collateral in the book")
    oracle(target, all(isinstance(a, str) and a for a in book.account_id.tolist()), "an empty or non-str id")
    oracle(target, ((book.instrument_idx >= 0) & (book.instrument_idx < len(TABLE))).all(), "instrument id range")


# ----------------------------------------------------------------------------------------------------
# accounts: CSV, JSON, Parquet bytes
# ----------------------------------------------------------------------------------------------------
@fuzz("readers.accounts_csv", ci=150, long=12_000)
@given(positions=st.one_of(encoded(csv_text(POSITION_COLUMNS, position_cells)),
                           valid_table_csv(POSITIONS_SCHEMA).map(str.encode)),
       collateral=st.one_of(st.none(), encoded(csv_text(COLLATERAL_COLUMNS, position_cells)),
                            *[valid_table_csv(COLLATERAL_SCHEMA).map(str.encode)] * 2), seed=seeds)
def test_accounts_csv_bytes(workdir, positions, collateral, seed) -> None:
    p, c = workdir / "p.csv", workdir / "p.collateral.csv"
    if collateral is None:
        c.unlink(missing_ok=True)
    else:
        c.write_bytes(collateral)
    for book in attempt_file("readers.accounts_csv", p, positions, seed, lambda: read_accounts(p, TABLE),
                             fields=ACCOUNT_FIELDS, inputs=[c]):
        if book is not None:
            _check_book("readers.accounts_csv", book)


good_numbers = st.one_of(st.floats(-1e6, 1e6), st.integers(-1000, 1000))


@st.composite
def accounts_json(draw) -> bytes:
    how = draw(st.integers(0, 5))
    if how == 0:
        text = json_dumps_loose(draw(json_values()))
    elif how <= 2:  # well-formed, so that the reader gets past the structure checks
        account = st.fixed_dictionaries({
            "account_id": st.one_of(st.sampled_from(["A", "B", "C", "=x"]), json_scalars),
            "positions": st.lists(st.tuples(st.sampled_from(INSTRUMENTS + ["BTC-NOPE"]),
                                            st.one_of(good_numbers, json_scalars)).map(list), max_size=3),
            "collateral": st.dictionaries(st.sampled_from(CURRENCIES + ["usd"]),
                                          st.one_of(st.floats(0, 1e6), json_scalars), max_size=2)})
        text = json_dumps_loose({"accounts": draw(st.lists(account, max_size=4))})
    else:
        def position():
            return st.one_of(
                st.lists(st.one_of(st.sampled_from(INSTRUMENTS), json_scalars), min_size=0, max_size=3),
                st.dictionaries(st.sampled_from(["instrument", "quantity", "x"]),
                                st.one_of(st.sampled_from(INSTRUMENTS), json_scalars), max_size=3),
                json_scalars,
            )

        account = st.dictionaries(
            st.sampled_from(["account_id", "positions", "collateral", "other"]),
            st.one_of(json_scalars, st.lists(position(), max_size=4),
                      st.dictionaries(st.one_of(st.sampled_from(CURRENCIES), st.text(max_size=4)), json_scalars,
                                      max_size=3)),
            max_size=4,
        )
        doc = {"accounts": draw(st.one_of(st.lists(account, max_size=4), json_scalars))}
        if draw(st.booleans()):
            doc["currencies"] = draw(st.one_of(st.lists(st.one_of(st.sampled_from(CURRENCIES), json_scalars),
                                                        max_size=4), json_scalars))
        text = json_dumps_loose(doc)
    data = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16"])))
    if draw(st.integers(0, 6)) == 0:
        data = draw(mutated(data))
    return data


@fuzz("readers.accounts_json", ci=150, long=12_000)
@given(data=accounts_json(), seed=seeds)
def test_accounts_json_bytes(workdir, data, seed) -> None:
    p = workdir / "p.json"
    for book in attempt_file("readers.accounts_json", p, data, seed, lambda: read_accounts(p, TABLE),
                             fields=ACCOUNT_FIELDS):
        if book is not None:
            _check_book("readers.accounts_json", book)


@st.composite
def positions_parquet(draw) -> bytes:
    """A well-formed positions Parquet file (right columns and types), values from good to bad."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = draw(st.integers(0, 5))
    tbl = pa.table({
        "account_id": pa.array(draw(st.lists(st.sampled_from(["A", "B", "", "=x"]), min_size=n, max_size=n))),
        "instrument": pa.array(draw(st.lists(st.sampled_from(INSTRUMENTS + ["BTC-NOPE"]), min_size=n, max_size=n))),
        "quantity": pa.array(draw(st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n)),
                             type=pa.float64()),
    })
    sink = io.BytesIO()
    pq.write_table(tbl, sink)
    return sink.getvalue()


@fuzz("readers.accounts_parquet", ci=80, long=8_000)
@given(positions=st.one_of(parquet_bytes(POSITION_COLUMNS), positions_parquet()),
       collateral=st.none() | parquet_bytes(COLLATERAL_COLUMNS), seed=seeds)
def test_accounts_parquet_bytes(workdir, positions, collateral, seed) -> None:
    p, c = workdir / "p.parquet", workdir / "p.collateral.parquet"
    if collateral is None:
        c.unlink(missing_ok=True)
    else:
        c.write_bytes(collateral)
    for book in attempt_file("readers.accounts_parquet", p, positions, seed, lambda: read_accounts(p, TABLE),
                             fields=ACCOUNT_FIELDS, inputs=[c]):
        if book is not None:
            _check_book("readers.accounts_parquet", book)


# ----------------------------------------------------------------------------------------------------
# instruments and generic columns
# ----------------------------------------------------------------------------------------------------
INSTRUMENT_COLUMNS = ["name", "name", "kind", "underlying", "option_type", "strike", "expiry_ms", "inverse",
                      "contract_size", "settlement", ""]
INSTRUMENT_FIELDS = ("name", "kind", "underlying", "option_type", "strike", "expiry_ms", "inverse",
                     "contract_size", "settlement", "i.csv", "i.json", "i.parquet", "instrument")


@st.composite
def instruments_file(draw) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(["csv", "csv", "json", "parquet"]))
    if fmt == "csv":
        if draw(st.booleans()):
            return fmt, draw(valid_table_csv(INSTRUMENTS_SCHEMA, max_rows=4)).encode()
        return fmt, draw(encoded(csv_text(INSTRUMENT_COLUMNS, st.one_of(cells, st.sampled_from(INSTRUMENTS)))))
    if fmt == "parquet":
        return fmt, draw(parquet_bytes(INSTRUMENT_COLUMNS))
    rec = st.dictionaries(st.sampled_from(INSTRUMENT_COLUMNS + ["expiry"]),
                          st.one_of(st.sampled_from(INSTRUMENTS), json_scalars), max_size=6)
    doc = draw(st.one_of(st.lists(st.one_of(st.sampled_from(INSTRUMENTS), rec), max_size=4),
                         st.fixed_dictionaries({"instruments": st.lists(rec, max_size=4)}), json_values()))
    return fmt, json_dumps_loose(doc).encode()


@fuzz("readers.instruments", ci=150, long=12_000)
@given(file=instruments_file(), seed=seeds)
def test_instruments_bytes(workdir, file, seed) -> None:
    fmt, data = file
    p = workdir / f"i.{fmt}"
    for table in attempt_file("readers.instruments", p, data, seed, lambda: read_instruments(p),
                              fields=INSTRUMENT_FIELDS):
        if table is None:
            continue
        strike = table.strike[~np.isnan(table.strike)]
        oracle("readers.instruments", np.isfinite(strike).all() and (strike > 0).all(), "bad strike accepted")
        oracle("readers.instruments", (np.isfinite(table.contract_size) & (table.contract_size > 0)).all(),
               "bad contract size accepted")


@fuzz("readers.columns", ci=150, long=12_000)
@given(fmt=st.sampled_from(["csv", "json", "parquet"]), data=st.data(),
       dtypes=st.dictionaries(st.sampled_from(COLUMN_NAMES), st.sampled_from(["str", "float", "int", "int?", "bool"]),
                              max_size=4), seed=seeds)
def test_columns_bytes(workdir, fmt, data, dtypes, seed) -> None:
    if fmt == "csv":
        raw = data.draw(encoded(csv_text()))
    elif fmt == "json":
        raw = json_dumps_loose(data.draw(st.one_of(
            st.fixed_dictionaries({"columns": st.dictionaries(st.sampled_from(COLUMN_NAMES),
                                                              st.lists(json_scalars, max_size=5), max_size=4)}),
            json_values()))).encode()
    else:
        raw = data.draw(parquet_bytes())
    p = workdir / f"c.{fmt}"
    fields = tuple(COLUMN_NAMES[:-5]) + (f"c.{fmt}", "dtypes", "column")
    for cols in attempt_file("readers.columns", p, raw, seed, lambda: read_columns(p, dtypes), fields=fields):
        if cols is not None:
            oracle("readers.columns", len({len(v) for v in cols.values()}) <= 1, "columns of different lengths")


# ----------------------------------------------------------------------------------------------------
# price history and Deribit chains
# ----------------------------------------------------------------------------------------------------
HISTORY_COLUMNS = ["date", "date", "asset", "close", "AAA", "BBB", "aaa", "DATE", ""]
history_cells = st.one_of(cells, st.sampled_from(["2024-01-01", "2024-01-02", "2024-01-03", "AAA", "BBB", "10",
                                                  "11.5", "1,000.5", "0.0001"]))


@fuzz("readers.history", ci=150, long=12_000)
@given(fmt=st.sampled_from(["csv", "csv", "parquet"]), data=st.data(), seed=seeds)
def test_history_bytes(workdir, fmt, data, seed) -> None:
    if fmt == "csv":
        raw = data.draw(st.one_of(encoded(csv_text(HISTORY_COLUMNS, history_cells, max_rows=8)),
                                  history_csv().map(str.encode)))
    else:
        raw = data.draw(parquet_bytes(HISTORY_COLUMNS))
    p = workdir / f"h.{fmt}"
    fields = ("date", "asset", "close", "AAA", "BBB", "aaa", "history", "h.csv", "h.parquet", "row", "column")
    for hist in attempt_file("readers.history", p, raw, seed, lambda: load_history(p), fields=fields):
        if hist is not None:
            c = hist.close
            oracle("readers.history", ((c > 0) & np.isfinite(c) | np.isnan(c)).all(), "a bad price accepted")
            oracle("readers.history", (np.diff(hist.dates.astype(np.int64)) > 0).all(), "dates not increasing")


_CHAIN_LINES = DERIBIT_SAMPLE_CHAIN.read_text(encoding="utf-8").splitlines()
_CHAIN_HEADER = next(csv.reader([_CHAIN_LINES[0]]))
_CHAIN_ROWS = [next(csv.reader([line])) for line in _CHAIN_LINES[1:12]]
chain_cells = st.one_of(cells, st.sampled_from(["{'delta': 0.5}", "{'delta': (", "{}", "[1]", "{'vega': 'x'}",
                                                "1589434896486", "1590134400000"]))


@st.composite
def chain_bytes(draw) -> bytes:
    rows = [list(r) for r in draw(st.lists(st.sampled_from(_CHAIN_ROWS), min_size=0, max_size=4))]
    header = list(_CHAIN_HEADER)
    for _ in range(draw(st.integers(0, 4))):
        if rows and draw(st.booleans()):
            r = draw(st.integers(0, len(rows) - 1))
            rows[r][draw(st.integers(0, len(header) - 1))] = draw(chain_cells)
        elif draw(st.booleans()):
            header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(_CHAIN_HEADER + [""]))
        else:
            j = draw(st.integers(0, len(header) - 1))
            del header[j]
            for r in rows:
                del r[j]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header] + rows)
    data = buf.getvalue().encode()
    return draw(mutated(data)) if draw(st.integers(0, 5)) == 0 else data


@fuzz("readers.deribit_chain", ci=100, long=8_000)
@given(data=chain_bytes(), seed=seeds)
def test_deribit_chain_bytes(workdir, data, seed) -> None:
    p = workdir / "d.csv"
    fields = tuple(_CHAIN_HEADER[1:]) + ("d.csv", "greeks", "row", "column")
    for chain in attempt_file("readers.deribit_chain", p, data, seed, lambda: read_deribit_chain(p), fields=fields):
        if chain is None:
            continue
        for k, v in chain.marks.items():
            if v.dtype.kind == "f":
                oracle("readers.deribit_chain", not np.isinf(v).any(), f"an infinite {k} accepted")
        oracle("readers.deribit_chain", (chain.marks["underlying_price"] > 0).all(), "a bad forward accepted")


# ----------------------------------------------------------------------------------------------------
# round trips: what a writer writes, the reader reads back bit for bit
# ----------------------------------------------------------------------------------------------------
ids = st.one_of(st.sampled_from([t for t in NASTY_TEXT if t and "\x00" not in t]),
                st.text(min_size=1, max_size=10).filter(lambda s: "\x00" not in s))
# bounded so that duplicates (summed by the book) stay finite; near-limit sums are book.from_arrays' job
finite_floats = st.one_of(st.floats(-1e300, 1e300), st.sampled_from([0.0, -0.0, 5e-324, 0.1, -1e-310]))


@st.composite
def books(draw) -> AccountBook:
    n = draw(st.integers(0, 5))
    acc_ids = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    p = draw(st.integers(0, 12))
    acc = draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=p, max_size=p)) if n else []
    inst = draw(st.lists(st.integers(0, len(TABLE) - 1), min_size=len(acc), max_size=len(acc)))
    qty = draw(st.lists(finite_floats, min_size=len(acc), max_size=len(acc)))
    coll = np.array(draw(st.lists(st.lists(st.floats(0, 1e300), min_size=4, max_size=4), min_size=n,
                                  max_size=n)), dtype=np.float64).reshape(n, 4)
    return AccountBook.from_arrays(np.array(acc, dtype=np.int64), np.array(inst, dtype=np.int64),
                                   np.array(qty, dtype=np.float64), TABLE, account_ids=acc_ids, collateral=coll,
                                   n_accounts=n)


@fuzz("roundtrip.accounts", ci=120, long=10_000)
@given(book=books(), fmt=st.sampled_from(["csv", "json", "parquet"]))
def test_accounts_round_trip(workdir, book, fmt) -> None:
    p = workdir / f"rt.{fmt}"
    fields = ("account_id", "collateral", "quantity", "columns", "rt.")
    ok = attempt("roundtrip.accounts", lambda: write_accounts(book, p) or True, fields=fields,
                 inputs=[book.quantity, book.collateral])
    if ok is None:
        return
    back = attempt("roundtrip.accounts", lambda: read_accounts(p, TABLE), fields=fields)
    oracle("roundtrip.accounts", back is not None and back.equals(book),
           f"{fmt} round trip changed the book: {book.account_id.tolist()!r}")


@fuzz("roundtrip.columns", ci=120, long=10_000)
@given(fmt=st.sampled_from(["csv", "json", "parquet"]), n=st.integers(0, 6), data=st.data())
def test_columns_round_trip(workdir, fmt, n, data) -> None:
    text = np.empty(n, dtype=object)
    text[:] = data.draw(st.lists(st.one_of(st.none(), ids), min_size=n, max_size=n))
    numbers = np.array(data.draw(st.lists(st.floats(allow_infinity=fmt != "json"), min_size=n, max_size=n)),
                       dtype=np.float64)
    ints = np.array(data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), dtype=np.int64)
    flags = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    cols = {"s": text, "f": numbers, "i": ints, "b": flags}
    p = workdir / f"rtc.{fmt}"
    ok = attempt("roundtrip.columns", lambda: write_columns(p, cols) or True, fields=("columns", "s", "f"),
                 inputs=list(cols.values()))
    if ok is None:
        return
    back = attempt("roundtrip.columns", lambda: read_columns(p, {"s": "str", "f": "float", "i": "int", "b": "bool"}),
                   fields=("s", "f", "i", "b", "rtc."))
    oracle("roundtrip.columns", back is not None, "the reader refused what the writer wrote")
    oracle("roundtrip.columns", back["s"].tolist() == text.tolist(), f"text changed: {text.tolist()!r}")
    present = ~np.isnan(numbers)  # NaN is "missing" in every format: its sign bit is not kept
    oracle("roundtrip.columns", np.array_equal(back["f"], numbers, equal_nan=True)
           and np.array_equal(np.signbit(back["f"][present]), np.signbit(numbers[present])), "numbers changed")
    oracle("roundtrip.columns", np.array_equal(back["i"], ints) and np.array_equal(back["b"], flags),
           "integers or booleans changed")


def test_fuzz_helpers_are_sound() -> None:
    # the nasty text pool must hold what the targets rely on
    assert "\x00" in NASTY_TEXT and "\ufeff" in NASTY_TEXT and "=cmd|' /C calc'!A0" in NASTY_TEXT
    assert math.isinf(float("1e400")) and json.loads(json.dumps([1.5])) == [1.5]
