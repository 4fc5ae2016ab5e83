"""Deribit market-data loaders: saved ``ticker`` dumps of an option chain.

The chain reader turns a CSV saved from Deribit's public ``ticker`` endpoint (one row per option)
into an :class:`~dpm.market.table.InstrumentTable` and aligned columnar marks.
"""

from __future__ import annotations

import ast
import csv
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dpm.errors import MarketDataError
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
        If a name's expiry disagrees with ``expiration_timestamp`` or a required column is missing.
    """
    path = DERIBIT_SAMPLE_CHAIN if path is None else path
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise MarketDataError(f"{os.fspath(path)}: no rows")
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
        if c not in rows[0]:
            raise MarketDataError(f"{os.fspath(path)}: no {c!r} column")

    names = [r["instrument_name"] for r in rows]
    table = InstrumentTable.from_names(names)
    if not (table.kind == Kind.OPTION).all():
        i = int(np.flatnonzero(table.kind != Kind.OPTION)[0])
        raise MarketDataError(f"{os.fspath(path)}: row {i} ({names[i]!r}) is not an option")

    def floats(col: str) -> np.ndarray:
        out = np.full(len(rows), np.nan)
        if col not in rows[0]:
            return out
        for i, r in enumerate(rows):
            v = r[col].strip()
            if v not in ("", "nan", "NaN", "None"):
                try:
                    out[i] = float(v)
                except ValueError:
                    raise MarketDataError(
                        f"{os.fspath(path)}: column {col!r}, row {i} ({names[i]!r}) is {v!r}, not a number"
                    ) from None
        return out

    marks: dict[str, np.ndarray] = {}
    for src, dst in _CHAIN_FLOATS.items():
        marks[dst] = floats(src)
    marks["mark_iv"] = floats("mark_iv") / 100.0
    for side in ("bid", "ask"):
        iv = floats(f"{side}_iv") / 100.0
        marks[f"{side}_iv"] = np.where(iv > 0, iv, np.nan)
        empty = ~(marks[f"{side}_amount"] > 0)
        marks[f"{side}_price"] = np.where(empty, np.nan, marks[f"{side}_price"])
    greeks = {g: np.full(len(rows), np.nan) for g in _GREEKS}
    if "greeks" in rows[0]:
        for i, r in enumerate(rows):
            text = r["greeks"].strip()
            if not text:
                continue
            try:
                d = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise MarketDataError(
                    f"{os.fspath(path)}: greeks of row {i} ({names[i]!r}) unreadable: {text!r}"
                ) from None
            if not isinstance(d, dict):
                raise MarketDataError(f"{os.fspath(path)}: greeks of row {i} ({names[i]!r}) is not a dict")
            for g in _GREEKS:
                if g in d and d[g] is not None:
                    greeks[g][i] = float(d[g])
    marks.update(greeks)
    marks["timestamp_ms"] = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
    expiry = np.array([int(float(r["expiration_timestamp"])) for r in rows], dtype=np.int64)
    bad = expiry != table.expiry_ms
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MarketDataError(
            f"{os.fspath(path)}: expiration_timestamp {expiry[i]} of row {i} disagrees with the name {names[i]!r}"
        )
    marks["expiry_ms"] = expiry
    und_idx = np.empty(len(rows), dtype=object)
    und_idx[:] = [r.get("underlying_index", "") for r in rows]
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
