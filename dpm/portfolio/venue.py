"""Position sizes as venues give them, converted to dpm's contracts at the boundary.

dpm's quantities are signed numbers of contracts (``contract_size`` converts them to exposure). Venues
quote sizes otherwise:

* Deribit ``private/pme/simulate`` positions and ``simulated_positions``: "Size in base currency"
  (coins) for every instrument; ``private/get_positions``: ``size`` in USD for futures and perpetuals
  (``size_currency`` in coins) and in coins for options; orders: USD for inverse futures, coins for
  options and linear futures (Deribit API reference, https://docs.deribit.com/, pages
  "private/pme/simulate", "private/get_positions", "private/buy", read 2026-12-01).
* A coin size of an inverse future or perpetual is its USD notional divided by the mark price
  (Deribit's ``size_currency`` = ``size`` / ``mark_price``), so converting it needs the market.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dpm._util.validation import as_float_array
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import Account

__all__ = ["UNITS", "contracts_from_size", "deribit_account"]

#: units of a venue size: ``"base"`` (coins of the underlying), ``"quote"`` (USD / settlement
#: currency notional), ``"contracts"``
UNITS = ("base", "quote", "contracts")


def contracts_from_size(table: InstrumentTable, instruments: Sequence[str] | np.ndarray, sizes: Any,
                        market: MarketSnapshot, unit: str | Sequence[str] = "base") -> np.ndarray:
    """Contracts of positions given in a venue's units.

    Parameters
    ----------
    table : InstrumentTable
    instruments : sequence of str or int
        Instrument names (or ids) of ``table``.
    sizes : array_like
        Signed sizes.
    market : MarketSnapshot
        Marks for inverse futures/perpetuals given in coins and linear instruments given in quote
        currency: the perpetual's mark, or the forward of the future's expiry.
    unit : str or sequence of str
        ``"base"``, ``"quote"`` or ``"contracts"``, for all positions or one per position.

    Returns
    -------
    ndarray
        Signed contracts, aligned with ``instruments``.
    """
    if not isinstance(table, InstrumentTable):
        raise InvalidTypeError(f"table: expected an InstrumentTable, got {type(table).__name__}")
    if not isinstance(market, MarketSnapshot):
        raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
    names = list(instruments)
    if all(isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) for x in names):
        ids = np.asarray(names, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
            raise InvalidInputError(f"instruments: ids must be in [0, {len(table)})")
    else:
        ids = np.asarray(table.index_of(names), dtype=np.int64)
    size = as_float_array(sizes, "sizes").ravel()
    if size.shape != ids.shape:
        raise InvalidInputError(f"sizes: {size.size} values for {ids.size} instruments")
    bad = ~np.isfinite(size)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(f"sizes: {table.name[ids[k]]!r} has {float(size[k])!r}, must be finite")
    units = [unit] * ids.size if isinstance(unit, str) else list(unit)
    if len(units) != ids.size or any(u not in UNITS for u in units):
        raise InvalidInputError(f"unit: expected one of {UNITS} (or one per position), got {unit!r}")
    sub = table.subset(ids) if ids.size else table.subset(np.zeros(0, dtype=np.int64))
    inp = market.instrument_inputs(sub) if ids.size else None
    out = np.empty(ids.size)
    for k, i in enumerate(ids):
        kind, inv, cs = int(table.kind[i]), bool(table.inverse[i]), float(table.contract_size[i])
        u = units[k]
        if u == "contracts":
            out[k] = size[k]
            continue
        price = float(inp.forward[k])
        if not (np.isfinite(price) and price > 0):
            raise MarketDataError(f"{table.name[i]!r}: no usable mark to convert a {u} size ({price!r})")
        if kind == Kind.OPTION or not inv:
            # options (coins per contract) and linear contracts (units of the underlying)
            out[k] = size[k] / cs if u == "base" else size[k] / (cs * price)
        else:
            # inverse futures / perpetuals: cs USD of notional per contract
            out[k] = size[k] * price / cs if u == "base" else size[k] / cs
    return out


def deribit_account(account_id: str, positions: Mapping[str, float] | Sequence[Mapping[str, Any]],
                    table: InstrumentTable, market: MarketSnapshot, *,
                    collateral: Mapping[str, float] | None = None) -> Account:
    """An :class:`~dpm.portfolio.accounts.Account` from Deribit positions.

    ``positions`` is either ``{instrument: size in base currency}`` (``private/pme/simulate``'s
    ``portfolio.position`` and ``simulated_positions``) or the list of position objects of
    ``private/get_positions`` (``size`` in USD for futures, in coins for options).
    """
    if isinstance(positions, Mapping):
        names = list(positions)
        sizes = [positions[n] for n in names]
        units: list[str] = ["base"] * len(names)
    elif isinstance(positions, Sequence) and not isinstance(positions, str):
        names, sizes, units = [], [], []
        for k, p in enumerate(positions):
            if not isinstance(p, Mapping) or "instrument_name" not in p or "size" not in p:
                raise InvalidInputError(f"positions: entry {k} is not a Deribit position object")
            names.append(p["instrument_name"])
            sizes.append(p["size"])
            units.append("quote" if p.get("kind") == "future" else "base")
    else:
        raise InvalidTypeError(f"positions: expected a dict or a list of position objects, got {type(positions).__name__}")
    q = contracts_from_size(table, names, sizes, market, units)
    return Account(str(account_id), [(n, float(x)) for n, x in zip(names, q)], dict(collateral or {}))
