"""``replay`` against a slow day-by-day reference, on every reported day.

The reference recomputes each day's margin from its documented definition with plain loops (its own
EWMA recursion, its own h-day sums, its own quantile and tail mean), so an error in the vectorised
windowing, the first reported day, the horizon sums, the filtered rescaling, the measure or the
closed-form ES shows on some day. (Mutation testing found single-day checks too weak here.)
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dpm.market.history import history_from_wide, load_history
from dpm.models import backtest as bt
from dpm.models.calibration.ranges import scan_ranges

Q = {"BTC": 1.5, "ETH": -12.0}
LEVEL = 0.95


@pytest.fixture(scope="module")
def hist():
    full = load_history()
    cut = int(np.searchsorted(full.dates, np.datetime64("2021-09-01")))  # ~ 2 years: quick loops
    lo = int(np.searchsorted(full.dates, np.datetime64("2019-09-01")))
    return history_from_wide(full.dates[lo:cut], full.assets, full.close[lo:cut])


def _returns(hist, min_obs):
    ret = hist.log_returns(list(Q), min_obs=min_obs)
    return ret, ret.values, ret.prices


def _hs_measure(pnl, level, measure):
    """VaR = the ceil(n alpha)-th worst loss; ES = Acerbi-Tasche empirical ES with the fractional
    observation: (sum of the floor(n alpha) worst losses + frac x the next one) / (n alpha)."""
    losses = sorted((-x for x in pnl), reverse=True)
    na = len(losses) * (1 - level)
    if abs(na - round(na)) < 1e-9:
        na = float(round(na))
    if measure == "var":
        return losses[math.ceil(na) - 1]
    m = math.floor(na)
    return (sum(losses[:m]) + (na - m) * (losses[m] if m < len(losses) else 0.0)) / na


def _ewma_var_path(r, lam, warmup):
    """variance[t] forecasts Var(r[t]) from r[:t]; seed mean of squares of r[:warmup]; NaN before."""
    n, u = r.shape
    out = np.full((n + 1, u), np.nan)
    for a in range(u):
        v = sum(r[s, a] ** 2 for s in range(warmup)) / warmup
        out[warmup, a] = v
        for t in range(warmup, n):
            v = lam * v + (1 - lam) * r[t, a] ** 2
            out[t + 1, a] = v
    return out


def _ewma_cov_next(r, t, lam, warmup):
    """The (U, U) EWMA covariance forecast for r[t + 1] from r[: t + 1]."""
    u = r.shape[1]
    c = [[sum(r[s, i] * r[s, j] for s in range(warmup)) / warmup for j in range(u)] for i in range(u)]
    for s in range(warmup, t + 1):
        c = [[lam * c[i][j] + (1 - lam) * r[s, i] * r[s, j] for j in range(u)] for i in range(u)]
    return np.array(c)


def _reference(hist, model, measure, h, window, lam=0.94, warmup=30):
    ret, r, prices = _returns(hist, max(window, warmup) + h + 1)
    n, u = r.shape
    q = np.array([Q[a] for a in ret.assets])
    out = {}
    sig = np.sqrt(_ewma_var_path(r, lam, warmup)) if model == "fhs" else None
    for t in range(n):
        expo = q * prices[t + 1]
        if model in ("hs", "fhs"):
            lo = t - window + 1
            if lo < (0 if model == "hs" else warmup):
                continue
            pnl = []
            for s in range(lo, t - h + 2):  # window - h + 1 overlapping h-day sums inside the window
                tot = 0.0
                for a in range(u):
                    if model == "hs":
                        x = sum(r[s + j, a] for j in range(h))
                    else:  # devolatilise each day by its own forecast, rescale to tomorrow's
                        x = sum(r[s + j, a] / sig[s + j, a] for j in range(h)) * sig[t + 1, a]
                    tot += expo[a] * math.expm1(x)
                pnl.append(tot)
            out[ret.dates[t]] = max(_hs_measure(pnl, LEVEL, measure), 0.0)
        elif model == "ewma_normal":
            if t + 1 < warmup:  # no forecast before the warm-up window is full
                continue
            c = _ewma_cov_next(r, t, lam, warmup)
            sp = math.sqrt(max(float(expo @ c @ expo), 0.0) * h)
            z = stats.norm.ppf(LEVEL)
            out[ret.dates[t]] = sp * (stats.norm.pdf(z) / (1 - LEVEL) if measure == "es" else z)
    return out


def _check(res, ref):
    assert res.dates.size > 100
    for d, m in zip(res.dates, res.margin):
        assert d in ref, f"replay reports {d}, which the reference cannot compute"
        assert m == pytest.approx(ref[d], rel=1e-10, abs=1e-9), str(d)
    # the first day the reference can compute is reported (nothing dropped at the start)
    assert res.dates[0] == min(ref)


@pytest.mark.parametrize("model,measure,h", [("hs", "es", 1), ("hs", "var", 3), ("fhs", "es", 2),
                                             ("fhs", "var", 1)])
def test_historical_simulation_every_day(hist, model, measure, h):
    res = bt.replay(Q, model, history=hist, level=LEVEL, measure=measure, horizon=h, window=40, warmup=30)
    _check(res, _reference(hist, model, measure, h, window=40))


@pytest.mark.parametrize("measure,h", [("es", 1), ("var", 2)])
def test_ewma_normal_every_day(hist, measure, h):
    res = bt.replay(Q, "ewma_normal", history=hist, level=LEVEL, measure=measure, horizon=h, window=40)
    ref = _reference(hist, "ewma_normal", measure, h, window=40)
    for d, m in zip(res.dates, res.margin):
        assert m == pytest.approx(ref[d], rel=1e-10), str(d)


def test_static_and_scan_every_day(hist):
    ret, r, prices = _returns(hist, 40)
    q = np.array([Q[a] for a in ret.assets])
    st = bt.replay(Q, "static", history=hist, static_range=0.2, window=40)
    st2 = bt.replay(Q, "static", history=hist, static_range={"BTC": 0.1, "ETH": 0.3}, window=40)
    sc = bt.replay(Q, "scan", history=hist, level=LEVEL, horizon=2, window=40, warmup=45)
    ranges = scan_ranges(r, LEVEL, 2, warmup=45, assets=ret.assets).range
    for res, rate in ((st, lambda t: np.array([0.2, 0.2])), (st2, lambda t: np.array([0.1, 0.3])),
                      (sc, lambda t: ranges[t])):
        assert res.dates.size > 100
        for d, m in zip(res.dates, res.margin):
            t = int(np.searchsorted(ret.dates, d))
            expo = q * prices[t + 1]
            assert m == pytest.approx(sum(abs(expo[a]) * rate(t)[a] for a in range(2)), rel=1e-12), str(d)
