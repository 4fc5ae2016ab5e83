"""GARCH family: innovation distributions, GJR-GARCH fits against arch, robust standard errors."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from dpm.errors import InvalidInputError
from dpm.market.history import load_history
from dpm.models.calibration.garch import fit_garch
from dpm.models.calibration.gjr_garch import arch_backcast, fit_gjr_garch, gjr_variance
from dpm.models.calibration.innovations import Innovation, innovation

_spec = importlib.util.spec_from_file_location(
    "dependence_reference", Path(__file__).parent / "reference" / "dependence_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

DISTS = [Innovation("normal"), Innovation("t", (3.5,)), Innovation("t", (12.0,)),
         Innovation("skewt", (4.0, -0.3)), Innovation("skewt", (6.0, 0.4))]


@pytest.fixture(scope="module")
def btc():
    return load_history().log_returns("BTC").values[:, 0]


# ------------------------------------------------------------------ innovations

@pytest.mark.parametrize("inn", DISTS, ids=lambda d: f"{d.dist}{d.shape}")
def test_innovation_is_a_unit_variance_density(inn):
    f = lambda z: float(inn.pdf(z))  # noqa: E731
    for k, want in ((0, 1.0), (1, 0.0), (2, 1.0)):
        val = sum(integrate.quad(lambda z: z ** k * f(z), a, b, limit=200)[0]
                  for a, b in ((-np.inf, -1.0), (-1.0, 1.0), (1.0, np.inf)))
        assert val == pytest.approx(want, abs=2e-6)


@pytest.mark.parametrize("inn", DISTS, ids=lambda d: f"{d.dist}{d.shape}")
def test_innovation_cdf_ppf_and_tail_es(inn):
    z = np.linspace(-6, 6, 13)
    num = np.array([integrate.quad(lambda x: float(inn.pdf(x)), -np.inf, zz)[0] for zz in z])
    np.testing.assert_allclose(inn.cdf(z), num, atol=1e-8)
    p = np.array([1e-5, 0.01, 0.3, 0.5, 0.77, 0.999])
    np.testing.assert_allclose(inn.cdf(inn.ppf(p)), p, rtol=1e-8)
    for a in (0.01, 0.025, 0.2):
        var, es = inn.lower_tail_es(a)
        q = float(inn.ppf(a))
        assert var == pytest.approx(-q, rel=1e-12)
        want = -integrate.quad(lambda x: x * float(inn.pdf(x)), -np.inf, q)[0] / a
        assert es == pytest.approx(want, rel=1e-6)
        uvar, ues = inn.upper_tail_es(a)
        assert uvar == pytest.approx(float(inn.ppf(1 - a)), rel=1e-8)
        assert ues == pytest.approx(integrate.quad(lambda x: x * float(inn.pdf(x)), float(inn.ppf(1 - a)),
                                                   np.inf)[0] / a, rel=1e-6)
    kappa = integrate.quad(lambda x: x * x * float(inn.pdf(x)), -np.inf, 0)[0]
    assert inn.negative_second_moment() == pytest.approx(kappa, rel=1e-7)


def test_innovation_densities_match_arch():
    dist = pytest.importorskip("arch.univariate.distribution")
    x = np.linspace(-5, 5, 41)
    one = np.ones_like(x)
    np.testing.assert_allclose(Innovation("t", (4.2,)).logpdf(x),
                               dist.StudentsT().loglikelihood([4.2], x, one, individual=True), rtol=1e-12)
    sk = dist.SkewStudent()
    np.testing.assert_allclose(Innovation("skewt", (5.0, -0.25)).logpdf(x),
                               sk.loglikelihood([5.0, -0.25], x, one, individual=True), rtol=1e-12)
    p = np.array([0.001, 0.05, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(Innovation("skewt", (5.0, -0.25)).ppf(p), sk.ppf(p, [5.0, -0.25]), rtol=1e-8)
    np.testing.assert_allclose(Innovation("skewt", (5.0, -0.25)).cdf(x), sk.cdf(x, [5.0, -0.25]), atol=1e-12)


def test_innovation_samples_follow_the_distribution():
    rng = np.random.default_rng(5)
    for inn in DISTS:
        x = inn.rvs(40_000, rng)
        assert stats.kstest(x, inn.cdf).pvalue > 1e-3
        assert abs(x.mean()) < 0.03 and abs(x.var() - 1) < 0.15


def test_innovation_rejects_bad_shapes():
    with pytest.raises(InvalidInputError, match="nu"):
        Innovation("t", (2.0,))
    with pytest.raises(InvalidInputError, match="lambda"):
        Innovation("skewt", (5.0, 1.0))
    with pytest.raises(InvalidInputError, match="dist"):
        Innovation("laplace")
    with pytest.raises(InvalidInputError, match="needs 2"):
        innovation("skewt", 5.0)


# ------------------------------------------------------------------ GJR-GARCH against arch

@pytest.mark.parametrize("dist, o", [("normal", 0), ("t", 0), ("t", 1), ("skewt", 1)])
def test_gjr_garch_matches_arch_on_btc(btc, dist, o):
    arch = pytest.importorskip("arch")
    fit = fit_gjr_garch(btc, dist=dist, asymmetric=bool(o))
    m = arch.arch_model(btc * 100, mean="Zero", vol="GARCH", p=1, o=o, q=1, dist=dist).fit(disp="off")
    ap = m.params.to_numpy().copy()
    ase = m.std_err.to_numpy().copy()
    ap[0] /= 1e4
    ase[0] /= 1e4
    assert fit.converged
    assert np.all(np.abs(fit.params - ap) < 0.05 * ase), (fit.params, ap, ase)
    assert fit.loglik == pytest.approx(m.loglikelihood + btc.size * math.log(100), abs=5e-3)
    np.testing.assert_allclose(fit.robust_std_errors, ase, rtol=0.02)
    classic = arch.arch_model(btc * 100, mean="Zero", vol="GARCH", p=1, o=o, q=1, dist=dist).fit(
        disp="off", cov_type="classic").std_err.to_numpy().copy()
    classic[0] /= 1e4
    np.testing.assert_allclose(fit.std_errors, classic, rtol=0.02)


def test_gaussian_garch_robust_errors_match_arch(btc):
    arch = pytest.importorskip("arch")
    fit = fit_garch(btc)
    m = arch.arch_model(btc * 100, mean="Zero", vol="GARCH", p=1, q=1).fit(disp="off")
    se = m.std_err.to_numpy() * np.array([1e-4, 1, 1])
    # the sandwich errors are 2-3 times the classic ones: BTC is far from conditionally normal
    np.testing.assert_allclose(fit.robust_std_errors[1:], se[1:], rtol=0.03)
    assert np.all(fit.robust_std_errors[1:] > 1.8 * fit.std_errors[1:])


def test_gjr_variance_matches_the_loop_reference(btc):
    r = btc[:400]
    got = gjr_variance(r, 2e-5, 0.08, 0.05, 0.88)
    want = ref.gjr_path(r.tolist(), 2e-5, 0.08, 0.05, 0.88, ref.arch_backcast(r.tolist()))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert arch_backcast(r) == pytest.approx(ref.arch_backcast(r.tolist()), rel=1e-13)


def _simulate_gjr(n, omega, alpha, gamma, beta, inn, seed):
    rng = np.random.default_rng(seed)
    z = inn.rvs(n + 500, rng)
    h = omega / (1 - alpha - gamma * inn.negative_second_moment() - beta)
    out = np.empty(n + 500)
    for t in range(n + 500):
        out[t] = math.sqrt(h) * z[t]
        h = omega + (alpha + gamma * (out[t] < 0)) * out[t] ** 2 + beta * h
    return out[500:]


def test_gjr_skewt_recovers_simulated_parameters():
    inn = Innovation("skewt", (5.0, -0.2))
    true = np.array([2e-5, 0.05, 0.10, 0.85, 5.0, -0.2])
    r = _simulate_gjr(5000, *true[:4], inn, seed=17)
    fit = fit_gjr_garch(r, dist="skewt", asymmetric=True)
    z = np.abs(fit.params - true) / fit.robust_std_errors
    assert np.all(z < 3.5), (fit.params, fit.robust_std_errors)
    assert fit.persistence < 1
    # the fitted path is the path of the fitted parameters; extending the data changes no earlier row
    np.testing.assert_allclose(fit.variance_path(r), fit.variance, rtol=1e-13)
    longer = np.concatenate([r, [0.3, -0.2]])
    np.testing.assert_array_equal(fit.variance_path(longer)[: r.size + 1], fit.variance)


def test_gjr_forecast_and_simulation_are_consistent():
    inn = Innovation("t", (6.0,))
    r = _simulate_gjr(3000, 1e-5, 0.06, 0.06, 0.87, inn, seed=3)
    fit = fit_gjr_garch(r, dist="t", asymmetric=True, robust=False)
    assert np.all(np.isnan(fit.std_errors))
    f = fit.forecast(5)
    assert f[0] == fit.variance[-1]
    # one simulated day: r = sqrt(h) z exactly; the 2-day sum's variance ~ forecast[0] + forecast[1]
    z = inn.rvs((200_000, 2), np.random.default_rng(1))
    two = fit.simulate(fit.variance[-1], z)
    np.testing.assert_allclose(fit.simulate(fit.variance[-1], z[:, :1]), np.sqrt(fit.variance[-1]) * z[:, 0])
    assert two.var() == pytest.approx(f[0] + f[1], rel=0.05)


def test_gjr_garch_fails_closed():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match="too little history"):
        fit_gjr_garch(rng.standard_normal(50))
    with pytest.raises(InvalidInputError, match="univariate"):
        fit_gjr_garch(rng.standard_normal((300, 2)))
    with pytest.raises(InvalidInputError, match="dist"):
        fit_gjr_garch(rng.standard_normal(300), dist="cauchy")
    with pytest.raises(InvalidInputError, match="all zero"):
        fit_gjr_garch(np.zeros(300))
    with pytest.raises(InvalidInputError, match="finite"):
        fit_gjr_garch(np.r_[rng.standard_normal(299), np.nan])
    with pytest.raises(InvalidInputError, match="gamma"):
        gjr_variance(rng.standard_normal(10), 1e-5, 0.05, -0.1, 0.9)


def test_models_import_and_run_without_the_optional_extras():
    """numpy + scipy suffice for every model except the learned one, which says what to install."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('sklearn', 'statsmodels', 'hmmlearn', 'arch', 'threadpoolctl'): sys.modules[m] = None\n"
        "import numpy as np\n"
        "from dpm.models.risk_model import WalkForward, risk_model\n"
        "import dpm.models.dependence.copulas, dpm.models.dependence.dcc, dpm.models.dependence.regimes\n"
        "import dpm.models.dependence.learned\n"
        "r = np.random.default_rng(0).standard_normal((400, 2)) * 0.02\n"
        "wf = WalkForward(risk_model('t_garch'), r, first_fit=300, refit_every=500)\n"
        "assert wf.scenarios(350, 100, seed=1).price_move.shape == (100, 2)\n"
        "try:\n"
        "    risk_model('learned', min_obs=300).fit(r)\n"
        "except ImportError as e:\n"
        "    assert 'dpm[models]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert res.returncode == 0, res.stderr
