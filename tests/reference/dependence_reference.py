"""Slow loop-based references for the volatility and dependence models (math module only).

Written from the published recursions, sharing no code or vectorisation with dpm: GJR-GARCH
variance (Glosten, Jagannathan, Runkle 1993, with the ``arch`` backcast start), DCC(1,1) (Engle
2002) and the Gaussian-HMM forward filter in log space (Rabiner 1989).
"""
from __future__ import annotations

import math


def gjr_path(returns, omega, alpha, gamma, beta, backcast):
    """h[0] = omega + (alpha + gamma/2 + beta) backcast; h[t+1] = omega + (alpha + gamma 1{r<0}) r^2 + beta h[t]."""
    h = [omega + (alpha + 0.5 * gamma + beta) * backcast]
    for r in returns:
        h.append(omega + (alpha + (gamma if r < 0 else 0.0)) * r * r + beta * h[-1])
    return h


def arch_backcast(returns):
    tau = min(75, len(returns))
    w = [0.94 ** i for i in range(tau)]
    s = sum(w)
    return sum(returns[i] ** 2 * w[i] / s for i in range(tau))


def _inv2(m):
    det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
    return [[m[1][1] / det, -m[0][1] / det], [-m[1][0] / det, m[0][0] / det]], det


def dcc_path_2d(z, a, b, qbar):
    """Correlation path R[t] (t = 0..n) of a bivariate DCC(1,1); R[t] uses z[:t]."""
    q = [row[:] for row in qbar]
    out = []
    for t in range(len(z) + 1):
        out.append(q[0][1] / math.sqrt(q[0][0] * q[1][1]))
        if t < len(z):
            zt = z[t]
            q = [[(1 - a - b) * qbar[i][j] + a * zt[i] * zt[j] + b * q[i][j] for j in range(2)] for i in range(2)]
    return out


def dcc_loglik_2d(z, rho):
    """Sum over t of -1/2 (ln det R + z' R^-1 z - z'z) for 2x2 correlation matrices with rho[t]."""
    total = 0.0
    for t, zt in enumerate(z):
        inv, det = _inv2([[1.0, rho[t]], [rho[t], 1.0]])
        quad = sum(zt[i] * inv[i][j] * zt[j] for i in range(2) for j in range(2))
        total += -0.5 * (math.log(det) + quad - (zt[0] ** 2 + zt[1] ** 2))
    return total


def _mvn_logpdf_2d(x, mean, cov):
    inv, det = _inv2(cov)
    d = [x[0] - mean[0], x[1] - mean[1]]
    quad = sum(d[i] * inv[i][j] * d[j] for i in range(2) for j in range(2))
    return -0.5 * (2 * math.log(2 * math.pi) + math.log(det) + quad)


def hmm_forward_2d(returns, means, covs, transmat, startprob):
    """Filtered probabilities and log-likelihood by the forward recursion in log space."""
    K = len(means)
    la = [math.log(startprob[k]) + _mvn_logpdf_2d(returns[0], means[k], covs[k]) for k in range(K)]
    filtered = []
    for t in range(len(returns)):
        if t:
            prev = la
            la = []
            for j in range(K):
                terms = [prev[i] + math.log(transmat[i][j]) for i in range(K)]
                m = max(terms)
                la.append(m + math.log(sum(math.exp(x - m) for x in terms))
                          + _mvn_logpdf_2d(returns[t], means[j], covs[j]))
        m = max(la)
        tot = m + math.log(sum(math.exp(x - m) for x in la))
        filtered.append([math.exp(x - tot) for x in la])
    m = max(la)
    return filtered, m + math.log(sum(math.exp(x - m) for x in la))
