"""Hypothesis strategies for adversarial data: cell text, numbers, CSV/JSON/Parquet bytes."""
from __future__ import annotations

import io
import json
import math

import numpy as np
from hypothesis import strategies as st

#: Cell texts that have broken CSV/number readers somewhere: separators, quotes, line ends, BOMs,
#: NULs, non-finite and out-of-range numbers, decimal commas, formula triggers, dates.
NASTY_TEXT = [
    "", " ", "A", "acc-1", "BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26", "BTC-27DEC26-100000-C",
    "BTC-27DEC26-80000-P", "ETH_USDC-PERPETUAL", "BTC-NOPE", "nan", "NaN", "inf", "-inf", "Infinity", "1e400",
    "-1e400", "1e-400", "-0", "0", "1", "-1", "1.5", "-2.5e3", "1,5", "1,234.5", "1_000", "0x10", "١٢",
    "true", "false", "TRUE", "None", "null", "=cmd|' /C calc'!A0", "'=x", "''-1", "+1", "@a", "\t", "\r",
    "\n", "\r\n", '"', '""', '"a"b', ",", "\x00", "\ufeff", "é", "\u2028", "\x85", "BTC", "ETH", "USDC",
    "USDT", "btc", "2024-01-01", "2024-01-02", "2024-13-45", "2024", "2024-01", "99999-01-01",
    "9999999999999999999999", "9" * 400, "option", "future", "perpetual", "spot", "call", "put", "x" * 300,
]

COLUMN_NAMES = [
    "account_id", "instrument", "quantity", "currency", "amount", "name", "kind", "underlying",
    "option_type", "strike", "expiry_ms", "inverse", "contract_size", "settlement", "date", "asset", "close",
    "AAA", "BBB", "BTC", "ETH", "", " quantity", "Quantity", "DATE",
]

INSTRUMENTS = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26", "BTC-27DEC26-100000-C", "BTC-27DEC26-80000-P",
               "ETH_USDC-PERPETUAL", "BTC-25DEC26-85000-P", "ETH-27DEC26"]

CURRENCIES = ["BTC", "ETH", "USDC", "USDT"]

cells = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)

#: Floats that break arithmetic: NaN, infinities, signed zeros, subnormals, extremes.
nasty_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308, 1.7976931348623157e308, 1e-300, 1.0, -1.0]),
)

#: JSON scalars of every type a reader may meet where it expects another.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), nasty_floats,
    st.sampled_from(NASTY_TEXT), st.text(max_size=8),
)


def json_values(max_leaves: int = 12):
    return st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=6), inner,
                                                                              max_size=4)),
                        max_leaves=max_leaves)


@st.composite
def csv_text(draw, columns=COLUMN_NAMES, cell=cells, max_rows: int = 6) -> str:
    """CSV-like text: a header from ``columns`` (maybe repeated or unnamed), rows of ``cell`` texts,
    with random quoting, ragged rows and line ends."""
    k = draw(st.integers(1, 6))
    header = [draw(st.sampled_from(columns)) for _ in range(k)]
    rows = [[draw(cell) for _ in range(k + draw(st.sampled_from([0, 0, 0, 0, -1, 1])))]
            for _ in range(draw(st.integers(0, max_rows)))]
    quote_all = draw(st.booleans())

    def fmt(v: str) -> str:
        if quote_all or any(c in v for c in ',"\r\n'):
            return '"' + v.replace('"', '""') + '"' if draw(st.integers(0, 9)) else v  # sometimes broken
        return v

    eol = draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))
    text = eol.join(",".join(fmt(c) for c in r) for r in [header] + rows)
    return text + draw(st.sampled_from(["", eol, eol + eol]))


@st.composite
def encoded(draw, text_strategy) -> bytes:
    """Text encoded as UTF-8 (with or without BOM), Latin-1, UTF-16, or raw random bytes."""
    how = draw(st.sampled_from(["utf-8"] * 5 + ["utf-8-sig", "latin-1", "utf-16", "utf-16-le", "bytes",
                                                "truncate"]))
    if how == "bytes":
        return draw(st.binary(max_size=200))
    text = draw(text_strategy)
    if how == "latin-1":
        return text.encode("latin-1", errors="replace")
    data = text.encode("utf-8" if how == "truncate" else how, errors="surrogatepass")
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, deleted or inserted."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            b[i] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del b[i]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=4))
        else:
            del b[i:]
    return bytes(b)


