"""Immutable market snapshots: index prices, forward curves, vol surfaces, perpetual marks.

A :class:`MarketSnapshot` is a frozen value: every numpy array inside it is read-only, and an update
(:meth:`MarketSnapshot.with_updates`, :meth:`MarketSnapshot.with_underlying`) builds a *new* snapshot that
shares the unchanged parts with the old one. Publishing a market update to other threads is therefore one
reference assignment: a reader sees either the old snapshot or the new one, never a mixture.

Forward curves interpolate the annualised basis ``y(T) = ln(F(T) / S) / T`` linearly in ``T`` between
futures expiries and hold it flat beyond the first and last one, so ``F(T) = S * exp(y(T) * T)`` and
``F(0) = S``.
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from dpm._util.memo import WeakMemo
from dpm._util.validation import as_float_array, first_bad_index
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError
from dpm.market.surface import VolSurface

__all__ = [
    "MS_PER_YEAR",
    "ForwardCurve",
    "InstrumentInputs",
    "MarketSnapshot",
    "UnderlyingMarket",
    "year_fraction",
]

#: Milliseconds in an ACT/365 year.
MS_PER_YEAR = 365.0 * 86_400_000.0

# Kind codes of dpm.market.Kind (kept as ints here so the market layer does not depend on the table
# module at import time; the contract fixes them).
_SPOT, _FUTURE, _PERPETUAL, _OPTION = 0, 1, 2, 3


def year_fraction(expiry_ms: Any, now_ms: int) -> np.ndarray:
    """ACT/365 year fraction ``(expiry_ms - now_ms) / (365 * 86400 * 1000)``."""
    e = np.asarray(expiry_ms, dtype=np.int64)
    return (e - np.int64(now_ms)).astype(np.float64) / MS_PER_YEAR


def _iso(ms: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _readonly(a: Any) -> np.ndarray:
    """A read-only float64 copy: never a view of the caller's array, which the caller could make
    writeable again and change under the snapshot."""
    arr = np.array(a, dtype=np.float64, copy=True)
    arr.setflags(write=False)
    return arr


def _positive_scalar(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InvalidInputError(f"{name}: must be finite and > 0, got {value!r}")
    return v


def _finite_scalar(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidInputError(f"{name}: must be finite, got {value!r}")
    return v


# --------------------------------------------------------------------------- forward curve
@dataclass(frozen=True, eq=False)
class ForwardCurve:
    """Forward prices ``F(T) = S * exp(y(T) * T)`` from an annualised basis ``y`` known at a few times.

    ``y`` is interpolated linearly in ``T`` between the nodes and held flat before the first and after the
    last node. Build with :meth:`from_futures` (futures marks) or :meth:`from_rate` (one constant basis).

    Attributes
    ----------
    index_price : float
        Spot index ``S`` (``F(0) = S``).
    times : ndarray
        Node times in years (> 0, increasing, read-only).
    basis : ndarray
        Annualised basis ``ln(F/S)/T`` at the nodes (read-only).
    """

    index_price: float
    times: np.ndarray
    basis: np.ndarray

    def __post_init__(self) -> None:
        S = _positive_scalar(self.index_price, "index_price")
        t = as_float_array(self.times, "times")
        y = as_float_array(self.basis, "basis")
        t = t if t.ndim == 1 else t.ravel()
        y = y if y.ndim == 1 else y.ravel()
        if t.size == 0 or t.size != y.size:
            raise InvalidInputError(f"times and basis need the same length >= 1, got {t.size} and {y.size}")
        bad = ~(np.isfinite(t) & (t > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"times: must be finite and > 0, index {i} is {float(t[i])!r}")
        if np.any(np.diff(t) <= 0):
            i = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
            raise InvalidInputError(f"times: must be strictly increasing, index {i} is {float(t[i])!r}")
        if not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise InvalidInputError(f"basis: must be finite, index {i} is {float(y[i])!r}")
        object.__setattr__(self, "index_price", S)
        object.__setattr__(self, "times", _readonly(t))
        object.__setattr__(self, "basis", _readonly(y))

    @classmethod
    def from_futures(cls, index_price: float, times: Any, prices: Any, *, labels: Any = None) -> ForwardCurve:
        """Curve through futures marks ``prices`` at ``times`` (years).

        Equal times must carry equal prices (within 1e-9 relative); they are merged.

        Raises
        ------
        MarketDataError
            A non-positive or non-finite price or time (named by ``labels`` when given), or two marks for
            one time that disagree.
        """
        S = _positive_scalar(index_price, "index_price")
        t = as_float_array(times, "times").ravel()
        F = as_float_array(prices, "prices").ravel()
        if t.size != F.size:
            raise InvalidInputError(f"times has {t.size} values but prices has {F.size}")
        if t.size == 0:
            raise MarketDataError("from_futures: no futures marks; use ForwardCurve.from_rate for a flat basis")

        def where(i: int) -> str:
            return f"{labels[i]!r}" if labels is not None else f"index {i}"

        for arr, name in ((t, "times"), (F, "prices")):
            bad = ~(np.isfinite(arr) & (arr > 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise MarketDataError(f"{name}: must be finite and > 0, {where(i)} is {float(arr[i])!r}")
        order = np.argsort(t, kind="stable")
        t, F = t[order], F[order]
        keep = np.ones(t.size, dtype=bool)
        same = np.flatnonzero(np.diff(t) == 0)
        for i in same:
            if abs(F[i + 1] - F[i]) > 1e-9 * F[i]:
                raise MarketDataError(
                    f"prices: two futures marks for T={float(t[i])!r} disagree: {float(F[i])!r} and {float(F[i + 1])!r}"
                )
            keep[i + 1] = False
        t, F = t[keep], F[keep]
        with np.errstate(over="ignore", divide="ignore", under="ignore"):
            basis = np.log(F / S) / t
        bad = ~np.isfinite(basis)
        if bad.any():  # F / S overflows or underflows: prices on absurd scales
            i = int(np.flatnonzero(bad)[0])
            raise MarketDataError(
                f"prices: the basis ln(F/S)/T of the mark {float(F[i])!r} at T={float(t[i])!r} with index "
                f"{S!r} is not finite"
            )
        return cls(S, t, basis)

    @classmethod
    def from_rate(cls, index_price: float, rate: float = 0.0) -> ForwardCurve:
        """Flat annualised basis ``rate``: ``F(T) = S * exp(rate * T)``."""
        return cls(_positive_scalar(index_price, "index_price"), [1.0], [_finite_scalar(rate, "rate")])

    def basis_at(self, T: Any) -> np.ndarray:
        """Annualised basis ``y(T)`` (linear between nodes, flat beyond)."""
        T = self._check_T(T)
        return np.asarray(np.interp(T, self.times, self.basis), dtype=np.float64)

    def forward(self, T: Any) -> np.ndarray:
        """Forward price at ``T`` years (vectorised; ``T = 0`` gives the index).

        Raises
        ------
        MarketDataError
            If ``S * exp(y(T) * T)`` overflows to infinity or underflows to 0 (an absurd basis or
            time), naming the time and the basis.
        """
        T = self._check_T(T)
        F = self._forward_unchecked(T)
        bad = ~((F > 0) & np.isfinite(F))
        if bad.any():
            i = first_bad_index(bad)
            raise MarketDataError(
                f"forward: S * exp(y * T) is {float(F[i])!r} at T={float(T[i])!r} (index {self.index_price!r}, "
                f"basis {float(self.basis_at(T[i]))!r}); not a finite positive price"
            )
        return F

    def _forward_unchecked(self, T: np.ndarray) -> np.ndarray:
        y = np.asarray(np.interp(T, self.times, self.basis), dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            return self.index_price * np.exp(y * T)

    def __reduce__(self):
        return (ForwardCurve, (self.index_price, self.times, self.basis))

    def with_index(self, index_price: float) -> ForwardCurve:
        """Same basis term structure, new spot (forwards move proportionally).

        The new curve shares the (read-only, dpm-made) ``times`` and ``basis`` arrays of this one.
        """
        new = object.__new__(ForwardCurve)
        object.__setattr__(new, "index_price", _positive_scalar(index_price, "index_price"))
        object.__setattr__(new, "times", self.times)
        object.__setattr__(new, "basis", self.basis)
        return new

    @staticmethod
    def _check_T(T: Any) -> np.ndarray:
        T = as_float_array(T, "T")
        ok = np.isfinite(T) & (T >= 0)
        if not ok.all():
            raise InvalidInputError(f"T: time must be finite and >= 0, got {float(T[~ok].ravel()[0])!r}")
        return T


# --------------------------------------------------------------------------- one underlying
@dataclass(frozen=True, eq=False)
class UnderlyingMarket:
    """Market data of one underlying (immutable).

    Attributes
    ----------
    index_price : float
        Spot index (USD).
    forward_curve : ForwardCurve
        Forward prices by time; its ``index_price`` must equal ``index_price``.
    vol_surface : VolSurface or None
        Implied vols; None for an underlying without options.
    perpetual_price : float
        Mark price of the perpetual (defaults to the index).
    funding_rate : float
        Current funding rate of the perpetual per funding period (decimal, e.g. 0.0001 per 8 hours).
    """

    index_price: float
    forward_curve: ForwardCurve
    vol_surface: VolSurface | None = None
    perpetual_price: float | None = None
    funding_rate: float = 0.0

    def __post_init__(self) -> None:
        S = _positive_scalar(self.index_price, "index_price")
        if not isinstance(self.forward_curve, ForwardCurve):
            raise InvalidTypeError(f"forward_curve: expected a ForwardCurve, got {type(self.forward_curve).__name__}")
        if abs(self.forward_curve.index_price - S) > 1e-12 * S:
            raise MarketDataError(
                f"forward_curve.index_price {self.forward_curve.index_price!r} differs from index_price {S!r}; "
                "rebuild the curve (ForwardCurve.with_index) when the index moves"
            )
        if self.vol_surface is not None and not isinstance(self.vol_surface, VolSurface):
            raise InvalidTypeError(f"vol_surface: expected a VolSurface or None, got {type(self.vol_surface).__name__}")
        perp = S if self.perpetual_price is None else _positive_scalar(self.perpetual_price, "perpetual_price")
        object.__setattr__(self, "index_price", S)
        object.__setattr__(self, "perpetual_price", perp)
        object.__setattr__(self, "funding_rate", _finite_scalar(self.funding_rate, "funding_rate"))

    def with_updates(self, **changes: Any) -> UnderlyingMarket:
        """A new market with ``changes`` applied. Changing ``index_price`` alone moves the forward curve with
        it (same basis); the perpetual mark is kept unless given."""
        _check_field_names(type(self), changes)
        if "index_price" in changes and "forward_curve" not in changes:
            changes["forward_curve"] = self.forward_curve.with_index(changes["index_price"])
        return replace(self, **changes)

    def __reduce__(self):
        return (UnderlyingMarket, (self.index_price, self.forward_curve, self.vol_surface, self.perpetual_price,
                                   self.funding_rate))

    def forward(self, T: Any) -> np.ndarray:
        """Shortcut for ``forward_curve.forward(T)``."""
        return self.forward_curve.forward(T)


def _check_field_names(cls: type, changes: Mapping[str, Any]) -> None:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise InvalidInputError(f"unknown field(s) {unknown} for {cls.__name__}; fields are {sorted(names)}")


# --------------------------------------------------------------------------- per-instrument inputs
# Per (instrument table, underlying market, time): each underlying's forwards, times and surface vols.
# A market tick moves one underlying; the others keep their UnderlyingMarket object and the time,
# so their inputs are reused (half of a two-underlying tick's inputs). Weak references: an entry
# never outlives its table or market, and never serves another.
_INPUTS_CACHE = WeakMemo(max_entries=256)


@dataclass(frozen=True, eq=False)
class InstrumentInputs:
    """Per-instrument market inputs of one snapshot (read-only float64 arrays of length ``M``).

    Attributes
    ----------
    forward : ndarray
        Forward of the instrument's expiry (futures and options), the perpetual mark (perpetuals), the
        index (spot).
    time : ndarray
        Years to expiry, ACT/365 (0 for perpetuals and spot).
    vol : ndarray
        Surface implied vol at the option's strike and expiry (NaN for non-options).
    index : ndarray
        Index price of the instrument's underlying.
    timestamp_ms : int
        The snapshot's time.
    """

    forward: np.ndarray
    time: np.ndarray
    vol: np.ndarray
    index: np.ndarray
    timestamp_ms: int

    def __post_init__(self) -> None:
        for name in ("forward", "time", "vol", "index"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))

    def __len__(self) -> int:
        return self.forward.size

    def __reduce__(self):
        return (InstrumentInputs, (self.forward, self.time, self.vol, self.index, self.timestamp_ms))


# --------------------------------------------------------------------------- snapshot
@dataclass(frozen=True, eq=False)
class MarketSnapshot:
    """Immutable market state at ``timestamp_ms`` (ms since the epoch, UTC).

    Attributes
    ----------
    timestamp_ms : int
        Valuation time.
    underlyings : Mapping[str, UnderlyingMarket]
        Read-only mapping from underlying code (``"BTC"``) to its market.
    usd_rates : Mapping[str, float]
        USD per unit of settlement currencies that are not underlyings (``{"USDT": 0.99954}``):
        linear contracts settled in them, and collateral held in them, are valued at these rates.
        A USD-like code (USD, USDC, USDT) missing here counts at 1.
    """

    timestamp_ms: int
    underlyings: Mapping[str, UnderlyingMarket] = field(default_factory=dict)
    usd_rates: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ts = self.timestamp_ms
        if isinstance(ts, (bool, np.bool_)) or not isinstance(ts, (int, np.integer)):
            raise InvalidTypeError(f"timestamp_ms: expected int milliseconds, got {type(ts).__name__} {ts!r}")
        if ts < 0:
            raise InvalidInputError(f"timestamp_ms: must be >= 0, got {ts!r}")
        if not isinstance(self.underlyings, Mapping):
            raise InvalidTypeError(f"underlyings: expected a mapping name -> UnderlyingMarket, got "
                                   f"{type(self.underlyings).__name__}")
        und = {}
        for name, um in self.underlyings.items():
            if not isinstance(name, str) or not name:
                raise InvalidTypeError(f"underlyings: keys must be non-empty str, got {name!r}")
            if not isinstance(um, UnderlyingMarket):
                raise InvalidTypeError(f"underlyings[{name!r}]: expected an UnderlyingMarket, got {type(um).__name__}")
            und[name] = um
        if not isinstance(self.usd_rates, Mapping):
            raise InvalidTypeError(f"usd_rates: expected a mapping currency -> USD rate, got {type(self.usd_rates).__name__}")
        rates = {}
        for ccy, r in self.usd_rates.items():
            if not isinstance(ccy, str) or not ccy:
                raise InvalidTypeError(f"usd_rates: keys must be non-empty str, got {ccy!r}")
            if ccy in und:
                raise InvalidInputError(f"usd_rates[{ccy!r}]: {ccy} is an underlying; its index is its USD price")
            rates[ccy] = _positive_scalar(r, f"usd_rates[{ccy!r}]")
        object.__setattr__(self, "timestamp_ms", int(ts))
        object.__setattr__(self, "underlyings", MappingProxyType(und))
        object.__setattr__(self, "usd_rates", MappingProxyType(rates))

    def usd_rate(self, currency: str) -> float | None:
        """USD per unit of ``currency``: its rate, its underlying's index, 1 for a USD-like code
        without a rate, None when unknown."""
        if currency in self.usd_rates:
            return float(self.usd_rates[currency])
        if currency in self.underlyings:
            return float(self.underlyings[currency].index_price)
        if currency in ("USD", "USDC", "USDT"):
            return 1.0
        return None

    def __reduce__(self):
        # a MappingProxyType cannot be pickled: rebuild from a plain dict
        return (MarketSnapshot, (self.timestamp_ms, dict(self.underlyings), dict(self.usd_rates)))

    def __getitem__(self, name: str) -> UnderlyingMarket:
        try:
            return self.underlyings[name]
        except KeyError:
            raise MarketDataError(
                f"underlying {name!r} is not in the market snapshot (has {sorted(self.underlyings)})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.underlyings

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: S={v.index_price:g}" for k, v in self.underlyings.items())
        return f"MarketSnapshot({_iso(self.timestamp_ms)}; {parts})"

    def with_updates(self, **changes: Any) -> MarketSnapshot:
        """A new snapshot with ``timestamp_ms`` and/or ``underlyings`` replaced (the old one is untouched;
        every unchanged object is shared)."""
        _check_field_names(type(self), changes)
        return replace(self, **changes)

    def with_underlying(self, name: str, market: UnderlyingMarket) -> MarketSnapshot:
        """A new snapshot with one underlying added or replaced; the others are shared by reference."""
        und = dict(self.underlyings)
        und[name] = market
        return MarketSnapshot(self.timestamp_ms, und, dict(self.usd_rates))

    def year_fraction(self, expiry_ms: Any) -> np.ndarray:
        """ACT/365 years from the snapshot's time to ``expiry_ms``."""
        return year_fraction(expiry_ms, self.timestamp_ms)

    def _underlying_inputs(self, table: Any, uname: str, um: "UnderlyingMarket", sel: np.ndarray, kind: np.ndarray,
                           expiry: np.ndarray, strike: np.ndarray, now: np.int64) -> tuple[np.ndarray, ...]:
        """Forward, time and vol of the instruments ``sel`` (all on ``uname``), validated."""
        names = table.name
        n = sel.size
        forward = np.empty(n)
        time = np.zeros(n)
        vol = np.full(n, np.nan)
        k = kind[sel]
        dated = (k == _FUTURE) | (k == _OPTION)
        exp = expiry[sel]
        expired = dated & (exp <= now)
        if expired.any():
            i = sel[int(np.flatnonzero(expired)[0])]
            raise MarketDataError(
                f"instrument {names[i]!r} has expired: expiry {_iso(int(expiry[i]))} (expiry_ms={int(expiry[i])}) "
                f"is not after the snapshot time {_iso(self.timestamp_ms)} (timestamp_ms={self.timestamp_ms})"
            )
        d = np.flatnonzero(dated)
        T = (exp[d] - now).astype(np.float64) / MS_PER_YEAR
        time[d] = T
        F = um.forward_curve._forward_unchecked(T)
        bad = ~((F > 0) & np.isfinite(F))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise MarketDataError(
                f"instrument {names[sel[d[j]]]!r}: forward is {float(F[j])!r} (index {um.index_price!r} * "
                f"exp(basis {float(um.forward_curve.basis_at(T[j]))!r} * T {float(T[j])!r})); "
                f"the forward curve of {uname!r} gives no finite positive price at its expiry"
            )
        forward[d] = F
        forward[k == _PERPETUAL] = um.perpetual_price
        forward[k == _SPOT] = um.index_price
        opt = np.flatnonzero(k == _OPTION)
        if opt.size:
            if um.vol_surface is None:
                raise MarketDataError(
                    f"instrument {names[sel[opt[0]]]!r}: underlying {uname!r} has no vol surface in the snapshot"
                )
            vol[opt] = um.vol_surface.implied_vol(strike[sel[opt]], time[opt], forward[opt])
            bad = ~((vol[opt] > 0) & np.isfinite(vol[opt]))
            if bad.any():
                j = opt[int(np.flatnonzero(bad)[0])]
                raise MarketDataError(
                    f"instrument {names[sel[j]]!r}: implied vol is {float(vol[j])!r} (strike "
                    f"{float(strike[sel[j]])!r}, T {float(time[j])!r}, forward {float(forward[j])!r}); the vol "
                    f"surface of {uname!r} gives no finite positive vol there"
                )
        unknown = ~np.isin(k, (_SPOT, _FUTURE, _PERPETUAL, _OPTION))
        if unknown.any():
            i = sel[int(np.flatnonzero(unknown)[0])]
            raise InvalidInputError(f"kind: unknown code {int(kind[i])} for instrument {names[i]!r}")
        for x in (forward, time, vol):
            x.setflags(write=False)
        return forward, time, vol

    def instrument_inputs(self, table: Any) -> InstrumentInputs:
        """Forward, time, vol and index of every instrument of ``table`` (an ``InstrumentTable``).

        Raises
        ------
        MarketDataError
            Naming the first instrument whose underlying is not in the snapshot, that has expired
            (``expiry_ms <= timestamp_ms``), or that is an option on an underlying without a vol surface.
        """
        M = len(table)
        names = table.name
        kind = np.asarray(table.kind)
        und_code = np.asarray(table.underlying)
        expiry = np.asarray(table.expiry_ms, dtype=np.int64)
        strike = np.asarray(table.strike, dtype=np.float64)
        forward = np.empty(M)
        time = np.zeros(M)
        vol = np.full(M, np.nan)
        index = np.empty(M)
        now = np.int64(self.timestamp_ms)
        for code, uname in enumerate(table.underlyings):
            sel = np.flatnonzero(und_code == code)
            if sel.size == 0:
                continue
            um = self.underlyings.get(uname)
            if um is None:
                raise MarketDataError(
                    f"instrument {names[sel[0]]!r}: underlying {uname!r} is not in the market snapshot "
                    f"(has {sorted(self.underlyings)})"
                )
            hit = _INPUTS_CACHE.get((table, um), (code, self.timestamp_ms))
            if hit is None:
                hit = _INPUTS_CACHE.put((table, um), (code, self.timestamp_ms),
                                        self._underlying_inputs(table, uname, um, sel, kind, expiry, strike, now))
            f_sel, t_sel, v_sel = hit
            forward[sel] = f_sel
            time[sel] = t_sel
            vol[sel] = v_sel
            index[sel] = um.index_price
        return InstrumentInputs(forward, time, vol, index, self.timestamp_ms)
