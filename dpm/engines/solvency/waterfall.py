"""The loss waterfall: account equity, insurance fund, auto-deleveraging, socialised loss.

After the close-out, an account whose equity is negative is *bankrupt*; its deficit (negative
equity) is covered in order by

1. **the insurance fund** (plus what the fund collected in the same event: liquidation fees, and
   at BitMEX-style venues the equity left in fully liquidated accounts). The fund covers every
   bankrupt account's deficit by the same fraction (no venue publishes an order within one event);
2. **auto-deleveraging (ADL)**: the part the fund cannot cover is charged to traders on the
   *opposite side of the same instrument*, ranked the way the venue publishes it, whose positions
   are closed at the bankrupt position's bankruptcy price: a counterparty closing ``n`` contracts
   loses ``n * delta`` against the mark, ``delta`` = uncovered amount per contract of the bankrupt
   position. The queue is filled greedily in ranking order, each counterparty up to its whole
   position (BitMEX's published example). A bankrupt account's uncovered amount is spread over its
   losing positions in proportion to their loss in the scenario;
3. **socialised loss**: what ADL cannot place (no opposite positions left, or a venue without ADL)
   is shared by the winning accounts in proportion to their profit in the event, at most all of
   it (Deribit: "socialized among the winning traders for that day"; Crypto.com: "pro-rata basis to
   the size of their profit");
4. what is left is a **shortfall** of the venue itself.

Conservation (checked in the tests): ``deficits = fund used + ADL + socialised + shortfall`` and
``losses of liquidated accounts = equity consumed + fund used + ADL + socialised + shortfall``.

ADL rankings (:func:`adl_score`):

* ``"pnl_leverage"`` — BitMEX: "Ranking = PNL Percentage * Effective Leverage (if PNL percentage
  > 0) = PNL Percentage / Effective Leverage (if PNL percentage < 0)", with "Effective Leverage =
  abs(Mark Value) / (Mark Value - Bankrupt Value)" and "PNL percentage = (Mark Value - Avg Entry
  Value) / abs(Avg Entry Value)" (https://www.bitmex.com/app/autoDeleveraging). In a cross-margin
  account ``Mark Value - Bankrupt Value`` is the account's equity. OKX ranks by "position's PnL% *
  effective leverage" without publishing the definitions; dpm uses BitMEX's.
* ``"binance"`` — Binance: "unrealized PnL/collateral multiplied by the margin ratio":
  ``max(0, uPnL) / max(1, wallet) * MM / (wallet + uPnL)`` (0 when ``wallet + uPnL <= 0``).

Ties (no venue publishes a rule) are broken by account order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError

__all__ = ["ADL_RANKINGS", "POLICIES", "SOCIALISATIONS", "AdlFill", "SolvencyPolicy", "adl_fill", "adl_score",
           "cover_with_fund", "socialise", "solvency_policy"]

ADL_RANKINGS = ("none", "pnl_leverage", "binance")
SOCIALISATIONS = ("none", "profit_pro_rata")


@dataclass(frozen=True)
class SolvencyPolicy:
    """How a venue liquidates and who bears a bankrupt account's loss.

    Parameters
    ----------
    name : str
    partial : bool
        Liquidate only until the target is met (else close everything).
    target : {"mm", "im"}
        Requirement restored by a partial liquidation.
    target_ratio : float
        Stop when ``requirement <= target_ratio * equity``.
    liquidation_fee : float
        Fee per USD of underlying notional closed, paid to the insurance fund.
    surplus_to_fund : bool
        The equity left in a fully liquidated account goes to the fund (BitMEX: "your maintenance
        margin will be lost"; liquidation at the bankruptcy price).
    adl : {"none", "pnl_leverage", "binance"}
        ADL ranking, or no ADL.
    socialise : {"none", "profit_pro_rata"}
    sources : tuple of str
        Where the rules come from (URL, title, date read).
    """

    name: str = "custom"
    partial: bool = True
    target: str = "mm"
    target_ratio: float = 1.0
    liquidation_fee: float = 0.0
    surplus_to_fund: bool = False
    adl: str = "none"
    socialise: str = "none"
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in ("mm", "im"):
            raise InvalidInputError(f"target: expected 'mm' or 'im', got {self.target!r}")
        for name in ("target_ratio", "liquidation_fee"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                    name == "target_ratio" and v == 0):
                raise InvalidInputError(f"{name}: expected a finite number {'> 0' if name == 'target_ratio' else '>= 0'}"
                                        f", got {v!r}")
        if self.adl not in ADL_RANKINGS:
            raise InvalidInputError(f"adl: expected one of {ADL_RANKINGS}, got {self.adl!r}")
        if self.socialise not in SOCIALISATIONS:
            raise InvalidInputError(f"socialise: expected one of {SOCIALISATIONS}, got {self.socialise!r}")
        for name in ("partial", "surplus_to_fund"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidTypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")


_READ = "read 2026-12-01"
POLICIES: dict[str, SolvencyPolicy] = {
    "deribit": SolvencyPolicy(
        "deribit", partial=True, target="mm", target_ratio=1.0, adl="none", socialise="profit_pro_rata",
        sources=(
            "https://support.deribit.com/hc/en-us/articles/25944769313309-Liquidations, 'Liquidations' "
            f"(partial liquidation until maintenance margin is below the margin balance), {_READ}",
            "https://support.deribit.com/hc/en-us/articles/25944777576477-Insurance-Fund, 'Insurance Fund' "
            f"(fund, then losses 'socialized among the winning traders for that day'; no ADL), {_READ}",
        )),
    "bitmex": SolvencyPolicy(
        "bitmex", partial=True, target="mm", target_ratio=1.0, surplus_to_fund=True, adl="pnl_leverage",
        socialise="none",
        sources=(
            f"https://www.bitmex.com/app/liquidation, 'Liquidation' (partial liquidation, remaining margin "
            f"to the insurance fund), {_READ}",
            f"https://www.bitmex.com/app/autoDeleveraging, 'Auto Deleveraging' (ranking), {_READ}",
            f"https://www.bitmex.com/app/autoDeleveragingExamples, 'Auto Deleveraging Examples', {_READ}",
        )),
    "okx": SolvencyPolicy(
        "okx", partial=True, target="mm", target_ratio=1.0, adl="pnl_leverage", socialise="none",
        sources=(
            "https://www.okx.com/help/iv-introduction-to-auto-deleveraging-adl, 'Introduction to "
            "Auto-deleveraging (ADL)' (ranking 'PnL% * effective leverage'; bankruptcy price when the fund "
            f"is nearly depleted), {_READ}",
            "OKX 'What is the meaning and purpose of the early liquidation mechanism?' ('Once deficit "
            f"losses are handled through ADL, the platform will no longer conduct loss socialization'), {_READ}",
        )),
    "binance": SolvencyPolicy(
        "binance", partial=True, target="mm", target_ratio=1.0, adl="binance", socialise="none",
        sources=(
            "https://binance.com/en-IN/support/faq/liquidation-protocols-360033525271, 'Liquidation "
            f"protocols' (one IOC order until margin compliant), {_READ}",
            "https://www.binance.com/zh-CN/support/announcement/360033525471, 'What Is Auto-Deleveraging "
            f"(ADL) and How Does It Work' (2019-09-09; LeveragePnL ranking), {_READ}",
        )),
}


def solvency_policy(name: str | SolvencyPolicy) -> SolvencyPolicy:
    """A venue preset (``deribit``, ``bitmex``, ``okx``, ``binance``) or the policy given."""
    if isinstance(name, SolvencyPolicy):
        return name
    if not isinstance(name, str) or name not in POLICIES:
        raise InvalidInputError(f"policy: expected one of {sorted(POLICIES)} or a SolvencyPolicy, got {name!r}")
    return POLICIES[name]


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
def cover_with_fund(deficit: np.ndarray, fund_available: float) -> tuple[float, np.ndarray]:
    """Fund used and each deficit's uncovered remainder (every deficit covered by the same fraction)."""
    d = np.asarray(deficit, dtype=np.float64)
    total = float(d.sum())
    if total <= 0.0:
        return 0.0, np.zeros_like(d)
    used = min(total, max(float(fund_available), 0.0))
    remaining = d * (1.0 - used / total)
    return used, remaining


def adl_score(ranking: str, *, pnl: Any = None, entry_value: Any = None, mark_value: Any = None,
              equity: Any = None, account_pnl: Any = None, wallet: Any = None,
              maintenance_margin: Any = None) -> np.ndarray:
    """ADL priority of positions (higher is deleveraged first).

    ``"pnl_leverage"`` (BitMEX): ``pnl / |entry_value|`` times ``|mark_value| / equity`` when the PnL is
    positive, divided by it otherwise (equity <= 0: infinite leverage).
    ``"binance"``: ``max(0, account_pnl) / max(1, wallet) * maintenance_margin / (wallet + account_pnl)``
    (0 when ``wallet + account_pnl <= 0``).
    """
    if ranking == "pnl_leverage":
        p = np.asarray(pnl, dtype=np.float64)
        ent = np.abs(np.asarray(entry_value, dtype=np.float64))
        mk = np.abs(np.asarray(mark_value, dtype=np.float64))
        eqy = np.asarray(equity, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            pct = np.where(ent > 0, p / ent, 0.0)
            lev = np.where(eqy > 0, mk / np.where(eqy > 0, eqy, 1.0), np.inf)
            score = np.where(pct > 0, pct * lev, np.where(pct < 0, pct / lev, 0.0))
        return np.where(np.isnan(score), 0.0, score)
    if ranking == "binance":
        up = np.asarray(account_pnl, dtype=np.float64)
        wb = np.asarray(wallet, dtype=np.float64)
        mm = np.asarray(maintenance_margin, dtype=np.float64)
        bal = wb + up
        pct = np.maximum(0.0, up) / np.maximum(1.0, wb)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(bal > 0, mm / np.where(bal > 0, bal, 1.0), 0.0)
        return pct * ratio
    raise InvalidInputError(f"ranking: expected 'pnl_leverage' or 'binance', got {ranking!r}")


@dataclass(frozen=True, eq=False)
class AdlFill:
    """ADL of one instrument side: which counterparties take how much, and what is left.

    Attributes
    ----------
    filled : ndarray
        Contracts taken from each counterparty (same order as given).
    haircut : ndarray
        Loss of each counterparty (``filled * delta``).
    delta : float
        Uncovered amount per contract (bankruptcy price minus mark, USD per contract).
    unfilled_quantity, unfilled_amount : float
        Contracts no counterparty could take, and their uncovered amount.
    """

    filled: np.ndarray
    haircut: np.ndarray
    delta: float
    unfilled_quantity: float
    unfilled_amount: float


def adl_fill(score: Any, quantity: Any, required_quantity: float, uncovered: float) -> AdlFill:
    """Fill ``required_quantity`` contracts from counterparties in decreasing ``score`` order (ties: the
    order given), each up to its whole ``|quantity|``, at ``delta = uncovered / required_quantity``."""
    sc = np.asarray(score, dtype=np.float64)
    qa = np.abs(np.asarray(quantity, dtype=np.float64))
    if sc.shape != qa.shape:
        raise InvalidInputError(f"score and quantity: shapes {sc.shape} and {qa.shape} differ")
    Q = float(required_quantity)
    R = float(uncovered)
    if Q <= 0:
        return AdlFill(np.zeros_like(qa), np.zeros_like(qa), 0.0, 0.0, R)
    delta = R / Q
    order = np.lexsort((np.arange(sc.size), -sc))
    cum = np.cumsum(qa[order])
    before = cum - qa[order]
    take = np.clip(Q - before, 0.0, qa[order])
    filled = np.zeros_like(qa)
    filled[order] = take
    left = max(Q - float(take.sum()), 0.0)
    return AdlFill(filled, filled * delta, delta, left, left * delta)


def socialise(amount: float, profit: Any) -> tuple[np.ndarray, float]:
    """Share ``amount`` over accounts pro rata to their positive ``profit`` (each at most its profit).

    Returns the charge per account and the part no profit could absorb (the venue's shortfall)."""
    p = np.maximum(np.asarray(profit, dtype=np.float64), 0.0)
    tot = float(p.sum())
    amount = max(float(amount), 0.0)
    if amount <= 0 or tot <= 0:
        return np.zeros_like(p), amount
    charged = min(amount, tot)
    return p * (charged / tot), amount - charged
