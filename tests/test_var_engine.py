"""Full-revaluation VaR / ES / stress engine (dpm.engines.risk) against independent references.

Oracles: ``tests/reference/var_ref.py`` (every position repriced by itself with a scalar Black-76
on ``math.erfc``) + :func:`dpm.models.measures.var_es` on each account's full scenario P&L; the
closed-form VaR/ES of linear positions under (log)normal Monte Carlo; coherence properties.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from reference import var_ref
from scipy import stats

from dpm.engines.risk import ScenarioRiskEngine
from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError
from dpm.market import sample as sample_market
from dpm.market.specs import Kind
from dpm.market.table import InstrumentTable
from dpm.models.generators.montecarlo import mc_scenarios
from dpm.models.generators.stress import hypothetical_scenarios
from dpm.models.measures import component_es, var_es
from dpm.models.scenarios import MarketScenarios
from dpm.portfolio import sample
from dpm.portfolio.accounts import AccountBook

LEVELS = (0.9, 0.95, 0.975, 0.99, 0.995)

# A table with every kind of contract: inverse and linear perps, inverse futures, spot, inverse and
# linear options, one option and one future expiring in one day (inside a 2-day horizon).
MIXED_NAMES = [
    "BTC-PERPETUAL", "BTC_USDC-PERPETUAL", "BTC-25DEC26", "BTC-29JAN27", "BTC-SPOT",
    "BTC-28NOV26-92000-C", "BTC-28NOV26-90000-P",
    "BTC-25DEC26-80000-P", "BTC-25DEC26-92000-C", "BTC-25DEC26-110000-C",
    "BTC_USDC-25DEC26-90000-C", "BTC_USDC-25DEC26-80000-P", "BTC-29JAN27-100000-C",
    "ETH-PERPETUAL", "ETH_USDC-PERPETUAL", "ETH-25DEC26", "ETH-28NOV26",
    "ETH-25DEC26-3000-P", "ETH-25DEC26-3400-C", "ETH_USDC-25DEC26-3200-C", "ETH-29JAN27-2600-P",
]


@pytest.fixture(scope="module")
def market():
    return sample_market.default_market()


@pytest.fixture(scope="module")
def table():
    return sample.default_instruments()


@pytest.fixture(scope="module")
def mixed_table():
    return InstrumentTable.from_names(MIXED_NAMES)


def joint_scenarios(n: int, seed: int, horizon: int = 2, vol: bool = True) -> MarketScenarios:
    """Correlated fat-tailed joint price moves with vol shocks that rise when prices fall."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(4, size=(n, 2)) @ np.linalg.cholesky([[1.0, 0.8], [0.8, 1.0]]).T
    lr = z * np.array([0.04, 0.05])
    vs = (np.clip(-3.0 * lr + rng.normal(0.0, 0.05, size=lr.shape), -0.6, 2.0) if vol
          else np.zeros_like(lr))
    return MarketScenarios(np.expm1(lr), vs, tuple(f"s{i}" for i in range(n)), ("BTC", "ETH"),
                           horizon, "test")


def random_book(table: InstrumentTable, n: int, seed: int, max_pos: int = 8) -> AccountBook:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_pos + 1, size=n)
    acc = np.repeat(np.arange(n), counts)
    inst = rng.integers(0, len(table), size=acc.size)
    qty = rng.choice([-1.0, 1.0], size=acc.size) * rng.integers(1, 50, size=acc.size) / 10.0
    return AccountBook.from_arrays(acc, inst, qty, table, n_accounts=n)


def reference_pnl(book: AccountBook, market, scenarios) -> tuple[np.ndarray, np.ndarray]:
    """(N x S) account P&L and its rounding scale, from the pure-Python reference."""
    cache: dict[int, list[float]] = {}
    pnl = np.array([var_ref.account_pnl(book, a, market, scenarios, cache) for a in range(len(book))])
    gross = np.array([var_ref.account_gross(book, a, cache) for a in range(len(book))])
    return pnl, gross


# ----------------------------------------------------------------------------- revaluation
def test_revalue_matches_reference(mixed_table, market):
    sc = joint_scenarios(300, seed=1)
    eng = ScenarioRiskEngine(market, mixed_table)
    P = eng.revalue(sc, workers=2)
    assert P.shape == (len(mixed_table), 300) and P.dtype == np.float64
    for i in range(len(mixed_table)):
        ref = np.array(var_ref.instrument_pnl(mixed_table, market, i, sc))
        scale = 1e-10 * (1.0 + np.abs(ref).max())
        np.testing.assert_allclose(P[i], ref, rtol=1e-10, atol=scale, err_msg=mixed_table.name[i])


