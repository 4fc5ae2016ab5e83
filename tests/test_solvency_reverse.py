"""Reverse stress: closed form for linear books, exactness and minimality on random accounts,
venue-wide search against brute force, the stress space."""
from __future__ import annotations

import math

import numpy as np
import pytest
from reference.solvency_ref import account_losses, dense_min_distance, ewma_cov_loop, venue_uncovered

from dpm.engines.risk import ScenarioRiskEngine
from dpm.engines.solvency import SolvencyEngine, StressSpace, reverse_stress, venue_reverse_stress
from dpm.engines.solvency.exposure import factor_masks
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.history import load_history
from dpm.market.sample import default_instruments, default_market
from dpm.models.calibration.ranges import realized_log_vol
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts


@pytest.fixture(scope="module")
def market():
    return default_market()


@pytest.fixture(scope="module")
def table():
    t = default_instruments()
    keep = np.isin(np.asarray(t.expiry_ms), np.unique(t.expiry_ms)[:4]) | (np.asarray(t.kind) == 2)
    return t.subset(keep)


@pytest.fixture(scope="module")
def solv(market, table):
    return SolvencyEngine(market, table, workers=2)


@pytest.fixture(scope="module")
def space():
    return StressSpace.from_history()


# ---------------------------------------------------------------------------------------------
# the stress space
# ---------------------------------------------------------------------------------------------
def test_space_covariance_is_the_ewma_of_price_and_realised_vol_moves(space):
    lr = load_history().log_returns(["BTC", "ETH"]).values
    dv = np.expm1(np.diff(realized_log_vol(lr, 30), axis=0))
    ok = np.isfinite(dv).all(axis=1)
    data = np.hstack([np.expm1(lr[1:][ok]), dv[ok]])
    np.testing.assert_allclose(space.cov, ewma_cov_loop(data, 0.94, 30), rtol=1e-10)
    s2 = StressSpace.from_history(horizon_days=2, vol=False)
    np.testing.assert_allclose(s2.cov, 2 * ewma_cov_loop(np.expm1(lr), 0.94, 30), rtol=1e-10)
    assert space.factor_names == ("BTC price", "ETH price", "BTC vol", "ETH vol")
    assert "EWMA" in space.source


def test_space_metrics_and_completion(space):
    z = np.array([[-0.1, -0.12, 0.05, 0.0]])
    w = np.linalg.solve(space.cov, z[0])
    assert math.isclose(space.mahalanobis(z)[0], math.sqrt(z[0] @ w), rel_tol=1e-12)
    assert space.percent(z)[0] == 0.12
    # conditional completion: the other factors at E[z_R | z_H] = S_RH S_HH^-1 z_H, and the distance of
    # the completed move equals the marginal distance of z_H
    zc = space.complete(np.array([-0.1]), [0])
    S = space.cov
    np.testing.assert_allclose(zc[0], S[:, 0] / S[0, 0] * -0.1, rtol=1e-12)
    assert math.isclose(space.mahalanobis(zc)[0], 0.1 / math.sqrt(S[0, 0]), rel_tol=1e-12)
    assert not space.with_metric("percent").complete(np.array([-0.1]), [0])[0, 1:].any()


def test_space_validates():
    with pytest.raises(InvalidInputError, match="positive definite"):
        StressSpace(("BTC", "ETH"), [[1.0, 1.0], [1.0, 1.0]], vol=False)
    with pytest.raises(InvalidInputError, match="shape"):
        StressSpace(("BTC",), [[1.0]], vol=True)
    with pytest.raises(InvalidInputError, match="metric"):
        StressSpace(("BTC",), [[1.0]], vol=False, metric="euclid")
    with pytest.raises(InvalidInputError, match="floor"):
        StressSpace(("BTC",), [[1.0]], vol=False, floor=-1.0)
    with pytest.raises(InvalidInputError, match="symmetric"):
        StressSpace(("BTC", "ETH"), [[1.0, 0.1], [0.2, 1.0]], vol=False)
    with pytest.raises(InvalidInputError, match="history"):
        StressSpace.from_history(("BTC", "SOL"))


