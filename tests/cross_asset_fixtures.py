"""A synthetic five-underlying market, table and books for the cross-asset aggregation tests.

Everything is generated from a seed: flat-ish SVI smiles, a 2 % basis, inverse and linear perpetuals,
futures and options on BTC, ETH, SOL, XRP and DOGE.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from dpm.market.snapshot import ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.specs import to_ms
from dpm.market.surface import VolSurface
from dpm.market.table import InstrumentTable
from dpm.models.risk_matrix import RiskMatrixModel, RollShock, SpreadCredit, UnderlyingParams
from dpm.models.scenarios import VolShock
from dpm.portfolio.accounts import AccountBook

UNDERLYINGS = ("BTC", "ETH", "SOL", "XRP", "DOGE")
PRICES = {"BTC": 92_000.0, "ETH": 3_100.0, "SOL": 180.0, "XRP": 2.5, "DOGE": 0.4}
VOLS = {"BTC": 0.55, "ETH": 0.7, "SOL": 0.9, "XRP": 0.85, "DOGE": 1.1}
RANGES = {"BTC": 0.16, "ETH": 0.18, "SOL": 0.25, "XRP": 0.22, "DOGE": 0.3}
NOW = to_ms(dt.datetime(2026, 11, 27, 8, tzinfo=dt.timezone.utc))
EXPIRIES = ("4DEC26", "25DEC26", "26MAR27")
_DAYS = {"4DEC26": 7, "25DEC26": 28, "26MAR27": 119}


def market() -> MarketSnapshot:
    unds = {}
    for u in UNDERLYINGS:
        S = PRICES[u]
        Ts = np.array([_DAYS[e] for e in EXPIRIES]) / 365.0
        v = VOLS[u]
        params = [[v * v * T, 0.04 * np.sqrt(T), -0.3, 0.0, 0.2] for T in Ts]
        surf = VolSurface.from_svi_params(params, Ts, repair=False)
        curve = ForwardCurve.from_rate(S, 0.02)
        unds[u] = UnderlyingMarket(S, curve, surf, perpetual_price=S * 1.0003)
    return MarketSnapshot(NOW, unds)


def _strike(u: str, x: float) -> str:
    k = PRICES[u] * x
    # round to 3 significant digits, written Deribit-style (decimal point as "d")
    digits = max(0, 2 - int(np.floor(np.log10(k))))
    k = round(k, digits)
    text = np.format_float_positional(k, trim="-")
    return text.replace(".", "d")


def table() -> InstrumentTable:
    names = []
    for u in UNDERLYINGS:
        names += [f"{u}-PERPETUAL", f"{u}_USDC-PERPETUAL", f"{u}-25DEC26"]
        for e in ("4DEC26", "26MAR27"):
            for x in (0.8, 1.0, 1.25):
                names += [f"{u}-{e}-{_strike(u, x)}-C", f"{u}-{e}-{_strike(u, x)}-P"]
    return InstrumentTable.from_names(names)


def correlation() -> np.ndarray:
    """A 5 x 5 correlation from a two-factor model: the majors strongly correlated, XRP and DOGE
    negatively correlated with each other (a second factor they load on with opposite signs)."""
    load = np.array([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.35, 0.7], [0.3, -0.75]])
    C = load @ load.T
    C += np.diag(1.0 - np.diag(C))  # idiosyncratic variance: unit diagonal, positive definite
    return C


def model(aggregation: str = "joint", risk_currency: str = "usd") -> RiskMatrixModel:
    """A small grid (7 moves x 2 vol states + 2 extended) so the reference can enumerate joint moves."""
    und = {}
    for u in UNDERLYINGS:
        und[u] = UnderlyingParams(
            price_range=RANGES[u], steps_per_side=3, vol_dirs=(1, -1),
            vol_shock=VolShock(up=0.4, down=0.2, min_vol_up=0.3),
            extended_moves=(-0.5, 0.6), extended_factor=1.0, extended_dampener_usd=2_000.0,
            roll_shock=RollShock(annualised_move_risk=0.05, min_annualised_move=0.002),
        )
    return RiskMatrixModel(
        name=f"test_{aggregation}", underlyings=und, default=und["BTC"], risk_currency=risk_currency,
        correlation=correlation(), correlation_order=UNDERLYINGS, aggregation=aggregation,
        pnl_offset={"BTC": 0.6, "ETH": 0.5, "SOL": 0.3, "XRP": 0.0, "DOGE": 1.0},
        max_offsetable_pnl={"BTC": 50_000.0, "ETH": 1e12, "SOL": 1e12, "XRP": 1e12, "DOGE": 2_000.0},
        spread_credits=(SpreadCredit("BTC", "ETH", 0.7), SpreadCredit("ETH", "SOL", 0.5, ratio=2.0),
                        SpreadCredit("BTC", "SOL", 0.4)),
        im_factor=1.0, mm_factor=0.8,
    )


def books(tab: InstrumentTable, n_by_held: dict[int, int], seed: int) -> AccountBook:
    """Accounts holding exactly k underlyings (``n_by_held[k]`` of them), 1-3 positions each, sized
    around 10,000-200,000 USD per position (signed at random)."""
    rng = np.random.default_rng(seed)
    und = np.asarray(tab.underlying)
    acc, inst, qty = [], [], []
    a = 0
    for k, n in sorted(n_by_held.items()):
        for _ in range(n):
            for j in rng.choice(len(UNDERLYINGS), size=k, replace=False):
                pool = np.flatnonzero(und == j)
                for i in rng.choice(pool, size=int(rng.integers(1, 4)), replace=False):
                    u = UNDERLYINGS[j]
                    usd = rng.uniform(1e4, 2e5) * (1 if rng.random() < 0.5 else -1)
                    kind, inv = int(tab.kind[i]), bool(tab.inverse[i])
                    if kind != 3 and inv:
                        q = round(usd / float(tab.contract_size[i]))
                    else:
                        q = round(usd / PRICES[u], 4)
                    acc.append(a)
                    inst.append(int(i))
                    qty.append(float(q))
            a += 1
    return AccountBook.from_arrays(np.array(acc), np.array(inst), np.array(qty), tab, n_accounts=a)
