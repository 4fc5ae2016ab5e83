"""Edges of parameter checks and logic the mutation run found unpinned (docs/robustness.md,
"Mutation testing"): each test fails if a bound is moved by one step, an ``or`` becomes ``and``, or
the documented mix of floors changes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dpm.errors import InvalidInputError, UnknownAccountError
from dpm.market.history import load_history
from dpm.market.sample import default_instruments
from dpm.models import calibration as cal
from dpm.models.backtest import backtest_margin
from dpm.portfolio.sample import generate_accounts


@pytest.fixture(scope="module")
def btc():
    return load_history().log_returns(["BTC"]).values


# ---------------------------------------------------------------------------------------------
# scan ranges: the stressed floor mixes variances, and every bound is inclusive where documented
# ---------------------------------------------------------------------------------------------
def _floor_variance(floor: np.ndarray, confidence: float = 0.99, horizon: int = 2) -> np.ndarray:
    """Invert ``floor = expm1(z sqrt(h) sqrt(var))``."""
    return (np.log1p(floor) / (stats.norm.ppf(confidence) * math.sqrt(horizon))) ** 2


def test_stressed_floor_is_the_documented_mix_of_variances(btc):
    kw = dict(floor="stressed", stressed_window=250, buffer=0.0)
    f0 = cal.scan_ranges(btc, stress_weight=0.0, **kw).floor
    f1 = cal.scan_ranges(btc, stress_weight=1.0, **kw).floor
    fq = cal.scan_ranges(btc, stress_weight=0.25, **kw).floor
    lt = cal.scan_ranges(btc, floor="long_term", buffer=0.0).floor
    ok = np.isfinite(f0) & np.isfinite(f1) & np.isfinite(fq) & np.isfinite(lt)
    assert ok.sum() > 1000
    # weight 0: the long-term floor; weight 1: the stressed one; in between, linear in variance
    np.testing.assert_allclose(f0[ok], lt[ok], rtol=1e-12)
    v0, v1, vq = (_floor_variance(f[ok]) for f in (f0, f1, fq))
    np.testing.assert_allclose(vq, 0.25 * v1 + 0.75 * v0, rtol=1e-10)
    assert np.all(f1[ok] >= fq[ok] * (1 - 1e-12)) and np.all(fq[ok] >= f0[ok] * (1 - 1e-12))
    assert np.any(f1[ok] > f0[ok] * 1.01)  # the stressed window is really more volatile somewhere


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_stress_weight_bounds_are_inclusive(btc, weight):
    cal.scan_ranges(btc[:400], stress_weight=weight)


@pytest.mark.parametrize("weight", [-1e-9, 1.0 + 1e-9, math.nan])
def test_stress_weight_outside_the_unit_interval_is_refused(btc, weight):
    with pytest.raises(InvalidInputError, match="stress_weight"):
        cal.scan_ranges(btc[:400], stress_weight=weight)


@pytest.mark.parametrize("buffer, trigger", [(-0.01, 0.25), (0.25, -0.01)])
def test_a_negative_buffer_or_release_trigger_alone_is_refused(btc, buffer, trigger):
    with pytest.raises(InvalidInputError, match="buffer/release_trigger"):
        cal.scan_ranges(btc[:400], buffer=buffer, release_trigger=trigger)


def test_zero_buffer_and_trigger_are_accepted_and_mean_no_buffer(btc):
    sr = cal.scan_ranges(btc[:600], buffer=0.0, release_trigger=0.0)
    ok = np.isfinite(sr.range)
    assert ok.any() and np.all(sr.buffer_rate[ok] == 0.0)
    base = np.fmax(sr.raw, np.where(np.isnan(sr.floor), -np.inf, sr.floor))
    np.testing.assert_array_equal(sr.range[ok], base[ok])


@pytest.mark.parametrize("cap", [0.0, -0.1])
def test_speed_limit_must_be_positive(btc, cap):
    with pytest.raises(InvalidInputError, match="max_daily_increase"):
        cal.scan_ranges(btc[:400], max_daily_increase=cap)


# ---------------------------------------------------------------------------------------------
# margin backtest: shapes, and the one-day series
# ---------------------------------------------------------------------------------------------
def test_backtest_refuses_two_dimensional_series_of_the_right_size():
    with pytest.raises(InvalidInputError, match="1-d"):
        backtest_margin(np.ones((2, 2)), np.zeros(4))
    with pytest.raises(InvalidInputError, match="1-d"):
        backtest_margin(np.ones(4), np.zeros((2, 2)))


@pytest.mark.parametrize("pnl, breaches", [(-2.0, 1), (0.5, 0)])
def test_one_day_backtest_has_no_independence_information(pnl, breaches):
    rep = backtest_margin([1.0], [pnl], p=0.01)
    assert rep.breaches == breaches and rep.n == 1
    assert rep.independence.lr == 0.0 and rep.independence.p_value == 1.0
    # conditional coverage is then the Kupiec test alone, with 2 degrees of freedom
    assert rep.conditional_coverage.lr == pytest.approx(rep.kupiec.lr, abs=0.0)
    assert rep.conditional_coverage.p_value == pytest.approx(stats.chi2.sf(rep.kupiec.lr, 2), rel=1e-15)


# ---------------------------------------------------------------------------------------------
# AccountBook.subset: negative indices count from the end, down to -N and no further
# ---------------------------------------------------------------------------------------------
def test_subset_negative_index_bounds():
    book = generate_accounts(5, default_instruments(), seed=3)
    assert list(book.subset([-5]).account_id) == [book.account_id[0]]
    assert list(book.subset([-1, 0]).account_id) == [book.account_id[4], book.account_id[0]]
    for bad in (-6, 5):
        with pytest.raises(UnknownAccountError, match=str(bad)):
            book.subset([bad])


def test_margin_ratio_beyond_the_double_range_is_inf_without_a_warning():
    """MM / equity can overflow (a huge MM on a sliver of equity; found by the long fuzz run): the
    ratio is inf, as for equity <= 0, and no RuntimeWarning reaches the user."""
    import warnings

    from dpm.engines.margin import _finish_arrays

    total = np.array([1e300, 1e300, 0.0, 2.0])
    coll = np.array([1e-10, -5.0, 1.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im, mm, equity, ratio, excess = _finish_arrays(total, np.zeros(4), coll, 1.0, 0.5)
    assert ratio[0] == np.inf and ratio[1] == np.inf  # overflow / equity <= 0: both inf
    assert ratio[2] == 0.0 and ratio[3] == 0.25
