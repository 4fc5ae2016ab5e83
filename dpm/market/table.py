"""Instrument specifications, Deribit-style names and the :class:`InstrumentTable`.

An instrument is described twice:

* as a small frozen **spec** object (:class:`Option`, :class:`Future`, :class:`Perpetual`,
  :class:`Spot`) that people read and write, and
* as one row of an :class:`InstrumentTable`, an immutable struct of numpy arrays (row ``i`` =
  instrument id ``i``) that the kernels read.

Exchange names follow Deribit's grammar::

    name      := base | base "-" "SPOT" | base "-" "PERPETUAL" | base "-" date
               | base "-" date "-" strike "-" ("C" | "P")
    base      := COIN                 inverse (coin-settled), e.g. BTC-27DEC26-60000-C
               | COIN "_" QUOTE       linear, settled in QUOTE, e.g. BTC_USDC-PERPETUAL
    date      := D[D] MON YY          e.g. 5JUN20, 27DEC26 (no leading zero on the day)
    strike    := digits ["d" digits]  the decimal point is written "d": XRP_USDC-27DEC26-0d625-C

A bare ``COIN_QUOTE`` (``BTC_USDC``) is a spot pair settled in QUOTE; ``COIN-SPOT`` is spot against USD.
Expiries are at 08:00 UTC (Deribit's settlement time). Names are parsed strictly: only the canonical
spelling is accepted, so that ``format_name(parse_name(name)) == name`` and no instrument has two names.

Deribit contract-size defaults (overridable with ``contract_size=``): inverse options 1 coin; inverse
futures and perpetuals 10 USD (BTC) or 1 USD (ETH and other coins); linear contracts 1 unit of the
underlying; spot 1 unit.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from .errors import InvalidInputError, InvalidTypeError, UnknownInstrumentError

__all__ = [
    "EXPIRY_HOUR_UTC",
    "INSTRUMENT_COLUMNS",
    "NO_EXPIRY",
    "Future",
    "InstrumentTable",
    "Kind",
    "Option",
    "Perpetual",
    "Spec",
    "Spot",
    "default_contract_size",
    "format_name",
    "parse_name",
    "to_ms",
]


class Kind(IntEnum):
    """Instrument kind codes (stored as int8 in :class:`InstrumentTable`)."""

    SPOT = 0
    FUTURE = 1
    PERPETUAL = 2
    OPTION = 3


#: ``expiry_ms`` of instruments that never expire (perpetuals, spot).
NO_EXPIRY: int = int(np.iinfo(np.int64).max)
#: Deribit expiries settle at 08:00 UTC.
EXPIRY_HOUR_UTC: int = 8

_KIND_BY_NAME = {k.name.lower(): k for k in Kind}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_NUM = {m: i + 1 for i, m in enumerate(_MONTHS)}
_MS_PER_DAY = 86_400_000
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

# Deribit inverse futures/perpetuals: USD notional per contract.
_INVERSE_FUTURE_SIZE = {"BTC": 10.0, "ETH": 1.0}

TimeLike = int | np.integer | _dt.datetime | _dt.date | np.datetime64


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def to_ms(value: TimeLike, name: str = "expiry") -> int:
    """Milliseconds since the epoch (UTC) of an int, ``datetime``, ``date`` or ``datetime64``.

    Naive datetimes are taken as UTC; a bare ``date`` means 08:00 UTC of that day (Deribit expiry).
    """
    if isinstance(value, (bool, np.bool_)):
        raise InvalidTypeError(f"{name}: expected ms since epoch or a datetime, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise InvalidInputError(f"{name}: expected whole milliseconds, got {value!r}")
        return int(value)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ms]").astype(np.int64))
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if isinstance(value, _dt.date):
        return to_ms(_dt.datetime(value.year, value.month, value.day, EXPIRY_HOUR_UTC))
    raise InvalidTypeError(
        f"{name}: expected ms since epoch or a datetime, got {type(value).__name__} {value!r}"
    )


def _ms_to_datetime(ms: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(milliseconds=int(ms))


def default_contract_size(kind: Kind, underlying: str, inverse: bool) -> float:
    """Deribit's contract size for an instrument (see the module docstring)."""
    kind = Kind(kind)
    if inverse and kind in (Kind.FUTURE, Kind.PERPETUAL):
        return _INVERSE_FUTURE_SIZE.get(underlying, 1.0)
    return 1.0


def _check_code(value: str, field_name: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z0-9]+", value):
        raise InvalidInputError(
            f"{field_name}: expected an upper-case currency code like 'BTC', got {value!r}"
        )
    return value


def _norm_option_type(value: Any) -> str:
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("call", "c"):
            return "call"
        if v in ("put", "p"):
            return "put"
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if value == 1:
            return "call"
        if value == -1:
            return "put"
    raise InvalidInputError(f"option_type: expected 'call' or 'put' (or +1/-1), got {value!r}")


