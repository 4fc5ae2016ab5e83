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


def _one_chunk(fn, Py_ssize_t n):
    fn(0, n)

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
    static inline int64_t dpm_nearest_one(int64_t g, double strike, int64_t shift, const int64_t *ids,
                                          const double *key, Py_ssize_t n_key, const int64_t *start,
                                          const int64_t *count, double big)
    {
        if (count[g] <= 0) return -1;
        const double x = (double)g * big + strike;
        Py_ssize_t lo = 0, hi = n_key;  /* first key >= x */
        while (lo < hi) {
            const Py_ssize_t mid = lo + (hi - lo) / 2;
            if (key[mid] < x) lo = mid + 1; else hi = mid;
        }
        const int64_t a = start[g], b = start[g] + count[g] - 1;
        int64_t pos = lo < a ? a : (lo > b ? b : lo);
        const int64_t below = pos - 1 < a ? a : (pos - 1 > b ? b : pos - 1);
        if (fabs(key[below] - x) < fabs(key[pos] - x)) pos = below;
        pos += shift;
        return ids[pos < a ? a : (pos > b ? b : pos)];
    }

    /* Nearest listed strike (see dpm_nearest_one) with the option type per query: calls (cp[k] > 0) in the side c_*, puts in p_*;
     * a query of group -1 gets -1. What the generator did with one masked call per type. */
    static void dpm_nearest_typed(Py_ssize_t n, const int64_t *cp, const int64_t *grp, const double *strike,
                                  const int64_t *shift, const int64_t *c_ids, const double *c_key, Py_ssize_t c_n,
                                  const int64_t *c_start, const int64_t *c_count, const int64_t *p_ids,
                                  const double *p_key, Py_ssize_t p_n, const int64_t *p_start,
                                  const int64_t *p_count, double big, int64_t *out)
    {
        for (Py_ssize_t k = 0; k < n; k++) {
            if (grp[k] < 0) out[k] = -1;
            else if (cp[k] > 0)
                out[k] = dpm_nearest_one(grp[k], strike[k], shift[k], c_ids, c_key, c_n, c_start, c_count, big);
            else
                out[k] = dpm_nearest_one(grp[k], strike[k], shift[k], p_ids, p_key, p_n, p_start, p_count, big);
        }
    }

    /* A random option group (expiry) of each account's underlying: r[k] uniform in [0, 1) (squared
     * when near_bias: nearer expiries trade more) scaled to the underlying's groups, -1 when it has
     * none. The generator's numpy expression, operation by operation. */
    static void dpm_random_group(Py_ssize_t n, const int64_t *accs, const int64_t *und, const double *r,
                                 int near_bias, const int64_t *start, const int64_t *count, int64_t *out)
    {
        for (Py_ssize_t k = 0; k < n; k++) {
            const int64_t u = und[accs[k]], c = count[u];
            const double x = near_bias ? r[k] * r[k] : r[k];
            int64_t j = (int64_t)(x * (double)c);
            const int64_t lim = c - 1 > 0 ? c - 1 : 0;
            j = j < lim ? j : lim;
            out[k] = c > 0 ? start[u] + j : -1;
        }
    }

    /* The generator's positions come in parts (one per archetype and leg), each in account order.
     * Their concatenation, stably sorted by account (np.concatenate, then the book's counting sort),
     * is written straight into rows: dpm_parts_count makes indptr from the counts, dpm_parts_scatter
     * writes the rows of accounts [a0, a1): from every part in order, the slice of those accounts
     * (found by bisection: each part is in account order). Rows of disjoint account ranges are
     * disjoint, so ranges run on threads. The gross notional per account, sum of
     * |unit[inst] * qty|, is summed in the concatenation's order (np.bincount's over it). */
    static Py_ssize_t dpm_parts_count(Py_ssize_t n_parts, const int64_t *const *acc, const int64_t *const *inst,
                                      const Py_ssize_t *len, Py_ssize_t n, Py_ssize_t m, int64_t *indptr)
    {
        /* -1, or the first position (counted over the concatenation) outside the accounts or the
         * table, or out of account order within its part */
        Py_ssize_t base = 0;
        for (Py_ssize_t a = 0; a <= n; a++) indptr[a] = 0;
        for (Py_ssize_t t = 0; t < n_parts; t++) {
            int64_t prev = 0;
            for (Py_ssize_t k = 0; k < len[t]; k++) {
                const int64_t a = acc[t][k], i = inst[t][k];
                if (a < prev || a >= n || i < 0 || i >= m) return base + k;
                prev = a;
                indptr[a + 1]++;
            }
            base += len[t];
        }
        for (Py_ssize_t a = 0; a < n; a++) indptr[a + 1] += indptr[a];
        return -1;
    }

    static Py_ssize_t dpm_lower_bound(const int64_t *x, Py_ssize_t n, int64_t v)
    {
        Py_ssize_t lo = 0, hi = n;
        while (lo < hi) {
            const Py_ssize_t mid = lo + (hi - lo) / 2;
            if (x[mid] < v) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    static void dpm_parts_scatter(Py_ssize_t n_parts, const int64_t *const *acc, const int64_t *const *inst,
                                  const double *const *qty, const Py_ssize_t *len, const double *unit,
                                  const int64_t *indptr, Py_ssize_t a0, Py_ssize_t a1, int64_t *cursor,
                                  int64_t *inst_out, double *qty_out, double *gross)
    {
        for (Py_ssize_t a = a0; a < a1; a++) {
            cursor[a] = indptr[a];
            gross[a] = 0.0;
        }
        for (Py_ssize_t t = 0; t < n_parts; t++) {
            const int64_t *ap = acc[t], *ip = inst[t];
            const double *qp = qty[t];
            const Py_ssize_t k0 = dpm_lower_bound(ap, len[t], a0), k1 = dpm_lower_bound(ap, len[t], a1);
            for (Py_ssize_t k = k0; k < k1; k++) {
                const int64_t a = ap[k], i = ip[k];
                const double q = qp[k];
                const int64_t dst = cursor[a]++;
                inst_out[dst] = i;
                qty_out[dst] = q;
                gross[a] = gross[a] + fabs(unit[i] * q);
            }
        }
    }
    """
    Py_ssize_t dpm_parts_count(Py_ssize_t n_parts, const int64_t *const *acc, const int64_t *const *inst,
                               const Py_ssize_t *len, Py_ssize_t n, Py_ssize_t m, int64_t *indptr) noexcept nogil
    void dpm_parts_scatter(Py_ssize_t n_parts, const int64_t *const *acc, const int64_t *const *inst,
                           const double *const *qty, const Py_ssize_t *len, const double *unit,
                           const int64_t *indptr, Py_ssize_t a0, Py_ssize_t a1, int64_t *cursor,
                           int64_t *inst_out, double *qty_out, double *gross) noexcept nogil
    void dpm_strip_positions(Py_ssize_t n_acc, const int64_t *mm, const int64_t *first, const int64_t *L,
                             const double *size, const double *spot, const int64_t *opt, const double *delta,
                             const double *cs, const double *u, double *q, int64_t *acc_out, int64_t *ids_out,
                             double *delta_usd) noexcept nogil
    void dpm_nearest_typed(Py_ssize_t n, const int64_t *cp, const int64_t *grp, const double *strike,
                           const int64_t *shift, const int64_t *c_ids, const double *c_key, Py_ssize_t c_n,
                           const int64_t *c_start, const int64_t *c_count, const int64_t *p_ids,
                           const double *p_key, Py_ssize_t p_n, const int64_t *p_start,
                           const int64_t *p_count, double big, int64_t *out) noexcept nogil
    void dpm_random_group(Py_ssize_t n, const int64_t *accs, const int64_t *und, const double *r,
                          int near_bias, const int64_t *start, const int64_t *count, int64_t *out) noexcept nogil


def strip_positions(const int64_t[::1] mm, const int64_t[::1] first, const int64_t[::1] L, const double[::1] size,
                    const double[::1] spot, const int64_t[::1] opt, const double[::1] delta, const double[::1] cs,
                    const double[::1] u, double[::1] q, chunks=None):
    """Market-maker strips: account ``mm[j]`` holds ``opt[first[j]:first[j] + L[j]]``; ``q`` (the
    exp(normal) draws, one per position) becomes the signed quantities. Returns (account per
    position, instrument per position, each strip's rough delta in USD). ``chunks(fn, n)``, if
    given, calls ``fn(j0, j1)`` over ranges covering the strips (on threads: each strip is
    computed on its own, so any ranges give the same bits); by default one range."""
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
    koff = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(L, out=koff[1:])
    cdef int64_t[::1] kv = koff
    cdef const int64_t *op = &opt[0] if opt.shape[0] else NULL
    cdef const double *dp = &delta[0] if delta.shape[0] else NULL
    cdef const double *cp = &cs[0] if cs.shape[0] else NULL

    def strips(Py_ssize_t j0, Py_ssize_t j1):
        # strips [j0, j1) own positions [koff[j0], koff[j1]): ranges are disjoint, any threads give the same bits
        cdef Py_ssize_t k0 = kv[j0]
        if k0 == kv[j1]:  # empty strips only: no position to point at
            for jj in range(j0, j1):
                dv[jj] = 0.0 * spot[jj]
            return
        with nogil:
            dpm_strip_positions(j1 - j0, &mm[j0], &first[j0], &L[j0], &size[j0], &spot[j0], op, dp, cp,
                                &u[k0], &q[k0], &av[k0], &iv[k0], &dv[j0])

    (_one_chunk if chunks is None else chunks)(strips, n)
    return acc, ids, delta_usd


cdef _check_side(str name, const int64_t[::1] ids, const double[::1] key, const int64_t[::1] start,
                 const int64_t[::1] count):
    """What protects memory in a side's search: its groups inside its keys."""
    cdef Py_ssize_t k
    if start.shape[0] != count.shape[0] or ids.shape[0] != key.shape[0]:
        raise ValueError(f"nearest_typed: inconsistent {name} arrays")
    for k in range(count.shape[0]):
        if count[k] > 0 and (start[k] < 0 or start[k] + count[k] > key.shape[0]):
            raise ValueError(f"nearest_typed: {name} group {k} lies outside the keys")


def nearest_typed(const int64_t[::1] cp, const int64_t[::1] grp, const double[::1] strike,
                  const int64_t[::1] shift, tuple calls, tuple puts, double big, chunks=None):
    """Id of the listed strike nearest ``strike[k]`` in group ``grp[k]`` among the options of type
    ``cp[k]`` (> 0: the side ``calls``, else ``puts``; each ``(ids, key, start, count)``), moved
    ``shift[k]`` strikes (clipped to the group), or -1 when the group has none or is -1 (see
    ``_Universe.nearest_typed``): the generator's former masked searches per type in one pass.
    ``chunks`` as in ``strip_positions`` (over the queries)."""
    cdef Py_ssize_t n = grp.shape[0], k
    cdef const int64_t[::1] c_ids = calls[0]
    cdef const double[::1] c_key = calls[1]
    cdef const int64_t[::1] c_start = calls[2]
    cdef const int64_t[::1] c_count = calls[3]
    cdef const int64_t[::1] p_ids = puts[0]
    cdef const double[::1] p_key = puts[1]
    cdef const int64_t[::1] p_start = puts[2]
    cdef const int64_t[::1] p_count = puts[3]
    if cp.shape[0] != n or strike.shape[0] != n or shift.shape[0] != n or c_count.shape[0] != p_count.shape[0]:
        raise ValueError("nearest_typed: inconsistent array lengths")
    _check_side("call", c_ids, c_key, c_start, c_count)
    _check_side("put", p_ids, p_key, p_start, p_count)
    cdef Py_ssize_t g = c_count.shape[0]
    for k in range(n):
        if grp[k] < -1 or grp[k] >= g:
            raise ValueError(f"nearest_typed: query {k} names group {grp[k]} outside the table")
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] ov = out
    if n == 0:
        return out
    cdef const int64_t *ci = &c_ids[0] if c_ids.shape[0] else NULL
    cdef const double *ck = &c_key[0] if c_key.shape[0] else NULL
    cdef const int64_t *cs0 = &c_start[0] if g else NULL
    cdef const int64_t *cc = &c_count[0] if g else NULL
    cdef const int64_t *pi = &p_ids[0] if p_ids.shape[0] else NULL
    cdef const double *pk = &p_key[0] if p_key.shape[0] else NULL
    cdef const int64_t *ps0 = &p_start[0] if g else NULL
    cdef const int64_t *pc = &p_count[0] if g else NULL
    cdef Py_ssize_t cn = c_key.shape[0], pn = p_key.shape[0]

    def queries(Py_ssize_t k0, Py_ssize_t k1):
        with nogil:  # each query on its own: chunks on threads give the same ids
            dpm_nearest_typed(k1 - k0, &cp[k0], &grp[k0], &strike[k0], &shift[k0], ci, ck, cn, cs0, cc,
                              pi, pk, pn, ps0, pc, big, &ov[k0])

    (_one_chunk if chunks is None else chunks)(queries, n)
    return out


def random_group(const int64_t[::1] accs, const int64_t[::1] und, const double[::1] r, bint near_bias,
                 const int64_t[::1] start, const int64_t[::1] count):
    """Group of each account ``accs[k]``: ``start[u] + min(int(x * count[u]), max(count[u] - 1, 0))``
    with ``u = und[accs[k]]`` and ``x = r[k]`` (``r[k]**2`` with ``near_bias``), -1 when
    ``count[u] == 0``."""
    cdef Py_ssize_t n = accs.shape[0], k
    if r.shape[0] != n or start.shape[0] != count.shape[0]:
        raise ValueError("random_group: inconsistent array lengths")
    for k in range(n):  # what protects memory
        if accs[k] < 0 or accs[k] >= und.shape[0] or und[accs[k]] < 0 or und[accs[k]] >= count.shape[0]:
            raise ValueError(f"random_group: account {accs[k]} (query {k}) is outside the accounts or underlyings")
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] ov = out
    if n == 0:
        return out
    with nogil:
        dpm_random_group(n, &accs[0], &und[0], &r[0], near_bias, &start[0], &count[0], &ov[0])
    return out


cdef class PartsRows:
    """The generator's position parts (each in account order) as rows of ``n`` accounts.

    ``PartsRows(acc_parts, inst_parts, qty_parts, unit, n)`` checks the parts (ids inside the
    accounts and the table, account order within each part) and counts the rows (``indptr``);
    ``scatter(a0, a1)`` writes the rows of accounts ``[a0, a1)`` (GIL released: disjoint ranges may
    run on threads) into ``inst`` and ``qty``, in the order of the parts' concatenation, and their
    gross notional into ``gross`` (``np.bincount(acc, weights=abs(unit[inst] * qty))`` of the
    concatenation, same order). Together: ``np.concatenate`` and the book's stable counting sort,
    without the concatenated arrays.
    """
    cdef Py_ssize_t n_parts, n, m, p
    cdef object keep, ptrs, unit_ref, cursor
    cdef const int64_t **acc_p
    cdef const int64_t **inst_p
    cdef const double **qty_p
    cdef Py_ssize_t *len_p
    cdef const double *unit_p
    cdef int64_t *indptr_p
    cdef int64_t *cursor_p
    cdef int64_t *inst_out_p
    cdef double *qty_out_p
    cdef double *gross_p
    cdef readonly object indptr, inst, qty, gross

    def __cinit__(self, list acc_parts, list inst_parts, list qty_parts, const double[::1] unit, Py_ssize_t n):
        cdef Py_ssize_t t, bad
        cdef const int64_t[::1] av
        cdef const int64_t[::1] iv
        cdef const double[::1] qv
        self.n_parts = len(acc_parts)
        if len(inst_parts) != self.n_parts or len(qty_parts) != self.n_parts or n < 0:
            raise ValueError("PartsRows: inconsistent parts")
        self.n, self.m, self.p = n, unit.shape[0], 0
        self.keep = []  # the parts stay referenced while C reads them
        k = max(self.n_parts, 1)
        self.ptrs = (np.zeros(k, dtype=np.uintp), np.zeros(k, dtype=np.uintp), np.zeros(k, dtype=np.uintp),
                     np.zeros(k, dtype=np.intp))
        cdef size_t[::1] pa = self.ptrs[0], pi = self.ptrs[1], pq = self.ptrs[2]
        cdef Py_ssize_t[::1] pl = self.ptrs[3]
        for t in range(self.n_parts):
            av = acc_parts[t]
            iv = inst_parts[t]
            qv = qty_parts[t]
            if iv.shape[0] != av.shape[0] or qv.shape[0] != av.shape[0]:
                raise ValueError(f"PartsRows: part {t} has arrays of different lengths")
            self.keep.append((av, iv, qv))
            pl[t] = av.shape[0]
            self.p += av.shape[0]
            if av.shape[0]:
                pa[t] = <size_t> &av[0]
                pi[t] = <size_t> &iv[0]
                pq[t] = <size_t> &qv[0]
        self.acc_p = <const int64_t **> &pa[0]
        self.inst_p = <const int64_t **> &pi[0]
        self.qty_p = <const double **> &pq[0]
        self.len_p = &pl[0]
        self.unit_ref = unit
        self.unit_p = &unit[0] if self.m else NULL
        self.indptr = np.empty(n + 1, dtype=np.int64)
        self.cursor = np.empty(max(n, 1), dtype=np.int64)
        self.inst = np.empty(self.p, dtype=np.int64)
        self.qty = np.empty(self.p, dtype=np.float64)
        self.gross = np.empty(n)
        cdef int64_t[::1] ipv = self.indptr, cv = self.cursor, iov = self.inst
        cdef double[::1] qov = self.qty, gv = self.gross
        self.indptr_p = &ipv[0]
        self.cursor_p = &cv[0]
        self.inst_out_p = &iov[0] if self.p else NULL
        self.qty_out_p = &qov[0] if self.p else NULL
        self.gross_p = &gv[0] if n else NULL
        with nogil:  # every check runs before anything is scattered
            bad = dpm_parts_count(self.n_parts, <const int64_t *const *> self.acc_p,
                                  <const int64_t *const *> self.inst_p, self.len_p, n, self.m, self.indptr_p)
        if bad >= 0:
            raise ValueError(f"PartsRows: position {bad} points outside the accounts or the table, "
                             "or is out of account order in its part")

    def scatter(self, Py_ssize_t a0, Py_ssize_t a1):
        """Write the rows and the gross notional of accounts ``[a0, a1)``."""
        if a0 < 0 or a1 > self.n or a0 > a1:
            raise ValueError(f"PartsRows.scatter: [{a0}, {a1}) is not inside [0, {self.n}]")
        if a0 == a1:
            return
        with nogil:
            dpm_parts_scatter(self.n_parts, <const int64_t *const *> self.acc_p,
                              <const int64_t *const *> self.inst_p, <const double *const *> self.qty_p,
                              self.len_p, self.unit_p, self.indptr_p, a0, a1, self.cursor_p,
                              self.inst_out_p, self.qty_out_p, self.gross_p)


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
