# cython: language_level=3
"""Per-account passes of the live book's tick (``dpm.live.book``): the collateral value of balance
rows, the variation margin of futures positions, the finiteness check and scatter of the margin
kernel's rows, and the alert-level state machine, one C pass each instead of five to ten numpy
passes with temporaries (about 16 ms of a 100,000-account tick on a 2-vCPU Zen 3 host).

``dpm.live`` owns and validates the arrays; these functions check only what protects memory
(lengths, contiguity) and release the GIL.
"""
from libc.stdint cimport int8_t, int64_t, uint8_t
from libc.math cimport isfinite
from libc.string cimport memcpy  # noqa: F401 - the C compaction copy

import numpy as np

cdef extern from *:
    """
    /* Each product and each sum rounded on its own, as numpy and Python compute them (the live
     * book's per-account path, LiveBook._collateral_one, is plain Python): GCC would otherwise fuse
     * `acc + b * rate` into one multiply-add and change the last bit. Clang fuses only within one
     * expression, which the two statements below avoid. */
    #if defined(__GNUC__) && !defined(__clang__)
    __attribute__((optimize("fp-contract=off")))
    #endif
    static void dpm_collateral_rows(const double *bal, Py_ssize_t n, Py_ssize_t C, const double *factor,
                                    double *out)
    {
        /* factor[2c]: price (debts, and NaN), factor[2c + 1]: haircut rate (holdings). The factor is
         * picked by an index, not a branch: signs of balances are unpredictable and the branch
         * mispredicted about every other currency (2 ms for 100,000 accounts of 4 currencies with
         * random signs, 0.2 ms when all are positive) */
        for (Py_ssize_t i = 0; i < n; i++) {
            double acc = 0.0;
            for (Py_ssize_t c = 0; c < C; c++) {
                const double b = bal[i * C + c];
                acc = acc + b * factor[2 * c + (b > 0.0)];
            }
            out[i] = acc;
        }
    }

    /* Variation margin of futures and perpetual positions at a tick: for each position k (grouped by
     * account, in CSR order) whose instrument moved and whose account is clean, q * dF[inst] summed
     * per (account, settlement currency) from 0 in position order, then added to the balance once
     * (np.bincount's order, so the same bits as the numpy path of the dirty accounts). Returns -1,
     * or the first position whose settlement currency is out of range (nothing is changed then). */
    #if defined(__GNUC__) && !defined(__clang__)
    __attribute__((optimize("fp-contract=off")))
    #endif
    static Py_ssize_t dpm_settle_futures(const int64_t *pos, const int64_t *acc, const int64_t *inst,
                                         Py_ssize_t n, const double *qty, const unsigned char *moved,
                                         const unsigned char *dirty, const int64_t *ccy, Py_ssize_t C,
                                         const double *dF, double *bal, double *sum, unsigned char *hit,
                                         int64_t *touched)
    {
        for (Py_ssize_t k = 0; k < n; k++) {
            const int64_t c = ccy[inst[k]];
            if (moved[inst[k]] && !dirty[acc[k]] && (c < 0 || c >= C)) return k;
        }
        /* one flat pass over the positions: most do not count at a one-underlying tick (other
         * underlying, or dirty account) and are skipped by a predictable test. The sums of the
         * account being read live in sum[], the currencies it hit listed in touched[]; they are
         * added to its balances when the next counted position belongs to another account (a loop
         * per account mispredicted its exit about once per position: 6 ns a position even with
         * nothing moved). Summed from 0 per account and currency, added once: np.bincount's bits. */
        int64_t cur = -1;
        Py_ssize_t nt = 0;  /* currencies hit by the current account, listed in touched[0:nt] */
        for (Py_ssize_t c = 0; c < C; c++) { sum[c] = 0.0; hit[c] = 0; }
        for (Py_ssize_t k = 0; k < n; k++) {
            const int64_t i = inst[k];
    #if defined(__GNUC__)
            /* the positions are spread over the whole book (a cache miss each): fetched ahead, only
             * those that will be read (an instrument that moved) */
            if (k + 16 < n && moved[inst[k + 16]]) __builtin_prefetch(qty + pos[k + 16]);
    #endif
            if (!moved[i]) continue;
            const int64_t a = acc[k];
            if (dirty[a]) continue;
            if (a != cur) {
                for (Py_ssize_t t = 0; t < nt; t++) {
                    const int64_t c = touched[t];
                    bal[cur * C + c] = bal[cur * C + c] + sum[c];
                    sum[c] = 0.0;
                    hit[c] = 0;
                }
                nt = 0;
                cur = a;
            }
            const int64_t c = ccy[i];
            sum[c] = sum[c] + qty[pos[k]] * dF[i];
            if (!hit[c]) {
                hit[c] = 1;
                touched[nt++] = c;
            }
        }
        for (Py_ssize_t t = 0; t < nt; t++) {
            const int64_t c = touched[t];
            bal[cur * C + c] = bal[cur * C + c] + sum[c];
        }
        return -1;
    }

    /* First k with x[k] outside [0, limit), or -1 (one branch-free pass; the index is looked for
     * only on failure). */
    static Py_ssize_t dpm_first_outside(const int64_t *x, Py_ssize_t n, Py_ssize_t limit)
    {
        int any = 0;
        for (Py_ssize_t k = 0; k < n; k++) any |= (uint64_t)x[k] >= (uint64_t)limit;
        if (!any) return -1;
        for (Py_ssize_t k = 0; k < n; k++)
            if ((uint64_t)x[k] >= (uint64_t)limit) return k;
        return -1;
    }

    /* The kernel's rows [r0, r1) into per-account arrays (clean accounts only): a row whose total,
     * value or any per-underlying figure (per: 5 planes of n x U) is not finite gives a NaN total
     * (the caller's check names the account: fail closed); variant 0 (the positions) sets the
     * three margins and the value and is listed in acc_out, variants 1 / 2 (with open buy / sell
     * orders) set their own margin. An account's rows are contiguous, variant 0 first: one pass
     * gives what three masked numpy scatters gave. Returns the number of accounts listed. */
    static Py_ssize_t dpm_assign_rows(Py_ssize_t r0, Py_ssize_t r1, const int64_t *row_acc,
                                      const signed char *row_var, const unsigned char *dirty,
                                      const double *total, const double *value, const double *per,
                                      Py_ssize_t n, Py_ssize_t U, double *tp, double *tb, double *ta,
                                      double *val, int64_t *acc_out)
    {
        Py_ssize_t m = 0;
        for (Py_ssize_t r = r0; r < r1; r++) {
            const int64_t a = row_acc[r];
            if (dirty[a]) continue;
            double t = total[r];
            /* x * 0.0 is NaN exactly when x is not finite: one sum of zeros, no branch per figure */
            double z = t * 0.0 + value[r] * 0.0;
            for (Py_ssize_t k = 0; k < 5; k++)
                for (Py_ssize_t u = 0; u < U; u++)
                    z += per[(k * n + r) * U + u] * 0.0;
            if (z != 0.0) t = NAN;
            const signed char v = row_var[r];
            if (v == 0) {
                tp[a] = t; tb[a] = t; ta[a] = t;
                val[a] = value[r];
                acc_out[m++] = a;
            } else if (v == 1) {
                tb[a] = t;
            } else {
                ta[a] = t;
            }
        }
        return m;
    }

    /* dpm.live.alerts.next_levels, account by account (levels 0 ok, 1 margin call, 2 liquidation) */
    static void dpm_next_levels(const signed char *level, const double *eq, const double *im,
                                const double *mm, Py_ssize_t n, double hysteresis, signed char *out)
    {
        const double up = 1.0 + hysteresis;
        for (Py_ssize_t i = 0; i < n; i++) {
            const signed char l = level[i];
            const double e = eq[i];
            const int below_mm = e < mm[i], below_im = e < im[i];
            const int clear_im = e >= im[i] * up, clear_mm = e >= mm[i] * up;
            signed char v = l;
            if (below_mm) v = 2;                      /* going down: at once */
            else if (below_im && l == 0) v = 1;
            if (l == 1 && !below_mm && clear_im) v = 0;  /* going up: only past the band */
            if (l == 2 && !below_mm) {
                if (clear_im) v = 0;
                else if (clear_mm) v = 1;
            }
            out[i] = v;
        }
    }

    /* Compaction: new row r takes old row old_row[r] whole (old_row < 0: a dirty account's row,
     * filled by the caller from the overlay). Returns -1, or the first row whose old row is out of
     * range or whose length differs from its new slot (nothing is copied then). */
    static Py_ssize_t dpm_compact_copy(Py_ssize_t R, const int64_t *old_row, Py_ssize_t R_old,
                                       const int64_t *ip_old, const int64_t *inst_old, const double *qty_old,
                                       const int64_t *ip_new, int64_t *inst_new, double *qty_new)
    {
        for (Py_ssize_t r = 0; r < R; r++) {
            const int64_t o = old_row[r];
            if (o < 0) continue;
            if (o >= R_old || ip_old[o + 1] - ip_old[o] != ip_new[r + 1] - ip_new[r]) return r;
        }
        for (Py_ssize_t r = 0; r < R; r++) {
            const int64_t o = old_row[r];
            if (o < 0) continue;
            const size_t n = (size_t)(ip_new[r + 1] - ip_new[r]);
            memcpy(inst_new + ip_new[r], inst_old + ip_old[o], n * sizeof(int64_t));
            memcpy(qty_new + ip_new[r], qty_old + ip_old[o], n * sizeof(double));
        }
        return -1;
    }

    /* The positions of the position rows (row_var == 0) whose instrument is linear (futures,
     * perpetuals): their index and the row's account, in position order; returns their count. */
    static Py_ssize_t dpm_linear_positions(Py_ssize_t R, const int64_t *ip, const int64_t *inst,
                                           const int8_t *row_var, const int64_t *row_acc,
                                           const unsigned char *lin, int64_t *pos, int64_t *acc)
    {
        Py_ssize_t m = 0;
        for (Py_ssize_t r = 0; r < R; r++) {
            if (row_var[r] != 0) continue;
            for (int64_t k = ip[r]; k < ip[r + 1]; k++) {
                if (!lin[inst[k]]) continue;
                pos[m] = k;
                acc[m] = row_acc[r];
                m++;
            }
        }
        return m;
    }
    """
    void dpm_collateral_rows(const double *bal, Py_ssize_t n, Py_ssize_t C, const double *factor,
                             double *out) noexcept nogil
    Py_ssize_t dpm_settle_futures(const int64_t *pos, const int64_t *acc, const int64_t *inst, Py_ssize_t n,
                                  const double *qty, const uint8_t *moved, const uint8_t *dirty,
                                  const int64_t *ccy, Py_ssize_t C, const double *dF, double *bal, double *sum,
                                  uint8_t *hit, int64_t *touched) noexcept nogil
    Py_ssize_t dpm_first_outside(const int64_t *x, Py_ssize_t n, Py_ssize_t limit) noexcept nogil
    Py_ssize_t dpm_assign_rows(Py_ssize_t r0, Py_ssize_t r1, const int64_t *row_acc, const int8_t *row_var,
                               const uint8_t *dirty, const double *total, const double *value, const double *per,
                               Py_ssize_t n, Py_ssize_t U, double *tp, double *tb, double *ta, double *val,
                               int64_t *acc_out) noexcept nogil
    void dpm_next_levels(const int8_t *level, const double *eq, const double *im, const double *mm,
                         Py_ssize_t n, double hysteresis, int8_t *out) noexcept nogil
    Py_ssize_t dpm_compact_copy(Py_ssize_t R, const int64_t *old_row, Py_ssize_t R_old, const int64_t *ip_old,
                                const int64_t *inst_old, const double *qty_old, const int64_t *ip_new,
                                int64_t *inst_new, double *qty_new) noexcept nogil
    Py_ssize_t dpm_linear_positions(Py_ssize_t R, const int64_t *ip, const int64_t *inst, const int8_t *row_var,
                                    const int64_t *row_acc, const uint8_t *lin, int64_t *pos,
                                    int64_t *acc) noexcept nogil


