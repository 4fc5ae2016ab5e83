"""Tail statistics against independent references: the Z2 p-value and Student-t expected shortfall.

* The Acerbi-Székely Z2 p-value of :func:`dpm.models.backtest.es_backtest_z2` is recomputed by a
  plain loop over the same random draws, with the unit VaR/ES taken from mpmath (not scipy), and
  must agree exactly: ``p = (#{simulated Z2 <= observed} + 1) / (n_sim + 1)`` (the "+1" counts the
  observed history as one draw of the null; Davison & Hinkley 1997, eq. 4.11).
* The Student-t VaR/ES used by the backtest is checked against numerical integration of the
  t density in mpmath, and the ES of ``mc_scenarios(dist="student_t")`` against the closed form of
  a unit-variance t scaled by the vol (McNeil, Frey & Embrechts 2015, Example 2.15:
  ``ES_alpha = f_nu(t) / alpha * (nu + t^2) / (nu - 1)`` for the standard t with ``t = -t_nu^-1(alpha)``).
"""
from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest

from dpm.models.backtest import _unit_var_es, es_backtest_z2
from dpm.models.generators.montecarlo import mc_scenarios

mp.mp.dps = 25


def _t_pdf(x, nu):
    nu = mp.mpf(nu)
    return mp.gamma((nu + 1) / 2) / (mp.sqrt(nu * mp.pi) * mp.gamma(nu / 2)) * (1 + x * x / nu) ** (-(nu + 1) / 2)


def _t_tail(x, nu):
    """P(T > x) for x > 0: half the regularised incomplete beta I_{nu/(nu+x^2)}(nu/2, 1/2)."""
    nu = mp.mpf(nu)
    return mp.betainc(nu / 2, mp.mpf(1) / 2, 0, nu / (nu + x * x), regularized=True) / 2


@functools.lru_cache(maxsize=None)
def _reference_var_es(alpha: float, dist: str, dof: float | None) -> tuple[float, float]:
    """VaR and ES (positive losses) of the standard normal or standard t, by mpmath alone."""
    a = mp.mpf(alpha)
    if dist == "normal":
        q = -mp.sqrt(2) * mp.erfinv(2 * a - 1)  # -Phi^-1(alpha)
        es = mp.quad(lambda y: y * mp.npdf(y), [q, mp.inf]) / a
        return float(q), float(es)
    q = mp.findroot(lambda x: _t_tail(x, dof) - a, mp.mpf(2.5))
    es = mp.quad(lambda y: y * _t_pdf(y, dof), [q, mp.inf]) / a
    return float(q), float(es)


@pytest.mark.parametrize("alpha", [0.01, 0.025, 0.05])
@pytest.mark.parametrize(("dist", "dof"), [("normal", None), ("student_t", 2.5), ("student_t", 3.0),
                                           ("student_t", 4.0), ("student_t", 10.0), ("student_t", 50.0)])
def test_unit_var_es_against_mpmath_integration(alpha, dist, dof) -> None:
    q, es = _unit_var_es(alpha, dist, dof)
    q_ref, es_ref = _reference_var_es(alpha, dist, dof)
    assert q == pytest.approx(q_ref, rel=1e-10)
    assert es == pytest.approx(es_ref, rel=1e-10)


def _independent_z2_test(x, v, e, alpha, n_sim, dist, dof, seed):
    """Z2, p-value and 5 % critical value by a plain loop over the same draws as the library."""
    T = len(x)
    q_unit, es_unit = _reference_var_es(alpha, dist, dof)

    def z2(pnl, var, es):
        total = 0.0
        for t in range(T):
            if pnl[t] < -var[t]:
                total += pnl[t] / es[t]
        return total / (T * alpha) + 1.0

    observed = z2(x, v, e)
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((n_sim, T)) if dist == "normal" else rng.standard_t(dof, (n_sim, T))
    sims = []
    for row in draws:
        scale = [e[t] / es_unit for t in range(T)]
        sims.append(z2([row[t] * scale[t] for t in range(T)], [q_unit * scale[t] for t in range(T)], e))
    count = sum(s <= observed for s in sims)
    ordered = sorted(sims)
    pos = 0.05 * (n_sim - 1)
    lo = math.floor(pos)
    crit = ordered[lo] + (pos - lo) * (ordered[min(lo + 1, n_sim - 1)] - ordered[lo])
    gap = min(abs(s - observed) for s in sims)
    return observed, (count + 1) / (n_sim + 1), crit, gap


