"""Scenario sets: tables of *joint* market moves, the one input of the revaluation core.

A :class:`ScenarioSet` holds, for each scenario ``s`` and underlying ``u``: a relative price move
``price_move[s, u]`` (every forward, mark and index of ``u`` moves together), a vol shock
``vol_shock[s, u]`` whose spread over expiries is the underlying's :class:`VolTermStructure`, the
weight of the scenario's P&L in margin (``weight[s, u]``) and a dampener (``dampener_usd[s, u]``,
Deribit's extended-table dampener); per scenario a name and flags (``FLAG_EXTENDED``, ...), and a
horizon (``horizon_days``) over which options age. Every generator produces one: exchange grids
(:meth:`dpm.models.risk_matrix.RiskMatrixModel.scenario_set`, aligned across underlyings),
historical and filtered historical (:mod:`dpm.models.generators.historical`), Monte Carlo
(:mod:`dpm.models.generators.montecarlo`), named and user stresses
(:mod:`dpm.models.generators.stress`). Margin, VaR/ES and stress engines revalue the same set into
the same instrument x scenario P&L matrix.

A :class:`ScenarioGrid` is an exchange's grid for *one* underlying written in vol *directions* (up,
unchanged, down) whose sizes come from the underlying's :class:`VolShock`: the margin models' own
parameters, turned into a joint :class:`ScenarioSet` by the model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError, InvalidTypeError

__all__ = [
    "FLAG_DAMPENED",
    "FLAG_EXTENDED",
    "FLAG_EXTREME",
    "FLAG_PADDING",
    "MarketScenarios",
    "ScenarioGrid",
    "ScenarioSet",
    "VOL_ABSOLUTE",
    "VOL_RELATIVE",
    "VolShock",
    "VolTermStructure",
    "price_grid",
]

#: vol-shock modes (mirrored by dpm_types.h DPM_VOL_*)
VOL_RELATIVE, VOL_ABSOLUTE = 0, 1
#: scenario flags, a bit mask per scenario (mirrored by dpm_types.h DPM_FLAG_*)
FLAG_EXTENDED, FLAG_EXTREME, FLAG_DAMPENED, FLAG_PADDING = 1, 2, 4, 8
_MODES = {"relative": VOL_RELATIVE, "absolute": VOL_ABSOLUTE}


def _finite_nonneg(obj: Any, *names: str, positive: bool = False) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise InvalidTypeError(f"{type(obj).__name__}.{name}: expected a number, got {v!r}")
        if not np.isfinite(v) or v < 0 or (positive and v == 0):
            raise InvalidInputError(
                f"{type(obj).__name__}.{name}: must be finite and {'> 0' if positive else '>= 0'}, got {v!r}")


@dataclass(frozen=True)
class VolTermStructure:
    """How a scenario's vol shock ``v`` (the shock at ``tenor_days``) moves each expiry's vol.

    ``mode="relative"``: ``vol * max(0, 1 + c v)`` with ``c = (tenor / max(DTE, floor)) ** p``,
    ``p = short_power`` up to ``tenor_days`` and ``long_power`` beyond (DTE in days); a vol-up shock
    (``v > 0``) never leaves a vol below ``min_vol_up``. ``mode="absolute"``: ``max(0, vol + v)``
    (vol points, the same for every expiry; SPAN's vol scan range).

    The defaults (powers 0) shock every expiry by the same relative amount.
    """

    mode: str = "relative"
    short_power: float = 0.0
    long_power: float = 0.0
    tenor_days: float = 30.0
    floor_days: float = 1.0
    min_vol_up: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise InvalidInputError(f"VolTermStructure.mode: expected 'relative' or 'absolute', got {self.mode!r}")
        _finite_nonneg(self, "short_power", "long_power", "min_vol_up")
        _finite_nonneg(self, "tenor_days", "floor_days", positive=True)

    @property
    def code(self) -> int:
        return _MODES[self.mode]

    def factor(self, time_years: Any) -> np.ndarray:
        """Term-structure factor ``c`` of each expiry (1 in absolute mode)."""
        t = np.asarray(time_years, dtype=np.float64)
        if self.mode == "absolute":
            return np.ones_like(t)
        dte = np.maximum(t * 365.0, self.floor_days)
        power = np.where(dte <= self.tenor_days, self.short_power, self.long_power)
        return (self.tenor_days / dte) ** power

    def shocked(self, vol: Any, time_years: Any, shock: float) -> np.ndarray:
        """Vols after a shock ``shock`` (numpy; the kernel applies the same rule per scenario)."""
        vol = np.asarray(vol, dtype=np.float64)
        if self.mode == "absolute":
            return np.maximum(vol + shock, 0.0)
        out = vol * np.maximum(1.0 + self.factor(time_years) * shock, 0.0)
        return np.maximum(out, self.min_vol_up) if shock > 0 else out


#: the same relative shock for every expiry
UNIFORM_TERM = VolTermStructure()
#: Deribit's shape, ``(30 / max(DTE, 1)) ** p`` with p = 0.30 up to 30 days and 0.13 beyond
DERIBIT_TERM = VolTermStructure(short_power=0.30, long_power=0.13)


@dataclass(frozen=True)
class VolShock:
    """Size of a margin model's vol-up / vol-down shocks and their term structure.

    ``mode="relative"`` (Deribit, Derive, Paradex)::

        sigma_up   = max(sigma * (1 + up * (tenor / max(DTE, floor)) ** p), min_vol_up)
        sigma_down = sigma * max(0, 1 - down * (tenor / max(DTE, floor)) ** p)

    with ``p = short_power`` if ``DTE <= tenor_days`` else ``long_power``; DTE in days.
    ``mode="absolute"`` (SPAN's vol scan range): ``sigma +/- up`` / ``down`` vol points, floored at 0.

    Parameters
    ----------
    up, down : float
        Shock sizes (fractions for relative mode, vol points for absolute mode).
    short_power, long_power : float
        Term-structure powers (relative mode).
    tenor_days, floor_days : float
        Reference tenor (30 days) and the floor on days to expiry.
    min_vol_up : float
        The vol-up scenario never uses a vol below this (Deribit: 0.5).
    mode : {"relative", "absolute"}
    """

    up: float = 0.5
    down: float = 0.25
    short_power: float = 0.30
    long_power: float = 0.13
    tenor_days: float = 30.0
    floor_days: float = 1.0
    min_vol_up: float = 0.0
    mode: str = "relative"

    def __post_init__(self) -> None:
        _finite_nonneg(self, "up", "down", "short_power", "long_power", "min_vol_up")
        _finite_nonneg(self, "tenor_days", "floor_days", positive=True)
        if self.mode not in _MODES:
            raise InvalidInputError(f"VolShock.mode: expected 'relative' or 'absolute', got {self.mode!r}")

    @property
    def term_structure(self) -> VolTermStructure:
        """The term structure of these shocks (their sizes are the scenarios' ``vol_shock``)."""
        return VolTermStructure(self.mode, self.short_power, self.long_power, self.tenor_days,
                                self.floor_days, self.min_vol_up)

    def size(self, direction: Any) -> np.ndarray:
        """Signed shock of vol directions (+1 -> ``up``, -1 -> ``-down``, 0 -> 0)."""
        d = np.asarray(direction)
        return np.where(d > 0, float(self.up), np.where(d < 0, -float(self.down), 0.0))

    def shocked(self, vol: np.ndarray, time_years: np.ndarray, direction: int) -> np.ndarray:
        """Vols after the shock in ``direction`` (-1, 0, +1); vectorised over instruments."""
        if direction == 0:
            return np.asarray(vol, dtype=np.float64).copy()
        return self.term_structure.shocked(vol, time_years, float(self.size(direction)))


def price_grid(price_range: float, steps_per_side: int) -> np.ndarray:
    """Evenly spaced relative moves ``-range .. +range`` with ``2*steps+1`` points (0 included)."""
    if not (np.isfinite(price_range) and price_range > 0):
        raise InvalidInputError(f"price_range: must be finite and > 0, got {price_range!r}")
    if int(steps_per_side) < 1:
        raise InvalidInputError(f"steps_per_side: must be >= 1, got {steps_per_side!r}")
    k = np.arange(-int(steps_per_side), int(steps_per_side) + 1)
    return price_range * k / int(steps_per_side)


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------------------------
# One underlying's exchange grid, in vol directions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ScenarioGrid:
    """An exchange's scenario grid for one underlying (columnar, length ``S``).

    Parameters
    ----------
    price_move : array_like
        Relative move of the underlying, > -1 (``-0.16`` = 16 % down).
    vol_dir : array_like of int
        -1 vol down, 0 unchanged, +1 vol up (sizes from the model's :class:`VolShock`).
    weight : array_like, optional
        Fraction of the scenario's P&L that counts (1 by default; SPAN's cover fraction, Deribit's
        extended-table factor, Paradex's weights).
    dampener_usd : array_like, optional
        Amount (USD) by which the scenario's P&L is shrunk toward zero (Deribit's extended dampener).
    labels : sequence of str, optional
        Names shown in margin breakdowns.
    flags : array_like of int, optional
        ``FLAG_EXTENDED`` / ``FLAG_EXTREME`` / ``FLAG_DAMPENED`` bit mask per scenario.
    """

    price_move: np.ndarray
    vol_dir: np.ndarray
    weight: np.ndarray = field(default=None)  # type: ignore[assignment]
    dampener_usd: np.ndarray = field(default=None)  # type: ignore[assignment]
    labels: tuple[str, ...] = ()
    flags: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        move = as_float_array(self.price_move, "price_move").ravel().copy()
        n = move.size
        if n == 0:
            raise InvalidInputError("price_move: a scenario grid needs at least one scenario")
        check_finite(move, "price_move")
        if (move <= -1.0).any():
            i = int(np.flatnonzero(move <= -1.0)[0])
            raise InvalidInputError(f"price_move: must be > -1 (a price cannot fall to 0), index {i} is {move[i]!r}")
        vdir = np.asarray(self.vol_dir)
        if vdir.ndim == 0:
            vdir = np.full(n, int(vdir))
        if vdir.dtype.kind not in "iuf" or vdir.size != n:
            raise InvalidInputError(f"vol_dir: expected {n} integers in {{-1, 0, 1}}")
        bad = ~np.isin(vdir, (-1, 0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"vol_dir: must be -1, 0 or 1, index {i} is {vdir[i]!r}")
        weight = np.ones(n) if self.weight is None else as_float_array(self.weight, "weight").ravel().copy()
        damp = np.zeros(n) if self.dampener_usd is None else as_float_array(self.dampener_usd, "dampener_usd").ravel().copy()
        for name, arr in (("weight", weight), ("dampener_usd", damp)):
            if arr.size != n:
                raise InvalidInputError(f"{name}: has {arr.size} entries, price_move has {n}")
            check_finite(arr, name)
            if (arr < 0).any():
                i = int(np.flatnonzero(arr < 0)[0])
                raise InvalidInputError(f"{name}: must be >= 0, index {i} is {arr[i]!r}")
        flags = np.zeros(n, dtype=np.uint8) if self.flags is None else np.asarray(self.flags)
        if flags.shape != (n,) or flags.dtype.kind not in "iu":
            raise InvalidInputError(f"flags: expected {n} integer bit masks")
        labels = tuple(self.labels) if self.labels else tuple(
            f"{m:+.1%} vol{'+' if d > 0 else '-' if d < 0 else '='}" for m, d in zip(move, vdir)
        )
        if len(labels) != n:
            raise InvalidInputError(f"labels: has {len(labels)} entries, price_move has {n}")
        for name, arr in (("price_move", move), ("vol_dir", vdir.astype(np.int8)), ("weight", weight),
                          ("dampener_usd", damp), ("flags", flags.astype(np.uint8))):
            object.__setattr__(self, name, _ro(arr))
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return self.price_move.size

    def __add__(self, other: "ScenarioGrid") -> "ScenarioGrid":
        return ScenarioGrid.concat([self, other])

    @classmethod
    def concat(cls, grids: Sequence["ScenarioGrid"]) -> "ScenarioGrid":
        """Scenarios of several grids, in order."""
        return cls(
            np.concatenate([g.price_move for g in grids]),
            np.concatenate([g.vol_dir for g in grids]),
            np.concatenate([g.weight for g in grids]),
            np.concatenate([g.dampener_usd for g in grids]),
            tuple(label for g in grids for label in g.labels),
            np.concatenate([g.flags for g in grids]),
        )

    @classmethod
    def grid(cls, moves: Any, vol_dirs: Sequence[int] = (1, 0, -1), weight: float = 1.0) -> "ScenarioGrid":
        """Every price move combined with every vol direction (moves outer, vols inner)."""
        moves = as_float_array(moves, "moves").ravel()
        m = np.repeat(moves, len(vol_dirs))
        d = np.tile(np.asarray(vol_dirs, dtype=np.int8), moves.size)
        return cls(m, d, np.full(m.size, float(weight)))

    @classmethod
    def user(cls, price_move: Any, vol_dir: Any = 0, weight: Any = None, labels: Sequence[str] = ()) -> "ScenarioGrid":
        """User-supplied scenarios (price moves and vol directions)."""
        return cls(price_move, vol_dir, weight, None, tuple(labels))


# ---------------------------------------------------------------------------------------------
# Joint scenario sets
# ---------------------------------------------------------------------------------------------

def _per_scenario_underlying(x: Any, name: str, shape: tuple[int, int], default: float,
                             labels: Sequence[str]) -> np.ndarray:
    if x is None:
        return np.full(shape, default)
    arr = as_float_array(x, name)
    if arr.ndim == 1 and arr.shape[0] == shape[0]:
        arr = np.repeat(arr[:, None], shape[1], axis=1)
    if arr.shape != shape:
        raise InvalidInputError(f"{name}: expected shape {shape} (or ({shape[0]},)), got {arr.shape}")
    arr = np.array(arr, dtype=np.float64)
    check_finite(arr, name, labels=labels)
    if (arr < 0).any():
        i, j = (int(v) for v in np.argwhere(arr < 0)[0])
        raise InvalidInputError(f"{name}: must be >= 0: scenario {labels[i]!r} has {arr[i, j]!r}")
    return arr


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """Joint market moves per scenario and underlying (read-only arrays).

    Parameters
    ----------
    price_move : array_like, shape (S, U)
        Relative move ``P1 / P0 - 1`` (> -1) of every price of the underlying.
    vol_shock : array_like, shape (S, U)
        Vol shock at the reference tenor: relative (``0.3`` = vol x 1.3) or vol points, spread over
        expiries by ``vol_terms``.
    names : sequence of str, length S
    underlyings : sequence of str, length U
    horizon_days : float
        Time that passes in every scenario (options age by it); >= 0.
    kind : str
        Generator: "grid", "historical", "filtered_historical", "monte_carlo", "stress", ...
    sources : sequence of str, length S, optional
        Documentation per scenario (e.g. data source).
    weight : array_like, shape (S, U) or (S,), optional
        Fraction of the scenario's P&L counted in margin (1 by default).
    dampener_usd : array_like, shape (S, U) or (S,), optional
        Amount (USD) by which the scenario's P&L shrinks toward zero in margin (0 by default).
    flags : array_like of int, shape (S,), optional
        ``FLAG_*`` bit mask per scenario.
    vol_terms : VolTermStructure, or one per underlying, optional
        How each underlying's vol shock spreads over expiries; None: the engine's default
        (Deribit's term structure for VaR/ES).
    scan_range : array_like, shape (U,), optional
        The standard range of an exchange grid per underlying (joint margin normalises moves by it);
        NaN for sets that are not grids.
    labels : mapping of str to tuple of str, optional
        Per-underlying scenario labels (exchange grids label each underlying's moves).
    """

    price_move: np.ndarray
    vol_shock: np.ndarray
    names: tuple[str, ...]
    underlyings: tuple[str, ...]
    horizon_days: float = 1
    kind: str = ""
    sources: tuple[str, ...] = ()
    weight: np.ndarray = field(default=None)  # type: ignore[assignment]
    dampener_usd: np.ndarray = field(default=None)  # type: ignore[assignment]
    flags: np.ndarray = field(default=None)  # type: ignore[assignment]
    vol_terms: Any = None
    scan_range: np.ndarray = field(default=None)  # type: ignore[assignment]
    labels: Mapping[str, tuple[str, ...]] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        pm = np.array(as_float_array(self.price_move, "price_move"), dtype=np.float64)
        if self.vol_shock is None:
            vs = np.zeros_like(pm)
        else:
            vs = np.array(as_float_array(self.vol_shock, "vol_shock"), dtype=np.float64)
        if pm.ndim != 2:
            raise InvalidInputError(f"price_move: expected shape (S, U), got {pm.shape}")
        if vs.shape != pm.shape:
            raise InvalidInputError(f"vol_shock: shape {vs.shape} differs from price_move {pm.shape}")
        s, u = pm.shape
        names = tuple(str(x) for x in self.names)
        unds = tuple(str(x) for x in self.underlyings)
        if len(names) != s:
            raise InvalidInputError(f"names: {len(names)} names for {s} scenarios")
        if len(unds) != u:
            raise InvalidInputError(f"underlyings: {len(unds)} names for {u} columns")
        if len(set(unds)) != u:
            raise InvalidInputError(f"underlyings: duplicate names in {unds}")
        check_finite(pm, "price_move", labels=names)
        check_finite(vs, "vol_shock", labels=names)
        for arr, nm in ((pm, "price_move"), (vs, "vol_shock")):
            bad = arr <= -1.0
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0])
                raise InvalidInputError(
                    f"{nm}: must be > -1: scenario {names[i]!r}, underlying {unds[j]!r} has {arr[i, j]!r}")
        h = self.horizon_days
        if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) or not (
                np.isfinite(h) and h >= 0):
            raise InvalidInputError(f"horizon_days: expected a finite number >= 0, got {h!r}")
        sources = tuple(str(x) for x in self.sources)
        if sources and len(sources) != s:
            raise InvalidInputError(f"sources: {len(sources)} entries for {s} scenarios")
        weight = _per_scenario_underlying(self.weight, "weight", (s, u), 1.0, names)
        damp = _per_scenario_underlying(self.dampener_usd, "dampener_usd", (s, u), 0.0, names)
        flags = np.zeros(s, dtype=np.uint8) if self.flags is None else np.asarray(self.flags)
        if flags.shape != (s,) or flags.dtype.kind not in "iu":
            raise InvalidInputError(f"flags: expected {s} integer bit masks, got shape {flags.shape}")
        terms = self.vol_terms
        if terms is not None:
            if isinstance(terms, VolTermStructure):
                terms = (terms,) * u
            terms = tuple(terms)
            if len(terms) != u or not all(isinstance(t, VolTermStructure) for t in terms):
                raise InvalidTypeError(f"vol_terms: expected a VolTermStructure or {u} of them")
        rng = np.full(u, np.nan) if self.scan_range is None else np.array(
            as_float_array(self.scan_range, "scan_range"), dtype=np.float64).ravel()
        if rng.shape != (u,) or np.any(rng[~np.isnan(rng)] <= 0) or np.isinf(rng).any():
            raise InvalidInputError(f"scan_range: expected {u} positive ranges (NaN where none)")
        labels = None
        if self.labels is not None:
            labels = {str(k): tuple(str(x) for x in v) for k, v in self.labels.items()}
            for k, v in labels.items():
                if k not in unds or len(v) != s:
                    raise InvalidInputError(f"labels: {k!r} must be an underlying with {s} labels")
        for name, arr in (("price_move", pm), ("vol_shock", vs), ("weight", weight), ("dampener_usd", damp),
                          ("flags", flags.astype(np.uint8)), ("scan_range", rng)):
            object.__setattr__(self, name, _ro(arr))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "underlyings", unds)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "vol_terms", terms)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "horizon_days", float(h) if not isinstance(h, (int, np.integer)) else int(h))

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.price_move.shape[0]

    @property
    def n_scenarios(self) -> int:
        return self.price_move.shape[0]

    @property
    def log_return(self) -> np.ndarray:
        """``log1p(price_move)``, for statistics."""
        return np.log1p(self.price_move)

    def label(self, s: int, underlying: str | None = None) -> str:
        """Name of scenario ``s`` (the underlying's own label for exchange grids)."""
        if underlying is not None and self.labels and underlying in self.labels:
            return self.labels[underlying][s]
        return self.names[s]

    def term(self, underlying: str, default: VolTermStructure = DERIBIT_TERM) -> VolTermStructure:
        """The vol term structure of one underlying (``default`` when the set has none)."""
        if self.vol_terms is None:
            return default
        return self.vol_terms[self.underlyings.index(underlying)]

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_log_returns(cls, log_return: Any, *, names: Sequence[str] | None = None,
                         underlyings: Sequence[str] | None = None, vol_shock: Any = None,
                         vol_proxy: Any = None, horizon_days: float = 1, kind: str = "",
                         sources: Sequence[str] = ()) -> "ScenarioSet":
        """Build from log returns ``(S, U)``; vol shocks given, from ``vol_proxy`` (an object with
        ``underlyings`` and ``apply(log_returns)``, e.g. :class:`~dpm.models.calibration.ranges.VolShockProxy`),
        or zero."""
        lr = as_float_array(log_return, "log_return")
        if lr.ndim != 2:
            raise InvalidInputError(f"log_return: expected shape (S, U), got {lr.shape}")
        check_finite(lr, "log_return")
        s, u = lr.shape
        if underlyings is None:
            underlyings = vol_proxy.underlyings if vol_proxy is not None else tuple(f"u{j}" for j in range(u))
        if vol_shock is not None:
            vs = np.broadcast_to(as_float_array(vol_shock, "vol_shock"), lr.shape)
        elif vol_proxy is not None:
            if tuple(vol_proxy.underlyings) != tuple(underlyings):
                raise InvalidInputError(
                    f"vol_proxy: fitted for {vol_proxy.underlyings}, scenarios are for {tuple(underlyings)}")
            vs = vol_proxy.apply(lr)
        else:
            vs = np.zeros_like(lr)
        if names is None:
            names = tuple(f"{kind or 'scenario'}_{i}" for i in range(s))
        return cls(np.expm1(lr), np.array(vs, dtype=np.float64), tuple(names), tuple(underlyings),
                   horizon_days, kind, tuple(sources))

    def concat(self, *others: "ScenarioSet") -> "ScenarioSet":
        """Stack scenario sets over the same underlyings (in the same order) and horizon."""
        sets = (self,) + others
        for o in others:
            if o.underlyings != self.underlyings:
                raise InvalidInputError(f"underlyings: cannot concatenate {o.underlyings} with {self.underlyings}")
            if o.vol_terms != self.vol_terms:
                raise InvalidInputError("vol_terms: cannot concatenate sets with different vol term structures")
        srcs: tuple[str, ...] = ()
        if all(o.sources for o in sets):
            srcs = tuple(x for o in sets for x in o.sources)
        rng = self.scan_range if all(np.array_equal(o.scan_range, self.scan_range, equal_nan=True)
                                     for o in sets) else None
        labels = None
        if all(o.labels for o in sets):
            labels = {u: tuple(x for o in sets for x in o.labels.get(u, o.names)) for u in self.labels}
        return ScenarioSet(np.vstack([o.price_move for o in sets]), np.vstack([o.vol_shock for o in sets]),
                           tuple(x for o in sets for x in o.names), self.underlyings,
                           max(o.horizon_days for o in sets),
                           self.kind if all(o.kind == self.kind for o in sets) else "mixed", srcs,
                           np.vstack([o.weight for o in sets]), np.vstack([o.dampener_usd for o in sets]),
                           np.concatenate([o.flags for o in sets]), self.vol_terms, rng, labels)

    def select(self, underlyings: Sequence[str]) -> "ScenarioSet":
        """The same scenarios restricted to / reordered as ``underlyings``."""
        idx = []
        for u in underlyings:
            if u not in self.underlyings:
                raise InvalidInputError(f"underlyings: {u!r} not in {self.underlyings}")
            idx.append(self.underlyings.index(u))
        terms = None if self.vol_terms is None else tuple(self.vol_terms[j] for j in idx)
        labels = None if self.labels is None else {u: self.labels[u] for u in underlyings if u in self.labels}
        return ScenarioSet(self.price_move[:, idx], self.vol_shock[:, idx], self.names, tuple(underlyings),
                           self.horizon_days, self.kind, self.sources, self.weight[:, idx],
                           self.dampener_usd[:, idx], self.flags, terms, self.scan_range[idx], labels)

    def subset(self, scenarios: Any) -> "ScenarioSet":
        """Some of the scenarios (a boolean mask or indices), in the order given."""
        idx = np.arange(len(self))[np.asarray(scenarios)]
        labels = None if self.labels is None else {u: tuple(v[i] for i in idx) for u, v in self.labels.items()}
        return ScenarioSet(self.price_move[idx], self.vol_shock[idx], tuple(self.names[i] for i in idx),
                           self.underlyings, self.horizon_days, self.kind,
                           tuple(self.sources[i] for i in idx) if self.sources else (),
                           self.weight[idx], self.dampener_usd[idx], self.flags[idx], self.vol_terms,
                           self.scan_range, labels)


#: The name used by dpm 0.1 for joint scenario sets (VaR/ES and stress); the same class.
MarketScenarios = ScenarioSet
