"""Readers and writers: instruments, accounts (positions + collateral) and result columns.

File formats (see ``docs/data-model.md``):

* **instruments** — one row per instrument, columns ``name, kind, underlying, option_type, strike,
  expiry_ms, inverse, contract_size, settlement`` (``kind`` a lower-case name such as ``option``,
  ``option_type`` ``call``/``put``/empty, ``strike`` and ``expiry_ms`` empty when not applicable). A file
  with only a ``name`` column of Deribit names is accepted too.
* **positions** — long format ``account_id, instrument, quantity`` (signed contracts).
* **collateral** — long format ``account_id, currency, amount``; the writer emits every account ×
  currency (zeros included) so that accounts without positions survive a round trip.

CSV and JSON use the standard library and numpy only; Parquet and Arrow IPC (``.arrow``, ``.feather``,
``.ipc``: the Arrow file format, which Feather v2 is) need pyarrow (``pip install dpm[io]``). With pyarrow
installed, large CSV and JSON files go through pyarrow too (:mod:`dpm._util.arrow`): positions are
read into dictionary codes and handed to the book builder without a Python loop over rows, and
writers format numbers in C. Both paths accept the same files, give the same books and raise the
same errors (a file the pyarrow path does not vouch for is read again by the standard-library
path, which names the problem), and write the same bytes. Floats are written with ``repr``
(shortest exact form), so a CSV or JSON round trip is bit-exact. The format follows the file suffix
(``.csv``, ``.json``, ``.parquet``/``.pq``, ``.arrow``/``.feather``/``.ipc``) unless ``format=`` is given.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpm._util import arrow as _arrow
from dpm._util.fields import (
    FORMULA_START,
    bool_column,
    escape_text,
    field_error,
    int_column,
    number_column,
    row_label,
    text_column,
    unescape_text,
)
from dpm._util.files import (
    atomic_path,
    atomic_paths,
    check_header,
    decode_utf8,
    load_json,
    parse_csv,
    read_bytes,
)
from dpm._util.parallel import run_bounds
from dpm.errors import DPMError, InvalidInputError, InvalidTypeError, UnknownInstrumentError
from dpm.market.specs import NO_EXPIRY, Kind
from dpm.market.table import INSTRUMENT_COLUMNS, InstrumentTable
from dpm.portfolio.accounts import DEFAULT_CURRENCIES, AccountBook

__all__ = [
    "SUFFIXES",
    "collateral_path_for",
    "format_of",
    "json_columns_text",
    "read_accounts",
    "read_columns",
    "read_instruments",
    "write_accounts",
    "write_columns",
    "write_instruments",
]

PathLike = str | os.PathLike


_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow",
            ".feather": "arrow", ".ipc": "arrow"}
_FORMAT_NAMES = {"csv": "csv", "json": "json", "parquet": "parquet", "pq": "parquet", "arrow": "arrow",
                 "feather": "arrow", "ipc": "arrow"}
#: File suffixes the readers and writers understand.
SUFFIXES = tuple(_FORMATS)
_INSTRUMENT_COLUMNS = INSTRUMENT_COLUMNS


# ----------------------------------------------------------------------------------------------------
# generic column files
# ----------------------------------------------------------------------------------------------------
def _format_of(path: PathLike, format: str | None) -> str:
    if format is not None:
        f = _FORMAT_NAMES.get(str(format).lower().lstrip("."))
        if f is None:
            raise InvalidInputError(f"format: expected 'csv', 'json', 'parquet' or 'arrow', got {format!r}")
        return f
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise InvalidInputError(
            f"format: cannot tell the format of {str(path)!r} from its suffix; pass "
            "format='csv'|'json'|'parquet'|'arrow'"
        )
    return _FORMATS[suffix]


def format_of(path: PathLike) -> str:
    """File format of ``path`` by its suffix: ``"csv"``, ``"json"``, ``"parquet"`` or ``"arrow"``."""
    return _format_of(path, None)


def _rules(fmt: str) -> str:
    """Field-rule family of a format (:mod:`dpm._util.fields`): Arrow IPC columns are typed like Parquet's."""
    return "parquet" if fmt == "arrow" else fmt


def _require_pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq  # noqa: F401
    except ImportError:
        raise ImportError(
            "Parquet and Arrow files need pyarrow, which is not installed; install it with `pip install dpm[io]` "
            "(or `pip install pyarrow`)"
        ) from None
    return pa


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return escape_text(str(v))


def write_columns(path: PathLike, columns: Mapping[str, Any], format: str | None = None) -> None:
    """Write equal-length columns to CSV (header + rows), JSON (``{"columns": {...}}``), Parquet or
    Arrow IPC.

    Missing values (``None``, NaN) are empty CSV cells, JSON ``null`` and Parquet/Arrow nulls. JSON has
    no infinity: an infinite value is an error naming the column and row (CSV writes ``inf``,
    Parquet and Arrow store it). CSV text cells that a spreadsheet would run as a formula (starting
    with ``=``, ``+``, ``-``, ``@``, tab or carriage return) get a leading ``'``, which
    :func:`read_columns` removes again (see :func:`dpm._util.fields.escape_text`); numeric columns
    are written as numbers. The file is written to a temporary file in the same directory and
    renamed when complete.
    """
    fmt = _format_of(path, format)
    names, cols = _checked_columns(columns)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            _write_csv(tmp, names, cols)
        elif fmt == "json":
            _write_text(tmp, json_columns_text(dict(zip(names, cols)), wrap="columns"))
        else:
            _write_arrow_file(tmp, fmt, names, cols)


