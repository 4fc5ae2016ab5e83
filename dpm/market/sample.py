"""Bundled market data: the real Deribit BTC chain of 2020-05-14, a generated 2026 BTC+ETH listing
and market.

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

* :func:`deribit_snapshot` — a :class:`~dpm.market.MarketSnapshot` built from the real Deribit BTC option
  chain in ``dpm/data/deribit_btc_options_2020-05-14.csv`` (source: public repository
  schepal/deribit_data_collector, ``sample_data/btc_options_data.csv`` at commit b221f2c4; unmodified):
  forward curve through each expiry's ``underlying_price``, SVI surface fitted to ``mark_iv``.
  :func:`deribit_marks` returns the chain's columns as numpy arrays.
* :func:`default_market` — a **generated** (not exchange) BTC+ETH market at
  :data:`dpm.portfolio.sample.SAMPLE_TIMESTAMP_MS` (2026-11-27 08:00 UTC) from the documented parameters in
  ``dpm/data/default_market_params.json``; :func:`default_marks` prices every instrument of a table in it.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, MarketDataError
from dpm.market.names import _format_date, _format_strike, parse_name
from dpm.market.snapshot import MS_PER_YEAR, ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.specs import EXPIRY_HOUR_UTC, Future, Option, Perpetual, to_ms
from dpm.market.surface import VolSurface
from dpm.market.table import InstrumentTable, _spec_columns

__all__ = [
    "DATA_DIR",
    "SAMPLE_TIMESTAMP_MS",
    "default_instruments",
    "load_listing_parameters",
    "DEFAULT_MARKET_PARAMS_PATH",
    "DERIBIT_CHAIN_PATH",
    "default_market",
    "default_marks",
    "deribit_marks",
    "deribit_snapshot",
    "generate_default_market_params",
    "load_default_market_params",
]

_DATA = Path(__file__).resolve().parents[1] / "data"
DERIBIT_CHAIN_PATH: Path = _DATA / "deribit_btc_options_2020-05-14.csv"
DEFAULT_MARKET_PARAMS_PATH: Path = _DATA / "default_market_params.json"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


# --------------------------------------------------------------------------- generated listing
#: Sample valuation time: 2026-11-27 08:00:00 UTC in ms since the epoch.
SAMPLE_TIMESTAMP_MS: int = to_ms(_dt.datetime(2026, 11, 27, 8, tzinfo=_dt.timezone.utc))
#: Directory of the bundled data files.
DATA_DIR: Path = Path(__file__).resolve().parents[1] / "data"


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
    # Columns, not spec objects: the 1,600 options are a grid of (expiry, strike, call/put) per
    # underlying whose terms are those of one spec (about 30 ms less per process than a spec and a
    # formatted name each; tests compare the table with the one built from specs).
    cols: dict[str, list[Any]] = _spec_columns([])
    for und, p in params["underlyings"].items():
        delta_one: list[Any] = []
        for perp in perps:
            if perp.underlying == und:
                size = (
                    p["inverse_future_contract_size_usd"]
                    if perp.inverse
                    else p["linear_perpetual_contract_size"]
                )
                delta_one.append(Perpetual(und, perp.inverse, size, perp.settlement))
        for exp, cycle in expiries:
            if cycle in fut_cycles:
                delta_one.append(Future(und, exp, True, p["inverse_future_contract_size_usd"]))
        for key, values in _spec_columns(delta_one).items():
            cols[key] += values
        # the terms every option of the grid shares, as the spec resolves them
        proto = Option(und, expiries[0][0], 1.0, "call", True, p["inverse_option_contract_size_coin"])
        shared = {"kind": proto.kind, "underlying": und, "inverse": proto.inverse,
                  "contract_size": proto.contract_size, "settlement": proto.settlement}
        strike_text: dict[float, str] = {}
        for exp, cycle in expiries:
            head = f"{und}-{_format_date(exp)}-"
            strikes = _ladder_strikes(p["reference_price"], p["strike_ladders"][cycle])
            for k in strikes:
                text = strike_text.get(k)
                if text is None:
                    text = strike_text[k] = _format_strike(k)
                cols["name"] += (f"{head}{text}-C", f"{head}{text}-P")
                cols["strike"] += (k, k)
            cols["option_type"] += [1, -1] * len(strikes)
            cols["expiry_ms"] += [exp] * (2 * len(strikes))
            for key, v in shared.items():
                cols[key] += [v] * (2 * len(strikes))
    return InstrumentTable._from_column_lists(cols, underlyings=tuple(params["underlyings"]))


# --------------------------------------------------------------------------- real Deribit chain
@functools.lru_cache(maxsize=2)
def _chain_columns(path: str) -> dict[str, np.ndarray]:
    from dpm.market.loaders.deribit import read_deribit_chain

    marks = dict(read_deribit_chain(path).marks)
    names = marks["name"]
    label = np.array([str(n).split("-")[1] for n in names], dtype=object)
    label.setflags(write=False)
    marks["instrument_name"] = names
    marks["expiry_label"] = label
    return marks


def deribit_marks(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The bundled Deribit BTC chain (2020-05-14 05:41-05:44 UTC, 310 options, 7 expiries) as columns.

    The columns of :func:`dpm.market.loaders.deribit.read_deribit_chain` (rows sorted by expiry, strike, call before put) plus
    ``instrument_name`` (= ``name``) and ``expiry_label`` (``"22MAY20"``). Among them: ``expiry_ms``,
    ``timestamp_ms`` (per row), ``strike``, ``option_type`` (+1/-1), ``underlying_price`` (the expiry's
    forward), ``index_price``, ``mark_price`` (**BTC** per option, inverse), ``mark_iv`` / ``bid_iv`` /
    ``ask_iv`` (decimal; NaN where the side has no quote) and Deribit's own greeks ``delta``, ``gamma``,
    ``vega``, ``theta``, ``rho`` (see ``docs/market-data.md`` for their units). Arrays are read-only.
    """
    return dict(_chain_columns(str(path or DERIBIT_CHAIN_PATH)))


