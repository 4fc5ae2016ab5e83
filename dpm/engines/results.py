"""Margin results: columnar for many accounts, readable for one."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from dpm.errors import InvalidInputError

__all__ = ["MarginResults", "AccountMargin", "PositionContribution", "RiskVectors", "WhatIfResult",
           "first_non_finite"]


def first_non_finite(columns: Any, allow_infinite: Sequence[str] = ()) -> tuple[str, int, float] | None:
    """``(column, row, value)`` of the first float result that is not finite, or ``None``.

    Columns named in ``allow_infinite`` may hold ±inf (a margin ratio at zero equity), not NaN.
    Writers refuse such a figure rather than print it as a number.
    """
    for name, col in columns.items():
        arr = np.asarray(col)
        if arr.dtype.kind != "f":
            continue
        bad = np.isnan(arr) if name in allow_infinite else ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return name, i, float(arr[i])
    return None


def _usd_price(usd_prices: dict[str, float], currency: str) -> float:
    price = usd_prices.get(currency)
    if price is None:
        raise InvalidInputError(f"currency: no price for {currency!r}; have {sorted(usd_prices)}")
    return price


@dataclass(frozen=True, eq=False)
class MarginResults:
    """Margin of ``N`` accounts (all amounts in USD; arrays of length N, or N x U per underlying).

    Attributes
    ----------
    account_id : ndarray
    initial_margin, maintenance_margin : ndarray
        IM and MM.
    risk : ndarray
        Combined risk ``R`` before the IM/MM factors.
    equity : ndarray
        Collateral after haircuts plus the mark value of the positions.
    collateral_value, position_value : ndarray
    margin_ratio : ndarray
        ``MM / equity`` (liquidation when >= 1; inf when equity <= 0 and MM > 0; 0 when MM = 0).
    excess : ndarray
        ``equity - IM`` (negative: the account cannot open risk-increasing orders).
    underlyings : tuple of str
    charge, scan, roll_shock, delta_shock, floor : ndarray (N x U)
        Per underlying: total charge ``L``, worst scenario loss, roll shock, delta shock, and the
        floor (short-option minimum / size charge).
    worst_scenario : ndarray of int32 (N x U)
        Index of the binding scenario per underlying (-1 when there is no loss); with the joint or
        pnl_offset aggregation, each held underlying's scenario in the binding joint combination.
    scenario_labels : dict of str to tuple of str
    contribution : ndarray or None
        Per position (aligned with the book's CSR arrays): its share of the binding loss — its P&L
        in the binding scenario, counted at the scenario's weight, dampener and joint scaling pro
        rata (negative = adds to the loss; an account's contributions sum to minus its binding loss).
    combined_scan : ndarray
        The cross-underlying worst loss: the joint / offset worst case, the sum of scans net of
        spread credits, or the plain sum of scans (``aggregation`` says which).
    aggregation : str
    usd_prices : dict of str to float
        USD per unit of each currency at the market's index (for :meth:`in_currency`).
    """

    account_id: np.ndarray
    initial_margin: np.ndarray
    maintenance_margin: np.ndarray
    risk: np.ndarray
    equity: np.ndarray
    collateral_value: np.ndarray
    position_value: np.ndarray
    margin_ratio: np.ndarray
    excess: np.ndarray
    underlyings: tuple[str, ...]
    charge: np.ndarray
    scan: np.ndarray
    roll_shock: np.ndarray
    delta_shock: np.ndarray
    floor: np.ndarray
    worst_scenario: np.ndarray
    scenario_labels: dict[str, tuple[str, ...]]
    model_name: str = ""
    contribution: np.ndarray | None = None
    usd_prices: dict[str, float] = field(default_factory=dict)
    _book: Any = field(default=None, repr=False)
    combined_scan: np.ndarray | None = None
    aggregation: str = ""

    def __len__(self) -> int:
        return len(self.account_id)

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per account (needs the ``io`` extra)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("MarginResults.to_frame needs pandas: pip install 'dpm[io]'") from exc
        return pd.DataFrame(self.to_columns())

    def to_columns(self) -> dict[str, np.ndarray]:
        """Columns of :meth:`to_frame` as a dict of arrays (no pandas needed)."""
        cols: dict[str, np.ndarray] = {
            "account_id": self.account_id,
            "initial_margin": self.initial_margin,
            "maintenance_margin": self.maintenance_margin,
            "equity": self.equity,
            "margin_ratio": self.margin_ratio,
            "excess": self.excess,
            "collateral_value": self.collateral_value,
            "position_value": self.position_value,
        }
        for j, u in enumerate(self.underlyings):
            cols[f"{u}_charge"] = self.charge[:, j]
            cols[f"{u}_scan"] = self.scan[:, j]
            cols[f"{u}_roll_shock"] = self.roll_shock[:, j]
            cols[f"{u}_delta_shock"] = self.delta_shock[:, j]
            cols[f"{u}_floor"] = self.floor[:, j]
            labels = self.scenario_labels.get(u, ())
            # label lookup by index (no Python loop over accounts); "" for no binding scenario
            lookup = np.empty(len(labels) + 1, dtype=object)
            lookup[: len(labels)] = labels
            lookup[len(labels)] = ""
            k = self.worst_scenario[:, j]
            cols[f"{u}_worst_scenario"] = lookup[np.where((k >= 0) & (k < len(labels)), k, len(labels))]
        return cols

    def summary(self) -> dict[str, float]:
        """Totals and counts over all accounts."""
        n = len(self)
        return {
            "accounts": float(n),
            "total_initial_margin": float(self.initial_margin.sum()),
            "total_maintenance_margin": float(self.maintenance_margin.sum()),
            "total_equity": float(self.equity.sum()),
            "below_initial": float((self.excess < 0).sum()),
            "below_maintenance": float((self.margin_ratio >= 1).sum()),
        }

    def in_currency(self, currency: str) -> dict[str, np.ndarray]:
        """IM, MM, equity and excess converted from USD into ``currency`` at the market's index.

        ``currency`` is an underlying of the market (``"BTC"``, ``"ETH"``: amounts in that coin, e.g.
        an inverse account's settlement coin) or a USD-like code (``"USD"``, ``"USDC"``, ``"USDT"``).
        """
        price = _usd_price(self.usd_prices, currency)
        return {
            "initial_margin": self.initial_margin / price,
            "maintenance_margin": self.maintenance_margin / price,
            "equity": self.equity / price,
            "excess": self.excess / price,
        }


@dataclass(frozen=True)
class PositionContribution:
    """One position's share of the binding scenario loss of its underlying."""

    instrument: str
    quantity: float
    pnl_in_worst_scenario: float


@dataclass(frozen=True)
class AccountMargin:
    """Readable margin of one account (USD)."""

    account_id: str
    initial_margin: float
    maintenance_margin: float
    equity: float
    margin_ratio: float
    excess: float
    by_underlying: dict[str, dict[str, Any]]
    liquidation_order: list[PositionContribution]
    model_name: str = ""
    risk: float = float("nan")
    combined_scan: float = float("nan")
    aggregation: str = ""
    usd_prices: dict[str, float] = field(default_factory=dict)

    def in_currency(self, currency: str) -> dict[str, Any]:
        """IM, MM, equity, excess, risk and the per-underlying breakdown in ``currency`` (a coin of
        the market, e.g. the settlement coin of an inverse account, or ``"USD"``/``"USDC"``/``"USDT"``),
        converted at the market's index."""
        price = _usd_price(self.usd_prices, currency)
        return {
            "currency": currency,
            "initial_margin": self.initial_margin / price,
            "maintenance_margin": self.maintenance_margin / price,
            "equity": self.equity / price,
            "excess": self.excess / price,
            "risk": self.risk / price,
            "combined_scan": self.combined_scan / price,
            "by_underlying": {u: {k: (v / price if isinstance(v, float) else v) for k, v in d.items()}
                              for u, d in self.by_underlying.items()},
        }

    def __str__(self) -> str:
        lines = [
            f"account {self.account_id} ({self.model_name})",
            f"  initial margin      {self.initial_margin:>16,.2f} USD",
            f"  maintenance margin  {self.maintenance_margin:>16,.2f} USD",
            f"  equity              {self.equity:>16,.2f} USD",
            f"  margin ratio        {self.margin_ratio:>16.4f}",
        ]
        for u, d in self.by_underlying.items():
            lines.append(
                f"  {u}: charge {d['charge']:,.2f} = max(scan {d['scan']:,.2f} + roll {d['roll_shock']:,.2f}"
                f" + delta {d['delta_shock']:,.2f}, floor {d['floor']:,.2f}); worst: {d['worst_scenario']}"
            )
        if self.liquidation_order:
            lines.append("  liquidation order (largest contributor to the binding loss first):")
            for c in self.liquidation_order[:10]:
                lines.append(f"    {c.instrument:<28} qty {c.quantity:>12,.4f}  P&L {c.pnl_in_worst_scenario:>14,.2f}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class RiskVectors:
    """One account's scenario P&L vectors (see :meth:`dpm.engines.margin.MarginEngine.risk_vectors`).

    Attributes
    ----------
    underlyings : tuple of str
        The underlyings the account holds.
    scenario_names : tuple of str
    labels : dict of str to tuple of str
        Each underlying's label of every scenario (its own grid bucket).
    extended, padding : ndarray of bool (S)
        Extended / extreme scenarios, and padding (no scenario) columns.
    raw : dict of str to ndarray (S)
        Per underlying: the sum of its positions' P&L per scenario (risk currency).
    weighted : dict of str to ndarray (S)
        The same weighted and dampened: the vector the worst case is taken over.
    aggregated_usd : ndarray (S)
        Across underlyings, USD: the sum of the weighted vectors, with gains counted at
        ``pnl_offset`` for that aggregation (0 on padding columns).
    risk_currency : str
    to_usd : dict of str to float
        Risk currency -> USD per underlying.
    """

    account_id: str
    underlyings: tuple[str, ...]
    scenario_names: tuple[str, ...]
    labels: dict[str, tuple[str, ...]]
    extended: np.ndarray
    padding: np.ndarray
    raw: dict[str, np.ndarray]
    weighted: dict[str, np.ndarray]
    aggregated_usd: np.ndarray
    risk_currency: str
    to_usd: dict[str, float]

    def worst(self, underlying: str | None = None) -> tuple[int, float]:
        """``(scenario, loss)`` of the worst entry of one underlying's weighted vector (risk currency),
        or of the aggregated vector (USD) with ``underlying=None``; loss >= 0, scenario -1 if none."""
        v = self.aggregated_usd if underlying is None else self.weighted[underlying]
        v = np.where(self.padding, 0.0, v)
        s = int(np.argmin(v)) if v.size else -1
        loss = float(-v[s]) if s >= 0 else 0.0
        return (s, loss) if loss > 0 else (-1, 0.0)

    def standard(self, underlying: str) -> np.ndarray:
        """The weighted vector of the standard (not extended, not padding) scenarios."""
        return self.weighted[underlying][~self.extended & ~self.padding]


@dataclass(frozen=True)
class WhatIfResult:
    """Margin after proposed orders (USD), and whether the account can afford them."""

    initial_margin: float
    maintenance_margin: float
    initial_margin_before: float
    equity: float
    passes: bool

    @property
    def incremental_margin(self) -> float:
        return self.initial_margin - self.initial_margin_before


def liquidation_order(names: Sequence[str], qty: np.ndarray, pnl: np.ndarray) -> list[PositionContribution]:
    """Positions sorted by their loss in the binding scenario, largest loss first (losses only)."""
    order = np.argsort(pnl, kind="stable")
    return [PositionContribution(str(names[k]), float(qty[k]), float(pnl[k])) for k in order if pnl[k] < 0]
