"""Copulas with symmetric and asymmetric tail dependence, fitted on pseudo-observations.

A copula ``C`` joins uniform margins: ``u = (F_1(x_1), ..., F_U(x_U))``. The families here:

==================  =========================  ==============================  ====================
family              parameters                 lower tail dep. ``lambda_L``    upper ``lambda_U``
==================  =========================  ==============================  ====================
``gaussian``        correlation ``R``          0                               0
``t``               ``R``, ``nu``              ``2 t_(nu+1)(-sqrt((nu+1)(1-rho)/(1+rho)))`` (both tails)
``clayton``         ``theta > 0``              ``2^(-1/theta)``                0
``gumbel``          ``theta >= 1``             0                               ``2 - 2^(1/theta)``
``*_survival``      as above                   the other tail (rotated 180 degrees, ``u -> 1 - u``)
``empirical``       the pseudo-observations    estimated (:func:`empirical_tail_dependence`)
==================  =========================  ==============================  ====================

Joint crashes are the *lower* tail of returns, so ``clayton`` and ``gumbel_survival`` put the
extra dependence where a long book loses. Clayton is exchangeable in any dimension; the Gumbel
density is implemented for two margins.

Fitting is maximum pseudo-likelihood on ranks ``u = rank / (n + 1)`` (C. Genest, K. Ghoudi,
L.-P. Rivest, "A semiparametric estimation procedure of dependence parameters in multivariate
families of distributions", *Biometrika* 82(3) (1995) 543-552). Sampling: Marshall-Olkin frailty
(gamma for Clayton, positive stable by Kanter's formula for Gumbel) — A. W. Marshall, I. Olkin,
*JASA* 83 (1988) 834-841; the elliptical ones from normal / t vectors. Tail coefficients:
H. Joe, *Multivariate Models and Dependence Concepts*, Chapman & Hall (1997), ch. 5; the t copula:
P. Embrechts, A. McNeil, D. Straumann (2002).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from dpm._util.validation import as_float_array, check_finite
from dpm.errors import InvalidInputError
from dpm.models.calibration.correlation import check_correlation

__all__ = [
    "COPULA_FAMILIES",
    "Copula",
    "empirical_tail_dependence",
    "fit_copula",
    "kendall_tau",
    "pseudo_observations",
]

COPULA_FAMILIES = ("gaussian", "t", "clayton", "clayton_survival", "gumbel", "gumbel_survival", "empirical")


def pseudo_observations(x: Any) -> np.ndarray:
    """Column ranks scaled to (0, 1): ``rank / (n + 1)`` (ties get their average rank)."""
    a = as_float_array(x, "x")
    if a.ndim != 2:
        raise InvalidInputError(f"x: expected shape (n, U), got {a.shape}")
    check_finite(a, "x")
    return stats.rankdata(a, axis=0) / (a.shape[0] + 1.0)


def _check_u(u: Any, dim: int | None = None) -> np.ndarray:
    a = as_float_array(u, "u")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InvalidInputError(f"u: expected shape (n, U), got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise InvalidInputError(f"u: expected {dim} columns, got {a.shape[1]}")
    if not np.all((a > 0) & (a < 1)):
        raise InvalidInputError("u: values must lie strictly inside (0, 1)")
    return a


def kendall_tau(x: Any) -> np.ndarray:
    """Matrix of pairwise Kendall's tau (tau-b)."""
    a = as_float_array(x, "x")
    u = a.shape[1]
    out = np.eye(u)
    for i in range(u):
        for j in range(i + 1, u):
            out[i, j] = out[j, i] = stats.kendalltau(a[:, i], a[:, j]).statistic
    return out


def _t_tail(rho: np.ndarray, nu: float) -> np.ndarray:
    return 2.0 * stats.t.cdf(-np.sqrt((nu + 1.0) * (1.0 - rho) / (1.0 + rho)), nu + 1.0)


