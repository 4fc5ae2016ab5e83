"""Readers and writers: instruments, accounts (positions + collateral) and result columns.

File formats (see ``docs/data-model.md``):

* **instruments** — one row per instrument, columns ``name, kind, underlying, option_type, strike,
  expiry_ms, inverse, contract_size, settlement`` (``kind`` a lower-case name such as ``option``,
  ``option_type`` ``call``/``put``/empty, ``strike`` and ``expiry_ms`` empty when not applicable). A file
  with only a ``name`` column of Deribit names is accepted too.
* **positions** — long format ``account_id, instrument, quantity`` (signed contracts).
* **collateral** — long format ``account_id, currency, amount``; the writer emits every account ×
  currency (zeros included) so that accounts without positions survive a round trip.

CSV and JSON use the standard library and numpy only; Parquet needs pyarrow (``pip install dpm[io]``).
Floats are written with ``repr`` (shortest exact form), so a CSV or JSON round trip is bit-exact.
The format follows the file suffix (``.csv``, ``.json``, ``.parquet``/``.pq``) unless ``format=`` is given.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.specs import NO_EXPIRY, Kind
from dpm.market.table import INSTRUMENT_COLUMNS, InstrumentTable
from dpm.portfolio.accounts import AccountBook

__all__ = [
    "collateral_path_for",
    "read_accounts",
    "read_columns",
    "read_instruments",
    "write_accounts",
    "write_columns",
    "write_instruments",
]

PathLike = str | os.PathLike


_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_INSTRUMENT_COLUMNS = INSTRUMENT_COLUMNS


# ----------------------------------------------------------------------------------------------------
# generic column files
# ----------------------------------------------------------------------------------------------------
def _format_of(path: PathLike, format: str | None) -> str:
    if format is not None:
        f = format.lower().lstrip(".")
        if f not in ("csv", "json", "parquet"):
            raise InvalidInputError(f"format: expected 'csv', 'json' or 'parquet', got {format!r}")
        return f
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise InvalidInputError(
            f"format: cannot tell the format of {str(path)!r} from its suffix; pass format='csv'|'json'|'parquet'"
        )
    return _FORMATS[suffix]


def _require_pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq  # noqa: F401
    except ImportError:
        raise ImportError(
            "Parquet files need pyarrow, which is not installed; install it with `pip install dpm[io]` "
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
    return str(v)


def _convert(values: list[str], dtype: str, column: str, path: PathLike) -> np.ndarray:
    """Typed column from CSV strings; empty cells are missing (NaN / None)."""
    if dtype == "str":
        out = np.empty(len(values), dtype=object)
        out[:] = [v if v != "" else None for v in values]
        return out
    if dtype == "float":
        try:
            if "" not in values:
                return np.array(values, dtype=np.float64)  # numpy parses the strings in C
            return np.array([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(values) if not _is_float(v))
            raise InvalidInputError(
                f"{os.fspath(path)}: column {column!r}, row {bad + 1} is {values[bad]!r}, not a number"
            ) from None
    if dtype in ("int", "int?"):
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if v == "":
                if dtype == "int":
                    raise InvalidInputError(f"{os.fspath(path)}: column {column!r}, row {i + 1} is empty")
                out[i] = None
                continue
            try:
                out[i] = int(v)
            except ValueError:
                raise InvalidInputError(
                    f"{os.fspath(path)}: column {column!r}, row {i + 1} is {v!r}, not an integer"
                ) from None
        return out if dtype == "int?" else out.astype(np.int64)
    if dtype == "bool":
        m = {"true": True, "false": False, "1": True, "0": False}
        try:
            return np.array([m[v.strip().lower()] for v in values], dtype=bool)
        except KeyError:
            bad = next(i for i, v in enumerate(values) if v.strip().lower() not in m)
            raise InvalidInputError(
                f"{os.fspath(path)}: column {column!r}, row {bad + 1} is {values[bad]!r}, not true/false"
            ) from None
    raise InvalidInputError(f"dtypes: unknown dtype {dtype!r} for column {column!r}")


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def write_columns(path: PathLike, columns: Mapping[str, Any], format: str | None = None) -> None:
    """Write equal-length columns to CSV (header + rows), JSON (``{"columns": {...}}``) or Parquet.

    Missing values (``None``, NaN) are empty CSV cells, JSON ``null`` and Parquet nulls.
    """
    fmt = _format_of(path, format)
    names = list(columns)
    cols = [columns[c] for c in names]
    lengths = {len(c) for c in cols}
    if len(lengths) > 1:
        raise InvalidInputError(f"columns: lengths differ ({dict(zip(names, map(len, cols)))})")
    if fmt == "csv":
        cells = [_csv_cells(c) for c in cols]
        text_cells = "\x00".join("\x00".join(c) for c in cells)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            if any(ch in text_cells for ch in ',"\n\r') or any(ch in "".join(names) for ch in ',"\n\r'):
                # some cell needs quoting: let the csv module do it
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(names)
                w.writerows(zip(*cells))
            else:  # plain cells: join in C, an order of magnitude faster than csv.writer
                fh.write(",".join(names) + "\n")
                if cells and cells[0]:
                    fh.write("\n".join(map(",".join, zip(*cells))))
                    fh.write("\n")
    elif fmt == "json":
        data = {
            c: [_json_value(v) for v in (col.tolist() if isinstance(col, np.ndarray) else col)]
            for c, col in zip(names, cols)
        }
        with open(path, "w", encoding="utf-8") as fh:
            # dumps (C encoder) then write: json.dump streams through the slow pure-Python encoder
            fh.write(json.dumps({"columns": data}, allow_nan=False))
    else:
        pa = _require_pyarrow()
        import pyarrow.parquet as pq

        arrays = {}
        for c, col in zip(names, cols):
            arr = np.asarray(col)
            if arr.dtype.kind == "f":
                arrays[c] = pa.array(arr, mask=np.isnan(arr))
            elif arr.dtype.kind == "O":
                vals = arr.tolist()
                if not all(v is None or type(v) is str for v in vals):
                    vals = [_json_value(v) for v in vals]
                arrays[c] = pa.array(vals)
            else:
                arrays[c] = pa.array(arr)
        pq.write_table(pa.table(arrays), path)


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
        return vals
    return [_cell(v) for v in vals]


def _json_value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return v


def read_columns(
    path: PathLike, dtypes: Mapping[str, str] | None = None, format: str | None = None
) -> dict[str, np.ndarray]:
    """Read a column file written by :func:`write_columns` (or any CSV with a header).

    Parameters
    ----------
    path : str or Path
    dtypes : mapping column -> {'str', 'float', 'int', 'int?', 'bool'}, optional
        Types of CSV columns (CSV has none): ``float`` gives NaN for empty cells, ``int?`` None.
        Columns not listed are kept as str (object arrays); JSON and Parquet keep their own types.
    format : {'csv', 'json', 'parquet'}, optional

    Returns
    -------
    dict of str to numpy array
    """
    fmt = _format_of(path, format)
    dtypes = dict(dtypes or {})
    if fmt == "csv":
        header, raw = _read_csv_raw(path)
        return {h: _convert(col, dtypes.get(h, "str"), h, path) for h, col in zip(header, raw)}
    if fmt == "json":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
            raise InvalidInputError(f"{os.fspath(path)}: expected a JSON object with a 'columns' object")
        out = {}
        for c, vals in data["columns"].items():
            out[c] = _json_column(vals, dtypes.get(c))
        return out
    pa = _require_pyarrow()
    import pyarrow.parquet as pq

    tbl = pq.read_table(path)
    out = {}
    for c in tbl.column_names:
        col = tbl.column(c)
        want = dtypes.get(c)
        if pa.types.is_floating(col.type):
            out[c] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        elif (pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)) and col.null_count == 0:
            out[c] = col.to_numpy(zero_copy_only=False)
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            arr = col.to_numpy(zero_copy_only=False).astype(object)
            out[c] = arr if want in (None, "str") else _json_column(arr.tolist(), want)
        else:
            out[c] = _json_column(col.to_pylist(), want)
    return out


def _read_csv_raw(path: PathLike) -> tuple[list[str], list[list[str]]]:
    """Header and columns (lists of str) of a CSV file."""
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    if not text.strip():
        raise InvalidInputError(f"{os.fspath(path)}: empty file (no header)")
    if '"' not in text:
        # no quoting anywhere: split in C instead of the csv module's per-field state machine
        lines = text.splitlines()
        while lines and lines[-1] == "":
            lines.pop()
        header = lines[0].split(",")
        k = len(header)
        counts = list(map(str.count, lines, repeat(",", len(lines))))
        if any(c != k - 1 for c in counts):
            i = next(i for i, c in enumerate(counts) if c != k - 1)
            raise InvalidInputError(
                f"{os.fspath(path)}: row {i} has {counts[i] + 1} fields, the header has {k}"
            )
        flat = ",".join(lines[1:]).split(",") if len(lines) > 1 else []
        return header, [flat[j::k] for j in range(k)]
    rows = list(csv.reader(text.splitlines()))
    header = rows[0]
    rows = [r for r in rows[1:]]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise InvalidInputError(
                f"{os.fspath(path)}: row {i + 1} has {len(r)} fields, the header has {len(header)}"
            )
    return header, [[r[j] for r in rows] for j in range(len(header))]


def _json_column(vals: list[Any], dtype: str | None) -> np.ndarray:
    if dtype == "float" or (
        dtype is None
        and vals
        and all(isinstance(v, float) or v is None for v in vals)
        and any(isinstance(v, float) for v in vals)
    ):
        return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
    if dtype == "bool" or (dtype is None and vals and all(isinstance(v, bool) for v in vals)):
        return np.array(vals, dtype=bool)
    if dtype == "int" or (
        dtype is None and vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals)
    ):
        return np.array(vals, dtype=np.int64)
    if dtype == "float":
        return np.array(vals, dtype=np.float64)
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return out


# ----------------------------------------------------------------------------------------------------
# instruments
# ----------------------------------------------------------------------------------------------------
def write_instruments(table: InstrumentTable, path: PathLike, format: str | None = None) -> None:
    """Write an :class:`InstrumentTable` (CSV, JSON records or Parquet)."""
    if not isinstance(table, InstrumentTable):
        raise InvalidTypeError(f"table: expected an InstrumentTable, got {type(table).__name__}")
    fmt = _format_of(path, format)
    if fmt == "json":
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {"format": "dpm.market", "version": 1, "instruments": table.to_records()},
                    indent=1,
                    allow_nan=False,
                )
            )
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
    if fmt == "parquet":
        pa = _require_pyarrow()
        import pyarrow.parquet as pq

        arrays = {
            c: pa.array(
                v.tolist() if v.dtype == object else v, mask=np.isnan(v) if v.dtype.kind == "f" else None
            )
            for c, v in cols.items()
        }
        arrays["expiry_ms"] = pa.array(exp.tolist(), type=pa.int64())
        pq.write_table(pa.table(arrays), path)
        return
    write_columns(path, cols, "csv")


def read_instruments(
    path: PathLike, format: str | None = None, underlyings: Sequence[str] | None = None
) -> InstrumentTable:
    """Read an :class:`InstrumentTable` written by :func:`write_instruments`.

    A CSV/Parquet file may leave columns out (only ``name`` is required) when the names are Deribit
    names the missing fields can be derived from; JSON may be ``{"instruments": [...]}`` or a bare list
    of records, or of names.
    """
    fmt = _format_of(path, format)
    if fmt == "json":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        recs = data.get("instruments") if isinstance(data, dict) else data
        if not isinstance(recs, list):
            raise InvalidInputError(
                f"{os.fspath(path)}: expected a list of instruments or {{'instruments': [...]}}"
            )
        if all(isinstance(r, str) for r in recs):
            return InstrumentTable.from_names(recs, underlyings=underlyings)
        return InstrumentTable.from_records(recs, underlyings=underlyings)
    cols = read_columns(path, {"strike": "float", "expiry_ms": "int?", "contract_size": "float"}, fmt)
    if "name" not in cols:
        raise InvalidInputError(f"{os.fspath(path)}: no 'name' column")
    n = len(cols["name"])
    keys = [c for c in _INSTRUMENT_COLUMNS if c in cols]
    records = [{c: _py(cols[c][i]) for c in keys} for i in range(n)]
    return InstrumentTable.from_records(records, underlyings=underlyings)


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


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
    :func:`collateral_path_for`). JSON: one file ``{"format": "dpm.portfolio.accounts", "currencies": [...],
    "accounts": [{"account_id", "positions": [[name, qty], ...], "collateral": {cur: amount}}]}``.
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
        with open(path, "w", encoding="utf-8") as fh:
            # dumps (C encoder) then write: json.dump streams through the pure-Python encoder
            fh.write(
                json.dumps(
                    {
                        "format": "dpm.portfolio.accounts",
                        "version": 1,
                        "currencies": list(book.currencies),
                        "accounts": accounts,
                    },
                    allow_nan=False,
                )
            )
        return
    cpath = collateral_path if collateral_path is not None else collateral_path_for(path)
    write_columns(path, book.to_columns(), fmt)
    write_columns(cpath, book.collateral_columns(include_zero=True), fmt)


def read_accounts(
    path: PathLike,
    table: InstrumentTable,
    collateral_path: PathLike | None = None,
    format: str | None = None,
    currencies: Sequence[str] | None = None,
) -> AccountBook:
    """Read an :class:`AccountBook` written by :func:`write_accounts` (or hand-made files).

    The account order is the order of first appearance in the collateral file, then in the positions
    file. A missing default collateral file means no collateral.
    """
    fmt = _format_of(path, format)
    if fmt == "json":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
            raise InvalidInputError(f"{os.fspath(path)}: expected {{'accounts': [...]}}")
        ids, acc_pos, names, qty = [], [], [], []
        coll: dict[str, dict[str, float]] = {}
        for i, a in enumerate(data["accounts"]):
            if not isinstance(a, dict) or "account_id" not in a:
                raise InvalidInputError(f"{os.fspath(path)}: account {i} has no 'account_id'")
            aid = a["account_id"]
            ids.append(aid)
            for pos in a.get("positions", []):
                if isinstance(pos, dict):
                    pos = (pos.get("instrument"), pos.get("quantity"))
                if len(pos) != 2:
                    raise InvalidInputError(f"{os.fspath(path)}: account {aid!r} has a bad position {pos!r}")
                acc_pos.append(aid)
                names.append(pos[0])
                qty.append(pos[1])
            coll[aid] = dict(a.get("collateral", {}))
        if currencies is None and isinstance(data.get("currencies"), list):
            currencies = data["currencies"]
        positions = {"account_id": acc_pos, "instrument": names, "quantity": np.array(qty, dtype=object)}
        return AccountBook.from_positions(
            positions, table, collateral=coll if coll else None, account_ids=ids, currencies=currencies
        )
    pos = read_columns(path, {"quantity": "float"}, fmt)
    cpath = Path(collateral_path) if collateral_path is not None else collateral_path_for(path)
    coll_cols = None
    if cpath.exists():
        coll_cols = read_columns(cpath, {"amount": "float"}, fmt)
    elif collateral_path is not None:
        raise FileNotFoundError(f"collateral file {os.fspath(cpath)!r} does not exist")
    for c in ("account_id", "instrument", "quantity"):
        if c not in pos:
            raise InvalidInputError(f"{os.fspath(path)}: no {c!r} column")
    order = list(dict.fromkeys(coll_cols["account_id"].tolist())) if coll_cols is not None else []
    order = list(dict.fromkeys(order + pos["account_id"].tolist()))
    pos["quantity"] = np.asarray(pos["quantity"], dtype=np.float64)
    return AccountBook.from_positions(
        pos, table, collateral=coll_cols, account_ids=order, currencies=currencies
    )
