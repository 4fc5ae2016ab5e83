"""The factor space of a reverse stress test and its plausibility metric.

A joint market move is a vector ``z`` of *factors*: the relative price move ``x_u = P1 / P0 - 1`` of
every underlying ``u`` (every forward, mark and index of ``u`` moves together, as in
:class:`~dpm.models.scenarios.ScenarioSet`) and, with ``vol=True``, the relative vol-level shock
``v_u`` of ``u`` (``0.3`` = vols x 1.3 at the 30-day point, spread over expiries by the scenario set's
term structure; dpm's scenario sets have no skew factor). Factors are ordered
``[x_u1 .. x_uU, v_u1 .. v_uU]``.

Two metrics measure how large (how implausible) a move is:

* ``"mahalanobis"`` — ``sqrt(z' S^-1 z)`` under the factors' covariance ``S`` over the horizon
  (Breuer, Jandacka, Rheinberger & Summer 2009; McNeil & Smith 2012). A move of distance ``d`` in
  one direction is a ``d``-sigma move of the corresponding linear combination; factors a move does
  not name are set to their conditional expectation given the named ones (Breuer et al.'s most
  plausible completion), which does not increase the distance.
* ``"percent"`` — ``max_i |z_i|``: the largest relative move of any factor (plain percentage
  moves: "every price and vol moves by at most 23 %"). Factors a move does not name are 0.

:meth:`StressSpace.from_history` calibrates ``S`` on the bundled daily history with the RiskMetrics
EWMA (:func:`dpm.models.calibration.ewma_covariance`, lambda 0.94). **The vol factor is a proxy**:
no implied-vol history is bundled, so its daily moves are the relative changes of the 30-day
realised vol (the proxy :mod:`dpm.models.generators.stress` uses for its vol shocks).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dpm._util.validation import as_float_array
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.models.scenarios import ScenarioSet, VolTermStructure

__all__ = ["METRICS", "StressSpace"]

#: plausibility metrics of :class:`StressSpace`
METRICS = ("mahalanobis", "percent")


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class StressSpace:
    """Factors of joint market moves, their covariance and the metric reverse stress minimises.

    Parameters
    ----------
    underlyings : sequence of str
        Underlyings whose prices (and vols) move; the order of the factors.
    cov : array_like, shape (F, F)
        Covariance of the factors over the horizon (``F = U``, or ``2U`` with ``vol=True``):
        symmetric positive definite.
    vol : bool
        Whether each underlying also has a vol-level factor.
    metric : {"mahalanobis", "percent"}
    horizon_days : float
        Horizon of the moves (options age by it in revaluation; the covariance should be over it).
    floor : float
        Smallest relative move searched for any factor (in (-1, 0)): a price cannot fall to zero,
        a vol shock of -100 % removes all vol; moves beyond the floor are outside the search.
    vol_terms : VolTermStructure or sequence of them, optional
        Term structure of the vol shocks in the scenario sets built here (None: the revaluation
        engine's default, Deribit's shape).
    source : str
        How the covariance was obtained (shown in reports).
    """

    underlyings: tuple[str, ...]
    cov: np.ndarray
    vol: bool = True
    metric: str = "mahalanobis"
    horizon_days: float = 1.0
    floor: float = -0.95
    vol_terms: Any = None
    source: str = ""
    _chol: np.ndarray = field(default=None, init=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        unds = tuple(self.underlyings) if not isinstance(self.underlyings, str) else (self.underlyings,)
        if not unds or not all(isinstance(u, str) and u for u in unds):
            raise InvalidInputError(f"underlyings: expected non-empty names, got {self.underlyings!r}")
        if len(set(unds)) != len(unds):
            raise InvalidInputError(f"underlyings: duplicate names in {unds}")
        if not isinstance(self.vol, (bool, np.bool_)):
            raise InvalidTypeError(f"vol: expected a bool, got {self.vol!r}")
        F = len(unds) * (2 if self.vol else 1)
        cov = np.array(as_float_array(self.cov, "cov"), dtype=np.float64)
        if cov.shape != (F, F):
            raise InvalidInputError(f"cov: expected shape ({F}, {F}) for {len(unds)} underlyings "
                                    f"{'with' if self.vol else 'without'} vol factors, got {cov.shape}")
        if not np.isfinite(cov).all():
            raise InvalidInputError("cov: must be finite")
        if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-300):
            raise InvalidInputError("cov: must be symmetric")
        cov = 0.5 * (cov + cov.T)
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise InvalidInputError("cov: must be positive definite (a factor is a combination of the "
                                    "others or has no variance)") from None
        if self.metric not in METRICS:
            raise InvalidInputError(f"metric: expected one of {METRICS}, got {self.metric!r}")
        h = self.horizon_days
        if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) or not (
                np.isfinite(h) and h >= 0):
            raise InvalidInputError(f"horizon_days: expected a finite number >= 0, got {h!r}")
        fl = self.floor
        if isinstance(fl, bool) or not isinstance(fl, (int, float, np.integer, np.floating)) or not (
                -1.0 < fl < 0.0):
            raise InvalidInputError(f"floor: expected a number in (-1, 0), got {fl!r}")
        if self.vol_terms is not None and not isinstance(self.vol_terms, VolTermStructure):
            terms = tuple(self.vol_terms)
            if len(terms) != len(unds) or not all(isinstance(t, VolTermStructure) for t in terms):
                raise InvalidTypeError(f"vol_terms: expected a VolTermStructure or {len(unds)} of them")
            object.__setattr__(self, "vol_terms", terms)
        object.__setattr__(self, "underlyings", unds)
        object.__setattr__(self, "vol", bool(self.vol))
        object.__setattr__(self, "cov", _ro(cov))
        object.__setattr__(self, "_chol", _ro(chol))
        object.__setattr__(self, "horizon_days", float(h))
        object.__setattr__(self, "floor", float(fl))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_history(cls, underlyings: Sequence[str] = ("BTC", "ETH"), history: Any = None, *,
                     vol: bool = True, lambda_: float = 0.94, horizon_days: float = 1.0,
                     metric: str = "mahalanobis", vol_window: int = 30, end: Any = None,
                     floor: float = -0.95, vol_terms: Any = None) -> "StressSpace":
        """Covariance of daily factor moves by RiskMetrics EWMA on a price history, scaled to the horizon.

        Price factors: daily relative moves ``expm1(log return)``. Vol factors (a proxy, see the module
        docs): daily relative changes of the ``vol_window``-day realised vol. The EWMA forecast for the
        day after the last return (``end`` bounds the data used) is multiplied by ``horizon_days``
        (square-root-of-time scaling of the moves).

        Parameters
        ----------
        underlyings : sequence of str
            Assets of ``history`` (default the bundled :func:`dpm.market.history.load_history`).
        history : PriceHistory, optional
        vol : bool
        lambda_ : float
            EWMA decay (RiskMetrics: 0.94 for daily data).
        horizon_days : float
            > 0.
        metric : {"mahalanobis", "percent"}
        vol_window : int
        end : date-like, optional
            Last return date used (default: the end of the history).
        """
        from dpm.market.history import BUNDLED_HISTORY_SOURCE, load_history
        from dpm.models.calibration.ewma import ewma_covariance
        from dpm.models.calibration.ranges import realized_log_vol

        unds = tuple(underlyings)
        if not (np.isfinite(horizon_days) and horizon_days > 0):
            raise InvalidInputError(f"horizon_days: expected a finite number > 0, got {horizon_days!r}")
        hist = load_history() if history is None else history
        lr = hist.log_returns(list(unds), end=end, min_obs=vol_window + 60)
        r = lr.values
        x = np.expm1(r)
        if vol:
            lv = realized_log_vol(r, vol_window)
            dv = np.expm1(np.diff(lv, axis=0))
            ok = np.isfinite(dv).all(axis=1)
            data = np.hstack([x[1:][ok], dv[ok]])
        else:
            data = x
        cov = ewma_covariance(data, lambda_) * float(horizon_days)
        src = (f"EWMA (lambda {lambda_:g}) covariance of daily {'price and realised-vol' if vol else 'price'} "
               f"moves {lr.dates[0]} .. {lr.dates[-1]}, x {float(horizon_days):g} day(s); "
               f"{BUNDLED_HISTORY_SOURCE if history is None else getattr(hist, 'source', '')}")
        return cls(unds, cov, vol, metric, float(horizon_days), floor, vol_terms, src)

    def with_metric(self, metric: str) -> "StressSpace":
        """The same space measured in another metric."""
        return replace(self, metric=metric)

    # ------------------------------------------------------------------ factors
    @property
    def n_factors(self) -> int:
        return self.cov.shape[0]

    @property
    def factor_names(self) -> tuple[str, ...]:
        names = tuple(f"{u} price" for u in self.underlyings)
        return names + (tuple(f"{u} vol" for u in self.underlyings) if self.vol else ())

    @property
    def sigma(self) -> np.ndarray:
        """Standard deviation of each factor over the horizon."""
        return np.sqrt(np.diag(self.cov))

    def factor_index(self, underlying: str, kind: str = "price") -> int:
        """Position of an underlying's ``"price"`` or ``"vol"`` factor."""
        if underlying not in self.underlyings:
            raise InvalidInputError(f"underlying: {underlying!r} is not in the space {self.underlyings}")
        j = self.underlyings.index(underlying)
        if kind == "price":
            return j
        if kind == "vol" and self.vol:
            return len(self.underlyings) + j
        raise InvalidInputError(f"kind: expected 'price'{' or vol' if self.vol else ''}, got {kind!r}")

    # ------------------------------------------------------------------ metrics
    def _moves(self, z: Any) -> np.ndarray:
        arr = as_float_array(z, "z")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.n_factors:
            raise InvalidInputError(f"z: expected moves of {self.n_factors} factors, got shape {np.shape(z)}")
        return arr

    def mahalanobis(self, z: Any) -> np.ndarray:
        """``sqrt(z' S^-1 z)`` of each row of ``z`` (S, F)."""
        arr = self._moves(z)
        w = np.linalg.solve(self._chol, arr.T)
        return np.sqrt(np.sum(w * w, axis=0))

    def percent(self, z: Any) -> np.ndarray:
        """Largest absolute relative move of any factor, per row."""
        arr = self._moves(z)
        return np.max(np.abs(arr), axis=1) if arr.shape[1] else np.zeros(arr.shape[0])

    def distance(self, z: Any) -> np.ndarray:
        """The space's metric of each move."""
        return self.mahalanobis(z) if self.metric == "mahalanobis" else self.percent(z)

    def complete(self, z_sub: Any, factors: Sequence[int]) -> np.ndarray:
        """Full moves from moves of some factors: the others at their conditional expectation
        (Mahalanobis) or 0 (percent)."""
        idx = np.asarray(factors, dtype=np.int64)
        zs = as_float_array(z_sub, "z_sub")
        zs = zs[None, :] if zs.ndim == 1 else zs
        out = np.zeros((zs.shape[0], self.n_factors))
        if idx.size == 0:
            return out
        if self.metric == "mahalanobis":
            S = self.cov
            out[:] = np.linalg.solve(S[np.ix_(idx, idx)], zs.T).T @ S[idx, :]
        out[:, idx] = zs
        return out

    def whitening(self, factors: Sequence[int]) -> np.ndarray:
        """Lower Cholesky factor ``C`` of the covariance of ``factors``: ``z = C u`` with ``|u| = d``
        is a move of Mahalanobis distance ``d`` (conditional completion of the other factors)."""
        idx = np.asarray(factors, dtype=np.int64)
        return np.linalg.cholesky(self.cov[np.ix_(idx, idx)])

    # ------------------------------------------------------------------ scenarios
    def scenario_set(self, z: Any, names: Sequence[str] | None = None, *, kind: str = "reverse_stress",
                     sources: Sequence[str] = ()) -> ScenarioSet:
        """A :class:`ScenarioSet` of the moves ``z`` (S, F) (price moves and vol shocks per underlying)."""
        arr = self._moves(z)
        U = len(self.underlyings)
        vs = arr[:, U:] if self.vol else np.zeros((arr.shape[0], U))
        if names is None:
            names = tuple(f"{kind}_{i}" for i in range(arr.shape[0]))
        return ScenarioSet(arr[:, :U], vs, tuple(names), self.underlyings, self.horizon_days, kind,
                           tuple(sources), vol_terms=self.vol_terms)

    def describe(self, z: Any) -> list[str]:
        """``"BTC price -23.1 %, BTC vol +41.0 %"`` per move (factors that move)."""
        arr = self._moves(z)
        names = self.factor_names
        return [", ".join(f"{n} {v:+.1%}" for n, v in zip(names, row) if v != 0.0) or "no move" for row in arr]
