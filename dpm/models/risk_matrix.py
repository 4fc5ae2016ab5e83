"""Risk-matrix (scenario) portfolio-margin model: parameters per underlying and for the account.

The margin of one account (see ``docs/methodology.md`` for the formulas):

* per underlying ``u``: ``scan_u`` = the worst weighted, dampened scenario loss of the account's
  positions on ``u``; ``roll_u`` = sum over expiries of ``rate(T) * |net delta of the expiry|``;
  ``dshock_u`` = Deribit's delta (liquidity) shock; ``floor_u`` = max(short-option minimum,
  size charge); ``L_u = max(scan_u + roll_u + dshock_u, floor_u)``;
* across underlyings (``aggregation``), on the scenario vectors of the *aligned* grids (scenario
  ``s`` of every underlying is the same bucket of its own grid):

  - ``"joint"`` (default with a correlation): every combination of one price move per underlying,
    each at its worst vol state, its total P&L scaled by ``min(1, 1/m)`` where ``m`` is the
    Mahalanobis norm of the moves (normalised by each grid's range) under the correlation; the
    worst such loss ``J`` replaces the per-underlying scans: ``R = max(J + sum(roll + dshock),
    sum(floor))``. Long BTC + short ETH offset; a one-underlying book margins as before;
  - ``"pnl_offset"`` (Deribit X:PM): per scenario, losses of every underlying plus gains times
    ``pnl_offset[u]`` (each gain capped at ``max_offsetable_pnl[u]`` USD); the worst sum replaces
    the scans as for ``"joint"``;
  - ``"spread"`` (SPAN inter-commodity spreads): ``R = sum(L) - credits`` with a credit
    ``rate * spreads * (scan_a / delta_a + ratio * scan_b / delta_b)`` for each pair with
    opposite net deltas, in priority order;
  - ``"sqrt_corr"``: ``R = sqrt(L' C L)`` — conservative and **direction-blind** (a hedge across
    underlyings is charged like two longs), kept for comparison;
  - ``"sum"``: ``R = sum(L)``, no offsets (each underlying or settlement currency on its own);
* ``IM = im_factor * R`` and ``MM = mm_factor * R``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.models.scenarios import (
    FLAG_DAMPENED,
    FLAG_EXTENDED,
    FLAG_EXTREME,
    FLAG_PADDING,
    ScenarioGrid,
    ScenarioSet,
    VolShock,
    price_grid,
)

__all__ = ["AGGREGATIONS", "RollShock", "DeltaShock", "SizeCharge", "SpreadCredit", "UnderlyingParams",
           "RiskMatrixModel"]

#: aggregation across underlyings -> kernel code (dpm_types.h DPM_AGG_*)
AGGREGATIONS = {"sum": 0, "sqrt_corr": 1, "joint": 2, "pnl_offset": 3, "spread": 4}


def _nonneg(obj: Any, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not (np.isfinite(v) and v >= 0):
            raise InvalidInputError(f"{type(obj).__name__}.{name}: must be finite and >= 0, got {v!r}")


@dataclass(frozen=True)
class RollShock:
    """Per-expiry charge ``max(min_annualised_move, exp(annualised_move_risk*T) - 1) * |net delta|``.

    Deribit's roll shock; OKX's basis charge MR4 has the same shape. Perpetuals use ``T = 0`` (the
    minimum); spot positions are not charged.
    """

    annualised_move_risk: float = 0.0
    min_annualised_move: float = 0.0
    #: the rate of perpetuals when it is not the minimum (OKX charges MR4 on a perpetual swap as a
    #: fixed fraction of its cash delta: 0.2 % BTC/ETH, 0.8 % LTC in its API example)
    perpetual_rate: float | None = None

    def __post_init__(self) -> None:
        _nonneg(self, "annualised_move_risk", "min_annualised_move")
        if self.perpetual_rate is not None:
            _nonneg(self, "perpetual_rate")

    def rate(self, time_years: np.ndarray) -> np.ndarray:
        return np.maximum(self.min_annualised_move, np.expm1(self.annualised_move_risk * np.asarray(time_years)))

    def perpetual(self) -> float:
        """The rate of the perpetual bucket."""
        return float(self.rate(0.0)) if self.perpetual_rate is None else float(self.perpetual_rate)


@dataclass(frozen=True)
class DeltaShock:
    """Deribit's delta (liquidity) shock on the net delta notional ``N = |delta| * price`` (USD).

    ``min(max(N - threshold, 0) * |delta| * m_inc, max_delta_shock * N)``; zero below the threshold.
    """

    threshold_usd: float = float("inf")
    m_inc: float = 0.0
    max_delta_shock: float = 0.0

    def __post_init__(self) -> None:
        if not (self.threshold_usd >= 0):
            raise InvalidInputError(f"DeltaShock.threshold_usd: must be >= 0, got {self.threshold_usd!r}")
        _nonneg(self, "m_inc", "max_delta_shock")


@dataclass(frozen=True)
class SizeCharge:
    """Minimum charge that grows with position size (OKX MR7 style).

    ``raw = rate * gross notional (USD)``; the charge is ``raw * multiplier(raw)`` where the
    multiplier is ``multipliers[k]`` for the first ``raw <= bounds[k]`` and ``multipliers[-1]`` above.
    """

    rate: float = 0.0
    bounds_usd: tuple[float, ...] = ()
    multipliers: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        _nonneg(self, "rate")
        if len(self.multipliers) != len(self.bounds_usd) + 1:
            raise InvalidInputError("SizeCharge.multipliers: needs one more entry than bounds_usd")
        if any(b2 <= b1 for b1, b2 in zip(self.bounds_usd, self.bounds_usd[1:])):
            raise InvalidInputError("SizeCharge.bounds_usd: must be strictly increasing")


@dataclass(frozen=True)
class UnderlyingParams:
    """Scenario grid and add-on parameters of one underlying.

    Parameters
    ----------
    price_range : float
        Largest standard price move (0.16 = ±16 %).
    steps_per_side : int
        Price points per side (4 gives 9 moves including 0).
    vol_dirs : tuple of int
        Vol states combined with every standard move (+1 up, 0, -1 down).
    vol_shock : VolShock
        Size of the vol shocks.
    edge_vol_dirs : tuple of int or None
        Vol states used at the two outermost moves (Paradex: vol up only at ±16 %); None = vol_dirs.
    extended_moves : tuple of float
        Tail moves evaluated with vol up only (Deribit's extended table, SPAN's extremes use
        ``extreme_*`` below instead).
    extended_factor : float
        Extended P&L counted as ``extended_factor * price_range / |move|`` (Deribit; 0 = count fully
        with ``extended_weights``).
    extended_weights : tuple of float or None
        Explicit weights of the extended moves (overrides ``extended_factor``).
    extended_dampener_usd : float
        Deribit's dampener: losses shrink by ``(|move| / price_range - 1) * dampener`` (USD).
    extreme_moves, extreme_cover, extreme_vol_dir : SPAN/OKX extreme moves counted at a fraction.
    time_shift_days : float
        Time that passes in every scenario (SPAN: 1 day; Deribit: 0).
    roll_shock, delta_shock, size_charge : add-ons.
    short_option_minimum : float
        Floor per short option contract as a fraction of the underlying's value per contract.
    """

    price_range: float = 0.16
    steps_per_side: int = 4
    vol_dirs: tuple[int, ...] = (1, 0, -1)
    vol_shock: VolShock = field(default_factory=VolShock)
    edge_vol_dirs: tuple[int, ...] | None = None
    extended_moves: tuple[float, ...] = ()
    extended_factor: float = 1.0
    extended_weights: tuple[float, ...] | None = None
    extended_dampener_usd: float = 0.0
    extreme_moves: tuple[float, ...] = ()
    extreme_cover: float = 1.0
    extreme_vol_dir: int = 0
    time_shift_days: float = 0.0
    roll_shock: RollShock = field(default_factory=RollShock)
    delta_shock: DeltaShock = field(default_factory=DeltaShock)
    size_charge: SizeCharge = field(default_factory=SizeCharge)
    short_option_minimum: float = 0.0

    def __post_init__(self) -> None:
        _nonneg(self, "extended_factor", "extended_dampener_usd", "extreme_cover", "time_shift_days",
                "short_option_minimum")
        # checked here, not lazily when the engine builds the grid, so a bad preset fails where it is made
        if not (np.isfinite(self.price_range) and self.price_range > 0):
            raise InvalidInputError(f"UnderlyingParams.price_range: must be finite and > 0, got {self.price_range!r}")
        if isinstance(self.steps_per_side, bool) or int(self.steps_per_side) != self.steps_per_side \
                or self.steps_per_side < 1:
            raise InvalidInputError(f"UnderlyingParams.steps_per_side: must be an int >= 1, got {self.steps_per_side!r}")
        for name in ("vol_dirs", "edge_vol_dirs"):
            dirs = getattr(self, name)
            if dirs is None and name == "edge_vol_dirs":
                continue
            if len(dirs) == 0 or any(d not in (-1, 0, 1) for d in dirs):
                raise InvalidInputError(f"UnderlyingParams.{name}: expected a non-empty tuple of -1/0/1, got {dirs!r}")
        if self.extreme_vol_dir not in (-1, 0, 1):
            raise InvalidInputError(f"UnderlyingParams.extreme_vol_dir: must be -1, 0 or 1, got {self.extreme_vol_dir!r}")
        for name in ("extended_moves", "extreme_moves"):
            for k, m in enumerate(getattr(self, name)):
                if not (np.isfinite(m) and m > -1.0 and m != 0.0):
                    raise InvalidInputError(f"UnderlyingParams.{name}: entry {k} must be finite, > -1 and != 0, got {m!r}")
        if self.extended_weights is not None and len(self.extended_weights) != len(self.extended_moves):
            raise InvalidInputError("UnderlyingParams.extended_weights: one weight per extended move")
        for k, w in enumerate(self.extended_weights or ()):
            if not (np.isfinite(w) and w >= 0):
                raise InvalidInputError(f"UnderlyingParams.extended_weights: entry {k} must be finite and >= 0, got {w!r}")
        for name, cls in (("vol_shock", VolShock), ("roll_shock", RollShock), ("delta_shock", DeltaShock),
                          ("size_charge", SizeCharge)):
            if not isinstance(getattr(self, name), cls):
                raise InvalidInputError(
                    f"UnderlyingParams.{name}: expected a {cls.__name__}, got {type(getattr(self, name)).__name__}"
                )

    def scenarios(self, coin_settled_risk: bool = False) -> ScenarioGrid:
        """The scenario grid these parameters define.

        ``coin_settled_risk``: P&L is measured in the coin (Deribit S:PM), so the extended-table
        factor carries Deribit's ``(1 + move) / (1 + sign(move) * range)`` conversion.
        """
        moves = price_grid(self.price_range, self.steps_per_side)
        parts = []
        for m in moves:
            dirs = self.vol_dirs
            if self.edge_vol_dirs is not None and abs(abs(m) - self.price_range) < 1e-12:
                dirs = self.edge_vol_dirs
            parts.append(ScenarioGrid(np.full(len(dirs), m), np.asarray(dirs)))
        sets = [ScenarioGrid.concat(parts)]
        if self.extended_moves:
            ext = np.asarray(self.extended_moves, dtype=np.float64)
            if self.extended_weights is not None:
                w = np.asarray(self.extended_weights, dtype=np.float64)
            else:
                w = self.extended_factor * self.price_range / np.abs(ext)
                if coin_settled_risk:
                    w = w * (1.0 + ext) / (1.0 + np.sign(ext) * self.price_range)
            damp = np.maximum(np.abs(ext) / self.price_range - 1.0, 0.0) * self.extended_dampener_usd
            labels = tuple(f"extended {m:+.0%}" for m in ext)
            flags = np.full(ext.size, FLAG_EXTENDED | (FLAG_DAMPENED if self.extended_dampener_usd else 0))
            sets.append(ScenarioGrid(ext, np.ones(ext.size, dtype=np.int8), w, damp, labels, flags))
        if self.extreme_moves:
            ext = np.asarray(self.extreme_moves, dtype=np.float64)
            labels = tuple(f"extreme {m:+.0%}" for m in ext)
            sets.append(ScenarioGrid(ext, np.full(ext.size, self.extreme_vol_dir, dtype=np.int8),
                                     np.full(ext.size, self.extreme_cover), None, labels,
                                     np.full(ext.size, FLAG_EXTREME)))
        return ScenarioGrid.concat(sets)


@dataclass(frozen=True)
class SpreadCredit:
    """A SPAN-style inter-commodity spread: a credit between two underlyings with opposite deltas.

    Spreads are formed from the USD net deltas, ``ratio`` USD of ``leg_b`` per USD of ``leg_a``,
    in the order the model lists them (priority); each spread earns ``rate`` times the weighted
    price risk (scan loss per USD of net delta) of both legs.
    """

    leg_a: str
    leg_b: str
    rate: float
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.leg_a, str) and isinstance(self.leg_b, str) and self.leg_a != self.leg_b):
            raise InvalidInputError(f"SpreadCredit: legs must be two different underlyings, got {self.leg_a!r}, {self.leg_b!r}")
        if not (np.isfinite(self.rate) and 0.0 <= self.rate <= 1.0):
            raise InvalidInputError(f"SpreadCredit.rate: must be in [0, 1], got {self.rate!r}")
        if not (np.isfinite(self.ratio) and self.ratio > 0.0):
            raise InvalidInputError(f"SpreadCredit.ratio: must be finite and > 0, got {self.ratio!r}")


@dataclass(frozen=True)
class RiskMatrixModel:
    """A complete scenario portfolio-margin model.

    Parameters
    ----------
    name : str
        Shown in results.
    underlyings : mapping of str to UnderlyingParams
        Per-underlying parameters; ``default`` applies to underlyings not listed.
    default : UnderlyingParams
    scenario_sets : mapping of str to ScenarioGrid, optional
        User-supplied grids (price moves x vol directions) replacing the grid of an underlying.
    risk_currency : {"usd", "coin"}
        Currency in which scenario P&L is measured and the worst loss chosen. ``"coin"`` is
        Deribit's S:PM (coin-settled P&L); linear P&L is converted at the scenario's price. Results
        are reported in USD (and convertible to any coin at the index).
    correlation : mapping or ndarray, optional
        Correlation between underlyings: a matrix ordered like ``correlation_order`` or a dict
        ``{("BTC", "ETH"): 0.8}``.
    aggregation : {"joint", "pnl_offset", "spread", "sqrt_corr", "sum"}, optional
        How underlyings combine (see the module docstring); default ``"joint"`` when a
        correlation is given, else ``"sum"``.
    pnl_offset, max_offsetable_pnl : mapping of str to float
        ``"pnl_offset"`` aggregation: fraction of a scenario gain of each underlying that offsets
        losses, and the largest gain (USD) that counts (no cap when missing).
    spread_credits : sequence of SpreadCredit
        ``"spread"`` aggregation: the spreads in priority order.
    im_factor, mm_factor : float
        ``IM = im_factor * R``, ``MM = mm_factor * R``.
    sticky : {"strike", "moneyness"}
        How base vols move with the price: fixed per instrument (sticky strike) or read from the
        surface at the shocked forward.
    haircuts : mapping of str to float
        Collateral haircut per currency (0.02 = 2 %); missing currencies have no haircut.
    scenario_price : {"mark", "index"}
        What a scenario moves for perpetuals: their mark (Deribit) or the index (OKX's "reference
        price"; add-on cash deltas are then taken at each instrument's mark, as OKX does).
    exact_venue : bool
        Apply the venue's rounding (Deribit: the worst case rounded to 9 decimals of the risk
        currency before the contingencies are added).
    source : str
        Where the parameters come from (documentation).
    """

    name: str = "custom"
    underlyings: Mapping[str, UnderlyingParams] = field(default_factory=dict)
    default: UnderlyingParams = field(default_factory=UnderlyingParams)
    scenario_sets: Mapping[str, ScenarioGrid] = field(default_factory=dict)
    risk_currency: str = "usd"
    correlation: Any = None
    correlation_order: tuple[str, ...] = ()
    im_factor: float = 1.0
    mm_factor: float = 1.0
    sticky: str = "strike"
    haircuts: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    aggregation: str | None = None
    pnl_offset: Mapping[str, float] = field(default_factory=dict)
    max_offsetable_pnl: Mapping[str, float] = field(default_factory=dict)
    spread_credits: tuple[SpreadCredit, ...] = ()
    exact_venue: bool = False
    scenario_price: str = "mark"

    def __post_init__(self) -> None:
        if self.risk_currency not in ("usd", "coin"):
            raise InvalidInputError(f"risk_currency: expected 'usd' or 'coin', got {self.risk_currency!r}")
        if self.sticky not in ("strike", "moneyness"):
            raise InvalidInputError(f"sticky: expected 'strike' or 'moneyness', got {self.sticky!r}")
        if self.scenario_price not in ("mark", "index"):
            raise InvalidInputError(f"scenario_price: expected 'mark' or 'index', got {self.scenario_price!r}")
        for name in ("im_factor", "mm_factor"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InvalidInputError(f"{name}: must be finite and > 0, got {v!r}")
        for ccy, h in self.haircuts.items():
            if not (np.isfinite(h) and 0 <= h < 1):
                raise InvalidInputError(f"haircuts[{ccy!r}]: must be in [0, 1), got {h!r}")
        agg = self.aggregation_mode
        if agg not in AGGREGATIONS:
            raise InvalidInputError(f"aggregation: expected one of {sorted(AGGREGATIONS)}, got {agg!r}")
        if agg in ("joint", "sqrt_corr") and self.correlation is None:
            raise InvalidInputError(f"aggregation {agg!r} needs a correlation")
        for name, lo, hi in (("pnl_offset", 0.0, 1.0), ("max_offsetable_pnl", 0.0, np.inf)):
            for u, v in getattr(self, name).items():
                if not (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                        and lo <= v <= hi and not np.isnan(v)):
                    raise InvalidInputError(f"{name}[{u!r}]: must be a number in [{lo}, {hi}], got {v!r}")
        credits = tuple(self.spread_credits)
        if not all(isinstance(c, SpreadCredit) for c in credits):
            raise InvalidTypeError("spread_credits: expected SpreadCredit objects")
        object.__setattr__(self, "spread_credits", credits)
        for u, g in self.scenario_sets.items():
            if not isinstance(g, ScenarioGrid):
                raise InvalidTypeError(f"scenario_sets[{u!r}]: expected a ScenarioGrid, got {type(g).__name__}")

    @property
    def aggregation_mode(self) -> str:
        """The aggregation in force: ``aggregation``, or its default (``"joint"`` with a correlation,
        ``"sum"`` without)."""
        if self.aggregation is not None:
            return self.aggregation
        return "joint" if self.correlation is not None else "sum"

    def params(self, underlying: str) -> UnderlyingParams:
        return self.underlyings.get(underlying, self.default)

    def scenario_grid(self, underlying: str) -> ScenarioGrid:
        """The scenario grid of one underlying (price moves x vol directions, weights, dampeners)."""
        user = self.scenario_sets.get(underlying)
        if user is not None:
            return user
        return self.params(underlying).scenarios(coin_settled_risk=self.risk_currency == "coin")

    def scenario_set(self, underlyings: Sequence[str] | str) -> ScenarioSet:
        """The joint, aligned scenario set of the model for ``underlyings``.

        Scenario ``s`` applies bucket ``s`` of every underlying's own grid at once (Deribit's aligned
        vectors), with the vol shocks sized by each underlying's :class:`VolShock`. Grids of unequal
        length are padded with scenarios that move nothing and weigh 0 (``FLAG_PADDING``).
        """
        if isinstance(underlyings, str):
            underlyings = (underlyings,)
        unds = tuple(underlyings)
        if not unds:
            raise InvalidInputError("underlyings: a scenario set needs at least one underlying")
        grids = [self.scenario_grid(u) for u in unds]
        S = max(len(g) for g in grids)
        U = len(unds)
        move = np.zeros((S, U))
        vshock = np.zeros((S, U))
        weight = np.zeros((S, U))
        damp = np.zeros((S, U))
        flags = np.full(S, FLAG_PADDING, dtype=np.uint8)
        labels: dict[str, tuple[str, ...]] = {}
        for j, (u, g) in enumerate(zip(unds, grids)):
            n = len(g)
            move[:n, j] = g.price_move
            vshock[:n, j] = self.params(u).vol_shock.size(g.vol_dir)
            weight[:n, j] = g.weight
            damp[:n, j] = g.dampener_usd
            flags[:n] = np.where(flags[:n] == FLAG_PADDING, g.flags, flags[:n] | g.flags)
            labels[u] = g.labels + ("padding",) * (S - n)
        shifts = {self.params(u).time_shift_days for u in unds}
        if len(shifts) > 1:
            raise InvalidInputError("time_shift_days: must be the same for every underlying")
        terms = tuple(self.params(u).vol_shock.term_structure for u in unds)
        rng = np.array([self.params(u).price_range if u not in self.scenario_sets else
                        max(float(np.max(np.abs(self.scenario_sets[u].price_move))), 1e-12) for u in unds])
        names = labels[unds[0]]
        return ScenarioSet(move, vshock, names, unds, float(shifts.pop()), "grid", (), weight, damp, flags,
                           terms, rng, labels)

    def correlation_matrix(self, underlyings: Sequence[str]) -> np.ndarray | None:
        """Correlation matrix ordered like ``underlyings`` (validated), or None for the plain sum."""
        if self.correlation is None:
            return None
        from dpm.models.calibration.correlation import check_correlation  # noqa: PLC0415

        U = len(underlyings)
        if isinstance(self.correlation, Mapping):
            C = np.eye(U)
            pos = {u: i for i, u in enumerate(underlyings)}
            for (a, b), rho in self.correlation.items():
                if a in pos and b in pos:
                    C[pos[a], pos[b]] = C[pos[b], pos[a]] = float(rho)
        else:
            given = np.asarray(self.correlation, dtype=np.float64)
            order = self.correlation_order or tuple(underlyings)
            if given.shape != (len(order), len(order)):
                raise InvalidInputError(
                    f"correlation: shape {given.shape} does not match correlation_order of {len(order)}"
                )
            pos = {u: i for i, u in enumerate(order)}
            missing = [u for u in underlyings if u not in pos]
            if missing:
                raise InvalidInputError(f"correlation: no row for underlying(s) {missing}")
            idx = [pos[u] for u in underlyings]
            C = given[np.ix_(idx, idx)]
        return check_correlation(C, names=list(underlyings))

    def with_params(self, underlying: str, **changes: Any) -> "RiskMatrixModel":
        """A copy with some parameters of one underlying changed."""
        und = dict(self.underlyings)
        und[underlying] = replace(self.params(underlying), **changes)
        return replace(self, underlyings=und)
