"""The margin kernel's grouped, scenario-blocked gather gives the bits of the one-account path.

``margin_job`` margins accounts by groups (``AggregationPlan.set_group``, 64 by default), one block
of scenarios at a time, from a blocked copy of the P&L matrix (``dpm_block_copy``), or with group 1
one account at a time from the row-major matrix; ``account_state`` + ``finish`` build one account's
state from the row-major matrix with plain per-position adds (the what-if path). All sum every
scenario of every account over its positions in CSR order, so they must agree bit for bit whatever
the number of scenarios (blocks of 32 / 64 and a remainder of 8s), the group size and boundaries,
the chunk a thread is given, empty accounts, and instrument tables whose underlyings are
interleaved (one underlying in several runs of an account's positions).
"""
from __future__ import annotations

import numpy as np
import pytest

from dpm._core import _gather
from dpm.models.risk_matrix import AGGREGATIONS


def _plan(rng: np.random.Generator, S: int, M: int, U: int, interleaved: bool, agg: str, tweak=None):
    Sp = -(-S // 8) * 8
    pnl = np.zeros((M, Sp))
    pnl[:, :S] = rng.standard_normal((M, S)) * rng.choice([1e-3, 1.0, 1e4], size=(M, 1))
    und = (np.arange(M) % U if interleaved else np.sort(rng.integers(0, U, M))).astype(np.int32)
    nb = 3  # expiry buckets per underlying
    bucket = (und * nb + rng.integers(0, nb, M)).astype(np.int32)
    weight = np.zeros((U, Sp))
    weight[:, :S] = rng.uniform(0.5, 1.0, (U, S))
    damp = np.zeros((U, Sp))
    damp[:, :S] = rng.uniform(0.0, 10.0, (U, S))
    grp = np.full((U, Sp), -1, dtype=np.int32)
    grp[:, :S] = np.arange(S) % 4
    corr = np.full((U, U), 0.6) + 0.4 * np.eye(U)
    arrays = dict(
        pnl=pnl, inst_und=und, inst_bucket=bucket, inst_delta=rng.standard_normal(M),
        inst_som=rng.uniform(0, 1, M), inst_notional=rng.uniform(1, 100, M), inst_value=rng.standard_normal(M),
        weight=weight, damp=damp, bucket_ptr=np.arange(0, nb * U + 1, nb, dtype=np.int64),
        bucket_rate=rng.uniform(0, 0.01, nb * U), und_price=rng.uniform(10, 1e5, U), to_risk=np.ones(U),
        risk_to_usd=np.ones(U), ds_threshold=np.full(U, 1e3), ds_m_inc=np.full(U, 1e-4), ds_max=np.full(U, 0.1),
        size_rate=np.full(U, 1e-4), tier_bound=np.array([1e3, 1e4]), tier_mult=np.array([1.0, 1.5, 2.0]),
        corr=corr, grp=grp, ngrp=np.full(U, 4, dtype=np.int32), pair_off=np.full(U * U, -1, dtype=np.int64),
        ctab=np.zeros(0), gz=np.zeros((U, 4)), mask_off=np.zeros(0, dtype=np.int64), qsub=np.zeros(0),
        offset=np.full(U, 0.5), max_offset=np.full(U, np.inf), sp_leg=np.zeros((0, 2), dtype=np.int32),
        sp_rate=np.zeros(0), sp_ratio=np.zeros(0),
    )
    if tweak is not None:
        tweak(arrays)
    return _gather.AggregationPlan(S=S, scan_round=0.0, agg=AGGREGATIONS[agg], keep=arrays, **arrays)


def _book(rng: np.random.Generator, N: int, M: int):
    sizes = rng.integers(0, 40, N)
    sizes[rng.random(N) < 0.05] = 0  # empty accounts
    inst = [np.sort(rng.choice(M, size=min(int(k), M), replace=False)) for k in sizes]
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum([len(x) for x in inst], out=indptr[1:])
    flat = np.concatenate(inst).astype(np.int64)
    qty = rng.choice([-1.0, 1.0], flat.size) * rng.integers(1, 50, flat.size)
    return indptr, flat, qty


def _outs(N: int, U: int):
    return (np.full(N, np.nan), np.full(N, np.nan), np.full(N, np.nan), np.full((N, U), np.nan),
            np.full((N, U), np.nan), np.full((N, U), -7, dtype=np.int32), np.full((N, U), np.nan),
            np.full((N, U), np.nan), np.full((N, U), np.nan))


@pytest.mark.parametrize("S", [1, 8, 9, 31, 32, 33, 40, 63, 64, 65, 100, 136])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("group", [64, 1, 5])
@pytest.mark.parametrize("wide", [False, True])
def test_grouped_blocks_equal_one_account_path(S, interleaved, group, wide):
    """``wide``: the passes of CPUs with 32 vector registers (blocks of 64 scenarios, 8-double
    vectors), forced on any CPU so that a host without AVX-512 tests them too."""
    rng = np.random.default_rng(1000 * S + interleaved)
    M, U, N = 90, 3, 203  # with 64: three full groups and a partial one
    plan = _plan(rng, S, M, U, interleaved, "sum")
    assert plan.group == 64
    plan._set_wide(wide)
    plan.set_group(group)
    indptr, inst, qty = _book(rng, N, M)
    outs = _outs(N, U)
    job = plan.margin_job(indptr, inst, qty, outs)
    for start, stop in [(0, 70), (70, 71), (71, 200), (200, N)]:  # chunks that cut groups
        job.run(start, stop)
    for a in range(N):
        k0, k1 = indptr[a], indptr[a + 1]
        state = np.empty(plan.state_size)
        plan.account_state(inst[k0:k1], qty[k0:k1], state)
        one = _outs(1, U)
        plan.finish(state, one)
        for x, y in zip(outs, one):
            assert np.array_equal(np.atleast_1d(x[a]).view(np.uint8), np.atleast_1d(y[0]).view(np.uint8)), (S, a)


@pytest.mark.parametrize("agg", ["sum", "sqrt_corr", "pnl_offset"])
def test_grouping_does_not_change_bits(agg):
    """The same accounts margined in one call, one account per call and in odd chunks."""
    rng = np.random.default_rng(7)
    M, U, N, S = 120, 4, 300, 63
    plan = _plan(rng, S, M, U, True, agg)
    indptr, inst, qty = _book(rng, N, M)
    whole = _outs(N, U)
    plan.margin_job(indptr, inst, qty, whole).run(0, N)
    single = _outs(N, U)
    job = plan.margin_job(indptr, inst, qty, single)
    for a in range(N):
        job.run(a, a + 1)
    odd = _outs(N, U)
    job = plan.margin_job(indptr, inst, qty, odd)
    for s in range(0, N, 37):
        job.run(s, min(s + 37, N))
    rows = _outs(N, U)  # one account at a time from the row-major matrix
    plan.set_group(1)
    plan.margin_job(indptr, inst, qty, rows).run(0, N)
    for x, y, z, r in zip(whole, single, odd, rows):
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8))
        assert np.array_equal(x.view(np.uint8), z.view(np.uint8))
        assert np.array_equal(x.view(np.uint8), r.view(np.uint8))
        if x.dtype == np.float64:
            assert not np.isnan(x).any()


