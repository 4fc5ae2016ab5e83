"""Input events of the live book, their validation and their one wire/log encoding.

Every change to a :class:`~dpm.live.book.LiveBook` is one of these frozen records. They are the unit
of durability (the journal stores each one, encoded by :func:`encode_event`, before it is applied),
of replay (:func:`decode_event` rebuilds exactly the same record: floats round-trip through
``repr``) and of the service (the gRPC messages map one to one onto them).

Constructing a record checks what can be checked without the book (types, finiteness, signs);
the book checks the rest (the account exists, the instrument is tradable, the margin allows it).
A record that fails either check is refused with a :mod:`dpm.errors` exception and changes nothing.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, Mapping

from dpm.errors import DPMError, InvalidInputError, InvalidTypeError

__all__ = [
    "CancelOrder",
    "EVENT_TYPES",
    "Event",
    "EventRejected",
    "Fill",
    "MAX_QUANTITY",
    "Funding",
    "MarketTick",
    "OpenAccount",
    "PlaceOrder",
    "Settle",
    "Transfer",
    "UnderlyingTick",
    "decode_event",
    "encode_event",
    "event_from_dict",
    "event_to_dict",
]

#: longest account id, order id, instrument name or client id accepted (bytes of UTF-8)
MAX_ID_LENGTH = 128
#: largest |quantity| of a fill, an order or a position (contracts): far beyond any real book, and far
#: enough from the float range that no margin figure can overflow
MAX_QUANTITY = 1e12
#: 9999-12-31T23:59:59.999Z: later times cannot be printed as dates
MAX_TIMESTAMP_MS = 253_402_300_799_999


class EventRejected(DPMError):
    """A well-formed event that a risk rule refuses (insufficient margin for an order or a
    withdrawal, a withdrawal larger than the balance, a fill on a settled instrument, ...)."""


def _id(value: Any, name: str) -> str:
    if type(value) is not str:
        if not isinstance(value, str):
            raise InvalidTypeError(f"{name}: expected a str, got {type(value).__name__} {value!r}")
        value = str(value)
    # isprintable() is False for control characters (and line/paragraph separators)
    if not value or not value.isprintable() or (len(value) > MAX_ID_LENGTH // 4 and
                                                len(value.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH):
        if not value or len(value.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
            raise InvalidInputError(f"{name}: must be a non-empty str of at most {MAX_ID_LENGTH} bytes, "
                                    f"got {value!r}")
        raise InvalidInputError(f"{name}: control characters are not allowed, got {value!r}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise InvalidTypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidTypeError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InvalidInputError(f"{name}: must be finite, got {value!r}")
    return v


def _positive(value: Any, name: str) -> float:
    v = _number(value, name)
    if not v > 0.0:
        raise InvalidInputError(f"{name}: must be > 0, got {value!r}")
    return v


def _nonzero(value: Any, name: str) -> float:
    v = _number(value, name)
    if v == 0.0:
        raise InvalidInputError(f"{name}: must not be 0")
    return v


def _quantity(value: Any, name: str = "quantity") -> float:
    v = _nonzero(value, name)
    if abs(v) > MAX_QUANTITY:
        raise InvalidInputError(f"{name}: |{v!r}| exceeds the largest quantity accepted ({MAX_QUANTITY:g} contracts)")
    return v


def _optional(value: Any, name: str, check: Any) -> float | None:
    return None if value is None else check(value, name)


@dataclass(frozen=True)
class OpenAccount:
    """Create an empty account (no positions, zero balances)."""

    account: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", _id(self.account, "account"))


@dataclass(frozen=True)
class Transfer:
    """Deposit (``amount > 0``) or withdrawal (``amount < 0``) of ``currency``.

    A withdrawal is refused when it exceeds the balance of that currency or leaves the equity
    below the initial margin (open orders included).
    """

    account: str
    currency: str
    amount: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", _id(self.account, "account"))
        object.__setattr__(self, "currency", _id(self.currency, "currency"))
        object.__setattr__(self, "amount", _nonzero(self.amount, "amount"))


@dataclass(frozen=True)
class Fill:
    """A trade: ``quantity`` contracts (signed, long > 0) of ``instrument`` at ``price``.

    ``price`` is in the instrument's quote convention (options: per unit of underlying, in coin for
    inverse options and in the settlement currency for linear ones; futures and perpetuals: USD per
    unit; spot: USD); None fills at the current mark. ``fee`` (>= 0, settlement currency) is
    debited. ``order_id`` names the resting order the fill consumes (its remaining quantity must
    cover the fill, with the same sign).
    """

    account: str
    instrument: str
    quantity: float
    price: float | None = None
    fee: float = 0.0
    order_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", _id(self.account, "account"))
        object.__setattr__(self, "instrument", _id(self.instrument, "instrument"))
        object.__setattr__(self, "quantity", _quantity(self.quantity))
        price = _optional(self.price, "price", _number)
        if price is not None and price < 0.0:
            raise InvalidInputError(f"price: must be >= 0, got {self.price!r}")
        object.__setattr__(self, "price", price)
        fee = _number(self.fee, "fee")
        if fee < 0.0:
            raise InvalidInputError(f"fee: must be >= 0, got {self.fee!r}")
        object.__setattr__(self, "fee", fee)
        if self.order_id is not None:
            object.__setattr__(self, "order_id", _id(self.order_id, "order_id"))


@dataclass(frozen=True)
class PlaceOrder:
    """A resting order of ``quantity`` contracts (signed: buy > 0, sell < 0).

    With ``check`` (the default) the order is refused unless the account can afford it: its equity
    covers the initial margin with the order counted, or the order does not raise the initial
    margin (see ``docs/live.md``, open orders).
    """

    account: str
    order_id: str
    instrument: str
    quantity: float
    price: float | None = None
    check: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", _id(self.account, "account"))
        object.__setattr__(self, "order_id", _id(self.order_id, "order_id"))
        object.__setattr__(self, "instrument", _id(self.instrument, "instrument"))
        object.__setattr__(self, "quantity", _quantity(self.quantity))
        price = _optional(self.price, "price", _number)
        if price is not None and price < 0.0:
            raise InvalidInputError(f"price: must be >= 0, got {self.price!r}")
        object.__setattr__(self, "price", price)
        if not isinstance(self.check, bool):
            raise InvalidTypeError(f"check: expected a bool, got {self.check!r}")


@dataclass(frozen=True)
class CancelOrder:
    """Remove a resting order."""

    account: str
    order_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", _id(self.account, "account"))
        object.__setattr__(self, "order_id", _id(self.order_id, "order_id"))


@dataclass(frozen=True)
class UnderlyingTick:
    """New marks of one underlying: the index (forwards move with it, same basis), optionally the
    perpetual mark (default: moves with the index, same premium) and the funding rate."""

    underlying: str
    index_price: float
    perpetual_price: float | None = None
    funding_rate: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "underlying", _id(self.underlying, "underlying"))
        object.__setattr__(self, "index_price", _positive(self.index_price, "index_price"))
        object.__setattr__(self, "perpetual_price", _optional(self.perpetual_price, "perpetual_price", _positive))
        object.__setattr__(self, "funding_rate", _optional(self.funding_rate, "funding_rate", _number))


@dataclass(frozen=True)
class MarketTick:
    """A market update: new marks for some underlyings and/or a new valuation time.

    ``timestamp_ms`` (optional) must not go back in time; moving it re-margins every account with
    dated positions (times to expiry change).
    """

    underlyings: tuple[UnderlyingTick, ...] = ()
    timestamp_ms: int | None = None

    def __post_init__(self) -> None:
        ticks = self.underlyings
        if isinstance(ticks, (UnderlyingTick, Mapping, str)) or not hasattr(ticks, "__iter__"):
            raise InvalidTypeError("underlyings: expected a sequence of UnderlyingTick")
        out = []
        for k, t in enumerate(ticks):
            if isinstance(t, Mapping):
                t = _from_fields(UnderlyingTick, t, f"underlyings[{k}]")
            if not isinstance(t, UnderlyingTick):
                raise InvalidTypeError(f"underlyings[{k}]: expected an UnderlyingTick, got {type(t).__name__}")
            out.append(t)
        names = [t.underlying for t in out]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"underlyings: an underlying appears twice in one tick: {names}")
        object.__setattr__(self, "underlyings", tuple(out))
        ts = self.timestamp_ms
        if ts is not None:
            if isinstance(ts, bool) or not isinstance(ts, int):
                raise InvalidTypeError(f"timestamp_ms: expected int milliseconds, got {ts!r}")
            if not 0 <= ts <= MAX_TIMESTAMP_MS:
                raise InvalidInputError(f"timestamp_ms: must be in [0, {MAX_TIMESTAMP_MS}] (up to year 9999), "
                                        f"got {ts!r}")
        if not out and ts is None:
            raise InvalidInputError("tick: no underlying and no timestamp: nothing to update")


@dataclass(frozen=True)
class Funding:
    """A funding payment of perpetual ``instrument`` at ``rate`` (decimal per period): every long
    pays ``rate`` times its position value at the perpetual mark, every short receives it (the
    other way round when the rate is negative)."""

    instrument: str
    rate: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "instrument", _id(self.instrument, "instrument"))
        object.__setattr__(self, "rate", _number(self.rate, "rate"))


@dataclass(frozen=True)
class Settle:
    """Expiry of a dated ``instrument`` at settlement ``price`` (USD per unit of underlying):
    positions are closed at their payoff, resting orders on it are cancelled, and it can no longer
    be traded."""

    instrument: str
    price: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "instrument", _id(self.instrument, "instrument"))
        object.__setattr__(self, "price", _positive(self.price, "price"))


Event = OpenAccount | Transfer | Fill | PlaceOrder | CancelOrder | MarketTick | Funding | Settle

#: wire/log name -> record type
EVENT_TYPES: dict[str, type] = {
    "open_account": OpenAccount, "transfer": Transfer, "fill": Fill, "place_order": PlaceOrder,
    "cancel_order": CancelOrder, "tick": MarketTick, "funding": Funding, "settle": Settle,
}
_TYPE_NAMES = {v: k for k, v in EVENT_TYPES.items()}


def _from_fields(cls: type, data: Mapping[str, Any], what: str) -> Any:
    if not isinstance(data, Mapping):
        raise InvalidTypeError(f"{what}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidInputError(f"{what}: unknown field(s) {unknown}; fields are {sorted(names)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise InvalidInputError(f"{what}: missing field(s) {missing}")
    return cls(**data)


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """The event of ``{"type": name, **fields}`` (the inverse of :func:`encode_event`'s payload)."""
    if not isinstance(data, Mapping):
        raise InvalidTypeError(f"event: expected an object, got {type(data).__name__}")
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidInputError(f"event: unknown type {kind!r}; types are {sorted(EVENT_TYPES)}")
    body = {k: v for k, v in data.items() if k != "type"}
    if cls is MarketTick and "underlyings" in body:
        if not isinstance(body["underlyings"], (list, tuple)):
            raise InvalidTypeError("tick.underlyings: expected a list")
        body["underlyings"] = tuple(_from_fields(UnderlyingTick, t, f"underlyings[{k}]")
                                    for k, t in enumerate(body["underlyings"]))
    return _from_fields(cls, body, kind)


def event_to_dict(event: Event) -> dict[str, Any]:
    """``{"type": name, **fields}``; optional fields left at their default are omitted."""
    cls = type(event)
    name = _TYPE_NAMES.get(cls)
    if name is None:
        raise InvalidTypeError(f"event: expected one of {sorted(EVENT_TYPES)}, got {cls.__name__}")
    out: dict[str, Any] = {"type": name}
    for f in fields(cls):
        v = getattr(event, f.name)
        if f.default is not MISSING and v == f.default and type(v) is type(f.default):
            continue
        if isinstance(v, tuple):  # tick.underlyings
            v = [{g.name: getattr(t, g.name) for g in fields(t) if getattr(t, g.name) is not None} for t in v]
        out[f.name] = v
    return out


def encode_event(event: Event) -> str:
    """Compact JSON of ``event`` (floats as their shortest round-trip repr: replay is exact)."""
    return json.dumps(event_to_dict(event), separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def decode_event(text: str | bytes) -> Event:
    """The event encoded by :func:`encode_event` (any malformed input raises a dpm error)."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"event: not valid JSON ({exc})") from None
    return event_from_dict(data)