def test_horizon_ages_options(mixed_table, market):
    zero = MarketScenarios(np.zeros((2, 2)), np.zeros((2, 2)), ("a", "b"), ("BTC", "ETH"), 0, "t")
    five = MarketScenarios(np.zeros((2, 2)), np.zeros((2, 2)), ("a", "b"), ("BTC", "ETH"), 5, "t")
    eng = ScenarioRiskEngine(market, mixed_table)
    assert np.all(eng.revalue(zero) == 0.0)  # nothing moves, no time passes
    P5 = eng.revalue(five)
    kind = np.asarray(mixed_table.kind)
    opt = kind == Kind.OPTION
    assert np.all(P5[~opt] == 0.0)  # linear contracts do not age
    # long options lose time value (theta); the 1-day ones expire into their intrinsic value
    assert np.all(P5[opt] < 0.0)
    for i in np.flatnonzero(opt):
        ref = var_ref.instrument_pnl(mixed_table, market, i, five)
        np.testing.assert_allclose(P5[i], ref, rtol=1e-10, atol=1e-10)
    i = list(mixed_table.name).index("BTC-28NOV26-92000-C")
    x = var_ref.Inst(mixed_table, market, i)
    assert x.T < 5.0 / 365.0  # expires inside the horizon: worth its intrinsic value
    intrinsic = x.cs * max(x.F - x.K, 0.0) / x.F * x.S
    today = x.cs * var_ref.black76(x.F, x.K, x.vol, x.T, 1.0) / x.F * x.S
    assert P5[i, 0] == pytest.approx(intrinsic - today, rel=1e-10, abs=1e-9)


# ----------------------------------------------------------------------------- VaR / ES
def _check_against_reference(res, pnl, gross, levels):
    ref = var_es(pnl, list(levels))
    tol = 1e-9 * (1.0 + gross.max(axis=1))
    for r in range(len(levels)):
        assert np.all(np.abs(res.var[r] - ref.var[r]) <= tol), f"VaR level {levels[r]}"
        assert np.all(np.abs(res.es[r] - ref.es[r]) <= tol), f"ES level {levels[r]}"


def test_var_es_matches_reference_random_accounts(mixed_table, market):
    book = random_book(mixed_table, 300, seed=3)
    sc = joint_scenarios(240, seed=4)
    pnl, gross = reference_pnl(book, market, sc)
    res = ScenarioRiskEngine(market, mixed_table).var_es(book, sc, LEVELS, workers=2)
    assert res.var.shape == res.es.shape == (len(LEVELS), 300)
    _check_against_reference(res, pnl, gross, LEVELS)
    # the worst scenario found is the reference's worst (unless two are within rounding)
    worst = np.argmin(pnl, axis=1)
    srt = np.sort(pnl, axis=1)
    clear = (srt[:, 1] - srt[:, 0]) > 1e-6 * (1.0 + gross.max(axis=1))
    assert clear.sum() > 250
    assert np.array_equal(res.tail_scenarios[clear, 0], worst[clear])
    np.testing.assert_allclose(res.tail_losses[:, 0], -srt[:, 0], rtol=0, atol=1e-6)


def test_var_es_matches_reference_generated_accounts(table, market):
    book = sample.generate_accounts(250, table, seed=11)
    sc = joint_scenarios(200, seed=5, horizon=1)
    pnl, gross = reference_pnl(book, market, sc)
    res = ScenarioRiskEngine(market, table).var_es(book, sc, (0.95, 0.99), workers=2)
    _check_against_reference(res, pnl, gross, (0.95, 0.99))


def test_historical_scenarios_with_vol_proxy_match_reference(mixed_table, market):
    """Filtered historical 5-day scenarios of the bundled history, with fitted vol shocks."""
    from dpm.market.history import load_history
    from dpm.models.calibration.ranges import fit_vol_shock_proxy
    from dpm.models.generators.historical import filtered_historical_scenarios

    r = load_history().log_returns(["BTC", "ETH"]).values
    proxy = fit_vol_shock_proxy(r, horizon_days=5, underlyings=("BTC", "ETH"))
    sc = filtered_historical_scenarios(r[-800:], horizon=5, underlyings=("BTC", "ETH"), vol_proxy=proxy)
    assert sc.horizon_days == 5 and np.any(sc.vol_shock != 0.0)
    book = random_book(mixed_table, 40, seed=32)
    pnl, gross = reference_pnl(book, market, sc)
    res = ScenarioRiskEngine(market, mixed_table).var_es(book, sc, (0.975, 0.99))
    _check_against_reference(res, pnl, gross, (0.975, 0.99))


