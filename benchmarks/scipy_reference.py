"""The margin engine's algorithm written with numpy + scipy.sparse: the speed (and result) reference.

The same two steps as :class:`dpm.engines.margin.MarginEngine`, written the way a numpy user would:

1. :func:`prepare` + :func:`revalue`: every instrument revalued once per scenario of its underlying,
   a vectorised Black-76 (``scipy.special.ndtr``) over the ``M x S`` grid of each underlying;
2. :func:`build_sparse`: each underlying's positions as a ``scipy.sparse.csr_matrix`` (accounts x
   that underlying's instruments) built from the book's columnar arrays (COO triplets -> CSR);
3. :func:`product`: ``A_u @ P_u`` (sparse x dense) gives every account's scenario P&L, then the
   worst weighted/dampened loss per underlying (``max`` / ``argmax`` over scenarios);
4. :func:`margin`: the add-ons (roll shock from per-expiry net deltas, delta shock, short-option
   minimum, size charge) with more sparse products, and the correlation combine ``sqrt(L' C L)``.

It follows the conventions of ``docs/methodology.md`` and the engine's documented inputs (forward,
time and vol from ``MarketSnapshot.instrument_inputs``, scenario sets and parameters from the
model), not the engine's code, so ``benchmarks/bench_engine.py`` also checks that both give the
same margins (to ~1e-9 relative). Only what the benchmark needs is supported: sticky-strike models
and markets in which every instrument of the table can be priced.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr

from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.models.risk_matrix import RiskMatrixModel
from dpm.portfolio.accounts import AccountBook

_MS_PER_YEAR = 365.0 * 86400.0 * 1000.0


def black76(F: np.ndarray, K: np.ndarray, sigma: np.ndarray, T: np.ndarray, cp: np.ndarray) -> np.ndarray:
    """Undiscounted Black-76 price per unit (broadcasting); intrinsic value when sigma*sqrt(T) = 0."""
    s = sigma * np.sqrt(T)
    live = s > 0
    ss = np.where(live, s, 1.0)
    d1 = np.log(F / K) / ss + 0.5 * ss
    d2 = d1 - ss
    call = F * ndtr(d1) - K * ndtr(d2)
    val = np.where(cp > 0, call, call - (F - K))  # put-call parity
    return np.where(live, np.maximum(val, np.maximum(cp * (F - K), 0.0)), np.maximum(cp * (F - K), 0.0))


@dataclass
class Underlying:
    """One underlying's instruments and scenarios."""

    name: str
    code: int
    ids: np.ndarray          # instrument ids of this underlying (sorted)
    move: np.ndarray         # S relative price moves
    vol_dir: np.ndarray      # S in {-1, 0, 1}
    weight: np.ndarray       # S
    damp: np.ndarray         # S, risk currency
    price: float             # index price (USD)
    to_risk: float           # USD -> risk currency
    risk_to_usd: float
    bucket: np.ndarray       # per instrument of ids: local expiry bucket
    bucket_rate: np.ndarray  # per bucket: roll-shock charge per unit |net delta| (risk currency)
    delta: np.ndarray        # per instrument: delta per contract (underlying units)
    som: np.ndarray          # per instrument: short-option minimum per short contract (risk ccy)
    notional: np.ndarray     # per instrument: USD notional per contract
    ds: tuple[float, float, float]   # delta shock: threshold USD, m_inc, max fraction
    size_rate: float
    pnl: np.ndarray | None = None    # len(ids) x S, filled by revalue()


@dataclass
class Inputs:
    unds: list[Underlying]
    F: np.ndarray
    K: np.ndarray
    T: np.ndarray
    vol: np.ndarray
    cp: np.ndarray
    cs: np.ndarray
    kind: np.ndarray
    inverse: np.ndarray
    dt: float
    coin_mode: bool
    corr: np.ndarray | None
    tiers: tuple[np.ndarray, np.ndarray]
    im_factor: float


