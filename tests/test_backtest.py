"""Tests for dpm.models.backtest: coverage tests, traffic light, replay, procyclicality, plot."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from dpm.errors import InvalidInputError
from dpm.market.history import load_history
from dpm.models import backtest as bt
from dpm.models.calibration.ewma import ewma_covariance
from dpm.models.calibration.garch import fit_garch, garch_variance
from dpm.models.calibration.ranges import scan_ranges
from dpm.models.measures import var_es

_spec = importlib.util.spec_from_file_location(
    "stats_reference", Path(__file__).parent / "reference" / "stats_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


# ------------------------------------------------------------------ statistics

def test_kupiec_hand_value():
    seq = np.zeros(250, dtype=bool)
    seq[[10, 50, 90, 130, 170]] = True
    k = bt.kupiec_pof(seq, 0.01)
    # -2 ln[0.99^245 0.01^5] + 2 ln[0.98^245 0.02^5], computed by hand: 1.956809788...
    assert k.lr == pytest.approx(1.956809788230622, rel=1e-12)
    assert k.p_value == pytest.approx(stats.chi2.sf(1.956809788230622, 1), rel=1e-12)
    assert (k.n, k.breaches, k.expected, k.rate) == (250, 5, 2.5, 0.02)
    # zero breaches: LR = -2 n ln(1 - p)
    z = bt.kupiec_pof(np.zeros(500), 0.01)
    assert z.lr == pytest.approx(-2 * 500 * math.log(0.99), rel=1e-12)
    # exactly the expected rate: LR = 0, p-value 1
    e = bt.kupiec_pof(np.r_[np.ones(10), np.zeros(990)], 0.01)
    assert e.lr == pytest.approx(0.0, abs=1e-9) and e.p_value == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.random(rng.integers(50, 1000)) < 0.03
        assert bt.kupiec_pof(s, 0.01).lr == pytest.approx(ref.kupiec_lr(s.size, int(s.sum()), 0.01),
                                                         rel=1e-10, abs=1e-10)


def test_christoffersen_hand_values():
    ind = bt.christoffersen_independence([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    assert (ind.n00, ind.n01, ind.n10, ind.n11) == (4, 2, 2, 1)
    assert ind.pi0 == pytest.approx(1 / 3) and ind.pi1 == pytest.approx(1 / 3)
    assert ind.lr == pytest.approx(0.0, abs=1e-12)  # pi0 = pi1 = pi: no evidence of clustering
    clustered = bt.christoffersen_independence([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert (clustered.n00, clustered.n01, clustered.n10, clustered.n11) == (6, 0, 1, 2)
    # -2[7 ln(7/9) + 2 ln(2/9)] + 2[ln(1/3) + 2 ln(2/3)], by hand: 5.715626573...
    assert clustered.lr == pytest.approx(5.715626573268904, rel=1e-12)
    assert clustered.p_value == pytest.approx(stats.chi2.sf(5.715626573268904, 1), rel=1e-12)
    cc = bt.christoffersen_conditional_coverage([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], 0.1)
    lr_pof = ref.kupiec_lr(10, 3, 0.1)
    assert cc.lr == pytest.approx(lr_pof + 5.715626573268904, rel=1e-12)
    assert cc.p_value == pytest.approx(stats.chi2.sf(cc.lr, 2), rel=1e-12)
    rng = np.random.default_rng(1)
    s = rng.random(300) < 0.05
    assert (bt.christoffersen_independence(s).n00, bt.christoffersen_independence(s).n01,
            bt.christoffersen_independence(s).n10,
            bt.christoffersen_independence(s).n11) == ref.christoffersen_counts(s.astype(int).tolist())
    with pytest.raises(InvalidInputError, match="0/1"):
        bt.kupiec_pof([0, 2, 1], 0.01)
    with pytest.raises(InvalidInputError, match="p"):
        bt.kupiec_pof([0, 1], 1.5)


def test_traffic_light_basel_table():
    # Basel (1996) table for 250 observations at 99 %: green 0-4, yellow 5-9, red 10+
    zones = [bt.traffic_light(x, 250, 0.01) for x in range(13)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 3


def test_backtest_margin_report():
    margin = np.array([10.0, 10, 10, 10, 10])
    pnl = np.array([-10.0, -10.5, 3, -20, 0])  # loss equal to margin is not a breach
    m_in, p_in = margin.copy(), pnl.copy()
    rep = bt.backtest_margin(margin, pnl, 0.01)
    np.testing.assert_array_equal(margin, m_in)
    np.testing.assert_array_equal(pnl, p_in)
    assert rep.breaches == 2 and list(rep.breach_index) == [1, 3]
    assert rep.mean_excess_loss == pytest.approx((0.5 + 10) / 2)
    assert rep.kupiec.lr == pytest.approx(ref.kupiec_lr(5, 2, 0.01))
    assert rep.zone == bt.traffic_light(2, 5, 0.01)
    assert "2 breaches in 5 days" in rep.summary()
    assert rep.to_dict()["breaches"] == 2
    with pytest.raises(InvalidInputError, match="same length"):
        bt.backtest_margin(margin, pnl[:3])
    with pytest.raises(InvalidInputError, match="margin.*>= 0"):
        bt.backtest_margin(-margin, pnl)
    with pytest.raises(InvalidInputError, match="realized_pnl.*finite"):
        bt.backtest_margin(margin, np.r_[pnl[:4], np.nan])


# ------------------------------------------------------------------ replay

@pytest.fixture(scope="module")
def hist():
    return load_history()


def test_replay_hs_matches_direct_computation(hist):
    res = bt.replay({"BTC": 2.0}, "hs", history=hist, window=250, horizon=1, start="2021-01-01")
    ret = hist.log_returns(["BTC"])
    t = int(np.searchsorted(ret.dates, np.datetime64("2022-06-12")))
    k = int(np.searchsorted(res.dates, np.datetime64("2022-06-12")))
    price = ret.prices[t + 1, 0]
    assert price == hist.price_on("BTC", "2022-06-12")
    scen = np.expm1(ret.values[t - 249:t + 1, 0])
    direct = var_es(2.0 * price * scen, 0.99).es
    assert res.margin[k] == pytest.approx(direct, rel=1e-12)
    assert res.realized_pnl[k] == pytest.approx(
        2.0 * (hist.price_on("BTC", "2022-06-13") - price), rel=1e-12)
    assert res.breaches[k]  # the Celsius day breaks a 250-day HS ES margin
    assert res.report.n == res.dates.size
    # no look-ahead: replaying a truncated history gives the same margins
    from dpm.market.history import history_from_wide
    cut = int(np.searchsorted(hist.dates, np.datetime64("2023-01-01")))
    short = history_from_wide(hist.dates[:cut], hist.assets, hist.close[:cut])
    res2 = bt.replay({"BTC": 2.0}, "hs", history=short, window=250, start="2021-01-01")
    n2 = res2.dates.size
    np.testing.assert_array_equal(res2.margin, res.margin[:n2])


def test_replay_other_models(hist):
    q = {"BTC": 1.0, "ETH": -10.0}
    ret = hist.log_returns(["BTC", "ETH"])
    day = np.datetime64("2022-11-08")
    t = int(np.searchsorted(ret.dates, day))
    expo = np.array([1.0, -10.0]) * ret.prices[t + 1]
    ew = bt.replay(q, "ewma_normal", history=hist, measure="var", horizon=2, start="2022-01-01")
    k = int(np.searchsorted(ew.dates, day))
    cov = ewma_covariance(ret.values[: t + 1], 0.94, warmup=30)
    assert ew.margin[k] == pytest.approx(
        stats.norm.ppf(0.99) * math.sqrt(2 * expo @ cov @ expo), rel=1e-10)
    st = bt.replay(q, "static", history=hist, static_range={"BTC": 0.16, "ETH": 0.18},
                   start="2022-01-01")
    k = int(np.searchsorted(st.dates, day))
    assert st.margin[k] == pytest.approx(abs(expo[0]) * 0.16 + abs(expo[1]) * 0.18, rel=1e-12)
    sc = bt.replay(q, "scan", history=hist, start="2022-01-01")
    sr = scan_ranges(ret.values, 0.99, 1, assets=("BTC", "ETH"))
    k = int(np.searchsorted(sc.dates, day))
    assert sc.margin[k] == pytest.approx(np.abs(expo) @ sr.range[t], rel=1e-12)
    # GARCH-normal: parameters from the last refit (rows 499, 749, ... of the BTC returns)
    g = bt.replay({"BTC": 1.0}, "garch_normal", history=hist, measure="var", start="2022-01-01")
    rb = hist.log_returns(["BTC"])
    tb = int(np.searchsorted(rb.dates, day))
    t_fit = 499 + 250 * ((tb - 499) // 250)
    f = fit_garch(rb.values[: t_fit + 1, 0])
    hv = garch_variance(rb.values[: tb + 1, 0], f.omega, f.alpha, f.beta,
                        initial_variance=float(np.mean(rb.values[: t_fit + 1, 0] ** 2)))
    k = int(np.searchsorted(g.dates, day))
    assert g.margin[k] == pytest.approx(stats.norm.ppf(0.99) * math.sqrt(hv[-1]) * rb.prices[tb + 1, 0],
                                        rel=1e-9)
    fhs = bt.replay(q, "fhs", history=hist, start="2022-01-01")
    assert np.all(fhs.margin > 0) and fhs.report.n == fhs.dates.size
    np.testing.assert_allclose(fhs.margin_rate, fhs.margin / fhs.gross_exposure)
    with pytest.raises(InvalidInputError, match="model"):
        bt.replay(q, "garch_magic", history=hist)
    with pytest.raises(InvalidInputError, match="unknown asset 'SOL'"):
        bt.replay({"SOL": 1.0}, "hs", history=hist)
    with pytest.raises(InvalidInputError, match="too little history"):
        bt.replay({"BTC": 1.0}, "hs", history=hist, window=5000)


def test_procyclicality_report_hand_values():
    dates = np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-01-11"))
    m = np.array([1.0, 1, 1, 2, 4, 4, 3, 2, 2, 2])
    rep = bt.procyclicality_report(m, dates, {"all": ("2020-01-01", "2020-01-10"),
                                              "late": ("2020-01-06", "2020-01-10")}, long_window=3)
    assert rep["all"]["peak_to_trough"] == 4.0
    assert rep["all"]["max_1d_increase"] == 1.0       # 1 -> 2 and 2 -> 4
    assert rep["all"]["max_3d_increase"] == 3.0       # 1 -> 4 (days 2 -> 5)
    assert rep["late"]["peak_to_trough"] == 2.0
    assert rep["late"]["max_1d_increase"] == 0.0
    assert rep["late"]["max_3d_increase"] == 3.0      # day 6 vs day 3 (before the period)
    with pytest.raises(InvalidInputError, match="no data"):
        bt.procyclicality_report(m, dates, {"x": ("2021-01-01", "2021-02-01")})
    with pytest.raises(InvalidInputError, match="> 0"):
        bt.procyclicality_report(np.zeros(10), dates)


def test_plot(tmp_path, hist):
    pytest.importorskip("matplotlib")
    res = bt.replay({"BTC": 1.0}, "fhs", history=hist, start="2024-01-01")
    path = tmp_path / "bt.png"
    fig = res.plot(path)
    assert path.stat().st_size > 10_000
    assert fig.axes[0].get_ylabel() == "USD"


# --------------------------------------------------------------------------- ES backtest (Z2)
def test_es_z2_matches_its_formula_on_a_constructed_sequence():
    from dpm.models.backtest import es_backtest_z2

    x = np.array([1.0, -3.0, 0.5, -1.0, -5.0])
    var = np.array([2.0, 2.0, 2.0, 2.0, 4.0])
    es = np.array([2.5, 2.5, 2.5, 2.5, 4.5])
    alpha = 0.2
    # breaches: day 1 (-3 < -2) and day 4 (-5 < -4): Z2 = (-3/2.5 - 5/4.5) / (5 * 0.2) + 1
    expected = (-3.0 / 2.5 - 5.0 / 4.5) / (5 * 0.2) + 1.0
    res = es_backtest_z2(x, var, es, alpha, n_sim=200)
    assert res.z2 == pytest.approx(expected, rel=1e-14)
    assert res.breaches == 2 and res.n == 5


def test_es_z2_null_distribution_matches_published_critical_value():
    from dpm.models.backtest import es_backtest_z2

    T, a = 250, 0.025
    q = -stats.norm.ppf(a)
    es = stats.norm.pdf(q) / a
    res = es_backtest_z2(np.zeros(T), np.full(T, q), np.full(T, es), a, n_sim=40_000, seed=3)
    # Acerbi & Szekely (2014): 5 % critical value of Z2 about -0.70 for T = 250, alpha = 2.5 %
    assert res.critical_value_5pct == pytest.approx(-0.70, abs=0.04)


def test_es_z2_accepts_right_forecasts_and_rejects_too_low_es():
    from dpm.models.backtest import es_backtest_z2

    rng = np.random.default_rng(11)
    T, a = 1000, 0.025
    q = -stats.norm.ppf(a)
    es = stats.norm.pdf(q) / a
    sigma = rng.uniform(50, 150, T)  # time-varying but correctly forecast scale
    z2s = []
    for seed in range(40):
        x = np.random.default_rng(seed).standard_normal(T) * sigma
        z2s.append(es_backtest_z2(x, q * sigma, es * sigma, a, n_sim=200).z2)
    assert abs(np.mean(z2s)) < 0.05  # E[Z2] = 0 under the null
    x = rng.standard_normal(T) * sigma
    low = es_backtest_z2(x, 0.7 * q * sigma, 0.7 * es * sigma, a, n_sim=2000)
    assert low.reject_5pct and low.p_value < 0.01 and low.z2 < -1.0
    right = es_backtest_z2(x, q * sigma, es * sigma, a, n_sim=2000)
    assert not right.reject_5pct


def test_es_z2_bad_inputs():
    from dpm.models.backtest import es_backtest_z2

    with pytest.raises(InvalidInputError, match="one length"):
        es_backtest_z2([1.0, 2.0], [1.0], [1.0])
    with pytest.raises(InvalidInputError, match="es: must be > 0"):
        es_backtest_z2([1.0], [1.0], [0.0])
    with pytest.raises(InvalidInputError, match="realized_pnl"):
        es_backtest_z2([np.nan], [1.0], [1.0])
    with pytest.raises(InvalidInputError, match="dof"):
        es_backtest_z2([1.0], [1.0], [1.0], dist="student_t", dof=2.0)
