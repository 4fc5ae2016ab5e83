"""Cross-underlying margin: direction-aware aggregation on one revaluation pipeline.

* Every aggregation mode equals the slow pure-Python reference (``tests/reference/margin_ref.py``,
  which enumerates joint scenarios explicitly) on ~1,000 random books holding 1 to 5 underlyings.
* Hedge properties on the bundled market with the default model (documented correlation 0.8).
* The P&L matrix of a scenario set is bit-identical whichever engine asks for it.
"""
from __future__ import annotations

import zlib
from dataclasses import replace

import cross_asset_fixtures as fx
import numpy as np
import pytest
from reference import margin_ref

from dpm.engines.margin import MarginEngine
from dpm.engines.plan import RevaluationPlan
from dpm.engines.risk import ScenarioRiskEngine
from dpm.market.sample import default_instruments, default_market
from dpm.models import deribit_pm, dpm_default
from dpm.portfolio.accounts import Account, AccountBook
from dpm.portfolio.sample import generate_accounts


@pytest.fixture(scope="module")
def mk():
    return fx.market()


@pytest.fixture(scope="module")
def tab():
    return fx.table()


def _check(engine, book, ref):
    res = engine.margin_many(book, workers=2)
    for a, r in enumerate(ref):
        scale = 1e-9 + 1e-10 * sum(abs(r["L"][u]) for u in fx.UNDERLYINGS) + 1e-10 * abs(r["risk"])
        np.testing.assert_allclose(res.risk[a], r["risk"], rtol=1e-10, atol=scale, err_msg=f"account {a}")
        np.testing.assert_allclose(res.combined_scan[a], r["combined"], rtol=1e-10, atol=scale,
                                   err_msg=f"account {a}")
        np.testing.assert_allclose(res.initial_margin[a], r["im"], rtol=1e-10, atol=scale)
        for j, u in enumerate(engine.underlyings):
            np.testing.assert_allclose(res.charge[a, j], r["L"][u], rtol=1e-10, atol=scale)
    return res


@pytest.mark.slow
@pytest.mark.parametrize("aggregation, ccy, counts", [
    # about 1,000 books per mode; joint 4-underlying books are few: the reference enumerates 16^4
    # joint scenarios for each
    ("joint", "usd", {1: 60, 2: 800, 3: 110, 4: 6, 5: 24}),
    ("pnl_offset", "coin", {1: 100, 2: 500, 3: 250, 4: 100, 5: 50}),
    ("spread", "usd", {1: 100, 2: 500, 3: 250, 4: 100, 5: 50}),
    ("sqrt_corr", "coin", {1: 100, 2: 500, 3: 250, 4: 100, 5: 50}),
    ("sum", "usd", {1: 100, 2: 500, 3: 250, 4: 100, 5: 50}),
])
def test_aggregation_equals_joint_scenario_reference(aggregation, ccy, counts, mk, tab):
    model = fx.model(aggregation, ccy)
    engine = MarginEngine(mk, tab, model)
    book = fx.books(tab, counts, seed=zlib.crc32(f"{aggregation}-{ccy}".encode()))
    ref = margin_ref.margin_book(model, mk, book)
    res = _check(engine, book, ref)
    held = np.array([len({int(tab.underlying[i]) for i in book.instrument_idx[book.indptr[a]:book.indptr[a + 1]]})
                     for a in range(len(book))])
    if aggregation in ("joint", "pnl_offset", "spread"):
        # offsets actually happen on multi-underlying accounts, and never make margin exceed the sum
        total_sum = res.charge.sum(axis=1)
        multi = held >= 2
        assert np.all(res.risk <= total_sum * (1 + 1e-12) + 1e-9)
        assert (res.risk[multi] < total_sum[multi] * (1 - 1e-6)).mean() > 0.3
        # one underlying: exactly the per-underlying charge (as without aggregation)
        assert np.array_equal(res.risk[held == 1], total_sum[held == 1])
    if aggregation == "joint":
        # more than DPM_JOINT_MAX (4) held underlyings: the conservative sum
        assert np.array_equal(res.risk[held == 5], res.charge[held == 5].sum(axis=1))


@pytest.mark.parametrize("aggregation, ccy", [("joint", "usd"), ("joint", "coin"), ("pnl_offset", "usd"),
                                              ("spread", "coin")])
def test_aggregation_reference_quick(aggregation, ccy, mk, tab):
    """A small version of the test above that also runs in the debug (bounds-checked, ASan) build."""
    model = fx.model(aggregation, ccy)
    book = fx.books(tab, {1: 5, 2: 20, 3: 8, 4: 2, 5: 2}, seed=zlib.crc32(f"q-{aggregation}-{ccy}".encode()))
    _check(MarginEngine(mk, tab, model), book, margin_ref.margin_book(model, mk, book))


