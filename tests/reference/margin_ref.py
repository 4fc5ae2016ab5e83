"""Slow, obviously correct pure-Python reference of dpm's whole risk-matrix margin computation.

It shares no computational code with :mod:`dpm.engines.margin` or its kernels: for every account it loops
over the positions and reprices each position itself in each scenario with a scalar Black-76 built on
``math.erfc``; the scenario list, the vol shocks, the weights and dampeners, the roll shock per
expiry, the delta shock, the floors, the correlation combine, IM/MM and the equity with collateral
haircuts are all re-derived here from the *parameters* of the model objects
(:class:`~dpm.models.RiskMatrixModel`, :class:`~dpm.models.UnderlyingParams`, ...). Only market
*data* is read through :mod:`dpm.market` / :mod:`dpm.market.surface` (forward curve, perpetual mark, index,
implied vol at a strike/expiry/forward), and the instrument table's columns are read as plain values.

Conventions (the same as ``docs/methodology.md``):

* P&L is measured in the model's risk currency: USD (``"usd"``) or the underlying coin (``"coin"``).
  Coin amounts convert to USD at the underlying's index price of the scenario, ``S * (1 + move)``.
* Scenario ``s`` moves every forward, the perpetual mark and the index of the underlying by the same
  relative ``move``; options are repriced at ``T - time_shift`` with the shocked vol.
* Across underlyings (the model's ``aggregation_mode``): ``sum``; ``sqrt_corr`` (``sqrt(L' C L)``);
  ``joint`` — every combination of one scenario per held underlying is enumerated explicitly (the
  engine instead reduces each underlying to its worst vol state per price move first), its total
  weighted P&L scaled by ``min(1, 1/m)``, ``m`` the Mahalanobis norm of the clipped normalised
  moves under the correlation (a matrix inverse written out here); ``pnl_offset`` — aligned
  scenario ``s`` of every held underlying, gains times ``pnl_offset`` (capped); ``spread`` — SPAN-style
  credits in priority order. Weighted P&L is dampened toward zero on both sides.
* The values returned are floats; per-underlying results are dicts keyed by underlying name.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

MS_PER_YEAR = 365.0 * 86400.0 * 1000.0
USD_LIKE = ("USD", "USDC", "USDT")
SPOT, FUTURE, PERPETUAL, OPTION = 0, 1, 2, 3


# ------------------------------------------------------------------------------------------ Black-76
def ncdf(x: float) -> float:
    """Standard normal CDF via erfc (accurate in both tails)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def black76(F: float, K: float, sigma: float, T: float, cp: float) -> float:
    """Undiscounted Black-76 price per unit of underlying (cp = +1 call, -1 put)."""
    s = sigma * math.sqrt(T)
    if s <= 0.0:
        return max(cp * (F - K), 0.0)
    d1 = math.log(F / K) / s + 0.5 * s
    d2 = d1 - s
    return cp * (F * ncdf(cp * d1) - K * ncdf(cp * d2))


def black76_delta(F: float, K: float, sigma: float, T: float, cp: float) -> float:
    """dB/dF: N(d1) for a call, N(d1) - 1 for a put."""
    s = sigma * math.sqrt(T)
    if s <= 0.0:
        itm = cp * (F - K) > 0.0
        return cp if itm else 0.0
    d1 = math.log(F / K) / s + 0.5 * s
    return ncdf(d1) if cp > 0 else ncdf(d1) - 1.0


# ------------------------------------------------------------------------------------------ model
def shocked_vol(shock: Any, sigma: float, T: float, direction: int) -> float:
    """Vol after the shock of :class:`dpm.models.scenarios.VolShock` parameters, written out scalar."""
    if direction == 0:
        return sigma
    if shock.mode == "absolute":
        return max(sigma + (shock.up if direction > 0 else -shock.down), 0.0)
    dte = max(T * 365.0, shock.floor_days)
    p = shock.short_power if dte <= shock.tenor_days else shock.long_power
    scale = (shock.tenor_days / dte) ** p
    if direction > 0:
        return max(sigma * (1.0 + shock.up * scale), shock.min_vol_up)
    return sigma * max(0.0, 1.0 - shock.down * scale)


