"""Random option samples over the whole range of issue 2, shared by the pricing and implied-vol tests."""
from __future__ import annotations

import numpy as np

HOUR = 1.0 / 8760.0


def random_options(n: int, seed: int, rates: bool = False):
    """n options: F log-uniform in [1, 1e5], K/F log-uniform in [0.1, 10], T log-uniform in
    [1 hour, 5 years], vol uniform in [5 %, 300 %], calls and puts; rates/carry optional.

    Returns ``F, K, sig, T, cp, r, q``.
    """
    rng = np.random.default_rng(seed)
    F = np.exp(rng.uniform(0.0, np.log(1e5), n))
    K = F * np.exp(rng.uniform(np.log(0.1), np.log(10.0), n))
    T = np.exp(rng.uniform(np.log(HOUR), np.log(5.0), n))
    sig = rng.uniform(0.05, 3.0, n)
    cp = rng.choice([-1.0, 1.0], n)
    r = rng.uniform(-0.02, 0.10, n) if rates else np.zeros(n)
    q = rng.uniform(-0.05, 0.10, n) if rates else np.zeros(n)
    return F, K, sig, T, cp, r, q