def test_joint_on_a_venue_grid_equals_reference():
    """Deribit's 35-scenario grids (extended table, dampener) with the joint aggregation."""
    market, table = default_market(), default_instruments()
    model = replace(deribit_pm("usd"), correlation={("BTC", "ETH"): 0.75}, aggregation="joint")
    engine = MarginEngine(market, table, model)
    book = generate_accounts(40, table, seed=21)
    ref = margin_ref.margin_book(model, market, book)
    res = engine.margin_many(book)
    for a, r in enumerate(ref):
        np.testing.assert_allclose(res.risk[a], r["risk"], rtol=1e-10, atol=1e-6)


def test_one_underlying_books_margin_exactly_as_with_no_aggregation(mk, tab):
    book = fx.books(tab, {1: 200}, seed=5)
    a = MarginEngine(mk, tab, fx.model("sum")).margin_many(book)
    for mode in ("joint", "pnl_offset", "spread", "sqrt_corr"):
        b = MarginEngine(mk, tab, fx.model(mode)).margin_many(book)
        assert np.array_equal(a.initial_margin, b.initial_margin), mode
        assert np.array_equal(a.worst_scenario, b.worst_scenario), mode


def test_contributions_sum_to_the_binding_loss(mk, tab):
    """Per-position shares (weights below 1, dampeners, joint scaling) add up to the binding loss."""
    book = fx.books(tab, {1: 30, 2: 60, 3: 20}, seed=9)
    for mode in ("sum", "joint", "pnl_offset"):
        res = MarginEngine(mk, tab, fx.model(mode)).margin_many(book, contributions=True)
        acc = np.repeat(np.arange(len(book)), np.diff(book.indptr))
        tot = np.bincount(acc, weights=res.contribution, minlength=len(book))
        np.testing.assert_allclose(-tot, res.combined_scan, rtol=1e-9, atol=1e-6)


def test_joint_binding_scenario_is_the_first_of_equal_losses():
    """Ties go to the earlier scenario in the joint scan too: a delta-one position loses the same in
    every vol state of a price move, so for BTC + ETH perpetual books the binding scenario of each
    underlying is the first scenario of its move (and its loss is the group's largest)."""
    market, table = default_market(), default_instruments()
    engine = MarginEngine(market, table, dpm_default())
    rng = np.random.default_rng(7)
    names = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC_USDC-PERPETUAL", "ETH_USDC-PERPETUAL"]
    ids = table.index_of(names)
    acc, inst, qty = [], [], []
    for a in range(200):
        legs = rng.choice(4, size=int(rng.integers(2, 5)), replace=False)
        if not ({int(table.underlying[ids[k]]) for k in legs} >= {0, 1}):
            legs = np.array([0, 1])
        for k in legs:
            acc.append(a)
            inst.append(int(ids[k]))
            qty.append(float(rng.choice([-1, 1]) * rng.integers(1, 10_000)) * (1.0 if "USDC" not in names[k] else 0.01))
    book = AccountBook.from_arrays(acc, inst, qty, table, n_accounts=200)
    res = engine.margin_many(book)
    moves = engine._plan.scenarios.price_move
    checked = 0
    for a in range(200):
        for j in range(len(engine.underlyings)):
            w = int(res.worst_scenario[a, j])
            if w < 0:
                continue
            first = int(np.flatnonzero(moves[:, j] == moves[w, j])[0])
            assert w == first, (a, j, w, first)
            checked += 1
    assert checked > 300  # most accounts lose in both underlyings' binding moves