def scenario_list(model: Any, underlying: str) -> list[tuple[float, int, float, float]]:
    """``[(move, vol_dir, weight, dampener_usd), ...]`` of one underlying, re-derived from parameters."""
    user = model.scenario_sets.get(underlying)
    if user is not None:
        return [(float(m), int(d), float(w), float(x)) for m, d, w, x in
                zip(user.price_move, user.vol_dir, user.weight, user.dampener_usd)]
    p = model.underlyings.get(underlying, model.default)
    coin = model.risk_currency == "coin"
    n, r = int(p.steps_per_side), float(p.price_range)
    out: list[tuple[float, int, float, float]] = []
    for k in range(-n, n + 1):
        m = r * k / n
        dirs = p.edge_vol_dirs if (p.edge_vol_dirs is not None and abs(k) == n) else p.vol_dirs
        for d in dirs:
            out.append((m, int(d), 1.0, 0.0))
    for j, m in enumerate(p.extended_moves):
        m = float(m)
        if p.extended_weights is not None:
            w = float(p.extended_weights[j])
        else:
            w = p.extended_factor * r / abs(m)
            if coin:  # Deribit: express the coin P&L on the edge-of-range basis
                w *= (1.0 + m) / (1.0 + math.copysign(1.0, m) * r)
        out.append((m, 1, w, max(abs(m) / r - 1.0, 0.0) * p.extended_dampener_usd))
    for m in p.extreme_moves:
        out.append((float(m), int(p.extreme_vol_dir), float(p.extreme_cover), 0.0))
    return out


def correlation(model: Any, names: list[str]) -> list[list[float]] | None:
    """Correlation matrix ordered like ``names`` from the model's spec, or None (plain sum)."""
    spec = model.correlation
    if spec is None:
        return None
    U = len(names)
    C = [[1.0 if i == j else 0.0 for j in range(U)] for i in range(U)]
    if isinstance(spec, dict):
        for (a, b), rho in spec.items():
            if a in names and b in names:
                i, j = names.index(a), names.index(b)
                C[i][j] = C[j][i] = float(rho)
        return C
    order = list(model.correlation_order) or names
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            C[i][j] = float(spec[order.index(a)][order.index(b)])
    return C


def inverse(A: list[list[float]]) -> list[list[float]]:
    """Gauss-Jordan inverse with partial pivoting (small matrices)."""
    n = len(A)
    M = [list(map(float, row)) + [1.0 if i == j else 0.0 for j in range(n)] for i, row in enumerate(A)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(M[r][c]))
        M[c], M[p] = M[p], M[c]
        piv = M[c][c]
        M[c] = [x / piv for x in M[c]]
        for r in range(n):
            if r != c and M[r][c] != 0.0:
                f = M[r][c]
                M[r] = [x - f * y for x, y in zip(M[r], M[c])]
    return [row[n:] for row in M]


def grid_range(model: Any, underlying: str) -> float:
    """The range that normalises an underlying's moves in the joint aggregation."""
    user = model.scenario_sets.get(underlying)
    if user is not None:
        return max(abs(float(m)) for m in user.price_move)
    return float(model.underlyings.get(underlying, model.default).price_range)


def joint_loss(model: Any, names: list[str], held: list[str], lists: dict, weighted_usd: dict) -> float:
    """Worst correlation-scaled joint loss over every combination of one scenario per held underlying."""
    C = correlation(model, names)
    idx = [names.index(u) for u in held]
    R = [[C[i][j] for j in idx] for i in idx]
    k = len(held)
    if k == 2:  # the 2 x 2 inverse written out (the engine uses an eigen-decomposition)
        r = R[0][1]
        Q = [[1.0 / (1 - r * r), -r / (1 - r * r)], [-r / (1 - r * r), 1.0 / (1 - r * r)]]
    else:
        Q = inverse([[R[i][j] + (1e-12 if i == j else 0.0) for j in range(k)] for i in range(k)])
    rng = [grid_range(model, u) for u in held]
    # every scenario of every held underlying: (normalised move, weighted P&L in USD)
    pts = [[(max(-1.0, min(1.0, lists[u][s][0] / rng[b])), weighted_usd[u][s]) for s in range(len(lists[u]))]
           for b, u in enumerate(held)]
    best = 0.0
    for combo in itertools.product(*pts):
        z = [p[0] for p in combo]
        m2 = sum(z[i] * Q[i][j] * z[j] for i in range(k) for j in range(k))
        c = 1.0 / math.sqrt(m2) if m2 > 1.0 else 1.0
        best = max(best, -c * sum(p[1] for p in combo))
    return best


def offset_loss(model: Any, held: list[str], weighted_usd: dict) -> float:
    """Deribit X:PM: aligned scenarios, losses plus pnl_offset x gains (each gain capped)."""
    S = max(len(weighted_usd[u]) for u in held)
    best = 0.0
    for s in range(S):
        A = 0.0
        for u in held:
            if s >= len(weighted_usd[u]):
                continue
            g = weighted_usd[u][s]
            if g > 0:
                g = min(g, model.max_offsetable_pnl.get(u, math.inf)) * model.pnl_offset.get(u, 0.0)
            A += g
        best = max(best, -A)
    return best


