"""Reverse stress tests: the smallest joint market move that exhausts an account's equity (or the
insurance fund of the venue), found by search over the one revaluation core.

EBA/GL/2018/04 defines a reverse stress test as one that "starts from the identification of the
pre-defined outcome ... and then explores scenarios and circumstances that might cause this to
occur". Here the outcome is *an account's loss reaches its equity* (per account) or *the venue's
uncovered losses exceed its insurance fund* (venue-wide), and the scenario sought is the most
plausible one, the move of smallest distance in the metric of a :class:`StressSpace` (Breuer et al.
2009; McNeil & Smith 2012's "most likely ruin event"). For a linear book ``loss = a'z`` the answer
is closed-form, ``z* = L S a / (a' S a)`` at Mahalanobis distance ``L / sqrt(a' S a)``; options make
the loss non-linear and the search below finds it numerically.

Search (per group of accounts whose loss depends on the same factors; a BTC-only account searches
BTC price and vol, the other factors at their conditional expectation):

1. **Coarse grid, one revaluation.** ``K`` directions on the unit sphere of the metric times a
   geometric radius ladder (plus the zero move: options age by the horizon) form one
   :class:`~dpm.models.scenarios.ScenarioSet`, revalued once per group; every account of the group
   is gathered in every candidate move straight from the whole book (chunks of accounts bound the
   memory). Along each
   direction the first ladder step where the loss reaches the equity brackets the exhausting
   radius; linear interpolation gives an estimate, the best direction is the one of smallest
   estimate, and (two factors) a parabola through it and its neighbours refines the angle.
2. **Certification on a lattice, exact revaluation only where needed.** Radii are snapped to the
   lattice ``r0 (1 + rtol)^n`` and directions to a finer set of ``K x fine`` directions, so accounts
   share candidate moves; each round revalues only the distinct lattice moves still needed
   (:class:`~dpm.engines.plan.RevaluationPlan` on the group's instruments) and gathers each
   account's own move, moving each account's bracket (expansion, then bisection on the lattice)
   until an exactly revalued move at ``r_hi`` exhausts the equity and the one at
   ``r_lo = r_hi / (1 + rtol)`` in the same direction does not.

The reported move is the exhausting lattice move (``loss >= equity`` by exact revaluation); its
distance is within ``rtol`` of the smallest exhausting distance along its direction, and the
direction is the best of the fine directions around the coarse optimum (angular step
``360 / (K fine)`` degrees for two factors). Moves are searched up to ``r_max`` and no factor
below the space's ``floor``; an account not exhausted inside that region gets distance ``inf``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm._core import _gather
from dpm._util import parallel as _parallel
from dpm.engines.plan import RevaluationPlan, balanced_bounds
from dpm.engines.risk import ScenarioRiskEngine
from dpm.engines.solvency.exposure import BookExposure, factor_masks
from dpm.engines.solvency.space import StressSpace
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.models.scenarios import ScenarioSet

__all__ = ["ReverseStressResult", "VenueReverseStress", "reverse_stress", "venue_reverse_stress"]

#: accounts revalued per account_pnl call in the coarse pass (memory: chunk x scenarios doubles)
CHUNK_ACCOUNTS = 8192


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReverseStressResult:
    """Per account: the smallest joint move found that exhausts its equity.

    Attributes
    ----------
    account_id : ndarray
    space : StressSpace
    equity : ndarray (N,)
        Equity before the move (USD).
    distance : ndarray (N,)
        Distance (the space's metric) of the reported move; 0 when the equity is already gone at
        the zero move (time decay over the horizon included), inf when no move inside the search
        region exhausts it.
    distance_lower : ndarray (N,)
        A move in the same direction at this distance does *not* exhaust the equity (exact
        revaluation): the smallest exhausting distance along the direction is in
        ``(distance_lower, distance]``.
    move : ndarray (N, F)
        The reported joint move (factors of ``space``; NaN rows where distance is inf). Factors the
        account does not depend on are at their conditional expectation (Mahalanobis) or 0.
    loss : ndarray (N,)
        Loss (USD) at the move, from exact revaluation (>= equity).
    mahalanobis, percent : ndarray (N,)
        The move measured in both metrics.
    certified : ndarray of bool (N,)
        ``distance / distance_lower - 1 <= rtol`` (lattice certificate); False where only the coarse
        ladder brackets the distance (the direction hit the search region's edge).
    rtol : float
    """

    account_id: np.ndarray
    space: StressSpace
    equity: np.ndarray
    distance: np.ndarray
    distance_lower: np.ndarray
    move: np.ndarray
    loss: np.ndarray
    mahalanobis: np.ndarray
    percent: np.ndarray
    certified: np.ndarray
    rtol: float
    revalued_scenarios: int = 0

    def __len__(self) -> int:
        return len(self.account_id)

    @property
    def exhausted(self) -> np.ndarray:
        """Accounts some move inside the search region exhausts."""
        return np.isfinite(self.distance)

    def to_columns(self) -> dict[str, np.ndarray]:
        """Per-account columns (no pandas needed)."""
        cols: dict[str, np.ndarray] = {
            "account_id": self.account_id, "equity": self.equity, "distance": self.distance,
            "distance_lower": self.distance_lower, "mahalanobis": self.mahalanobis, "percent": self.percent,
            "loss_at_move": self.loss, "certified": self.certified,
        }
        for j, name in enumerate(self.space.factor_names):
            cols[f"move:{name}"] = self.move[:, j]
        return cols

    def to_frame(self) -> Any:
        """A pandas DataFrame of :meth:`to_columns` (needs the ``io`` extra)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("ReverseStressResult.to_frame needs pandas: pip install 'dpm[io]'") from exc
        return pd.DataFrame(self.to_columns())

    def scenario_set(self, accounts: Any = None) -> ScenarioSet:
        """The moves of some accounts (indices or a mask; default all exhausted ones) as a scenario set.

        Factors completed below the space's floor (possible far out) are clipped to the floor.
        """
        idx = np.flatnonzero(self.exhausted) if accounts is None else np.arange(len(self))[np.asarray(accounts)]
        if not np.isfinite(self.distance[idx]).all():
            raise InvalidInputError("accounts: an account without a finite reverse-stress move was selected")
        z = np.maximum(self.move[idx], self.space.floor)
        return self.space.scenario_set(z, [f"reverse:{self.account_id[i]}" for i in idx])


@dataclass(frozen=True, eq=False)
class VenueReverseStress:
    """The smallest joint move under which the venue's uncovered loss exceeds the insurance fund.

    Uncovered loss = ``sum_a max(loss_a - equity_a, 0)`` (market loss, exact revaluation).

    Attributes
    ----------
    space : StressSpace
    fund : float
    distance : float
        Distance of the reported move (inf if none inside the search region).
    distance_lower : float
        The move in the same direction at this distance leaves the uncovered loss <= fund.
    move : ndarray (F,)
    uncovered : float
        Uncovered loss at the move (> fund).
    uncovered_lower : float
        At ``distance_lower`` (<= fund).
    bankrupt : int
        Accounts whose loss exceeds their equity at the move.
    mahalanobis, percent : float
    evaluations : int
        Candidate moves revalued for the whole book.
    """

    space: StressSpace
    fund: float
    distance: float
    distance_lower: float
    move: np.ndarray
    uncovered: float
    uncovered_lower: float
    bankrupt: int
    mahalanobis: float
    percent: float
    evaluations: int

    def scenario_set(self, name: str = "reverse_stress_venue") -> ScenarioSet:
        if not math.isfinite(self.distance):
            raise InvalidInputError("the venue reverse stress found no move inside the search region")
        return self.space.scenario_set(np.maximum(self.move, self.space.floor)[None, :], [name],
                                       sources=[f"venue reverse stress: uncovered loss > fund {self.fund:,.0f} "
                                                f"USD at {self.space.metric} distance {self.distance:.4g}"])


# ---------------------------------------------------------------------------------------------
# Directions and ladders
# ---------------------------------------------------------------------------------------------
def _unit_directions(D: int, K: int, seed: int = 7) -> np.ndarray:
    """``K`` (about) evenly spread unit vectors of R^D: both signs for D = 1, angles for D = 2,
    the coordinate axes and a scrambled Sobol set mapped to the sphere for D >= 3."""
    if D == 1:
        return np.array([[1.0], [-1.0]])
    if D == 2:
        th = 2.0 * np.pi * np.arange(K) / K
        return np.column_stack([np.cos(th), np.sin(th)])
    from scipy.special import ndtri
    from scipy.stats import qmc

    axes = np.vstack([np.eye(D), -np.eye(D)])
    n = max(K - axes.shape[0], 0)
    if n:
        pts = qmc.Sobol(D, scramble=True, seed=seed).random(1 << max(1, math.ceil(math.log2(n))))[:n]
        g = ndtri(np.clip(pts, 1e-12, 1 - 1e-12))
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        return np.vstack([axes, g])
    return axes


def _metric_directions(space: StressSpace, factors: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Unit vectors (whitened) -> moves of distance 1 in the space's metric (factor coordinates)."""
    if space.metric == "mahalanobis":
        return units @ space.whitening(factors).T
    return units / np.max(np.abs(units), axis=1, keepdims=True)


def _caps(space: StressSpace, dirs: np.ndarray) -> np.ndarray:
    """Largest radius of each direction keeping every factor >= the space's floor."""
    with np.errstate(divide="ignore"):
        lim = np.where(dirs < 0.0, space.floor / np.where(dirs < 0.0, dirs, -1.0), np.inf)
    return np.min(lim, axis=1) if dirs.shape[1] else np.full(dirs.shape[0], np.inf)


def _check_positive(v: Any, name: str, integer: bool = False, lo: float = 0.0) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (
            math.isfinite(v) and v > lo):
        raise InvalidInputError(f"{name}: expected a finite number > {lo:g}, got {v!r}")
    if integer:
        if int(v) != v:
            raise InvalidInputError(f"{name}: expected an integer, got {v!r}")
        return int(v)
    return float(v)


def _default_range(space: StressSpace) -> tuple[float, float]:
    return (0.25, 40.0) if space.metric == "mahalanobis" else (0.005, 0.95)


def _ladder(r_min: float, r_max: float, J: int) -> np.ndarray:
    return r_min * (r_max / r_min) ** (np.arange(J) / max(J - 1, 1))


# ---------------------------------------------------------------------------------------------
# Per-account search
# ---------------------------------------------------------------------------------------------
def _z_full(space: StressSpace, factors: np.ndarray, zH: np.ndarray) -> np.ndarray:
    """Moves of the group's factors in full factor coordinates, other factors 0 (for revaluation:
    the group's accounts do not depend on them)."""
    out = np.zeros((zH.shape[0], space.n_factors))
    out[:, factors] = zH
    return out


def _check_losses(exposure: BookExposure, accounts: np.ndarray, values: np.ndarray) -> None:
    """Fail closed: every loss is finite, or the call fails naming the account."""
    bad = ~np.isfinite(values)
    if bad.any():
        a = int(accounts[np.argwhere(bad)[0][0]])
        raise InvalidInputError(f"account {exposure.book.account_id[a]!r}: its loss in a reverse-stress move is "
                                "not finite; a quantity is too large to measure")


def _losses(engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace, accounts: np.ndarray,
            sset: ScenarioSet, P: np.ndarray, workers: int) -> np.ndarray:
    """``(n, S)`` losses of ``accounts`` (indices into the book) under ``sset``, whose padded ``M x Sp``
    revaluation of the engine's table is ``P``: positions gathered straight from the whole book (no
    sub-book), plus collateral."""
    book = exposure.book
    S = len(sset)
    out = np.empty((accounts.size, P.shape[1]))
    counts = (book.indptr[accounts + 1] - book.indptr[accounts]).astype(np.float64) + 1.0

    def run(a: int, b: int) -> None:
        _gather.gather_select(accounts[a:b], book.indptr, book.instrument_idx, book.quantity, P, out[a:b])

    _parallel.run_bounds(run, balanced_bounds(counts, 4 * workers), workers)
    loss = out[:, :S]
    # collateral moves with its coin, added in place (a loop over the few coins, not a BLAS product
    # whose threads would spin against the gather's)
    exposure.collateral_pnl(space.underlyings, sset.price_move, accounts, out=loss)
    np.negative(loss, out=loss)
    _check_losses(exposure, accounts, loss)
    return loss


class _ProbeGather:
    """Exact loss of each account at its own candidate move: the moves are revalued once
    (``RevaluationPlan`` over the instruments the accounts hold) and each account gathers one row,
    straight from the whole book (:func:`dpm._core._gather.gather_own`)."""

    def __init__(self, engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace,
                 accounts: np.ndarray, held: np.ndarray) -> None:
        book = exposure.book
        self.imap = np.full(len(book.table), -1, dtype=np.int64)
        self.imap[held] = np.arange(held.size)
        self.plan = RevaluationPlan(engine.market, book.table.subset(held), currency="usd", sticky="strike",
                                    default_term=engine.vol_term_structure)
        self.book = book
        self.exposure = exposure
        self.accounts = accounts
        self.coll = exposure.collateral_by_underlying(space.underlyings)[accounts]
        self.space = space
        self.M = held.size

    def losses(self, acc: np.ndarray, z: np.ndarray, workers: int, keys: np.ndarray | None = None) -> np.ndarray:
        """Loss of account ``accounts[acc[i]]`` under full move ``z[i]`` (rows may repeat moves;
        ``keys``, one integer per distinct move, makes finding the distinct moves cheap)."""
        space = self.space
        U = len(space.underlyings)
        if keys is None:
            moves, col = np.unique(z, axis=0, return_inverse=True)
        else:
            _, first, col = np.unique(keys, return_index=True, return_inverse=True)
            moves = z[first]
        col = np.ascontiguousarray(col.ravel(), dtype=np.int64)
        self.last_count = moves.shape[0]
        sset = space.scenario_set(moves, [f"probe_{i}" for i in range(moves.shape[0])])
        out = -(self.coll[acc] * z[:, :U]).sum(axis=1)
        if self.M == 0:
            return out
        Pt = np.ascontiguousarray(self.plan.revalue(sset, workers=workers).T)  # S x M: one row per move
        glob = np.ascontiguousarray(self.accounts[acc], dtype=np.int64)
        pnl = np.empty(acc.size)
        book = self.book

        def run(a: int, b: int) -> None:
            _gather.gather_own(glob[a:b], col[a:b], book.indptr, book.instrument_idx, self.imap, book.quantity,
                               Pt, pnl[a:b])

        counts = (book.indptr[glob + 1] - book.indptr[glob]).astype(np.float64) + 1.0
        _parallel.run_bounds(run, balanced_bounds(counts, 4 * workers), workers)
        out -= pnl
        _check_losses(self.exposure, glob, out)
        return out


def _crossing_estimate(rc: np.ndarray, Lc: np.ndarray, ra: np.ndarray, La: np.ndarray, rb: np.ndarray,
                       Lb: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Radius in ``[ra, rb]`` where the loss reaches ``e`` (``La < e <= Lb``): the quadratic through
    the bracket and the point before it (``rc < ra``; NaN if none), else the chord."""
    h = rb - ra
    with np.errstate(divide="ignore", invalid="ignore"):
        lin = ra + (e - La) * h / (Lb - La)
        b1 = (Lb - La) / h
        b0 = (La - Lc) / (ra - rc)
        g = (b1 - b0) / (rb - rc)
        B = b1 - g * h
        C = La - e
        disc = B * B - 4.0 * g * C
        sq = np.sqrt(np.maximum(disc, 0.0))
        # the root of g t^2 + B t + C = 0 in [0, h], written to avoid cancellation
        q = -0.5 * (B + np.copysign(sq, B))
        t1 = q / g
        t2 = C / q
        quad = np.where((t1 >= 0) & (t1 <= h), t1, t2)
    ok = np.isfinite(quad) & (disc >= 0) & (quad >= 0) & (quad <= h) & np.isfinite(g) & (np.abs(g) > 0)
    out = np.where(ok, ra + quad, lin)
    return np.clip(np.where(np.isfinite(out), out, rb), ra, rb)


def _coarse_pass(engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace, accounts: np.ndarray,
                 e: np.ndarray, sset: ScenarioSet, rad: np.ndarray, workers: int) -> tuple[np.ndarray, ...]:
    """Zero-move loss, per-direction crossing estimate, first exhausting ladder step and the loss
    there, for every account (the candidate moves revalued once per chunk of accounts)."""
    K, J = rad.shape
    n = accounts.size
    L0 = np.empty(n)
    rhat = np.empty((n, K))
    j1 = np.empty((n, K), dtype=np.int64)
    Lhit = np.empty((n, K))
    kk = np.arange(K)[None, :]
    P = engine.plan.revalue(sset, workers=workers, padded=True, unavailable=0.0)
    for c0 in range(0, n, CHUNK_ACCOUNTS):
        c1 = min(n, c0 + CHUNK_ACCOUNTS)
        L = _losses(engine, exposure, space, accounts[c0:c1], sset, P, workers)
        ec = e[c0:c1]
        l0 = L[:, 0]
        Lk = L[:, 1:].reshape(-1, K, J)
        hit = Lk >= ec[:, None, None]
        has = hit.any(axis=2)
        j = np.argmax(hit, axis=2)
        ii = np.arange(c1 - c0)[:, None]
        Lb = Lk[ii, kk, j]
        rb = rad[kk, j]
        jm = np.maximum(j - 1, 0)
        La = np.where(j > 0, Lk[ii, kk, jm], l0[:, None])
        ra = np.where(j > 0, rad[kk, jm], 0.0)
        jc = np.maximum(j - 2, 0)
        Lc = np.where(j > 1, Lk[ii, kk, jc], np.where(j == 1, l0[:, None], np.nan))
        rc = np.where(j > 1, rad[kk, jc], np.where(j == 1, 0.0, np.nan))
        est = _crossing_estimate(rc, Lc, ra, La, rb, Lb, np.broadcast_to(ec[:, None], La.shape))
        rhat[c0:c1] = np.where(has, est, np.inf)
        L0[c0:c1] = l0
        j1[c0:c1] = j
        Lhit[c0:c1] = Lb
    return L0, rhat, j1, Lhit


def reverse_stress(engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace, *,
                   directions: int = 16, radii: int = 10, r_min: float | None = None,
                   r_max: float | None = None, rtol: float = 0.01, fine: int = 8, max_rounds: int = 40,
                   workers: int | None = None) -> ReverseStressResult:
    """Smallest joint move (in ``space``'s metric) that exhausts each account's equity.

    Parameters
    ----------
    engine : ScenarioRiskEngine
        The revaluation engine (market and instruments of the book).
    exposure : BookExposure
        Equity and collateral of the book (:func:`~dpm.engines.solvency.exposure.book_exposure`).
    space : StressSpace
        Factors, covariance and metric.
    directions : int
        Coarse directions per group of two factors (a multiple of 8 keeps the percent metric's
        corners); groups of three or more factors use ``4 * directions`` directions.
    radii : int
        Steps of the coarse geometric radius ladder ``r_min .. r_max``.
    r_min, r_max : float, optional
        Ladder bounds (default 0.25 .. 40 for Mahalanobis, 0.5 % .. 95 % for percent).
    rtol : float
        Lattice step: the reported distance is at most ``(1 + rtol)`` times a distance that does not
        exhaust the equity along the same direction.
    fine : int
        Angular refinement factor of the certification directions (two factors).
    max_rounds : int
        Bound on the certification rounds (each revalues the distinct candidate moves once).
    workers : int, optional

    Returns
    -------
    ReverseStressResult
    """
    if not isinstance(engine, ScenarioRiskEngine):
        raise InvalidTypeError(f"engine: expected a ScenarioRiskEngine, got {type(engine).__name__}")
    if not isinstance(exposure, BookExposure):
        raise InvalidTypeError(f"exposure: expected a BookExposure, got {type(exposure).__name__}")
    if not isinstance(space, StressSpace):
        raise InvalidTypeError(f"space: expected a StressSpace, got {type(space).__name__}")
    K = _check_positive(directions, "directions", integer=True, lo=3)
    J = _check_positive(radii, "radii", integer=True, lo=1)
    fine = _check_positive(fine, "fine", integer=True)
    max_rounds = _check_positive(max_rounds, "max_rounds", integer=True)
    rtol = _check_positive(rtol, "rtol")
    lo_default, hi_default = _default_range(space)
    r_min = lo_default if r_min is None else _check_positive(r_min, "r_min")
    r_max = hi_default if r_max is None else _check_positive(r_max, "r_max")
    if r_max <= r_min:
        raise InvalidInputError(f"r_max: must be > r_min ({r_min!r}), got {r_max!r}")
    w = _parallel.resolve_workers(engine.workers if workers is None else workers)
    book = exposure.book
    book.require_table(engine.instruments)
    N, F = len(book), space.n_factors
    masks = factor_masks(exposure, space.underlyings, space.vol)
    _check_revaluable(engine, exposure, space)
    counts = np.diff(book.indptr)
    eq = exposure.equity
    dist = np.full(N, np.inf)
    lower = np.full(N, np.inf)
    move = np.full((N, F), np.nan)
    loss_at = np.full(N, np.nan)
    cert = np.zeros(N, dtype=bool)
    R = _ladder(r_min, r_max, J)
    rho = 1.0 + rtol
    lr = math.log(rho)
    n_scen = 0
    # no factor: nothing moves the account's value (empty, or USD collateral only)
    none = masks == 0
    gone = none & (eq <= 0.0)
    dist[gone] = lower[gone] = 0.0
    move[gone] = 0.0
    loss_at[gone] = 0.0
    cert[none] = True
    for m in np.unique(masks[~none]):
        factors = np.array([f for f in range(F) if (int(m) >> f) & 1], dtype=np.int64)
        accounts = np.flatnonzero(masks == m)
        D = factors.size
        Kc = 2 if D == 1 else (K if D == 2 else 4 * K)
        units = _unit_directions(D, Kc)
        if space.metric == "percent" and 3 <= D <= 6:
            corners = np.array(np.meshgrid(*([[-1.0, 1.0]] * D), indexing="ij")).reshape(D, -1).T
            units = np.vstack([units, corners / math.sqrt(D)])
        Kc = units.shape[0]
        dirs = _metric_directions(space, factors, units)
        caps = _caps(space, dirs)
        rad = np.minimum(R[None, :], caps[:, None])  # K x J
        zH = np.vstack([np.zeros((1, D)), (rad[:, :, None] * dirs[:, None, :]).reshape(-1, D)])
        sset = space.scenario_set(_z_full(space, factors, zH),
                                  ["zero"] + [f"d{k}r{j}" for k in range(Kc) for j in range(J)])
        n_scen += len(sset)
        e = eq[accounts]
        L0, rhat, j1, Lhit = _coarse_pass(engine, exposure, space, accounts, e, sset, rad, w)
        at_zero = L0 >= e
        kbest = np.argmin(rhat, axis=1)
        rbest = rhat[np.arange(accounts.size), kbest]
        ok = np.isfinite(rbest) & ~at_zero
        # zero move (time decay over the horizon) already exhausts the equity
        z0 = accounts[at_zero]
        dist[z0] = lower[z0] = 0.0
        move[z0] = space.complete(np.zeros((z0.size, D)), factors)
        loss_at[z0] = L0[at_zero]
        cert[z0] = True
        cert[accounts[~at_zero & ~np.isfinite(rbest)]] = True  # no exhausting move in the region
        if not ok.any():
            continue
        sel = np.flatnonzero(ok)
        # certification directions: finer angles around the parabola's optimum (two factors)
        if D == 2:
            Kf = Kc * fine
            th = 2.0 * np.pi * np.arange(Kf) / Kf
            fdirs = _metric_directions(space, factors, np.column_stack([np.cos(th), np.sin(th)]))
            k0 = kbest[sel]
            r0 = rhat[sel, k0]
            rm = rhat[sel, (k0 - 1) % Kc]
            rp = rhat[sel, (k0 + 1) % Kc]
            den = rm - 2.0 * r0 + rp
            with np.errstate(invalid="ignore", divide="ignore"):
                off = np.where(np.isfinite(den) & (den > 0), 0.5 * (rm - rp) / den, 0.0)
            off = np.clip(np.nan_to_num(off), -1.0, 1.0)
            fidx = np.round((k0 + off) * fine).astype(np.int64) % Kf
        else:
            fdirs = dirs
            fidx = kbest[sel]
        fcaps = _caps(space, fdirs)
        coarse = (kbest[sel], j1[sel, kbest[sel]])
        # candidates: the refined direction and, for two factors, the coarse optimum itself (a
        # kinked r(angle), e.g. at a corner of the percent metric, can mislead the parabola)
        rows = np.arange(sel.size)
        cand_rows, cand_f = [rows], [fidx]
        if D == 2:
            f0 = kbest[sel] * fine
            other = f0 != fidx
            cand_rows.append(rows[other])
            cand_f.append(f0[other])
        crow = np.concatenate(cand_rows)
        cf = np.concatenate(cand_f)
        chosen = np.zeros(N, dtype=bool)
        chosen[accounts[sel]] = True
        held = np.flatnonzero(np.bincount(book.instrument_idx[np.repeat(chosen, counts)], minlength=len(book.table)))
        res = _certify(engine, exposure, space, factors, accounts[sel], held, crow, e[sel], L0[sel], fdirs, fcaps, cf,
                       rbest[sel][crow], R[0], rho, lr, max_rounds, w)
        n_scen += res["scenarios"]
        # per account the candidate with the smallest certified distance
        r_hi = np.where(res["done"], res["r_hi"], np.inf)
        order = np.lexsort((r_hi, crow))
        first = np.ones(order.size, dtype=bool)
        first[1:] = crow[order][1:] != crow[order][:-1]
        pick = order[first]  # one row per account (rows sorted by account)
        done = res["done"][pick]
        a_done = accounts[sel][done]
        dist[a_done] = res["r_hi"][pick][done]
        lower[a_done] = res["r_lo"][pick][done]
        move[a_done] = space.complete(res["z"][pick][done], factors)
        loss_at[a_done] = res["L_hi"][pick][done]
        cert[a_done] = True
        # not certified on the lattice: the coarse ladder's exact bracket of the best direction
        nd = ~done
        if nd.any():
            kb, jb = coarse[0][nd], coarse[1][nd]
            a_nd = accounts[sel][nd]
            local = sel[nd]
            dist[a_nd] = rad[kb, jb]
            lower[a_nd] = np.where(jb > 0, rad[kb, np.maximum(jb - 1, 0)], 0.0)
            move[a_nd] = space.complete(rad[kb, jb][:, None] * dirs[kb], factors)
            loss_at[a_nd] = Lhit[local, kb]
            cert[a_nd] = False
    finite = np.isfinite(dist)
    maha = np.full(N, np.inf)
    pct = np.full(N, np.inf)
    if finite.any():
        maha[finite] = space.mahalanobis(move[finite])
        pct[finite] = space.percent(move[finite])
    return ReverseStressResult(book.account_id, space, eq, _ro(dist), _ro(lower), _ro(move), _ro(loss_at),
                               _ro(maha), _ro(pct), _ro(cert), float(rtol), n_scen)


def _certify(engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace, factors: np.ndarray,
             accounts: np.ndarray, held: np.ndarray, rows: np.ndarray, e_acc: np.ndarray, L0_acc: np.ndarray, fdirs: np.ndarray,
             fcaps: np.ndarray, fidx: np.ndarray, rguess: np.ndarray, r_ref: float, rho: float, lr: float,
             max_rounds: int, workers: int) -> dict[str, Any]:
    """Lattice bracketing of the exhausting radius of each account along its direction ``fidx``.

    Rung ``n`` is the radius ``r_ref rho^n`` (capped at the direction's edge). State per account: a
    rung known not to exhaust (``lo``; NEG = only the zero move is known) and one known to exhaust
    (``hi``; POS = none yet). Each round probes one rung per unresolved account (the guess and the
    rung below it first, then outward with doubling steps until bracketed, then bisection) and
    revalues the distinct probe moves once. ``rows`` maps each candidate (direction ``fidx``, guess
    ``rguess``) to its account in ``accounts`` (an account may have several candidates).
    """
    n = rows.size
    gather = _ProbeGather(engine, exposure, space, accounts, held)
    e = e_acc[rows]
    NEG, POS = -(1 << 40), 1 << 40
    lo = np.full(n, NEG, dtype=np.int64)
    hi = np.full(n, POS, dtype=np.int64)
    L_hi = np.full(n, np.nan)
    guess = np.ceil(np.log(np.maximum(rguess, 1e-300) / r_ref) / lr - 1e-9).astype(np.int64)
    step_up = np.ones(n, dtype=np.int64)
    step_dn = np.ones(n, dtype=np.int64)
    failed = np.zeros(n, dtype=bool)
    floor_rung = int(math.floor(math.log(1e-6 / r_ref) / lr))
    cap_r = fcaps[fidx]
    with np.errstate(divide="ignore"):
        cap_rung = np.where(np.isfinite(cap_r), np.ceil(np.log(np.where(np.isfinite(cap_r), cap_r, 1.0) / r_ref) / lr),
                            POS).astype(np.int64)
    scen = 0

    def radius(acc: np.ndarray, rung: np.ndarray) -> np.ndarray:
        return np.minimum(r_ref * np.exp(rung.astype(np.float64) * lr), cap_r[acc])

    def apply(acc: np.ndarray, rungs: np.ndarray, vals: np.ndarray) -> None:
        ex = vals >= e[acc]
        up = ex & (rungs < hi[acc])
        hi[acc[up]] = rungs[up]
        L_hi[acc[up]] = vals[up]
        dn = ~ex & (rungs > lo[acc])
        lo[acc[dn]] = rungs[dn]
        # a probe below a known non-exhausting rung exhausted (the loss is not monotone there): the
        # first crossing is below it, search down again
        bad = hi <= lo
        lo[bad] = NEG

    for rnd in range(max_rounds):
        todo = (hi - lo > 1) & ~failed
        if not todo.any():
            break
        a = np.flatnonzero(todo)
        l_, h_ = lo[a], hi[a]
        probe = np.where(h_ == POS, np.where(l_ == NEG, guess[a], l_ + step_up[a]),
                         np.where(l_ == NEG, h_ - step_dn[a], l_ + (h_ - l_) // 2))
        probe = np.minimum(probe, cap_rung[a])
        probe = np.maximum(probe, floor_rung)
        passes = [(a, probe)]
        if rnd == 0:  # the guess and the rung below it: usually the final bracket
            passes.append((a, probe - 1))
        acc = np.concatenate([p[0] for p in passes])
        rungs = np.concatenate([p[1] for p in passes])
        zH = radius(acc, rungs)[:, None] * fdirs[fidx[acc]]
        z = _z_full(space, factors, zH)
        # a lattice move is (direction, rung): one integer key per distinct move
        keys = fidx[acc].astype(np.int64) * (1 << 42) + (np.minimum(rungs, cap_rung[acc]) + (1 << 41))
        vals = gather.losses(rows[acc], z, workers, keys)
        scen += gather.last_count
        k0 = 0
        for pa, pr in passes:
            apply(pa, pr, vals[k0:k0 + pa.size])
            k0 += pa.size
        still_up = (hi[a] == POS)
        step_up[a[still_up]] *= 2
        still_dn = (lo[a] == NEG) & (hi[a] != POS)
        step_dn[a[still_dn]] *= 2
        failed[a[still_up & (lo[a] >= cap_rung[a])]] = True
        bottom = a[still_dn & (hi[a] <= floor_rung)]
        lo[bottom] = hi[bottom] - 1  # exhausted already at a negligible radius: bracket (0, hi]
    done = (hi - lo <= 1) & ~failed & (hi != POS)
    all_ = np.arange(n)
    r_hi = np.where(done, radius(all_, np.where(done, hi, 0)), np.inf)
    r_lo = np.where(done & (lo > floor_rung), r_ref * np.exp(np.where(done, lo, 0).astype(np.float64) * lr), 0.0)
    r_lo = np.minimum(r_lo, r_hi)
    z = np.where(done[:, None], r_hi[:, None] * fdirs[fidx], 0.0)
    z = np.nan_to_num(z, posinf=0.0)
    return {"done": done, "r_hi": r_hi, "r_lo": r_lo, "L_hi": L_hi, "z": z, "scenarios": scen, "rounds": rnd + 1,
            "guess_error": np.where(done, hi - guess, 0)}


# ---------------------------------------------------------------------------------------------
# Venue-wide search
# ---------------------------------------------------------------------------------------------
#: accounts per chunk of the venue-wide evaluations (their sub-books are built once per search)
VENUE_CHUNK_ACCOUNTS = 32768


def _check_revaluable(engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace) -> None:
    """Fail closed once for the whole book: every held instrument can be revalued under the space's
    moves (the gathers read the book directly and count an unusable row as 0)."""
    packed = engine.plan.pack(space.scenario_set(np.zeros((1, space.n_factors)), ["zero"]))
    engine.plan.check_held(exposure.book, engine.plan.usable(packed.covered), packed.covered)


def _uncovered(engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace, z: np.ndarray,
               workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Uncovered loss and bankrupt count of the whole book under each full move ``z`` (S, F): the
    moves revalued once, the accounts gathered in chunks (bounded memory)."""
    sset = space.scenario_set(z, [f"v{i}" for i in range(z.shape[0])])
    unc = np.zeros(len(sset))
    cnt = np.zeros(len(sset), dtype=np.int64)
    N = len(exposure.book)
    if not N:
        return unc, cnt
    P = engine.plan.revalue(sset, workers=workers, padded=True, unavailable=0.0)
    for c0 in range(0, N, VENUE_CHUNK_ACCOUNTS):
        idx = np.arange(c0, min(N, c0 + VENUE_CHUNK_ACCOUNTS), dtype=np.int64)
        short = _losses(engine, exposure, space, idx, sset, P, workers)
        short -= exposure.equity[idx, None]
        cnt += np.count_nonzero(short > 0.0, axis=0)
        np.maximum(short, 0.0, out=short)
        unc += short.sum(axis=0)
    return unc, cnt


def venue_reverse_stress(engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace, fund: float, *,
                         directions: int | None = None, radii: int = 10, r_min: float | None = None,
                         r_max: float | None = None, rtol: float = 0.005, starts: int = 2,
                         polish_degrees: float = 1.0, max_rounds: int = 40,
                         workers: int | None = None) -> VenueReverseStress:
    """Smallest joint move (``space``'s metric) under which ``sum max(loss - equity, 0) > fund``.

    Coarse grid of directions x radius ladder (one revaluation of the whole book); from the
    ``starts`` best directions, sequential linearisation (the gradient of the uncovered loss at the
    current crossing by central differences, the closed-form solution of the linearised problem,
    the exact crossing along it), then an exact pattern search on the sphere to polish (neighbours
    at ``polish_degrees``, halved when none is better, down to 0.1 degree). Every reported figure is
    from exact revaluation; the crossing is bracketed to ``rtol`` along the final direction.

    Parameters
    ----------
    fund : float
        Insurance fund (USD, >= 0).
    directions : int, optional
        Coarse directions (default 64 for two factors, 32 x factors otherwise).
    """
    if not isinstance(engine, ScenarioRiskEngine):
        raise InvalidTypeError(f"engine: expected a ScenarioRiskEngine, got {type(engine).__name__}")
    if not isinstance(exposure, BookExposure):
        raise InvalidTypeError(f"exposure: expected a BookExposure, got {type(exposure).__name__}")
    if not isinstance(space, StressSpace):
        raise InvalidTypeError(f"space: expected a StressSpace, got {type(space).__name__}")
    if isinstance(fund, bool) or not isinstance(fund, (int, float, np.integer, np.floating)) or not (
            math.isfinite(fund) and fund >= 0):
        raise InvalidInputError(f"fund: expected a finite amount >= 0 (USD), got {fund!r}")
    fund = float(fund)
    J = _check_positive(radii, "radii", integer=True, lo=1)
    rtol = _check_positive(rtol, "rtol")
    starts = _check_positive(starts, "starts", integer=True)
    max_rounds = _check_positive(max_rounds, "max_rounds", integer=True)
    lo_default, hi_default = _default_range(space)
    r_min = lo_default if r_min is None else _check_positive(r_min, "r_min")
    r_max = hi_default if r_max is None else _check_positive(r_max, "r_max")
    if r_max <= r_min:
        raise InvalidInputError(f"r_max: must be > r_min ({r_min!r}), got {r_max!r}")
    w = _parallel.resolve_workers(engine.workers if workers is None else workers)
    exposure.book.require_table(engine.instruments)
    masks = factor_masks(exposure, space.underlyings, space.vol)
    _check_revaluable(engine, exposure, space)
    used = int(np.bitwise_or.reduce(masks)) if masks.size else 0
    F = space.n_factors
    factors = np.array([f for f in range(F) if (used >> f) & 1], dtype=np.int64)
    D = factors.size
    evals = 0

    def full(zH: np.ndarray) -> np.ndarray:
        return space.complete(zH, factors) if D else np.zeros((zH.shape[0], F))

    def result(dist: float, dlo: float, z: np.ndarray, unc: float, unc_lo: float, bk: int) -> VenueReverseStress:
        zf = z if np.isfinite(dist) else np.full(F, np.nan)
        m = float(space.mahalanobis(zf[None, :])[0]) if np.isfinite(dist) else math.inf
        p = float(space.percent(zf[None, :])[0]) if np.isfinite(dist) else math.inf
        return VenueReverseStress(space, fund, dist, dlo, _ro(np.array(zf, dtype=np.float64)), unc, unc_lo, bk,
                                  m, p, evals)

    u0, b0 = _uncovered(engine, exposure, space, np.zeros((1, F)), w)
    evals += 1
    if u0[0] > fund or D == 0:
        if u0[0] > fund:
            return result(0.0, 0.0, np.zeros(F), float(u0[0]), float(u0[0]), int(b0[0]))
        return result(math.inf, math.inf, np.zeros(F), math.nan, float(u0[0]), 0)
    K = directions if directions is not None else (32 if D == 2 else 2 if D == 1 else 8 * D)
    K = _check_positive(K, "directions", integer=True, lo=1)
    units = _unit_directions(D, K)
    if space.metric == "percent" and 2 <= D <= 6:
        corners = np.array(np.meshgrid(*([[-1.0, 1.0]] * D), indexing="ij")).reshape(D, -1).T
        units = np.vstack([units, corners / math.sqrt(D)])
    Kc = units.shape[0]
    dirs = _metric_directions(space, factors, units)
    caps = _caps(space, dirs)
    R = _ladder(r_min, r_max, J)
    rad = np.minimum(R[None, :], caps[:, None])
    zH = (rad[:, :, None] * dirs[:, None, :]).reshape(-1, D)
    unc, cnt = _uncovered(engine, exposure, space, full(zH), w)
    evals += zH.shape[0]
    Ukj = unc.reshape(Kc, J)
    hit = Ukj > fund
    has = hit.any(axis=1)
    if not has.any():
        return result(math.inf, math.inf, np.zeros(F), math.nan, float(u0[0]), 0)
    j1 = np.argmax(hit, axis=1)
    kk = np.arange(Kc)
    Ub = Ukj[kk, j1]
    rb = rad[kk, j1]
    jm = np.maximum(j1 - 1, 0)
    Ua = np.where(j1 > 0, Ukj[kk, jm], u0[0])
    ra = np.where(j1 > 0, rad[kk, jm], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.where(has, np.clip(ra + (fund - Ua) * (rb - ra) / (Ub - Ua), ra, rb), np.inf)
    order = np.argsort(rhat, kind="stable")[:starts]
    order = order[np.isfinite(rhat[order])]
    search = _VenueSearch(engine, exposure, space, factors, fund, w)
    # linearised steps from each start (few revaluations), then a short exact pattern search from
    # the best one to polish
    best_sq: tuple[Any, ...] | None = None
    for k in order:
        sq = _sqp(search, units[k], float(ra[k]), float(rb[k]), rtol, max_rounds)
        if math.isfinite(sq[0]) and (best_sq is None or sq[0] < best_sq[0]):
            best_sq = sq
    if best_sq is None:
        return result(math.inf, math.inf, np.zeros(F), math.nan, float(u0[0]), 0)
    best = _pattern_search(search, best_sq[6], best_sq[1], best_sq[0], rtol, max_rounds,
                           math.radians(polish_degrees))
    if not math.isfinite(best[0]) or best[0] > best_sq[0]:
        best = best_sq[:6]
    evals += search.evals
    assert best is not None
    dist, dlo, zbest, ub, ulo, bk = best
    if zbest is None:
        return result(math.inf, math.inf, np.zeros(F), math.nan, float(u0[0]), 0)
    return result(dist, dlo, zbest, ub, ulo, bk)


class _VenueSearch:
    """Exact evaluations of the venue's uncovered loss along directions of the whitened sphere."""

    def __init__(self, engine: ScenarioRiskEngine, exposure: BookExposure, space: StressSpace,
                 factors: np.ndarray, fund: float, workers: int) -> None:
        self.engine, self.exposure, self.space = engine, exposure, space
        self.factors, self.fund, self.workers = factors, fund, workers
        self.evals = 0

    def moves(self, u: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, float]:
        """Full moves at radii ``r`` (capped at the direction's edge) along unit vector ``u``."""
        d = _metric_directions(self.space, self.factors, u[None, :])[0]
        cap = float(_caps(self.space, d[None, :])[0])
        zH = np.minimum(r, cap)[:, None] * d[None, :]
        return self.space.complete(zH, self.factors), cap

    def evaluate(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.evals += Z.shape[0]
        return _uncovered(self.engine, self.exposure, self.space, Z, self.workers)

    def crossing(self, u: np.ndarray, guess_lo: float, guess_hi: float, rho: float,
                 max_rounds: int) -> tuple[float, float, float, float, int, np.ndarray]:
        """Exact bracket ``(lo, hi]`` of the first radius where the uncovered loss exceeds the fund
        along ``u``: uncovered(lo) <= fund < uncovered(hi), ``hi <= rho lo`` (or lo = 0 and hi tiny).
        Returns ``(lo, hi, U(lo), U(hi), bankrupt(hi), move(hi))``; hi = inf when the direction's
        edge is reached without crossing."""
        F = self.space.n_factors
        lo, U_lo, hi, U_hi, bk, z_hi = 0.0, -math.inf, math.inf, math.nan, 0, np.full(F, np.nan)
        pts = np.array(sorted({max(guess_lo, 0.0), guess_hi}))
        pts = pts[pts > 0]
        for _ in range(max_rounds):
            Z, cap = self.moves(u, pts)
            rr = np.minimum(pts, cap)
            unc, cnt = self.evaluate(Z)
            for j in range(rr.size):  # increasing radii: the first crossing sets hi
                if unc[j] > self.fund:
                    if rr[j] < hi:
                        hi, U_hi, bk, z_hi = float(rr[j]), float(unc[j]), int(cnt[j]), Z[j]
                    break
                if lo < rr[j] < hi:
                    lo, U_lo = float(rr[j]), float(unc[j])
            if not math.isfinite(hi):
                if lo >= cap * (1 - 1e-12):
                    break
                base = max(lo, pts.max())
                pts = np.unique(np.minimum(base * 2.0 ** np.arange(1, 4), cap))
                continue
            if (lo > 0 and hi <= rho * lo) or hi <= 1e-9:
                break
            pts = (lo * (hi / lo) ** (np.arange(1, 8) / 8.0)) if lo > 0 else hi * np.arange(1, 8) / 8.0
        if lo == 0.0:
            U_lo = math.nan
        return lo, hi, U_lo, U_hi, bk, z_hi


def _sqp(search: _VenueSearch, u: np.ndarray, lo: float, hi: float, rtol: float, max_rounds: int,
         max_iter: int = 12) -> tuple[Any, ...]:
    """Sequential linearisation from direction ``u``: at the current crossing move, the gradient of the
    uncovered loss (central differences, one revaluation of 2D moves) gives the linearised problem
    whose solution is closed-form (Mahalanobis: the direction S g; percent: the corner sign(g)); the
    exact crossing along it is kept when it is closer. Returns the best crossing and its direction."""
    space, factors = search.space, search.factors
    D = factors.size
    rho = 1.0 + rtol
    lo, hi, U_lo, U_hi, bk, z_hi = search.crossing(u, lo, hi, rho, max_rounds)
    best = (hi, lo, z_hi, U_hi, U_lo, bk, u)
    if not math.isfinite(hi):
        return best
    S_H = space.cov[np.ix_(factors, factors)]
    C = np.linalg.cholesky(S_H)
    sig = np.sqrt(np.diag(S_H))
    for _ in range(max_iter):
        zc = best[2][factors]
        h = 1e-3 * np.maximum(np.abs(zc), sig)
        pts = np.vstack([zc + np.diag(h), zc - np.diag(h)])
        unc, _ = search.evaluate(space.complete(pts, factors))
        g = (unc[:D] - unc[D:]) / (2.0 * h)
        if not np.isfinite(g).all() or not np.any(g):
            break
        if space.metric == "mahalanobis":
            v = C.T @ g  # z = C u with u parallel to C' g  <=>  z parallel to S g
        else:
            v = np.sign(g)
        nv = np.linalg.norm(v)
        if nv == 0:
            break
        v = v / nv
        cosang = float(np.clip(v @ best[6], -1.0, 1.0))
        if math.degrees(math.acos(cosang)) < 0.02:
            break
        d = _metric_directions(space, factors, v[None, :])[0]
        level = float(g @ zc)
        slope = float(g @ d)
        r_pred = level / slope if slope > 0 and level > 0 else best[0]
        r_pred = min(max(r_pred, best[0] / 4.0), best[0] * 4.0)
        lo2, hi2, Ul2, Uh2, bk2, z2 = search.crossing(v, r_pred / 1.03, r_pred * 1.03, rho, max_rounds)
        if math.isfinite(hi2) and hi2 < best[0] * (1.0 - 1e-12):
            best = (hi2, lo2, z2, Uh2, Ul2, bk2, v)
        else:
            break
    return best


def _pattern_search(search: _VenueSearch, u: np.ndarray, lo: float, hi: float, rtol: float,
                    max_rounds: int, delta: float) -> tuple[Any, ...]:
    """Local search on the whitened unit sphere from ``u`` (coarse bracket ``(lo, hi]``): neighbours
    at angle ``delta`` are revalued on a radius window around the current crossing; move to a
    neighbour that crosses earlier, else halve ``delta``; finally certify the crossing exactly."""
    D = u.size
    rho = 1.0 + rtol
    min_delta = math.radians(0.1)
    lo, hi, *_ = search.crossing(u, lo, hi, max(rho, 1.05), max_rounds)
    if not math.isfinite(hi):
        return (math.inf, math.inf, None, math.nan, math.nan, 0)
    r_c = hi if lo <= 0 else math.sqrt(lo * hi)
    rounds = 0
    while D >= 2 and delta >= min_delta and rounds < max_rounds:
        rounds += 1
        q, _ = np.linalg.qr(np.column_stack([u, np.eye(D)]))
        cands = []
        for t in q[:, 1:D].T:
            for s in (1.0, -1.0):
                c = math.cos(delta) * u + s * math.sin(delta) * t
                cands.append(c / np.linalg.norm(c))
        span = max(2.0 * math.sin(delta), 2.0 * rtol)
        rs = r_c * np.exp(np.linspace(-span, span, 7))
        Z, caps = [], []
        for c in cands:
            z, cap = search.moves(c, rs)
            Z.append(z)
            caps.append(cap)
        unc, _ = search.evaluate(np.vstack(Z))
        unc = unc.reshape(len(cands), rs.size)
        best, best_r = -1, r_c * (1.0 - 0.25 * rtol)
        for ci in range(len(cands)):
            rr = np.minimum(rs, caps[ci])
            h = np.flatnonzero(unc[ci] > search.fund)
            if not h.size:
                continue
            j = int(h[0])
            est = float(rr[0]) if j == 0 else float(
                rr[j - 1] + (search.fund - unc[ci, j - 1]) * (rr[j] - rr[j - 1]) / (unc[ci, j] - unc[ci, j - 1]))
            if est < best_r:
                best, best_r = ci, est
        if best >= 0:
            u, r_c = cands[best], best_r
        else:
            delta *= 0.5
    width = 1.0 + max(4.0 * rtol, 0.02)
    lo, hi, U_lo, U_hi, bk, z_hi = search.crossing(u, r_c / width, r_c * width, rho, max_rounds)
    return (hi, lo, z_hi, U_hi, U_lo, bk)
