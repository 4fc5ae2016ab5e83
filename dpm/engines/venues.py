"""Venue-shaped results on top of the margin engine: OKX's position builder.

OKX's portfolio margin (``POST /api/v5/account/position-builder``, [O1] in ``docs/methodology.md``)
reports per risk unit (underlying) the MR1 scenario grid, MR1..MR9, MMR and IMR, and per account the
derivatives MMR, the borrowing charge MR8 and the totals. :func:`okx_position_builder` computes the
same figures with :func:`dpm.models.presets.okx_pm` on dpm's revaluation core, from OKX's own inputs:
simulated positions (contracts, average price), asset balances, the marks, the reference (index)
prices and the USDT/USD rate of the market.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dpm.engines.margin import MarginEngine
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.snapshot import MarketSnapshot
from dpm.market.table import InstrumentTable
from dpm.models.risk_matrix import RiskMatrixModel
from dpm.models.scenarios import FLAG_EXTENDED, FLAG_EXTREME, FLAG_PADDING
from dpm.portfolio.accounts import Account

__all__ = ["okx_instrument_name", "okx_position_builder"]

#: OKX contract values (``ctVal``, coins per contract) of the USDT-margined swaps used here: BTC
#: [O5] "ctVal=0.01 BTC for BTC-USDT-SWAP"; LTC 1 (the API example's cash delta)
OKX_CT_VAL = {"BTC-USDT-SWAP": 0.01, "LTC-USDT-SWAP": 1.0}
#: borrowing charges (IM rate, MM rate) on a negative balance, as in the API example (10 % / 2 %;
#: OKX tiers them by size in reality)
OKX_BORROW_RATES = {"USDT": (0.10, 0.02)}


def okx_instrument_name(inst_id: str) -> str:
    """dpm name of an OKX linear swap id (``BTC-USDT-SWAP`` -> ``BTC_USDT-PERPETUAL``)."""
    parts = str(inst_id).split("-")
    if len(parts) == 3 and parts[2] == "SWAP" and parts[1] in ("USDT", "USDC"):
        return f"{parts[0]}_{parts[1]}-PERPETUAL"
    raise InvalidInputError(f"instId: {inst_id!r} is not an OKX USDT/USDC-margined swap this adapter reads")


def _num(x: Any, field: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{field}: expected a number, got {x!r}") from None
    if not np.isfinite(v):
        raise InvalidInputError(f"{field}: must be finite, got {x!r}")
    return v


def okx_position_builder(market: MarketSnapshot, positions: Sequence[Mapping[str, Any]],
                         assets: Mapping[str, Any], *, model: RiskMatrixModel | None = None,
                         contract_values: Mapping[str, float] | None = None,
                         borrow_rates: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """OKX position-builder figures of simulated positions and assets.

    Parameters
    ----------
    market : MarketSnapshot
        Index (OKX's reference price, which MR1 shocks) and perpetual marks of each underlying, and
        ``usd_rates`` with the USDT/USD rate.
    positions : sequence of mapping
        OKX ``simPos`` entries: ``instId`` (a USDT-margined swap), ``pos`` (contracts, signed), ``avgPx``.
    assets : mapping
        ``simAsset`` balances per currency (``{"USDT": 100}``).
    model : RiskMatrixModel, optional
        Default :func:`dpm.models.presets.okx_pm` for the units held.
    contract_values : mapping, optional
        ``ctVal`` per ``instId`` (default :data:`OKX_CT_VAL`).
    borrow_rates : mapping, optional
        ``{currency: (imr rate, mmr rate)}`` on negative balances (default :data:`OKX_BORROW_RATES`).

    Returns
    -------
    dict
        ``riskUnitData`` (per unit: ``mr1Scenarios`` {vol state: {shock: pnl}}, ``mr1``, ``mr4``,
        ``mr6``, ``mr7``, ``mmr``, ``imr``, ``delta``, ``upl``), ``assets`` (``availEq``, ``borrowImr``,
        ``borrowMmr``), ``derivMmr``, ``borrowMmr``, ``totalMmr``, ``totalImr``, ``eq``, ``upl`` — USD.
    """
    from dpm.models.presets import okx_pm

    if not isinstance(market, MarketSnapshot):
        raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
    ct = dict(OKX_CT_VAL if contract_values is None else contract_values)
    borrow = dict(OKX_BORROW_RATES if borrow_rates is None else borrow_rates)
    names, sizes, qty, float_pnl, settle = [], [], [], {}, {}
    for k, p in enumerate(positions):
        if not isinstance(p, Mapping) or "instId" not in p:
            raise InvalidInputError(f"positions: entry {k} has no instId")
        iid = str(p["instId"])
        if iid not in ct:
            raise InvalidInputError(f"positions[{k}]: no contract value (ctVal) for {iid!r}; pass contract_values")
        name = okx_instrument_name(iid)
        pos = _num(p.get("pos"), f"positions[{k}].pos")
        avg = _num(p.get("avgPx"), f"positions[{k}].avgPx")
        names.append(name)
        sizes.append(ct[iid])
        qty.append(pos)
        und, ccy = name.split("-")[0].split("_")
        mark = float(market[und].perpetual_price)
        float_pnl[name] = (mark - avg) * pos * ct[iid]
        settle[name] = ccy
    if len(set(names)) != len(names):
        raise InvalidInputError("positions: an instrument appears twice")
    table = InstrumentTable.from_names(names, contract_size=sizes)
    unds = tuple(table.underlyings)
    model = okx_pm(risk_units=unds) if model is None else model
    engine = MarginEngine(market, table, model, workers=1)
    account = Account("okx", list(zip(names, qty)))
    margin = engine.margin(account)
    rv = engine.risk_vectors(account)
    sset = engine.scenarios
    real = (sset.flags & FLAG_PADDING) == 0
    extreme = (sset.flags & (FLAG_EXTENDED | FLAG_EXTREME)) != 0
    # asset balances after the positions' floating P&L settles in their currency
    avail = {str(c): _num(v, f"assets[{c!r}]") for c, v in assets.items()}
    for name, pnl in float_pnl.items():
        avail[settle[name]] = avail.get(settle[name], 0.0) + pnl
    rate = {c: market.usd_rate(c) for c in avail}
    for c, r in rate.items():
        if r is None:
            raise InvalidInputError(f"assets: no USD rate for {c!r} in the market")
    units = []
    for u in unds:
        j = engine.underlyings.index(u)
        raw_usd = rv.raw[u] * rv.to_usd[u]
        weighted_usd = rv.weighted[u] * rv.to_usd[u]
        std = real & ~extreme
        grid: dict[str, dict[str, float]] = {"volShockUp": {}, "volSame": {}, "volShockDown": {}}
        for s in np.flatnonzero(std):
            v = sset.vol_shock[s, j]
            state = "volShockUp" if v > 0 else "volShockDown" if v < 0 else "volSame"
            grid[state][f"{sset.price_move[s, j]:g}"] = float(raw_usd[s])
        mr1 = max(0.0, float(-raw_usd[std].min()))
        mr6 = max(0.0, float(-weighted_usd[real & extreme].min())) if (real & extreme).any() else 0.0
        by = margin.by_underlying[u]
        held = [n for n in names if n.startswith(f"{u}_")]
        # OKX's cash delta: contracts x ctVal x mark, in USD at the settlement currency's rate
        delta = float(sum(q * table.contract_size[table.index_of([n])[0]] * market[u].perpetual_price
                          * market.usd_rate(settle[n]) for n, q in zip(names, qty) if n in held))
        units.append({
            "riskUnit": u, "mr1Scenarios": grid, "mr1": mr1, "mr6": mr6, "mr4": by["roll_shock"],
            "mr7": by["floor"], "mmr": by["charge"], "imr": model.im_factor * by["charge"], "delta": delta,
            "upl": sum(float_pnl[n] * rate[settle[n]] for n in held),
        })
    assets_out = []
    borrow_mmr = borrow_imr = 0.0
    for c, v in avail.items():
        im_r, mm_r = borrow.get(c, (0.0, 0.0))
        liab = max(-v, 0.0) * rate[c]
        assets_out.append({"ccy": c, "availEq": v, "borrowImr": im_r * liab, "borrowMmr": mm_r * liab})
        borrow_mmr += mm_r * liab
        borrow_imr += im_r * liab
    deriv_mmr = float(sum(x["mmr"] for x in units))
    return {
        "riskUnitData": units, "assets": assets_out, "derivMmr": deriv_mmr, "borrowMmr": borrow_mmr,
        "totalMmr": deriv_mmr + borrow_mmr, "totalImr": float(sum(x["imr"] for x in units)) + borrow_imr,
        "eq": float(sum(v * rate[c] for c, v in avail.items())),
        "upl": float(sum(x["upl"] for x in units)),
    }
