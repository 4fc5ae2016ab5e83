"""Joint market scenarios (to be merged into dpm.models.scenarios.ScenarioSet)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError
from dpm.models.calibration.ranges import VolShockProxy

__all__ = ['MarketScenarios']


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Scenario container
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MarketScenarios:
    """Joint price moves and vol shocks per scenario and underlying (read-only arrays).

    Attributes
    ----------
    price_move : ndarray, shape (S, U)
        Relative price move ``P1 / P0 - 1`` (> -1).
    vol_shock : ndarray, shape (S, U)
        Relative implied-vol shock ``vol1 / vol0 - 1`` (> -1), for the 30-day point of the surface.
    names : tuple of str, length S
    underlyings : tuple of str, length U
    horizon_days : int
    kind : str
        Generator: "historical", "filtered_historical", "monte_carlo", "stress", "hypothetical".
    sources : tuple of str, length S (optional documentation per scenario, e.g. data source)
    """

    price_move: np.ndarray
    vol_shock: np.ndarray
    names: tuple[str, ...]
    underlyings: tuple[str, ...]
    horizon_days: int = 1
    kind: str = ""
    sources: tuple[str, ...] = ()
    log_return: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pm = np.ascontiguousarray(as_float_array(self.price_move, "price_move"))
        vs = np.ascontiguousarray(as_float_array(self.vol_shock, "vol_shock"))
        if pm.ndim != 2:
            raise InvalidInputError(f"price_move: expected shape (S, U), got {pm.shape}")
        if vs.shape != pm.shape:
            raise InvalidInputError(f"vol_shock: shape {vs.shape} differs from price_move {pm.shape}")
        s, u = pm.shape
        if len(self.names) != s:
            raise InvalidInputError(f"names: {len(self.names)} names for {s} scenarios")
        if len(self.underlyings) != u:
            raise InvalidInputError(f"underlyings: {len(self.underlyings)} names for {u} columns")
        check_finite(pm, "price_move", labels=self.names)
        check_finite(vs, "vol_shock", labels=self.names)
        for arr, nm in ((pm, "price_move"), (vs, "vol_shock")):
            bad = arr <= -1.0
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0])
                raise InvalidInputError(
                    f"{nm}: must be > -1: scenario {self.names[i]!r}, underlying "
                    f"{self.underlyings[j]!r} has {arr[i, j]!r}"
                )
        if self.sources and len(self.sources) != s:
            raise InvalidInputError(f"sources: {len(self.sources)} entries for {s} scenarios")
        if pm is self.price_move:
            pm = pm.copy()
        if vs is self.vol_shock:
            vs = vs.copy()
        pm.flags.writeable = False
        vs.flags.writeable = False
        lr = np.log1p(pm)
        lr.flags.writeable = False
        object.__setattr__(self, "price_move", pm)
        object.__setattr__(self, "vol_shock", vs)
        object.__setattr__(self, "names", tuple(str(x) for x in self.names))
        object.__setattr__(self, "underlyings", tuple(str(x) for x in self.underlyings))
        object.__setattr__(self, "sources", tuple(str(x) for x in self.sources))
        object.__setattr__(self, "log_return", lr)

    def __len__(self) -> int:
        return self.price_move.shape[0]

    @property
    def n_scenarios(self) -> int:
        return self.price_move.shape[0]

    @classmethod
    def from_log_returns(cls, log_return: Any, *, names: Sequence[str] | None = None,
                         underlyings: Sequence[str] | None = None, vol_shock: Any = None,
                         vol_proxy: VolShockProxy | None = None, horizon_days: int = 1,
                         kind: str = "", sources: Sequence[str] = ()) -> MarketScenarios:
        """Build from log returns ``(S, U)``; vol shocks given, from ``vol_proxy``, or zero."""
        lr = as_float_array(log_return, "log_return")
        if lr.ndim != 2:
            raise InvalidInputError(f"log_return: expected shape (S, U), got {lr.shape}")
        check_finite(lr, "log_return")
        s, u = lr.shape
        if underlyings is None:
            underlyings = vol_proxy.underlyings if vol_proxy is not None else tuple(
                f"u{j}" for j in range(u))
        if vol_shock is not None:
            vs = np.broadcast_to(as_float_array(vol_shock, "vol_shock"), lr.shape)
        elif vol_proxy is not None:
            if tuple(vol_proxy.underlyings) != tuple(underlyings):
                raise InvalidInputError(
                    f"vol_proxy: fitted for {vol_proxy.underlyings}, scenarios are for "
                    f"{tuple(underlyings)}")
            vs = vol_proxy.apply(lr)
        else:
            vs = np.zeros_like(lr)
        if names is None:
            names = tuple(f"{kind or 'scenario'}_{i}" for i in range(s))
        return cls(np.expm1(lr), np.array(vs, dtype=np.float64), tuple(names), tuple(underlyings),
                   int(horizon_days), kind, tuple(sources))

    def concat(self, *others: MarketScenarios) -> MarketScenarios:
        """Stack scenario sets over the same underlyings (in the same order)."""
        sets = (self,) + others
        for o in others:
            if o.underlyings != self.underlyings:
                raise InvalidInputError(
                    f"underlyings: cannot concatenate {o.underlyings} with {self.underlyings}")
        srcs: tuple[str, ...] = ()
        if all(o.sources for o in sets):
            srcs = tuple(x for o in sets for x in o.sources)
        return MarketScenarios(np.vstack([o.price_move for o in sets]),
                               np.vstack([o.vol_shock for o in sets]),
                               tuple(x for o in sets for x in o.names), self.underlyings,
                               max(o.horizon_days for o in sets),
                               self.kind if all(o.kind == self.kind for o in sets) else "mixed",
                               srcs)

    def select(self, underlyings: Sequence[str]) -> MarketScenarios:
        """The same scenarios restricted to / reordered as ``underlyings``."""
        idx = []
        for u in underlyings:
            if u not in self.underlyings:
                raise InvalidInputError(f"underlyings: {u!r} not in {self.underlyings}")
            idx.append(self.underlyings.index(u))
        return MarketScenarios(self.price_move[:, idx], self.vol_shock[:, idx], self.names,
                               tuple(underlyings), self.horizon_days, self.kind, self.sources)