def spread_credit(model: Any, held: list[str], res: dict, net_usd: dict) -> float:
    """SPAN-style inter-commodity credits on opposite USD net deltas, in priority order."""
    rem = {u: abs(net_usd[u]) for u in held}
    credit = 0.0
    for c in model.spread_credits:
        a, b = c.leg_a, c.leg_b
        if a not in held or b not in held or not net_usd[a] * net_usd[b] < 0:
            continue
        ra, rb = abs(net_usd[a]), abs(net_usd[b])
        n = min(rem[a], rem[b] / c.ratio)
        if n <= 0:
            continue
        credit += c.rate * (n * res["scan"][a] / ra + n * c.ratio * res["scan"][b] / rb)
        rem[a] -= n
        rem[b] -= n * c.ratio
    return credit


def combine(model: Any, names: list[str], L: list[float]) -> float:
    """``sqrt(L' C L)`` with the model's correlation, or ``sum(L)`` without one."""
    C = correlation(model, names)
    if C is None:
        return sum(L)
    q2 = sum(L[i] * C[i][j] * L[j] for i in range(len(names)) for j in range(len(names)))
    return math.sqrt(q2) if q2 > 0 else 0.0


# ------------------------------------------------------------------------------------------ market
class _Inst:
    """Plain-Python view of one instrument and its market inputs."""

    __slots__ = ("name", "kind", "und", "cp", "K", "expiry", "inverse", "cs", "F", "S", "T", "vol", "surface",
                 "mark")


def instrument(table: Any, market: Any, i: int) -> _Inst:
    """Read instrument ``i`` of ``table`` and its forward / time / vol from ``market``."""
    x = _Inst()
    x.name = str(table.name[i])
    x.kind = int(table.kind[i])
    x.und = str(table.underlyings[int(table.underlying[i])])
    x.cp = 1.0 if int(table.option_type[i]) > 0 else -1.0
    x.K = float(table.strike[i])
    x.expiry = int(table.expiry_ms[i])
    x.inverse = bool(table.inverse[i])
    x.cs = float(table.contract_size[i])
    um = market.underlyings[x.und]
    x.S = float(um.index_price)
    x.surface = um.vol_surface
    if x.kind in (FUTURE, OPTION):
        x.T = (x.expiry - market.timestamp_ms) / MS_PER_YEAR
        x.F = float(um.forward_curve.forward(x.T))
    elif x.kind == PERPETUAL:
        x.T, x.F = 0.0, float(um.perpetual_price)
    else:
        x.T, x.F = 0.0, x.S
    x.vol = float(x.surface.implied_vol(x.K, x.T, x.F)) if x.kind == OPTION else 0.0
    x.mark = x.F
    settle = str(table.settlement[i])
    if not x.inverse and settle in getattr(market, "usd_rates", {}):
        x.cs *= float(market.usd_rates[settle])  # USD per unit of the settlement currency
    return x


# ------------------------------------------------------------------------------------------ margin
def position_pnl(x: _Inst, model: Any, scen: list, coin: bool) -> list[float]:
    """P&L per contract of instrument ``x`` in every scenario, in the risk currency."""
    p = model.underlyings.get(x.und, model.default)
    dt = p.time_shift_days / 365.0
    out = []
    if x.kind == OPTION:
        T1 = max(x.T - dt, 0.0)
        if model.sticky == "moneyness":  # base vol read from the surface at the shocked forward
            base_vols = [float(v) for v in x.surface.implied_vol(x.K, x.T, [x.F * (1.0 + m) for m, *_ in scen])]
        else:
            base_vols = [x.vol] * len(scen)

        def value(F: float, S: float, sigma: float, T: float) -> float:
            b = black76(F, x.K, sigma, T, x.cp)
            v = x.cs * (b / F if x.inverse else b)  # native: coin (inverse) or USD (linear)
            if x.inverse and not coin:
                v *= S
            elif not x.inverse and coin:
                v /= S
            return v

        v0 = value(x.F, x.S, x.vol, x.T)
        for (m, d, _w, _dmp), bv in zip(scen, base_vols):
            sig = shocked_vol(p.vol_shock, bv, x.T, d)
            out.append(value(x.F * (1.0 + m), x.S * (1.0 + m), sig, T1) - v0)
    else:
        for m, *_ in scen:
            F1 = x.F * (1.0 + m)
            pnl = x.cs * (1.0 / x.F - 1.0 / F1) if x.inverse else x.cs * (F1 - x.F)
            S1 = x.S * (1.0 + m)
            if x.inverse and not coin:
                pnl *= S1
            elif not x.inverse and coin:
                pnl /= S1
            out.append(pnl)
    return out