def _chain_timestamp(c: dict[str, np.ndarray]) -> int:
    # The rows were sampled over ~150 s; the snapshot is taken at the last one (chain complete).
    return int(c["timestamp_ms"].max())


@functools.lru_cache(maxsize=4)
def _deribit_snapshot(path: str, method: str) -> MarketSnapshot:
    c = _chain_columns(path)
    ts = _chain_timestamp(c)
    if np.any(c["expiry_ms"] <= ts):
        raise MarketDataError(f"{path}: an option expires before the chain's timestamp {ts}")
    T = (c["expiry_ms"] - ts).astype(np.float64) / MS_PER_YEAR
    index = float(np.median(c["index_price"]))
    # One forward per expiry: the median of the rows' underlying_price (they differ by a few USD because
    # rows were sampled a moment apart).
    Tu = np.unique(T)
    F_exp = np.array([np.median(c["underlying_price"][T == t]) for t in Tu])
    labels = [str(c["expiry_label"][T == t][0]) for t in Tu]
    curve = ForwardCurve.from_futures(index, Tu, F_exp, labels=labels)
    if method == "spline":
        surface = VolSurface.from_marks(c["strike"], T, c["underlying_price"], c["mark_iv"], bid_ivs=c["bid_iv"],
                                        ask_ivs=c["ask_iv"], labels=c["expiry_label"], method="spline")
    else:
        surface = VolSurface.from_marks(c["strike"], T, c["underlying_price"], c["mark_iv"],
                                        labels=c["expiry_label"], method=method)
    btc = UnderlyingMarket(index, curve, surface, perpetual_price=index, funding_rate=0.0)
    return MarketSnapshot(ts, {"BTC": btc})


def deribit_snapshot(path: str | Path | None = None, *, method: str = "spline") -> MarketSnapshot:
    """The real Deribit BTC chain of 2020-05-14 as a :class:`MarketSnapshot` (cached; immutable).

    * ``timestamp_ms``: the chain's last row timestamp (2020-05-14 05:44:06.537 UTC).
    * index: median of ``index_price`` (9,350.67 at the first row).
    * forward curve: through each expiry's median ``underlying_price`` (Deribit's forward for the expiry;
      synthetic from put-call parity for expiries without a future).
    * vol surface: ``method="spline"`` (default) the venue-following smiles of
      :mod:`dpm.market.spline` fitted to ``mark_iv`` inside ``bid_iv``/``ask_iv``; ``method="svi"`` one SVI
      slice per expiry fitted to ``mark_iv`` (vega-weighted). Both arbitrage-checked and repaired.
    * perpetual price: not in the chain, set to the index; funding 0.
    """
    if method not in ("spline", "svi"):
        raise InvalidInputError(f"method: expected 'spline' or 'svi', got {method!r}")
    return _deribit_snapshot(str(path or DERIBIT_CHAIN_PATH), method)


# --------------------------------------------------------------------------- generated default market
def _expiry_ms(code: str, hour: int) -> int:
    day = int(code[:-5])
    month = _MONTHS.index(code[-5:-2]) + 1
    year = 2000 + int(code[-2:])
    dt = _dt.datetime(year, month, day, hour, tzinfo=_dt.timezone.utc)
    return round(dt.timestamp() * 1000)


def _atm_vol(T: float, p: dict[str, float]) -> float:
    return p["atm_vol_long"] + (p["atm_vol_short"] - p["atm_vol_long"]) * math.exp(-T / p["atm_vol_decay_years"])


def _ssvi_slice(theta: float, rho: float, eta: float, gamma: float) -> dict[str, float]:
    """Raw SVI parameters of the SSVI slice with ATM total variance ``theta`` and power-law curvature."""
    phi = eta / (theta ** gamma * (1.0 + theta) ** (1.0 - gamma))
    return {
        "a": theta / 2.0 * (1.0 - rho * rho),
        "b": theta * phi / 2.0,
        "rho": rho,
        "m": -rho / phi,
        "sigma": math.sqrt(1.0 - rho * rho) / phi,
    }