def prepare(market: MarketSnapshot, table: InstrumentTable, model: RiskMatrixModel) -> Inputs:
    """Per-instrument and per-scenario inputs (market data, scenario sets, add-on parameters)."""
    if model.sticky != "strike":
        raise NotImplementedError("the reference supports sticky-strike models only")
    inp = market.instrument_inputs(table)  # raises if an instrument cannot be priced
    F = np.asarray(inp.forward, dtype=np.float64)
    T = np.asarray(inp.time, dtype=np.float64)
    vol = np.nan_to_num(np.asarray(inp.vol, dtype=np.float64), nan=0.0)
    index = np.asarray(inp.index, dtype=np.float64)
    kind = np.asarray(table.kind)
    is_opt = kind == Kind.OPTION
    inverse = np.asarray(table.inverse, dtype=bool)
    K = np.where(is_opt, np.nan_to_num(np.asarray(table.strike, dtype=np.float64), nan=1.0), 1.0)
    cp = np.where(np.asarray(table.option_type) < 0, -1.0, 1.0)
    cs = np.asarray(table.contract_size, dtype=np.float64)
    expiry = np.asarray(table.expiry_ms, dtype=np.int64)
    und_code = np.asarray(table.underlying)
    coin = model.risk_currency == "coin"
    now = market.timestamp_ms

    # delta per contract at the base market (Black-76 delta; inverse options: of the coin value)
    s = vol * np.sqrt(T)
    live = is_opt & (s > 0)
    ss = np.where(live, s, 1.0)
    d1 = np.log(F / K) / ss + 0.5 * ss
    n1 = ndtr(d1)
    bdelta = np.where(live, np.where(cp > 0, n1, n1 - 1.0), np.where(cp * (F - K) > 0, cp, 0.0))
    price = black76(F, K, vol, T, cp)
    delta = np.where(is_opt, cs * (bdelta - np.where(inverse, price / F, 0.0)),
                     np.where(inverse, cs / F, cs))
    notional = np.where(inverse & ~is_opt, cs, cs * index)

    unds = []
    dts = set()
    for j, u in enumerate(table.underlyings):
        ids = np.flatnonzero(und_code == j)
        if ids.size == 0:
            continue
        p = model.params(u)
        dts.add(p.time_shift_days)
        sset = model.scenario_grid(u)
        move = np.asarray(sset.price_move, dtype=np.float64)
        px = float(market[u].index_price)
        damp = np.asarray(sset.dampener_usd, dtype=np.float64)
        damp = damp / (px * (1.0 + move)) if coin else damp
        key = np.where(kind[ids] == Kind.SPOT, -2, np.where(kind[ids] == Kind.PERPETUAL, -1, expiry[ids]))
        uniq, local = np.unique(key, return_inverse=True)
        tb = np.where(uniq == -1, 0.0, np.maximum((uniq - now) / _MS_PER_YEAR, 0.0))
        rate = np.where(uniq == -2, 0.0, np.asarray(p.roll_shock.rate(tb), dtype=np.float64) * (1.0 if coin else px))
        som = np.where(is_opt[ids], p.short_option_minimum * cs[ids] * (1.0 if coin else px), 0.0)
        dsh = p.delta_shock
        unds.append(Underlying(
            name=u, code=j, ids=ids, move=move, vol_dir=np.asarray(sset.vol_dir), weight=np.asarray(sset.weight, dtype=np.float64),
            damp=damp, price=px, to_risk=1.0 / px if coin else 1.0, risk_to_usd=px if coin else 1.0,
            bucket=local.reshape(-1), bucket_rate=rate, delta=delta[ids], som=som, notional=notional[ids],
            ds=(float(dsh.threshold_usd), float(dsh.m_inc), float(dsh.max_delta_shock)),
            size_rate=float(p.size_charge.rate),
        ))
    sc = {(model.params(u).size_charge.bounds_usd, model.params(u).size_charge.multipliers)
          for u in table.underlyings}
    bounds, mults = next(iter(sc))
    corr = model.correlation_matrix(tuple(table.underlyings))
    return Inputs(unds=unds, F=F, K=K, T=T, vol=vol, cp=cp, cs=cs, kind=kind, inverse=inverse,
                  dt=max(dts) / 365.0, coin_mode=coin, corr=corr,
                  tiers=(np.asarray(bounds, dtype=np.float64), np.asarray(mults, dtype=np.float64)),
                  im_factor=float(model.im_factor))


def _value(x: Inputs, ids: np.ndarray, F1: np.ndarray, sigma: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Native value per contract (USD-like for linear, coin for inverse) of options ``ids``."""
    b = black76(F1, x.K[ids, None], sigma, T, x.cp[ids, None])
    return x.cs[ids, None] * np.where(x.inverse[ids, None], b / F1, b)


def revalue(x: Inputs, model: RiskMatrixModel, market: MarketSnapshot) -> None:
    """Fill ``u.pnl`` (instruments x scenarios, risk currency per contract) for every underlying."""
    for u in x.unds:
        ids = u.ids
        F0 = x.F[ids, None]
        F1 = F0 * (1.0 + u.move[None, :])
        px = u.price * (1.0 + u.move[None, :])
        inv = x.inverse[ids, None]
        # currency conversion into the risk currency: inverse in USD mode x price, linear in coin mode / price
        if x.coin_mode:
            conv = np.where(inv, 1.0, 1.0 / px)
            conv0 = np.where(inv, 1.0, 1.0 / u.price)
        else:
            conv = np.where(inv, px, 1.0)
            conv0 = np.where(inv, u.price, 1.0)
        opt = x.kind[ids] == Kind.OPTION
        pnl = np.empty((ids.size, u.move.size))
        # futures / perpetuals / spot: linear or inverse P&L of the price move, converted per scenario
        lin = np.where(inv, x.cs[ids, None] * (1.0 / F0 - 1.0 / F1), x.cs[ids, None] * (F1 - F0))
        pnl[~opt] = (lin * conv)[~opt]
        if opt.any():
            o = ids[opt]
            T0 = x.T[o]
            T1 = np.maximum(T0 - x.dt, 0.0)
            shock = model.params(u.name).vol_shock
            vols = {d: shock.shocked(x.vol[o], T0, d) for d in (-1, 0, 1)}
            sig = np.empty((o.size, u.move.size))
            for d, v in vols.items():
                sel = u.vol_dir == d
                sig[:, sel] = v[:, None]
            v1 = _value(x, o, F1[opt], sig, T1[:, None]) * conv[opt]
            v0 = _value(x, o, F0[opt], x.vol[o, None], T0[:, None]) * conv0[opt]
            pnl[opt] = v1 - v0
        u.pnl = pnl


@dataclass
class SparseBook:
    """Per underlying: the accounts x instruments CSR matrix of quantities, and helpers."""

    n: int
    A: list[sp.csr_matrix]


def build_sparse(book: AccountBook, x: Inputs) -> SparseBook:
    """``A_u`` (N x M_u, quantities) for every underlying, from the book's columnar arrays."""
    n = len(book)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(book.indptr))
    inst = np.asarray(book.instrument_idx)
    qty = np.asarray(book.quantity)
    local = np.empty(len(x.F), dtype=np.int64)
    owner = np.empty(len(x.F), dtype=np.int64)
    for j, u in enumerate(x.unds):
        local[u.ids] = np.arange(u.ids.size)
        owner[u.ids] = j
    own = owner[inst]
    mats = []
    for j, u in enumerate(x.unds):
        m = own == j
        mats.append(sp.csr_matrix((qty[m], (rows[m], local[inst[m]])), shape=(n, u.ids.size)))
    return SparseBook(n, mats)


