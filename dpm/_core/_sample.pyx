# cython: language_level=3
"""Passes of the sample-account generator (``dpm.portfolio.sample``) over its millions of positions,
one C pass each instead of a chain of numpy passes with temporaries.

The generator's books are fixed by its random stream (tests compare them with the unoptimised
version account by account), so these passes take the random draws as arrays and compute exactly
what the numpy expressions computed, operation by operation in the same order: no multiply-add is
fused, ``np.round(x, 1)`` is ``rint(x * 10) / 10`` as in numpy, and sums run in input order as in
``np.bincount``.

``dpm.portfolio.sample`` builds and checks the arrays; these functions check only what protects
memory (lengths and index ranges) and release the GIL.
"""
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t

import numpy as np

cdef extern from *:
    """
    #include <math.h>

    /* Market-maker strips: account j (id mm[j]) holds the L[j] options opt[first[j] .. first[j]+L[j]-1]
     * with the quantity (lots of 0.1 coin, at least one lot)
     *     round(size[j] * 0.02 * q[k] / spot[j], 1), negated when u[k] < 0.5,
     * where q holds exp(N(0, 0.7)) draws in, the quantities out; and the strip's rough delta in USD,
     *     (sum over its positions, in order, of (delta[id] * qty) * cs[id]) * spot[j].
     * Each product and quotient is rounded on its own, as numpy computes them. */
    #if defined(__GNUC__) && !defined(__clang__)
    __attribute__((optimize("fp-contract=off")))
    #endif
    static void dpm_strip_positions(Py_ssize_t n_acc, const int64_t *mm, const int64_t *first, const int64_t *L,
                                    const double *size, const double *spot, const int64_t *opt,
                                    const double *delta, const double *cs, const double *u, double *q,
                                    int64_t *acc_out, int64_t *ids_out, double *delta_usd)
    {
        Py_ssize_t k = 0;
        for (Py_ssize_t j = 0; j < n_acc; j++) {
            const double lot_usd = size[j] * 0.02, s = spot[j];
            double sum = 0.0;
            for (int64_t i = 0; i < L[j]; i++, k++) {
                const int64_t id = opt[first[j] + i];
                double v = lot_usd * q[k];
                v = v / s;
                v = rint(v * 10.0) / 10.0;
                if (v < 0.1) v = 0.1;
                if (u[k] < 0.5) v = -v;
                q[k] = v;
                acc_out[k] = mm[j];
                ids_out[k] = id;
                const double w = delta[id] * v;
                sum = sum + w * cs[id];
            }
            delta_usd[j] = sum * s;
        }
    }

    /* Nearest listed strike: in the sorted keys group * 1e12 + strike (the generator's _Universe),
     * the key nearest grp[k] * 1e12 + strike[k] (the upper one on a tie) within the group's slice
     * [start, start + count), moved shift[k] places and clipped to the slice; its id, or -1 when the
     * group has no option of this type. np.searchsorted's left side, then np.clip, as the numpy code. */
    static void dpm_nearest(Py_ssize_t n, const int64_t *grp, const double *strike, const int64_t *shift,
                            const int64_t *ids, const double *key, Py_ssize_t n_key, const int64_t *start,
                            const int64_t *count, double big, int64_t *out)
    {
        for (Py_ssize_t k = 0; k < n; k++) {
            const int64_t g = grp[k];
            if (count[g] <= 0) { out[k] = -1; continue; }
            const double x = (double)g * big + strike[k];
            Py_ssize_t lo = 0, hi = n_key;  /* first key >= x */
            while (lo < hi) {
                const Py_ssize_t mid = lo + (hi - lo) / 2;
                if (key[mid] < x) lo = mid + 1; else hi = mid;
            }
            const int64_t a = start[g], b = start[g] + count[g] - 1;
            int64_t pos = lo < a ? a : (lo > b ? b : lo);
            const int64_t below = pos - 1 < a ? a : (pos - 1 > b ? b : pos - 1);
            if (fabs(key[below] - x) < fabs(key[pos] - x)) pos = below;
            pos += shift[k];
            out[k] = ids[pos < a ? a : (pos > b ? b : pos)];
        }
    }

    /* The generator's positions come in parts (one per archetype and leg), each in account order.
     * Their concatenation, stably sorted by account (np.concatenate then the book's counting sort),
     * written straight into rows: indptr from the counts, then every part scattered in order. The
     * gross notional per account, sum of |unit[inst] * qty|, is summed in the same pass in the
     * concatenation's order (np.bincount's over it). Returns -1, or the first position (counted over
     * the concatenation) pointing outside the n accounts or the m instruments. */
    static Py_ssize_t dpm_parts_to_rows(Py_ssize_t n_parts, const int64_t *const *acc, const int64_t *const *inst,
                                        const double *const *qty, const Py_ssize_t *len, const double *unit,
                                        Py_ssize_t n, Py_ssize_t m, int64_t *indptr, int64_t *cursor,
                                        int64_t *inst_out, double *qty_out, double *gross)
    {
        Py_ssize_t base = 0;
        for (Py_ssize_t a = 0; a <= n; a++) indptr[a] = 0;
        for (Py_ssize_t t = 0; t < n_parts; t++) {
            for (Py_ssize_t k = 0; k < len[t]; k++) {
                const int64_t a = acc[t][k], i = inst[t][k];
                if (a < 0 || a >= n || i < 0 || i >= m) return base + k;
                indptr[a + 1]++;
            }
            base += len[t];
        }
        for (Py_ssize_t a = 0; a < n; a++) {
            indptr[a + 1] += indptr[a];
            cursor[a] = indptr[a];
        }
        for (Py_ssize_t t = 0; t < n_parts; t++) {
            const int64_t *ap = acc[t], *ip = inst[t];
            const double *qp = qty[t];
            for (Py_ssize_t k = 0; k < len[t]; k++) {
                const int64_t a = ap[k], i = ip[k];
                const double q = qp[k];
                const int64_t dst = cursor[a]++;
                inst_out[dst] = i;
                qty_out[dst] = q;
                gross[a] = gross[a] + fabs(unit[i] * q);
            }
        }
        return -1;
    }
    """
    Py_ssize_t dpm_parts_to_rows(Py_ssize_t n_parts, const int64_t *const *acc, const int64_t *const *inst,
                                 const double *const *qty, const Py_ssize_t *len, const double *unit,
                                 Py_ssize_t n, Py_ssize_t m, int64_t *indptr, int64_t *cursor,
                                 int64_t *inst_out, double *qty_out, double *gross) noexcept nogil
    void dpm_strip_positions(Py_ssize_t n_acc, const int64_t *mm, const int64_t *first, const int64_t *L,
                             const double *size, const double *spot, const int64_t *opt, const double *delta,
                             const double *cs, const double *u, double *q, int64_t *acc_out, int64_t *ids_out,
                             double *delta_usd) noexcept nogil
    void dpm_nearest(Py_ssize_t n, const int64_t *grp, const double *strike, const int64_t *shift,
                     const int64_t *ids, const double *key, Py_ssize_t n_key, const int64_t *start,
                     const int64_t *count, double big, int64_t *out) noexcept nogil