def _resolve_size(size: Any, kind: Kind, underlying: str, inverse: bool) -> float:
    if size is None:
        return default_contract_size(kind, underlying, inverse)
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"contract_size: expected a number, got {size!r}")
    size = float(size)
    if not (math.isfinite(size) and size > 0):
        raise InvalidInputError(f"contract_size: must be finite and > 0, got {size!r}")
    return size


def _resolve_settlement(settlement: Any, underlying: str, inverse: bool) -> str:
    if settlement is None:
        return underlying if inverse else "USDC"
    _check_code(settlement, "settlement")
    if inverse and settlement != underlying:
        raise InvalidInputError(
            f"settlement: an inverse contract on {underlying} settles in {underlying}, got {settlement!r}"
        )
    return settlement


# ----------------------------------------------------------------------------------------------------
# specs
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """European option on ``underlying`` expiring at ``expiry`` (ms since epoch UTC or a datetime).

    Parameters
    ----------
    underlying : str
        Coin code, e.g. ``"BTC"``.
    expiry : int or datetime
        Expiry; stored as int milliseconds since the epoch (UTC).
    strike : float
        Strike in USD per unit of underlying (> 0).
    option_type : {'call', 'put'}
        Also accepts ``'C'``/``'P'`` and ``+1``/``-1``.
    inverse : bool, default True
        Coin-settled (Deribit BTC/ETH options) if True, linear (USDC) if False.
    contract_size : float, optional
        Units of underlying per contract; default 1.
    settlement : str, optional
        Settlement currency; default the coin (inverse) or ``"USDC"`` (linear).
    """

    underlying: str
    expiry: int
    strike: float
    option_type: str
    inverse: bool = True
    contract_size: float = None  # type: ignore[assignment]
    settlement: str = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _check_code(self.underlying, "underlying")
        object.__setattr__(self, "expiry", to_ms(self.expiry))
        strike = self.strike
        if isinstance(strike, (bool, np.bool_)) or not isinstance(
            strike, (int, float, np.integer, np.floating)
        ):
            raise InvalidTypeError(f"strike: expected a number, got {strike!r}")
        strike = float(strike)
        if not (math.isfinite(strike) and strike > 0):
            raise InvalidInputError(f"strike: must be finite and > 0, got {strike!r}")
        object.__setattr__(self, "strike", strike)
        object.__setattr__(self, "option_type", _norm_option_type(self.option_type))
        object.__setattr__(self, "inverse", bool(self.inverse))
        object.__setattr__(
            self,
            "contract_size",
            _resolve_size(self.contract_size, Kind.OPTION, self.underlying, self.inverse),
        )
        object.__setattr__(
            self, "settlement", _resolve_settlement(self.settlement, self.underlying, self.inverse)
        )

    kind = Kind.OPTION

    @property
    def expiry_ms(self) -> int:
        """Expiry in ms since the epoch (UTC)."""
        return self.expiry

    @property
    def expiry_datetime(self) -> _dt.datetime:
        """Expiry as an aware UTC datetime."""
        return _ms_to_datetime(self.expiry)

    @property
    def is_call(self) -> bool:
        return self.option_type == "call"

    @property
    def name(self) -> str:
        """Deribit-style name (see :func:`format_name`)."""
        return format_name(self)


@dataclass(frozen=True)
class Future:
    """Dated future on ``underlying`` (inverse: USD notional per contract; linear: units)."""

    underlying: str
    expiry: int
    inverse: bool = True
    contract_size: float = None  # type: ignore[assignment]
    settlement: str = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _check_code(self.underlying, "underlying")
        object.__setattr__(self, "expiry", to_ms(self.expiry))
        object.__setattr__(self, "inverse", bool(self.inverse))
        object.__setattr__(
            self,
            "contract_size",
            _resolve_size(self.contract_size, Kind.FUTURE, self.underlying, self.inverse),
        )
        object.__setattr__(
            self, "settlement", _resolve_settlement(self.settlement, self.underlying, self.inverse)
        )

    kind = Kind.FUTURE

    @property
    def expiry_ms(self) -> int:
        return self.expiry

    @property
    def expiry_datetime(self) -> _dt.datetime:
        return _ms_to_datetime(self.expiry)

    @property
    def name(self) -> str:
        return format_name(self)