def test_joint_pair_scan_binds_the_first_of_equal_pairs():
    """Ties between pairs of the two-underlying scan go to the earlier pair as well. A long BTC
    straddle (its worst move is no move) beside an ETH perpetual of 1e-15 contracts: the ETH losses
    vanish next to the BTC loss (a pair's summed loss is the BTC loss exactly), so every ETH move
    inside the correlation ellipse around BTC's zero move (|z| <= 0.6 at correlation 0.8) gives the
    same joint loss, and the binding ETH scenario must be the first of them. The scale factors are
    recomputed here from the model."""
    market, table = default_market(), default_instruments()
    model = dpm_default()
    engine = MarginEngine(market, table, model)
    names = list(engine.underlyings)
    btc = names.index("BTC")
    spot = market["BTC"].index_price
    legs = []
    for cp in (1.0, -1.0):
        cand = np.flatnonzero((table.underlying == btc) & (table.option_type == cp))
        exp = np.unique(table.expiry_ms[cand])
        e = exp[min(2, len(exp) - 1)]  # a few weeks out
        cand = cand[table.expiry_ms[cand] == e]
        legs.append(int(cand[np.argmin(np.abs(table.strike[cand] - spot))]))
    eth_perp = int(table.index_of(["ETH-PERPETUAL"])[0])
    rng = np.random.default_rng(11)
    n = 40
    acc = np.repeat(np.arange(n), 3)
    inst = np.tile([legs[0], legs[1], eth_perp], n)
    size = rng.integers(1, 50, n).astype(float)
    qty = np.column_stack([size, size, rng.choice([-1.0, 1.0], n) * 1e-15]).ravel()
    res = engine.margin_many(AccountBook.from_arrays(acc, inst, qty, table, n_accounts=n))
    moves = engine._plan.scenarios.price_move
    jb, je = names.index("BTC"), names.index("ETH")
    rho = margin_ref.correlation(model, names)[jb][je]
    zb = np.clip(moves[:, jb] / margin_ref.grid_range(model, "BTC"), -1.0, 1.0)
    ze = np.clip(moves[:, je] / margin_ref.grid_range(model, "ETH"), -1.0, 1.0)
    for a in range(n):
        wb, we = int(res.worst_scenario[a, jb]), int(res.worst_scenario[a, je])
        assert wb >= 0 and we >= 0 and zb[wb] == 0.0, (a, wb)  # the straddle loses most unmoved
        m2 = (zb[wb] ** 2 - 2 * rho * zb[wb] * ze + ze**2) / (1 - rho * rho)
        c = np.where(m2 > 1.0, 1.0 / np.sqrt(np.maximum(m2, 1.0)), 1.0)
        best = np.flatnonzero(c == c.max())
        assert len(np.unique(ze[best])) > 5  # a real tie between ETH moves
        assert we == best[0], (a, we, best)


# ------------------------------------------------------------------------------------------ hedges
def _hedge_books(market):
    bp, ep = market["BTC"].index_price, market["ETH"].index_price
    qb, qe = 1e6 / bp, 1e6 / ep  # equal USD deltas (linear perpetuals: 1 coin per contract)
    return {
        "btc": [("BTC_USDC-PERPETUAL", qb)],
        "eth": [("ETH_USDC-PERPETUAL", qe)],
        "long_long": [("BTC_USDC-PERPETUAL", qb), ("ETH_USDC-PERPETUAL", qe)],
        "long_short": [("BTC_USDC-PERPETUAL", qb), ("ETH_USDC-PERPETUAL", -qe)],
    }


def _im(market, table, rho, books, aggregation=None):
    engine = MarginEngine(market, table, dpm_default(rho, aggregation=aggregation))
    return {k: engine.margin(Account("a", v)).initial_margin for k, v in books.items()}


def test_hedge_across_underlyings_margins_below_the_naked_leg():
    """dpm_default, equal USD legs. The correlation is documented (0.8, the bundled history's).

    With equal scan ranges the joint worst loss of long BTC + short ETH is sqrt(2 - 2 rho) times the
    naked leg's: below it for rho > 0.5, equal at rho = 0.5 (where the second leg's roll shock is
    then the only extra charge)."""
    market, table = default_market(), default_instruments()
    books = _hedge_books(market)
    for rho in (0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99):
        im = _im(market, table, rho, books)
        assert im["long_short"] < im["btc"], rho
        # the direction-blind combination charged the hedge more than the naked leg (the defect)
        old = _im(market, table, rho, {"ls": books["long_short"]}, aggregation="sqrt_corr")
        assert old["ls"] > im["btc"]
    # rho = 0.5: the binding joint move is (-range/2, +range/2), half of each leg's own scan
    e = MarginEngine(market, table, dpm_default(0.5))
    ls = e.margin(Account("a", books["long_short"]))
    half = 0.5 * (e.margin(Account("a", books["btc"])).by_underlying["BTC"]["scan"]
                  + e.margin(Account("a", books["eth"])).by_underlying["ETH"]["scan"])
    assert ls.combined_scan == pytest.approx(half, rel=1e-12)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.5, 0.8, 0.99])
def test_long_long_between_larger_leg_and_sum(rho):
    market, table = default_market(), default_instruments()
    im = _im(market, table, rho, _hedge_books(market))
    assert max(im["btc"], im["eth"]) <= im["long_long"] <= im["btc"] + im["eth"]