def strip_positions(const int64_t[::1] mm, const int64_t[::1] first, const int64_t[::1] L, const double[::1] size,
                    const double[::1] spot, const int64_t[::1] opt, const double[::1] delta, const double[::1] cs,
                    const double[::1] u, double[::1] q):
    """Market-maker strips: account ``mm[j]`` holds ``opt[first[j]:first[j] + L[j]]``; ``q`` (the
    exp(normal) draws, one per position) becomes the signed quantities. Returns (account per
    position, instrument per position, each strip's rough delta in USD)."""
    cdef Py_ssize_t n = mm.shape[0], p = q.shape[0], j, total = 0
    if not (first.shape[0] == n and L.shape[0] == n and size.shape[0] == n and spot.shape[0] == n
            and u.shape[0] == p and cs.shape[0] == delta.shape[0]):
        raise ValueError("strip_positions: inconsistent array lengths")
    for j in range(n):  # what protects memory
        if L[j] < 0 or first[j] < 0 or first[j] + L[j] > opt.shape[0]:
            raise ValueError(f"strip_positions: strip {j} lies outside the option list")
        total += L[j]
    if total != p:
        raise ValueError(f"strip_positions: the strips hold {total} positions, q has {p}")
    for j in range(opt.shape[0]):
        if opt[j] < 0 or opt[j] >= delta.shape[0]:
            raise ValueError(f"strip_positions: option {j} has id {opt[j]} outside the table")
    acc = np.empty(p, dtype=np.int64)
    ids = np.empty(p, dtype=np.int64)
    delta_usd = np.empty(n)
    cdef int64_t[::1] av = acc, iv = ids
    cdef double[::1] dv = delta_usd
    if n == 0:
        return acc, ids, delta_usd
    with nogil:
        dpm_strip_positions(n, &mm[0], &first[0], &L[0], &size[0], &spot[0], &opt[0] if opt.shape[0] else NULL,
                            &delta[0] if delta.shape[0] else NULL, &cs[0] if cs.shape[0] else NULL,
                            &u[0] if p else NULL, &q[0] if p else NULL, &av[0] if p else NULL,
                            &iv[0] if p else NULL, &dv[0])
    return acc, ids, delta_usd