def generate_default_market_params(generator: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recompute the per-expiry SVI parameters of ``default_market_params.json`` from its ``generator``.

    Per underlying, ATM vol ``sigma_atm(T) = long + (short - long) * exp(-T / decay)``, ATM total variance
    ``theta = sigma_atm^2 T``, and the SSVI slice ``w(k) = theta/2 (1 + rho phi k + sqrt((phi k + rho)^2 +
    1 - rho^2))`` with ``phi = eta / (theta^gamma (1 + theta)^(1 - gamma))`` (Gatheral & Jacquier 2014,
    free of static arbitrage when ``eta (1 + |rho|) <= 2`` and ``theta`` increases with ``T``), written as
    raw SVI ``(a, b, rho, m, sigma)``.
    """
    gen = generator if generator is not None else load_default_market_params()["generator"]
    now = int(gen["timestamp_ms"])
    hour = int(gen["expiry_hour_utc"])
    out: dict[str, Any] = {}
    for und, p in gen["underlyings"].items():
        slices = []
        for code in gen["expiries"]:
            e = _expiry_ms(code, hour)
            T = (e - now) / MS_PER_YEAR
            theta = _atm_vol(T, p) ** 2 * T
            s = _ssvi_slice(theta, p["skew_rho"], p["curvature_eta"], p["curvature_gamma"])
            slices.append({"expiry": code, "expiry_ms": e, "T": T, **{k: float(v) for k, v in s.items()}})
        out[und] = slices
    return out


@functools.lru_cache(maxsize=1)
def load_default_market_params() -> dict[str, Any]:
    """The parameters of :func:`default_market` (``dpm/data/default_market_params.json``)."""
    with open(DEFAULT_MARKET_PARAMS_PATH, encoding="utf-8") as fh:
        return json.load(fh)


@functools.lru_cache(maxsize=1)
def default_market() -> MarketSnapshot:
    """Generated BTC+ETH market at 2026-11-27 08:00 UTC (``dpm.portfolio.sample.SAMPLE_TIMESTAMP_MS``); cached.

    Built from ``dpm/data/default_market_params.json`` (**generated** parameters, not exchange data):
    index BTC 92,000 / ETH 3,100; forward curve ``F = S exp(basis * T)`` with the underlying's annualised
    basis, marked at the futures expiries; perpetual mark ``S (1 + premium)`` and an 8-hour funding rate;
    SVI slices at the listing's 11 expiries (ATM vol term structure + put skew + curvature, see
    :func:`generate_default_market_params`). Covers every instrument of ``dpm.market.sample.default_instruments()``.
    """
    params = load_default_market_params()
    gen = params["generator"]
    now = int(gen["timestamp_ms"])
    hour = int(gen["expiry_hour_utc"])
    fut_T = np.array([(_expiry_ms(c, hour) - now) / MS_PER_YEAR for c in gen["futures_expiries"]])
    und = {}
    for name, p in gen["underlyings"].items():
        S = float(p["index_price"])
        curve = ForwardCurve.from_futures(S, fut_T, S * np.exp(p["basis_annual"] * fut_T))
        sl = params["svi"][name]
        surface = VolSurface.from_svi_params(
            [[s["a"], s["b"], s["rho"], s["m"], s["sigma"]] for s in sl],
            [s["T"] for s in sl],
            forwards=curve.forward(np.array([s["T"] for s in sl])),
            labels=[s["expiry"] for s in sl],
        )
        und[name] = UnderlyingMarket(S, curve, surface, perpetual_price=S * (1.0 + p["perpetual_premium"]),
                                     funding_rate=p["funding_rate_8h"])
    return MarketSnapshot(now, und)


def default_marks(table: Any, snapshot: MarketSnapshot | None = None) -> np.ndarray:
    """Mark price of every instrument of ``table`` in ``snapshot`` (default :func:`default_market`).

    Quote conventions (Deribit's): options are Black-76 on the surface vol and the expiry's forward, per
    one unit of underlying, **in coin for inverse options** (USD value / forward) and in the settlement
    currency for linear ones; futures are their forward (USD), perpetuals the perpetual mark, spot the
    index. Multiply by ``contract_size`` for per-contract values where the contract is in coin units.
    """
    from dpm.pricing.black import price

    snap = snapshot if snapshot is not None else default_market()
    inp = snap.instrument_inputs(table)
    marks = inp.forward.copy()
    opt = np.flatnonzero(np.asarray(table.kind) == 3)
    if opt.size:
        inverse = np.asarray(table.inverse)[opt]
        args = (inp.forward[opt], np.asarray(table.strike)[opt], inp.vol[opt], inp.time[opt],
                np.asarray(table.option_type)[opt].astype(np.float64))
        usd = np.asarray(price(*args))
        coin = np.asarray(price(*args, inverse=True))
        marks[opt] = np.where(inverse, coin, usd)
    marks.setflags(write=False)
    return marks
