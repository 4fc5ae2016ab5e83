"""Scenario sets: price moves x volatility shocks for one underlying.

A :class:`ScenarioSet` is columnar: scenario ``s`` moves the underlying (and every forward on it) by the
relative amount ``price_move[s]``, shocks implied vols in direction ``vol_dir[s]`` (-1 down, 0 none,
+1 up; sizes from :class:`VolShock`), counts ``weight[s]`` of the resulting P&L, and shrinks a loss
toward zero by ``dampener_usd[s]`` (Deribit's extended-table dampener). Grids, extreme moves and
user-supplied scenarios all produce this one shape, which is what the revaluation kernel consumes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError

__all__ = ["VolShock", "ScenarioSet", "price_grid"]


@dataclass(frozen=True)
class VolShock:
    """Size of the vol-up / vol-down shocks, scaled by time to expiry.

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
        for name in ("up", "down", "short_power", "long_power", "min_vol_up"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise InvalidInputError(f"VolShock.{name}: must be finite and >= 0, got {v!r}")
        for name in ("tenor_days", "floor_days"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise InvalidInputError(f"VolShock.{name}: must be finite and > 0, got {v!r}")
        if self.mode not in ("relative", "absolute"):
            raise InvalidInputError(f"VolShock.mode: expected 'relative' or 'absolute', got {self.mode!r}")

    def shocked(self, vol: np.ndarray, time_years: np.ndarray, direction: int) -> np.ndarray:
        """Vols after the shock in ``direction`` (-1, 0, +1); vectorised over instruments."""
        vol = np.asarray(vol, dtype=np.float64)
        if direction == 0:
            return vol.copy()
        if self.mode == "absolute":
            out = vol + (self.up if direction > 0 else -self.down)
            return np.maximum(out, 0.0)
        dte = np.maximum(np.asarray(time_years, dtype=np.float64) * 365.0, self.floor_days)
        power = np.where(dte <= self.tenor_days, self.short_power, self.long_power)
        scale = (self.tenor_days / dte) ** power
        if direction > 0:
            return np.maximum(vol * (1.0 + self.up * scale), self.min_vol_up)
        return vol * np.maximum(0.0, 1.0 - self.down * scale)


def price_grid(price_range: float, steps_per_side: int) -> np.ndarray:
    """Evenly spaced relative moves ``-range .. +range`` with ``2*steps+1`` points (0 included)."""
    if not (np.isfinite(price_range) and price_range > 0):
        raise InvalidInputError(f"price_range: must be finite and > 0, got {price_range!r}")
    if int(steps_per_side) < 1:
        raise InvalidInputError(f"steps_per_side: must be >= 1, got {steps_per_side!r}")
    k = np.arange(-int(steps_per_side), int(steps_per_side) + 1)
    return price_range * k / int(steps_per_side)


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """Scenarios for one underlying (columnar, length ``S``).

    Parameters
    ----------
    price_move : array_like
        Relative move of the underlying, > -1 (``-0.16`` = 16 % down).
    vol_dir : array_like of int
        -1 vol down, 0 unchanged, +1 vol up.
    weight : array_like, optional
        Fraction of the scenario's P&L that counts (1 by default; SPAN's cover fraction, Deribit's
        extended-table factor, Paradex's weights).
    dampener_usd : array_like, optional
        Amount (USD) by which a loss is shrunk toward zero (Deribit's extended dampener); 0 by default.
    labels : sequence of str, optional
        Names shown in margin breakdowns.
    """

    price_move: np.ndarray
    vol_dir: np.ndarray
    weight: np.ndarray = field(default=None)  # type: ignore[assignment]
    dampener_usd: np.ndarray = field(default=None)  # type: ignore[assignment]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        move = as_float_array(self.price_move, "price_move").ravel().copy()
        n = move.size
        if n == 0:
            raise InvalidInputError("price_move: a scenario set needs at least one scenario")
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
        labels = tuple(self.labels) if self.labels else tuple(
            f"{m:+.1%} vol{'+' if d > 0 else '-' if d < 0 else '='}" for m, d in zip(move, vdir)
        )
        if len(labels) != n:
            raise InvalidInputError(f"labels: has {len(labels)} entries, price_move has {n}")
        for name, arr in (("price_move", move), ("vol_dir", vdir.astype(np.int8)), ("weight", weight),
                          ("dampener_usd", damp)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return self.price_move.size

    def __add__(self, other: "ScenarioSet") -> "ScenarioSet":
        return ScenarioSet.concat([self, other])

    @classmethod
    def concat(cls, sets: Sequence["ScenarioSet"]) -> "ScenarioSet":
        """Scenarios of several sets, in order."""
        return cls(
            np.concatenate([s.price_move for s in sets]),
            np.concatenate([s.vol_dir for s in sets]),
            np.concatenate([s.weight for s in sets]),
            np.concatenate([s.dampener_usd for s in sets]),
            tuple(label for s in sets for label in s.labels),
        )

    @classmethod
    def grid(cls, moves: Any, vol_dirs: Sequence[int] = (1, 0, -1), weight: float = 1.0) -> "ScenarioSet":
        """Every price move combined with every vol direction (moves outer, vols inner)."""
        moves = as_float_array(moves, "moves").ravel()
        m = np.repeat(moves, len(vol_dirs))
        d = np.tile(np.asarray(vol_dirs, dtype=np.int8), moves.size)
        return cls(m, d, np.full(m.size, float(weight)))

    @classmethod
    def user(cls, price_move: Any, vol_dir: Any = 0, weight: Any = None, labels: Sequence[str] = ()) -> "ScenarioSet":
        """User-supplied scenarios (joint price and vol-direction moves)."""
        return cls(price_move, vol_dir, weight, None, tuple(labels))