def nearest(const int64_t[::1] grp, const double[::1] strike, const int64_t[::1] shift, const int64_t[::1] ids,
            const double[::1] key, const int64_t[::1] start, const int64_t[::1] count, double big):
    """Id of the listed strike nearest ``strike[k]`` in group ``grp[k]``, moved ``shift[k]`` strikes
    (clipped to the group), or -1 when the group has none (see ``_Universe.nearest``)."""
    cdef Py_ssize_t n = grp.shape[0], g = count.shape[0], k
    if strike.shape[0] != n or shift.shape[0] != n or start.shape[0] != g or ids.shape[0] != key.shape[0]:
        raise ValueError("nearest: inconsistent array lengths")
    for k in range(g):  # what protects memory
        if count[k] > 0 and (start[k] < 0 or start[k] + count[k] > key.shape[0]):
            raise ValueError(f"nearest: group {k} lies outside the keys")
    for k in range(n):
        if grp[k] < 0 or grp[k] >= g:
            raise ValueError(f"nearest: query {k} names group {grp[k]} outside the table")
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] ov = out
    if n == 0:
        return out
    with nogil:
        dpm_nearest(n, &grp[0], &strike[0], &shift[0], &ids[0] if ids.shape[0] else NULL,
                    &key[0] if key.shape[0] else NULL, key.shape[0], &start[0], &count[0], big, &ov[0])
    return out


def parts_to_rows(list acc_parts, list inst_parts, list qty_parts, const double[::1] unit, Py_ssize_t n):
    """``(indptr, inst, qty, gross)``: the parts' positions (each part in account order) in rows
    of ``n`` accounts, in concatenation order within a row, and the gross notional per account
    (``np.bincount(acc, weights=abs(unit[inst] * qty))`` of the concatenation, same order): ``np.concatenate`` and the book's counting sort in
    one pass, without the concatenated arrays."""
    cdef Py_ssize_t n_parts = len(acc_parts), t, p = 0, bad
    if len(inst_parts) != n_parts or len(qty_parts) != n_parts or n < 0:
        raise ValueError("parts_to_rows: inconsistent parts")
    cdef const int64_t[::1] av
    cdef const int64_t[::1] iv
    cdef const double[::1] qv
    keep = []  # the parts stay referenced while C reads them
    ptr_a = np.zeros(max(n_parts, 1), dtype=np.uintp)
    ptr_i = np.zeros(max(n_parts, 1), dtype=np.uintp)
    ptr_q = np.zeros(max(n_parts, 1), dtype=np.uintp)
    lens = np.zeros(max(n_parts, 1), dtype=np.intp)
    cdef size_t[::1] pa = ptr_a, pi = ptr_i, pq = ptr_q
    cdef Py_ssize_t[::1] pl = lens
    for t in range(n_parts):
        av = acc_parts[t]
        iv = inst_parts[t]
        qv = qty_parts[t]
        if iv.shape[0] != av.shape[0] or qv.shape[0] != av.shape[0]:
            raise ValueError(f"parts_to_rows: part {t} has arrays of different lengths")
        keep.append((av, iv, qv))
        pl[t] = av.shape[0]
        p += av.shape[0]
        if av.shape[0]:
            pa[t] = <size_t> &av[0]
            pi[t] = <size_t> &iv[0]
            pq[t] = <size_t> &qv[0]
    indptr = np.empty(n + 1, dtype=np.int64)
    cursor = np.empty(max(n, 1), dtype=np.int64)
    inst_out = np.empty(p, dtype=np.int64)
    qty_out = np.empty(p, dtype=np.float64)
    gross = np.zeros(n)
    cdef int64_t[::1] ipv = indptr, cv = cursor, iov = inst_out
    cdef double[::1] qov = qty_out, gv = gross
    cdef Py_ssize_t m = unit.shape[0]
    with nogil:  # the bounds are checked in the counting pass, before anything is written
        bad = dpm_parts_to_rows(n_parts, <const int64_t *const *> &pa[0], <const int64_t *const *> &pi[0],
                                <const double *const *> &pq[0], &pl[0], &unit[0] if m else NULL, n, m,
                                &ipv[0], &cv[0], &iov[0] if p else NULL, &qov[0] if p else NULL,
                                &gv[0] if n else NULL)
    if bad >= 0:
        raise ValueError(f"parts_to_rows: position {bad} points outside the accounts or the table")
    return indptr, inst_out, qty_out, gross


def format_ids(str prefix, Py_ssize_t width, Py_ssize_t n):
    """``[prefix + "%0*d" % (width, i) for i in range(n)]``, built in C (100,000 ids in a few ms)."""
    cdef bytes head = prefix.encode("utf-8")
    cdef Py_ssize_t h = len(head), i, d, v, m
    if width < 1 or width > 30 or n < 0:
        raise ValueError("format_ids: width must be 1-30 and n >= 0")
    buf = bytearray(head + b"0" * 32)
    cdef unsigned char[::1] b = buf
    cdef char *cb = <char *> &b[0]
    cdef list out = []
    for i in range(n):
        v = i
        m = 0
        while v > 0 or m < width:  # digits right to left, zero-padded to width
            m += 1
            v //= 10
        v = i
        for d in range(m):
            b[h + m - 1 - d] = 48 + v % 10
            v //= 10
        out.append(PyUnicode_DecodeUTF8(cb, h + m, NULL))
    return out