def collateral_rows(const double[:, ::1] bal, const double[::1] rate_pos, const double[::1] price,
                    double[::1] out):
    """``out[i] = sum over c, in order, of bal[i, c] * (rate_pos[c] if bal[i, c] > 0 else price[c])``."""
    cdef Py_ssize_t n = bal.shape[0], C = bal.shape[1]
    if rate_pos.shape[0] != C or price.shape[0] != C or out.shape[0] != n:
        raise ValueError("collateral_rows: expected rate_pos and price of one value per column, out of one per row")
    if n == 0:
        return
    if C == 0:
        out[:] = 0.0
        return
    factor = np.empty(2 * C)
    factor[0::2] = price
    factor[1::2] = rate_pos
    cdef const double[::1] fv = factor
    with nogil:
        dpm_collateral_rows(&bal[0, 0], n, C, &fv[0], &out[0])


def next_levels(const int8_t[::1] level, const double[::1] eq, const double[::1] im, const double[::1] mm,
                double hysteresis, int8_t[::1] out):
    """The alert-level state machine of ``dpm.live.alerts`` over arrays, into ``out``."""
    cdef Py_ssize_t n = level.shape[0]
    if eq.shape[0] != n or im.shape[0] != n or mm.shape[0] != n or out.shape[0] != n:
        raise ValueError("next_levels: arrays of different lengths")
    if n == 0:
        return
    with nogil:
        dpm_next_levels(&level[0], &eq[0], &im[0], &mm[0], n, hysteresis, &out[0])