@pytest.mark.parametrize(("dist", "dof"), [("normal", None), ("student_t", 5.0)])
@pytest.mark.parametrize("too_low", [1.0, 0.8])
def test_z2_p_value_against_an_independent_simulation(dist, dof, too_low) -> None:
    rng = np.random.default_rng(5)
    T, alpha, n_sim = 120, 0.025, 300
    sigma = rng.uniform(50, 150, T)
    q_unit, es_unit = _reference_var_es(alpha, dist, dof)
    draws = rng.standard_normal(T) if dist == "normal" else rng.standard_t(dof, T)
    x = draws * sigma
    v, e = too_low * q_unit * sigma, too_low * es_unit * sigma
    res = es_backtest_z2(x, v, e, alpha, n_sim=n_sim, dist=dist, dof=dof, seed=17)
    z2, p, crit, gap = _independent_z2_test(x, v, e, alpha, n_sim, dist, dof, 17)
    assert gap > 1e-9, "a simulated Z2 ties the observed one: pick another seed"
    assert res.z2 == pytest.approx(z2, rel=1e-12)
    assert res.p_value == p  # exact: (count + 1) / (n_sim + 1)
    assert res.critical_value_5pct == pytest.approx(crit, rel=1e-9, abs=1e-12)
    assert res.reject_5pct == (z2 < crit)


def test_z2_p_value_without_exceedances_is_one() -> None:
    # Z2 <= 1 for every history and Z2 = 1 exactly without exceedances: every simulated history is
    # at most as extreme, so p = (n_sim + 1) / (n_sim + 1); "<" instead of "<=" would give far less
    T, alpha = 5, 0.025  # 88 % of simulated histories have no exceedance either
    q, es = _reference_var_es(alpha, "normal", None)
    res = es_backtest_z2(np.zeros(T), np.full(T, q), np.full(T, es), alpha, n_sim=400, seed=1)
    assert res.z2 == 1.0 and res.breaches == 0
    assert res.p_value == 1.0


def test_mc_student_t_scenarios_have_the_closed_form_expected_shortfall() -> None:
    nu, alpha, vol, horizon = 4.0, 0.025, 0.03, 4
    sc = mc_scenarios(vols=[vol], corr=[[1.0]], n_paths=1_000_000, horizon=horizon, dist="student_t", dof=nu,
                      seed=2024, underlyings=["BTC"])
    lr = np.log1p(sc.price_move[:, 0])
    losses = np.sort(-lr)[::-1]
    k = int(alpha * lr.size)
    es_mc = losses[:k].mean()
    q_std, es_std = _reference_var_es(alpha, "student_t", nu)
    # a unit-variance t has the standard t scaled by sqrt((nu - 2) / nu); the h-day vol is vol * sqrt(h)
    unit = math.sqrt((nu - 2.0) / nu) * vol * math.sqrt(horizon)
    assert es_mc == pytest.approx(es_std * unit, rel=0.02)
    assert losses[k - 1] == pytest.approx(q_std * unit, rel=0.02)
    normal_es = float(mp.npdf(mp.sqrt(2) * mp.erfinv(1 - 2 * mp.mpf(alpha))) / alpha) * vol * math.sqrt(horizon)
    assert es_mc > 1.03 * normal_es  # fatter tail than the normal of the same variance
