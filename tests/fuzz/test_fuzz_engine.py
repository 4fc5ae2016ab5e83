"""Fuzz the margin engine (margin_many, what-if), the VaR/ES engine's scenarios and the pricing API.

The property of the suite (fuzz_harness.attempt): a result, or a dpm error naming the field, never a
crash, a hang or a changed input; plus oracles: a margin is finite, >= 0, IM >= MM under every
preset; a what-if equals a full recompute; prices are finite and within their no-arbitrage bounds.
"""
from __future__ import annotations

import numpy as np
from fuzz_harness import attempt, fuzz, oracle
from fuzz_strategies import INSTRUMENTS, json_scalars, nasty_floats
from hypothesis import given
from hypothesis import strategies as st

from dpm.engines.margin import MarginEngine
from dpm.engines.risk import ScenarioRiskEngine
from dpm.market.sample import default_market
from dpm.market.table import InstrumentTable
from dpm.models.presets import PRESETS, preset
from dpm.models.scenarios import ScenarioSet
from dpm.portfolio.accounts import AccountBook
from dpm.pricing.black import implied_vol, price

TABLE = InstrumentTable.from_names(INSTRUMENTS)
M = len(TABLE)
MARKET = default_market()
ENGINES = {name: MarginEngine(MARKET, TABLE, preset(name), workers=1) for name in sorted(PRESETS)}
RISK = ScenarioRiskEngine(MARKET, TABLE, workers=1)
ENGINE_FIELDS = ("margin", "quantity", "quantities", "orders", "instrument", "instrument_ids", "account",
                 "collateral", "revalued", "scenarios", "price_move", "vol_shock", "names", "levels")

#: quantities a desk may send by mistake: huge, tiny, signed zero, the float limits
quantities = st.one_of(st.floats(-1e7, 1e7), st.sampled_from([0.0, -0.0, 1e300, -1e300, 1e308, 5e-324, 1e-300]))


@st.composite
def books(draw):
    n = draw(st.integers(1, 4))
    acc, inst, qty = [], [], []
    for a in range(n):
        for i in draw(st.lists(st.integers(0, M - 1), min_size=0, max_size=5, unique=True)):
            acc.append(a)
            inst.append(i)
            qty.append(draw(quantities))
    coll = draw(st.lists(st.lists(st.one_of(st.floats(0, 1e7), st.sampled_from([1e308, 0.0])), min_size=4, max_size=4),
                         min_size=n, max_size=n))
    return AccountBook.from_arrays(np.array(acc, dtype=np.int64), np.array(inst, dtype=np.int64),
                                   np.array(qty, dtype=np.float64), TABLE, collateral=np.array(coll), n_accounts=n)


@fuzz("engine.margin_many", ci=40, long=40_000)
@given(book=books(), name=st.sampled_from(sorted(PRESETS)))
def test_margin_many(book, name) -> None:
    engine = ENGINES[name]
    res = attempt("engine.margin_many", lambda: engine.margin_many(book, contributions=True), fields=ENGINE_FIELDS,
                  inputs=[book.quantity, book.collateral, book.instrument_idx])
    if res is not None:
        im, mm = res.initial_margin, res.maintenance_margin
        oracle("engine.margin_many", np.isfinite(im).all() and np.isfinite(mm).all(), "a non-finite margin")
        oracle("engine.margin_many", (im >= 0).all() and (im >= mm * (1 - 1e-12)).all(), "IM < 0 or IM < MM")
        oracle("engine.margin_many", np.isfinite(res.contribution).all(), "a non-finite contribution")


orders = st.lists(st.tuples(
    st.one_of(st.sampled_from(INSTRUMENTS), st.integers(-2, M + 1), json_scalars, st.just("BTC-NOPE")),
    st.one_of(quantities, nasty_floats, json_scalars)), max_size=4)


