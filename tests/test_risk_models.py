"""The common risk-model interface: no look-ahead, walk-forward, scan ranges, scenarios, replay."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dpm.engines.margin import MarginEngine
from dpm.engines.risk import ScenarioRiskEngine
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.history import load_history, load_ohlc
from dpm.market.sample import default_instruments, default_market
from dpm.market.snapshot import ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.specs import Option
from dpm.market.surface import VolSurface
from dpm.market.table import InstrumentTable
from dpm.models import dpm_default
from dpm.models.backtest import model_margins, replay
from dpm.models.calibration.ewma import ewma_covariance
from dpm.models.calibration.ranges import scan_ranges
from dpm.models.calibration.realized import realized_variance
from dpm.models.dependence.copulas import CopulaModel
from dpm.models.dependence.dcc import DCCModel
from dpm.models.dependence.learned import LearnedTailModel, tail_features, walk_forward_quantiles
from dpm.models.dependence.regimes import RegimeModel
from dpm.models.dynamic import dynamic_model
from dpm.models.measures import var_es
from dpm.models.risk_model import (
    MODEL_NAMES,
    EWMAModel,
    FHSModel,
    GarchModel,
    HARModel,
    RiskModel,
    WalkForward,
    risk_model,
)
from dpm.models.scenarios import MarketScenarios
from dpm.portfolio.accounts import AccountBook
from dpm.pricing import price

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def lr():
    return load_history().log_returns(["BTC", "ETH"], start="2019-01-01", end="2020-12-31")


@pytest.fixture(scope="module")
def gk(lr):
    cols = []
    for a in lr.assets:
        o = load_ohlc(a)
        cols.append(realized_variance(o.open, o.high, o.low, o.close)[np.searchsorted(o.dates, lr.dates)])
    return np.column_stack(cols)


def _models(gk):
    return [EWMAModel(), FHSModel(window=100), GarchModel(dist="t"), GarchModel(dist="skewt", asymmetric=True,
                                                                               correlation="constant"),
            HARModel(realized=gk, window=100, min_obs=200), HARModel(log=False, window=100, min_obs=200),
            DCCModel(), RegimeModel(max_iter=40), CopulaModel(family="clayton"), CopulaModel(family="empirical"),
            LearnedTailModel(max_iter=15, regime_states=2, window=100, min_obs=250)]


def test_every_model_forecasts_without_look_ahead(lr, gk):
    r = lr.values
    for model in _models(gk):
        assert isinstance(model, RiskModel)
        fitted = model.fit(r[:300])
        long, short = fitted.path(r[:420]), fitted.path(r[:360])
        np.testing.assert_array_equal(long.vols[:361], short.vols, err_msg=model.name)
        np.testing.assert_array_equal(long.corr[:361], short.corr, err_msg=model.name)
        v, c = long.vols[300:], long.corr[300:]
        assert np.all(np.isfinite(v) & (v > 0)), model.name
        assert np.all(np.abs(c) <= 1 + 1e-12) and np.allclose(c[:, [0, 1], [0, 1]], 1.0), model.name
        x = fitted.sample(long, 400, 2000, 2, np.random.default_rng(0))
        assert x.shape[1] == 2 and np.all(np.isfinite(x)), model.name
        # a later return never enters the scenarios of an earlier day
        mod = r[:420].copy()
        mod[400:] *= 5.0
        np.testing.assert_array_equal(fitted.sample(fitted.path(mod), 400, 2000, 2, np.random.default_rng(0)), x,
                                      err_msg=model.name)


def test_walk_forward_refits_on_the_past_only(lr):
    r = lr.values[:420]
    wf = WalkForward(GarchModel(dist="t"), r, dates=lr.dates[:420], refit_every=50, first_fit=300)
    assert wf.first_day == 299 and list(wf.fit_rows) == [299, 349, 399]
    f = wf.forecast(360)                                   # block of the refit on row 349
    manual = GarchModel(dist="t").fit(r[:350]).path(r[:361])
    np.testing.assert_array_equal(f.vols, manual.vols[361])
    assert f.date == lr.dates[360]
    vols, corr = wf.forecast_path()
    np.testing.assert_array_equal(vols[360], f.vols)
    assert np.isnan(vols[:299]).all() and np.isfinite(vols[299:]).all()
    with pytest.raises(InvalidInputError, match="before the first fit"):
        wf.forecast(100)
    with pytest.raises(InvalidInputError, match="not in dates"):
        wf.forecast("1999-01-01")


def test_walk_forward_scenarios_feed_the_var_engine(lr):
    wf = WalkForward(DCCModel(), lr, refit_every=60, first_fit=400)
    day = "2020-03-12"
    s = wf.scenarios(day, 4000, seed=3, horizon=2)
    assert isinstance(s, MarketScenarios)
    assert s.underlyings == ("BTC", "ETH") and s.horizon_days == 2 and s.kind == "model:dcc"
    assert len(s) == 4000 and np.all(np.isfinite(s.vol_shock)) and np.any(s.vol_shock != 0)
    np.testing.assert_array_equal(wf.scenarios(day, 4000, seed=3, horizon=2).price_move, s.price_move)
    market, table = default_market(), default_instruments()
    from dpm.portfolio.sample import generate_accounts

    book = generate_accounts(20, table, seed=1)
    res = ScenarioRiskEngine(market, table).var_es(book, s, levels=(0.99, 0.975))
    assert np.all(res.es[0] >= res.var[0]) and np.all(np.isfinite(res.es))


def test_model_scan_ranges_match_ewma_and_set_dynamic_correlations(lr):
    r = lr.values
    wf = WalkForward(EWMAModel(), lr, refit_every=1000, first_fit=600)
    ranges = wf.scan_ranges(0.99, 2, n_scenarios=60_000, floor=None, buffer=0.0)
    ref = scan_ranges(r, 0.99, 2, floor=None, buffer=0.0, dates=lr.dates, assets=lr.assets)
    rows = np.arange(600, r.shape[0])
    # normal scenarios: the 99 % two-sided quantile is z sigma sqrt(2), up to Monte Carlo error
    np.testing.assert_allclose(ranges.raw[rows], ref.raw[rows], rtol=0.03)
    np.testing.assert_array_equal(ranges.range[rows], ranges.raw[rows])
    assert np.isnan(ranges.raw[:599]).all()
    np.testing.assert_allclose(ranges.ewma_vol[rows], ref.ewma_vol[rows], rtol=1e-12)
    cov = ewma_covariance(r[:701], path=False)
    assert ranges.correlation[700, 0, 1] == pytest.approx(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]), rel=1e-10)
    assert ranges.model == "ewma"
    day = "2020-09-07"
    t = int(np.flatnonzero(lr.dates == np.datetime64(day))[0])
    m = dynamic_model(dpm_default(), ranges, day)
    assert m.params("BTC").price_range == ranges.range[t, 0]
    np.testing.assert_allclose(m.correlation_matrix(["BTC", "ETH"]), ranges.correlation[t], atol=1e-12)
    # a model without offsets keeps none
    assert dynamic_model(dpm_default(correlation=None), ranges, day).correlation is None
    assert dynamic_model(dpm_default(), ranges, day, correlation=False).correlation == {("BTC", "ETH"): 0.8}
    market, table = default_market(), default_instruments()
    from dpm.portfolio.sample import generate_accounts

    book = generate_accounts(30, table, seed=2)
    im = MarginEngine(market, table, m).margin_many(book).initial_margin
    assert np.all(np.isfinite(im)) and im.sum() > 0


def test_replay_takes_a_model_object_or_name_and_agrees_with_the_closed_form(lr):
    hist = load_history()
    kw = dict(history=hist, start="2021-01-01", end="2021-06-30", refit_days=90, n_scenarios=40_000)
    by_obj = replay({"BTC": 1.0, "ETH": -10.0}, EWMAModel(), **kw)
    by_name = replay({"BTC": 1.0, "ETH": -10.0}, "ewma", **kw)
    np.testing.assert_array_equal(by_obj.margin, by_name.margin)
    assert by_obj.model == "ewma"
    # the margin of a day is the ES of the book's full revaluation over that day's scenarios
    ret = hist.log_returns(["BTC", "ETH"])
    wf = WalkForward(EWMAModel(), ret, refit_every=90, first_fit=500)
    t = int(np.flatnonzero(ret.dates == by_obj.dates[10])[0])
    expo = np.array([1.0, -10.0]) * ret.prices[t + 1]
    x = wf.sample(t, 40_000, seed=t)
    assert by_obj.margin[10] == pytest.approx(var_es(np.expm1(x) @ expo, 0.99).es, rel=1e-12)
    # and close to the delta-normal closed form (not equal: full revaluation, Monte Carlo error)
    closed = replay({"BTC": 1.0, "ETH": -10.0}, "ewma_normal", history=hist, start="2021-01-01", end="2021-06-30")
    np.testing.assert_array_equal(closed.dates, by_obj.dates)
    assert np.corrcoef(by_obj.margin, closed.margin)[0, 1] > 0.95
    assert abs(np.mean(by_obj.margin / closed.margin) - 1) < 0.1
    with pytest.raises(InvalidInputError, match="got 'magic'"):
        replay({"BTC": 1.0}, "magic", history=hist)


def test_model_margins_match_var_es_per_book(lr):
    wf = WalkForward(GarchModel(), lr, refit_every=100, first_fit=400)
    w = np.array([[1.0, 0.0], [1.0, -1.0]])
    v, e = model_margins(wf, lambda t, x: w @ np.expm1(x).T, [450, 451], (0.99, 0.975), n_scenarios=5000, seed=7)
    assert v.shape == e.shape == (2, 2, 2)
    x = wf.sample(451, 5000, seed=7 + 451)
    res = var_es(np.expm1(x) @ w[1], 0.975)
    assert v[1, 1, 1] == res.var and e[1, 1, 1] == res.es
    one_v, one_e = model_margins(wf, lambda t, x: np.expm1(x) @ w[0], [450], (0.99,), n_scenarios=5000, seed=7)
    assert one_v.shape == (1, 1) and one_v[0, 0] == v[0, 0, 0]
    with pytest.raises(InvalidInputError, match="scenario P&Ls"):
        model_margins(wf, lambda t, x: np.zeros(3), [450], n_scenarios=100)


def test_straddle_revaluation_with_pricing_equals_the_scenario_engine(lr):
    """The benchmark's short straddle, revalued with dpm.pricing.price, gives the VaR/ES that
    ScenarioRiskEngine gives on a flat-vol snapshot of the same day."""
    wf = WalkForward(GarchModel(dist="t"), lr, refit_every=100, first_fit=400)
    day = 450
    S, vol, lam = float(lr.prices[day + 1, 0]), 0.65, 0.94
    x = wf.sample(day, 3000, seed=1)[:, 0]
    v_daily2 = vol * vol / 365.0
    new_vol = np.sqrt(lam * vol * vol + (1 - lam) * 365.0 * x * x)
    T0, T1 = 30 / 365, 29 / 365

    def straddle(s, v, T):
        return price(s, S, v, T, "call") + price(s, S, v, T, "put")

    pnl = -(straddle(S * np.exp(x), new_vol, T1) - straddle(S, vol, T0))
    want = var_es(pnl, np.array([0.99, 0.975]))
    now = 1_600_000_000_000
    expiry = now + 30 * 86_400_000
    surface = VolSurface.from_svi_params([[vol * vol * T0, 0.0, 0.0, 0.0, 0.1]], [T0], repair=False)
    market = MarketSnapshot(now, {"BTC": UnderlyingMarket(S, ForwardCurve.from_rate(S, 0.0), surface)})
    table = InstrumentTable.from_specs([Option("BTC", expiry, S, "call", inverse=False),
                                        Option("BTC", expiry, S, "put", inverse=False)], names=["C", "P"])
    book = AccountBook.from_positions([{"account_id": "a", "instrument": n, "quantity": -1.0} for n in table.names],
                                      table, collateral={"a": {"USDC": 1e6}})
    scen = MarketScenarios(np.expm1(x)[:, None], (new_vol / vol - 1.0)[:, None], tuple(f"s{i}" for i in range(x.size)),
                           ("BTC",), 1, "test")
    got = ScenarioRiskEngine(market, table, vol_term_structure=None).var_es(book, scen, levels=(0.99, 0.975))
    np.testing.assert_allclose(got.var[:, 0], want.var, rtol=1e-9)
    np.testing.assert_allclose(got.es[:, 0], want.es, rtol=1e-9)
    assert v_daily2 > 0


# ------------------------------------------------------------------ learned model

def test_tail_features_use_no_later_return(lr):
    r = lr.values
    X, sigma, names = tail_features(r)
    mod = r.copy()
    mod[500:] = -mod[500:] * 3
    X2, sigma2, _ = tail_features(mod)
    np.testing.assert_array_equal(X[:500], X2[:500])
    np.testing.assert_array_equal(sigma[:501], sigma2[:501])
    assert len(names) == X.shape[2] and np.isfinite(X[100:]).all()


def test_walk_forward_quantiles_learn_a_nonlinear_tail_without_look_ahead():
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.uniform(-1, 1, (n, 2))
    scale = np.where(np.abs(x[:, 0]) > 0.5, 3.0, 1.0) * (1 + 0.5 * (x[:, 1] > 0))  # non-linear in the features
    y = scale * rng.standard_normal(n)
    kw = dict(first_train=1000, refit_every=500, max_iter=40, min_samples_leaf=30)
    q = walk_forward_quantiles(x, y, (0.05,), **kw)
    assert np.isnan(q[:999]).all() and np.isfinite(q[999:]).all()
    rows = np.arange(999, n)
    true = stats.norm.ppf(0.05) * scale[rows]
    assert np.corrcoef(q[rows, 0], true)[0, 1] > 0.75
    assert 0.03 < np.mean(y[rows] < q[rows, 0]) < 0.08
    # targets after a refit row do not change the predictions of its block
    y2 = y.copy()
    y2[1500:] = 100.0
    np.testing.assert_array_equal(walk_forward_quantiles(x, y2, (0.05,), **kw)[:1499], q[:1499])


def test_learned_model_scales_fhs_scenarios_by_the_learned_quantiles(lr):
    r = lr.values
    model = LearnedTailModel(max_iter=30, regime_states=0, window=200, min_obs=300)
    fitted = model.fit(r[:450])
    path = fitted.path(r[:500])
    x = fitted.sample(path, 500, 1, 1, np.random.default_rng(0))
    z = path.extras["z"][300:500]
    assert x.shape == (200, 2)
    # down and up moves are rescaled separately, so the sign pattern of the window is kept
    np.testing.assert_array_equal(np.sign(x), np.sign(z))
    for j in range(2):
        for side in (z[:, j] < 0, z[:, j] > 0):
            ratio = x[side, j] / (z[side, j] * path.extras["sigma"][500, j])
            assert np.ptp(ratio) < 1e-12 * ratio[0]
            assert model.multiplier_bounds[0] <= ratio[0] <= model.multiplier_bounds[1]


# ------------------------------------------------------------------ registry and failures

def test_registry_builds_every_named_model():
    for name in MODEL_NAMES:
        m = risk_model(name)
        assert isinstance(m, RiskModel)
    assert risk_model("t_copula").name == "t_copula" and risk_model("regime", n_states=3).n_states == 3
    with pytest.raises(InvalidInputError, match="expected one of"):
        risk_model("lstm")


def test_walk_forward_fails_closed(lr):
    with pytest.raises(InvalidTypeError, match="RiskModel"):
        WalkForward(object(), lr)
    with pytest.raises(InvalidInputError, match="needs 5000"):
        WalkForward(EWMAModel(), lr, first_fit=5000)
    with pytest.raises(InvalidInputError, match="underlyings"):
        WalkForward(EWMAModel(), lr.values, underlyings=["BTC"])
    with pytest.raises(InvalidInputError, match="realized"):
        HARModel(realized=np.ones((10, 2))).fit(lr.values)
    with pytest.raises(InvalidInputError, match="correlation"):
        GarchModel(correlation="dcc").fit(lr.values)
    with pytest.raises(InvalidInputError, match="at least 2"):
        DCCModel().fit(lr.values[:, :1])


def test_dynamic_model_keeps_the_base_correlations_of_underlyings_the_ranges_do_not_cover():
    from dataclasses import replace

    from dpm.models.calibration.ranges import DynamicScanRange

    n = 3
    ones = np.full((n, 2), 0.1)
    corr = np.tile(np.array([[1.0, 0.3], [0.3, 1.0]]), (n, 1, 1))
    ranges = DynamicScanRange(np.array(["2024-01-01", "2024-01-02", "2024-01-03"], dtype="datetime64[D]"),
                              ("BTC", "ETH"), 0.99, 2, ones, ones, ones, ones, np.zeros((n, 2), bool),
                              np.zeros((n, 2), bool), ones, ones, ones, corr, "test")
    base = replace(dpm_default(), correlation=np.array([[1, 0.8, 0.5], [0.8, 1, 0.6], [0.5, 0.6, 1.0]]),
                   correlation_order=("BTC", "ETH", "SOL"))
    m = dynamic_model(base, ranges, 1)
    C = m.correlation_matrix(["SOL", "ETH", "BTC"])
    assert C[2, 1] == pytest.approx(0.3) and C[0, 1] == pytest.approx(0.6) and C[0, 2] == pytest.approx(0.5)
    assert "correlation" in m.source and "test calibration" in m.source
    bad = replace(ranges, correlation=np.full((n, 2, 2), np.nan))
    with pytest.raises(InvalidInputError, match="correlation on 2024-01-02 is not finite"):
        dynamic_model(base, bad, 1)
