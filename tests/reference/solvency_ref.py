"""Slow, independent references for the solvency module (loops, dense grids)."""
from __future__ import annotations

import numpy as np


def ewma_cov_loop(data: np.ndarray, lam: float, warmup: int) -> np.ndarray:
    """RiskMetrics EWMA covariance by the plain recursion (seed: mean outer product of the warm-up)."""
    C = data[:warmup].T @ data[:warmup] / warmup
    for t in range(warmup, data.shape[0]):
        r = data[t][:, None]
        C = lam * C + (1.0 - lam) * (r @ r.T)
    return C


def adl_groups_loop(bk_key, bk_qty, bk_unc, cp_key, cp_qty, cp_score):
    """ADL of every (instrument, side) group by explicit loops: greedy by score (ties: order given)."""
    take = np.zeros(len(cp_key))
    unfilled = 0.0
    for k in sorted(set(bk_key.tolist())):
        Q = float(sum(q for kk, q in zip(bk_key, bk_qty) if kk == k))
        R = float(sum(u for kk, u in zip(bk_key, bk_unc) if kk == k))
        cands = [i for i in range(len(cp_key)) if cp_key[i] == k]
        cands.sort(key=lambda i: (-cp_score[i], i))
        left = Q
        for i in cands:
            t = min(left, cp_qty[i])
            take[i] = t
            left -= t
            if left <= 0:
                break
        unfilled += max(left, 0.0) * R / Q
    delta = np.zeros(len(cp_key))
    for k in set(bk_key.tolist()):
        Q = sum(q for kk, q in zip(bk_key, bk_qty) if kk == k)
        R = sum(u for kk, u in zip(bk_key, bk_unc) if kk == k)
        delta[cp_key == k] = R / Q
    return take, take * delta, unfilled


def account_losses(engine, exposure, space, account: int, z: np.ndarray) -> np.ndarray:
    """Exact loss of one account under full factor moves ``z`` (S, F): positions + collateral."""
    sset = space.scenario_set(z)
    book = exposure.book.subset([account])
    pnl = engine.account_pnl(book, sset)[0]
    pnl = pnl + exposure.collateral_pnl(space.underlyings, sset.price_move, [account])[0]
    return -pnl


def dense_min_distance(engine, exposure, space, account: int, factors, upper: float, n_angles: int = 360,
                       n_radii: int = 80) -> float:
    """Smallest distance (space's metric, conditional completion) of a move on a dense polar grid of the
    account's factors, below ``upper``, that exhausts its equity (inf if none)."""
    D = len(factors)
    if D == 1:
        units = np.array([[1.0], [-1.0]])
    else:
        th = 2 * np.pi * np.arange(n_angles) / n_angles
        units = np.column_stack([np.cos(th), np.sin(th)])
    if space.metric == "mahalanobis":
        dirs = units @ space.whitening(factors).T
    else:
        dirs = units / np.max(np.abs(units), axis=1, keepdims=True)
    radii = upper * np.linspace(0.02, 1.0, n_radii)
    zH = (radii[None, :, None] * dirs[:, None, :]).reshape(-1, D)
    zH = zH[(zH > space.floor).all(axis=1)]
    z = np.zeros((zH.shape[0], space.n_factors))
    z[:, factors] = zH
    L = account_losses(engine, exposure, space, account, z)
    hit = L >= exposure.equity[account]
    if not hit.any():
        return np.inf
    return float(space.distance(space.complete(zH[hit], factors)).min())


def venue_uncovered(engine, exposure, space, z: np.ndarray) -> np.ndarray:
    """Uncovered loss sum_a max(loss_a - equity_a, 0) of the whole book under each full move."""
    sset = space.scenario_set(z)
    pnl = engine.account_pnl(exposure.book, sset)
    pnl = pnl + exposure.collateral_pnl(space.underlyings, sset.price_move)
    return np.maximum(-pnl - exposure.equity[:, None], 0.0).sum(axis=0)
