"""Tests for dpm.models.measures: VaR/ES, scenario generators, ES attribution."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from dpm import calibration as cal
from dpm import risk_measures as rm
from dpm.errors import InvalidInputError
from dpm.market.history import load_history

_spec = importlib.util.spec_from_file_location(
    "stats_reference", Path(__file__).parent / "reference" / "stats_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


@pytest.fixture(scope="module")
def rets():
    return load_history().log_returns(["BTC", "ETH"])


# ------------------------------------------------------------------ VaR / ES

def test_var_es_matches_numpy_and_reference():
    rng = np.random.default_rng(0)
    for n in (1000, 997, 250, 37, 5):
        x = rng.standard_t(3, n)
        for level in (0.99, 0.975, 0.95, 0.9):
            got = rm.var_es(x, level)
            var_ref, es_ref = ref.hs_var_es(x.tolist(), level)
            assert got.var == pytest.approx(var_ref, rel=1e-14, abs=1e-15)
            assert got.es == pytest.approx(es_ref, rel=1e-12)
            # numpy sees 1 - 0.99 = 0.010000000000000009; dpm snaps n alpha to the integer
            assert got.var == -np.quantile(x, round(1 - level, 12), method="inverted_cdf")
            assert got.es >= got.var
    # n alpha integer: ES is the plain mean of the k worst
    x = rng.standard_normal(1000)
    got = rm.var_es(x, 0.99)
    assert got.es == pytest.approx(-np.sort(x)[:10].mean(), rel=1e-14)
    assert got.var == -np.sort(x)[9]


def test_var_es_shapes_and_axis():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 400))
    res = rm.var_es(x, [0.95, 0.99])
    assert res.var.shape == (2, 3)
    for j in range(3):
        one = rm.var_es(x[j], 0.99)
        assert res.var[1, j] == one.var and res.es[1, j] == one.es
    res_t = rm.var_es(x.T, 0.99, axis=0)
    np.testing.assert_array_equal(res_t.es, rm.var_es(x, 0.99).es)
    x_in = x.copy()
    rm.var_es(x, 0.99)
    np.testing.assert_array_equal(x, x_in)
    with pytest.raises(InvalidInputError, match="levels"):
        rm.var_es(x, 1.0)
    with pytest.raises(InvalidInputError, match="pnl.*finite"):
        rm.var_es([1.0, np.nan, 2.0])
    with pytest.raises(InvalidInputError, match="no scenarios"):
        rm.var_es(np.empty(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
       st.floats(0.5, 0.999))
def test_es_at_least_var(values, level):
    res = rm.var_es(values, level)
    assert res.es >= res.var
    assert res.es <= -min(values) + 1e-9 * max(1.0, abs(min(values)))


def test_es_subadditive_var_not():
    rng = np.random.default_rng(4)
    for _ in range(50):
        a = rng.standard_t(3, 500)
        b = rng.standard_t(3, 500) + 0.5 * a * rng.choice([-1, 1])
        es = lambda v: rm.var_es(v, 0.99).es
        assert es(a + b) <= es(a) + es(b) + 1e-12
    # the classic VaR counterexample: two independent loans defaulting with 4 % probability
    n = 10_000
    la = np.zeros(n)
    lb = np.zeros(n)
    la[:400] = -100.0
    lb[400:800] = -100.0
    v = lambda x: rm.var_es(x, 0.95).var
    assert v(la + lb) > v(la) + v(lb)
    assert rm.var_es(la + lb, 0.95).es <= rm.var_es(la, 0.95).es + rm.var_es(lb, 0.95).es


# ------------------------------------------------------------------ Monte Carlo

def _batch_se(pnl, level, batches=25):
    parts = np.array_split(pnl, batches)
    v = np.array([[rm.var_es(p, level).var, rm.var_es(p, level).es] for p in parts])
    return v.std(axis=0, ddof=1) / math.sqrt(batches)


def test_normal_mc_matches_closed_form():
    vols = np.array([0.04, 0.05, 0.01])
    corr = np.array([[1, 0.8, 0.1], [0.8, 1, 0.0], [0.1, 0.0, 1]])
    w = np.array([1e6, -5e5, 2e5])
    sc = rm.mc_scenarios(vols=vols, corr=corr, n_paths=200_000, horizon=2, seed=42,
                         underlyings=["BTC", "ETH", "USDT"])
    pnl = sc.log_return @ w  # linear in log returns: exactly normal
    sigma = math.sqrt(2 * w @ (corr * np.outer(vols, vols)) @ w)
    level = 0.99
    z = stats.norm.ppf(level)
    var_cf, es_cf = z * sigma, sigma * stats.norm.pdf(z) / (1 - level)
    res = rm.var_es(pnl, level)
    se_var, se_es = _batch_se(pnl, level)
    assert abs(res.var - var_cf) < 4 * se_var
    assert abs(res.es - es_cf) < 4 * se_es
    np.testing.assert_allclose(np.corrcoef(sc.log_return.T), corr, atol=0.01)
    # price moves are the exponential of the log returns
    np.testing.assert_allclose(sc.price_move, np.expm1(sc.log_return), rtol=1e-14)
    assert sc.price_move.shape == sc.vol_shock.shape == (200_000, 3)


def test_mc_seed_generator_cov_equivalence():
    cov = np.array([[4e-4, 1e-4], [1e-4, 9e-4]])
    a = rm.mc_scenarios(cov, n_paths=1000, seed=7)
    b = rm.mc_scenarios(cov, n_paths=1000, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(a.price_move, b.price_move)
    vols = np.sqrt(np.diag(cov))
    c = rm.mc_scenarios(vols=vols, corr=cal.cov_to_corr(cov), n_paths=1000, seed=7)
    np.testing.assert_allclose(c.log_return, a.log_return, rtol=1e-12, atol=1e-15)
    anti = rm.mc_scenarios(cov, n_paths=1000, seed=1, antithetic=True)
    np.testing.assert_allclose(anti.log_return[:500], -anti.log_return[500:], rtol=1e-15)
    with pytest.raises(InvalidInputError, match="positive semi-definite"):
        rm.mc_scenarios(vols=[0.1, 0.1, 0.1],
                        corr=[[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]], n_paths=10)
    with pytest.raises(InvalidInputError, match="dof"):
        rm.mc_scenarios(cov, dist="student_t", dof=2.0, n_paths=10)
    with pytest.raises(InvalidInputError, match="either"):
        rm.mc_scenarios(cov, vols=[0.1, 0.1], n_paths=10)
    with pytest.raises(InvalidInputError, match="dist"):
        rm.mc_scenarios(cov, dist="cauchy", n_paths=10)


def test_student_t_copula_correlation_and_tail_dependence():
    rho, dof = 0.6, 4.0
    vols = np.array([0.04, 0.06])
    sc = rm.mc_scenarios(vols=vols, corr=[[1, rho], [rho, 1]], n_paths=400_000, dist="student_t",
                         dof=dof, seed=3)
    x = sc.log_return
    # unit-variance t margins times the vols
    np.testing.assert_allclose(x.std(axis=0), vols, rtol=0.02)
    assert stats.kurtosis(x[:, 0]) > 2.0  # t(4) has infinite kurtosis; sample is large
    # Kendall's tau of an elliptical copula: tau = (2/pi) arcsin(rho)
    tau = stats.kendalltau(x[:4000, 0], x[:4000, 1]).statistic
    assert abs(tau - 2 / math.pi * math.asin(rho)) < 0.03
    # joint tail probability P(U1 > u, U2 > u) of the t copula by 1-d quadrature of the exact
    # conditional law X2 | X1 = x ~ t_(dof+1)(rho x, (dof + x^2)(1 - rho^2)/(dof + 1))
    def joint_tail(u):
        q = stats.t.ppf(u, dof)

        def integrand(v):
            scale = math.sqrt((dof + v * v) * (1 - rho * rho) / (dof + 1))
            return stats.t.pdf(v, dof) * stats.t.sf((q - rho * v) / scale, dof + 1)

        return integrate.quad(integrand, q, np.inf, epsabs=0, epsrel=1e-11, limit=200)[0]

    u = 0.98
    exact = joint_tail(u)
    ranks = (stats.rankdata(x, axis=0) - 0.5) / x.shape[0]
    emp = np.mean((ranks[:, 0] > u) & (ranks[:, 1] > u))
    se = math.sqrt(exact * (1 - exact) / x.shape[0])
    assert abs(emp - exact) < 5 * se
    # the closed-form tail-dependence coefficient is the u -> 1 limit of P(U2 > u | U1 > u)
    lam = float(rm.t_copula_tail_dependence(rho, dof))
    assert 0.3 < lam < 0.5
    ratios = [joint_tail(1 - e) / e for e in (1e-4, 1e-6, 1e-8)]
    assert abs(ratios[2] - lam) < abs(ratios[1] - lam) < abs(ratios[0] - lam)
    assert ratios[2] == pytest.approx(lam, rel=2e-3)
    # the empirical conditional exceedance at u = 0.995 is near the finite-u value
    e = 0.005
    emp_cond = np.mean((ranks[:, 0] > 1 - e) & (ranks[:, 1] > 1 - e)) / e
    assert abs(emp_cond - joint_tail(1 - e) / e) < 0.05
    # the Gaussian copula at the same rho has much thinner joint tails
    gs = rm.mc_scenarios(vols=vols, corr=[[1, rho], [rho, 1]], n_paths=400_000, seed=3)
    gr = (stats.rankdata(gs.log_return, axis=0) - 0.5) / 400_000
    assert np.mean((gr[:, 0] > 0.995) & (gr[:, 1] > 0.995)) < np.mean(
        (ranks[:, 0] > 0.995) & (ranks[:, 1] > 0.995))


# ------------------------------------------------------------------ historical and FHS

def test_historical_scenarios(rets):
    r = rets.values
    sc = rm.historical_scenarios(r, 5, underlyings=rets.assets, dates=rets.dates)
    assert len(sc) == r.shape[0] - 4
    np.testing.assert_allclose(sc.log_return[100], r[100:105].sum(axis=0), rtol=1e-12)
    assert sc.names[0] == f"hist_{rets.dates[4]}"
    w = rm.historical_scenarios(r, 2, window=250)
    np.testing.assert_allclose(w.log_return, rm.historical_scenarios(r[-250:], 2).log_return)
    assert np.all(w.vol_shock == 0)


def test_filtered_historical_scenarios(rets):
    r = rets.values[-800:]
    sc = rm.filtered_historical_scenarios(r, 0.94, 1, warmup=30)
    var = cal.ewma_variance(r, 0.94, warmup=30)
    t = 500
    expected = r[t] / np.sqrt(var[t]) * np.sqrt(var[-1])
    np.testing.assert_allclose(sc.log_return[t - 30], expected, rtol=1e-12)
    # rescaled standardised returns have (about) today's vol
    np.testing.assert_allclose(sc.log_return.std(axis=0), np.sqrt(var[-1]), rtol=0.25)
    sc3 = rm.filtered_historical_scenarios(r, 0.94, 3)
    np.testing.assert_allclose(sc3.log_return[0], sc.log_return[:3].sum(axis=0), rtol=1e-12)


def test_vol_proxy_joint_vol_shocks(rets):
    proxy = cal.fit_vol_shock_proxy(rets.values, underlyings=rets.assets)
    sc = rm.historical_scenarios(rets.values, 1, underlyings=rets.assets, vol_proxy=proxy)
    np.testing.assert_allclose(sc.vol_shock, proxy.apply(sc.log_return), rtol=1e-12, atol=1e-15)
    mc = rm.mc_scenarios(np.cov(rets.values.T), n_paths=100, seed=1, underlyings=rets.assets,
                         vol_proxy=proxy)
    assert np.all(mc.vol_shock > -1)
    with pytest.raises(InvalidInputError, match="vol_proxy"):
        rm.historical_scenarios(rets.values, 1, underlyings=["ETH", "BTC"], vol_proxy=proxy)


def test_market_scenarios_validation_and_concat():
    pm = np.array([[0.1, -0.2], [0.0, 0.05]])
    vs = np.zeros_like(pm)
    pm_in = pm.copy()
    sc = rm.MarketScenarios(pm, vs, ("a", "b"), ("BTC", "ETH"))
    assert not sc.price_move.flags.writeable
    pm[0, 0] = 9.0  # the scenario set holds its own copy
    assert sc.price_move[0, 0] == pm_in[0, 0]
    with pytest.raises(InvalidInputError, match=r"price_move.*> -1.*'b'.*'ETH'"):
        rm.MarketScenarios(np.array([[0.1, 0.0], [0.0, -1.0]]), vs, ("a", "b"), ("BTC", "ETH"))
    with pytest.raises(InvalidInputError, match="names"):
        rm.MarketScenarios(pm_in, vs, ("a",), ("BTC", "ETH"))
    both = sc.concat(sc)
    assert both.price_move.shape == (4, 2) and both.names == ("a", "b", "a", "b")
    sel = sc.select(["ETH"])
    np.testing.assert_array_equal(sel.price_move[:, 0], pm_in[:, 1])
    np.testing.assert_allclose(rm.linear_pnl(sc, [100.0, 50.0]), pm_in @ [100.0, 50.0], atol=1e-12)


# ------------------------------------------------------------------ attribution

def test_component_and_incremental_es():
    rng = np.random.default_rng(9)
    x = rng.standard_t(4, (2000, 4)) * [1.0, 2.0, 0.5, 1.5]
    x[:, 1] += 0.7 * x[:, 0]
    total = x.sum(axis=1)
    for level in (0.99, 0.975, 0.9):  # integer and fractional n alpha
        comp = rm.component_es(x, level)
        assert comp.sum() == pytest.approx(rm.var_es(total, level).es, rel=1e-12)
    comp = rm.component_es(x, 0.99)
    worst = np.argsort(total)[:20]
    np.testing.assert_allclose(comp, -x[worst].mean(axis=0), rtol=1e-12)
    inc = rm.incremental_es(x, 0.99)
    for i in range(4):
        rest = np.delete(x, i, axis=1).sum(axis=1)
        assert inc[i] == pytest.approx(rm.var_es(total, 0.99).es - rm.var_es(rest, 0.99).es)
    single = rng.standard_normal((500, 1))
    assert rm.incremental_es(single, 0.99)[0] == pytest.approx(rm.var_es(single[:, 0], 0.99).es)
    with pytest.raises(InvalidInputError, match="position_pnl"):
        rm.component_es(np.empty((0, 3)))