def test_es_at_least_var_and_monotone(mixed_table, market):
    book = random_book(mixed_table, 200, seed=6)
    res = ScenarioRiskEngine(market, mixed_table).var_es(book, joint_scenarios(500, seed=7), LEVELS)
    assert np.all(res.es >= res.var)
    assert np.all(np.diff(res.es, axis=0) >= -1e-9)  # higher level, larger ES
    assert np.all(np.diff(res.var, axis=0) >= -1e-9)


def test_precomputed_pnl_matrix_gives_same_result(mixed_table, market):
    book = random_book(mixed_table, 50, seed=8)
    sc = joint_scenarios(333, seed=9)
    eng = ScenarioRiskEngine(market, mixed_table)
    P = eng.revalue(sc)
    P_before = P.copy()
    a = eng.var_es(book, sc, LEVELS)
    b = eng.var_es(book, P, LEVELS)
    assert np.array_equal(a.var, b.var) and np.array_equal(a.es, b.es)
    assert np.array_equal(a.tail_scenarios, b.tail_scenarios)
    assert np.array_equal(P, P_before)


def test_bit_identical_for_workers_blocks_and_chunks(table, market):
    book = sample.generate_accounts(400, table, seed=2)
    sc = joint_scenarios(1003, seed=10)  # not a multiple of any block width
    eng = ScenarioRiskEngine(market, table)
    base = eng.var_es(book, sc, LEVELS, workers=1, block=32)
    for kw in ({"workers": 2}, {"workers": 3}, {"block": 16}, {"block": 64}, {"block": 7},
               {"block": 1}, {"block": 32, "chunk": 96}, {"block": 64, "chunk": 5000},
               {"block": 16, "chunk": 40, "workers": 3}):
        other = eng.var_es(book, sc, LEVELS, **kw)
        for f in ("var", "es", "tail_scenarios", "tail_losses"):
            assert np.array_equal(getattr(base, f), getattr(other, f)), (kw, f)
    import dpm.engines.risk as var_module
    old = var_module.MAX_TAIL_BYTES
    try:  # tail buffers for 37 accounts at a time: the scenarios are revalued once per group
        var_module.MAX_TAIL_BYTES = 37 * 12 * 2 * base.tail_scenarios.shape[1]
        other = eng.var_es(book, sc, LEVELS, workers=2)
    finally:
        var_module.MAX_TAIL_BYTES = old
    for f in ("var", "es", "tail_scenarios", "tail_losses"):
        assert np.array_equal(getattr(base, f), getattr(other, f)), ("groups", f)
    P1 = eng.revalue(sc, workers=1)
    assert np.array_equal(P1, eng.revalue(sc, workers=3), equal_nan=True)


def test_tail_scenarios_canonical_with_ties(mixed_table, market):
    """Integer P&L with many ties: the k worst are ranked by (loss desc, scenario asc), exactly."""
    rng = np.random.default_rng(30)
    M, S = len(mixed_table), 1500
    P = rng.integers(-3, 4, size=(M, S)).astype(np.float64)
    P[0] = 0.0
    book = random_book(mixed_table, 60, seed=31)
    q = np.round(book.quantity * 10.0)  # integer quantities: exact sums, genuine ties
    book = AccountBook.from_arrays(book.account_of_position(), book.instrument_idx, q, mixed_table,
                                   n_accounts=len(book))
    flat = AccountBook.from_arrays([0], [0], [1.0], mixed_table, n_accounts=1)  # P&L 0 everywhere
    eng = ScenarioRiskEngine(market, mixed_table)
    pnl = np.zeros((len(book), S))
    for a in range(len(book)):
        for p_ in range(int(book.indptr[a]), int(book.indptr[a + 1])):
            pnl[a] += book.quantity[p_] * P[book.instrument_idx[p_]]
    for kw in ({}, {"block": 16, "chunk": 48}, {"block": 5, "workers": 3}):
        res = eng.var_es(book, P, (0.9, 0.99), **kw)
        k = res.tail_scenarios.shape[1]
        assert k == 150
        for a in range(len(book)):
            ref = np.lexsort((np.arange(S), pnl[a]))[:k]
            assert np.array_equal(res.tail_scenarios[a], ref), (kw, a)
            assert np.array_equal(res.tail_losses[a], -pnl[a, ref])
        r0 = eng.var_es(flat, P, (0.99,), **kw)
        assert np.array_equal(r0.tail_scenarios[0], np.arange(15))
        assert np.all(r0.tail_losses == 0.0) and not np.signbit(r0.tail_losses).any()


