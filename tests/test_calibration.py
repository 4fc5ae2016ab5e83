"""Tests for dpm.models.calibration: EWMA, GARCH, Ledoit-Wolf, correlation repair, scan ranges."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from dpm import calibration as cal
from dpm.errors import InvalidInputError
from dpm.market.history import load_history

_spec = importlib.util.spec_from_file_location(
    "stats_reference", Path(__file__).parent / "reference" / "stats_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


@pytest.fixture(scope="module")
def btc_eth():
    return load_history().log_returns(["BTC", "ETH"])


def simulate_garch(n, omega, alpha, beta, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n + 500)
    h = omega / (1 - alpha - beta)
    out = np.empty(n + 500)
    for t in range(n + 500):
        out[t] = math.sqrt(h) * z[t]
        h = omega + alpha * out[t] ** 2 + beta * h
    return out[500:]


# ------------------------------------------------------------------ EWMA

def test_ewma_hand_values():
    v = cal.ewma_variance([0.01, 0.02, -0.03], 0.94, warmup=1)
    assert np.isnan(v[0])
    np.testing.assert_allclose(v[1:], [1e-4, 0.94e-4 + 0.06 * 4e-4,
                                       0.94 * (0.94e-4 + 0.06 * 4e-4) + 0.06 * 9e-4], rtol=1e-15)


def test_ewma_matches_reference(btc_eth):
    r = btc_eth.values
    for lam, w in ((0.94, 30), (0.97, 10)):
        got = cal.ewma_variance(r, lam, warmup=w)
        for j in range(r.shape[1]):
            exp = ref.ewma_variance(r[:, j].tolist(), lam, w)
            np.testing.assert_allclose(got[w:, j], exp[w:], rtol=1e-13)
            assert np.all(np.isnan(got[:w, j]))
    one = cal.ewma_variance(r[:, 0], 0.94)
    np.testing.assert_array_equal(one, cal.ewma_variance(r, 0.94)[:, 0])


def test_ewma_no_look_ahead_and_initial_variance():
    rng = np.random.default_rng(3)
    r = rng.standard_normal(200) * 0.02
    v = cal.ewma_variance(r, warmup=30)
    r2 = r.copy()
    r2[120] = 0.5  # changing day 120 must not change forecasts for days <= 120
    v2 = cal.ewma_variance(r2, warmup=30)
    np.testing.assert_array_equal(v[:121], v2[:121])
    assert v2[121] > v[121]
    c = cal.ewma_variance(np.full(50, 0.01), 0.9, initial_variance=1e-4)
    np.testing.assert_allclose(c, 1e-4, rtol=1e-12)  # fixed point


def test_ewma_covariance(btc_eth):
    r = btc_eth.values[-400:]
    path = cal.ewma_covariance(r, 0.94, warmup=30, path=True)
    last = cal.ewma_covariance(r, 0.94, warmup=30)
    np.testing.assert_allclose(path[-1], last, rtol=1e-12)
    np.testing.assert_allclose(np.diagonal(path, axis1=1, axis2=2)[30:],
                               cal.ewma_variance(r, 0.94, warmup=30)[30:], rtol=1e-12)
    exp = ref.ewma_covariance_last(r.tolist(), 0.94, 30)
    np.testing.assert_allclose(last, exp, rtol=1e-12)
    corr = cal.ewma_correlation(r)
    np.testing.assert_allclose(corr[0, 1], exp[0][1] / math.sqrt(exp[0][0] * exp[1][1]), rtol=1e-12)
    assert np.all(np.diag(corr) == 1.0)


# ------------------------------------------------------------------ GARCH

def test_garch_path_and_loglik_match_reference(btc_eth):
    r = btc_eth.values[:500, 0]
    w, a, b = 5e-5, 0.1, 0.85
    h0 = float(np.mean(r * r))
    np.testing.assert_allclose(cal.garch_variance(r, w, a, b),
                               ref.garch_path(r.tolist(), w, a, b, h0), rtol=1e-13)
    assert cal.garch_loglik(r, w, a, b) == pytest.approx(
        ref.garch_loglik(r.tolist(), w, a, b, h0), rel=1e-12)


def test_garch_mle_recovers_parameters():
    true = (2e-5, 0.08, 0.90)
    r = simulate_garch(4000, *true, seed=11)
    fit = cal.fit_garch(r)
    assert fit.converged
    est = np.array([fit.omega, fit.alpha, fit.beta])
    assert np.all(np.isfinite(fit.std_errors)) and np.all(fit.std_errors > 0)
    z = np.abs(est - np.array(true)) / fit.std_errors
    assert np.all(z < 4.0), (est, fit.std_errors)
    # MLE property: the fitted likelihood is at least the likelihood at the truth
    assert fit.loglik >= cal.garch_loglik(r, *true) - 1e-9
    assert fit.persistence < 1.0


def test_garch_fit_is_the_likelihood_maximum():
    """Independent optimum: Nelder-Mead on the pure-Python reference likelihood."""
    r = simulate_garch(1500, 1e-4, 0.12, 0.80, seed=5)
    fit = cal.fit_garch(r)
    h0 = float(np.mean(r * r))
    rl = r.tolist()

    def nll(th):
        w, a, b = th
        if w <= 0 or a < 0 or b < 0 or a + b >= 1:
            return 1e10
        return -ref.garch_loglik(rl, w, a, b, h0)

    res = optimize.minimize(nll, [1e-4, 0.12, 0.80], method="Nelder-Mead",
                            options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 4000})
    assert fit.loglik >= -res.fun - 1e-4
    np.testing.assert_allclose([fit.alpha, fit.beta], res.x[1:], atol=5e-3)


def test_garch_variance_targeting_and_forecast(btc_eth):
    r = btc_eth.values[:, 0]
    fit = cal.fit_garch(r, variance_targeting=True)
    assert fit.variance_targeting
    assert fit.omega == pytest.approx((1 - fit.alpha - fit.beta) * np.mean(r * r), rel=1e-10)
    assert np.isnan(fit.std_errors[0])
    f = fit.forecast(400)
    assert f[0] == pytest.approx(fit.variance[-1], rel=1e-14)
    # E[h_{k+1}] = omega + (alpha+beta) E[h_k]
    np.testing.assert_allclose(f[1:], fit.omega + fit.persistence * f[:-1], rtol=1e-12)
    assert abs(f[-1] - fit.long_run_variance) < abs(f[0] - fit.long_run_variance)
    assert fit.horizon_variance(10) == pytest.approx(f[:10].sum())
    assert fit.loglik == pytest.approx(cal.garch_loglik(r, fit.omega, fit.alpha, fit.beta), rel=1e-12)


# ------------------------------------------------------------------ Ledoit-Wolf

@pytest.mark.parametrize("target", ["constant_correlation", "identity"])
def test_ledoit_wolf_matches_reference(target):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 5))
    x = rng.standard_normal((60, 5)) @ a * 0.02 + 0.001
    est = cal.ledoit_wolf(x, target)
    fn = (ref.ledoit_wolf_constant_correlation if target == "constant_correlation"
          else ref.ledoit_wolf_identity)
    shrink, cov = fn(x.tolist())
    assert 0 <= est.shrinkage <= 1
    assert est.shrinkage == pytest.approx(shrink, rel=1e-10)
    np.testing.assert_allclose(est.covariance, cov, rtol=1e-10)


def test_ledoit_wolf_on_real_data_and_limits(btc_eth):
    three = load_history().log_returns(["BTC", "ETH", "USDT"]).values[-250:]
    est = cal.ledoit_wolf(three)
    shrink, cov = ref.ledoit_wolf_constant_correlation(three.tolist())
    assert est.shrinkage == pytest.approx(shrink, rel=1e-10)
    np.testing.assert_allclose(est.covariance, cov, rtol=1e-10)
    # two assets: the constant-correlation target is the sample itself
    two = cal.ledoit_wolf(btc_eth.values[-250:])
    np.testing.assert_allclose(two.covariance, two.sample, rtol=1e-12)
    # few observations of iid data: heavy shrinkage toward the identity; many: little
    rng = np.random.default_rng(0)
    few = cal.ledoit_wolf(rng.standard_normal((15, 10)), "identity").shrinkage
    many = cal.ledoit_wolf(rng.standard_normal((5000, 10)) @ np.diag(np.arange(1, 11.0)),
                           "identity").shrinkage
    assert few > 0.5 and many < 0.05
    with pytest.raises(InvalidInputError, match="target"):
        cal.ledoit_wolf(btc_eth.values, "diagonal")


# ------------------------------------------------------------------ correlation

HIGHAM_A = np.array([[2, -1, 0, 0], [-1, 2, -1, 0], [0, -1, 2, -1], [0, 0, -1, 2.0]])
HIGHAM_X = np.array([[1.0000, -0.8084, 0.1916, 0.1068], [-0.8084, 1.0000, -0.6562, 0.1916],
                     [0.1916, -0.6562, 1.0000, -0.8084], [0.1068, 0.1916, -0.8084, 1.0000]])


def test_nearest_correlation_higham_example():
    x = cal.nearest_psd_correlation(HIGHAM_A)
    np.testing.assert_allclose(x, HIGHAM_X, atol=1e-4)  # Higham (2002), section 4 example


def test_nearest_correlation_properties():
    rng = np.random.default_rng(7)
    for _ in range(20):
        b = rng.uniform(-1, 1, (6, 6))
        a = 0.5 * (b + b.T)
        np.fill_diagonal(a, 1.0)
        a_in = a.copy()
        x = cal.nearest_psd_correlation(a)
        np.testing.assert_array_equal(a, a_in)  # input untouched
        assert np.allclose(x, x.T) and np.all(np.diag(x) == 1.0)
        assert np.linalg.eigvalsh(x)[0] >= -1e-12
        # nearer than the simple eigenvalue-clip-and-rescale repair
        w, v = np.linalg.eigh(a)
        c = (v * np.maximum(w, 0)) @ v.T
        d = np.sqrt(np.diag(c))
        c = c / np.outer(d, d)
        assert np.linalg.norm(x - a) <= np.linalg.norm(c - a) + 1e-9
        # a valid correlation matrix is a fixed point
        np.testing.assert_allclose(cal.nearest_psd_correlation(x), x, atol=1e-8)
    pd = cal.nearest_psd_correlation(HIGHAM_A, eig_floor=1e-6)
    np.linalg.cholesky(pd)


def test_check_correlation_errors_and_repair():
    good = np.array([[1, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(cal.check_correlation(good), good)
    with pytest.raises(InvalidInputError, match=r"not symmetric.*\['BTC', 'ETH'\]"):
        cal.check_correlation([[1, 0.5], [0.4, 1]], names=["BTC", "ETH"])
    with pytest.raises(InvalidInputError, match="diagonal"):
        cal.check_correlation([[1, 0.5], [0.5, 0.9]])
    with pytest.raises(InvalidInputError, match="outside"):
        cal.check_correlation([[1, 1.2], [1.2, 1]])
    bad = np.array([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]])
    with pytest.raises(InvalidInputError, match="positive semi-definite"):
        cal.check_correlation(bad)
    with pytest.raises(InvalidInputError, match="finite"):
        cal.check_correlation([[1, np.nan], [np.nan, 1]], repair=True)
    with pytest.raises(InvalidInputError, match="square"):
        cal.check_correlation(np.ones((2, 3)))
    bad_in = bad.copy()
    fixed = cal.check_correlation(bad, repair=True)
    np.testing.assert_array_equal(bad, bad_in)
    assert np.linalg.eigvalsh(fixed)[0] >= -1e-12 and np.all(np.diag(fixed) == 1)
    np.testing.assert_allclose(fixed, cal.nearest_psd_correlation(bad))
    cal.check_correlation(fixed)  # passes validation afterwards


# ------------------------------------------------------------------ bad inputs

def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InvalidInputError, match="too little history"):
        cal.ewma_variance(np.zeros(10), warmup=30)
    with pytest.raises(InvalidInputError, match="too little history"):
        cal.fit_garch(np.random.default_rng(0).standard_normal(50))
    r = np.random.default_rng(0).standard_normal((100, 2)) * 0.01
    r[40, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"returns.*finite.*\(40, 1\)"):
        cal.ewma_variance(r)
    with pytest.raises(InvalidInputError, match="lambda_"):
        cal.ewma_variance(np.zeros(100), lambda_=1.0)
    with pytest.raises(InvalidInputError, match="univariate"):
        cal.fit_garch(np.zeros((200, 2)))
    with pytest.raises(InvalidInputError, match="all zero"):
        cal.fit_garch(np.zeros(200))
    with pytest.raises(InvalidInputError, match="floor"):
        cal.scan_ranges(np.ones((300, 1)) * 0.01, floor="median")
    r_in = np.random.default_rng(1).standard_normal((300, 2)) * 0.01
    r_copy = r_in.copy()
    cal.scan_ranges(r_in)
    cal.fit_garch(r_in[:, 0])
    cal.ledoit_wolf(r_in)
    np.testing.assert_array_equal(r_in, r_copy)


# ------------------------------------------------------------------ scan ranges

def test_scan_ranges_formula_and_apc(btc_eth):
    r = btc_eth.values
    sr = cal.scan_ranges(r, 0.99, 2, 0.94, floor="long_term", buffer=0.25, assets=btc_eth.assets,
                         dates=btc_eth.dates)
    z = stats.norm.ppf(0.99)
    vol = np.sqrt(cal.ewma_variance(r, 0.94, warmup=30)[1:])
    np.testing.assert_allclose(sr.raw, np.expm1(z * vol * math.sqrt(2)), rtol=1e-14)
    # long-term floor on day t: RMS of all returns so far (< 10 years of ETH data)
    t = 1000
    lt = math.sqrt(np.mean(r[: t + 1, 0] ** 2))
    assert sr.floor[t, 0] == pytest.approx(math.expm1(z * lt * math.sqrt(2)), rel=1e-12)
    assert np.all(np.isnan(sr.floor[:249]))
    ok = np.isfinite(sr.range)
    base = np.fmax(sr.raw, np.where(np.isnan(sr.floor), -np.inf, sr.floor))
    # range_t = max(base (1 + b_t), min(range_(t-1), base (1 + buffer))), recomputed here
    prev = np.r_[np.full((1, 2), np.nan), sr.range[:-1]]
    held = np.fmin(prev, base * 1.25)
    expected = np.where(np.isfinite(held), np.fmax(base * (1 + sr.buffer_rate), held),
                        base * (1 + sr.buffer_rate))
    np.testing.assert_allclose(sr.range[ok], expected[ok], rtol=1e-14)
    calm = ok & (sr.buffer_rate == 0.25)
    np.testing.assert_allclose(sr.range[calm], base[calm] * 1.25, rtol=1e-14)
    assert np.all(sr.range[ok] <= base[ok] * 1.25 * (1 + 1e-14))
    assert np.all(sr.buffer_rate[sr.buffer_released] == 0)
    # a release never lowers the range unless the base itself fell below the previous range/1.25
    rel = sr.buffer_released & ok & np.isfinite(prev)
    assert np.all(sr.range[rel] >= np.fmin(prev[rel], base[rel] * 1.25) * (1 - 1e-14))
    assert np.all((sr.buffer_rate >= 0) & (sr.buffer_rate <= 0.25))
    # the buffer is released on the 2020-03-12 crash and the range never sits below raw
    i = int(np.searchsorted(btc_eth.dates, np.datetime64("2020-03-12")))
    assert sr.buffer_released[i, 0]
    assert np.all(sr.range[ok] >= sr.raw[ok])


def test_scan_ranges_stressed_floor_cap_and_no_look_ahead(btc_eth):
    r = btc_eth.values[:, :1]
    sr = cal.scan_ranges(r, floor="stressed", stressed_window=250, stress_weight=0.25,
                         max_daily_increase=0.10)
    ok = np.isfinite(sr.range[1:]) & np.isfinite(sr.range[:-1])
    assert ok.sum() > 2000
    assert np.all(sr.range[1:][ok] <= sr.range[:-1][ok] * 1.10 * (1 + 1e-12))
    assert sr.capped.any()
    # stressed floor >= long-term floor (the worst 250-day window is at least as volatile)
    lt = cal.scan_ranges(r, floor="long_term")
    both = np.isfinite(sr.floor) & np.isfinite(lt.floor)
    assert np.all(sr.floor[both] >= lt.floor[both] * (1 - 1e-12))
    short = cal.scan_ranges(r[:1500], floor="stressed", stressed_window=250, max_daily_increase=0.10)
    np.testing.assert_array_equal(short.range, sr.range[:1500])
    np.testing.assert_array_equal(short.vol_up, sr.vol_up[:1500])
    fixed = cal.scan_ranges(r, floor=0.2, buffer=0.0)
    assert np.nanmin(fixed.range) >= 0.2


def test_vol_shock_proxy(btc_eth):
    r = btc_eth.values
    proxy = cal.fit_vol_shock_proxy(r, horizon_days=1, underlyings=btc_eth.assets)
    assert proxy.coef.shape == (2, 3)
    assert np.all(proxy.coef[:, 2] > 0)  # big moves raise realised vol
    # regression reproduced with numpy directly for BTC
    lv = cal.realized_log_vol(r[:, 0], 30)
    d = lv[30:] - lv[29:-1]
    X = np.column_stack([np.ones(d.size), r[30:, 0], np.abs(r[30:, 0])])
    np.testing.assert_allclose(proxy.coef[0], np.linalg.lstsq(X, d, rcond=None)[0], rtol=1e-10)
    shocks = proxy.apply(np.array([[-0.3, -0.3], [0.0, 0.0]]))
    assert np.all(shocks[0] > shocks[1])
    up, down = cal.vol_shock_sizes(r[:, 0], 0.99, 2)
    assert np.nanmin(up) >= 0 and np.nanmin(down) >= 0 and np.isfinite(up[-1])
    assert cal.scale_vol_shock_to_expiry(0.5, 7.0) == pytest.approx(0.5 * (30 / 7) ** 0.30)
    assert cal.scale_vol_shock_to_expiry(0.5, 90.0) == pytest.approx(0.5 * (30 / 90) ** 0.13)
    assert cal.scale_vol_shock_to_expiry(0.5, 0.2) == pytest.approx(0.5 * 30 ** 0.30)