@dataclass(frozen=True)
class Perpetual:
    """Perpetual swap on ``underlying`` (no expiry; funding is market data, see ``dpm.market``)."""

    underlying: str
    inverse: bool = True
    contract_size: float = None  # type: ignore[assignment]
    settlement: str = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _check_code(self.underlying, "underlying")
        object.__setattr__(self, "inverse", bool(self.inverse))
        object.__setattr__(
            self,
            "contract_size",
            _resolve_size(self.contract_size, Kind.PERPETUAL, self.underlying, self.inverse),
        )
        object.__setattr__(
            self, "settlement", _resolve_settlement(self.settlement, self.underlying, self.inverse)
        )

    kind = Kind.PERPETUAL
    expiry_ms = NO_EXPIRY

    @property
    def name(self) -> str:
        return format_name(self)


@dataclass(frozen=True)
class Spot:
    """Spot holding of ``underlying`` quoted in ``settlement`` (``"USD"`` → name ``BTC-SPOT``)."""

    underlying: str
    settlement: str = "USD"
    contract_size: float = 1.0

    def __post_init__(self) -> None:
        _check_code(self.underlying, "underlying")
        _check_code(self.settlement, "settlement")
        object.__setattr__(
            self, "contract_size", _resolve_size(self.contract_size, Kind.SPOT, self.underlying, False)
        )

    kind = Kind.SPOT
    expiry_ms = NO_EXPIRY
    inverse = False

    @property
    def name(self) -> str:
        return format_name(self)


Spec = Option | Future | Perpetual | Spot


# ----------------------------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------------------------
_NAME_RE = re.compile(
    r"^(?P<u>[A-Z0-9]+)(?:_(?P<q>[A-Z0-9]+))?"
    r"(?:-(?P<tail>SPOT|PERPETUAL|(?P<date>\d{1,2}[A-Z]{3}\d{2})(?:-(?P<strike>[0-9]+(?:d[0-9]+)?)-(?P<cp>[CP]))?))?$"
)


def _format_date(ms: int) -> str:
    d = _ms_to_datetime(ms)
    if (d.hour, d.minute, d.second, d.microsecond) != (EXPIRY_HOUR_UTC, 0, 0, 0):
        raise InvalidInputError(
            f"expiry: {d.isoformat()} is not at {EXPIRY_HOUR_UTC:02d}:00 UTC, so it has no Deribit name"
        )
    if not 2000 <= d.year <= 2099:
        raise InvalidInputError(f"expiry: year {d.year} cannot be written as a two-digit Deribit year")
    return f"{d.day}{_MONTHS[d.month - 1]}{d.year % 100:02d}"


def _parse_date(text: str, name: str) -> int:
    m = re.fullmatch(r"(\d{1,2})([A-Z]{3})(\d{2})", text)
    if not m or m.group(2) not in _MONTH_NUM:
        raise InvalidInputError(f"name: bad expiry date {text!r} in {name!r} (expected e.g. 27DEC26)")
    try:
        d = _dt.datetime(
            2000 + int(m.group(3)),
            _MONTH_NUM[m.group(2)],
            int(m.group(1)),
            EXPIRY_HOUR_UTC,
            tzinfo=_dt.timezone.utc,
        )
    except ValueError:
        raise InvalidInputError(f"name: {text!r} in {name!r} is not a calendar date") from None
    return to_ms(d)


def _format_strike(strike: float) -> str:
    return np.format_float_positional(float(strike), trim="-").replace(".", "d")


def format_name(spec: Spec) -> str:
    """Deribit-style name of a spec.

    Raises
    ------
    InvalidInputError
        If the spec cannot be named (expiry not at 08:00 UTC, inverse spot).
    """
    if isinstance(spec, Spot):
        return (
            f"{spec.underlying}-SPOT" if spec.settlement == "USD" else f"{spec.underlying}_{spec.settlement}"
        )
    if not isinstance(spec, (Option, Future, Perpetual)):
        raise InvalidTypeError(f"format_name: expected an Option, Future, Perpetual or Spot, got {spec!r}")
    base = spec.underlying if spec.inverse else f"{spec.underlying}_{spec.settlement}"
    if isinstance(spec, Perpetual):
        return f"{base}-PERPETUAL"
    date = _format_date(spec.expiry)
    if isinstance(spec, Future):
        return f"{base}-{date}"
    return f"{base}-{date}-{_format_strike(spec.strike)}-{'C' if spec.option_type == 'call' else 'P'}"