def test_linear_portfolio_single_underlying_matches_lognormal_closed_form(table, market):
    """Futures/perps on one underlying: USD P&L = E * m exactly, m = exp(X) - 1, X ~ N(0, s^2)."""
    lin = table.subset(np.asarray(table.kind) != Kind.OPTION)
    names = list(lin.name)
    pos = {  # account -> {instrument: contracts}
        "long_btc": {"BTC-PERPETUAL": 30000.0, "BTC_USDC-PERPETUAL": 2.0, "BTC-25DEC26": -5000.0},
        "short_btc": {"BTC-PERPETUAL": -20000.0, "BTC-29JAN27": -10000.0},
        "long_eth": {"ETH-PERPETUAL": 40000.0, "ETH_USDC-PERPETUAL": 15.0},
    }
    acc, inst, qty = [], [], []
    for a, (_, d) in enumerate(pos.items()):
        for nm, q in d.items():
            acc.append(a), inst.append(names.index(nm)), qty.append(q)
    book = AccountBook.from_arrays(acc, inst, qty, lin, account_ids=list(pos), n_accounts=len(pos))
    vols = np.array([0.03, 0.04])
    n = 200_000
    sc = mc_scenarios(vols=vols, corr=[[1.0, 0.7], [0.7, 1.0]], n_paths=n, seed=12,
                      underlyings=("BTC", "ETH"))
    levels = (0.975, 0.99)
    res = ScenarioRiskEngine(market, lin).var_es(book, sc, levels)
    inp = market.instrument_inputs(lin)
    for a, d in enumerate(pos.values()):
        E = 0.0  # USD P&L per unit relative move
        for nm, q in d.items():
            i = names.index(nm)
            if lin.inverse[i]:
                E += q * lin.contract_size[i] * inp.index[i] / inp.forward[i]
            else:
                E += q * lin.contract_size[i] * inp.forward[i]
        s = vols[0] if names[inst[acc.index(a)]].startswith("BTC") else vols[1]
        for r, lv in enumerate(levels):
            al = 1.0 - lv
            if E > 0:  # loss when the price falls: lower tail of X
                z = stats.norm.ppf(al)
                var = -E * math.expm1(s * z)
                es = E * (1.0 - math.exp(0.5 * s * s) * stats.norm.cdf(z - s) / al)
                dens = stats.norm.pdf(z) / (E * math.exp(s * z) * s)  # density of the loss at VaR
            else:
                z = stats.norm.ppf(lv)
                var = -E * math.expm1(s * z)
                es = -E * (math.exp(0.5 * s * s) * stats.norm.cdf(s - z) / al - 1.0)
                dens = stats.norm.pdf(z) / (-E * math.exp(s * z) * s)
            se_var = math.sqrt(al * lv / n) / dens
            se_es = (es - var) * 1.5 / math.sqrt(n * al) + se_var  # conservative tail-mean error
            assert abs(res.var[r, a] - var) < 4 * se_var, (list(pos)[a], lv, res.var[r, a], var)
            assert abs(res.es[r, a] - es) < 4 * se_es, (list(pos)[a], lv, res.es[r, a], es)


def test_linear_portfolio_two_underlyings_delta_normal(table, market):
    """BTC + ETH linear book with small vols: P&L ~ normal, VaR = z sigma_P, ES = sigma_P phi(z)/alpha."""
    lin = table.subset(np.asarray(table.kind) != Kind.OPTION)
    names = list(lin.name)
    book = AccountBook.from_arrays([0, 0, 1, 1], [names.index("BTC_USDC-PERPETUAL"), names.index("ETH_USDC-PERPETUAL"),
                                                  names.index("BTC_USDC-PERPETUAL"), names.index("ETH_USDC-PERPETUAL")],
                                   [3.0, 50.0, 3.0, -80.0], lin, n_accounts=2)
    vols = np.array([0.002, 0.0025])
    rho = 0.6
    n = 200_000
    sc = mc_scenarios(vols=vols, corr=[[1.0, rho], [rho, 1.0]], n_paths=n, seed=13, underlyings=("BTC", "ETH"))
    res = ScenarioRiskEngine(market, lin).var_es(book, sc, (0.99,))
    inp = market.instrument_inputs(lin)
    Fb, Fe = inp.forward[names.index("BTC_USDC-PERPETUAL")], inp.forward[names.index("ETH_USDC-PERPETUAL")]
    for a, (qb, qe) in enumerate(((3.0, 50.0), (3.0, -80.0))):
        e = np.array([qb * Fb, qe * Fe])
        cov = np.array([[vols[0] ** 2, rho * vols[0] * vols[1]], [rho * vols[0] * vols[1], vols[1] ** 2]])
        sp = math.sqrt(e @ cov @ e)
        z = stats.norm.ppf(0.99)
        var, es = sp * z, sp * stats.norm.pdf(z) / 0.01
        # sampling error (a few % at 2,000 tail points) + convexity of exp(X) - 1 (~ z*vol/2 ~ 0.3 %)
        assert res.var[0, a] == pytest.approx(var, rel=0.03)
        assert res.es[0, a] == pytest.approx(es, rel=0.03)