def cash_delta_factor(model: Any, x: _Inst) -> float:
    """OKX (scenario_price "index"): linear deltas count at the instrument's own mark / forward."""
    if model.scenario_price == "index" and not x.inverse:
        return x.mark / x.S
    return 1.0


def position_delta(x: _Inst) -> float:
    """Delta per contract in coins (Deribit's convention for inverse options: delta - premium)."""
    if x.kind == OPTION:
        d = black76_delta(x.F, x.K, x.vol, x.T, x.cp)
        if x.inverse:
            d -= black76(x.F, x.K, x.vol, x.T, x.cp) / x.F
        return x.cs * d
    return x.cs / x.F if x.inverse else x.cs


def position_value_usd(x: _Inst) -> float:
    """Mark value per contract in USD counted in equity (options and spot; futures/perps settle P&L)."""
    if x.kind == OPTION:
        b = black76(x.F, x.K, x.vol, x.T, x.cp)
        return x.cs * b / x.F * x.S if x.inverse else x.cs * b
    if x.kind == SPOT:
        return x.cs * x.S
    return 0.0


def margin_account(model: Any, market: Any, table: Any, positions: list[tuple[int, float]],
                   collateral: dict[str, float] | None = None, cache: dict | None = None) -> dict[str, Any]:
    """Margin of one account, every number computed here.

    Parameters
    ----------
    positions : list of (instrument id, signed quantity)
    collateral : dict currency -> amount
    cache : optional dict reused across accounts for instrument market inputs (pure data reads;
        every position is still repriced in every scenario).

    Returns
    -------
    dict with ``im, mm, risk, risk_sum, equity, collateral, value`` and per underlying dicts
    ``L, scan, roll, dshock, floor, weighted`` (the weighted, dampened scenario P&L list).
    """
    cache = {} if cache is None else cache
    coin = model.risk_currency == "coin"
    names = [str(u) for u in table.underlyings]
    res: dict[str, Any] = {k: {} for k in ("L", "scan", "roll", "dshock", "floor", "weighted")}
    value = 0.0
    by_und: dict[str, list[tuple[_Inst, float]]] = {}
    lists: dict[str, list] = {}
    weighted_usd: dict[str, list[float]] = {}
    net_usd: dict[str, float] = {}
    for i, q in positions:
        key = ("inst", int(i))
        if key not in cache:
            cache[key] = instrument(table, market, int(i))
            if model.scenario_price == "index" and cache[key].kind == PERPETUAL:
                cache[key].F = cache[key].S  # OKX shocks the reference (index) price
        x = cache[key]
        by_und.setdefault(x.und, []).append((x, float(q)))
        value += float(q) * position_value_usd(x)

    for u in names:
        pos = by_und.get(u)
        if not pos:
            for k in ("L", "scan", "roll", "dshock", "floor"):
                res[k][u] = 0.0
            res["weighted"][u] = []
            continue
        p = model.underlyings.get(u, model.default)
        S = pos[0][0].S
        to_risk = 1.0 / S if coin else 1.0   # USD -> risk currency
        risk_to_usd = S if coin else 1.0
        scen = scenario_list(model, u)
        # scenario P&L of the account: loop positions, reprice each one itself in every scenario
        acc = [0.0] * len(scen)
        for x, q in pos:
            row = position_pnl(x, model, scen, coin)
            for s in range(len(scen)):
                acc[s] += q * row[s]
        weighted = []
        for s, (m, _d, w, damp_usd) in enumerate(scen):
            v = w * acc[s]
            damp = damp_usd / (S * (1.0 + m)) if coin else damp_usd  # dampener at the shocked price
            # the dampener shrinks the P&L toward zero, never past it (gains too: Deribit's examples)
            v = min(v + damp, 0.0) if v < 0.0 else max(v - damp, 0.0)
            weighted.append(v)
        lists[u] = scen
        weighted_usd[u] = [v * risk_to_usd for v in weighted]
        scan = max(0.0, -min(weighted))
        # roll shock per expiry bucket (spot: none; perpetual: T = 0)
        buckets: dict[Any, float] = {}
        for x, q in pos:
            if x.kind == SPOT:
                continue
            b = "perp" if x.kind == PERPETUAL else x.expiry
            buckets[b] = buckets.get(b, 0.0) + q * position_delta(x) * cash_delta_factor(model, x)
        roll = 0.0
        for b, d in buckets.items():
            T = 0.0 if b == "perp" else max((b - market.timestamp_ms) / MS_PER_YEAR, 0.0)
            rate = max(p.roll_shock.min_annualised_move, math.expm1(p.roll_shock.annualised_move_risk * T))
            if b == "perp" and p.roll_shock.perpetual_rate is not None:
                rate = p.roll_shock.perpetual_rate
            roll += abs(d) * rate * (1.0 if coin else S)
        # delta shock on the net delta notional (USD), converted into the risk currency
        net = sum(q * position_delta(x) * cash_delta_factor(model, x) for x, q in pos)
        net_usd[u] = net * S
        N = abs(net) * S
        ds = p.delta_shock
        dsh = 0.0
        if N > ds.threshold_usd:
            dsh = min((N - ds.threshold_usd) * abs(net) * ds.m_inc, ds.max_delta_shock * N)
        dsh *= to_risk
        # floors: short-option minimum and the size charge with tier multipliers
        som = 0.0
        gross = 0.0
        for x, q in pos:
            if x.kind == OPTION and q < 0:
                som += -q * p.short_option_minimum * x.cs * (1.0 if coin else S)
            notional = x.cs if (x.inverse and x.kind != OPTION) else x.cs * S * cash_delta_factor(model, x)
            gross += abs(q) * notional
        sc = p.size_charge
        raw = sc.rate * gross
        mult = sc.multipliers[-1]
        for bound, mlt in zip(sc.bounds_usd, sc.multipliers):
            if raw <= bound:
                mult = mlt
                break
        size = raw * mult * to_risk if raw > 0 else 0.0
        floor = max(som, size)
        L = max(scan + roll + dsh, floor)
        res["L"][u] = L * risk_to_usd
        res["scan"][u] = scan * risk_to_usd
        res["roll"][u] = roll * risk_to_usd
        res["dshock"][u] = dsh * risk_to_usd
        res["floor"][u] = floor * risk_to_usd
        res["weighted"][u] = weighted

    Lv = [res["L"][u] for u in names]
    held = [u for u in names if u in by_und]
    mode = model.aggregation_mode
    addons = sum(res["roll"][u] + res["dshock"][u] for u in held)
    floors = sum(res["floor"][u] for u in held)
    res["combined"] = sum(res["scan"][u] for u in held)
    if mode == "sqrt_corr":
        risk = combine(model, names, Lv)
    elif mode == "joint" and 2 <= len(held) <= 4:
        res["combined"] = joint_loss(model, names, held, lists, weighted_usd)
        risk = max(res["combined"] + addons, floors)
    elif mode == "pnl_offset" and len(held) >= 2:
        res["combined"] = offset_loss(model, held, weighted_usd)
        risk = max(res["combined"] + addons, floors)
    elif mode == "spread" and len(held) >= 2:
        credit = spread_credit(model, held, res, net_usd)
        res["combined"] -= credit
        risk = max(sum(Lv) - credit, floors)
    else:
        risk = sum(Lv)
    coll = 0.0
    for ccy, amt in (collateral or {}).items():
        if amt == 0:
            continue
        price = 1.0 if ccy in USD_LIKE else float(market.underlyings[ccy].index_price)
        coll += amt * price * (1.0 - model.haircuts.get(ccy, 0.0))
    equity = coll + value
    mm = model.mm_factor * risk
    if mm > 0:
        ratio = mm / equity if equity > 0 else math.inf
    else:
        ratio = 0.0
    res.update(im=model.im_factor * risk, mm=mm, risk=risk, risk_sum=sum(Lv), equity=equity,
               collateral=coll, value=value, margin_ratio=ratio)
    return res


def margin_book(model: Any, market: Any, book: Any) -> list[dict[str, Any]]:
    """:func:`margin_account` for every account of an AccountBook (read as plain lists)."""
    cache: dict = {}
    out = []
    cur = list(book.currencies)
    for a in range(len(book)):
        lo, hi = int(book.indptr[a]), int(book.indptr[a + 1])
        pos = [(int(book.instrument_idx[k]), float(book.quantity[k])) for k in range(lo, hi)]
        coll = {c: float(book.collateral[a, j]) for j, c in enumerate(cur)}
        out.append(margin_account(model, market, book.table, pos, coll, cache))
    return out