# ---------------------------------------------------------------------------------------------
# linear books: the closed form
# ---------------------------------------------------------------------------------------------
def _linear_book(table):
    rows = [("long_btc", "BTC_USDC-PERPETUAL", 3.0), ("short_eth", "ETH_USDC-PERPETUAL", -40.0),
            ("inverse", "BTC-PERPETUAL", 20_000.0), ("pair", "BTC_USDC-PERPETUAL", 2.0),
            ("pair", "ETH_USDC-PERPETUAL", -30.0), ("spread", "BTC-PERPETUAL", 10_000.0),
            ("spread", "ETH_USDC-PERPETUAL", 20.0)]
    ids = ["long_btc", "short_eth", "inverse", "pair", "spread"]
    coll = {"USDC": np.array([40_000.0, 30_000.0, 25_000.0, 20_000.0, 8_000.0])}
    return AccountBook.from_arrays([ids.index(r[0]) for r in rows], table.index_of([r[1] for r in rows]),
                                   [r[2] for r in rows], table, account_ids=ids, collateral=coll,
                                   currencies=("USDC",))


def _linear_sensitivity(market, book):
    """Loss per unit relative price move (a, with loss = a'x): linear perpetual q F, inverse q cs S / F."""
    a = np.zeros((len(book), 2))
    for k, und in enumerate(("BTC", "ETH")):
        for i in range(len(book)):
            for p in range(book.indptr[i], book.indptr[i + 1]):
                name = str(book.table.name[book.instrument_idx[p]])
                if not name.startswith(und):
                    continue
                q = book.quantity[p]
                m = market[und]
                usd = q * m.perpetual_price if "_USDC" in name else q * 10.0 * m.index_price / m.perpetual_price
                a[i, k] -= usd
    return a


def test_linear_book_recovers_the_closed_form(market, table, solv):
    book = _linear_book(table)
    space = StressSpace.from_history(vol=False)
    res = solv.reverse_stress(book, space, rtol=0.002)
    a = _linear_sensitivity(market, book)
    E = res.equity
    np.testing.assert_allclose(E, [40_000, 30_000, 25_000, 20_000, 8_000])
    S = space.cov
    d_closed = E / np.sqrt(np.einsum("ij,jk,ik->i", a, S, a))
    z_closed = E[:, None] * (a @ S) / np.einsum("ij,jk,ik->i", a, S, a)[:, None]
    assert res.certified.all()
    # the search never beats the true minimum and is within rtol (+ the fine angular step) of it
    assert (res.distance >= d_closed * (1 - 1e-9)).all()
    np.testing.assert_allclose(res.distance, d_closed, rtol=0.002 + 2e-4)
    # the move: along z* = L S a / (a' S a): in whitened coordinates within one fine angular step
    # (360 / (16 x 8) degrees) of the closed form's direction (directions whose distances differ by
    # less than a lattice step tie)
    C = np.linalg.cholesky(S)
    u = np.linalg.solve(C, res.move.T).T
    u_star = np.linalg.solve(C, z_closed.T).T
    cos = (u * u_star).sum(axis=1) / np.linalg.norm(u, axis=1) / np.linalg.norm(u_star, axis=1)
    assert (np.degrees(np.arccos(np.minimum(cos, 1.0))) <= 360 / 128 + 1e-6).all()
    # exact: the loss at the move reaches the equity
    np.testing.assert_allclose(res.loss, (a * res.move).sum(axis=1), rtol=1e-9)
    assert (res.loss >= E).all()


def test_percent_metric_linear(market, table, solv):
    book = _linear_book(table)
    space = StressSpace.from_history(vol=False, metric="percent")
    res = solv.reverse_stress(book, space, rtol=0.001)
    a = _linear_sensitivity(market, book)
    # |x| <= r on every factor: the worst move puts every factor at -r sign(a): loss = r |a|_1
    want = res.equity / np.abs(a).sum(axis=1)
    np.testing.assert_allclose(res.distance, want, rtol=0.001 + 1e-9)
    assert (res.distance >= want * (1 - 1e-12)).all()
    np.testing.assert_allclose(res.percent, res.distance, rtol=1e-12)


def test_zero_and_infinite_distances(market, table, solv, space):
    ids = ["broke", "usd_only", "empty"]
    book = AccountBook.from_arrays([0], table.index_of(["BTC_USDC-PERPETUAL"]), [5.0], table, account_ids=ids,
                                   collateral={"USDC": np.array([0.0, 1000.0, 0.0])}, currencies=("USDC",),
                                   n_accounts=3)
    res = solv.reverse_stress(book, space)
    assert res.distance[0] == 0.0  # no equity: already exhausted
    assert res.distance[1] == math.inf and np.isnan(res.move[1]).all()  # nothing can move its value
    assert res.distance[2] == 0.0  # no equity at all


