"""Generated sample data: a Deribit-style instrument listing and synthetic accounts.

Everything here is **generated**, not exchange data. It gives tests, benchmarks and examples a
current-scale problem (about 1,800 instruments, up to 100,000 accounts) that is reproducible from a seed.

* :data:`SAMPLE_TIMESTAMP_MS` — the sample valuation time, 2026-11-27 08:00 UTC.
* :func:`default_instruments` — BTC and ETH listing built from the documented parameters in
  ``dpm/data/default_listing.json``: 11 expiries (2 daily, 2 weekly, 3 monthly, 4 quarterly) from
  28NOV26 to 31DEC27; per expiry, strikes are the multiples of ``step`` inside
  ``[lo * reference_price, hi * reference_price]`` for each ``[lo, hi, step]`` segment of the expiry
  cycle's ladder (reference prices BTC 92,000 and ETH 3,100; fine steps near the money, coarse in the
  wings, wider for longer cycles), each listed as a call and a put (inverse, 1 coin per contract);
  inverse futures for the weekly, monthly and quarterly expiries (BTC 10 USD, ETH 1 USD per contract);
  inverse perpetuals ``BTC-PERPETUAL``/``ETH-PERPETUAL`` and linear ``BTC_USDC-PERPETUAL``/
  ``ETH_USDC-PERPETUAL`` (1 coin per contract).
* :func:`generate_accounts` — a seeded, vectorised generator of realistic account books.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .instruments import EXPIRY_HOUR_UTC, Future, InstrumentTable, Option, Perpetual, parse_name, to_ms

__all__ = [
    "SAMPLE_TIMESTAMP_MS",
    "DATA_DIR",
    "load_listing_parameters",
    "default_instruments",


]

#: Sample valuation time: 2026-11-27 08:00:00 UTC in ms since the epoch.
SAMPLE_TIMESTAMP_MS: int = to_ms(_dt.datetime(2026, 11, 27, 8, tzinfo=_dt.timezone.utc))
#: Directory of the bundled data files.
DATA_DIR: Path = Path(__file__).resolve().parent / "data"


def load_listing_parameters() -> dict[str, Any]:
    """The parameters of :func:`default_instruments` (``dpm/data/default_listing.json``)."""
    with open(DATA_DIR / "default_listing.json", encoding="utf-8") as fh:
        return json.load(fh)


def _ladder_strikes(reference: float, ladder: list[list[float]]) -> list[float]:
    strikes: set[float] = set()
    for lo, hi, step in ladder:
        # small tolerance so that 0.92 * 92000 = 84640.00000000001 does not drop a strike
        k0 = math.ceil(lo * reference / step - 1e-9)
        k1 = math.floor(hi * reference / step + 1e-9)
        strikes.update(float(k * step) for k in range(max(k0, 1), k1 + 1))
    return sorted(strikes)


@functools.lru_cache(maxsize=1)
def default_instruments() -> InstrumentTable:
    """Generated Deribit-style BTC/ETH listing at :data:`SAMPLE_TIMESTAMP_MS` (cached, immutable).

    Rows are ordered by underlying (BTC, ETH), then perpetuals, futures by expiry, options by expiry,
    strike, call before put. See the module docstring and ``dpm/data/default_listing.json``.

    Returns
    -------
    InstrumentTable
        About 1,800 instruments (>= 700 options per underlying).
    """
    params = load_listing_parameters()
    hour = int(params.get("expiry_hour_utc", EXPIRY_HOUR_UTC))
    if hour != EXPIRY_HOUR_UTC:  # names encode only the date; the hour is Deribit's
        raise ValueError(f"default_listing.json: expiry_hour_utc must be {EXPIRY_HOUR_UTC}, got {hour}")
    expiries = [(parse_name(f"BTC-{e['code']}").expiry, e["cycle"]) for e in params["expiries"]]
    fut_cycles = set(params["futures_cycles"])
    perps = [parse_name(n) for n in params["perpetuals"]]
    specs: list[Any] = []
    for und, p in params["underlyings"].items():
        for perp in perps:
            if perp.underlying == und:
                size = (p["inverse_future_contract_size_usd"] if perp.inverse
                        else p["linear_perpetual_contract_size"])
                specs.append(Perpetual(und, perp.inverse, size, perp.settlement))
        for exp, cycle in expiries:
            if cycle in fut_cycles:
                specs.append(Future(und, exp, True, p["inverse_future_contract_size_usd"]))
        size = p["inverse_option_contract_size_coin"]
        for exp, cycle in expiries:
            for k in _ladder_strikes(p["reference_price"], p["strike_ladders"][cycle]):
                specs.append(Option(und, exp, k, "call", True, size))
                specs.append(Option(und, exp, k, "put", True, size))
    return InstrumentTable.from_specs(specs, underlyings=tuple(params["underlyings"]))
