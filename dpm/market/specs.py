"""Instrument specifications: kinds, expiry times, contract sizes and the spec objects.

An instrument is described twice: as a small frozen **spec** object (:class:`Option`,
:class:`Future`, :class:`Perpetual`, :class:`Spot`) that people read and write, and as one row of an
:class:`~dpm.market.table.InstrumentTable` that the kernels read. Names follow Deribit's grammar
(:mod:`dpm.market.names`).

Deribit contract-size defaults (overridable with ``contract_size=``): inverse options 1 coin; inverse
futures and perpetuals 10 USD (BTC) or 1 USD (ETH and other coins); linear contracts 1 unit of the
underlying; spot 1 unit. Expiries are at 08:00 UTC (Deribit's settlement time).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError

__all__ = [
    "EXPIRY_HOUR_UTC",
    "NO_EXPIRY",
    "Future",
    "Kind",
    "Option",
    "Perpetual",
    "Spec",
    "Spot",
    "TimeLike",
    "default_contract_size",
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
def _format_name(spec: Any) -> str:
    # names.py builds on the spec classes, so the name grammar is imported when first used
    from dpm.market.names import format_name

    return format_name(spec)


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
def _set_contract_terms(spec: Any, kind: int) -> None:
    """Normalise the terms every contract has: ``inverse``, ``contract_size`` (the venue default for the
    kind when not given) and ``settlement`` (the coin for inverse, USDC for linear when not given)."""
    object.__setattr__(spec, "inverse", bool(spec.inverse))
    object.__setattr__(spec, "contract_size",
                       _resolve_size(spec.contract_size, kind, spec.underlying, spec.inverse))
    object.__setattr__(spec, "settlement", _resolve_settlement(spec.settlement, spec.underlying, spec.inverse))


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
        _set_contract_terms(self, Kind.OPTION)

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
        """Deribit-style name (see :func:`dpm.market.names.format_name`)."""
        return _format_name(self)


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
        _set_contract_terms(self, Kind.FUTURE)

    kind = Kind.FUTURE

    @property
    def expiry_ms(self) -> int:
        return self.expiry

    @property
    def expiry_datetime(self) -> _dt.datetime:
        return _ms_to_datetime(self.expiry)

    @property
    def name(self) -> str:
        return _format_name(self)


@dataclass(frozen=True)
class Perpetual:
    """Perpetual swap on ``underlying`` (no expiry; funding is market data, see ``dpm.market``)."""

    underlying: str
    inverse: bool = True
    contract_size: float = None  # type: ignore[assignment]
    settlement: str = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _check_code(self.underlying, "underlying")
        _set_contract_terms(self, Kind.PERPETUAL)

    kind = Kind.PERPETUAL
    expiry_ms = NO_EXPIRY

    @property
    def name(self) -> str:
        return _format_name(self)


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
        return _format_name(self)


Spec = Option | Future | Perpetual | Spot
