"""Instrument tables to and from records (dicts), pandas DataFrames and pyarrow Tables.

:class:`~dpm.market.table.InstrumentTable`'s ``from_records`` / ``from_frame`` / ``from_arrow`` /
``to_records`` / ``to_frame`` / ``to_arrow`` call these; file readers and writers are in
:mod:`dpm.portfolio.io`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.names import parse_name
from dpm.market.specs import NO_EXPIRY, Kind, Spec, to_ms
from dpm.market.table import INSTRUMENT_COLUMNS as _COLUMNS
from dpm.market.table import InstrumentTable, _as_kind_array

__all__ = ["table_from_records", "table_from_frame", "table_to_records", "table_to_frame", "table_to_arrow"]


def table_from_records(
    records: Iterable[Mapping[str, Any]], underlyings: Sequence[str] | None = None
) -> InstrumentTable:
    """Build from dicts with keys :data:`columns <InstrumentTable>` (``name`` required).

    Missing keys (or ``None``/empty values) are filled from :func:`parse_name` of the name where the
    name is a Deribit name, so ``[{"name": "BTC-PERPETUAL"}]`` works. ``kind`` may be a code or a
    name (``"option"``), ``option_type`` ``"call"``/``"put"``/±1, ``expiry_ms`` ms or a datetime
    (key ``expiry`` is accepted too), ``strike`` and ``expiry_ms`` ``None`` for "not applicable".
    """
    records = list(records)
    n = len(records)
    cols: dict[str, list[Any]] = {c: [None] * n for c in _COLUMNS}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise InvalidTypeError(f"records: row {i} is {type(rec).__name__}, expected a dict")
        name = rec.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"name: row {i} has no instrument name (got {name!r})")
        row = {c: rec.get(c) for c in _COLUMNS}
        if row["expiry_ms"] is None and rec.get("expiry") is not None:
            row["expiry_ms"] = rec["expiry"]
        row = {k: (None if _is_missing(v) else v) for k, v in row.items()}
        if row["expiry_ms"] is not None:
            row["expiry_ms"] = to_ms(row["expiry_ms"], "expiry_ms")
        needed = [
            c for c in _COLUMNS if row[c] is None and c not in ("strike", "expiry_ms", "option_type")
        ]
        kind_known = row["kind"] is not None
        if needed or not kind_known:
            try:
                spec = parse_name(name, contract_size=row["contract_size"])
            except (InvalidInputError, InvalidTypeError):
                raise InvalidInputError(
                    f"{needed[0] if needed else 'kind'}: row {i} ({name!r}) is missing and the name "
                    "is not a Deribit name it could be derived from"
                ) from None
            derived = _spec_row(spec)
            for c in _COLUMNS:
                if row[c] is None:
                    row[c] = derived[c]
        for c in _COLUMNS:
            cols[c][i] = row[c]
    kind = _as_kind_array(np.array(cols["kind"], dtype=object), np.array(cols["name"], dtype=object))
    strike = np.array([np.nan if v is None else v for v in cols["strike"]], dtype=object)
    try:
        strike = strike.astype(np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError("strike: expected numbers") from None
    exp = np.array([NO_EXPIRY if v is None else v for v in cols["expiry_ms"]], dtype=np.int64)
    ot = np.array([0 if v is None else v for v in cols["option_type"]], dtype=object)
    inv = [_as_bool(v, "inverse", i) for i, v in enumerate(cols["inverse"])]
    size = np.array(cols["contract_size"], dtype=object)
    try:
        size = size.astype(np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError("contract_size: expected numbers") from None
    return InstrumentTable.from_columns(
        cols["name"],
        kind,
        cols["underlying"],
        ot,
        strike,
        exp,
        np.array(inv, dtype=bool),
        size,
        cols["settlement"],
        underlyings,
    )


def table_from_frame(df: Any, underlyings: Sequence[str] | None = None) -> InstrumentTable:
    """Build from a pandas DataFrame with the table's columns (as written by :meth:`to_frame`)."""
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        if "name" not in df.columns:
            raise InvalidInputError("from_frame: the frame has no 'name' column")
        return table_from_records(df.to_dict("records"), underlyings)
    expiry = df["expiry_ms"]
    exp = (
        expiry.to_numpy(dtype=np.float64, na_value=np.nan)
        if expiry.dtype.kind != "i"
        else expiry.to_numpy()
    )
    if exp.dtype.kind == "f":
        # float64 cannot hold NO_EXPIRY exactly: treat the rounded value as missing too
        exp = np.where(exp >= 9.2e18, np.nan, exp)
    strike = df["strike"].to_numpy(dtype=np.float64, na_value=np.nan)
    ot = df["option_type"].to_numpy(dtype=object)
    return InstrumentTable.from_columns(
        df["name"].to_numpy(dtype=object),
        df["kind"].to_numpy(),
        df["underlying"].to_numpy(dtype=object),
        ot,
        strike,
        exp,
        df["inverse"].to_numpy(dtype=bool),
        df["contract_size"].to_numpy(dtype=np.float64),
        df["settlement"].to_numpy(dtype=object),
        underlyings,
    )