# ---------------------------------------------------------------------------------------------
# option books: exact, and no smaller move on a dense check grid
# ---------------------------------------------------------------------------------------------
def test_reverse_stress_is_exact_and_minimal_on_random_accounts(market, table, solv, space):
    book = generate_accounts(160, table, seed=21)
    ex = solv.exposure(book)
    rtol = 0.01
    res = solv.reverse_stress(ex, space, rtol=rtol)
    eng = solv.risk_engine
    masks = factor_masks(ex, space.underlyings, space.vol)
    fin = np.flatnonzero(np.isfinite(res.distance) & (res.distance > 0))
    assert fin.size > 40
    assert res.certified[fin].all()
    # every reported move exhausts the equity (independent revaluation), the lower one does not
    rng = np.random.default_rng(1)
    sample = rng.choice(fin, 12, replace=False)
    for a in sample:
        factors = [f for f in range(space.n_factors) if (int(masks[a]) >> f) & 1]
        z = res.move[a]
        lo = np.zeros(space.n_factors)
        lo[factors] = z[factors] * res.distance_lower[a] / res.distance[a]
        L = account_losses(eng, ex, space, int(a), np.vstack([z, lo]))
        assert L[0] >= ex.equity[a] and math.isclose(L[0], res.loss[a], rel_tol=1e-9)
        assert L[1] < ex.equity[a]
        assert res.distance[a] <= res.distance_lower[a] * (1 + rtol) * (1 + 1e-12)
        # no move of the dense grid (360 directions x 80 radii) below distance / (1 + rtol)^2 exhausts it
        dense = dense_min_distance(eng, ex, space, int(a), factors, upper=res.distance[a])
        assert dense >= res.distance[a] / (1 + rtol) ** 2, (a, dense, res.distance[a])


def test_results_do_not_depend_on_workers(market, table, space):
    book = generate_accounts(60, table, seed=8)
    r1 = SolvencyEngine(market, table, workers=1).reverse_stress(book, space)
    r2 = SolvencyEngine(market, table, workers=2).reverse_stress(book, space)
    np.testing.assert_array_equal(r1.distance, r2.distance)
    np.testing.assert_array_equal(r1.move, r2.move)


def test_reverse_stress_rejects_bad_input(table, solv, space):
    book = generate_accounts(5, table, seed=1)
    with pytest.raises(InvalidInputError, match="rtol"):
        solv.reverse_stress(book, space, rtol=0.0)
    with pytest.raises(InvalidInputError, match="r_max"):
        solv.reverse_stress(book, space, r_min=5.0, r_max=1.0)
    with pytest.raises(InvalidInputError, match="directions"):
        solv.reverse_stress(book, space, directions=2)
    with pytest.raises(InvalidTypeError, match="space"):
        reverse_stress(solv.risk_engine, solv.exposure(book), "mahalanobis")
    with pytest.raises(InvalidInputError, match="does not move"):
        solv.reverse_stress(book, StressSpace.from_history(("BTC",), vol=False))
    with pytest.raises(InvalidInputError, match="fund"):
        solv.venue_reverse_stress(book, -5.0, space)


def test_reverse_stress_names_the_account_holding_an_instrument_it_cannot_revalue(market, space):
    """The gathers read the whole book directly, so the revaluability check runs once up front: an
    option expired in the engine's market is refused, naming account and instrument."""
    from dpm.engines.margin import MarginEngine
    from dpm.engines.solvency.exposure import book_exposure
    from dpm.errors import MarketDataError
    from dpm.market.table import InstrumentTable
    from dpm.models.presets import dpm_default

    tab = InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-28NOV26-92000-C"])
    book = AccountBook.from_arrays([0, 1, 1], [0, 0, 1], [1000.0, -500.0, 2.0], tab, account_ids=["ok", "late"])
    ex = book_exposure(MarginEngine(market, tab, dpm_default()), book)
    later = ScenarioRiskEngine(market.with_updates(timestamp_ms=market.timestamp_ms + 2 * 86_400_000), tab)
    with pytest.raises(MarketDataError, match=r"'late'.*BTC-28NOV26-92000-C.*expired"):
        reverse_stress(later, ex, space)
    with pytest.raises(MarketDataError, match=r"'late'.*BTC-28NOV26-92000-C.*expired"):
        venue_reverse_stress(later, ex, space, 1e6)


