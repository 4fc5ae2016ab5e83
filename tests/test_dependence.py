"""Dependence models: DCC, the Gaussian HMM (against hmmlearn) and copulas (against statsmodels)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dpm.errors import InvalidInputError
from dpm.market.history import load_history
from dpm.models.dependence.copulas import (
    Copula,
    empirical_tail_dependence,
    fit_copula,
    kendall_tau,
    pseudo_observations,
)
from dpm.models.dependence.dcc import dcc_correlation, dcc_loglik_obs, fit_dcc
from dpm.models.dependence.regimes import fit_gaussian_hmm, gaussian_hmm_filter
from dpm.models.generators.montecarlo import t_copula_tail_dependence

_spec = importlib.util.spec_from_file_location(
    "dependence_reference", Path(__file__).parent / "reference" / "dependence_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


@pytest.fixture(scope="module")
def btc_eth():
    return load_history().log_returns(["BTC", "ETH"]).values


def _simulate_dcc(n, a, b, qbar, seed):
    rng = np.random.default_rng(seed)
    q = qbar.copy()
    z = np.empty((n, 2))
    for t in range(n):
        d = np.sqrt(np.diag(q))
        z[t] = np.linalg.cholesky(q / np.outer(d, d)) @ rng.standard_normal(2)
        q = (1 - a - b) * qbar + a * np.outer(z[t], z[t]) + b * q
    return z


# ------------------------------------------------------------------ DCC

def test_dcc_path_and_likelihood_match_the_loop_reference():
    z = _simulate_dcc(300, 0.06, 0.9, np.array([[1.0, 0.5], [0.5, 1.0]]), seed=4)
    qbar = z.T @ z / z.shape[0]
    R = dcc_correlation(z, 0.06, 0.9)
    want = ref.dcc_path_2d(z.tolist(), 0.06, 0.9, qbar.tolist())
    np.testing.assert_allclose(R[:, 0, 1], want, rtol=1e-12)
    np.testing.assert_array_equal(R[:, 0, 0], 1.0)
    ll = dcc_loglik_obs(z, R[:-1]).sum()
    assert ll == pytest.approx(ref.dcc_loglik_2d(z.tolist(), want[:-1]), rel=1e-12)


def test_dcc_recovers_simulated_parameters():
    a, b = 0.05, 0.92
    z = _simulate_dcc(3000, a, b, np.array([[1.0, 0.6], [0.6, 1.0]]), seed=1)
    fit = fit_dcc(z)
    assert fit.converged
    assert abs(fit.a - a) < 3 * fit.robust_std_errors[0] and abs(fit.b - b) < 3 * fit.robust_std_errors[1]
    # the fit maximises the likelihood: nearby parameters do worse
    for da, db in ((0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)):
        R = dcc_correlation(z, fit.a + da, fit.b + db, fit.qbar)
        assert dcc_loglik_obs(z, R[:-1]).sum() < fit.loglik
    # extending the data changes no earlier correlation
    longer = np.vstack([z, [[3.0, -2.0]]])
    np.testing.assert_array_equal(fit.correlation_path(longer)[: z.shape[0] + 1], fit.correlation)


def test_dcc_fails_closed():
    with pytest.raises(InvalidInputError, match="at least 2"):
        fit_dcc(np.random.default_rng(0).standard_normal((300, 1)))
    with pytest.raises(InvalidInputError, match="a \\+ b < 1"):
        dcc_correlation(np.ones((5, 2)), 0.5, 0.6)


# ------------------------------------------------------------------ Gaussian HMM

def test_hmm_likelihood_and_posteriors_match_hmmlearn(btc_eth):
    hmm = pytest.importorskip("hmmlearn.hmm")
    r = btc_eth[-1200:]
    fit = fit_gaussian_hmm(r, 2)
    m = hmm.GaussianHMM(2, covariance_type="full", min_covar=1e-12, init_params="", params="")
    m.startprob_, m.transmat_, m.means_, m.covars_ = fit.startprob, fit.transmat, fit.means, fit.covariances
    assert fit.loglik == pytest.approx(m.score(r), rel=1e-10)
    np.testing.assert_allclose(fit.smoothed(r), m.predict_proba(r), atol=1e-8)
    filt, ll = fit.filter(r[:150])
    want, wll = ref.hmm_forward_2d(r[:150].tolist(), fit.means.tolist(), fit.covariances.tolist(),
                                   fit.transmat.tolist(), fit.startprob.tolist())
    np.testing.assert_allclose(filt, want, atol=1e-10)
    assert ll == pytest.approx(wll, rel=1e-10)
    np.testing.assert_allclose(fit.filtered[:150], filt, atol=1e-12)


def test_hmm_em_steps_match_hmmlearn_from_the_same_start(btc_eth):
    hmm = pytest.importorskip("hmmlearn.hmm")
    r = btc_eth[-900:]
    start = fit_gaussian_hmm(r, 2, max_iter=1, reg_covar=0.0)
    ours = fit_gaussian_hmm(r, 2, max_iter=6, init=start, reg_covar=0.0, tol=0.0)
    # hmmlearn's default covariance prior (1e-2) is larger than a daily return variance: switched off
    m = hmm.GaussianHMM(2, covariance_type="full", min_covar=1e-14, covars_prior=0.0, n_iter=6, tol=0.0,
                        init_params="", params="stmc", implementation="scaling")
    m.startprob_, m.transmat_, m.means_, m.covars_ = start.startprob, start.transmat, start.means, start.covariances
    m.fit(r)
    np.testing.assert_allclose(ours.means, m.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.covariances, m.covars_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours.transmat, m.transmat_, rtol=1e-6, atol=1e-9)


def test_hmm_recovers_a_simulated_calm_and_stressed_regime():
    rng = np.random.default_rng(8)
    A = np.array([[0.98, 0.02], [0.05, 0.95]])
    covs = np.array([[[1e-4, 0.5e-4], [0.5e-4, 1e-4]], [[16e-4, 14e-4], [14e-4, 16e-4]]])
    n = 4000
    s = np.empty(n, dtype=int)
    s[0] = 0
    for t in range(1, n):
        s[t] = rng.random() < A[s[t - 1], 1]
    chol = np.linalg.cholesky(covs)
    r = np.einsum("nij,nj->ni", chol[s], rng.standard_normal((n, 2)))
    fit = fit_gaussian_hmm(r, 2)
    assert fit.converged and fit.stressed_state == 1
    np.testing.assert_allclose(fit.transmat, A, atol=0.02)
    np.testing.assert_allclose(fit.vols(), np.sqrt(np.diagonal(covs, axis1=1, axis2=2)), rtol=0.06)
    np.testing.assert_allclose(fit.correlations()[:, 0, 1], [0.5, 0.875], atol=0.05)
    # the stressed regime raises vols and correlation; filtered probabilities find it without look-ahead
    assert np.mean(fit.filtered[s == 1, 1] > 0.5) > 0.9
    filt, _ = gaussian_hmm_filter(r[:2000], fit.means, fit.covariances, fit.transmat, fit.startprob)
    np.testing.assert_allclose(filt, fit.filtered[:2000], atol=1e-12)
    # mixture moments and sampling agree
    p = np.array([0.3, 0.7])
    _, cov = fit.mixture_moments(p)
    draws = fit.sample(p, 200_000, np.random.default_rng(0))
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.03)


# ------------------------------------------------------------------ copulas

_R = np.array([[1.0, 0.6], [0.6, 1.0]])


@pytest.mark.parametrize("family, params, sm_name, sm_args", [
    ("gaussian", {"corr": _R}, "GaussianCopula", (_R,)),
    ("t", {"corr": _R, "nu": 4.5}, "StudentTCopula", (_R, 4.5)),
    ("clayton", {"theta": 2.3}, "ClaytonCopula", (2.3,)),
    ("gumbel", {"theta": 1.7}, "GumbelCopula", (1.7,)),
    ("clayton_survival", {"theta": 1.4}, "ClaytonCopula", (1.4,)),
    ("gumbel_survival", {"theta": 2.2}, "GumbelCopula", (2.2,)),
])
def test_copula_densities_match_statsmodels(family, params, sm_name, sm_args):
    cop_api = pytest.importorskip("statsmodels.distributions.copula.api")
    u = np.random.default_rng(3).uniform(0.005, 0.995, (200, 2))
    ours = Copula(family, 2, **params).logpdf(u)
    theirs = getattr(cop_api, sm_name)(*sm_args)
    want = theirs.logpdf(1.0 - u if family.endswith("survival") else u)
    np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-12)


def test_clayton_density_in_three_dimensions_matches_statsmodels():
    cop_api = pytest.importorskip("statsmodels.distributions.copula.api")
    u = np.random.default_rng(4).uniform(0.01, 0.99, (100, 3))
    np.testing.assert_allclose(Copula("clayton", 3, theta=1.3).logpdf(u),
                               cop_api.ClaytonCopula(1.3, k_dim=3).logpdf(u), rtol=1e-10)


def _joint_tail(family: str, theta: float, q: float, tail: str) -> float:
    """Exact ``P(U1 <= q, U2 <= q) / q`` (lower) or ``P(U1 > 1-q, U2 > 1-q) / q`` (upper)."""
    def C(u):  # the base (unrotated) copula on the diagonal
        if family.startswith("clayton"):
            return (2.0 * u ** -theta - 1.0) ** (-1.0 / theta)
        return u ** (2.0 ** (1.0 / theta))
    survival = family.endswith("survival")
    if (tail == "lower") != survival:
        return C(q) / q
    return (1.0 - 2.0 * (1.0 - q) + C(1.0 - q)) / q


@pytest.mark.parametrize("family, theta", [("clayton", 2.0), ("gumbel", 2.0), ("gumbel_survival", 1.6),
                                           ("clayton_survival", 1.0)])
def test_archimedean_samples_fit_and_tail_dependence(family, theta):
    rng = np.random.default_rng(7)
    c = Copula(family, 2, theta=theta)
    s = c.sample(20_000, rng)
    assert kendall_tau(s)[0, 1] == pytest.approx(c.kendall_tau()[0, 1], abs=0.015)
    u = pseudo_observations(s)
    fit = fit_copula(u, family)
    assert fit.theta == pytest.approx(theta, rel=0.05)
    lo, up = c.tail_dependence()
    for tail, coef in (("lower", lo[0, 1]), ("upper", up[0, 1])):
        # the sample's joint exceedances match the copula at q = 2 %, and the coefficient is the q -> 0 limit
        emp = empirical_tail_dependence(u, 0.02, tail)[0, 1]
        assert emp == pytest.approx(_joint_tail(family, theta, 0.02, tail), abs=0.06)
        assert _joint_tail(family, theta, 1e-9, tail) == pytest.approx(coef, abs=2e-3)
    assert (lo[0, 1] > 0) != (up[0, 1] > 0)   # one-sided tail dependence
    assert fit.aic < fit_copula(u, "gaussian").aic


def test_t_copula_fit_and_tail_dependence_agree_with_the_monte_carlo_module():
    c = Copula("t", 2, corr=_R, nu=4.0)
    s = c.sample(20_000, np.random.default_rng(9))
    fit = fit_copula(pseudo_observations(s), "t")
    assert fit.nu == pytest.approx(4.0, rel=0.2) and fit.corr[0, 1] == pytest.approx(0.6, abs=0.02)
    lo, up = c.tail_dependence()
    assert lo[0, 1] == up[0, 1] == pytest.approx(float(t_copula_tail_dependence(0.6, 4.0)), rel=1e-12)
    np.testing.assert_array_equal(Copula("gaussian", 2, corr=_R).tail_dependence()[0], np.eye(2))


def test_empirical_tail_dependence_hand_example():
    u = np.array([[0.01, 0.02], [0.03, 0.5], [0.5, 0.04], [0.97, 0.98], [0.6, 0.7]])
    lo = empirical_tail_dependence(u, 0.05, "lower")
    assert lo[0, 1] == pytest.approx(1.0 / 2.0)   # one joint exceedance, two below q in each margin
    up = empirical_tail_dependence(u, 0.05, "upper")
    assert up[0, 1] == pytest.approx(1.0)
    emp = fit_copula(u, "empirical")
    assert emp.sample(3, np.random.default_rng(0)).shape == (3, 2)


def test_copulas_fail_closed():
    with pytest.raises(InvalidInputError, match="inside"):
        Copula("clayton", 2, theta=1.0).logpdf([[0.0, 0.5]])
    with pytest.raises(InvalidInputError, match="theta"):
        Copula("gumbel", 2, theta=0.5)
    with pytest.raises(InvalidInputError, match="2 margins"):
        Copula("gumbel", 3, theta=1.5).logpdf(np.full((1, 3), 0.5))
    with pytest.raises(InvalidInputError, match="family"):
        fit_copula(np.full((5, 2), 0.5), "frank")
    with pytest.raises(InvalidInputError, match="no density"):
        Copula("empirical", 2, data=np.full((3, 2), 0.5)).logpdf([[0.5, 0.5]])