def _checked_columns(columns: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    names = list(columns)
    for c in names:
        if not isinstance(c, str) or not c:
            raise InvalidInputError(f"columns: column names must be non-empty str, got {c!r}")
    cols = [columns[c] for c in names]
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise InvalidInputError(f"columns: lengths differ ({dict(zip(names, map(len, cols)))})")
    return names, cols


def _write_text(path: PathLike, text: str | bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(text.encode("utf-8") if isinstance(text, str) else text)


def _n_cells(cols: Sequence[Any]) -> int:
    return len(cols) * (len(cols[0]) if cols else 0)


def _write_csv(path: PathLike, names: list[str], cols: list[Any]) -> None:
    if len(cols) > 1 and _arrow.prefer_arrow(_n_cells(cols), _arrow.FAST_PATH_MIN_CELLS):
        try:
            _write_csv_arrow(path, names, cols)
            return
        except InvalidInputError:
            raise
        except Exception:  # noqa: BLE001 - ImportError, a value pyarrow will not hold: the path below decides
            pass
    _write_csv_python(path, names, cols)


def _plain(col: Any) -> Any:
    """A pyarrow column as a numpy object array of Python values (other columns unchanged)."""
    if hasattr(col, "dictionary_decode") or type(col).__module__.startswith("pyarrow"):
        values = _arrow.compute().dictionary_decode(col) if hasattr(col, "dictionary_decode") else col
        out = np.empty(len(values), dtype=object)
        out[:] = values.to_pylist()
        return out
    return col


def _write_csv_python(path: PathLike, names: list[str], cols: list[Any]) -> None:
    cells = [_csv_cells(_plain(c)) for c in cols]
    header = [escape_text(h) for h in names]
    text_cells = "\x01".join("\x01".join(c) for c in cells + [header])
    if "\x00" in text_cells:
        raise InvalidInputError(_NUL_MESSAGE)
    if any(ch in text_cells for ch in ',"\n\r'):
        # RFC 4180 quoting of the cells that need it (the csv module would leave a lone \r unquoted
        # with a \n line terminator, and a reader would then split the row there)
        cells = [[_quote(v) for v in c] for c in cells]
        header = [_quote(h) for h in header]
    if len(cells) == 1:  # one column: an empty cell would be a blank line, which readers skip
        cells = [['""' if v == "" else v for v in cells[0]]]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fh.write(",".join(header) + "\n")
        if cells and cells[0]:
            fh.write("\n".join(map(",".join, zip(*cells))))  # join in C: much faster than csv.writer
            fh.write("\n")


_NUL_MESSAGE = ("columns: a text cell contains a NUL character, which a CSV file cannot hold (readers refuse NUL "
                "bytes); write JSON or Parquet")
#: Rows per block of the pyarrow writers (keeps a block's text under pyarrow's 2 GiB string offsets).
_BLOCK_ROWS = 1 << 18


def _arrow_text_cells(col: Any, *, csv: bool) -> Any:
    """pyarrow text of a column's CSV cells (``csv``) or JSON values, exactly as the standard-library
    writers print them; None = missing (empty CSV cell, JSON null). Text cells are escaped for CSV;
    for CSV, also RFC 4180-quoted where needed and a NUL character is an error."""
    import pyarrow as pa

    pc = _arrow.compute()

    def text(values: Any, escaped: bool = False) -> Any:
        if not csv:
            return values
        if not escaped:
            values = _arrow.text_cells(values, csv=True)
        if pc.any(pc.match_substring(values, "\x00")).as_py():
            raise InvalidInputError(_NUL_MESSAGE)
        return _arrow.csv_quote(values)

    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_dictionary(col.type):  # ids and names of write_accounts: work on the few distinct values
            return pc.dictionary_decode(pa.DictionaryArray.from_arrays(col.indices, text(col.dictionary)))
        return text(col)
    arr = col if isinstance(col, np.ndarray) else None
    kind = arr.dtype.kind if arr is not None else "O"
    if kind == "f":
        return _arrow.float_text(arr)
    if kind == "b":
        return pc.if_else(_arrow.numpy_array(arr), "true", "false")
    if kind in "iu":
        return pc.cast(_arrow.numpy_array(arr), pa.string())
    pylist = arr.tolist() if kind in "OU" and arr is not None else None  # made once: checked, then converted
    if pylist is not None and (kind == "U" or set(map(type, pylist)) <= {str}):
        # from Python str, not numpy's fixed-width buffer (pyarrow reads a NUL there as the end of the text)
        return text(pa.array(pylist, type=pa.string()))
    if not csv:
        return None  # mixed Python values: the JSON encoder writes them
    return text(pa.array(_csv_cells(col), type=pa.string()), escaped=True)


def _write_csv_arrow(path: PathLike, names: list[str], cols: list[Any]) -> None:
    """:func:`_write_csv_python` with the cells formatted and joined by pyarrow (the same bytes)."""
    pc = _arrow.compute()
    header = [escape_text(h) for h in names]
    if any("\x00" in h for h in header):
        raise InvalidInputError(_NUL_MESSAGE)
    n = len(cols[0]) if cols else 0
    # a column at a time on every core: pyarrow's formatting and numpy's masks release the GIL
    blocks = run_bounds(lambda j, _: pc.fill_null(_arrow_text_cells(cols[j], csv=True), ""),
                        [(j, j + 1) for j in range(len(cols))], None)
    with open(path, "wb") as fh:
        fh.write((",".join(map(_quote, header)) + "\n").encode("utf-8"))
        for s in range(0, n, _BLOCK_ROWS):
            fh.write(_arrow.joined_rows([b.slice(s, _BLOCK_ROWS) for b in blocks], ",", "\n"))


def _write_arrow_file(path: PathLike, fmt: str, names: list[str], cols: list[Any]) -> None:
    """Parquet (``fmt="parquet"``) or Arrow IPC file of the columns (floats: NaN -> null)."""
    pa = _require_pyarrow()

    arrays = {}
    for c, col in zip(names, cols):
        if isinstance(col, (pa.Array, pa.ChunkedArray)):
            arrays[c] = col
            continue
        arr = np.asarray(col)
        try:
            if arr.dtype.kind == "f":
                nan = np.isnan(arr)
                arrays[c] = _arrow.numpy_array(arr, nan)
            elif arr.dtype.kind == "O":
                vals = arr.tolist()
                if not set(map(type, vals)) <= {str, type(None)}:
                    vals = [_json_value(v) for v in vals]
                arrays[c] = pa.array(vals)
            elif arr.dtype.kind in "iub" and arr.ndim == 1:
                arrays[c] = _arrow.numpy_array(arr)
            else:
                arrays[c] = pa.array(arr)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            what = "Parquet" if fmt == "parquet" else "an Arrow file"
            raise InvalidInputError(f"columns: column {c!r} cannot be stored in {what} ({exc})") from None
    table = pa.table(arrays)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # dictionary pages for text only: trying them on float columns halves the writer's speed for nothing
        text = [f.name for f in table.schema if _arrow.is_text_type(f.type)]
        pq.write_table(table, path, use_dictionary=text or False)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def json_columns_text(columns: Mapping[str, Any], *, wrap: str | None = None, nonfinite: str = "error") -> str:
    """JSON text ``{column: [values]}`` (``wrap="columns"``: ``{"columns": {...}}``) of equal-length columns.

    ``nonfinite="error"``: an infinite float is an error naming the column and row (NaN is ``null``);
    ``"null"``: every value that is not a finite number is ``null``. The text is exactly
    ``json.dumps(..., allow_nan=False)`` of the values as Python objects; with pyarrow installed large
    columns are formatted by it (the same bytes).
    """
    names, cols = _checked_columns(columns)
    fast = _arrow.prefer_arrow(_n_cells(cols), _arrow.FAST_PATH_MIN_CELLS)
    parts = []
    for name, col in zip(names, cols):
        text = None
        if fast:
            try:
                text = _json_list_text_arrow(col, name, nonfinite)
            except InvalidInputError:
                raise
            except Exception:  # noqa: BLE001 - ImportError or a value pyarrow will not hold
                text = None
        if text is None:
            text = json.dumps(_json_list(_plain(col), name, nonfinite), allow_nan=False)
        parts.append(f"{json.dumps(name)}: {text}")
    body = "{" + ", ".join(parts) + "}"
    return '{"columns": ' + body + "}" if wrap == "columns" else body


def _json_list_text_arrow(col: Any, name: str, nonfinite: str) -> str | None:
    pc = _arrow.compute()
    if not isinstance(col, np.ndarray) or col.dtype.kind not in "fbiu" or len(col) == 0:
        return None  # text and mixed columns: the C JSON encoder is as fast
    if col.dtype.kind == "f":
        inf = np.isinf(col)
        if inf.any():
            if nonfinite == "error":
                i = int(np.flatnonzero(inf)[0])
                raise InvalidInputError(_json_inf_message(name, i, float(col[i])))
            col = np.where(inf, np.nan, col)
    cells = pc.fill_null(_arrow_text_cells(col, csv=False), "null")
    out = []
    for s in range(0, len(col), _BLOCK_ROWS):
        out.append(_arrow.joined_rows([cells.slice(s, _BLOCK_ROWS)], "", ", ").to_pybytes())
    return "[" + b"".join(out)[:-2].decode("ascii") + "]"


def _json_inf_message(name: str, i: int, v: float) -> str:
    return (f"columns: column {name!r}, row {i + 1} is {v!r}; JSON has no infinity (write CSV or Parquet, "
            "or replace it)")


def _quote(v: str) -> str:
    if any(ch in v for ch in ',"\n\r'):
        return '"' + v.replace('"', '""') + '"'
    return v


def _csv_cells(col: Any) -> list[str]:
    """CSV text of every value of a column (floats by repr: exact round trip; missing -> "")."""
    arr = col if isinstance(col, np.ndarray) else np.asarray(col, dtype=object)
    kind = arr.dtype.kind
    if kind == "f":
        cells = list(map(repr, arr.astype(np.float64).tolist()))
        for i in np.flatnonzero(np.isnan(arr)).tolist():
            cells[i] = ""
        return cells
    if kind == "b":
        return np.where(arr, "true", "false").tolist()
    if kind in "iu":
        return list(map(str, arr.tolist()))
    vals = arr.tolist()
    if all(type(v) is str for v in vals):
        return [escape_text(v) if v[:1] in _ESCAPE_FIRST else v for v in vals]
    return [_cell(v) for v in vals]


_ESCAPE_FIRST = frozenset(FORMULA_START | {"'"})


def _json_value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return v


def _json_list(col: Any, name: str, nonfinite: str = "error") -> list[Any]:
    vals = [_json_value(v) for v in (col.tolist() if isinstance(col, np.ndarray) else col)]
    for i, v in enumerate(vals):
        if isinstance(v, float) and math.isinf(v):
            if nonfinite != "error":
                vals[i] = None
                continue
            raise InvalidInputError(_json_inf_message(name, i, v))
    return vals


_READERS = {"str": "text", "float": "number", "int": "int", "int?": "int", "bool": "bool"}


def _typed(values: Any, fmt: str, dtype: str, column: str, source: str) -> np.ndarray:
    """A column converted by the one rule of its type (see :mod:`dpm._util.fields`)."""
    if dtype not in _READERS:
        raise InvalidInputError(f"dtypes: unknown dtype {dtype!r} for column {column!r}")
    if dtype == "str":
        return text_column(values, fmt, column, source, required=False)
    if dtype == "float":
        return number_column(values, fmt, column, source, required=False, finite=False)[0]
    if dtype == "bool":
        return np.array(bool_column(values, fmt, column, source), dtype=bool)
    ints = int_column(values, fmt, column, source, required=dtype == "int")
    if dtype == "int":
        return np.array(ints, dtype=np.int64)
    out = np.empty(len(ints), dtype=object)
    out[:] = ints
    return out


def _read_raw(path: PathLike, fmt: str) -> tuple[str, dict[str, Any]]:
    """``(source, {column: raw values})``: CSV cell text, JSON values or pyarrow columns (Parquet, Arrow)."""
    source = os.fspath(path)
    if fmt == "csv":
        data = read_bytes(path)
        if _arrow.prefer_arrow(len(data), _arrow.FAST_PATH_MIN_BYTES):
            cols = _fast_csv(data, source)
            if cols is not None:
                return source, {c: v.to_pylist() for c, v in cols.items()}
        header, raw = parse_csv(decode_utf8(data, source), source)
        return source, dict(zip(header, raw))
    if fmt == "json":
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
            raise InvalidInputError(f"{source}: expected a JSON object with a 'columns' object")
        cols = data["columns"]
        check_header(list(cols), source)
        n = None
        for c, vals in cols.items():
            if not isinstance(vals, list):
                raise InvalidInputError(f"{source}: column {c!r} is {type(vals).__name__}, expected a list")
            if n is not None and len(vals) != n:
                raise InvalidInputError(f"{source}: column {c!r} has {len(vals)} values, the others {n}")
            n = len(vals)
        return source, {c.strip(): v for c, v in cols.items() if c.strip()}
    tbl = _read_parquet_table(path) if fmt == "parquet" else _read_ipc(path)
    header = check_header(tbl.column_names, source)
    return source, {h: tbl.column(j) for j, h in enumerate(header) if h}


def _fast_csv(data: bytes, source: str, **kw: Any) -> dict[str, Any] | None:
    """:func:`dpm._util.arrow.read_csv_table`, or None also when pyarrow cannot be imported."""
    try:
        return _arrow.read_csv_table(data, source, **kw)
    except ImportError:
        return None


def _read_ipc(path: PathLike) -> Any:
    _require_pyarrow()
    return _arrow.read_ipc_table(read_bytes(path), os.fspath(path))


def _read_parquet_table(path: PathLike) -> Any:
    pa = _require_pyarrow()
    import pyarrow.parquet as pq

    data = read_bytes(path)
    try:
        # ParquetFile.read, not read_table: the dataset reader fails on a repeated column name
        # before check_header can name it
        table = pq.ParquetFile(pa.BufferReader(data)).read()
        table.column_names  # noqa: B018 - decoding the names may fail too (bytes not UTF-8)
        return table
    except Exception as exc:  # any failure to decode these bytes means the file is not valid Parquet
        msg = " ".join(str(exc).splitlines())[:200]
        raise InvalidInputError(f"{os.fspath(path)}: not a readable Parquet file ({type(exc).__name__}: {msg})") \
            from None


def read_columns(
    path: PathLike, dtypes: Mapping[str, str] | None = None, format: str | None = None
) -> dict[str, np.ndarray]:
    """Read a column file written by :func:`write_columns` (or any CSV with a header).

    Parameters
    ----------
    path : str or Path
    dtypes : mapping column -> {'str', 'float', 'int', 'int?', 'bool'}, optional
        Types of columns, applied by the same rule in every format (see :mod:`dpm._util.fields`):
        ``float`` gives NaN for a missing value, ``int?`` None. Columns not listed are text (object
        arrays) in CSV and keep their own types in JSON and Parquet.
    format : {'csv', 'json', 'parquet', 'arrow'}, optional

    Returns
    -------
    dict of str to numpy array

    Raises
    ------
    InvalidInputError
        The file is missing, not UTF-8 (CSV/JSON), malformed, has a repeated or unnamed column, or a
        value does not fit its type (naming the file, column and row).
    """
    fmt = _format_of(path, format)
    dtypes = dict(dtypes or {})
    source, raw = _read_raw(path, fmt)
    out = {}
    for c, vals in raw.items():
        want = dtypes.get(c)
        if want is not None or fmt == "csv":
            out[c] = _typed(vals, _rules(fmt), want or "str", c, source)
        elif fmt == "json":
            out[c] = _json_column(vals)
        else:
            out[c] = _arrow_column(vals, c, source)
    return out


def _arrow_column(col: Any, name: str, source: str) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_floating(col.type):
        return number_column(col, "parquet", name, source, required=False, finite=False)[0]
    if (pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)) and col.null_count == 0:
        return col.to_numpy(zero_copy_only=False)
    if _arrow.is_text_type(col.type):
        return text_column(col, "parquet", name, source, required=False)
    try:
        vals = col.to_pylist()
    except Exception as exc:
        raise InvalidInputError(f"{source}: {name}: cannot read the Parquet column of type {col.type} ({exc})") \
            from None
    return _json_column(vals)


def _json_column(vals: list[Any]) -> np.ndarray:
    """A JSON column of undeclared type: float, bool or int array when every value is one, else objects."""
    if vals and all(isinstance(v, float) or v is None for v in vals) and any(isinstance(v, float) for v in vals):
        return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
    if vals and all(isinstance(v, bool) for v in vals):
        return np.array(vals, dtype=bool)
    if vals and all(isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63 for v in vals):
        return np.array(vals, dtype=np.int64)
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return out


# ----------------------------------------------------------------------------------------------------
# instruments
# ----------------------------------------------------------------------------------------------------
def write_instruments(table: InstrumentTable, path: PathLike, format: str | None = None) -> None:
    """Write an :class:`InstrumentTable` (CSV, JSON records, Parquet or Arrow IPC; atomically)."""
    if not isinstance(table, InstrumentTable):
        raise InvalidTypeError(f"table: expected an InstrumentTable, got {type(table).__name__}")
    fmt = _format_of(path, format)
    if fmt == "json":
        text = json.dumps({"format": "dpm.market", "version": 1, "instruments": table.to_records()},
                          indent=1, allow_nan=False)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return
    kinds = np.array([k.name.lower() for k in Kind], dtype=object)
    exp = np.empty(len(table), dtype=object)
    exp[:] = [None if e == NO_EXPIRY else e for e in table.expiry_ms.tolist()]
    cols = {
        "name": table.name,
        "kind": kinds[table.kind],
        "underlying": table.underlying_names,
        "option_type": np.array([None, "call", "put"], dtype=object)[table.option_type],
        "strike": table.strike,
        "expiry_ms": exp,
        "inverse": table.inverse,
        "contract_size": table.contract_size,
        "settlement": table.settlement,
    }
    if fmt in ("parquet", "arrow"):
        pa = _require_pyarrow()

        arrays = {
            c: pa.array(
                v.tolist() if v.dtype == object else v, mask=np.isnan(v) if v.dtype.kind == "f" else None
            )
            for c, v in cols.items()
        }
        arrays["expiry_ms"] = pa.array(exp.tolist(), type=pa.int64())
        with atomic_path(path) as tmp:
            _write_arrow_file(tmp, fmt, list(arrays), list(arrays.values()))
        return
    write_columns(path, cols, "csv")


#: Type of every instrument field in files (the same rule in CSV, JSON and Parquet).
_INSTRUMENT_TYPES = {
    "name": "str",
    "kind": "str",
    "underlying": "str",
    "option_type": "str",
    "strike": "float",
    "expiry_ms": "int?",
    "inverse": "bool?",
    "contract_size": "float",
    "settlement": "str",
}


def _instrument_columns(raw: Mapping[str, Any], fmt: str, source: str, where: Any) -> dict[str, list[Any]]:
    """Typed instrument fields (None = missing) of raw columns, by :data:`_INSTRUMENT_TYPES`."""
    out: dict[str, list[Any]] = {}
    for c, t in _INSTRUMENT_TYPES.items():
        if c not in raw:
            continue
        vals = raw[c]
        if t == "str":
            out[c] = text_column(vals, fmt, c, source, where, required=c == "name").tolist()
        elif t == "float":
            num, missing = number_column(vals, fmt, c, source, where, required=False)
            out[c] = [None if m else v for v, m in zip(num.tolist(), missing.tolist())]
        elif t == "int?":
            out[c] = int_column(vals, fmt, c, source, where, required=False)
        else:
            out[c] = bool_column(vals, fmt, c, source, where, required=False)
    return out


def read_instruments(
    path: PathLike, format: str | None = None, underlyings: Sequence[str] | None = None
) -> InstrumentTable:
    """Read an :class:`InstrumentTable` written by :func:`write_instruments`.

    A CSV/Parquet file may leave columns out (only ``name`` is required) when the names are Deribit
    names the missing fields can be derived from; JSON may be ``{"instruments": [...]}`` or a bare list
    of records, or of names. Every field has one type in every format (text, number, integer or
    true/false; see :func:`read_columns`); an error names the file, the field and the row.
    """
    fmt = _format_of(path, format)
    source = os.fspath(path)
    if fmt == "json":
        data = load_json(path)
        recs = data.get("instruments") if isinstance(data, dict) else data
        if not isinstance(recs, list):
            raise InvalidInputError(f"{source}: expected a list of instruments or {{'instruments': [...]}}")
        if recs and all(isinstance(r, str) for r in recs):
            return _with_source(source, lambda: InstrumentTable.from_names(recs, underlyings=underlyings))
        for i, r in enumerate(recs):
            if not isinstance(r, dict):
                raise InvalidInputError(
                    f"{source}: instruments[{i}] is {type(r).__name__}, expected a record (object) or a name"
                )
        keys = [c for c in _INSTRUMENT_TYPES if any(c in r for r in recs)]
        raw = {c: [r.get(c) for r in recs] for c in keys}
        if "name" not in raw and recs:
            raise InvalidInputError(f"{source}: instruments[0] has no 'name'")
        typed = _instrument_columns(raw, "json", source, lambda i: f"instruments[{i}]")
        records = [dict(r) for r in recs]
        for c, vals in typed.items():
            for rec, v in zip(records, vals):
                rec[c] = v
        return _with_source(source, lambda: InstrumentTable.from_records(records, underlyings=underlyings))
    _, raw = _read_raw(path, fmt)
    if "name" not in raw:
        raise InvalidInputError(f"{source}: no 'name' column (columns: {', '.join(raw) or 'none'})")
    typed = _instrument_columns(raw, _rules(fmt), source, row_label)
    n = len(typed["name"])
    records = [{c: typed[c][i] for c in typed} for i in range(n)]
    return _with_source(source, lambda: InstrumentTable.from_records(records, underlyings=underlyings))


def _with_source(source: str, build: Any) -> Any:
    """Run ``build()``; a dpm error it raises gets the file name in front of its message."""
    try:
        return build()
    except DPMError as exc:
        msg = str(exc)
        if msg.startswith(source):
            raise
        raise type(exc)(f"{source}: {msg}") from None


# ----------------------------------------------------------------------------------------------------
# accounts
# ----------------------------------------------------------------------------------------------------
def collateral_path_for(path: PathLike) -> Path:
    """Default collateral file next to a positions file: ``book.csv`` → ``book.collateral.csv``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.collateral{p.suffix}")


def write_accounts(
    book: AccountBook, path: PathLike, collateral_path: PathLike | None = None, format: str | None = None
) -> None:
    """Write an :class:`AccountBook`.

    CSV/Parquet: positions to ``path`` and collateral to ``collateral_path`` (default
    :func:`collateral_path_for`); both files appear together or neither does. JSON: one file
    ``{"format": "dpm.portfolio.accounts", "currencies": [...], "accounts": [{"account_id",
    "positions": [[name, qty], ...], "collateral": {cur: amount}}]}``. CSV text cells are escaped
    against spreadsheet formulas (see :func:`write_columns`).
    """
    if not isinstance(book, AccountBook):
        raise InvalidTypeError(f"book: expected an AccountBook, got {type(book).__name__}")
    fmt = _format_of(path, format)
    if fmt == "json":
        if collateral_path is not None:
            raise InvalidInputError("collateral_path: a JSON book is one file; do not pass collateral_path")
        names = book.table.name
        ids = book.account_id.tolist()
        ip = book.indptr.tolist()
        inst = book.instrument_idx
        qty = book.quantity.tolist()
        coll = book.collateral.tolist()
        accounts = []
        for i, aid in enumerate(ids):
            s, e = ip[i], ip[i + 1]
            accounts.append(
                {
                    "account_id": aid,
                    "positions": [[n, q] for n, q in zip(names[inst[s:e]].tolist(), qty[s:e])],
                    "collateral": {c: a for c, a in zip(book.currencies, coll[i]) if a != 0.0},
                }
            )
        # dumps (C encoder) then write: json.dump streams through the pure-Python encoder
        text = json.dumps(
            {"format": "dpm.portfolio.accounts", "version": 1, "currencies": list(book.currencies),
             "accounts": accounts},
            allow_nan=False,
        )
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return
    cpath = collateral_path if collateral_path is not None else collateral_path_for(path)
    cells = 3 * (book.n_positions + book.collateral.size)
    fast = fmt != "csv" and _arrow.ENABLED or _arrow.prefer_arrow(cells, _arrow.FAST_PATH_MIN_CELLS)
    columns = _book_columns_arrow(book) if fast else None
    with atomic_paths([path, cpath]) as (tmp_pos, tmp_coll):
        if columns is not None:
            write_columns(tmp_pos, columns[0], fmt)
            write_columns(tmp_coll, columns[1], fmt)
        else:
            write_columns(tmp_pos, book.to_columns(), fmt)
            write_columns(tmp_coll, book.collateral_columns(include_zero=True), fmt)


def _book_columns_arrow(book: AccountBook) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Positions and collateral columns of a book with the ids, instrument names and currencies as
    pyarrow dictionary arrays over the book's codes (no per-row strings; Parquet stores them
    dictionary-encoded); None without pyarrow."""
    try:
        import pyarrow as pa
    except ImportError:
        return None
    n, c = book.collateral.shape
    ids = pa.array(book.account_id, type=pa.string())
    code = np.int32 if max(n, len(book.table)) < 2**31 else np.int64

    def text(codes: np.ndarray, values: Any) -> Any:
        return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=code)), values)

    positions = {
        "account_id": text(np.repeat(np.arange(n, dtype=code), np.diff(book.indptr)), ids),
        "instrument": text(book.instrument_idx, pa.array(book.table.name, type=pa.string())),
        "quantity": book.quantity,
    }
    collateral = {
        "account_id": text(np.repeat(np.arange(n, dtype=code), c), ids),
        "currency": text(np.tile(np.arange(c, dtype=code), n), pa.array(list(book.currencies), type=pa.string())),
        "amount": book.collateral.ravel(),
    }
    return positions, collateral