def settle_futures(const int64_t[::1] pos, const int64_t[::1] acc, const int64_t[::1] inst, const double[::1] qty,
                   const uint8_t[::1] moved, const uint8_t[::1] dirty, const int64_t[::1] ccy,
                   const double[::1] dF, double[:, ::1] bal):
    """Add the variation margin ``qty[pos[k]] * dF[inst[k]]`` of the futures positions ``k`` (grouped
    by account ``acc[k]``) whose instrument moved and whose account is not dirty to ``bal[acc,
    ccy[inst]]``: per account and currency summed from 0 in position order, then added once."""
    cdef Py_ssize_t n = pos.shape[0], C = bal.shape[1], M = moved.shape[0], bad, b
    cdef Py_ssize_t n_acc = min(bal.shape[0], dirty.shape[0])
    if acc.shape[0] != n or inst.shape[0] != n or ccy.shape[0] != M or dF.shape[0] != M:
        raise ValueError("settle_futures: inconsistent array lengths")
    if n == 0 or C == 0:
        return
    with nogil:  # what protects memory (ids come from the book's own CSR): the first bad position
        bad = dpm_first_outside(&pos[0], n, qty.shape[0])
        b = dpm_first_outside(&inst[0], n, M)
        bad = b if b >= 0 and (bad < 0 or b < bad) else bad
        b = dpm_first_outside(&acc[0], n, n_acc)
        bad = b if b >= 0 and (bad < 0 or b < bad) else bad
    if bad >= 0:
        raise ValueError(f"settle_futures: position {bad} points outside the book")
    sums = np.zeros(C)
    hits = np.zeros(C, dtype=np.uint8)
    touched = np.zeros(C, dtype=np.int64)
    cdef double[::1] sv = sums
    cdef uint8_t[::1] hv = hits
    cdef int64_t[::1] tv = touched
    with nogil:
        bad = dpm_settle_futures(&pos[0], &acc[0], &inst[0], n, &qty[0], &moved[0], &dirty[0], &ccy[0], C, &dF[0],
                                 &bal[0, 0], &sv[0], &hv[0], &tv[0])
    if bad >= 0:
        raise ValueError(f"settle_futures: position {bad}: settlement currency {ccy[inst[bad]]} out of range")


