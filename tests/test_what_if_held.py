"""A what-if on an instrument the account already holds is margined as the merged position.

Found by the long fuzz profile (``engine.what_if``: what-if 0.117 against a full recompute 0.0
under the OKX preset): the gross notional and the short-option sums are not linear in the quantity,
and the what-if added ``|order|`` to them even when the order reduced a held position. Oracle: the
merged book margined from scratch by ``margin_many`` (an independent path: the CSR gather).
"""
from __future__ import annotations

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.live import LiveBook
from dpm.market.sample import default_instruments, default_market
from dpm.market.table import InstrumentTable
from dpm.models.presets import PRESETS, preset
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts

TAB = InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-28NOV26-92000-C", "BTC-28NOV26-92000-P", "ETH-PERPETUAL"])
CASES = [
    ([(0, 1.0)], [(0, -1.0)]),                                   # a sell that closes the long
    ([(0, 3.0), (1, -2.0)], [(1, 2.5), (0, -1.0), (1, -0.5)]),   # two orders on one held option
    ([(1, -2.0)], [(1, 1.0)]),                                   # buying back half a short call
    ([(2, 5.0), (3, -100.0)], [(2, -7.5), (3, 250.0)]),          # flips of both signs
    ([(0, -1e12), (1, 3.0)], [(0, 1e12)]),                        # closing the largest position a
    ([(0, -1e300), (2, 1.0)], [(0, 1e300)]),                      # live book takes, and beyond: no
    ([(1, 1.0)], [(0, 1e12), (0, -1e12)]),                        # cancellation of q P[i] - q P[i]
]


def _book(legs):
    return AccountBook.from_arrays([0] * len(legs), [i for i, _ in legs], [q for _, q in legs], TAB, n_accounts=1)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("held, orders", CASES)
def test_what_if_on_held_instruments_equals_the_merged_book(name, held, orders):
    engine = MarginEngine(default_market(), TAB, preset(name), workers=1)
    state = engine.prepare(_book(held), 0)
    ids = np.array([i for i, _ in orders], dtype=np.int64)
    qty = np.array([q for _, q in orders])
    full = float(engine.margin_many(_book(held + orders)).initial_margin[0])
    assert state.what_if_ids(ids, qty) == pytest.approx(full, rel=1e-12, abs=1e-9)
    names = [(TAB.name[i], q) for i, q in orders]
    assert state.what_if(names).initial_margin == pytest.approx(full, rel=1e-12, abs=1e-9)


def test_live_check_of_a_reducing_order_uses_the_merged_position():
    """The pre-trade check of an order on a held instrument (no resting orders): the order rests
    until filled, so the IM after is ``im_factor x max(R(positions), R(positions + order))``; the
    second term must be the merged position's, as ``margin_many`` computes it."""
    table, market = default_instruments(), default_market()
    engine = MarginEngine(market, table, preset("okx"), workers=1)
    book = generate_accounts(40, table, seed=5)
    live = LiveBook(engine, book, workers=1)
    checked = 0
    for a in range(len(book)):
        s, e = int(book.indptr[a]), int(book.indptr[a + 1])
        if e == s:
            continue
        i, q = int(book.instrument_idx[s]), float(book.quantity[s])
        if not engine.revaluation_plan.available[i]:
            continue
        ok, im_after = live.check_one(a, i, -0.5 * q)  # halve the first position
        one = book.subset([a])
        merged = AccountBook.from_arrays(np.zeros(one.n_positions + 1, dtype=np.int64),
                                         np.append(one.instrument_idx, i), np.append(one.quantity, -0.5 * q),
                                         table, n_accounts=1)
        expected = max(float(engine.margin_many(one).initial_margin[0]),
                       float(engine.margin_many(merged).initial_margin[0]))
        assert im_after == pytest.approx(expected, rel=1e-9)
        assert live.check(a, [(i, -0.5 * q)]).initial_margin_after == pytest.approx(expected, rel=1e-9)
        checked += 1
        if checked == 5:
            break
    assert checked == 5


@pytest.mark.parametrize("held_ids, held_qty, message", [
    ([0], None, "quantities of held_ids"),    # an id without its quantity (would read as NaN)
    ([0, 1], [1.0], "one quantity"),          # lengths differ
    ([1, 0], [1.0, 2.0], "strictly increasing"),
    ([1, 1], [1.0, 2.0], "strictly increasing"),
    (np.array([0, 5, 3]), np.array([1.0, 2.0, 3.0]), "strictly increasing"),  # arrays: the copy-only path
    (np.array([0, 5]), np.array([1.0]), "one quantity"),
])
def test_what_if_refuses_held_positions_it_cannot_use(held_ids, held_qty, message):
    from dpm._core import _gather

    engine = MarginEngine(default_market(), TAB, workers=1)
    agg = engine._plan.agg
    st = np.zeros(agg.state_size)
    with pytest.raises(ValueError, match=message):
        _gather.WhatIf(agg, st, held_ids, held_qty)