@st.composite
def parquet_bytes(draw, columns=COLUMN_NAMES) -> bytes:
    """A Parquet file of random columns (types, nulls, repeated names), sometimes corrupted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = draw(st.integers(0, 5))
    k = draw(st.integers(1, 5))
    names, arrays = [], []
    for _ in range(k):
        names.append(draw(st.sampled_from(columns)))
        kind = draw(st.sampled_from(["string", "string", "float", "float", "int", "bool", "timestamp", "list"]))
        vals = draw(st.lists(json_scalars, min_size=n, max_size=n))
        if kind == "string":
            arr = pa.array([None if v is None else (v if isinstance(v, str) else repr(v)) for v in vals],
                           type=pa.string())
        elif kind == "float":
            arr = pa.array([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                            and abs(v) < 1e300 else None for v in vals], type=pa.float64())
        elif kind == "int":
            arr = pa.array([v if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63 else None
                            for v in vals], type=pa.int64())
        elif kind == "bool":
            arr = pa.array([None if v is None else bool(v) for v in vals], type=pa.bool_())
        elif kind == "timestamp":
            arr = pa.array([v % 2**40 if isinstance(v, int) and not isinstance(v, bool) else None for v in vals],
                           type=pa.timestamp("ms"))
        else:
            arr = pa.array([[1.0] if v else None for v in vals], type=pa.list_(pa.float64()))
        arrays.append(arr)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=names), sink)
    data = sink.getvalue()
    if draw(st.integers(0, 4)) == 0:
        data = draw(mutated(data))
    return data


@st.composite
def valid_table_csv(draw, columns: dict, max_rows: int = 6) -> str:
    """A well-formed CSV of ``columns`` (name -> strategy of cell text), columns in random order: the
    byte-level variants and the other generators start from here to reach past the first check."""
    names = draw(st.permutations(list(columns)))
    rows = draw(st.lists(st.tuples(*[columns[c] for c in names]), max_size=max_rows))
    buf = io.StringIO()
    import csv as _csv

    _csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows([names] + [list(r) for r in rows])
    return buf.getvalue()


def mostly(good, bad):
    """``good`` nine times in ten: well-formed files must be common enough to reach the later checks."""
    return st.one_of(*[good] * 9, bad)


number_text = st.one_of(st.floats(-1e6, 1e6).map(repr), st.integers(-1000, 1000).map(str),
                        st.sampled_from(["1.5", "-2", "0", "1e3", " 7", "nan", ""]))
id_text = mostly(st.sampled_from(["A", "B", "acc-1", "=x", "'y", "z z", "é"]), st.text(min_size=1, max_size=5))
POSITIONS_SCHEMA = {"account_id": id_text, "instrument": mostly(st.sampled_from(INSTRUMENTS), st.just("BTC-NOPE")),
                    "quantity": mostly(st.floats(-1e6, 1e6).map(repr), number_text)}
COLLATERAL_SCHEMA = {"account_id": id_text, "currency": mostly(st.sampled_from(CURRENCIES),
                                                               st.sampled_from(["btc", "DOGE"])),
                     "amount": mostly(st.floats(0, 1e6).map(repr), number_text)}
INSTRUMENTS_SCHEMA = {"name": mostly(st.sampled_from(INSTRUMENTS), st.sampled_from(["MY-THING", "BTC-NOPE"])),
                      "kind": st.sampled_from(["", "", "", "option", "future", "perpetual", "spot", "swap"]),
                      "strike": mostly(st.just(""), number_text), "contract_size": mostly(st.just(""), number_text),
                      "inverse": mostly(st.just(""), st.sampled_from(["true", "false", "1", "yes"]))}


@st.composite
def history_csv(draw) -> str:
    """A daily history CSV, wide or long, consecutive dates, positive closes; a few cells replaced."""
    n = draw(st.integers(2, 8))
    dates = [f"2024-01-{d:02d}" for d in range(1, n + 1)]
    prices = st.floats(0.01, 1e5).map(repr)
    if draw(st.booleans()):
        rows = [["date", "AAA", "BBB"]] + [[d, draw(prices), draw(prices)] for d in dates]
    else:
        rows = [["date", "asset", "close"]] + [[d, a, draw(prices)] for d in dates for a in ("AAA", "BBB")]
    for _ in range(draw(st.integers(0, 2))):
        r = draw(st.integers(1, len(rows) - 1))
        rows[r][draw(st.integers(0, 2))] = draw(st.one_of(number_text, st.sampled_from(NASTY_TEXT)))
    return "\n".join(",".join(r) for r in rows) + "\n"


def json_dumps_loose(value) -> str:
    """JSON text that may contain NaN/Infinity tokens (not JSON; readers must refuse them)."""
    return json.dumps(value, allow_nan=True)


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def arrays_of(elements, max_size: int = 8):
    """numpy arrays of several dtypes: float64, int64, object (mixed), bool, str."""
    return st.one_of(
        st.lists(elements, max_size=max_size).map(lambda v: np.array(v, dtype=object)),
        st.lists(nasty_floats, max_size=max_size).map(lambda v: np.array(v, dtype=np.float64)),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=max_size).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.booleans(), max_size=max_size).map(lambda v: np.array(v, dtype=bool)),
        st.lists(st.text(max_size=3), max_size=max_size).map(lambda v: np.array(v, dtype=str)),
    )