def test_es_subadditive_on_books_and_their_union(mixed_table, market):
    sc = joint_scenarios(400, seed=14)
    eng = ScenarioRiskEngine(market, mixed_table)
    P = eng.revalue(sc)
    rng = np.random.default_rng(15)
    n = 150
    acc, inst, qty = [], [], []
    for pair in range(n):  # account 3*pair: book A, 3*pair+1: book B, 3*pair+2: A + B
        for part in (0, 1):
            k = int(rng.integers(1, 6))
            ii = rng.integers(0, len(mixed_table), size=k)
            qq = rng.normal(0.0, 5.0, size=k)
            for a in (3 * pair + part, 3 * pair + 2):
                acc += [a] * k
                inst += list(ii)
                qty += list(qq)
    book = AccountBook.from_arrays(acc, inst, qty, mixed_table, n_accounts=3 * n)
    res = eng.var_es(book, P, (0.95, 0.975, 0.99))
    es = res.es.reshape(3, n, 3)
    assert np.all(es[:, :, 2] <= es[:, :, 0] + es[:, :, 1] + 1e-9 * (1 + np.abs(es).max()))


def test_component_es_sums_to_es_and_matches_euler_reference(mixed_table, market):
    sc = joint_scenarios(400, seed=16)
    eng = ScenarioRiskEngine(market, mixed_table)
    book = random_book(mixed_table, 20, seed=17, max_pos=10)
    P = eng.revalue(sc)
    for level in (0.975, 0.99):
        res = eng.var_es(book, P, (level,))
        for a in range(len(book)):
            comp = eng.component_es(book, a, sc, level)
            assert sum(comp.values()) == pytest.approx(res.es[0, a], rel=1e-10, abs=1e-8)
            lo, hi = int(book.indptr[a]), int(book.indptr[a + 1])
            pos = np.column_stack([book.quantity[p] * np.array(var_ref.instrument_pnl(
                mixed_table, market, int(book.instrument_idx[p]), sc)) for p in range(lo, hi)])
            ref = component_es(pos, level)
            got = np.array([comp[str(mixed_table.name[book.instrument_idx[p]])] for p in range(lo, hi)])
            np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-7)


# ----------------------------------------------------------------------------- stress
def test_stress_equals_full_revaluation(mixed_table, market):
    sc = hypothetical_scenarios([
        {"name": "crash", "price_move": {"BTC": -0.5, "ETH": -0.6}, "vol_shock": {"BTC": 1.0, "ETH": 1.2}},
        {"name": "melt-up", "price_move": {"BTC": 0.4, "ETH": 0.5}, "vol_shock": {"BTC": 0.3}},
        {"name": "vol crush", "price_move": {}, "vol_shock": {"BTC": -0.5, "ETH": -0.5}},
        {"name": "decouple", "price_move": {"BTC": 0.2, "ETH": -0.3}},
    ], ["BTC", "ETH"])
    book = random_book(mixed_table, 120, seed=18)
    res = ScenarioRiskEngine(market, mixed_table).stress(book, sc, workers=2)
    pnl, gross = reference_pnl(book, market, sc)
    np.testing.assert_allclose(res.loss, -pnl, rtol=0, atol=1e-9 * (1 + gross.max()))
    assert res.scenario_names == ("crash", "melt-up", "vol crush", "decouple")
    assert np.array_equal(res.worst_scenario, np.argmax(res.loss, axis=1))
    np.testing.assert_allclose(res.worst_loss, res.loss.max(axis=1))


def test_stress_with_named_historical_events(table, market):
    from dpm.models.generators.stress import historical_stress_scenarios
    sc = historical_stress_scenarios()
    book = sample.generate_accounts(30, table, seed=19)
    res = ScenarioRiskEngine(market, table).stress(book, sc)
    pnl, gross = reference_pnl(book, market, sc)
    np.testing.assert_allclose(res.loss, -pnl, rtol=0, atol=1e-9 * (1 + gross.max()))