def product(sb: SparseBook, x: Inputs) -> list[np.ndarray]:
    """Every account's scenario P&L per underlying: ``A_u @ P_u`` (N x S_u dense each)."""
    return [A @ u.pnl for A, u in zip(sb.A, x.unds)]


def margin(sb: SparseBook, x: Inputs, pnl: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Worst loss, add-ons and the combined risk of every account (USD)."""
    n = sb.n
    L = np.zeros((n, len(x.unds)))
    scan_all = np.zeros((n, len(x.unds)))
    bounds, mults = x.tiers
    for j, (A, u, P) in enumerate(zip(sb.A, x.unds, pnl)):
        v = P * u.weight
        loss = np.where(v < 0, -np.minimum(v + u.damp, 0.0), 0.0)
        scan = loss.max(axis=1) if loss.shape[1] else np.zeros(n)
        scan = np.maximum(scan, 0.0)
        present = np.diff(A.indptr) > 0
        # roll shock: |net delta| per expiry bucket
        D = sp.csr_matrix((u.delta, (np.arange(u.ids.size), u.bucket)), shape=(u.ids.size, u.bucket_rate.size))
        roll = np.abs((A @ D).toarray()) @ u.bucket_rate
        net = A @ u.delta
        Aabs = A.copy()
        Aabs.data = np.abs(Aabs.data)
        gross = Aabs @ u.notional
        Aneg = A.copy()
        Aneg.data = np.minimum(Aneg.data, 0.0)
        som = -(Aneg @ u.som)
        thr, m_inc, dmax = u.ds
        notional = np.abs(net) * u.price
        ds = np.minimum(np.maximum(notional - thr, 0.0) * np.abs(net) * m_inc, dmax * notional) * u.to_risk
        raw = u.size_rate * gross
        mult = mults[np.searchsorted(bounds, raw, side="left")] if bounds.size else np.full(n, mults[0])
        size = np.where(raw > 0, raw * mult * u.to_risk, 0.0)
        fl = np.maximum(som, size)
        lu = np.maximum(scan + roll + ds, fl)
        L[:, j] = np.where(present, lu * u.risk_to_usd, 0.0)
        scan_all[:, j] = np.where(present, scan * u.risk_to_usd, 0.0)
    if x.corr is None:
        total = L.sum(axis=1)
    else:
        total = np.sqrt(np.maximum(np.einsum("nu,uv,nv->n", L, x.corr, L), 0.0))
    return {"risk": total, "initial_margin": x.im_factor * total, "charge": L, "scan": scan_all}


class ScipyReference:
    """Convenience wrapper: ``ref = ScipyReference(market, table, model); ref.margin_many(book)``."""

    def __init__(self, market: MarketSnapshot, table: InstrumentTable, model: RiskMatrixModel) -> None:
        self.market, self.table, self.model = market, table, model
        self.inputs = prepare(market, table, model)
        revalue(self.inputs, model, market)

    def revalue(self) -> None:
        revalue(self.inputs, self.model, self.market)

    def build(self, book: AccountBook) -> SparseBook:
        return build_sparse(book, self.inputs)

    def product(self, sb: SparseBook) -> list[np.ndarray]:
        return product(sb, self.inputs)

    def finish(self, sb: SparseBook, pnl: list[np.ndarray]) -> dict[str, np.ndarray]:
        return margin(sb, self.inputs, pnl)

    def margin_many(self, book: AccountBook) -> dict[str, np.ndarray]:
        sb = self.build(book)
        return self.finish(sb, self.product(sb))