def table_to_records(self: InstrumentTable) -> list[dict[str, Any]]:
    """One dict per row: ``kind`` as a lower-case name, ``option_type`` ``'call'``/``'put'``/None,
    ``strike``/``expiry_ms`` None when not applicable (JSON-friendly)."""
    out = []
    und = self.underlying_names
    for i in range(len(self)):
        out.append(
            {
                "name": self.name[i],
                "kind": Kind(int(self.kind[i])).name.lower(),
                "underlying": und[i],
                "option_type": {1: "call", -1: "put"}.get(int(self.option_type[i])),
                "strike": None if math.isnan(self.strike[i]) else float(self.strike[i]),
                "expiry_ms": None if self.expiry_ms[i] == NO_EXPIRY else int(self.expiry_ms[i]),
                "inverse": bool(self.inverse[i]),
                "contract_size": float(self.contract_size[i]),
                "settlement": self.settlement[i],
            }
        )
    return out

def table_to_frame(self: InstrumentTable) -> Any:
    """pandas DataFrame (requires pandas): ``underlying`` as codes, ``kind`` as names,
    ``option_type`` 'call'/'put'/None, ``expiry_ms`` nullable Int64 (missing = no expiry)."""
    import pandas as pd

    exp = pd.array(self.expiry_ms, dtype="Int64")
    exp[self.expiry_ms == NO_EXPIRY] = pd.NA
    return pd.DataFrame(
        {
            "name": self.name.copy(),
            "kind": np.array([k.name.lower() for k in Kind], dtype=object)[self.kind],
            "underlying": self.underlying_names,
            "option_type": np.array([None, "call", "put"], dtype=object)[self.option_type],
            "strike": self.strike.copy(),
            "expiry_ms": exp,
            "inverse": self.inverse.copy(),
            "contract_size": self.contract_size.copy(),
            "settlement": self.settlement.copy(),
        }
    )

def table_to_arrow(self: InstrumentTable) -> Any:
    """:class:`pyarrow.Table` (requires pyarrow); missing strike/expiry are nulls."""
    import pyarrow as pa

    return pa.Table.from_pandas(table_to_frame(self), preserve_index=False)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return True
    if isinstance(v, str) and v.strip() == "":
        return True
    # pandas' missing markers, recognised without importing pandas
    return type(v).__name__ in ("NAType", "NaTType")


def _as_bool(v: Any, field_name: str, i: int) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    raise InvalidInputError(f"{field_name}: expected true/false at row {i}, got {v!r}")


def _spec_row(spec: Spec) -> dict[str, Any]:
    return {
        "name": None,
        "kind": int(spec.kind),
        "underlying": spec.underlying,
        "option_type": getattr(spec, "option_type", None),
        "strike": getattr(spec, "strike", None),
        "expiry_ms": None if spec.expiry_ms == NO_EXPIRY else spec.expiry_ms,
        "inverse": bool(spec.inverse),
        "contract_size": spec.contract_size,
        "settlement": spec.settlement,
    }