# ----------------------------------------------------------------------------- bad inputs
def test_book_on_another_table_is_rejected(mixed_table, table, market):
    book = random_book(table, 5, seed=20)
    with pytest.raises(InvalidInputError, match="different InstrumentTable"):
        ScenarioRiskEngine(market, mixed_table).var_es(book, joint_scenarios(50, seed=1))
    with pytest.raises(InvalidTypeError, match="AccountBook"):
        ScenarioRiskEngine(market, mixed_table).var_es("book", joint_scenarios(50, seed=1))


def test_uncovered_instrument_names_account_and_instrument(mixed_table, market):
    names = list(mixed_table.name)
    book = AccountBook.from_arrays([0, 1, 1], [names.index("BTC-PERPETUAL"), names.index("BTC-25DEC26"),
                                               names.index("ETH-25DEC26-3000-P")], [1.0, 1.0, -2.0],
                                   mixed_table, account_ids=["alice", "bob"], n_accounts=2)
    btc_only = joint_scenarios(60, seed=2).select(["BTC"])
    eng = ScenarioRiskEngine(market, mixed_table)
    for call in (lambda: eng.var_es(book, btc_only), lambda: eng.stress(book, btc_only),
                 lambda: eng.var_es(book, eng.revalue(btc_only))):
        with pytest.raises(MarketDataError, match=r"'bob'.*'ETH-25DEC26-3000-P'"):
            call()
    # alice alone is fine
    res = eng.var_es(book.subset([0]), btc_only)
    assert np.isfinite(res.es).all()
    assert np.isnan(eng.revalue(btc_only)[names.index("ETH-PERPETUAL")]).all()


def test_expired_instrument_names_account_and_instrument(mixed_table, market):
    names = list(mixed_table.name)
    later = market.with_updates(timestamp_ms=market.timestamp_ms + 2 * 86_400_000)  # after 28NOV26 08:00
    book = AccountBook.from_arrays([0, 1], [names.index("BTC-PERPETUAL"), names.index("ETH-28NOV26")],
                                   [1.0, 3.0], mixed_table, account_ids=["carol", "dave"], n_accounts=2)
    eng = ScenarioRiskEngine(later, mixed_table)
    with pytest.raises(MarketDataError, match=r"'dave'.*'ETH-28NOV26'.*expired"):
        eng.var_es(book, joint_scenarios(40, seed=3))
    assert np.isfinite(eng.var_es(book.subset([0]), joint_scenarios(40, seed=3)).es).all()


def test_underlying_missing_from_market(mixed_table, market):
    names = list(mixed_table.name)
    btc_market = type(market)(market.timestamp_ms, {"BTC": market.underlyings["BTC"]})
    book = AccountBook.from_arrays([0], [names.index("ETH-PERPETUAL")], [1.0], mixed_table,
                                   account_ids=["erin"], n_accounts=1)
    with pytest.raises(MarketDataError, match=r"'erin'.*'ETH-PERPETUAL'.*no market data for its underlying 'ETH'"):
        ScenarioRiskEngine(btc_market, mixed_table).var_es(book, joint_scenarios(40, seed=3))


def test_unusable_market_data_names_account_and_instrument(mixed_table, market, monkeypatch):
    """An option whose surface gives a NaN vol is reported if held, never priced at zero vol."""
    from dpm.market.snapshot import MarketSnapshot

    names = list(mixed_table.name)
    target = "ETH-25DEC26-3000-P"
    real = MarketSnapshot.instrument_inputs

    def broken_surface(self, table):  # what a broken surface would give for one option
        inp = real(self, table)
        vol = np.array(inp.vol, dtype=np.float64)
        vol[[j for j, n in enumerate(table.name) if n == target]] = np.nan
        return type(inp)(inp.forward, inp.time, vol, inp.index, inp.timestamp_ms)

    monkeypatch.setattr(MarketSnapshot, "instrument_inputs", broken_surface)
    eng = ScenarioRiskEngine(market, mixed_table)
    monkeypatch.undo()
    i = names.index(target)
    book = AccountBook.from_arrays([0, 1], [i, names.index("ETH-PERPETUAL")], [1.0, 1.0], mixed_table,
                                   account_ids=["gus", "hal"], n_accounts=2)
    with pytest.raises(MarketDataError, match=r"'gus'.*'ETH-25DEC26-3000-P'.*market data.*implied vol nan"):
        eng.var_es(book, joint_scenarios(40, seed=3))
    assert np.isnan(eng.revalue(joint_scenarios(40, seed=3))[i]).all()
    assert np.isfinite(eng.var_es(book.subset([1]), joint_scenarios(40, seed=3)).es).all()


