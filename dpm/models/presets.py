"""Named parameter sets of real exchange portfolio-margin models.

Every preset says where each number comes from (``docs/methodology.md`` lists the public sources
with URLs and dates). Parameters change often at every venue: treat them as dated snapshots,
override what you know better with :meth:`RiskMatrixModel.with_params`, or build a Deribit model
from a live ``model_params`` payload with :func:`deribit_pm_from_model_params`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from dpm.errors import InvalidInputError
from dpm.models.risk_matrix import (
    DeltaShock,
    RiskMatrixModel,
    RollShock,
    SizeCharge,
    SpreadCredit,
    UnderlyingParams,
)
from dpm.models.scenarios import VolShock

__all__ = ["deribit_pm", "deribit_pm_from_model_params", "okx_pm", "cme_span", "paradex_pm", "dpm_default",
           "PRESETS", "preset"]

#: Deribit X:PM ``pnl_offset`` / ``max_offsetable_pnl`` per currency, live ``private/pme/simulate``
#: capture of 2026-02-15 (ETH 0.6 / 20,000,000, USD 0.4 / 1,000,000). BTC's value is not in that
#: capture; ETH's is used for it (an assumption: pass ``pnl_offset=`` to override).
_XPM_OFFSET = {"BTC": 0.6, "ETH": 0.6, "USDC": 0.4, "USD": 0.4}
_XPM_MAX_OFFSET = {"BTC": 20_000_000.0, "ETH": 20_000_000.0, "USDC": 1_000_000.0, "USD": 1_000_000.0}

_DERIBIT_EXTENDED = (-0.66, -0.33, 0.50, 1.00, 2.00, 3.00, 4.00, 5.00)


def deribit_pm(risk_currency: str = "coin", *, cross_collateral: bool = False,
               pnl_offset: Mapping[str, float] | None = None, exact_venue: bool = False) -> RiskMatrixModel:
    """Deribit Portfolio Margin (PME model), BTC as of June 2024 and ETH as of February 2026.

    ``cross_collateral=False`` is S:PM: each settlement currency on its own (aggregation
    ``"sum"``). ``True`` is X:PM: the currencies' aligned scenario vectors are summed with gains
    counted at ``pnl_offset`` (aggregation ``"pnl_offset"``; Deribit does not publish how the
    currencies combine beyond that, see ``docs/methodology.md``). ``exact_venue`` applies Deribit's
    rounding of the worst case to 9 decimals of the coin before the contingencies.

    Sources: Deribit API reference ``private/pme/simulate`` (OpenAPI response example with
    ``model_params``, June 2024; live ETH capture 2026-02-15), support article "Portfolio Margin"
    (2024). Grid: 9 price moves (4 buckets per side of ``price_range``) x 3 vol states = 27;
    extended table -66 % ... +500 % with vol up, counted ``price_range/|move|`` (times the coin
    conversion) and dampened; roll shock; delta shock; MM = 0.8 x risk-matrix margin; P&L in the
    coin (S:PM). The vol-shock formula is the one Deribit's clones (Derive, Paradex) publish.
    """
    btc = UnderlyingParams(
        price_range=0.16,
        steps_per_side=4,
        vol_shock=VolShock(up=0.5, down=0.25, short_power=0.30, long_power=0.13, min_vol_up=0.5),
        extended_moves=_DERIBIT_EXTENDED,
        extended_factor=1.0,
        extended_dampener_usd=100_000.0,
        roll_shock=RollShock(annualised_move_risk=0.075, min_annualised_move=0.01),
        delta_shock=DeltaShock(threshold_usd=20_000_000.0, m_inc=0.00005, max_delta_shock=0.10),
    )
    eth = replace(
        btc,
        price_range=0.18,
        vol_shock=VolShock(up=0.4, down=0.25, short_power=0.30, long_power=0.13, min_vol_up=0.5),
        extended_dampener_usd=200_000.0,
        roll_shock=RollShock(annualised_move_risk=0.05, min_annualised_move=0.005),
        delta_shock=DeltaShock(threshold_usd=20_000_000.0, m_inc=0.000004, max_delta_shock=0.10),
    )
    return RiskMatrixModel(
        name="deribit_xpm" if cross_collateral else "deribit_pm",
        underlyings={"BTC": btc, "ETH": eth},
        default=btc,
        risk_currency=risk_currency,
        im_factor=1.0,
        mm_factor=0.8,
        aggregation="pnl_offset" if cross_collateral else "sum",
        pnl_offset=dict(_XPM_OFFSET if pnl_offset is None else pnl_offset) if cross_collateral else {},
        max_offsetable_pnl=dict(_XPM_MAX_OFFSET) if cross_collateral else {},
        exact_venue=exact_venue,
        source="Deribit private/pme/simulate model_params (BTC June 2024, ETH Feb 2026)",
    )


def deribit_pm_from_model_params(model_params: Mapping[str, Any], *, risk_currency: str = "coin",
                                 cross_collateral: bool | None = None,
                                 exact_venue: bool = True) -> RiskMatrixModel:
    """A Deribit PM model from the ``model_params`` object of a ``private/pme/simulate`` response.

    Deribit publishes its live parameters there (per currency pair: price range, vol shocks and
    powers, extended-table factor, delta-shock parameters; per currency: roll shock, extended
    dampener, ``pnl_offset``; ``mm_factor``). Keys this function does not know are ignored; missing
    keys raise ``InvalidInputError`` naming them. ``cross_collateral`` defaults to True when any
    currency has a positive ``pnl_offset``.

    Source: Deribit API, "private/pme/simulate", https://docs.deribit.com/api-reference/account-management/private-simulate
    (response schema and example, read 2026-12-01).
    """
    if not isinstance(model_params, Mapping):
        raise InvalidInputError(f"model_params: expected a JSON object, got {type(model_params).__name__}")

    def need(d: Any, key: str, where: str) -> Any:
        if not isinstance(d, Mapping) or key not in d:
            raise InvalidInputError(f"model_params.{where}: missing {key!r}")
        return d[key]

    general = need(model_params, "general", "")
    pairs = need(model_params, "currency_pair", "")
    currencies = need(model_params, "currency", "")
    mm = float(need(general, "mm_factor", "general"))
    steps = int(need(general, "buckets_count", "general"))
    unds: dict[str, UnderlyingParams] = {}
    offsets: dict[str, float] = {}
    max_off: dict[str, float] = {}
    for key, pp in pairs.items():
        base, _, quote = str(key).partition("_")
        u = base.upper()
        where = f"currency_pair.{key}"
        cur = need(currencies, base, "currency")
        f = lambda k, d=pp, w=where: float(need(d, k, w))  # noqa: E731
        g = lambda k, d=cur, w=f"currency.{base}": float(need(d, k, w))  # noqa: E731
        unds[u] = UnderlyingParams(
            price_range=f("price_range"),
            steps_per_side=steps,
            vol_shock=VolShock(up=f("volatility_range_up"), down=f("volatility_range_down"),
                               short_power=f("short_term_vega_power"), long_power=f("long_term_vega_power"),
                               min_vol_up=f("min_volatility_for_shock_up")),
            extended_moves=_DERIBIT_EXTENDED,
            extended_factor=f("extended_table_factor"),
            extended_dampener_usd=g("extended_dampener"),
            roll_shock=RollShock(annualised_move_risk=g("annualised_move_risk"),
                                 min_annualised_move=g("min_annualised_move")),
            delta_shock=DeltaShock(threshold_usd=f("delta_total_liq_shock_threshold"), m_inc=f("m_inc"),
                                   max_delta_shock=f("max_delta_shock")),
        )
        for ccy, c in currencies.items():
            if isinstance(c, Mapping) and "pnl_offset" in c:
                offsets[str(ccy).upper()] = float(c["pnl_offset"])
                max_off[str(ccy).upper()] = float(c.get("max_offsetable_pnl", float("inf")))
    if not unds:
        raise InvalidInputError("model_params.currency_pair: no currency pair")
    xpm = any(v > 0 for v in offsets.values()) if cross_collateral is None else bool(cross_collateral)
    first = next(iter(unds.values()))
    return RiskMatrixModel(
        name="deribit_xpm" if xpm else "deribit_pm", underlyings=unds, default=first,
        risk_currency=risk_currency, im_factor=1.0, mm_factor=mm,
        aggregation="pnl_offset" if xpm else "sum", pnl_offset=offsets, max_offsetable_pnl=max_off,
        exact_venue=exact_venue,
        source=f"Deribit model_params (timestamp {general.get('timestamp', 'unknown')})",
    )


def okx_pm(*, risk_units: tuple[str, ...] = ("BTC", "ETH", "LTC")) -> RiskMatrixModel:
    """OKX Portfolio Margin (risk units MR1-MR9), parameters effective January 2025.

    Sources [O1] OKX API ``POST /api/v5/account/position-builder`` (field definitions and the
    response example of 2025-01-15) and [O2] "OKX will further adjust portfolio margin parameters"
    (2025-01-02; shocks per tier). One risk unit per underlying, units summed (no offsets across
    underlyings). MR1: the *reference* (index) price shocked by 0, ±4, ±8, ±12 % (BTC, ETH) or 0, ±6,
    ±12, ±18 % (LTC tier) x 3 vol states; MR6: ±24 % / ±36 % counted at 50 %; MR4: futures 5 % / 15 %
    annualised move risk, perpetual swaps 0.2 % / 0.8 % of the cash delta; MR7: 0.45 % / 0.7 % of the
    cash delta times the published tier multiplier; ``mmr = max(max(MR1, MR6) + MR4, MR7)`` per unit,
    IMR = 1.3 x MMR. Cash deltas are at each instrument's mark.

    Values read off the API example because OKX does not print them (**assumptions** for other
    accounts): the perpetual MR4 rates, the MR7 raw rates, the 50 % on MR6. Not published at all:
    the IV-shock table (Deribit's shape is used, up 0.5 / down 0.25). MR8 (borrowing) is an account
    figure: :func:`dpm.engines.venues.okx_position_builder`. MR2/3/5/9 are not modelled.
    """
    tiers = {  # price range, extreme move, futures MR4, perpetual MR4, MR7 raw rate
        "BTC": (0.12, 0.24, 0.05, 0.002, 0.0045),
        "ETH": (0.12, 0.24, 0.05, 0.002, 0.0045),
        "LTC": (0.18, 0.36, 0.15, 0.008, 0.007),
    }
    size_tiers = dict(bounds_usd=(250e3, 500e3, 1e6, 2e6, 3e6, 4e6), multipliers=(1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0))
    unds = {}
    for u in risk_units:
        rng, ext, mr4, perp, mr7 = tiers.get(u, tiers["LTC"])
        unds[u] = UnderlyingParams(
            price_range=rng, steps_per_side=3,
            vol_shock=VolShock(up=0.5, down=0.25, short_power=0.30, long_power=0.13),
            extreme_moves=(-ext, ext), extreme_cover=0.5, extreme_vol_dir=0,
            roll_shock=RollShock(annualised_move_risk=mr4, min_annualised_move=0.0, perpetual_rate=perp),
            size_charge=SizeCharge(rate=mr7, **size_tiers),
        )
    return RiskMatrixModel(
        name="okx_pm", underlyings=unds, default=unds.get("LTC", next(iter(unds.values()))), risk_currency="usd",
        im_factor=1.3, mm_factor=1.0, scenario_price="index",
        source="OKX portfolio-margin parameters effective Jan 2025; position-builder API example (2025-01-15)",
    )


def cme_span(price_scan_range: float = 0.30, vol_scan_range: float = 0.10,
             extreme_multiplier: float = 3.0, cover_fraction: float = 0.33,
             short_option_minimum: float = 0.0,
             spread_credits: tuple[SpreadCredit, ...] = ()) -> RiskMatrixModel:
    """CME SPAN: 16 risk-array scenarios, next-day revaluation.

    Source: CME "SPAN methodology" pages and the CME spread-calc worked example (scenario 15 =
    0.99 x full-range loss, consistent with a 3x move at 33 % cover; NSE publishes 2x and 35 %).
    Scenarios: price 0, ±1/3, ±2/3, ±3/3 of the price scan range with vol ±1 scan range (14),
    plus ± extreme (multiplier x range, vol unchanged) counted at the cover fraction. The scan
    ranges are exchange parameters published daily; the defaults here (30 % price, 10 vol points)
    are illustrative for a crypto future. ``short_option_minimum`` is SOM as a fraction of one
    underlying's value per short option.
    """
    p = UnderlyingParams(
        price_range=price_scan_range,
        steps_per_side=3,
        vol_dirs=(1, -1),
        vol_shock=VolShock(up=vol_scan_range, down=vol_scan_range, mode="absolute"),
        extreme_moves=(extreme_multiplier * price_scan_range, -extreme_multiplier * price_scan_range),
        extreme_cover=cover_fraction,
        extreme_vol_dir=0,
        time_shift_days=1.0,
        short_option_minimum=short_option_minimum,
    )
    return RiskMatrixModel(name="cme_span", default=p, risk_currency="usd", source="CME SPAN (16 scenarios)",
                           aggregation="spread" if spread_credits else "sum", spread_credits=spread_credits)


def paradex_pm() -> RiskMatrixModel:
    """Paradex portfolio margin (beta): 24 weighted scenarios.

    Source: https://docs.paradex.trade/risk/portfolio-margin. Spot ±4, ±8, ±12 %, 0 with vol +40 % /
    -22 % and ±16 % with vol up only (16 scenarios, weight 100 %), plus -66, -33, +50, +100, +200,
    +300, +400, +500 % with vol +40 % at weights 0.16/|move| (24, 48, 32, 16, 8, 5.33, 4, 3.2 %).
    MMR = 50 % of IMR. The min-delta floor and funding/fee provisions are not modelled.
    """
    p = UnderlyingParams(
        price_range=0.16,
        steps_per_side=4,
        vol_dirs=(1, -1),
        edge_vol_dirs=(1,),
        vol_shock=VolShock(up=0.40, down=0.22, short_power=0.30, long_power=0.13),
        extended_moves=_DERIBIT_EXTENDED,
        extended_factor=1.0,
    )
    return RiskMatrixModel(name="paradex_pm", default=p, risk_currency="usd", im_factor=1.0, mm_factor=0.5,
                           source="Paradex docs, Portfolio Margin (beta)")


def dpm_default(correlation: float | None = 0.8, aggregation: str | None = None) -> RiskMatrixModel:
    """dpm's configurable default: 21 price moves (±20 % in 2 % steps) x 3 vol states = 63 scenarios.

    Deribit-shaped vol shocks (up 0.5, down 0.25, powers 0.30/0.13, vol-up floor 50 %), Deribit's BTC
    roll shock, P&L in USD, and a BTC-ETH correlation of 0.8 used by the *joint* aggregation: joint
    BTC x ETH price moves weighted by that correlation, so a hedge across underlyings margins less
    than its naked leg (``aggregation="sqrt_corr"`` gives the older direction-blind combination,
    ``correlation=None`` the plain sum). The 0.8 is close to the bundled history's daily BTC-ETH log
    return correlation (0.80 over 2017-11-09 .. 2025-01-07; ``docs/methodology.md``). IM = R, MM = 0.8 R.
    """
    p = UnderlyingParams(
        price_range=0.20,
        steps_per_side=10,
        vol_shock=VolShock(up=0.5, down=0.25, short_power=0.30, long_power=0.13, min_vol_up=0.5),
        roll_shock=RollShock(annualised_move_risk=0.075, min_annualised_move=0.01),
    )
    corr = None if correlation is None else {("BTC", "ETH"): float(correlation)}
    return RiskMatrixModel(name="dpm_default", default=p, risk_currency="usd", correlation=corr,
                           aggregation=aggregation, im_factor=1.0, mm_factor=0.8,
                           source="dpm default: 21 price moves x 3 vol states, Deribit-shaped vol shocks "
                                  "and roll shock, BTC-ETH correlation offsets")


PRESETS = {
    "deribit": deribit_pm,
    "deribit_xpm": lambda: deribit_pm(cross_collateral=True),
    "okx": okx_pm,
    "span": cme_span,
    "paradex": paradex_pm,
    "default": dpm_default,
}


def preset(name: str) -> RiskMatrixModel:
    """A preset model by name: ``deribit``, ``okx``, ``span``, ``paradex`` or ``default``."""
    try:
        return PRESETS[name]()
    except KeyError:
        from dpm.errors import InvalidInputError

        raise InvalidInputError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