def test_risk_one_equals_the_states_total_interleaved_and_on_threads():
    """``WhatIf.risk_one`` (the pre-trade hot path: it keeps the GIL and returns the risk alone):
    calls on many states, interleaved and from two threads, give exactly what each state's
    ``total_one`` and ``total`` give, orders on held instruments and on the other underlying alike."""
    import threading

    from dpm._core import _gather

    table, market = default_instruments(), default_market()
    engine = MarginEngine(market, table, workers=1)
    book = generate_accounts(60, table, seed=11)
    live = LiveBook(engine, book, workers=1)
    rng = np.random.default_rng(3)
    agg = live._gen.agg
    whatifs = []
    for a in range(len(book)):
        s, e = int(book.indptr[a]), int(book.indptr[a + 1])
        inst, qty = book.instrument_idx[s:e].copy(), book.quantity[s:e].copy()
        st = np.empty(agg.state_size)
        agg.account_state(inst, qty, st)
        whatifs.append(_gather.WhatIf(agg, st, inst, qty))
    held = [book.instrument_idx[int(book.indptr[a]):int(book.indptr[a + 1])] for a in range(len(book))]
    calls = []
    for _ in range(3000):
        a = int(rng.integers(len(book)))
        i = int(rng.choice(held[a])) if len(held[a]) and rng.random() < 0.4 else int(rng.integers(len(table)))
        calls.append((a, i, float(rng.choice([-1.0, 1.0]) * rng.integers(1, 50))))
    want = [whatifs[a].total_one(i, q)[0] for a, i, q in calls]
    assert want == [whatifs[a].total(np.array([i]), np.array([q]))[0] for a, i, q in calls]
    assert [whatifs[a].risk_one(i, q) for a, i, q in calls] == want
    got = [None] * len(calls)

    def run(k0):
        for k in range(k0, len(calls), 2):
            a, i, q = calls[k]
            got[k] = whatifs[a].risk_one(i, q)

    threads = [threading.Thread(target=run, args=(k0,)) for k0 in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_rebuilt_what_if_equals_one_built_on_the_new_market():
    """``WhatIf.rebuilt(plan)`` (what the live book does at the first check after a tick) gives the
    bits of an evaluator built from scratch on the new market: its state and every what-if on it;
    it refuses evaluators without their positions and plans of another model."""
    from dpm._core import _gather
    from dpm.market.snapshot import MarketSnapshot

    table, market = default_instruments(), default_market()
    engine = MarginEngine(market, table, workers=1)
    und = dict(market.underlyings)
    und["BTC"] = und["BTC"].with_updates(index_price=und["BTC"].index_price * 1.013,
                                         perpetual_price=und["BTC"].perpetual_price * 1.013)
    moved = engine.with_market(MarketSnapshot(market.timestamp_ms, und, dict(market.usd_rates)))
    old, new = engine._plan.agg, moved._plan.agg
    book = generate_accounts(40, table, seed=5)
    rng = np.random.default_rng(9)
    for a in range(len(book)):
        s, e = int(book.indptr[a]), int(book.indptr[a + 1])
        inst, qty = book.instrument_idx[s:e].copy(), book.quantity[s:e].copy()
        st_old, st_new = np.empty(old.state_size), np.empty(new.state_size)
        old.account_state(inst, qty, st_old)
        new.account_state(inst, qty, st_new)
        fresh = _gather.WhatIf(new, st_new, inst, qty)
        rebuilt = _gather.WhatIf(old, st_old, inst, qty).rebuilt(new)
        for _ in range(20):
            i = int(rng.choice(inst)) if len(inst) and rng.random() < 0.4 else int(rng.integers(len(table)))
            q = float(rng.choice([-1.0, 1.0]) * rng.integers(1, 50))
            assert rebuilt.total_one(i, q) == fresh.total_one(i, q)
            assert rebuilt.risk_one(i, q) == fresh.risk_one(i, q)
    st = np.zeros(old.state_size)
    with pytest.raises(ValueError, match="positions behind this state"):
        _gather.WhatIf(old, st).rebuilt(new)
    other = MarginEngine(market, TAB, workers=1)._plan.agg  # a four-instrument table
    with pytest.raises(ValueError, match="another table or model"):
        _gather.WhatIf(old, st, [0], [1.0]).rebuilt(other)
