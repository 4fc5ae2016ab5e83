"""Deribit market-data loaders: saved ``ticker`` dumps of an option chain.

The chain reader turns a CSV saved from Deribit's public ``ticker`` endpoint (one row per option)
into an :class:`~dpm.market.table.InstrumentTable` and aligned columnar marks.
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dpm._util.fields import field_error, int_column
from dpm._util.files import read_csv
from dpm.errors import DPMError, InvalidInputError, MarketDataError
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable

__all__ = ["DERIBIT_SAMPLE_CHAIN", "DeribitChain", "read_deribit_chain"]

PathLike = str | os.PathLike

#: The bundled Deribit BTC option chain of 2020-05-14 (see ``dpm/data/README.md``).
DERIBIT_SAMPLE_CHAIN: Path = Path(__file__).resolve().parents[2] / "data" / "deribit_btc_options_2020-05-14.csv"


# ----------------------------------------------------------------------------------------------------
# Deribit ticker dump
# ----------------------------------------------------------------------------------------------------
class DeribitChain(NamedTuple):
    """An option chain read by :func:`read_deribit_chain`: the instruments and aligned marks."""

    table: InstrumentTable
    marks: dict[str, np.ndarray]


_CHAIN_FLOATS = {
    "underlying_price": "underlying_price",
    "index_price": "index_price",
    "mark_price": "mark_price",
    "open_interest": "open_interest",
    "interest_rate": "interest_rate",
    "settlement_price": "settlement_price",
    "last_price": "last_price",
    "min_price": "min_price",
    "max_price": "max_price",
    "estimated_delivery_price": "estimated_delivery_price",
    "best_bid_price": "bid_price",
    "best_ask_price": "ask_price",
    "best_bid_amount": "bid_amount",
    "best_ask_amount": "ask_amount",
}
_GREEKS = ("delta", "gamma", "vega", "theta", "rho")
_MISSING = ("", "nan", "NaN", "None")
#: Quantities and prices that cannot be negative (an option price, an amount, an implied vol).
_NON_NEGATIVE = frozenset({
    "mark_price", "best_bid_price", "best_ask_price", "best_bid_amount", "best_ask_amount", "open_interest",
    "last_price", "settlement_price", "min_price", "max_price", "mark_iv", "bid_iv", "ask_iv",
    "estimated_delivery_price",
})


def read_deribit_chain(path: PathLike | None = None) -> DeribitChain:
    """Read a Deribit ``ticker`` dump (one row per option) into instruments and columnar marks.

    Parameters
    ----------
    path : str or Path, optional
        CSV as saved from Deribit's public ticker endpoint; default the bundled chain of 2020-05-14
        (:data:`DERIBIT_SAMPLE_CHAIN`, 310 BTC options over 7 expiries).

    Returns
    -------
    DeribitChain
        ``table``: inverse options from the names (rows sorted by expiry, strike, call before put);
        ``marks``: dict of arrays aligned with the table rows:

        * ``mark_price``, ``bid_price``, ``ask_price``, ``last_price``, ``settlement_price``,
          ``min_price``, ``max_price`` — **in BTC** per contract (inverse); missing → NaN, and
          bid/ask are NaN where the book side is empty (amount 0);
        * ``mark_iv``, ``bid_iv``, ``ask_iv`` — **decimal** (Deribit's percent / 100); a bid/ask iv
          of 0 (Deribit's "not available") → NaN;
        * ``underlying_price`` (USD forward of the expiry), ``index_price``,
          ``estimated_delivery_price`` (USD); ``interest_rate``;
        * ``bid_amount``, ``ask_amount``, ``open_interest`` (contracts);
        * ``delta``, ``gamma``, ``vega``, ``theta``, ``rho`` — Deribit's own greeks;
        * ``timestamp_ms`` (int64), ``expiry_ms`` (int64, checked against the names);
        * ``underlying_index`` (object str, ``SYN.`` = synthetic forward);
        * ``name``, ``strike``, ``option_type`` — copies of the table columns.

    Raises
    ------
    MarketDataError
        If a name's expiry disagrees with ``expiration_timestamp``, a required column is missing, or
        a field is not a finite number (or negative where a price, amount or vol cannot be), naming
        the file, column, row and instrument.
    InvalidInputError
        If the file is missing, not UTF-8, malformed CSV or has a repeated column.
    """
    path = DERIBIT_SAMPLE_CHAIN if path is None else path
    source = os.fspath(path)
    header, raw = read_csv(path)
    cols = dict(zip(header, raw))
    n = len(raw[0]) if raw else 0
    if not n:
        raise MarketDataError(f"{source}: no rows")
    required = (
        "instrument_name",
        "expiration_timestamp",
        "timestamp",
        "mark_price",
        "mark_iv",
        "underlying_price",
        "index_price",
    )
    for c in required:
        if c not in cols:
            raise MarketDataError(f"{source}: no {c!r} column")

    names = [v.strip() for v in cols["instrument_name"]]
    try:
        table = InstrumentTable.from_names(names)
    except DPMError as exc:
        raise MarketDataError(f"{source}: instrument_name: {exc}") from None
    if not (table.kind == Kind.OPTION).all():
        i = int(np.flatnonzero(table.kind != Kind.OPTION)[0])
        raise MarketDataError(f"{source}: row {i + 1} ({names[i]!r}) is not an option")

    def where(i: int) -> str:
        return f"row {i + 1} ({names[i]!r})"

    def floats(col: str) -> np.ndarray:
        out = np.full(n, np.nan)
        if col not in cols:
            return out
        for i, v in enumerate(cols[col]):
            v = v.strip()
            if v in _MISSING:
                continue
            try:
                x = float(v)
            except ValueError:
                raise field_error(source, col, where(i), v, "not a number", MarketDataError) from None
            if not math.isfinite(x):
                raise field_error(source, col, where(i), v, "not a finite number", MarketDataError)
            if col in _NON_NEGATIVE and x < 0:
                raise field_error(source, col, where(i), v, "negative", MarketDataError)
            out[i] = x
        return out

    def ints(col: str) -> np.ndarray:
        try:
            vals = int_column(cols[col], "csv", col, source, where)
        except InvalidInputError as exc:
            raise MarketDataError(str(exc)) from None
        return np.array(vals, dtype=np.int64)

    marks: dict[str, np.ndarray] = {}
    for src, dst in _CHAIN_FLOATS.items():
        marks[dst] = floats(src)
    for c in ("underlying_price", "index_price"):
        bad = ~(marks[c] > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise field_error(source, c, where(i), cols[c][i], "must be a price > 0", MarketDataError)
    marks["mark_iv"] = floats("mark_iv") / 100.0
    for side in ("bid", "ask"):
        iv = floats(f"{side}_iv") / 100.0
        marks[f"{side}_iv"] = np.where(iv > 0, iv, np.nan)
        empty = ~(marks[f"{side}_amount"] > 0)
        marks[f"{side}_price"] = np.where(empty, np.nan, marks[f"{side}_price"])
    greeks = {g: np.full(n, np.nan) for g in _GREEKS}
    if "greeks" in cols:
        for i, text in enumerate(cols["greeks"]):
            text = text.strip()
            if not text:
                continue
            try:
                d = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise field_error(source, "greeks", where(i), text, "unreadable (expected {'delta': ...})",
                                  MarketDataError) from None
            if not isinstance(d, dict):
                raise field_error(source, "greeks", where(i), text, "not a dict", MarketDataError)
            for g in _GREEKS:
                v = d.get(g)
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise field_error(source, f"greeks[{g!r}]", where(i), v, "not a finite number",
                                      MarketDataError)
                greeks[g][i] = float(v)
    marks.update(greeks)
    marks["timestamp_ms"] = ints("timestamp")
    expiry = ints("expiration_timestamp")
    bad = expiry != table.expiry_ms
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MarketDataError(
            f"{source}: expiration_timestamp {expiry[i]} of {where(i)} disagrees with the name {names[i]!r}"
        )
    marks["expiry_ms"] = expiry
    und_idx = np.empty(n, dtype=object)
    und_idx[:] = cols["underlying_index"] if "underlying_index" in cols else [""] * n
    marks["underlying_index"] = und_idx

    strike = table.strike
    order = np.lexsort((-table.option_type, strike, table.expiry_ms))
    table = table.subset(order)
    marks = {k: v[order] for k, v in marks.items()}
    # convenience copies of table columns, so that the marks alone describe the smile
    marks["name"] = table.name.copy()
    marks["strike"] = table.strike.copy()
    marks["option_type"] = table.option_type.copy()
    for v in marks.values():
        v.setflags(write=False)
    return DeribitChain(table, marks)
