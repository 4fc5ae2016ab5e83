"""Statistics behaviour the mutation run found untested, each against an independent computation:
fractional tail weights, incremental/component ES at other levels, Ledoit-Wolf shrinkage (against
scikit-learn and a loop-by-loop transcription of the paper), EWMA correlation paths, correlation
checks and repair, Z2 backtest boundaries."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dpm.errors import InvalidInputError
from dpm.models.backtest import es_backtest_z2
from dpm.models.calibration.correlation import check_correlation, nearest_psd_correlation
from dpm.models.calibration.covariance import ledoit_wolf
from dpm.models.calibration.ewma import cov_to_corr, ewma_correlation, ewma_covariance
from dpm.models.measures import component_es, incremental_es, linear_pnl, tail_weights, var_es


def _es(pnl, level):
    """Acerbi-Tasche ES from the sorted losses, written out: the worst floor(n a) in full and the
    next one in part, over n a."""
    losses = sorted((-float(v) for v in pnl), reverse=True)
    na = len(losses) * (1.0 - level)
    if abs(na - round(na)) <= 1e-9 * max(1.0, na):
        na = float(round(na))
    k = math.floor(na)
    total = sum(losses[:k]) + (na - k) * (losses[k] if k < len(losses) else 0.0)
    return total / na


@pytest.mark.parametrize(("n", "level", "expected"), [
    (10, 0.85, [1 / 1.5, 0.5 / 1.5] + [0.0] * 8),
    (7, 0.5, [1 / 3.5] * 3 + [0.5 / 3.5] + [0.0] * 3),
    (4, 0.5, [0.5, 0.5, 0.0, 0.0]),
    (1, 0.5, [1.0]),
])
def test_tail_weights_fractional_tail(n, level, expected) -> None:
    np.testing.assert_allclose(tail_weights(n, level), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("level", [0.9, 0.95, 0.6])
def test_incremental_and_component_es_at_other_levels(level) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 4)) * [1.0, 2.0, 0.5, 3.0]
    total = x.sum(axis=1)
    expected = [_es(total, level) - _es(total - x[:, i], level) for i in range(4)]
    np.testing.assert_allclose(incremental_es(x, level), expected, rtol=1e-12)
    assert var_es(total, level).es == pytest.approx(_es(total, level), rel=1e-12)
    comp = component_es(x, level)
    assert comp.sum() == pytest.approx(_es(total, level), rel=1e-12)
    order = np.argsort(total)
    w = tail_weights(len(total), level)
    np.testing.assert_allclose(comp, [-(w * x[order, i]).sum() for i in range(4)], rtol=1e-12)


def test_linear_pnl_by_position() -> None:
    moves = np.array([[0.1, -0.2], [0.0, 0.05]])
    terms = linear_pnl(moves, [100.0, 50.0], by_position=True)
    np.testing.assert_array_equal(terms, [[10.0, -10.0], [0.0, 2.5]])
    np.testing.assert_array_equal(linear_pnl(moves, [100.0, 50.0]), [0.0, 2.5])
    with pytest.raises(InvalidInputError, match=r"exposures: 3 exposures for moves of shape \(2, 2\)"):
        linear_pnl(moves, [1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match=r"exposures: 2 exposures for moves of shape \(2,\)"):
        linear_pnl(np.array([0.1, 0.2]), [1.0, 2.0])


def test_z2_boundaries() -> None:
    # a loss exactly at the VaR is not an exceedance (X < -VaR, Acerbi & Szekely 2014)
    res = es_backtest_z2([-2.0, 1.0, -3.0], [2.0, 2.0, 2.0], [2.5, 2.5, 2.5], 0.25, n_sim=100)
    assert res.breaches == 1 and res.z2 == pytest.approx(-3.0 / 2.5 / (3 * 0.25) + 1.0, rel=1e-15)
    small = es_backtest_z2([-0.5, 0.1], [0.3, 0.3], [0.5, 0.5], 0.1, n_sim=100)  # forecasts below 1
    assert small.breaches == 1
    assert es_backtest_z2([0.0], [1.0], [1.5], dist="student_t", dof=2.5, n_sim=100).n == 1
    for dof in (2.0, 1.0, float("inf"), float("nan"), None):
        with pytest.raises(InvalidInputError, match="dof: Student-t needs dof > 2"):
            es_backtest_z2([0.0], [1.0], [1.5], dist="student_t", dof=dof)
    with pytest.raises(InvalidInputError, match=r"es: must be > 0, index 1 is 0.0"):
        es_backtest_z2([0.0, 0.0], [1.0, 1.0], [1.0, 0.0])
    with pytest.raises(InvalidInputError, match="n_sim"):
        es_backtest_z2([0.0], [1.0], [1.5], n_sim=99)


# ----------------------------------------------------------------------------------------------------
# Ledoit-Wolf
# ----------------------------------------------------------------------------------------------------
def _lw_constant_correlation(r):
    """Ledoit & Wolf (2004, "Honey, I shrunk the sample covariance matrix"), term by term in loops."""
    t, p = r.shape
    x = r - r.mean(axis=0)
    s = [[sum(x[k, i] * x[k, j] for k in range(t)) / t for j in range(p)] for i in range(p)]
    sd = [math.sqrt(s[i][i]) for i in range(p)]
    rbar = sum(s[i][j] / (sd[i] * sd[j]) for i in range(p) for j in range(p) if i != j) / (p * (p - 1))
    f = [[s[i][i] if i == j else rbar * sd[i] * sd[j] for j in range(p)] for i in range(p)]
    pi = [[sum((x[k, i] * x[k, j] - s[i][j]) ** 2 for k in range(t)) / t for j in range(p)] for i in range(p)]

    def theta(i, j):  # theta_ii,ij
        return sum((x[k, i] ** 2 - s[i][i]) * (x[k, i] * x[k, j] - s[i][j]) for k in range(t)) / t

    rho = sum(pi[i][i] for i in range(p)) + sum(
        rbar / 2 * (sd[j] / sd[i] * theta(i, j) + sd[i] / sd[j] * theta(j, i))
        for i in range(p) for j in range(p) if i != j)
    gamma = sum((f[i][j] - s[i][j]) ** 2 for i in range(p) for j in range(p))
    kappa = (sum(map(sum, pi)) - rho) / gamma
    delta = max(0.0, min(1.0, kappa / t))
    return np.array(f), np.array(s), delta


@pytest.mark.parametrize(("seed", "shape", "scale"), [(0, (60, 3), [1, 2, 3]), (1, (4, 3), [1, 2, 3]),
                                                     (5, (25, 4), [0.01, 0.02, 0.05, 0.03])])
def test_ledoit_wolf_constant_correlation_against_the_paper(seed, shape, scale) -> None:
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(shape) @ np.linalg.cholesky(np.full((shape[1], shape[1]), 0.4) + 0.6 * np.eye(shape[1]))
    r = r * scale
    est = ledoit_wolf(r)
    f, s, delta = _lw_constant_correlation(r)
    np.testing.assert_allclose(est.sample, s, rtol=1e-12)
    np.testing.assert_allclose(est.target, f, rtol=1e-12)
    assert est.shrinkage == pytest.approx(delta, rel=1e-10, abs=1e-15)
    np.testing.assert_allclose(est.covariance, delta * f + (1 - delta) * s, rtol=1e-12)
    if seed == 1:
        assert est.shrinkage == 1.0  # four observations of three assets: shrink all the way


@pytest.mark.parametrize("demean", [True, False])
def test_ledoit_wolf_identity_target_against_scikit_learn(demean) -> None:
    sk = pytest.importorskip("sklearn.covariance")
    r = np.random.default_rng(9).standard_normal((40, 5)) * [1, 2, 3, 4, 5] + 0.3
    est = ledoit_wolf(r, "identity", demean=demean)
    cov, shrink = sk.ledoit_wolf(r, assume_centered=not demean)
    assert est.shrinkage == pytest.approx(shrink, rel=1e-10)
    np.testing.assert_allclose(est.covariance, cov, rtol=1e-10)


def test_ledoit_wolf_refusals_and_degenerate_samples() -> None:
    r = np.random.default_rng(2).standard_normal((30, 3))
    r[:, 1] = 0.5  # a constant column has no correlation
    with pytest.raises(InvalidInputError, match="returns: column 1 has zero variance"):
        ledoit_wolf(r)
    with pytest.raises(InvalidInputError, match="needs >= 2 assets"):
        ledoit_wolf(np.random.default_rng(2).standard_normal((30, 1)))
    with pytest.raises(InvalidInputError, match="target: expected 'constant_correlation' or 'identity'"):
        ledoit_wolf(np.random.default_rng(2).standard_normal((30, 2)), "diagonal")
    same = np.tile(np.array([[1.0, -1.0]]), (2, 1)) * np.array([[1.0], [-1.0]])
    est = ledoit_wolf(same, "identity")  # S = mu I already: nothing to shrink, no division by zero
    assert est.shrinkage == 0.0 and np.allclose(est.covariance, est.sample)
    two = np.random.default_rng(4).standard_normal((20, 2))
    assert ledoit_wolf(two).shrinkage == 0.0  # two assets: the target equals the sample


# ----------------------------------------------------------------------------------------------------
# EWMA correlation, correlation checks and repair
# ----------------------------------------------------------------------------------------------------
def test_cov_to_corr_stacks_and_refusals() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 3, 3))
    covs = a @ np.swapaxes(a, 1, 2) + np.eye(3)
    corr = cov_to_corr(covs)
    for k in range(5):
        d = np.sqrt(np.diag(covs[k]))
        np.testing.assert_allclose(corr[k], covs[k] / np.outer(d, d), rtol=1e-14)
        assert (np.diag(corr[k]) == 1.0).all()
    rect = np.array([[1.0, 0.5, 0.1], [0.5, 4.0, 0.2]])
    with pytest.raises(Exception):
        cov_to_corr(rect)
    with pytest.raises(InvalidInputError, match="a variance on the diagonal is <= 0"):
        cov_to_corr([[1.0, 0.0], [0.0, 0.0]])
    over = cov_to_corr([[1.0, 1.0000001], [1.0000001, 1.0]])  # inconsistent input: clipped into [-1, 1]
    assert over[0, 1] == 1.0
    assert cov_to_corr([[1.0, -1.0000001], [-1.0000001, 1.0]])[0, 1] == -1.0


def test_ewma_correlation_path_and_parameters() -> None:
    r = np.random.default_rng(6).standard_normal((80, 3)) * [0.01, 0.02, 0.03]
    path = ewma_correlation(r, 0.9, warmup=10, path=True)
    cov = ewma_covariance(r, 0.9, warmup=10, path=True)
    assert np.isnan(path[:10]).all()
    for t in (10, 45, len(path) - 1):
        d = np.sqrt(np.diag(cov[t]))
        np.testing.assert_allclose(path[t], cov[t] / np.outer(d, d), rtol=1e-13)
    last = ewma_correlation(r, 0.9, warmup=10)
    np.testing.assert_allclose(last, cov_to_corr(ewma_covariance(r, 0.9, warmup=10)), rtol=1e-14)
    assert not np.allclose(last, ewma_correlation(r, 0.97, warmup=10))  # lambda reaches the covariance


def test_check_correlation_messages_and_repair() -> None:
    names = ["BTC", "ETH", "SOL"]
    asym = np.array([[1.0, 0.5, 0.2], [0.4, 1.0, 0.1], [0.2, 0.1, 1.0]])
    with pytest.raises(InvalidInputError, match=r"not symmetric: \[0, 1\] = 0.5 but \[1, 0\] = 0.4"):
        check_correlation(asym)
    with pytest.raises(InvalidInputError, match=r"not symmetric: \['BTC', 'ETH'\] = 0.5"):
        check_correlation(asym, names=names)
    repaired = check_correlation(asym, repair=True)
    np.testing.assert_allclose(repaired, 0.5 * (asym + asym.T), rtol=1e-15)  # PSD already: only symmetrised
    diag = np.array([[1.0, 0.2], [0.2, 1.1]])
    with pytest.raises(InvalidInputError, match=r"diagonal \[1, 1\] is 1.1, not 1"):
        check_correlation(diag)
    assert check_correlation(diag, repair=True).tolist() == [[1.0, 0.2], [0.2, 1.0]]
    wide = np.array([[1.0, 1.5], [1.5, 1.0]])
    with pytest.raises(InvalidInputError, match=r"entry \[0, 1\] = 1.5 is outside \[-1, 1\]"):
        check_correlation(wide)
    assert check_correlation(wide, repair=True).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert check_correlation(-wide, repair=True).tolist() == [[1.0, -1.0], [-1.0, 1.0]]
    with pytest.raises(InvalidInputError, match=r"names: 2 names for a 3x3 matrix"):
        check_correlation(np.eye(3), names=["a", "b"])
    with pytest.raises(InvalidInputError, match=r"expected a square matrix, got shape \(2, 3\)"):
        check_correlation(np.zeros((2, 3)))
    m = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])  # not PSD
    with pytest.raises(InvalidInputError, match="not positive semi-definite"):
        check_correlation(m)
    fixed = check_correlation(m, repair=True)
    assert np.linalg.eigvalsh(fixed)[0] >= -1e-10 and (np.diag(fixed) == 1.0).all()


def test_nearest_psd_correlation_against_statsmodels() -> None:
    ct = pytest.importorskip("statsmodels.stats.correlation_tools")
    m = np.array([[1.0, 0.9, -0.9, 0.3], [0.9, 1.0, 0.9, 0.1], [-0.9, 0.9, 1.0, 0.2], [0.3, 0.1, 0.2, 1.0]])
    ours = nearest_psd_correlation(m)
    ref = ct.corr_nearest(m, threshold=0.0, n_fact=1000)
    assert np.linalg.norm(ours - m) == pytest.approx(np.linalg.norm(ref - m), rel=1e-4)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert (np.diag(ours) == 1.0).all() and np.allclose(ours, ours.T) and np.linalg.eigvalsh(ours)[0] >= -1e-12
    pd = nearest_psd_correlation(m, eig_floor=1e-6)
    np.linalg.cholesky(pd)  # positive definite
    np.testing.assert_array_equal(nearest_psd_correlation(np.eye(3)), np.eye(3))
    with pytest.raises(InvalidInputError, match=r"matrix: expected a square matrix, got shape \(2, 3\)"):
        nearest_psd_correlation(np.zeros((2, 3)))
    with pytest.raises(InvalidInputError, match=r"matrix: expected a square matrix, got shape \(3,\)"):
        nearest_psd_correlation(np.zeros(3))
