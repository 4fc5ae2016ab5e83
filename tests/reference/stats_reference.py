"""Slow, loop-based pure-Python references for dpm's statistics layer.

Written straight from the published formulas, with ``math`` only, so that they share no code (and
no vectorisation tricks) with ``dpm.models.calibration`` / ``dpm.models.measures`` / ``dpm.models.backtest``.
"""
from __future__ import annotations

import math


def ewma_variance(returns, lam, warmup):
    """RiskMetrics EWMA: var[warmup] = mean(r[:warmup]^2); var[t+1] = lam var[t] + (1-lam) r[t]^2."""
    n = len(returns)
    out = [float("nan")] * (n + 1)
    out[warmup] = sum(x * x for x in returns[:warmup]) / warmup
    for t in range(warmup, n):
        out[t + 1] = lam * out[t] + (1.0 - lam) * returns[t] * returns[t]
    return out


def ewma_covariance_last(rows, lam, warmup):
    """Final EWMA covariance (list of lists) of row vectors ``rows``."""
    p = len(rows[0])
    c = [[sum(rows[t][i] * rows[t][j] for t in range(warmup)) / warmup for j in range(p)]
         for i in range(p)]
    for t in range(warmup, len(rows)):
        c = [[lam * c[i][j] + (1.0 - lam) * rows[t][i] * rows[t][j] for j in range(p)]
             for i in range(p)]
    return c


def garch_path(returns, omega, alpha, beta, h0):
    h = [h0]
    for r in returns:
        h.append(omega + alpha * r * r + beta * h[-1])
    return h


def garch_loglik(returns, omega, alpha, beta, h0):
    h = garch_path(returns, omega, alpha, beta, h0)
    ll = 0.0
    for t, r in enumerate(returns):
        if h[t] <= 0:
            return -math.inf
        ll += -0.5 * (math.log(2.0 * math.pi) + math.log(h[t]) + r * r / h[t])
    return ll


def _demean(x):
    n, p = len(x), len(x[0])
    means = [sum(x[t][j] for t in range(n)) / n for j in range(p)]
    return [[x[t][j] - means[j] for j in range(p)] for t in range(n)]


def _sample_cov(x):
    n, p = len(x), len(x[0])
    return [[sum(x[t][i] * x[t][j] for t in range(n)) / n for j in range(p)] for i in range(p)]


def ledoit_wolf_constant_correlation(data):
    """Ledoit & Wolf (2004), "Honey, I shrunk the sample covariance matrix", section 2-3 and
    appendix: pi-hat, rho-hat, gamma-hat, kappa = (pi - rho)/gamma, delta = max(0, min(1, kappa/T)).

    Returns (shrinkage, shrunk covariance).
    """
    x = _demean(data)
    t_len, p = len(x), len(x[0])
    s = _sample_cov(x)
    r_bar = 0.0
    for i in range(p):
        for j in range(p):
            if i != j:
                r_bar += s[i][j] / math.sqrt(s[i][i] * s[j][j])
    r_bar /= p * (p - 1)
    f = [[s[i][i] if i == j else r_bar * math.sqrt(s[i][i] * s[j][j]) for j in range(p)]
         for i in range(p)]
    # pi_ij = (1/T) sum_t ((x_it x_jt) - s_ij)^2
    pi = [[sum((x[t][i] * x[t][j] - s[i][j]) ** 2 for t in range(t_len)) / t_len
           for j in range(p)] for i in range(p)]
    pi_hat = sum(sum(row) for row in pi)

    def theta(i, j):  # theta_ii,ij
        return sum((x[t][i] ** 2 - s[i][i]) * (x[t][i] * x[t][j] - s[i][j])
                   for t in range(t_len)) / t_len

    rho_hat = sum(pi[i][i] for i in range(p))
    for i in range(p):
        for j in range(p):
            if i != j:
                rho_hat += (r_bar / 2.0) * (math.sqrt(s[j][j] / s[i][i]) * theta(i, j)
                                            + math.sqrt(s[i][i] / s[j][j]) * theta(j, i))
    gamma_hat = sum((f[i][j] - s[i][j]) ** 2 for i in range(p) for j in range(p))
    kappa = (pi_hat - rho_hat) / gamma_hat
    delta = max(0.0, min(1.0, kappa / t_len))
    cov = [[delta * f[i][j] + (1.0 - delta) * s[i][j] for j in range(p)] for i in range(p)]
    return delta, cov


def ledoit_wolf_identity(data):
    """Ledoit & Wolf (2004), J. Multivariate Analysis 88, Lemma 3.2/3.3 and Theorem 3.1:
    m = <S, I>, d^2 = ||S - m I||^2, bbar^2 = n^-2 sum_k ||x_k x_k' - S||^2, b^2 = min(bbar^2, d^2),
    shrinkage b^2/d^2, with <A, B> = tr(A B')/p.
    """
    x = _demean(data)
    n, p = len(x), len(x[0])
    s = _sample_cov(x)

    def inner(a, b):
        return sum(a[i][j] * b[i][j] for i in range(p) for j in range(p)) / p

    m = sum(s[i][i] for i in range(p)) / p
    diff = [[s[i][j] - (m if i == j else 0.0) for j in range(p)] for i in range(p)]
    d2 = inner(diff, diff)
    b2bar = 0.0
    for k in range(n):
        dk = [[x[k][i] * x[k][j] - s[i][j] for j in range(p)] for i in range(p)]
        b2bar += inner(dk, dk)
    b2bar /= n * n
    b2 = min(b2bar, d2)
    shrink = b2 / d2
    cov = [[shrink * (m if i == j else 0.0) + (1.0 - shrink) * s[i][j] for j in range(p)]
           for i in range(p)]
    return shrink, cov


def hs_var_es(pnl, level):
    """Empirical VaR (lower alpha-quantile) and Acerbi-Tasche ES with a fractional observation."""
    xs = sorted(pnl)
    n = len(xs)
    alpha = 1.0 - level
    na = n * alpha
    if abs(na - round(na)) < 1e-9 * max(1.0, na):
        na = float(round(na))
    k = int(math.floor(na))
    var = -xs[max(int(math.ceil(na)), 1) - 1]
    total = sum(xs[:k])
    if na > k:
        total += (na - k) * xs[k]
    es = -total / na
    return var, max(es, var)


def kupiec_lr(n, x, p):
    def xlogy(a, b):
        return 0.0 if a == 0 else a * math.log(b)
    phat = x / n
    return -2.0 * (xlogy(n - x, 1 - p) + xlogy(x, p)) + 2.0 * (
        xlogy(n - x, 1 - phat) + xlogy(x, phat))


def christoffersen_counts(seq):
    n = {(0, 0): 0, (0, 1): 0, (1, 0): 0, (1, 1): 0}
    for a, b in zip(seq[:-1], seq[1:]):
        n[(int(a), int(b))] += 1
    return n[(0, 0)], n[(0, 1)], n[(1, 0)], n[(1, 1)]
