"""Deribit-style instrument names: parse and format, strictly canonical.

Grammar::

    name      := base | base "-" "SPOT" | base "-" "PERPETUAL" | base "-" date
               | base "-" date "-" strike "-" ("C" | "P")
    base      := COIN                 inverse (coin-settled), e.g. BTC-27DEC26-60000-C
               | COIN "_" QUOTE       linear, settled in QUOTE, e.g. BTC_USDC-PERPETUAL
    date      := D[D] MON YY          e.g. 5JUN20, 27DEC26 (no leading zero on the day)
    strike    := digits ["d" digits]  the decimal point is written "d": XRP_USDC-27DEC26-0d625-C

A bare ``COIN_QUOTE`` (``BTC_USDC``) is a spot pair settled in QUOTE; ``COIN-SPOT`` is spot against USD.
Names are parsed strictly: only the canonical spelling is accepted, so that
``format_name(parse_name(name)) == name`` and no instrument has two names.
"""

from __future__ import annotations

import datetime as _dt
import re

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.specs import (
    _MONTH_NUM,
    _MONTHS,
    EXPIRY_HOUR_UTC,
    Future,
    Option,
    Perpetual,
    Spec,
    Spot,
    _ms_to_datetime,
    to_ms,
)

__all__ = ["format_name", "parse_name"]

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