@dataclass(frozen=True)
class Copula:
    """A fitted or specified copula (see the module table).

    Attributes
    ----------
    family : str
        One of :data:`COPULA_FAMILIES`.
    dim : int
    corr : ndarray or None
        Correlation matrix (gaussian, t).
    nu : float or None
        Degrees of freedom (t).
    theta : float or None
        Archimedean parameter (clayton, gumbel and their survival versions).
    data : ndarray or None
        Pseudo-observations (empirical).
    loglik : float
        Pseudo-log-likelihood at the fit (NaN if not fitted / empirical).
    """

    family: str
    dim: int
    corr: np.ndarray | None = None
    nu: float | None = None
    theta: float | None = None
    data: np.ndarray | None = field(default=None, repr=False)
    loglik: float = float("nan")

    def __post_init__(self) -> None:
        f = self.family
        if f not in COPULA_FAMILIES:
            raise InvalidInputError(f"family: expected one of {COPULA_FAMILIES}, got {f!r}")
        if int(self.dim) < 2:
            raise InvalidInputError(f"dim: a copula joins at least 2 margins, got {self.dim!r}")
        if f in ("gaussian", "t"):
            if self.corr is None:
                raise InvalidInputError(f"corr: the {f} copula needs a correlation matrix")
            c = check_correlation(self.corr)
            if c.shape != (self.dim, self.dim):
                raise InvalidInputError(f"corr: shape {c.shape} for dim {self.dim}")
            object.__setattr__(self, "corr", c)
        if f == "t" and not (self.nu is not None and np.isfinite(self.nu) and self.nu > 0):
            raise InvalidInputError(f"nu: the t copula needs nu > 0, got {self.nu!r}")
        if f.startswith("clayton") and not (self.theta is not None and self.theta > 0):
            raise InvalidInputError(f"theta: Clayton needs theta > 0, got {self.theta!r}")
        if f.startswith("gumbel"):
            if not (self.theta is not None and self.theta >= 1):
                raise InvalidInputError(f"theta: Gumbel needs theta >= 1, got {self.theta!r}")
        if f == "empirical":
            if self.data is None:
                raise InvalidInputError("data: the empirical copula needs pseudo-observations")
            object.__setattr__(self, "data", _check_u(self.data, self.dim))

    # ------------------------------------------------------------------ properties
    @property
    def n_params(self) -> int:
        d = self.dim
        return {"gaussian": d * (d - 1) // 2, "t": d * (d - 1) // 2 + 1}.get(self.family, 0 if self.family == "empirical" else 1)

    @property
    def aic(self) -> float:
        return 2.0 * self.n_params - 2.0 * self.loglik

    def tail_dependence(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper tail-dependence coefficients, each a (dim, dim) matrix (1 on the diagonal).

        Empirical: the estimator of :func:`empirical_tail_dependence` at ``q = 0.05``.
        """
        d = self.dim
        if self.family == "empirical":
            return (empirical_tail_dependence(self.data, 0.05, "lower"),
                    empirical_tail_dependence(self.data, 0.05, "upper"))
        if self.family == "gaussian":
            lo = up = np.eye(d)
        elif self.family == "t":
            lo = up = _t_tail(np.clip(self.corr, -1 + 1e-15, 1.0), self.nu)
            np.fill_diagonal(lo, 1.0)
        else:
            th = float(self.theta)
            lam = 2.0 ** (-1.0 / th) if self.family.startswith("clayton") else 2.0 - 2.0 ** (1.0 / th)
            lo = np.full((d, d), lam)
            up = np.zeros((d, d))
            np.fill_diagonal(lo, 1.0)
            np.fill_diagonal(up, 1.0)
            if self.family in ("gumbel", "clayton_survival"):
                lo, up = up, lo
        return lo.copy(), up.copy()

    def kendall_tau(self) -> np.ndarray:
        """Pairwise Kendall's tau implied by the parameters (empirical: of the data)."""
        d = self.dim
        if self.family == "empirical":
            return kendall_tau(self.data)
        if self.family in ("gaussian", "t"):
            return 2.0 / np.pi * np.arcsin(self.corr)
        th = float(self.theta)
        tau = th / (th + 2.0) if self.family.startswith("clayton") else 1.0 - 1.0 / th
        out = np.full((d, d), tau)
        np.fill_diagonal(out, 1.0)
        return out

    # ------------------------------------------------------------------ density and sampling
    def logpdf(self, u: Any) -> np.ndarray:
        """Log copula density at points ``u`` (shape (n, dim)); not defined for ``empirical``."""
        x = _check_u(u, self.dim)
        return _logpdf(self.family, x, self.corr, self.nu, self.theta)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws of ``u``, shape (n, dim)."""
        n = int(n)
        d = self.dim
        f = self.family
        if f == "empirical":
            return self.data[rng.integers(0, self.data.shape[0], n)]
        if f in ("gaussian", "t"):
            z = rng.standard_normal((n, d)) @ np.linalg.cholesky(self.corr + 1e-12 * np.eye(d)).T
            if f == "gaussian":
                return np.clip(stats.norm.cdf(z), 1e-16, 1 - 1e-16)
            w = rng.chisquare(self.nu, n)
            return np.clip(stats.t.cdf(z / np.sqrt(w / self.nu)[:, None], self.nu), 1e-16, 1 - 1e-16)
        th = float(self.theta)
        e = rng.standard_exponential((n, d))
        if f.startswith("clayton"):
            v = rng.gamma(1.0 / th, 1.0, n)
            u = (1.0 + e / v[:, None]) ** (-1.0 / th)
        else:
            a = 1.0 / th
            # Kanter's representation of a positive a-stable variable with E exp(-sV) = exp(-s^a)
            ang = rng.uniform(0.0, np.pi, n)
            w = rng.standard_exponential(n)
            v = (np.sin(a * ang) / np.sin(ang) ** (1.0 / a)) * (np.sin((1.0 - a) * ang) / w) ** ((1.0 - a) / a)
            u = np.exp(-(e / v[:, None]) ** a)
        u = np.clip(u, 1e-16, 1 - 1e-16)
        return 1.0 - u if f.endswith("survival") else u


def _logpdf(family: str, u: np.ndarray, corr: np.ndarray | None, nu: float | None,
            theta: float | None) -> np.ndarray:
    if family == "empirical":
        raise InvalidInputError("logpdf: the empirical copula has no density")
    if family.endswith("survival"):
        return _logpdf(family[: -len("_survival")], 1.0 - u, corr, nu, theta)
    d = u.shape[1]
    if family == "gaussian":
        q = stats.norm.ppf(u)
        inv = np.linalg.inv(corr)
        sign, logdet = np.linalg.slogdet(corr)
        return -0.5 * logdet - 0.5 * np.einsum("ti,ij,tj->t", q, inv - np.eye(d), q)
    if family == "t":
        q = stats.t.ppf(u, nu)
        inv = np.linalg.inv(corr)
        sign, logdet = np.linalg.slogdet(corr)
        quad = np.einsum("ti,ij,tj->t", q, inv, q)
        joint = (special.gammaln((nu + d) / 2.0) - special.gammaln(nu / 2.0) - 0.5 * d * np.log(nu * np.pi)
                 - 0.5 * logdet - 0.5 * (nu + d) * np.log1p(quad / nu))
        return joint - np.sum(stats.t.logpdf(q, nu), axis=1)
    th = float(theta)
    lu = np.log(u)
    if family == "clayton":
        s = np.sum(u ** (-th), axis=1) - d + 1.0
        return (np.sum(np.log1p(th * np.arange(d))) - (th + 1.0) * np.sum(lu, axis=1)
                - (d + 1.0 / th) * np.log(s))
    if family == "gumbel":
        if d != 2:
            raise InvalidInputError(f"gumbel: the density is implemented for 2 margins, got {d}")
        x = -lu
        s = np.sum(x ** th, axis=1)
        a = s ** (1.0 / th)
        return (-a + (th - 1.0) * np.sum(np.log(x), axis=1) - np.sum(lu, axis=1)
                + (1.0 / th - 2.0) * np.log(s) + np.log(a + th - 1.0))
    raise InvalidInputError(f"family: unknown {family!r}")


def fit_copula(u: Any, family: str = "t") -> Copula:
    """Fit a copula to pseudo-observations ``u`` (shape (n, U)) by maximum pseudo-likelihood.

    * ``gaussian``: correlation of the normal scores ``Phi^-1(u)``;
    * ``t``: ``R`` from Kendall's tau (``sin(pi tau / 2)``, repaired to the nearest correlation
      matrix if needed), then ``nu`` maximising the likelihood on [2, 200];
    * Archimedean families: ``theta`` maximising the likelihood (Clayton (0, 50], Gumbel [1, 50]);
    * ``empirical``: stores ``u``.
    """
    x = _check_u(u)
    d = x.shape[1]
    if d < 2:
        raise InvalidInputError("u: a copula joins at least 2 margins")
    if family not in COPULA_FAMILIES:
        raise InvalidInputError(f"family: expected one of {COPULA_FAMILIES}, got {family!r}")
    if family == "empirical":
        return Copula("empirical", d, data=x)
    if family == "gaussian":
        q = stats.norm.ppf(x)
        c = check_correlation(np.corrcoef(q, rowvar=False), repair=True)
        return Copula("gaussian", d, corr=c, loglik=float(np.sum(_logpdf("gaussian", x, c, None, None))))
    if family == "t":
        c = check_correlation(np.sin(0.5 * np.pi * kendall_tau(x)), repair=True)
        res = optimize.minimize_scalar(lambda lnu: -float(np.sum(_logpdf("t", x, c, np.exp(lnu), None))),
                                       bounds=(np.log(2.0), np.log(200.0)), method="bounded",
                                       options={"xatol": 1e-5})
        nu = float(np.exp(res.x))
        return Copula("t", d, corr=c, nu=nu, loglik=float(-res.fun))
    lo, hi = (1e-4, 50.0) if family.startswith("clayton") else (1.0, 50.0)

    def nll(th: float) -> float:
        v = -float(np.sum(_logpdf(family, x, None, None, th)))
        return v if np.isfinite(v) else 1e300

    res = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
    return Copula(family, d, theta=float(res.x), loglik=float(-res.fun))


def empirical_tail_dependence(u: Any, q: float = 0.05, tail: str = "lower") -> np.ndarray:
    """Non-parametric tail-dependence estimate at threshold ``q`` for every pair, (U, U).

    Lower: ``P(U_j <= q | U_i <= q) = #{u_i <= q, u_j <= q} / #{u_i <= q}``; upper: the same with
    ``u > 1 - q``. It tends to the coefficient as ``q -> 0`` (noisy for small samples).
    """
    x = _check_u(u)
    if not 0.0 < q < 0.5:
        raise InvalidInputError(f"q: threshold must be in (0, 0.5), got {q!r}")
    if tail not in ("lower", "upper"):
        raise InvalidInputError(f"tail: expected 'lower' or 'upper', got {tail!r}")
    ind = (x <= q) if tail == "lower" else (x > 1.0 - q)
    joint = ind.T.astype(np.float64) @ ind.astype(np.float64)
    cnt = np.maximum(np.diag(joint), 1.0)
    out = joint / np.sqrt(np.outer(cnt, cnt))
    np.fill_diagonal(out, 1.0)
    return out


# ---------------------------------------------------------------------------------------------
# Copula-GARCH risk model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CopulaModel:
    """Copula-GARCH risk model (:class:`dpm.models.risk_model.RiskModel`).

    Margins: a GJR-GARCH(1,1) per asset with ``dist`` innovations; dependence: a copula of
    ``family`` fitted on the pseudo-observations of the standardised residuals (canonical maximum
    likelihood). Scenarios draw ``u`` from the copula, map it through each fitted innovation
    quantile function and scale by the GARCH vols (multi-day: the GARCH recursion with independent
    daily copula draws). The path's ``corr`` is the correlation of the standardised residuals in
    the fit sample (copulas here are static; their tail dependence is in :attr:`_FittedCopula.copula`).
    """

    family: str = "t"
    dist: str = "t"
    asymmetric: bool = False
    min_obs: int = 250
    name: str = "copula"

    def fit(self, returns: Any) -> _FittedCopula:
        from dpm.models.calibration._inputs import _as_returns  # noqa: PLC0415
        from dpm.models.risk_model import _MarginalGarch  # noqa: PLC0415 - same layer, avoids a cycle

        r, _ = _as_returns(returns, "returns", min_obs=self.min_obs)
        if r.shape[1] < 2:
            raise InvalidInputError("returns: a copula model needs at least 2 assets")
        marg = _MarginalGarch(r, self.dist, self.asymmetric)
        z = r / np.sqrt(marg.variances(r)[:-1])
        cop = fit_copula(pseudo_observations(z), self.family)
        return _FittedCopula(marg, cop, np.corrcoef(z, rowvar=False))


class _FittedCopula:
    def __init__(self, marginals: Any, copula: Copula, corr: np.ndarray) -> None:
        self.marginals = marginals
        self.copula = copula
        self.corr = corr

    def path(self, returns: np.ndarray):
        from dpm.models.calibration._inputs import _as_returns  # noqa: PLC0415
        from dpm.models.risk_model import ModelPath  # noqa: PLC0415

        r, _ = _as_returns(returns, "returns", min_obs=1)
        var = self.marginals.variances(r)
        corr = np.broadcast_to(self.corr, (var.shape[0],) + self.corr.shape).copy()
        return ModelPath(np.sqrt(var), corr, {"var": var})

    def sample(self, path: Any, t: int, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        u = self.copula.sample(n * horizon, rng).reshape(n, horizon, -1)
        z = np.empty_like(u)
        for j, inn in enumerate(self.marginals.innovations):
            z[:, :, j] = inn.ppf(u[:, :, j])
        return self.marginals.simulate(path.extras["var"][t], z)
