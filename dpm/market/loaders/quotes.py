"""Venue quotes to a :class:`~dpm.market.snapshot.MarketSnapshot`, with staleness and consistency checks.

Every venue reader (Deribit and OKX payloads, marks tables) fills a :class:`Quotes` collection with one
record per instrument in dpm's conventions (Deribit-style names, option marks in the option's quote
currency, implied vols as decimals, USD forwards and index prices, ms timestamps) plus index records.
:func:`build_snapshot` checks them and builds the snapshot: index, forward curve through the futures
marks and the options' forwards, perpetual mark and funding, and the venue-following vol surface
(:meth:`VolSurface.from_marks` with ``method="spline"``).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpm.errors import MarketDataError
from dpm.market.snapshot import MS_PER_YEAR, ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.surface import MIN_QUOTES, VolSurface

__all__ = ["DEFAULT_FORWARD_TOLERANCE", "DEFAULT_MAX_AGE_S", "DEFAULT_MAX_SKEW_S", "Quotes", "build_snapshot"]

#: Default staleness limit: marks older than this (relative to ``now_ms``) are refused.
DEFAULT_MAX_AGE_S = 300.0
#: Default spread of timestamps allowed inside one market (a chain fetched instrument by instrument takes
#: a few minutes; the bundled 2020 chain spans 150 s).
DEFAULT_MAX_SKEW_S = 300.0
#: Relative tolerance between an expiry's option forward and its future's mark, and among index prices.
DEFAULT_FORWARD_TOLERANCE = 0.005


def iso(ms: float) -> str:
    try:
        return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    except (OverflowError, OSError, ValueError):
        return str(ms)


@dataclass
class Quotes:
    """Normalised venue records (filled by the readers, consumed by :func:`build_snapshot`)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    index: list[dict[str, Any]] = field(default_factory=list)
    listed: dict[str, tuple[str, int]] = field(default_factory=dict)   # instrument -> (source, expiry_ms)

    def add(self, *, name: str, source: str, underlying: str, kind: str, timestamp_ms: Any,
            expiry_ms: int = 0, strike: float = math.nan, option_type: int = 0, inverse: bool = True,
            mark_price: Any = math.nan, mark_iv: Any = math.nan, bid_iv: Any = math.nan,
            ask_iv: Any = math.nan, bid_price: Any = math.nan, ask_price: Any = math.nan,
            forward: Any = math.nan, index_price: Any = math.nan, funding_rate: Any = math.nan) -> None:
        self.rows.append(dict(name=name, source=source, underlying=underlying, kind=kind,
                              timestamp_ms=timestamp_ms, expiry_ms=expiry_ms, strike=strike,
                              option_type=option_type, inverse=inverse, mark_price=mark_price, mark_iv=mark_iv,
                              bid_iv=bid_iv, ask_iv=ask_iv, bid_price=bid_price, ask_price=ask_price,
                              forward=forward, index_price=index_price, funding_rate=funding_rate))

    def add_index(self, *, underlying: str, price: Any, timestamp_ms: Any, source: str, name: str) -> None:
        self.index.append(dict(underlying=underlying, price=price, timestamp_ms=timestamp_ms, source=source,
                               name=name))

    def extend(self, other: Quotes) -> None:
        self.rows.extend(other.rows)
        self.index.extend(other.index)
        self.listed.update(other.listed)


