"""Typed fields of data files: one rule per field type, the same for CSV, JSON and Parquet.

A column arrives as CSV cell text (``fmt="csv"``: a list of str), as parsed JSON values
(``fmt="json"``: a list of Python objects) or as a pyarrow column (``fmt="parquet"``). Every
converter applies the same rule to the three and raises the same message,
``"<file>: <field> at <row> is <value>, <problem>"``:

* **number** — CSV: text that Python's ``float()`` reads (``1.5``, ``-2e3``, ``inf``); JSON: a
  number; Parquet: an integer, floating-point or decimal column. Text in JSON or Parquet is refused
  even when it reads as a number (a spreadsheet column formatted as text may hold ``1,5`` or
  ``1 000`` elsewhere). Missing: empty cell, ``null``, Parquet null. Booleans are not numbers.
* **integer** — a whole number in any of those forms (``1700000000000``, ``1.7e12``); a fraction is
  refused, and so is a value outside the int64 range.
* **boolean** — ``true``/``false`` or ``1``/``0`` (CSV text in any letter case; JSON/Parquet booleans
  or the integers 0 and 1).
* **text** — CSV: the cell (empty = missing) after undoing the formula escape of
  :func:`escape_text`; JSON and Parquet: a string (a number is refused rather than guessed at).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError

__all__ = [
    "FORMULA_START",
    "bool_column",
    "escape_text",
    "field_error",
    "int_column",
    "number_column",
    "row_label",
    "text_column",
    "unescape_text",
]

Where = Callable[[int], str]

#: First characters that make a spreadsheet evaluate a cell as a formula (OWASP "CSV Injection").
FORMULA_START = frozenset("=+-@\t\r")
_ESCAPE_START = FORMULA_START | {"'"}
_INT64_MAX = 2**63 - 1


def row_label(i: int) -> str:
    """Location of data row ``i`` (0-based) of a table file: ``row 1`` is the first row after the header."""
    return f"row {i + 1}"


def _show(v: Any) -> str:
    text = repr(v.item() if isinstance(v, np.generic) else v)
    return text if len(text) <= 80 else text[:60] + "..." + text[-12:]


def field_error(source: str, field: str, where: str, value: Any, problem: str,
                cls: type[Exception] = InvalidInputError) -> Exception:
    """The error of one bad value: ``"<source>: <field> at <where> is <value>, <problem>"``."""
    return cls(f"{source}: {field} at {where} is {_show(value)}, {problem}")


def escape_text(v: str) -> str:
    """CSV-injection escape: a leading ``'`` before text a spreadsheet would run as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a ``'`` in front;
    so does text that already starts with ``'`` followed (after any further ``'``) by one of those,
    which makes :func:`unescape_text` its exact inverse.
    """
    if v[:1] in _ESCAPE_START and v.lstrip("'")[:1] in FORMULA_START:
        return "'" + v
    return v


def unescape_text(v: str) -> str:
    """Inverse of :func:`escape_text`: drop one ``'`` before ``'...'`` + a formula character."""
    if v[:1] == "'" and v.lstrip("'")[:1] in FORMULA_START:
        return v[1:]
    return v


def _pylist(values: Any, fmt: str, source: str, field: str) -> list[Any]:
    if fmt != "parquet":
        return values
    try:
        return values.to_pylist()
    except Exception as exc:  # e.g. a timestamp beyond Python's datetime range
        raise InvalidInputError(
            f"{source}: {field}: cannot read the Parquet column of type {values.type} ({exc})"
        ) from None


def _raw(values: Any, fmt: str, i: int) -> Any:
    return values[i].as_py() if fmt == "parquet" else values[i]


# ----------------------------------------------------------------------------------------------------
# numbers
# ----------------------------------------------------------------------------------------------------
def _py_number(v: Any) -> float | None:
    """Float of a JSON/Parquet value, None if missing; raises ValueError/TypeError if not a number."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        raise TypeError("a boolean, not a number")
    if isinstance(v, (int, float, Decimal, np.integer, np.floating)):
        return float(v)  # OverflowError for an int beyond the float range
    if isinstance(v, str):
        raise TypeError("not a number (a text value: store numbers as numbers)")
    raise TypeError(f"not a number (a {type(v).__name__})")


def _csv_numbers(values: list[str], source: str, field: str, where: Where) -> tuple[np.ndarray, np.ndarray]:
    if "" not in values:
        try:
            return np.array(values, dtype=np.float64), np.zeros(len(values), bool)  # parsed in C
        except ValueError:
            pass
    out = np.empty(len(values))
    missing = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        t = v.strip()
        if t == "":
            missing[i] = True
            out[i] = np.nan
            continue
        try:
            out[i] = float(t)
        except ValueError:
            raise field_error(source, field, where(i), v, "not a number") from None
    return out, missing


def _object_numbers(values: list[Any], source: str, field: str, where: Where) -> tuple[np.ndarray, np.ndarray]:
    if all(type(v) is float or type(v) is int for v in values):
        try:
            return np.array(values, dtype=np.float64), np.zeros(len(values), bool)
        except (OverflowError, ValueError, TypeError):  # an int beyond the float range: named below
            pass
    out = np.empty(len(values))
    missing = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        try:
            f = _py_number(v)
        except OverflowError:
            raise field_error(source, field, where(i), v, "out of the floating-point range") from None
        except (TypeError, ValueError) as exc:
            raise field_error(source, field, where(i), v, str(exc)) from None
        if f is None:
            missing[i] = True
            out[i] = np.nan
        else:
            out[i] = f
    return out, missing


def number_column(values: Any, fmt: str, field: str, source: str, where: Where = row_label, *,
                  required: bool = True, finite: bool = True,
                  minimum: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and the missing mask of a number column (see the module docs for the rule).

    ``required``: a missing value is an error; ``finite``: NaN/inf text or values are errors;
    ``minimum``: values below it are errors. Missing values are NaN in the result.
    """
    if fmt == "csv":
        out, missing = _csv_numbers(values, source, field, where)
    elif fmt == "parquet" and _arrow_is_number(values):
        import pyarrow as pa

        from dpm._util.arrow import compute

        pc = compute()
        missing = pc.is_null(values).to_numpy(zero_copy_only=False)
        out = np.asarray(pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False),
                         dtype=np.float64).copy()
        out[missing] = np.nan
    else:
        out, missing = _object_numbers(_pylist(values, fmt, source, field), source, field, where)
    if required and missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise InvalidInputError(f"{source}: {field} at {where(i)} is missing")
    present = ~missing
    if finite:
        bad = present & ~np.isfinite(out)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise field_error(source, field, where(i), _raw(values, fmt, i), "not a finite number")
    if minimum is not None:
        with np.errstate(invalid="ignore"):
            bad = present & (out < minimum)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise field_error(source, field, where(i), _raw(values, fmt, i), f"must be >= {minimum:g}")
    return out, missing