def _check_positions(source: str, ids: np.ndarray, names: np.ndarray, table: InstrumentTable,
                     where: Any) -> np.ndarray:
    """Instrument ids of ``names``; an unknown name is an error naming the file and row."""
    try:
        return table.index_of(names)
    except UnknownInstrumentError:
        known = set(table.name.tolist())
        i = next(i for i, n in enumerate(names.tolist()) if n not in known)
        raise UnknownInstrumentError(
            f"{source}: instrument at {where(i)} (account {ids[i]!r}) is {names[i]!r}, not in the instrument "
            f"table ({len(table)} instruments)"
        ) from None


def _position_label(where: Any, ids: np.ndarray, names: np.ndarray, what: str = "instrument") -> Any:
    """Row location that also names the account and the instrument (or currency) of the row."""
    return lambda i: f"{where(i)} (account {ids[i]!r}, {what} {names[i]!r})"


def _check_collateral_rows(source: str, currency: np.ndarray, currencies: Sequence[str] | None,
                           where: Any) -> None:
    for i, c in enumerate(currency.tolist()):
        if not c.isascii() or not c.isalnum() or c.upper() != c:
            raise field_error(source, "currency", where(i), c, "not an upper-case currency code like 'BTC'")
        if currencies is not None and c not in currencies:
            raise field_error(source, "currency", where(i), c,
                              f"not one of the book's currencies {tuple(currencies)!r}")