def test_set_group_refuses_nonsense():
    plan = _plan(np.random.default_rng(3), 8, 10, 1, False, "sum")
    for bad in (0, -1, 4097):
        with pytest.raises(ValueError, match="group"):
            plan.set_group(bad)
    assert plan.group == 64


def test_shared_ranges_run_once_each_whatever_the_threads():
    """``MarginJob.run_shared``: threads taking ranges from one counter (the live tick's kernel,
    with the caller joining late) give the bits of one call; every range runs exactly once;
    ranges outside the book are refused before anything runs."""
    import threading

    from dpm._util import parallel

    rng = np.random.default_rng(12)
    M, U, N, S = 120, 3, 1000, 63
    plan = _plan(rng, S, M, U, False, "sum")
    indptr, inst, qty = _book(rng, N, M)
    whole = _outs(N, U)
    plan.margin_job(indptr, inst, qty, whole).run(0, N)
    edges = np.unique(np.concatenate([[0, N], rng.integers(0, N, 40)]))
    bounds = np.stack([edges[:-1], edges[1:]], axis=1).astype(np.int64)
    for n_threads in (1, 3):
        shared = _outs(N, U)
        job = plan.margin_job(indptr, inst, qty, shared)
        counter = np.zeros(1, dtype=np.int64)
        done = []
        threads = [threading.Thread(target=lambda: done.append(job.run_shared(bounds, counter)))
                   for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(done) == len(bounds) and counter[0] >= len(bounds)
        for x, y in zip(whole, shared):
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8))
    # start_beside: the pool thread starts at once, the caller joins after its own work
    shared = _outs(N, U)
    job = plan.margin_job(indptr, inst, qty, shared)
    counter = np.zeros(1, dtype=np.int64)
    join = parallel.start_beside(lambda: job.run_shared(bounds, counter), 2)
    join()
    for x, y in zip(whole, shared):
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8))
    with pytest.raises(IndexError, match="outside"):
        job.run_shared(np.array([[0, N + 1]], dtype=np.int64), np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="bounds"):
        job.run_shared(np.zeros((2, 3), dtype=np.int64), np.zeros(1, dtype=np.int64))


@pytest.mark.parametrize("agg", ["sum", "sqrt_corr", "pnl_offset"])
@pytest.mark.parametrize("S", [9, 31, 63])
def test_scan_over_the_zero_padding_gives_the_bits_of_the_scenario_count(agg, S):
    """With all-zero padding columns the worst-loss scan reads whole padded vectors (no scalar
    remainder); a plan whose padding is not zero (here in the P&L row of an instrument no account
    holds) scans the scenario count only. Both give the same bits, worst scenarios included."""
    M, U, N = 60, 3, 300
    plan = _plan(np.random.default_rng(S), S, M, U, False, agg)
    assert plan.scan_columns == -(-S // 8) * 8
    indptr, inst, qty = _book(np.random.default_rng(S + 1), N, M - 5)
    free = M - 1  # held by no account

    def dirty_padding(arrays):
        arrays["pnl"][free, S:] = 1.0

    other = _plan(np.random.default_rng(S), S, M, U, False, agg, tweak=dirty_padding)
    assert other.scan_columns == S
    a, b = _outs(N, U), _outs(N, U)
    plan.margin_job(indptr, inst, qty, a).run(0, N)
    other.margin_job(indptr, inst, qty, b).run(0, N)
    for x, y in zip(a, b):
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8))
    assert (a[5] >= -1).all() and (a[5] < S).all()