def number(value: Any, *, source: str, name: str, fieldname: str, allow_missing: bool = True) -> float:
    """A float from a JSON/CSV value; ``None``/``""`` is NaN when allowed; anything else unreadable raises."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN", "None", "null")):
        if allow_missing:
            return math.nan
        raise MarketDataError(f"{source}: instrument {name!r}: field {fieldname!r} is missing")
    if isinstance(value, bool):
        raise MarketDataError(f"{source}: instrument {name!r}: field {fieldname!r} is {value!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MarketDataError(f"{source}: instrument {name!r}: field {fieldname!r} is {value!r}, not a number") from None


def _where(r: dict[str, Any]) -> str:
    return f"{r['source']}: instrument {r['name']!r}"


def _check_values(rows: list[dict[str, Any]]) -> None:
    """Non-finite or negative numbers name file, instrument, field and value."""
    for r in rows:
        ts = r["timestamp_ms"]
        if not (isinstance(ts, (int, np.integer)) or (isinstance(ts, float) and math.isfinite(ts))) or ts <= 0:
            raise MarketDataError(f"{_where(r)}: field 'timestamp' is {ts!r}, expected ms since the epoch > 0")
        for f in ("mark_price", "mark_iv", "bid_iv", "ask_iv", "bid_price", "ask_price", "forward", "index_price"):
            v = r[f]
            if isinstance(v, float) and math.isnan(v):
                continue
            if not math.isfinite(v) or v < 0:
                raise MarketDataError(f"{_where(r)}: field {f!r} is {v!r}, expected a finite value >= 0")
        if math.isfinite(r["funding_rate"]) is False and not math.isnan(r["funding_rate"]):
            raise MarketDataError(f"{_where(r)}: field 'funding_rate' is {r['funding_rate']!r}")
        if r["kind"] in ("future", "perpetual") and not r["mark_price"] > 0:
            raise MarketDataError(f"{_where(r)}: field 'mark_price' is {r['mark_price']!r}, a future's mark must be > 0")
        if r["kind"] == "option":
            if not r["mark_iv"] > 0:
                raise MarketDataError(f"{_where(r)}: field 'mark_iv' is {r['mark_iv']!r}, expected > 0")
            if not r["forward"] > 0:
                raise MarketDataError(f"{_where(r)}: field 'underlying_price' (forward) is {r['forward']!r}, "
                                      "expected > 0")
            b, a = r["bid_iv"], r["ask_iv"]
            if b > 0 and a > 0 and b > a:
                raise MarketDataError(f"{_where(r)}: crossed book: bid iv {b!r} > ask iv {a!r}")


def build_snapshot(
    quotes: Quotes,
    *,
    now_ms: int | None,
    max_age_s: float | None = DEFAULT_MAX_AGE_S,
    max_skew_s: float | None = DEFAULT_MAX_SKEW_S,
    forward_tolerance: float = DEFAULT_FORWARD_TOLERANCE,
) -> MarketSnapshot:
    """Check the records and build a snapshot (see the module docstring and ``docs/market-data.md``).

    The snapshot's time is the latest record's timestamp. Raises :class:`MarketDataError` naming file,
    instrument, field and value for: non-finite or negative values; a timestamp older than ``max_age_s``
    before ``now_ms`` (or more than ``max_skew_s`` after it); records more than ``max_skew_s`` apart;
    two index prices, or an expiry's option forwards, or an option forward and its future's mark, that
    differ by more than ``forward_tolerance`` (relative); an option expired at the snapshot time; an
    expiry listed in an instruments payload without marks; an expiry with fewer than
    :data:`~dpm.market.surface.MIN_QUOTES` strikes; an underlying with options but no index price.
    """
    rows = quotes.rows
    if not rows:
        raise MarketDataError("no market records found (no options, futures or perpetuals in the input)")
    _check_values(rows)
    ts_all = np.array([float(r["timestamp_ms"]) for r in rows] + [float(x["timestamp_ms"]) for x in quotes.index
                                                                    if x["timestamp_ms"] is not None])
    recs = rows + [x for x in quotes.index if x["timestamp_ms"] is not None]
    snap_ts = int(ts_all.max())
    if now_ms is not None and max_age_s is not None:
        age = (now_ms - ts_all) / 1000.0
        i = int(np.argmax(age))
        if age[i] > max_age_s:
            r = recs[i]
            raise MarketDataError(
                f"{r['source']}: instrument {r['name']!r}: stale mark: timestamp {iso(ts_all[i])} is {age[i]:.0f} s "
                f"before now ({iso(now_ms)}), more than max_age_s={max_age_s:g}")
        j = int(np.argmin(age))
        if max_skew_s is not None and -age[j] > max_skew_s:
            r = recs[j]
            raise MarketDataError(
                f"{r['source']}: instrument {r['name']!r}: timestamp {iso(ts_all[j])} is {-age[j]:.0f} s after now "
                f"({iso(now_ms)}); check the clock or now_ms")
    if max_skew_s is not None:
        lo, hi = int(np.argmin(ts_all)), int(np.argmax(ts_all))
        if (ts_all[hi] - ts_all[lo]) / 1000.0 > max_skew_s:
            raise MarketDataError(
                f"marks of different instants: {recs[lo]['source']}: {recs[lo]['name']!r} at {iso(ts_all[lo])} and "
                f"{recs[hi]['source']}: {recs[hi]['name']!r} at {iso(ts_all[hi])} are "
                f"{(ts_all[hi] - ts_all[lo]) / 1000.0:.0f} s apart (max_skew_s={max_skew_s:g})")

    underlyings = sorted({r["underlying"] for r in rows})
    markets = {}
    for und in underlyings:
        markets[und] = _underlying_market(und, [r for r in rows if r["underlying"] == und],
                                          [x for x in quotes.index if x["underlying"] == und],
                                          {n: v for n, v in quotes.listed.items() if n.split("-")[0].split("_")[0] == und},
                                          snap_ts, forward_tolerance)
    return MarketSnapshot(snap_ts, markets)


def _relative_gap(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def _underlying_market(und: str, rows: list[dict[str, Any]], index_recs: list[dict[str, Any]],
                       listed: dict[str, tuple[str, int]], ts: int, tol: float) -> UnderlyingMarket:
    # ---- index
    cand = [(float(x["price"]), x) for x in index_recs if x["price"] is not None]
    for p, x in cand:
        if not (math.isfinite(p) and p > 0):
            raise MarketDataError(f"{x['source']}: {x['name']!r}: field 'index_price' is {p!r}, expected > 0")
    if not cand:
        cand = [(r["index_price"], r) for r in rows if r["index_price"] > 0]
    if not cand:
        raise MarketDataError(
            f"underlying {und}: no index price in the input (add the venue's index payload: Deribit "
            "public/get_index_price or public/ticker, OKX market/index-tickers)")
    prices = np.array([p for p, _ in cand])
    S = float(np.median(prices))
    i = int(np.argmax(np.abs(prices / S - 1.0)))
    if abs(prices[i] / S - 1.0) > tol:
        x = cand[i][1]
        raise MarketDataError(
            f"{x['source']}: {x['name']!r}: index price {prices[i]!r} differs from the median index {S!r} by "
            f"{abs(prices[i] / S - 1.0):.2%} (> forward_tolerance {tol:.2%}): marks of different instants?")
    # ---- futures, perpetual
    futures = [r for r in rows if r["kind"] == "future"]
    perps = [r for r in rows if r["kind"] == "perpetual"]
    options = [r for r in rows if r["kind"] == "option"]
    for r in futures + options:
        if r["expiry_ms"] <= ts:
            raise MarketDataError(f"{_where(r)}: expired: expiry {iso(r['expiry_ms'])} is not after the market's "
                                  f"time {iso(ts)}")
    fut_by_exp: dict[int, dict[str, Any]] = {}
    for r in futures:
        # several futures of one expiry (inverse and linear) must agree
        prev = fut_by_exp.get(r["expiry_ms"])
        if prev is not None and _relative_gap(r["mark_price"], prev["mark_price"]) > tol:
            raise MarketDataError(f"{_where(r)}: futures mark {r['mark_price']!r} disagrees with {prev['name']!r} "
                                  f"{prev['mark_price']!r} of the same expiry by more than {tol:.2%}")
        fut_by_exp.setdefault(r["expiry_ms"], r)
    perp_price, funding = None, 0.0
    if perps:
        inv = [r for r in perps if r["inverse"]] or perps
        perp_price = float(np.median([r["mark_price"] for r in inv]))
        fr = [r["funding_rate"] for r in inv if math.isfinite(r["funding_rate"])]
        funding = float(fr[0]) if fr else 0.0
    # ---- options by expiry: forwards, quote counts
    by_exp: dict[int, list[dict[str, Any]]] = {}
    for r in options:
        by_exp.setdefault(r["expiry_ms"], []).append(r)
    for name, (src, exp) in sorted(listed.items()):
        if exp > ts and exp not in by_exp and "-" in name and name.count("-") == 3:
            raise MarketDataError(
                f"{src}: expiry {name.split('-')[1]} ({name!r} and others) is listed but has no option marks: "
                "missing expiry in the marks payload")
    fwd_T, fwd_F, fwd_lab = [], [], []
    for exp, rs in sorted(by_exp.items()):
        lab = rs[0]["name"].split("-")[1]
        n_strikes = len({r["strike"] for r in rs})
        if n_strikes < MIN_QUOTES:
            raise MarketDataError(
                f"{rs[0]['source']}: expiry {lab} of {und} has {n_strikes} strike(s) with marks, at least "
                f"{MIN_QUOTES} are needed to fit a smile (instruments {sorted(r['name'] for r in rs)[:5]})")
        F = np.array([r["forward"] for r in rs])
        Fm = float(np.median(F))
        j = int(np.argmax(np.abs(F / Fm - 1.0)))
        if abs(F[j] / Fm - 1.0) > tol:
            raise MarketDataError(
                f"{_where(rs[j])}: field 'underlying_price' {F[j]!r} differs from the expiry's median forward "
                f"{Fm!r} by {abs(F[j] / Fm - 1.0):.2%} (> forward_tolerance {tol:.2%})")
        fut = fut_by_exp.get(exp)
        if fut is not None and _relative_gap(Fm, fut["mark_price"]) > tol:
            raise MarketDataError(
                f"{fut['source']}: forward of expiry {lab} from the options ({Fm!r}, e.g. {rs[0]['name']!r}) and "
                f"the mark of future {fut['name']!r} ({fut['mark_price']!r}) differ by "
                f"{_relative_gap(Fm, fut['mark_price']):.2%} (> forward_tolerance {tol:.2%})")
        fwd_T.append((exp - ts) / MS_PER_YEAR)
        fwd_F.append(fut["mark_price"] if fut is not None else Fm)
        fwd_lab.append(lab)
    for exp, fut in sorted(fut_by_exp.items()):
        if exp not in by_exp:
            fwd_T.append((exp - ts) / MS_PER_YEAR)
            fwd_F.append(fut["mark_price"])
            fwd_lab.append(fut["name"])
    if fwd_T:
        order = np.argsort(fwd_T)
        curve = ForwardCurve.from_futures(S, np.array(fwd_T)[order], np.array(fwd_F)[order],
                                          labels=[fwd_lab[i] for i in order])
    else:
        curve = ForwardCurve.from_rate(S, 0.0)
    surface = None
    if options:
        K = np.array([r["strike"] for r in options])
        T = np.array([(r["expiry_ms"] - ts) / MS_PER_YEAR for r in options])
        Fq = np.array([r["forward"] for r in options])
        iv = np.array([r["mark_iv"] for r in options])
        bid = np.array([r["bid_iv"] for r in options])
        ask = np.array([r["ask_iv"] for r in options])
        labels = [r["name"].split("-")[1] for r in options]
        try:
            surface = VolSurface.from_marks(K, T, Fq, iv, bid_ivs=bid, ask_ivs=ask, labels=labels, method="spline")
        except MarketDataError as exc:
            raise MarketDataError(f"underlying {und} ({options[0]['source']}): {exc}") from None
    return UnderlyingMarket(S, curve, surface, perpetual_price=perp_price, funding_rate=funding)


def bid_ask_ivs_from_prices(q: Quotes) -> None:
    """Fill missing bid/ask implied vols of options from their bid/ask prices (Black-76 on the record's
    forward; inverse options' prices are in coin). Prices outside the no-arbitrage range stay NaN."""
    from dpm.pricing.black import implied_vol

    opts = [r for r in q.rows if r["kind"] == "option" and r["forward"] > 0 and r["expiry_ms"] > 0]
    if not opts:
        return
    ts = max(float(r["timestamp_ms"]) for r in q.rows)
    for side in ("bid", "ask"):
        todo = [r for r in opts if not r[f"{side}_iv"] > 0 and r[f"{side}_price"] > 0]
        for inverse in (True, False):
            grp = [r for r in todo if bool(r["inverse"]) == inverse]
            if not grp:
                continue
            T = np.array([max((r["expiry_ms"] - ts) / MS_PER_YEAR, 1e-9) for r in grp])
            vol = implied_vol(np.array([r[f"{side}_price"] for r in grp]), np.array([r["forward"] for r in grp]),
                              np.array([r["strike"] for r in grp]), T,
                              np.array([float(r["option_type"]) for r in grp]), inverse=inverse)
            for r, v in zip(grp, np.asarray(vol)):
                r[f"{side}_iv"] = float(v) if np.isfinite(v) and v > 0 else math.nan


def fill_mark_ivs(q: Quotes) -> None:
    """Imply missing option mark vols from mark prices (Black-76 on the record's forward; coin prices for
    inverse options). A mark of zero or at intrinsic value carries no vol information: the record is left
    out of the smile fit. A mark outside the no-arbitrage range raises :class:`MarketDataError`."""
    from dpm.pricing.black import implied_vol

    todo = [r for r in q.rows if r["kind"] == "option" and math.isnan(r["mark_iv"])]
    if not todo:
        return
    drop = [r for r in todo if r["mark_price"] == 0]
    todo = [r for r in todo if r["mark_price"] > 0 and r["forward"] > 0 and r["expiry_ms"] > 0]
    ts = max(float(r["timestamp_ms"]) for r in q.rows)
    for inverse in (True, False):
        grp = [r for r in todo if bool(r["inverse"]) == inverse]
        if not grp:
            continue
        T = np.array([max((r["expiry_ms"] - ts) / MS_PER_YEAR, 1e-9) for r in grp])
        vol, flags = implied_vol(np.array([r["mark_price"] for r in grp]), np.array([r["forward"] for r in grp]),
                                 np.array([r["strike"] for r in grp]), T,
                                 np.array([float(r["option_type"]) for r in grp]), inverse=inverse,
                                 return_flags=True)
        for r, v, fl in zip(grp, np.asarray(vol), np.asarray(flags)):
            if fl in (1, 3):
                drop.append(r)
            elif np.isfinite(v) and v > 0:
                r["mark_iv"] = float(v)
            else:
                raise MarketDataError(
                    f"{_where(r)}: field 'mark_price' {r['mark_price']!r} has no implied vol on the forward "
                    f"{r['forward']!r} (outside the no-arbitrage range of {'coin' if inverse else 'USD'} prices)")
    ids = {id(r) for r in drop}
    q.rows[:] = [r for r in q.rows if id(r) not in ids]