def read_accounts(
    path: PathLike,
    table: InstrumentTable,
    collateral_path: PathLike | None = None,
    format: str | None = None,
    currencies: Sequence[str] | None = None,
) -> AccountBook:
    """Read an :class:`AccountBook` written by :func:`write_accounts` (or hand-made files).

    The account order is the order of first appearance in the collateral file, then in the positions
    file (JSON: the order of ``accounts``). A missing default collateral file means no collateral.

    Every field has one rule in every format: ``account_id``, ``instrument`` and ``currency`` are
    text, ``quantity`` a finite number, ``amount`` a finite number >= 0, all required (see
    :func:`read_columns`). An error names the file, the field and the row (JSON: the account and
    position) and the value.

    Raises
    ------
    InvalidInputError, InvalidTypeError, UnknownInstrumentError, MissingFileError
    """
    if not isinstance(table, InstrumentTable):
        raise InvalidTypeError(f"table: expected an InstrumentTable, got {type(table).__name__}")
    fmt = _format_of(path, format)
    source = os.fspath(path)
    if fmt == "json":
        return _read_accounts_json(path, table, currencies)
    cpath = Path(collateral_path) if collateral_path is not None else collateral_path_for(path)
    with_collateral = collateral_path is not None or cpath.exists()
    if (_arrow.ENABLED and fmt != "csv") or _arrow.prefer_arrow(_file_size(path), _arrow.FAST_PATH_MIN_BYTES):
        book = _read_accounts_arrow(path, cpath if with_collateral else None, fmt, table, currencies)
        if book is not None:
            return book
    rules = _rules(fmt)
    _, pos = _read_raw(path, fmt)
    for c in ("account_id", "instrument", "quantity"):
        if c not in pos:
            raise InvalidInputError(f"{source}: no {c!r} column (columns: {', '.join(pos) or 'none'})")
    ids = text_column(pos["account_id"], rules, "account_id", source)
    names = text_column(pos["instrument"], rules, "instrument", source)
    inst = _check_positions(source, ids, names, table, row_label)
    qty = number_column(pos["quantity"], rules, "quantity", source, _position_label(row_label, ids, names))[0]

    coll_cols = None
    order: list[str] = []
    if with_collateral:
        csource, craw = _read_raw(cpath, fmt)
        for c in ("account_id", "currency", "amount"):
            if c not in craw:
                raise InvalidInputError(f"{csource}: no {c!r} column (columns: {', '.join(craw) or 'none'})")
        c_ids = text_column(craw["account_id"], rules, "account_id", csource)
        c_cur = text_column(craw["currency"], rules, "currency", csource)
        _check_collateral_rows(csource, c_cur, currencies, row_label)
        c_amt = number_column(craw["amount"], rules, "amount", csource,
                              _position_label(row_label, c_ids, c_cur, "currency"), minimum=0.0)[0]
        coll_cols = {"account_id": c_ids, "currency": c_cur, "amount": c_amt}
        order = list(dict.fromkeys(c_ids.tolist()))
    order = list(dict.fromkeys(order + ids.tolist()))
    positions = {"account_id": ids, "instrument": table.name[inst], "quantity": qty}
    return _with_source(source, lambda: AccountBook.from_positions(
        positions, table, collateral=coll_cols, account_ids=order, currencies=currencies))