def assign_rows(Py_ssize_t r0, Py_ssize_t r1, const int64_t[::1] row_acc, const int8_t[::1] row_var,
                const uint8_t[::1] dirty, const double[::1] total, const double[::1] value,
                const double[:, :, ::1] per, double[::1] tp, double[::1] tb, double[::1] ta, double[::1] val):
    """Scatter the kernel's rows ``[r0, r1)`` of clean accounts to the per-account arrays (a row
    with any non-finite figure gives a NaN margin); returns the accounts of variant-0 rows."""
    cdef Py_ssize_t n = total.shape[0], U = per.shape[2], m
    if not (0 <= r0 <= r1 <= n and row_acc.shape[0] >= r1 and row_var.shape[0] >= r1 and value.shape[0] >= n
            and per.shape[0] == 5 and per.shape[1] == n):
        raise ValueError("assign_rows: inconsistent rows or buffers")
    out = np.empty(max(r1 - r0, 1), dtype=np.int64)
    cdef int64_t[::1] ov = out
    if r1 == r0:
        return out[:0]
    cdef Py_ssize_t n_acc = min(dirty.shape[0], tp.shape[0], tb.shape[0], ta.shape[0], val.shape[0]), bad
    with nogil:  # what protects memory (the book's own CSR rows)
        bad = dpm_first_outside(&row_acc[r0], r1 - r0, n_acc)
    if bad >= 0:
        raise ValueError(f"assign_rows: row {r0 + bad} names account {row_acc[r0 + bad]} outside the arrays")
    with nogil:
        m = dpm_assign_rows(r0, r1, &row_acc[0], &row_var[0], &dirty[0], &total[0], &value[0], &per[0, 0, 0], n, U,
                            &tp[0], &tb[0], &ta[0], &val[0], &ov[0])
    return out[:m]


