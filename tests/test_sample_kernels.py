"""The generator's C passes (dpm._core._sample) against the numpy expressions they replaced.

The generator's books are also compared with the unoptimised generator account by account
(tests/test_sample.py); these tests reach the corners a generated book rarely does: ties between two
listed strikes, shifts past the ends of a group, groups without options, rounding at half a lot,
ids longer than the width, and the errors that protect memory.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference.sample_reference import nearest_numpy

from dpm._core import _sample

_BIG = 1.0e12


def _nearest_numpy(ids, key, start, count, grp, strike, shift):
    """The numpy body of _Universe.nearest before it moved to C (the reference)."""
    return nearest_numpy(ids, key, start, count, grp, strike, shift, _BIG)


def _threaded_chunks(fn, n):
    """Uneven ranges covering [0, n), run on two threads in shuffled order (what run_chunked may do)."""
    from concurrent.futures import ThreadPoolExecutor

    cuts = sorted({0, n, *np.random.default_rng(n).integers(0, n + 1, 9).tolist()})
    ranges = list(zip(cuts[:-1], cuts[1:]))
    np.random.default_rng(1).shuffle(ranges)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: fn(*r), ranges))


def _groups(rng, n_grp):
    """Sorted keys of groups with 0-40 strikes each on a 50-wide grid (some groups empty)."""
    count = rng.integers(0, 41, n_grp)
    count[rng.random(n_grp) < 0.2] = 0
    start = np.cumsum(count) - count
    strikes = [np.sort(rng.choice(np.arange(1, 200) * 50.0, c, replace=False)) for c in count]
    g = np.repeat(np.arange(n_grp), count)
    key = g * _BIG + np.concatenate(strikes)
    ids = rng.permutation(len(key)).astype(np.int64) + 7
    return ids, key, start.astype(np.int64), count.astype(np.int64)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [20_000, 150_000])
def test_nearest_typed_equals_the_numpy_search_per_type(seed, n):
    """One pass with the option type per query equals the generator's former masked numpy search
    per type; group -1 gives -1. 150,000 queries run in uneven chunks on threads."""
    rng = np.random.default_rng(seed)
    calls, puts = _groups(rng, 30), _groups(rng, 30)
    grp = rng.integers(-1, 30, n)
    cp = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int64)
    # queries on listed strikes, exactly half-way between two (ties), and beyond both ends
    strike = np.where(rng.random(n) < 0.5, rng.integers(0, 205, n) * 50.0, rng.integers(0, 410, n) * 25.0)
    strike[rng.random(n) < 0.05] = -1e6
    shift = rng.integers(-45, 46, n)
    got = _sample.nearest_typed(cp, grp, strike, shift, calls, puts, _BIG,
                                chunks=_threaded_chunks if n > 100_000 else None)
    want = np.full(n, -1, dtype=np.int64)
    for c, side in ((1, calls), (-1, puts)):
        m = (grp >= 0) & (cp == c)
        want[m] = _nearest_numpy(*side, grp[m], strike[m], shift[m])
    np.testing.assert_array_equal(got, want)
    assert (got[grp < 0] == -1).all() and (got[grp >= 0] >= -1).all()


def test_nearest_picks_the_upper_strike_on_a_tie_and_clips_shifts():
    key = np.array([0 * _BIG + 100.0, 0 * _BIG + 200.0, 1 * _BIG + 100.0])
    ids = np.array([10, 20, 30], dtype=np.int64)
    start, count = np.array([0, 2, 3], dtype=np.int64), np.array([2, 1, 0], dtype=np.int64)
    side = (ids, key, start, count)
    grp = np.array([0, 0, 0, 0, 1, 2, -1], dtype=np.int64)
    strike = np.array([150.0, 151.0, 150.0, 150.0, 5000.0, 100.0, 100.0])
    shift = np.array([0, 0, 5, -5, 0, 0, 0], dtype=np.int64)
    for cp in (1, -1):
        got = _sample.nearest_typed(np.full(7, cp, dtype=np.int64), grp, strike, shift, side, side, _BIG)
        assert got.tolist() == [20, 20, 20, 10, 30, -1, -1]


def test_nearest_typed_refuses_groups_and_queries_outside_the_keys():
    key, ids = np.array([1.0, 2.0]), np.array([0, 1], dtype=np.int64)
    one = np.zeros(1, dtype=np.int64)
    good = (ids, key, one, one + 2)
    bad = (ids, key, np.array([1], dtype=np.int64), np.array([2], dtype=np.int64))
    with pytest.raises(ValueError, match="call group 0 lies outside"):
        _sample.nearest_typed(one + 1, one, np.ones(1), one, bad, good, _BIG)
    with pytest.raises(ValueError, match="put group 0 lies outside"):
        _sample.nearest_typed(one + 1, one, np.ones(1), one, good, bad, _BIG)
    for g in (3, -2):
        with pytest.raises(ValueError, match=f"query 0 names group {g}"):
            _sample.nearest_typed(one + 1, one + g, np.ones(1), one, good, good, _BIG)
    with pytest.raises(ValueError, match="inconsistent"):
        _sample.nearest_typed(one + 1, one, np.ones(2), one, good, good, _BIG)


@pytest.mark.parametrize("near_bias", [False, True])
def test_random_group_equals_the_numpy_expression(near_bias):
    rng = np.random.default_rng(4)
    n_und, n = 5, 10_000
    count = np.array([0, 1, 7, 30, 2], dtype=np.int64)
    start = np.cumsum(count) - count
    und = rng.integers(0, n_und, 800)
    accs = rng.integers(0, 800, n)
    r = rng.random(n)
    r[:3] = [0.0, np.nextafter(1.0, 0.0), 0.5]
    got = _sample.random_group(accs, und, r, near_bias, start, count)
    u = und[accs]
    cnt = count[u]
    x = r * r if near_bias else r
    g = start[u] + np.minimum((x * cnt).astype(np.int64), np.maximum(cnt - 1, 0))
    np.testing.assert_array_equal(got, np.where(cnt > 0, g, -1))
    for bad_accs, bad_und in ((np.array([800]), und), (np.array([-1]), und), (np.array([0]), und * 0 + 5)):
        with pytest.raises(ValueError, match="outside the accounts or underlyings"):
            _sample.random_group(bad_accs, bad_und, np.zeros(1), near_bias, start, count)


def _strip_numpy(mm, first, L, size, spot, opt, delta, cs, u, q):
    """The numpy strip code of generate_accounts before it moved to C (the reference)."""
    q = q.copy()
    n_pos = int(L.sum())
    starts = np.cumsum(L) - L
    slot = np.repeat(first - starts, L) + np.arange(n_pos, dtype=np.int64)
    ids = opt[slot]
    np.multiply(np.repeat(size * 0.02, L), q, out=q)
    np.divide(q, np.repeat(spot, L), out=q)
    np.round(q, 1, out=q)
    np.maximum(q, 0.1, out=q)
    np.negative(q, out=q, where=u < 0.5)
    w = delta[ids] * q
    w *= cs[ids]
    delta_usd = np.bincount(np.repeat(np.arange(len(mm)), L), weights=w, minlength=len(mm)) * spot
    return np.repeat(mm, L), ids, q, delta_usd


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_acc", [300, 12_000])
def test_strip_positions_equal_the_numpy_passes(seed, n_acc):
    """12,000 strips run in uneven chunks on threads (some of empty strips only): the same bits."""
    rng = np.random.default_rng(seed)
    n_opt = 500
    opt = rng.permutation(n_opt + 100)[:n_opt].astype(np.int64)
    delta = rng.uniform(-1, 1, n_opt + 100)
    cs = rng.choice([1.0, 0.1, 0.01, 10.0], n_opt + 100)
    L = rng.integers(0, 120, n_acc)
    L[:3] = [0, 1, n_opt]
    if n_acc > 10_000:
        L[n_acc // 2:] = 0
    first = (rng.random(n_acc) * (n_opt - L + 1)).astype(np.int64)
    mm = np.sort(rng.choice(10 * n_acc, n_acc, replace=False)).astype(np.int64)
    size = np.exp(rng.normal(np.log(5e4), 1.2, n_acc))
    spot = rng.choice([92_000.0, 3_100.0, 0.37], n_acc)
    p = int(L.sum())
    q = np.exp(rng.normal(0, 0.7, p))
    # quantities that land on half a lot (x.x5 coins before rounding) and below one lot
    q[: p // 10] = (rng.integers(1, 400, p // 10) + 0.5) / 10.0 * np.repeat(spot, L)[: p // 10] / (
        np.repeat(size, L)[: p // 10] * 0.02)
    u = rng.random(p)
    u[::7] = 0.5
    want = _strip_numpy(mm, first, L, size, spot, opt, delta, cs, u, q)
    got_q = q.copy()
    acc, ids, delta_usd = _sample.strip_positions(mm, first, L, size, spot, opt, delta, cs, u, got_q,
                                                  chunks=_threaded_chunks if n_acc > 10_000 else None)
    np.testing.assert_array_equal(acc, want[0])
    np.testing.assert_array_equal(ids, want[1])
    assert np.array_equal(got_q.view(np.int64), want[2].view(np.int64))
    assert np.array_equal(delta_usd.view(np.int64), want[3].view(np.int64))
    assert (np.abs(got_q) >= 0.1).all() and ((got_q < 0) == (u < 0.5)).all()


def test_strip_positions_refuse_strips_outside_the_list():
    one = np.ones(1)
    i = np.zeros(1, dtype=np.int64)
    opt = np.arange(5, dtype=np.int64)
    with pytest.raises(ValueError, match="strip 0 lies outside"):
        _sample.strip_positions(i, i + 3, i + 3, one, one, opt, np.ones(5), np.ones(5), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="hold 2 positions, q has 3"):
        _sample.strip_positions(i, i, i + 2, one, one, opt, np.ones(5), np.ones(5), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="option 4 has id 9"):
        _sample.strip_positions(i, i, i + 2, one, one, np.array([0, 1, 2, 3, 9], dtype=np.int64), np.ones(5),
                                np.ones(5), np.ones(2), np.ones(2))


@pytest.mark.parametrize(("prefix", "width", "n"), [
    ("acc-", 6, 1_001), ("", 1, 25), ("p%d-", 3, 1_234), ("könto-", 6, 12), ("x", 30, 3), ("a", 2, 0),
])
def test_format_ids_equal_percent_formatting(prefix, width, n):
    got = _sample.format_ids(prefix, width, n)
    assert got == [prefix + "%0*d" % (width, i) for i in range(n)]
    assert all(type(s) is str for s in got)


def test_format_ids_refuses_widths_outside_its_buffer():
    for width in (0, 31):
        with pytest.raises(ValueError, match="width"):
            _sample.format_ids("a", width, 3)


def _parts_rows(parts, unit, n, bounds):
    rows = _sample.PartsRows([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], unit, n)
    for a0, a1 in bounds:
        rows.scatter(a0, a1)
    return rows.indptr, rows.inst, rows.qty, rows.gross


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_rows_equal_concatenation_and_the_counting_sort(seed):
    """Parts in account order (some empty, accounts repeated within and across parts) give the rows
    of np.concatenate + a stable argsort by account, and bincount's gross notional, whatever the
    account ranges the rows are scattered by (in any order)."""
    from dpm._core import _book

    rng = np.random.default_rng(seed)
    n, m = 300, 50
    unit = rng.uniform(0.5, 2.0, m) * np.where(rng.random(m) < 0.5, 1.0, 1e-3)
    parts = []
    for _ in range(7):
        k = int(rng.integers(0, 400))
        acc = np.sort(rng.integers(0, n, k))
        parts.append((acc, rng.integers(0, m, k), rng.normal(0, 10, k)))
    parts.append((np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)))
    acc = np.concatenate([p[0] for p in parts])
    inst = np.concatenate([p[1] for p in parts])
    qty = np.concatenate([p[2] for p in parts])
    cuts = np.sort(rng.choice(np.arange(1, n), 5, replace=False)).tolist()
    ranges = list(zip([0] + cuts, cuts + [n]))
    rng.shuffle(ranges)
    indptr, ri, rq, gross = _parts_rows(parts, unit, n, ranges)
    order = np.argsort(acc, kind="stable")
    assert np.array_equal(indptr, np.concatenate([[0], np.cumsum(np.bincount(acc, minlength=n))]))
    assert np.array_equal(ri, inst[order]) and np.array_equal(rq, qty[order])
    assert np.array_equal(gross, np.bincount(acc, weights=np.abs(unit[inst] * qty), minlength=n))
    # the book's own counting sort gives the same rows; one range gives the same as many
    ip2, i2, q2 = np.empty(n + 1, np.int64), np.empty(len(acc), np.int64), np.empty(len(acc))
    _book.count_scatter(acc, inst, qty, False, ip2, i2, q2)
    assert np.array_equal(ip2, indptr) and np.array_equal(i2, ri) and np.array_equal(q2, rq)
    one = _parts_rows(parts, unit, n, [(0, n)])
    assert all(np.array_equal(x, y) for x, y in zip(one, (indptr, ri, rq, gross)))


def test_parts_rows_refuse_positions_outside_the_accounts_the_table_or_account_order():
    unit = np.ones(4)
    good = (np.array([0, 1]), np.array([0, 3]), np.array([1.0, 2.0]))
    for bad, pos in (((np.array([0, 5]), np.array([0, 1]), np.array([1.0, 1.0])), 3),
                     ((np.array([-1, 0]), np.array([0, 1]), np.array([1.0, 1.0])), 2),
                     ((np.array([0, 1]), np.array([0, 4]), np.array([1.0, 1.0])), 3),
                     ((np.array([1, 0]), np.array([0, 1]), np.array([1.0, 1.0])), 3)):
        with pytest.raises(ValueError, match=f"position {pos} points outside"):
            _sample.PartsRows([good[0], bad[0]], [good[1], bad[1]], [good[2], bad[2]], unit, 3)
    with pytest.raises(ValueError, match="different lengths"):
        _sample.PartsRows([np.array([0, 1])], [np.array([0])], [np.array([1.0, 1.0])], unit, 3)
    with pytest.raises(ValueError, match="inconsistent parts"):
        _sample.PartsRows([np.array([0])], [], [], unit, 3)
    rows = _sample.PartsRows([good[0]], [good[1]], [good[2]], unit, 3)
    for a0, a1 in ((-1, 2), (0, 4), (2, 1)):
        with pytest.raises(ValueError, match="is not inside"):
            rows.scatter(a0, a1)