# ---------------------------------------------------------------------------------------------
# venue-wide: brute force on a small book
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["mahalanobis", "percent"])
def test_venue_reverse_stress_matches_brute_force(market, table, solv, metric):
    book = generate_accounts(120, table, seed=5)
    ex = solv.exposure(book)
    space = StressSpace.from_history(vol=False, metric=metric)
    fund = 2e6
    rtol = 0.002
    v = solv.venue_reverse_stress(ex, fund, space, rtol=rtol)
    assert math.isfinite(v.distance)
    eng = solv.risk_engine
    # exact: uncovered above the fund at the move, not at the lower end in the same direction
    lo = v.move * v.distance_lower / v.distance
    U = venue_uncovered(eng, ex, space, np.vstack([v.move, lo]))
    assert U[0] > fund and math.isclose(U[0], v.uncovered, rel_tol=1e-9)
    assert U[1] <= fund
    assert v.distance <= v.distance_lower * (1 + rtol) * (1 + 1e-12)
    # brute force: 360 directions x 240 radii up to 1.2 x the distance found
    th = 2 * np.pi * np.arange(360) / 360
    units = np.column_stack([np.cos(th), np.sin(th)])
    dirs = units @ space.whitening([0, 1]).T if metric == "mahalanobis" else \
        units / np.max(np.abs(units), axis=1, keepdims=True)
    radii = 1.2 * v.distance * np.arange(1, 241) / 240
    z = (radii[None, :, None] * dirs[:, None, :]).reshape(-1, 2)
    z = z[(z > space.floor).all(axis=1)]
    Ub = venue_uncovered(eng, ex, space, z)
    brute = float(space.distance(z[Ub > fund]).min())
    step = 1.2 / 240
    assert v.distance >= brute / (1 + 2 * step) - 1e-12
    assert v.distance <= brute * (1 + rtol) * (1 + 1e-3)


def test_venue_reverse_stress_one_factor_is_exact(market, table):
    t = table.subset(np.asarray(table.underlying) == list(table.underlyings).index("BTC"))
    book = generate_accounts(80, t, seed=2)
    solv = SolvencyEngine(market, t, workers=1)
    ex = solv.exposure(book)
    space = StressSpace.from_history(("BTC",), vol=False)
    v = solv.venue_reverse_stress(ex, 5e5, space, rtol=1e-3)
    sig = math.sqrt(space.cov[0, 0])
    # along the crash direction a dense scan of the price move gives the same crossing
    x = -np.linspace(0.001, min(0.95, 1.2 * v.distance * sig), 2000)
    xs = np.concatenate([x, -x])
    U = venue_uncovered(solv.risk_engine, ex, space, xs[:, None])
    brute = float(np.abs(xs[U > 5e5]).min()) / sig
    assert abs(v.distance - brute) <= 1e-3 * brute + 1.2 * v.distance * sig / 2000 / sig


def test_zero_fund_with_bankrupt_accounts_is_distance_zero(market, table, solv, space):
    ids = ["broke"]
    book = AccountBook.from_arrays([0], table.index_of(["BTC_USDC-PERPETUAL"]), [5.0], table, account_ids=ids,
                                   collateral={"USDC": np.array([0.0])}, currencies=("USDC",))
    v = solv.venue_reverse_stress(book, 0.0, StressSpace.from_history(vol=False))
    # a zero move leaves uncovered = max(0 - 0, 0) = 0, not above a zero fund: the smallest move with
    # any loss exceeds it
    assert 0 < v.distance < 0.5


def test_engine_reverse_uses_the_same_core(market, table):
    eng = ScenarioRiskEngine(market, table)
    book = generate_accounts(30, table, seed=9)
    solv = SolvencyEngine(market, table, workers=1)
    ex = solv.exposure(book)
    space = StressSpace.from_history()
    a = reverse_stress(eng, ex, space)
    b = solv.reverse_stress(ex, space)
    np.testing.assert_array_equal(a.distance, b.distance)
    with pytest.raises(InvalidInputError, match="fund"):
        venue_reverse_stress(eng, ex, space, float("nan"))