cdef Py_ssize_t check_offsets(const int64_t[::1] ip, Py_ssize_t n_values, str name) except -1:
    """Raise unless ``ip`` starts at 0, never decreases and ends at ``n_values``."""
    cdef Py_ssize_t r, R = ip.shape[0] - 1
    if R < 0 or ip[0] != 0 or ip[R] != n_values:
        raise ValueError(f"{name}: expected offsets from 0 to {n_values}")
    for r in range(R):
        if ip[r + 1] < ip[r]:
            raise ValueError(f"{name}: offsets decrease at row {r}")
    return R


def compact_copy(const int64_t[::1] old_row, const int64_t[::1] ip_old, const int64_t[::1] inst_old,
                 const double[::1] qty_old, const int64_t[::1] ip_new, int64_t[::1] inst_new, double[::1] qty_new):
    """Copy every clean row of the old CSR into its slot of the new one: new row ``r`` takes old row
    ``old_row[r]`` whole; rows with ``old_row[r] < 0`` are left for the caller (the dirty accounts'
    overlay rows). One pass of ``memcpy`` without the GIL instead of four numpy passes over every
    position (about 45 ms of a 3.8 M-position compaction)."""
    cdef Py_ssize_t R = old_row.shape[0], R_old, bad
    if ip_new.shape[0] != R + 1:
        raise ValueError("compact_copy: expected one more new offset than rows")
    if inst_old.shape[0] != qty_old.shape[0] or inst_new.shape[0] != qty_new.shape[0]:
        raise ValueError("compact_copy: instruments and quantities differ in length")
    R_old = check_offsets(ip_old, inst_old.shape[0], "compact_copy: old offsets")
    check_offsets(ip_new, inst_new.shape[0], "compact_copy: new offsets")
    if R == 0:
        return
    with nogil:
        bad = dpm_compact_copy(R, &old_row[0], R_old, &ip_old[0], &inst_old[0] if inst_old.shape[0] else NULL,
                               &qty_old[0] if qty_old.shape[0] else NULL, &ip_new[0],
                               &inst_new[0] if inst_new.shape[0] else NULL, &qty_new[0] if qty_new.shape[0] else NULL)
    if bad >= 0:
        raise ValueError(f"compact_copy: new row {bad}: old row {old_row[bad]} is out of range or of another length")


def linear_positions(const int64_t[::1] ip, const int64_t[::1] inst, const int8_t[::1] row_var,
                     const int64_t[::1] row_acc, const uint8_t[::1] lin):
    """``(positions, accounts)``: the positions of the CSR's position rows (``row_var == 0``) whose
    instrument is linear (``lin[instrument]``), in position order, and their rows' accounts."""
    cdef Py_ssize_t R = ip.shape[0] - 1, m, bad
    if row_var.shape[0] < R or row_acc.shape[0] < R:
        raise ValueError("linear_positions: expected a variant and an account per row")
    R = check_offsets(ip, inst.shape[0], "linear_positions: offsets")
    if inst.shape[0]:
        with nogil:
            bad = dpm_first_outside(&inst[0], inst.shape[0], lin.shape[0])
        if bad >= 0:
            raise ValueError(f"linear_positions: position {bad}: instrument {inst[bad]} is not in the table")
    if R == 0 or inst.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # one pass into buffers as long as the CSR: only the pages written are ever touched
    pos = np.empty(inst.shape[0], dtype=np.int64)
    acc = np.empty(inst.shape[0], dtype=np.int64)
    cdef int64_t[::1] pv = pos
    cdef int64_t[::1] av = acc
    with nogil:
        m = dpm_linear_positions(R, &ip[0], &inst[0], &row_var[0], &row_acc[0], &lin[0], &pv[0], &av[0])
    return pos[:m].copy(), acc[:m].copy()
