"""Range-based realised variance, the HAR model and the OHLC loader."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dpm.errors import InvalidInputError
from dpm.market.history import load_history, load_ohlc
from dpm.models.calibration.har import fit_har, har_design
from dpm.models.calibration.realized import realized_variance


def test_load_ohlc_bundled_and_consistent_with_closes():
    o = load_ohlc("BTC")
    assert o.dates[0] == np.datetime64("2014-09-17") and o.open[0] == 465.86 and o.low[0] == 452.42
    assert np.all(o.low <= np.minimum(o.open, o.close)) and np.all(o.high >= np.maximum(o.open, o.close))
    h = load_history()
    d, c = h.prices("BTC")
    np.testing.assert_array_equal(o.dates, d)
    np.testing.assert_array_equal(o.close, c)
    with pytest.raises(ValueError):
        o.close[0] = 1.0  # read-only


def test_load_ohlc_fails_closed(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("date,asset,open,high,low,close\n2020-01-01,BTC,10,11,9,10.5\n2020-01-02,BTC,10,10.2,9,10.5\n")
    with pytest.raises(InvalidInputError, match="2020-01-02.*do not bracket"):
        load_ohlc("BTC", p)
    with pytest.raises(InvalidInputError, match="no rows for 'ETH'"):
        load_ohlc("ETH", p)
    p.write_text("date,asset,open,high,close\n2020-01-01,BTC,10,11,10.5\n")
    with pytest.raises(InvalidInputError, match="missing column"):
        load_ohlc("BTC", p)


def test_realized_variance_hand_values():
    o, h, lo, c = [100.0, 104.0], [110.0, 105.0], [95.0, 99.0], [104.0, 101.0]
    ln2 = math.log(2)
    park = realized_variance(o, h, lo, c, "parkinson", include_gap=False)
    assert park[1] == pytest.approx(math.log(105 / 99) ** 2 / (4 * ln2), rel=1e-14)
    gk = realized_variance(o, h, lo, c, "garman_klass")
    assert np.isnan(gk[0])
    want = 0.5 * math.log(105 / 99) ** 2 - (2 * ln2 - 1) * math.log(101 / 104) ** 2 + math.log(104 / 104) ** 2
    assert gk[1] == pytest.approx(want, rel=1e-14)
    rs = realized_variance(o, h, lo, c, "rogers_satchell", include_gap=False)
    assert rs[0] == pytest.approx(math.log(110 / 104) * math.log(110 / 100) + math.log(95 / 104) * math.log(95 / 100))
    sq = realized_variance(o, h, lo, c, "squared")
    assert np.isnan(sq[0]) and sq[1] == pytest.approx(math.log(101 / 104) ** 2)


def test_range_estimators_are_unbiased_for_a_fine_random_walk():
    # 2,000 days of a driftless walk with 2,500 steps a day (sigma 2 % a day): the estimators' means
    # approach sigma^2 (from below: a discretely sampled range is shorter than the true one)
    rng = np.random.default_rng(11)
    days, steps, sig = 2000, 2500, 0.02
    intraday = np.cumsum(rng.standard_normal((days, steps)) * sig / math.sqrt(steps), axis=1)
    opening = np.concatenate([[0.0], np.cumsum(intraday[:, -1])[:-1]])  # open = previous close
    logp = np.column_stack([opening, opening[:, None] + intraday])
    o, c = np.exp(logp[:, 0]), np.exp(logp[:, -1])
    h, lo = np.exp(logp.max(axis=1)), np.exp(logp.min(axis=1))
    for m in ("parkinson", "garman_klass", "rogers_satchell"):
        v = realized_variance(o, h, lo, c, m)
        assert np.nanmean(v) == pytest.approx(sig ** 2, rel=0.06), m
    # Garman-Klass is far less noisy than the squared return
    assert np.nanvar(realized_variance(o, h, lo, c, "garman_klass")) < 0.3 * np.nanvar(
        realized_variance(o, h, lo, c, "squared"))


def test_realized_variance_fails_closed():
    with pytest.raises(InvalidInputError, match="bracket"):
        realized_variance([100.0], [99.0], [98.0], [100.0])
    with pytest.raises(InvalidInputError, match="lengths"):
        realized_variance([100.0, 1.0], [101.0], [99.0], [100.0])
    with pytest.raises(InvalidInputError, match="method"):
        realized_variance([100.0], [101.0], [99.0], [100.0], "yang_zhang")
    with pytest.raises(InvalidInputError, match="> 0"):
        realized_variance([100.0], [101.0], [0.0], [100.0])


@pytest.mark.parametrize("log", [False, True])
def test_har_matches_statsmodels_ols_with_newey_west(log):
    sm = pytest.importorskip("statsmodels.api")
    o = load_ohlc("BTC")
    rv = realized_variance(o.open, o.high, o.low, o.close)
    fit = fit_har(rv, log=log)
    X = har_design(rv, log=log)[:-1]
    y = np.log(rv[1:]) if log else rv[1:]
    ok = np.all(np.isfinite(X), axis=1) & np.isfinite(y)
    res = sm.OLS(y[ok], X[ok]).fit(cov_type="HAC", cov_kwds={"maxlags": 30, "use_correction": False})
    np.testing.assert_allclose(fit.coef, res.params, rtol=1e-10)
    np.testing.assert_allclose(fit.std_errors, res.bse, rtol=1e-8)
    assert fit.r_squared == pytest.approx(res.rsquared, rel=1e-10)


def test_har_recovers_a_simulated_har_process_and_forecasts_without_look_ahead():
    rng = np.random.default_rng(2)
    b = np.array([0.02, 0.35, 0.30, 0.25])
    n = 6000
    x = np.full(n, 0.2)
    for t in range(30, n):
        x[t] = b[0] + b[1] * x[t - 1] + b[2] * x[t - 7:t].mean() + b[3] * x[t - 30:t].mean() + 0.02 * rng.standard_normal()
    assert x.min() > 0
    fit = fit_har(x[100:])
    assert np.all(np.abs(fit.coef - b) < 4 * fit.std_errors), (fit.coef, fit.std_errors)
    path = fit.forecast_path(x)
    t = 500
    want = fit.coef @ [1.0, x[t - 1], x[t - 7:t].mean(), x[t - 30:t].mean()]
    assert path[t] == pytest.approx(want, rel=1e-12)
    assert np.isnan(path[:30]).all()
    x2 = x.copy()
    x2[t:] = 9.0
    assert fit.forecast_path(x2)[t] == path[t]


def test_har_fails_closed():
    with pytest.raises(InvalidInputError, match="too little"):
        fit_har(np.abs(np.random.default_rng(0).standard_normal(80)))
    with pytest.raises(InvalidInputError, match=">= 0"):
        fit_har(-np.ones(500))
    with pytest.raises(InvalidInputError, match="windows"):
        har_design(np.ones(50), (0, 5))