@fuzz("engine.what_if", ci=40, long=30_000)
@given(book=books(), name=st.sampled_from(sorted(PRESETS)), orders=orders)
def test_what_if(book, name, orders) -> None:
    engine = ENGINES[name]
    one = book.subset([0])
    state = attempt("engine.what_if", lambda: engine.prepare(one), fields=ENGINE_FIELDS)
    if state is None:
        return
    res = attempt("engine.what_if", lambda: state.what_if(orders), fields=ENGINE_FIELDS, describe=repr(orders))
    if res is None:
        return
    oracle("engine.what_if", np.isfinite(res.initial_margin), "a non-finite what-if margin")
    # the same orders merged into the book and margined from scratch give the same IM
    ids = [TABLE.index_of([o])[0] if isinstance(o, str) else int(o) for o, _ in orders]
    merged = AccountBook.from_arrays(np.zeros(one.n_positions + len(ids), dtype=np.int64),
                                     np.concatenate([one.instrument_idx, np.array(ids, dtype=np.int64)]),
                                     np.concatenate([one.quantity, [float(q) for _, q in orders]]), TABLE,
                                     n_accounts=1)
    full = attempt("engine.what_if", lambda: engine.margin_many(merged), fields=ENGINE_FIELDS)
    if full is not None:
        ref = float(full.initial_margin[0])
        oracle("engine.what_if", abs(res.initial_margin - ref) <= 1e-9 * max(1.0, abs(ref)),
               f"what-if {res.initial_margin!r} differs from a full recompute {ref!r}")


@fuzz("engine.var_es", ci=20, long=10_000)
@given(book=books(), moves=st.lists(st.lists(st.one_of(st.floats(-0.99, 3.0), nasty_floats), min_size=2, max_size=2),
                                    min_size=1, max_size=12),
       level=st.one_of(st.floats(0.5, 0.999), nasty_floats))
def test_var_es(book, moves, level) -> None:
    def run():
        pm = np.array(moves, dtype=np.float64)
        sc = ScenarioSet(pm, np.zeros_like(pm), tuple(f"s{i}" for i in range(len(pm))), ("BTC", "ETH"))
        return RISK.var_es(book, sc, (level,))

    res = attempt("engine.var_es", run, fields=ENGINE_FIELDS)
    if res is not None:
        oracle("engine.var_es", np.isfinite(res.es).all() and (res.es >= res.var - 1e-9).all(), "ES < VaR or NaN")


@fuzz("pricing.price", ci=60, long=200_000)
@given(F=st.one_of(st.floats(1e-6, 1e9), nasty_floats), K=st.one_of(st.floats(1e-6, 1e9), nasty_floats),
       vol=st.one_of(st.floats(0, 10), nasty_floats), T=st.one_of(st.floats(0, 50), nasty_floats),
       cp=st.sampled_from(["call", "put", "c", 1, -1, 0, "x", None]), inverse=st.sampled_from([False, True, "no", 1]))
def test_price(F, K, vol, T, cp, inverse) -> None:
    args = [np.full(3, F), np.full(3, K), np.full(3, vol), np.full(3, T)]
    p = attempt("pricing.price", lambda: price(*args, cp, inverse=inverse), inputs=args,
                fields=("forward", "strike", "vol", "time", "option_type", "inverse"))
    if p is not None:
        oracle("pricing.price", np.isfinite(p).all() and (p >= 0).all(), "a non-finite or negative price")
        bound = (F if cp in ("call", "c", 1) else K) / (F if inverse is True else 1.0)
        oracle("pricing.price", (p <= bound * (1 + 1e-12) + 1e-300).all(), "a price above its no-arbitrage bound")


@fuzz("pricing.implied_vol", ci=60, long=200_000)
@given(P=st.one_of(st.floats(0, 1e9), nasty_floats), F=st.one_of(st.floats(1e-3, 1e7), nasty_floats),
       K=st.one_of(st.floats(1e-3, 1e7), nasty_floats), T=st.one_of(st.floats(1e-6, 30), nasty_floats),
       cp=st.sampled_from(["call", "put", 7]))
def test_implied_vol(P, F, K, T, cp) -> None:
    args = [np.full(2, P), np.full(2, F), np.full(2, K), np.full(2, T)]
    v = attempt("pricing.implied_vol", lambda: implied_vol(*args, cp), inputs=args,
                fields=("price", "forward", "strike", "time", "option_type"))
    if v is not None:
        ok = np.isnan(v) | ((v >= 0) & np.isfinite(v))
        oracle("pricing.implied_vol", ok.all(), "a vol that is negative or infinite")
        live = np.isfinite(v) & (v > 0)
        if live.any():
            back = price(args[1][live], args[2][live], v[live], args[3][live], cp)
            tol = 1e-7 * np.maximum(args[1][live], args[2][live])
            oracle("pricing.implied_vol", (np.abs(back - args[0][live]) <= tol).all(), "does not reprice the input")