def _arrow_is_number(col: Any) -> bool:
    import pyarrow as pa

    t = col.type
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                or pa.types.is_null(t))


# ----------------------------------------------------------------------------------------------------
# integers and booleans
# ----------------------------------------------------------------------------------------------------
def _whole(f: float) -> int:
    if not math.isfinite(f) or f != math.floor(f):
        raise ValueError("not a whole number")
    if abs(f) > _INT64_MAX:
        raise ValueError("out of the int64 range")
    return int(f)


def int_column(values: Any, fmt: str, field: str, source: str, where: Where = row_label, *,
               required: bool = True) -> list[int | None]:
    """Python ints (None = missing) of an integer column (see the module docs for the rule)."""
    out: list[int | None] = []
    for i, v in enumerate(_pylist(values, fmt, source, field)):
        try:
            if fmt == "csv":
                t = v.strip()
                if t == "":
                    r = None
                else:
                    try:
                        r = int(t)
                    except ValueError:
                        try:
                            f = float(t)
                        except ValueError:
                            raise ValueError("not an integer") from None
                        r = _whole(f)
            elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                r = int(v)
            else:
                f = _py_number(v)
                r = None if f is None else _whole(f)
        except OverflowError:
            raise field_error(source, field, where(i), v, "out of the int64 range") from None
        except (TypeError, ValueError) as exc:
            raise field_error(source, field, where(i), v, str(exc)) from None
        if r is not None and not -_INT64_MAX - 1 <= r <= _INT64_MAX:
            raise field_error(source, field, where(i), v, "out of the int64 range")
        if r is None and required:
            raise InvalidInputError(f"{source}: {field} at {where(i)} is missing")
        out.append(r)
    return out


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def bool_column(values: Any, fmt: str, field: str, source: str, where: Where = row_label, *,
                required: bool = True) -> list[bool | None]:
    """Python bools (None = missing) of a boolean column (see the module docs for the rule)."""
    out: list[bool | None] = []
    for i, v in enumerate(_pylist(values, fmt, source, field)):
        if fmt == "csv":
            t = v.strip().lower()
            r = None if t == "" else _BOOL_TEXT.get(t)
            ok = t == "" or r is not None
        elif v is None:
            r, ok = None, True
        elif isinstance(v, (bool, np.bool_)):
            r, ok = bool(v), True
        elif isinstance(v, (int, np.integer)) and v in (0, 1):
            r, ok = bool(v), True
        else:
            r, ok = None, False
        if not ok:
            raise field_error(source, field, where(i), v, "not true/false")
        if r is None and required:
            raise InvalidInputError(f"{source}: {field} at {where(i)} is missing")
        out.append(r)
    return out


# ----------------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------------
def text_column(values: Any, fmt: str, field: str, source: str, where: Where = row_label, *,
                required: bool = True) -> np.ndarray:
    """Object array of str (None = missing) of a text column (see the module docs for the rule)."""
    if fmt == "csv":
        vals: Sequence[Any] = [None if v == "" else (unescape_text(v) if v[:1] == "'" else v) for v in values]
    else:
        if fmt == "parquet":
            import pyarrow as pa

            vals = _pylist(values, fmt, source, field)
            t = values.type.value_type if pa.types.is_dictionary(values.type) else values.type  # categorical text
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
                i = next((i for i, v in enumerate(vals) if v is not None), None)
                if i is not None:
                    raise field_error(source, field, where(i), vals[i], "not text (store it as a string)")
        else:
            vals = values
            for i, v in enumerate(vals):
                if v is not None and type(v) is not str:
                    raise field_error(source, field, where(i), v, "not text (store it as a string)")
        vals = [None if v == "" else v for v in vals]
    if required:
        i = next((i for i, v in enumerate(vals) if v is None), None)
        if i is not None:
            raise InvalidInputError(f"{source}: {field} at {where(i)} is missing")
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return out
