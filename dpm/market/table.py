"""The :class:`InstrumentTable`: an immutable struct of numpy arrays, row ``i`` = instrument id ``i``.

The kernels read these columns; people read and write the spec objects of :mod:`dpm.market.specs`
and the names of :mod:`dpm.market.names`. Conversions to records / DataFrames / Arrow are in
:mod:`dpm.market.table_io`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError, UnknownInstrumentError
from dpm.market.names import format_name, parse_name
from dpm.market.specs import (
    _KIND_BY_NAME,
    NO_EXPIRY,
    Future,
    Kind,
    Option,
    Perpetual,
    Spec,
    Spot,
    TimeLike,
    _check_code,
    _ms_to_datetime,
    _norm_option_type,
    to_ms,
)

__all__ = ["INSTRUMENT_COLUMNS", "InstrumentTable"]

#: Columns of an :class:`InstrumentTable`, in file order.
INSTRUMENT_COLUMNS = (
    "name",
    "kind",
    "underlying",
    "option_type",
    "strike",
    "expiry_ms",
    "inverse",
    "contract_size",
    "settlement",
)
_COLUMNS = INSTRUMENT_COLUMNS


def _v(x: Any) -> Any:
    """Plain Python value of a numpy scalar (readable in messages: 7, not np.int64(7))."""
    return x.item() if isinstance(x, np.generic) else x


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _as_kind_array(kind: Any, names: np.ndarray) -> np.ndarray:
    arr = np.asarray(kind)
    if arr.dtype.kind in "OUS":
        out = np.empty(len(arr), dtype=np.int8)
        for i, k in enumerate(arr.tolist()):
            if isinstance(k, str) and k.lower() in _KIND_BY_NAME:
                out[i] = _KIND_BY_NAME[k.lower()]
            elif isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k <= 3:
                out[i] = k
            else:
                raise InvalidInputError(
                    f"kind: unknown kind {k!r} at row {i} ({names[i]!r}); expected one of "
                    f"{[n for n in _KIND_BY_NAME]} or 0..3"
                )
        return out
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InvalidTypeError(f"kind: expected Kind codes (int) or names, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr > 3)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(f"kind: unknown kind {_v(arr[i])!r} at row {i} ({names[i]!r}); expected 0..3")
    return arr.astype(np.int8)


def _as_option_type_array(ot: Any, names: np.ndarray) -> np.ndarray:
    arr = np.asarray(ot)
    if arr.dtype.kind in "OUS":
        out = np.zeros(len(arr), dtype=np.int8)
        for i, v in enumerate(arr.tolist()):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" or v == 0:
                continue
            try:
                out[i] = 1 if _norm_option_type(v) == "call" else -1
            except InvalidInputError:
                raise InvalidInputError(
                    f"option_type: expected 'call'/'put'/+1/-1/0, row {i} ({names[i]!r}) is {v!r}"
                ) from None
        return out
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), 0.0, arr)
        if not np.all(arr == np.round(arr)):
            raise InvalidInputError("option_type: expected +1, -1 or 0")
    elif arr.dtype.kind not in "iub":
        raise InvalidTypeError(f"option_type: expected +1/-1/0 or 'call'/'put', got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = ~np.isin(arr, (-1, 0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(f"option_type: expected +1/-1/0, row {i} ({names[i]!r}) is {_v(arr[i])!r}")
    return arr.astype(np.int8)


def _as_str_array(values: Any, field_name: str, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    vals = list(values)
    if len(vals) != n:
        raise InvalidInputError(f"{field_name}: expected {n} values, got {len(vals)}")
    for i, v in enumerate(vals):
        if isinstance(v, np.str_):
            v = str(v)
        if not isinstance(v, str) or not v:
            raise InvalidInputError(f"{field_name}: expected a non-empty str at row {i}, got {v!r}")
        out[i] = v
    return out


def _spec_columns(specs: Sequence[Spec], names: Sequence[str] | None = None) -> dict[str, list[Any]]:
    """The table's columns of instrument specs, as lists (names: :func:`format_name` of each spec
    unless given); options have a strike and an option type (+1 call, -1 put), options and futures
    an expiry, the others NaN, 0 and ``NO_EXPIRY``."""
    cols: dict[str, list[Any]] = {
        "name": [format_name(s) for s in specs] if names is None else list(names),
        "kind": [], "underlying": [], "option_type": [], "strike": [], "expiry_ms": [], "inverse": [],
        "contract_size": [], "settlement": [],
    }
    for i, s in enumerate(specs):
        if not isinstance(s, (Option, Future, Perpetual, Spot)):
            raise InvalidTypeError(f"specs: row {i} is {type(s).__name__} {s!r}, not an instrument spec")
        is_option = isinstance(s, Option)
        cols["kind"].append(s.kind)
        cols["underlying"].append(s.underlying)
        cols["option_type"].append((1 if s.option_type == "call" else -1) if is_option else 0)
        cols["strike"].append(s.strike if is_option else math.nan)
        cols["expiry_ms"].append(s.expiry if isinstance(s, (Option, Future)) else NO_EXPIRY)
        cols["inverse"].append(s.inverse)
        cols["contract_size"].append(s.contract_size)
        cols["settlement"].append(s.settlement)
    return cols


class InstrumentTable:
    """Immutable struct of arrays describing ``M`` instruments; row ``i`` is instrument id ``i``.

    Columns (all numpy arrays of length ``M``, read-only): ``name`` (object str), ``kind`` (int8
    :class:`Kind` code), ``underlying`` (int16 index into :attr:`underlyings`), ``option_type`` (int8,
    +1 call / -1 put / 0), ``strike`` (float64, NaN for non-options), ``expiry_ms`` (int64,
    :data:`NO_EXPIRY` for perpetuals and spot), ``inverse`` (bool), ``contract_size`` (float64) and
    ``settlement`` (object str). See ``docs/architecture.md`` for units.

    Build it with :meth:`from_names`, :meth:`from_specs`, :meth:`from_records`, :meth:`from_frame`,
    :meth:`from_arrow` or :meth:`from_columns`; the constructor validates every column.
    """

    # __weakref__: per-table caches (a market's instrument inputs, expiry buckets) hold weak references
    __slots__ = _COLUMNS + ("underlyings", "_index", "__weakref__")
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        name: Any,
        kind: Any,
        underlying: Any,
        option_type: Any,
        strike: Any,
        expiry_ms: Any,
        inverse: Any,
        contract_size: Any,
        settlement: Any,
        underlyings: Sequence[str],
    ) -> None:
        names = _as_str_array(name, "name", len(name))
        n = len(names)
        underlyings = tuple(str(u) for u in underlyings)
        for u in underlyings:
            _check_code(u, "underlyings")
        if len(set(underlyings)) != len(underlyings):
            raise InvalidInputError(f"underlyings: duplicate codes in {underlyings!r}")

        index: dict[str, int] = {}
        for i, nm in enumerate(names.tolist()):
            j = index.setdefault(nm, i)
            if j != i:
                raise InvalidInputError(f"name: duplicate instrument name {nm!r} at rows {j} and {i}")

        kind_a = _as_kind_array(kind, names)
        und = np.asarray(underlying)
        if und.dtype.kind not in "iu":
            raise InvalidTypeError(f"underlying: expected int codes into underlyings, got dtype {und.dtype}")
        bad = (und < 0) | (und >= len(underlyings))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"underlying: code {_v(und[i])!r} at row {i} ({names[i]!r}) is not in [0, {len(underlyings)})"
            )
        und = und.astype(np.int16)
        ot = _as_option_type_array(option_type, names)
        strike_a = np.array(strike, dtype=np.float64)  # copy: the caller's array stays writable
        exp = np.asarray(expiry_ms)
        if exp.dtype.kind == "f":
            nan = np.isnan(exp)
            if np.any(~nan & (exp != np.round(exp))):
                raise InvalidInputError("expiry_ms: expected whole milliseconds")
            exp = np.where(nan, NO_EXPIRY, np.where(nan, 0, exp).astype(np.int64))
        elif exp.dtype.kind not in "iu":
            raise InvalidTypeError(f"expiry_ms: expected int64 milliseconds, got dtype {exp.dtype}")
        exp = np.array(exp, dtype=np.int64)
        inv = np.asarray(inverse)
        if inv.dtype.kind != "b":
            if inv.dtype.kind in "iu" and np.isin(inv, (0, 1)).all():
                inv = inv.astype(bool)
            else:
                raise InvalidTypeError(f"inverse: expected booleans, got dtype {inv.dtype}")
        inv = np.array(inv, dtype=bool)
        size = np.array(contract_size, dtype=np.float64)
        settle = _as_str_array(settlement, "settlement", n)
        for col, a in (
            ("kind", kind_a),
            ("underlying", und),
            ("option_type", ot),
            ("strike", strike_a),
            ("expiry_ms", exp),
            ("inverse", inv),
            ("contract_size", size),
        ):
            if a.shape != (n,):
                raise InvalidInputError(f"{col}: expected shape ({n},), got {a.shape}")

        is_opt = kind_a == Kind.OPTION
        self._check_rows(names, ~is_opt & (ot != 0), "option_type", ot, "must be 0 for a non-option")
        self._check_rows(
            names, is_opt & (ot == 0), "option_type", ot, "must be +1 (call) or -1 (put) for an option"
        )
        self._check_rows(names, is_opt & ~(strike_a > 0), "strike", strike_a, "must be finite and > 0")
        self._check_rows(names, is_opt & ~np.isfinite(strike_a), "strike", strike_a, "must be finite and > 0")
        self._check_rows(
            names, ~is_opt & ~np.isnan(strike_a), "strike", strike_a, "must be NaN (empty) for a non-option"
        )
        dated = is_opt | (kind_a == Kind.FUTURE)
        self._check_rows(
            names,
            dated & (exp == NO_EXPIRY),
            "expiry_ms",
            exp,
            "is missing: options and futures need an expiry",
        )
        self._check_rows(names, dated & (exp <= 0), "expiry_ms", exp, "must be > 0")
        self._check_rows(
            names,
            ~dated & (exp != NO_EXPIRY),
            "expiry_ms",
            exp,
            "must be NO_EXPIRY (empty) for perpetuals and spot",
        )
        self._check_rows(
            names, ~(size > 0) | ~np.isfinite(size), "contract_size", size, "must be finite and > 0"
        )
        self._check_rows(names, (kind_a == Kind.SPOT) & inv, "inverse", inv, "spot cannot be inverse")
        und_names = np.array(underlyings, dtype=object)[und] if n else np.empty(0, dtype=object)
        self._check_rows(
            names,
            inv & (settle != und_names),
            "settlement",
            settle,
            "an inverse contract must settle in its underlying",
        )

        for attr, a in (
            ("name", names),
            ("kind", kind_a),
            ("underlying", und),
            ("option_type", ot),
            ("strike", strike_a),
            ("expiry_ms", exp),
            ("inverse", inv),
            ("contract_size", size),
            ("settlement", settle),
        ):
            object.__setattr__(self, attr, _readonly(a))
        object.__setattr__(self, "underlyings", underlyings)
        object.__setattr__(self, "_index", index)

    @staticmethod
    def _check_rows(names: np.ndarray, mask: np.ndarray, field_name: str, arr: np.ndarray, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            value = arr[i].item() if hasattr(arr[i], "item") else arr[i]
            if field_name == "expiry_ms" and value == NO_EXPIRY:
                value = "NO_EXPIRY"
            raise InvalidInputError(f"{field_name}: {what}; row {i} ({names[i]!r}) is {value!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("InstrumentTable is immutable")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_columns(
        cls,
        name: Any,
        kind: Any,
        underlying: Any,
        option_type: Any,
        strike: Any,
        expiry_ms: Any,
        inverse: Any,
        contract_size: Any,
        settlement: Any,
        underlyings: Sequence[str] | None = None,
    ) -> InstrumentTable:
        """Build from columns where ``underlying`` holds codes as strings (``"BTC"``).

        ``underlyings`` fixes the order of the code tuple; by default it is the sorted set of codes.
        """
        names = _as_str_array(name, "name", len(name))
        und = _as_str_array(underlying, "underlying", len(names))
        if underlyings is None:
            underlyings = tuple(sorted(set(und.tolist())))
        pos = {u: i for i, u in enumerate(underlyings)}
        codes = np.empty(len(und), dtype=np.int16)
        for i, u in enumerate(und.tolist()):
            c = pos.get(u)
            if c is None:
                raise InvalidInputError(
                    f"underlying: {u!r} at row {i} ({names[i]!r}) is not in underlyings {tuple(underlyings)!r}"
                )
            codes[i] = c
        return cls(
            names,
            kind,
            codes,
            option_type,
            strike,
            expiry_ms,
            inverse,
            contract_size,
            settlement,
            underlyings,
        )

    @classmethod
    def from_specs(
        cls,
        specs: Iterable[Spec],
        names: Sequence[str] | None = None,
        underlyings: Sequence[str] | None = None,
    ) -> InstrumentTable:
        """Build from spec objects; names default to :func:`format_name` of each spec."""
        specs = list(specs)
        if names is not None and len(names) != len(specs):
            raise InvalidInputError(f"names: expected {len(specs)} names, got {len(names)}")
        return cls._from_column_lists(_spec_columns(specs, names), underlyings)

    @classmethod
    def _from_column_lists(cls, cols: Mapping[str, list[Any]], underlyings: Sequence[str] | None = None
                           ) -> InstrumentTable:
        """:meth:`from_columns` of the lists :func:`_spec_columns` makes (keys ``name, kind, underlying,
        option_type, strike, expiry_ms, inverse, contract_size, settlement``)."""
        return cls.from_columns(
            cols["name"], np.array(cols["kind"], dtype=np.int8), cols["underlying"],
            np.array(cols["option_type"], dtype=np.int8), np.array(cols["strike"], dtype=np.float64),
            np.array(cols["expiry_ms"], dtype=np.int64), np.array(cols["inverse"], dtype=bool),
            np.array(cols["contract_size"], dtype=np.float64), cols["settlement"], underlyings,
        )

    @classmethod
    def from_names(
        cls,
        names: Iterable[str],
        contract_size: float | Sequence[float] | Mapping[str, float] | None = None,
        underlyings: Sequence[str] | None = None,
    ) -> InstrumentTable:
        """Build from Deribit-style names (Deribit default contract sizes unless overridden).

        ``contract_size`` may be one number for all, a sequence aligned with ``names`` or a mapping
        ``name -> size`` (names not in it keep the default).
        """
        names = list(names)
        if contract_size is None or isinstance(contract_size, (int, float, np.integer, np.floating)):
            sizes: list[Any] = [contract_size] * len(names)
        elif isinstance(contract_size, Mapping):
            sizes = [contract_size.get(n) for n in names]
        else:
            sizes = list(contract_size)
            if len(sizes) != len(names):
                raise InvalidInputError(f"contract_size: expected {len(names)} values, got {len(sizes)}")
        specs = []
        for i, (nm, cs) in enumerate(zip(names, sizes)):
            try:
                specs.append(parse_name(nm, contract_size=cs))
            except (InvalidInputError, InvalidTypeError) as exc:
                raise type(exc)(f"row {i}: {exc}") from None
        return cls.from_specs(specs, names=names, underlyings=underlyings)

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], underlyings: Sequence[str] | None = None
    ) -> InstrumentTable:
        """Build from dicts with keys :data:`columns <InstrumentTable>` (``name`` required).

        Missing keys (or ``None``/empty values) are filled from :func:`~dpm.market.names.parse_name`
        of the name where the name is a Deribit name, so ``[{"name": "BTC-PERPETUAL"}]`` works.
        ``kind`` may be a code or a name (``"option"``), ``option_type`` ``"call"``/``"put"``/±1,
        ``expiry_ms`` ms or a datetime (key ``expiry`` is accepted too), ``strike`` and ``expiry_ms``
        ``None`` for "not applicable".
        """
        from dpm.market.table_io import table_from_records

        return table_from_records(records, underlyings)

    @classmethod
    def from_frame(cls, df: Any, underlyings: Sequence[str] | None = None) -> InstrumentTable:
        """Build from a pandas DataFrame with the table's columns (as written by :meth:`to_frame`)."""
        from dpm.market.table_io import table_from_frame

        return table_from_frame(df, underlyings)

    @classmethod
    def from_arrow(cls, tbl: Any, underlyings: Sequence[str] | None = None) -> InstrumentTable:
        """Build from a :class:`pyarrow.Table` as written by :meth:`to_arrow`."""
        from dpm.market.table_io import table_from_frame

        return table_from_frame(tbl.to_pandas(), underlyings)

    # ------------------------------------------------------------------ export
    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row: ``kind`` as a lower-case name, ``option_type`` ``'call'``/``'put'``/None,
        ``strike``/``expiry_ms`` None when not applicable (JSON-friendly)."""
        from dpm.market.table_io import table_to_records

        return table_to_records(self)

    def to_frame(self) -> Any:
        """pandas DataFrame (requires pandas): ``underlying`` as codes, ``kind`` as names,
        ``option_type`` 'call'/'put'/None, ``expiry_ms`` nullable Int64 (missing = no expiry)."""
        from dpm.market.table_io import table_to_frame

        return table_to_frame(self)

    def to_arrow(self) -> Any:
        """:class:`pyarrow.Table` (requires pyarrow); missing strike/expiry are nulls."""
        from dpm.market.table_io import table_to_arrow

        return table_to_arrow(self)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.name)

    def __repr__(self) -> str:
        counts = np.bincount(self.kind.astype(np.int64), minlength=4)
        parts = ", ".join(f"{counts[k]} {k.name.lower()}" for k in Kind if counts[k])
        return f"InstrumentTable({len(self)} instruments: {parts or 'empty'}; underlyings={self.underlyings})"

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @property
    def names(self) -> np.ndarray:
        """Alias of :attr:`name`."""
        return self.name

    @property
    def underlying_names(self) -> np.ndarray:
        """Underlying code (str) of every row, as an object array."""
        lookup = np.empty(len(self.underlyings), dtype=object)
        lookup[:] = self.underlyings
        return lookup[self.underlying]

    def index_of(self, names: Any) -> Any:
        """Instrument ids of ``names``.

        Returns an int64 array for a sequence/array of names, a Python int for a single str.

        Raises
        ------
        UnknownInstrumentError
            Naming the first name not in the table (and its position).
        """
        if isinstance(names, str):
            i = self._index.get(names)
            if i is None:
                raise UnknownInstrumentError(f"instrument: unknown instrument name {names!r}")
            return i
        if isinstance(names, np.ndarray) and names.dtype.kind not in "OU":
            raise InvalidTypeError(f"names: expected strings, got an array of dtype {names.dtype}")
        seq = names.tolist() if isinstance(names, np.ndarray) else names
        seq = list(seq)
        get = self._index.get
        idx = np.fromiter((get(n, -1) for n in seq), dtype=np.int64, count=len(seq))
        if len(idx) and idx.min() < 0:
            j = int(np.flatnonzero(idx < 0)[0])
            raise UnknownInstrumentError(f"instrument: unknown instrument name {seq[j]!r} at position {j}")
        return idx

    def row(self, i: int) -> Spec:
        """Spec object of instrument id ``i`` (negative indices count from the end)."""
        n = len(self)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise InvalidTypeError(f"row: expected an int index, got {i!r}")
        if not -n <= i < n:
            raise UnknownInstrumentError(f"row: instrument id {i} is not in [0, {n})")
        i = int(i) % n
        k = Kind(int(self.kind[i]))
        u = self.underlyings[self.underlying[i]]
        size = float(self.contract_size[i])
        settle = self.settlement[i]
        inv = bool(self.inverse[i])
        if k == Kind.OPTION:
            return Option(
                u,
                int(self.expiry_ms[i]),
                float(self.strike[i]),
                "call" if self.option_type[i] > 0 else "put",
                inv,
                size,
                settle,
            )
        if k == Kind.FUTURE:
            return Future(u, int(self.expiry_ms[i]), inv, size, settle)
        if k == Kind.PERPETUAL:
            return Perpetual(u, inv, size, settle)
        return Spot(u, settle, size)

    def subset(self, mask: Any) -> InstrumentTable:
        """New table of the rows selected by a boolean mask or integer ids (ids are renumbered)."""
        m = np.asarray(mask)
        if m.dtype.kind == "b":
            if m.shape != (len(self),):
                raise InvalidInputError(f"mask: expected shape ({len(self)},), got {m.shape}")
        elif m.dtype.kind in "iu" or m.size == 0:
            m = m.astype(np.int64)
            bad = (m < -len(self)) | (m >= len(self))
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise InvalidInputError(
                    f"mask: instrument id {m[j]} at position {j} is not in [0, {len(self)})"
                )
        else:
            raise InvalidTypeError(f"mask: expected a boolean mask or integer ids, got dtype {m.dtype}")
        return InstrumentTable(
            self.name[m],
            self.kind[m],
            self.underlying[m],
            self.option_type[m],
            self.strike[m],
            self.expiry_ms[m],
            self.inverse[m],
            self.contract_size[m],
            self.settlement[m],
            self.underlyings,
        )

    def check_not_expired(self, now_ms: TimeLike) -> None:
        """Raise :class:`InvalidInputError` naming the first instrument with ``expiry_ms <= now_ms``."""
        now = to_ms(now_ms, "now_ms")
        bad = self.expiry_ms <= now
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"expiry_ms: instrument {self.name[i]!r} (row {i}) expired at "
                f"{_ms_to_datetime(self.expiry_ms[i]).isoformat()} (<= now {_ms_to_datetime(now).isoformat()})"
            )

    def equals(self, other: InstrumentTable) -> bool:
        """True when every column and the underlying codes are identical (NaN strikes equal)."""
        if not isinstance(other, InstrumentTable) or len(self) != len(other):
            return False
        same_und = np.array_equal(self.underlying_names, other.underlying_names)
        return bool(
            same_und
            and np.array_equal(self.name, other.name)
            and np.array_equal(self.kind, other.kind)
            and np.array_equal(self.option_type, other.option_type)
            and np.array_equal(self.strike, other.strike, equal_nan=True)
            and np.array_equal(self.expiry_ms, other.expiry_ms)
            and np.array_equal(self.inverse, other.inverse)
            and np.array_equal(self.contract_size, other.contract_size)
            and np.array_equal(self.settlement, other.settlement)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InstrumentTable):
            return NotImplemented
        return self.equals(other)

    def __getstate__(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in _COLUMNS + ("underlyings",)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # rebuilt through __init__ so that the validation and read-only flags hold after unpickling
        InstrumentTable.__init__(self, *(state[c] for c in _COLUMNS), state["underlyings"])