def _file_size(path: PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # missing or unreadable: the reader below names it
        return 0


def _arrow_columns(path: PathLike, fmt: str, text: Sequence[str], numbers: Sequence[str]) -> dict[str, Any] | None:
    """The ``text`` columns (pyarrow) and ``numbers`` columns (finite float64 numpy arrays) of a
    positions or collateral file read by pyarrow, or None unless every value is plainly valid
    (present, of the right type, finite): the standard-library reader then names the problem."""
    import pyarrow as pa

    pc = _arrow.compute()
    data = read_bytes(path)
    source = os.fspath(path)
    if fmt == "csv":
        cols = _arrow.read_csv_table(data, source, dictionary=text, numbers=numbers)
    elif fmt == "parquet":
        cols = _arrow.read_parquet_table(data, source, dictionary=text)
    else:
        try:
            tbl = _arrow.read_ipc_table(data, source)
            header = check_header(tbl.column_names, source)
        except InvalidInputError:
            return None
        cols = {h: tbl.column(j) for j, h in enumerate(header) if h}
    if cols is None or any(c not in cols for c in (*text, *numbers)):
        return None
    out: dict[str, Any] = {}
    for c in text:
        if not _arrow.is_text_type(cols[c].type):
            return None
        out[c] = cols[c]
    for c in numbers:
        col = cols[c]
        t = col.type
        if col.null_count or not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
            return None
        arr = _arrow.to_numpy(col if pa.types.is_float64(t) else pc.cast(col, pa.float64(), safe=False), np.float64)
        if not np.isfinite(arr).all():
            return None
        out[c] = arr
    return out


def _text_codes(col: Any, csv: bool, ordered: bool = True) -> tuple[Any, np.ndarray] | None:
    """Distinct values (a pyarrow array, first appearance unless not ``ordered``) and codes of a
    required text column, with the CSV formula escape undone; None when a value is missing."""
    import pyarrow as pa

    pc = _arrow.compute()
    values, codes = _arrow.factorize(col, ordered)
    if values.null_count or pc.any(pc.equal(values, "")).as_py():
        return None
    if csv and pc.any(pc.starts_with(values, "'")).as_py():
        index: dict[str, int] = {}
        raw = values.to_pylist()
        lut = np.fromiter((index.setdefault(unescape_text(v), len(index)) for v in raw), np.int64, len(raw))
        return pa.array(list(index), type=pa.string()), lut[codes]
    return values, codes


def _read_accounts_arrow(path: PathLike, cpath: Path | None, fmt: str, table: InstrumentTable,
                         currencies: Sequence[str] | None) -> AccountBook | None:
    """:func:`read_accounts` by pyarrow: text columns dictionary-encoded, account and instrument codes
    straight into :meth:`AccountBook.from_arrays` (no Python loop over rows). The same book as the
    standard-library path; None (then that path runs and names the problem) unless every row is valid."""
    try:
        pos = _arrow_columns(path, fmt, ("account_id", "instrument"), ("quantity",))
    except ImportError:
        return None
    csv = fmt == "csv"
    if pos is None:
        return None
    acc = _text_codes(pos["account_id"], csv)
    inst = _text_codes(pos["instrument"], csv, ordered=False)  # looked up by name: any order does
    if acc is None or inst is None:
        return None
    try:
        inst_lut = np.asarray(table.index_of(inst[0].to_pylist()), dtype=np.int64).reshape(-1)
    except UnknownInstrumentError:
        return None
    ids, acc_codes = acc
    coll = None
    if cpath is not None:
        craw = _arrow_columns(cpath, fmt, ("account_id", "currency"), ("amount",))
        if craw is None:
            return None
        c_acc = _text_codes(craw["account_id"], csv)
        c_cur = _text_codes(craw["currency"], csv)
        amount = craw["amount"]
        if c_acc is None or c_cur is None or (amount < 0).any():
            return None
        cur_values = c_cur[0].to_pylist()
        for c in cur_values:
            if not c.isascii() or not c.isalnum() or c.upper() != c or (currencies is not None and c not in currencies):
                return None
        # accounts in order of first appearance in the collateral file, then in the positions file
        ids, pos_lut = _arrow.append_index(c_acc[0], ids)
        if not np.array_equal(pos_lut, np.arange(len(pos_lut))):  # a file per account in the same order: as is
            acc_codes = pos_lut[acc_codes]
        coll = (c_acc[1], cur_values, c_cur[1], amount)
    if currencies is None:
        found = coll[1] if coll is not None else []
        currencies = DEFAULT_CURRENCIES + tuple(c for c in found if c not in DEFAULT_CURRENCIES)
    n = len(ids)
    matrix = None
    if coll is not None:
        cur = tuple(currencies)
        c_rows, cur_values, cur_codes, amount = coll
        col_of = np.array([cur.index(c) for c in cur_values], dtype=np.int64)
        k = max(len(cur), 1)
        # summed in row order from 0.0, as np.add.at in AccountBook.from_positions
        matrix = np.bincount(c_rows * k + col_of[cur_codes], weights=amount, minlength=n * k)[: n * k]
        matrix = matrix.reshape(n, k)[:, : len(cur)]
    id_arr = np.empty(n, dtype=object)
    id_arr[:] = ids.to_pylist()
    source = os.fspath(path)
    return _with_source(source, lambda: AccountBook._from_owned_arrays(
        acc_codes, inst_lut[inst[1]], pos["quantity"], table, account_ids=id_arr, collateral=matrix,
        currencies=currencies))


def _read_accounts_json(path: PathLike, table: InstrumentTable, currencies: Sequence[str] | None) -> AccountBook:
    source = os.fspath(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
        raise InvalidInputError(f"{source}: expected {{'accounts': [...]}}")
    account_ids: list[Any] = []
    p_ids: list[Any] = []
    p_names: list[Any] = []
    p_qty: list[Any] = []
    p_where: list[str] = []
    c_ids: list[Any] = []
    c_cur: list[Any] = []
    c_amt: list[Any] = []
    c_where: list[str] = []
    for i, a in enumerate(data["accounts"]):
        if not isinstance(a, dict) or "account_id" not in a:
            raise InvalidInputError(f"{source}: accounts[{i}] has no 'account_id'")
        aid = a["account_id"]
        account_ids.append(aid)
        positions = a.get("positions", [])
        if not isinstance(positions, list):
            raise InvalidInputError(f"{source}: positions of accounts[{i}] is {type(positions).__name__}, "
                                    "expected a list")
        for j, p in enumerate(positions):
            if isinstance(p, dict):
                p = [p.get("instrument"), p.get("quantity")]
            if not isinstance(p, list) or len(p) != 2:
                raise InvalidInputError(
                    f"{source}: accounts[{i}].positions[{j}] is {p!r}, expected [instrument, quantity] or "
                    "{'instrument': ..., 'quantity': ...}"
                )
            p_ids.append(aid)
            p_names.append(p[0])
            p_qty.append(p[1])
            p_where.append(f"accounts[{i}].positions[{j}]")
        coll = a.get("collateral", {})
        if not isinstance(coll, dict):
            raise InvalidInputError(f"{source}: collateral of accounts[{i}] is {type(coll).__name__}, "
                                    "expected an object {currency: amount}")
        for cur, amt in coll.items():
            c_ids.append(aid)
            c_cur.append(cur)
            c_amt.append(amt)
            c_where.append(f"accounts[{i}].collateral[{cur!r}]")
    ids_all = text_column(account_ids, "json", "account_id", source, lambda i: f"accounts[{i}]")
    if currencies is None and "currencies" in data:
        cur_list = data["currencies"]
        if not isinstance(cur_list, list):
            raise InvalidInputError(f"{source}: currencies is {type(cur_list).__name__}, expected a list")
        currencies = tuple(text_column(cur_list, "json", "currencies", source, lambda i: f"currencies[{i}]"))
    ids = text_column(p_ids, "json", "account_id", source, p_where.__getitem__)
    names = text_column(p_names, "json", "instrument", source, p_where.__getitem__)
    inst = _check_positions(source, ids, names, table, p_where.__getitem__)
    qty = number_column(p_qty, "json", "quantity", source, _position_label(p_where.__getitem__, ids, names))[0]
    cur = text_column(c_cur, "json", "currency", source, c_where.__getitem__)
    _check_collateral_rows(source, cur, currencies, c_where.__getitem__)
    c_id_arr = text_column(c_ids, "json", "account_id", source)
    amt = number_column(c_amt, "json", "amount", source, _position_label(c_where.__getitem__, c_id_arr, cur,
                        "currency"), minimum=0.0)[0]
    coll = {"account_id": c_id_arr, "currency": cur, "amount": amt}
    positions = {"account_id": ids, "instrument": table.name[inst], "quantity": qty}
    return _with_source(source, lambda: AccountBook.from_positions(
        positions, table, collateral=coll, account_ids=ids_all, currencies=currencies))