def test_block_wider_than_scenarios(mixed_table, market):
    eng = ScenarioRiskEngine(market, mixed_table)
    book = random_book(mixed_table, 30, seed=27)
    sc = joint_scenarios(21, seed=28)
    a = eng.var_es(book, sc, (0.9,), block=10_000_000)
    b = eng.var_es(book, sc, (0.9,), block=32)
    assert np.array_equal(a.es, b.es) and np.array_equal(a.tail_scenarios, b.tail_scenarios)


@pytest.mark.parametrize("levels", [0.0, 1.0, 1.5, -0.1, float("nan"), (0.99, 1.0), ()])
def test_levels_outside_unit_interval(mixed_table, market, levels):
    book = random_book(mixed_table, 3, seed=21)
    with pytest.raises(InvalidInputError, match="levels"):
        ScenarioRiskEngine(market, mixed_table).var_es(book, joint_scenarios(40, seed=3), levels)


def test_bad_scenarios(mixed_table, market):
    pm = np.zeros((3, 2))
    with pytest.raises(InvalidInputError, match="price_move"):
        MarketScenarios(np.array([[0.0, np.nan], [0, 0], [0, 0]]), pm, ("a", "b", "c"), ("BTC", "ETH"))
    with pytest.raises(InvalidInputError, match="price_move"):
        MarketScenarios(np.array([[0.0, -1.0], [0, 0], [0, 0]]), pm, ("a", "b", "c"), ("BTC", "ETH"))
    with pytest.raises(InvalidInputError, match="vol_shock"):
        MarketScenarios(pm, np.array([[0.0, -1.5], [0, 0], [0, 0]]), ("a", "b", "c"), ("BTC", "ETH"))
    # the engine checks again what its kernel reads, even if a MarketScenarios was tampered with
    eng = ScenarioRiskEngine(market, mixed_table)
    book = random_book(mixed_table, 3, seed=22)
    for bad, field in ((np.array([[0.1, 0.0], [np.nan, 0.0], [0.0, 0.0]]), "price_move"),
                       (np.array([[0.1, 0.0], [-1.0, 0.0], [0.0, 0.0]]), "price_move")):
        sc = MarketScenarios(pm, pm, ("a", "b", "c"), ("BTC", "ETH"))
        object.__setattr__(sc, field, bad)
        with pytest.raises(InvalidInputError, match=rf"{field}.*'b'.*'BTC'"):
            eng.var_es(book, sc)
        with pytest.raises(InvalidInputError, match=field):
            eng.revalue(sc)
    with pytest.raises(InvalidTypeError, match="scenarios"):
        eng.var_es(book, [[0.1, 0.2]])


def test_bad_pnl_matrix(mixed_table, market):
    eng = ScenarioRiskEngine(market, mixed_table)
    names = list(mixed_table.name)
    book = AccountBook.from_arrays([0], [names.index("BTC-25DEC26")], [1.0], mixed_table,
                                   account_ids=["frank"], n_accounts=1)
    P = eng.revalue(joint_scenarios(50, seed=3))
    with pytest.raises(InvalidInputError, match="shape"):
        eng.var_es(book, P[:-1])
    P2 = P.copy()
    P2[names.index("BTC-25DEC26"), 7] = np.inf
    with pytest.raises(MarketDataError, match=r"'frank'.*'BTC-25DEC26'"):
        eng.var_es(book, P2)
    P2 = P.copy()
    P2[names.index("ETH-PERPETUAL"), 7] = np.nan  # not held: fine
    assert np.isfinite(eng.var_es(book, P2).es).all()
    with pytest.raises(InvalidInputError, match="no scenarios"):
        eng.var_es(book, P[:, :0])
    with pytest.raises(InvalidTypeError):
        eng.var_es(book, P.astype(bool))


def test_bad_block_chunk_workers(mixed_table, market):
    eng = ScenarioRiskEngine(market, mixed_table)
    book = random_book(mixed_table, 3, seed=23)
    sc = joint_scenarios(40, seed=3)
    for kw in ({"block": 0}, {"chunk": 0}):
        with pytest.raises(InvalidInputError):
            eng.var_es(book, sc, **kw)
    with pytest.raises(InvalidTypeError):
        eng.var_es(book, sc, block=2.5)
    with pytest.raises(ValueError):
        eng.var_es(book, sc, workers=0)
    with pytest.raises(InvalidInputError, match="index"):
        eng.component_es(book, 3, sc)