def parse_name(name: str, *, contract_size: float | None = None) -> Spec:
    """Parse a Deribit-style instrument name into a spec.

    Parameters
    ----------
    name : str
        E.g. ``BTC-27DEC26-60000-C``, ``BTC-27DEC26``, ``ETH-PERPETUAL``, ``BTC_USDC-PERPETUAL``,
        ``XRP_USDC-27DEC26-0d625-C``, ``BTC_USDC`` (spot) or ``BTC-SPOT``.
    contract_size : float, optional
        Overrides the Deribit default contract size.

    Returns
    -------
    Option, Future, Perpetual or Spot

    Raises
    ------
    InvalidInputError
        If ``name`` does not follow the grammar or is not in canonical form (leading zeros, ...).
    """
    if not isinstance(name, str):
        raise InvalidTypeError(f"name: expected a str, got {type(name).__name__} {name!r}")
    m = _NAME_RE.match(name)
    if m is None:
        raise InvalidInputError(
            f"name: {name!r} is not a Deribit-style instrument name "
            "(e.g. BTC-27DEC26-60000-C, BTC-27DEC26, BTC-PERPETUAL, BTC_USDC-PERPETUAL, BTC_USDC)"
        )
    try:
        u, q, tail = m.group("u"), m.group("q"), m.group("tail")
        inverse = q is None
        settlement = None if inverse else q
        spec: Spec
        if tail is None:
            if inverse:
                raise InvalidInputError(
                    f"name: {name!r} has no instrument part (write {name}-PERPETUAL, ...)"
                )
            spec = Spot(u, settlement=q, contract_size=1.0 if contract_size is None else contract_size)
        elif tail == "SPOT":
            if not inverse:
                raise InvalidInputError(f"name: {name!r}: a quoted spot pair is written {u}_{q}")
            spec = Spot(u, settlement="USD", contract_size=1.0 if contract_size is None else contract_size)
        elif tail == "PERPETUAL":
            spec = Perpetual(u, inverse=inverse, contract_size=contract_size, settlement=settlement)
        else:
            expiry = _parse_date(m.group("date"), name)
            if m.group("strike") is None:
                spec = Future(u, expiry, inverse=inverse, contract_size=contract_size, settlement=settlement)
            else:
                strike = float(m.group("strike").replace("d", "."))
                spec = Option(
                    u,
                    expiry,
                    strike,
                    "call" if m.group("cp") == "C" else "put",
                    inverse=inverse,
                    contract_size=contract_size,
                    settlement=settlement,
                )
    except (InvalidInputError, InvalidTypeError) as exc:
        if str(exc).startswith("name:"):
            raise
        raise type(exc)(f"name: {name!r}: {exc}") from None
    canonical = format_name(spec)
    if canonical != name:
        raise InvalidInputError(f"name: {name!r} is not in canonical form; write {canonical!r}")
    return spec


# ----------------------------------------------------------------------------------------------------
# InstrumentTable
# ----------------------------------------------------------------------------------------------------
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

    __slots__ = _COLUMNS + ("underlyings", "_index")
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
        if names is None:
            names = [format_name(s) for s in specs]
        elif len(names) != len(specs):
            raise InvalidInputError(f"names: expected {len(specs)} names, got {len(names)}")
        n = len(specs)
        kind = np.empty(n, np.int8)
        ot = np.zeros(n, np.int8)
        strike = np.full(n, np.nan)
        exp = np.full(n, NO_EXPIRY, np.int64)
        inv = np.zeros(n, bool)
        size = np.empty(n)
        und, settle = [], []
        for i, s in enumerate(specs):
            if not isinstance(s, (Option, Future, Perpetual, Spot)):
                raise InvalidTypeError(f"specs: row {i} is {type(s).__name__} {s!r}, not an instrument spec")
            kind[i] = s.kind
            if isinstance(s, Option):
                ot[i] = 1 if s.option_type == "call" else -1
                strike[i] = s.strike
            if isinstance(s, (Option, Future)):
                exp[i] = s.expiry
            inv[i] = s.inverse
            size[i] = s.contract_size
            und.append(s.underlying)
            settle.append(s.settlement)
        return cls.from_columns(list(names), kind, und, ot, strike, exp, inv, size, settle, underlyings)

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
        return cls.from_columns(
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

    @classmethod
    def from_frame(cls, df: Any, underlyings: Sequence[str] | None = None) -> InstrumentTable:
        """Build from a pandas DataFrame with the table's columns (as written by :meth:`to_frame`)."""
        missing = [c for c in _COLUMNS if c not in df.columns]
        if missing:
            if "name" not in df.columns:
                raise InvalidInputError("from_frame: the frame has no 'name' column")
            return cls.from_records(df.to_dict("records"), underlyings)
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
        return cls.from_columns(
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

    @classmethod
    def from_arrow(cls, tbl: Any, underlyings: Sequence[str] | None = None) -> InstrumentTable:
        """Build from a :class:`pyarrow.Table` as written by :meth:`to_arrow`."""
        return cls.from_frame(tbl.to_pandas(), underlyings)

    # ------------------------------------------------------------------ export
    def to_records(self) -> list[dict[str, Any]]:
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

    def to_frame(self) -> Any:
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

    def to_arrow(self) -> Any:
        """:class:`pyarrow.Table` (requires pyarrow); missing strike/expiry are nulls."""
        import pyarrow as pa

        return pa.Table.from_pandas(self.to_frame(), preserve_index=False)

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