def test_margin_is_monotone_and_continuous_in_correlation():
    market, table = default_market(), default_instruments()
    books = _hedge_books(market)
    rhos = np.round(np.arange(0.0, 0.991, 0.03), 2)
    ll, ls = [], []
    for rho in rhos:
        im = _im(market, table, float(rho), {"ll": books["long_long"], "ls": books["long_short"]})
        ll.append(im["ll"])
        ls.append(im["ls"])
    ll, ls = np.array(ll), np.array(ls)
    assert np.all(np.diff(ll) >= -1e-9 * ll[:-1])   # long + long: more correlation, more margin
    assert np.all(np.diff(ls) <= 1e-9 * ls[:-1])    # long + short: more correlation, less margin
    # continuity: each step changes margin by no more than the continuous ellipse bound changes
    # (sqrt(2 +- 2 rho) x the naked scan), plus a little for the grid's discreteness
    naked = _im(market, table, 0.5, {"b": books["btc"]})["b"]
    for sign, im in ((1.0, ll), (-1.0, ls)):
        bound = naked * np.sqrt(2.0 + sign * 2.0 * rhos)
        assert np.all(np.abs(np.diff(im)) <= 1.5 * np.abs(np.diff(bound)) + 0.01 * naked)


# ------------------------------------------------------------------------------------------ one pipeline
def test_pnl_matrix_identical_whichever_engine_asks():
    market, table = default_market(), default_instruments()
    margin = MarginEngine(market, table, dpm_default())
    risk = ScenarioRiskEngine(market, table)
    assert np.array_equal(margin.pnl_matrix, risk.revalue(margin.scenarios))
    # the coin-denominated matrix of Deribit's S:PM is the same plan in another currency
    deribit = MarginEngine(market, table, deribit_pm("coin"))
    coin = RevaluationPlan(market, table, currency="coin").revalue(deribit.scenarios)
    assert np.array_equal(deribit.pnl_matrix, coin)
    # VaR/ES and stress on the margin's own scenario set see the same P&L
    book = generate_accounts(50, table, seed=3)
    pnl = risk.account_pnl(book, margin.scenarios)
    full = np.zeros((len(book), len(margin.scenarios)))
    acc = np.repeat(np.arange(len(book)), np.diff(book.indptr))
    np.add.at(full, acc, book.quantity[:, None] * margin.pnl_matrix[book.instrument_idx])
    np.testing.assert_allclose(pnl, full, rtol=1e-12, atol=1e-6)
    stress = risk.stress(book, margin.scenarios)
    assert np.array_equal(stress.loss, -pnl + 0.0)


def test_workers_mean_the_same_everywhere():
    market, table = default_market(), default_instruments()
    book = generate_accounts(300, table, seed=4)
    e1 = MarginEngine(market, table, dpm_default(), workers=1)
    e2 = MarginEngine(market, table, dpm_default(), workers=2)
    assert e1.workers == 1 and e2.workers == 2
    assert np.array_equal(e1.pnl_matrix, e2.pnl_matrix)
    r1, r2 = e1.margin_many(book), e2.margin_many(book)
    assert np.array_equal(r1.initial_margin, r2.initial_margin)
    assert np.array_equal(r1.initial_margin, e1.margin_many(book, workers=2).initial_margin)
    assert ScenarioRiskEngine(market, table, workers=1).workers == 1


def test_bad_data_policy_is_the_same_in_every_engine(monkeypatch):
    """An option whose surface gives vol <= 0 is unavailable in margin and VaR alike (named if held)."""
    from dpm.errors import MarketDataError
    from dpm.market.snapshot import MarketSnapshot

    market, table = default_market(), default_instruments()
    i = int(np.flatnonzero(np.asarray(table.kind) == 3)[0])
    target = str(table.name[i])
    real = MarketSnapshot.instrument_inputs

    def broken_surface(self, tab):
        inp = real(self, tab)
        vol = np.array(inp.vol, dtype=np.float64)
        vol[[j for j, n in enumerate(tab.name) if n == target]] = 0.0
        return type(inp)(inp.forward, inp.time, vol, inp.index, inp.timestamp_ms)

    sc = MarginEngine(market, table).scenarios
    monkeypatch.setattr(MarketSnapshot, "instrument_inputs", broken_surface)
    margin = MarginEngine(market, table)
    risk = ScenarioRiskEngine(market, table)
    monkeypatch.undo()
    book = AccountBook.from_arrays([0], [i], [1.0], table, account_ids=["ann"])
    with pytest.raises(MarketDataError, match=rf"'ann'.*'{target}'.*implied vol 0\.0"):
        margin.margin_many(book)
    with pytest.raises(MarketDataError, match=rf"'ann'.*'{target}'.*implied vol 0\.0"):
        risk.var_es(book, sc)