def test_inputs_not_mutated(mixed_table, market):
    book = random_book(mixed_table, 40, seed=24)
    sc = joint_scenarios(100, seed=25)
    snap = [a.copy() for a in (book.indptr, book.instrument_idx, book.quantity, sc.price_move, sc.vol_shock)]
    eng = ScenarioRiskEngine(market, mixed_table)
    eng.var_es(book, sc, LEVELS)
    eng.stress(book, sc)
    for a, b in zip(snap, (book.indptr, book.instrument_idx, book.quantity, sc.price_move, sc.vol_shock)):
        assert np.array_equal(a, b)


def test_empty_book_and_flat_account(mixed_table, market):
    eng = ScenarioRiskEngine(market, mixed_table)
    sc = joint_scenarios(64, seed=26)
    empty = AccountBook.empty(mixed_table)
    res = eng.var_es(empty, sc)
    assert res.var.shape == (1, 0)
    flat = AccountBook.from_arrays([0], [0], [0.0], mixed_table, n_accounts=2)  # one zero position, one empty
    res = eng.var_es(flat, sc, (0.99,))
    assert np.all(res.var == 0.0) and np.all(res.es == 0.0)


def test_incremental_and_per_underlying_es_match_the_statistics_layer():
    from dpm.engines.risk import ScenarioRiskEngine
    from dpm.market.sample import default_instruments, default_market
    from dpm.models.generators.montecarlo import mc_scenarios
    from dpm.models.measures import component_es, incremental_es, var_es
    from dpm.portfolio.accounts import Account, AccountBook

    market, table = default_market(), default_instruments()
    acc = Account("x", [("BTC-PERPETUAL", 20_000.0), ("ETH-PERPETUAL", -30_000.0),
                        ("BTC_USDC-PERPETUAL", -0.1)], {"BTC": 1.0})
    book = AccountBook.from_accounts([acc], table)
    scen = mc_scenarios(vols=[0.04, 0.05], corr=[[1.0, 0.8], [0.8, 1.0]], n_paths=3000, seed=3,
                        underlyings=["BTC", "ETH"])
    eng = ScenarioRiskEngine(market, table)
    P = eng.revalue(scen)
    x = (P[book.instrument_idx] * book.quantity[:, None]).T
    inc = eng.incremental_es(book, 0, P, 0.99)
    np.testing.assert_allclose(list(inc.values()), incremental_es(x, 0.99), rtol=1e-12, atol=1e-9)
    by_und = eng.component_es_by_underlying(book, 0, P, 0.99)
    comp = component_es(x, 0.99)
    names = [str(n) for n in table.name[book.instrument_idx]]
    btc = sum(c for n, c in zip(names, comp) if n.startswith("BTC"))
    assert by_und["BTC"] == pytest.approx(btc, rel=1e-10)
    assert sum(by_und.values()) == pytest.approx(var_es(x.sum(axis=1), 0.99).es, rel=1e-10)


def test_vol_shock_term_structure_and_uniform_option():
    from reference.var_ref import Inst

    from dpm.engines.risk import DEFAULT_VOL_TERM_STRUCTURE, ScenarioRiskEngine
    from dpm.market.sample import default_instruments, default_market
    from dpm.models.scenarios import MarketScenarios

    market, table = default_market(), default_instruments()
    scen = MarketScenarios(np.array([[0.0, 0.0], [0.05, -0.02]]), np.array([[0.5, 0.5], [-0.3, 0.2]]),
                           ("vol up", "mixed"), ("BTC", "ETH"), horizon_days=1)
    opts = np.flatnonzero(np.asarray(table.kind) == 3)[::40]
    for term, flag in ((True, True), (False, False)):
        eng = ScenarioRiskEngine(market, table, vol_term_structure=DEFAULT_VOL_TERM_STRUCTURE if term else None)
        P = eng.revalue(scen)
        for i in opts:
            x = Inst(table, market, int(i))
            c = ("BTC", "ETH").index(x.und)
            ref = [x.pnl(float(scen.price_move[s, c]), float(scen.vol_shock[s, c]), 1.0, flag) for s in range(2)]
            np.testing.assert_allclose(P[i], ref, rtol=1e-9, atol=1e-9 * x.cs * x.S)
    # a pure +50 % vol scenario: the shortest expiry's vol moves more than the longest one's
    eng = ScenarioRiskEngine(market, table)
    ids = {int(i): Inst(table, market, int(i)) for i in opts}
    short = min(ids, key=lambda i: ids[i].T)
    long_ = max(ids, key=lambda i: ids[i].T)
    assert ids[short].term_factor(True) > 1.0 > ids[long_].term_factor(True)
    assert eng.plan.pack(scen).vscale[short] == pytest.approx(ids[short].term_factor(True), rel=1e-12)
