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

    /* What FuturesGroups checks of its input, in one pass: every index >= 0 and inst < M; and the
     * largest position, account and instrument. Returns -1, or the first position at fault (*why:
     * 1 negative index, 2 instrument >= M). */
    static Py_ssize_t dpm_futures_check(Py_ssize_t n, const int64_t *pos, const int64_t *acc,
                                        const int64_t *inst, int64_t M, int64_t *max_pos, int64_t *max_acc,
                                        int64_t *max_inst, int *why)
    {
        int64_t mp = -1, ma = -1, mi = -1;
        for (Py_ssize_t j = 0; j < n; j++) {
            if (pos[j] < 0 || acc[j] < 0 || inst[j] < 0) { *why = 1; return j; }
            if (inst[j] >= M) { *why = 2; return j; }
            mp = pos[j] > mp ? pos[j] : mp;
            ma = acc[j] > ma ? acc[j] : ma;
            mi = inst[j] > mi ? inst[j] : mi;
        }
        *max_pos = mp; *max_acc = ma; *max_inst = mi;
        return -1;
    }

    /* The first position whose account (acc[j] >= 0, below the size of seen: zeroed bytes) was
     * seen in an earlier run, or -1 when every account's positions are one run. */
    static Py_ssize_t dpm_first_split_run(Py_ssize_t n, const int64_t *acc, unsigned char *seen)
    {
        for (Py_ssize_t j = 0; j < n; j++) {
            if (j > 0 && acc[j] == acc[j - 1]) continue;
            if (seen[acc[j]]) return j;
            seen[acc[j]] = 1;
        }
        return -1;
    }

    /* The futures and perpetual positions (pos, grouped by account acc, instrument inst) regrouped
     * by (account, settlement currency ccy[inst]): each group's positions in their order, the groups
     * of an account by increasing currency (-1, none, first). Writes the positions in the new order
     * (out_pos, out_inst, first: 1 at a group's first position) and per group its end, account and
     * currency; returns the number of groups. */
    static Py_ssize_t dpm_futures_groups(Py_ssize_t n, const int64_t *pos, const int64_t *acc,
                                         const int64_t *inst, const int64_t *ccy, int64_t *out_pos,
                                         int64_t *out_inst, unsigned char *first, int64_t *g_end,
                                         int64_t *g_acc, int64_t *g_ccy)
    {
        Py_ssize_t m = 0, G = 0, k = 0;
        while (k < n) {
            Py_ssize_t e = k + 1;
            while (e < n && acc[e] == acc[k]) e++;
            int64_t prev = INT64_MIN;
            for (;;) {  /* the account's currencies in increasing order (a handful at most) */
                int64_t c = 0;
                int found = 0;
                for (Py_ssize_t j = k; j < e; j++) {
                    const int64_t cj = ccy[inst[j]];
                    if (cj > prev && (!found || cj < c)) { c = cj; found = 1; }
                }
                if (!found) break;
                unsigned char head = 1;
                for (Py_ssize_t j = k; j < e; j++) {
                    if (ccy[inst[j]] != c) continue;
                    out_pos[m] = pos[j];
                    out_inst[m] = inst[j];
                    first[m] = head;
                    head = 0;
                    m++;
                }
                g_end[G] = m;
                g_acc[G] = acc[k];
                g_ccy[G] = c;
                G++;
                prev = c;
            }
            k = e;
        }
        return G;
    }

    /* Variation margin at a tick: per group (account, settlement currency) the sum from 0, in
     * position order, of q * dF[inst] over its positions whose instrument moved, added once to the
     * balance when one did and the account is clean (np.bincount's order: the bits of the numpy
     * path of the dirty accounts). dF is 0 where nothing moved, so every position is added without
     * a test (s + q * 0 == s: a sum started at +0 is never -0). Branch-free: one pass keeps the
     * running sum of each position's group (reset at its first position), one pass adds each
     * group's last sum through a selected pointer. A loop per account mispredicted its exit and
     * its flush about twice per account: 1.2 ms for 140,000 positions of 68,000 accounts, warm.
     * Returns -1, or (nothing written) the first counted position of a group whose currency is
     * out of range. */
    #if defined(__GNUC__) && !defined(__clang__)
    __attribute__((optimize("fp-contract=off")))
    #endif
    static Py_ssize_t dpm_settle_groups(Py_ssize_t n, Py_ssize_t G, const int64_t *pos, const int64_t *inst,
                                        const unsigned char *first, const int64_t *g_end, const int64_t *g_acc,
                                        const int64_t *g_ccy, const double *qty, const unsigned char *moved,
                                        const unsigned char *dirty, Py_ssize_t C, const double *dF,
                                        double *bal, double *run, unsigned char *hit)
    {
        Py_ssize_t k0 = 0;
        for (Py_ssize_t g = 0; g < G; g++) {
            const int64_t c = g_ccy[g];
            if ((c < 0 || c >= C) && !dirty[g_acc[g]])
                for (Py_ssize_t k = k0; k < g_end[g]; k++)
                    if (moved[inst[k]]) return k;
            k0 = g_end[g];
        }
        double s = 0.0;
        unsigned char any = 0;
        for (Py_ssize_t k = 0; k < n; k++) {
    #if defined(__GNUC__)
            /* the positions are spread over the whole CSR (a cache miss each): fetched ahead */
            if (k + 64 < n) __builtin_prefetch(qty + pos[k + 64]);
    #endif
            const int64_t i = inst[k];
            const uint64_t keep = (uint64_t)first[k] - 1u;  /* all ones inside a group, 0 at its start */
            uint64_t bits;
            memcpy(&bits, &s, sizeof bits);
            bits &= keep;
            memcpy(&s, &bits, sizeof s);
            any &= (unsigned char)keep;
            s = s + qty[pos[k]] * dF[i];
            any |= moved[i];
            run[k] = s;
            hit[k] = any;
        }
        double junk[8] = {0.0};  /* where an uncounted group's sum goes */
        for (Py_ssize_t g = 0; g < G; g++) {
    #if defined(__GNUC__)
            if (g + 32 < G) __builtin_prefetch(bal + g_acc[g + 32] * C, 1);
    #endif
            const Py_ssize_t e = g_end[g] - 1;  /* groups are never empty */
            const int64_t a = g_acc[g];
            const int count = hit[e] & !dirty[a];  /* checked above: then 0 <= g_ccy[g] < C */
            double *base = count ? bal : junk;
            const Py_ssize_t off = count ? a * C + g_ccy[g] : (g & 7);
            base[off] = base[off] + run[e];
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
     * three margins and the value, variants 1 / 2 (with open buy / sell orders) set their own
     * margin. An account's rows are contiguous, variant 0 first: one pass gives what three masked
     * numpy scatters gave. Returns the number of variant-0 rows assigned. */
    static Py_ssize_t dpm_assign_rows(Py_ssize_t r0, Py_ssize_t r1, const int64_t *row_acc,
                                      const signed char *row_var, const unsigned char *dirty,
                                      const double *total, const double *value, const double *per,
                                      Py_ssize_t n, Py_ssize_t U, double *tp, double *tb, double *ta,
                                      double *val)
    {
        Py_ssize_t m = 0;
        for (Py_ssize_t r = r0; r < r1; r++) {
            const int64_t a = row_acc[r];
            if (dirty[a]) continue;
            double t = total[r];
            /* x - x == 0 exactly when x is finite: the figures' tests combined with integer ANDs,
             * no branch per figure (a running sum of x * 0.0 made each row wait for ten dependent
             * floating-point adds: 1.1 ms of a 100k-account tick) */
            int ok = (t - t == 0.0) & (value[r] - value[r] == 0.0);
            for (Py_ssize_t k = 0; k < 5; k++)
                for (Py_ssize_t u = 0; u < U; u++) {
                    const double x = per[(k * n + r) * U + u];
                    ok &= x - x == 0.0;
                }
            if (!ok) t = NAN;
            const signed char v = row_var[r];
            if (v == 0) {
                tp[a] = t; tb[a] = t; ta[a] = t;
                val[a] = value[r];
                m++;
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
    Py_ssize_t dpm_futures_check(Py_ssize_t n, const int64_t *pos, const int64_t *acc, const int64_t *inst,
                                 int64_t M, int64_t *max_pos, int64_t *max_acc, int64_t *max_inst,
                                 int *why) noexcept nogil
    Py_ssize_t dpm_first_split_run(Py_ssize_t n, const int64_t *acc, uint8_t *seen) noexcept nogil
    Py_ssize_t dpm_futures_groups(Py_ssize_t n, const int64_t *pos, const int64_t *acc, const int64_t *inst,
                                  const int64_t *ccy, int64_t *out_pos, int64_t *out_inst, uint8_t *first,
                                  int64_t *g_end, int64_t *g_acc, int64_t *g_ccy) noexcept nogil
    Py_ssize_t dpm_settle_groups(Py_ssize_t n, Py_ssize_t G, const int64_t *pos, const int64_t *inst,
                                 const uint8_t *first, const int64_t *g_end, const int64_t *g_acc,
                                 const int64_t *g_ccy, const double *qty, const uint8_t *moved,
                                 const uint8_t *dirty, Py_ssize_t C, const double *dF, double *bal, double *run,
                                 uint8_t *hit) noexcept nogil
    Py_ssize_t dpm_first_outside(const int64_t *x, Py_ssize_t n, Py_ssize_t limit) noexcept nogil
    Py_ssize_t dpm_assign_rows(Py_ssize_t r0, Py_ssize_t r1, const int64_t *row_acc, const int8_t *row_var,
                               const uint8_t *dirty, const double *total, const double *value, const double *per,
                               Py_ssize_t n, Py_ssize_t U, double *tp, double *tb, double *ta, double *val
                               ) noexcept nogil
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


cdef class FuturesGroups:
    """The futures and perpetual positions of a CSR's position rows, grouped by (account, settlement
    currency) for the variation margin of a tick (:meth:`settle`). Built at each compaction: the
    positions' instruments never change between compactions (fills resize them in place).

    Parameters
    ----------
    pos, acc : int64 arrays
        The positions (indices into the CSR's quantities) grouped by account, and their accounts
        (:func:`linear_positions`).
    inst : int64 array
        The instrument of each position.
    ccy : int64 array
        The settlement currency of each instrument (-1: none; refused at a tick that moves it).
    """
    cdef readonly object pos, inst, first, group_end, group_account, group_currency
    cdef object _run, _hit
    cdef int64_t max_pos, max_acc, max_inst
    cdef Py_ssize_t n, G

    def __init__(self, const int64_t[::1] pos, const int64_t[::1] acc, const int64_t[::1] inst,
                 const int64_t[::1] ccy):
        cdef Py_ssize_t n = pos.shape[0], M = ccy.shape[0], bad = -1
        cdef int64_t max_pos = -1, max_acc = -1, max_inst = -1
        cdef int why = 0
        cdef uint8_t[::1] sv
        if acc.shape[0] != n or inst.shape[0] != n:
            raise ValueError("FuturesGroups: pos, acc and inst differ in length")
        if n:
            # one C pass for the indices and maxima, one for the runs (an account's positions must
            # be one run: a second run would add a second sum); a Cython loop took 3 ms of a
            # 140,000-position compaction
            with nogil:
                bad = dpm_futures_check(n, &pos[0], &acc[0], &inst[0], M, &max_pos, &max_acc, &max_inst, &why)
            if bad >= 0:
                if why == 1:
                    raise ValueError(f"FuturesGroups: position {bad}: negative index")
                raise ValueError(f"FuturesGroups: position {bad}: instrument {inst[bad]} has no currency entry")
            seen = np.zeros(max_acc + 1, dtype=np.uint8)
            sv = seen
            with nogil:
                bad = dpm_first_split_run(n, &acc[0], &sv[0])
            if bad >= 0:
                raise ValueError(f"FuturesGroups: position {bad}: account {acc[bad]} is not grouped")
        out_pos = np.empty(n, dtype=np.int64)
        out_inst = np.empty(n, dtype=np.int64)
        first = np.empty(n, dtype=np.uint8)
        g_end = np.empty(n, dtype=np.int64)
        g_acc = np.empty(n, dtype=np.int64)
        g_ccy = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] op = out_pos, oi = out_inst, ge = g_end, ga = g_acc, gc = g_ccy
        cdef uint8_t[::1] fv = first
        cdef Py_ssize_t G = 0
        if n:
            with nogil:
                G = dpm_futures_groups(n, &pos[0], &acc[0], &inst[0], &ccy[0], &op[0], &oi[0], &fv[0], &ge[0],
                                       &ga[0], &gc[0])
        self.pos, self.inst, self.first = out_pos, out_inst, first
        self.group_end, self.group_account, self.group_currency = g_end[:G].copy(), g_acc[:G].copy(), g_ccy[:G].copy()
        self.n, self.G = n, G
        self.max_pos, self.max_acc, self.max_inst = max_pos, max_acc, max_inst
        self._run = np.empty(max(n, 1))
        self._hit = np.empty(max(n, 1), dtype=np.uint8)

    def __len__(self):
        return self.n

    def settle(self, const double[::1] qty, const uint8_t[::1] moved, const uint8_t[::1] dirty,
               const double[::1] dF, double[:, ::1] bal):
        """Add the variation margin of the positions whose instrument ``moved`` and whose account is
        not ``dirty`` to ``bal[account, currency]``: per group ``qty[pos] * dF[inst]`` summed from 0
        in position order, then added once. ``dF`` must be 0 where ``moved`` is 0. Raises
        ``ValueError`` (nothing written) when a counted position's currency is not a column of
        ``bal``."""
        cdef Py_ssize_t M = moved.shape[0], C = bal.shape[1], bad, i, n = self.n, G = self.G
        if dF.shape[0] != M:
            raise ValueError("FuturesGroups.settle: moved and dF differ in length")
        if n == 0 or C == 0:
            return
        if self.max_pos >= qty.shape[0] or self.max_inst >= M or self.max_acc >= min(bal.shape[0], dirty.shape[0]):
            raise ValueError("FuturesGroups.settle: the positions point outside the book")
        for i in range(M):
            if not moved[i] and dF[i] != 0.0:
                raise ValueError(f"FuturesGroups.settle: instrument {i} did not move but has a price change")
        cdef const int64_t[::1] p = self.pos, ins = self.inst, ge = self.group_end, ga = self.group_account
        cdef const int64_t[::1] gc = self.group_currency
        cdef const uint8_t[::1] fv = self.first
        cdef double[::1] run = self._run
        cdef uint8_t[::1] hit = self._hit
        with nogil:
            bad = dpm_settle_groups(n, G, &p[0], &ins[0], &fv[0], &ge[0], &ga[0], &gc[0], &qty[0],
                                    &moved[0], &dirty[0], C, &dF[0], &bal[0, 0], &run[0], &hit[0])
        if bad >= 0:
            g = int(np.searchsorted(self.group_end, bad, side="right"))
            raise ValueError(f"FuturesGroups.settle: position {self.pos[bad]}: settlement currency "
                             f"{self.group_currency[g]} out of range")


def assign_rows(Py_ssize_t r0, Py_ssize_t r1, const int64_t[::1] row_acc, const int8_t[::1] row_var,
                const uint8_t[::1] dirty, const double[::1] total, const double[::1] value,
                const double[:, :, ::1] per, double[::1] tp, double[::1] tb, double[::1] ta, double[::1] val):
    """Scatter the kernel's rows ``[r0, r1)`` of clean accounts to the per-account arrays (a row
    with any non-finite figure gives a NaN margin); returns the number of variant-0 rows assigned
    (accounts whose three margins and value were set)."""
    cdef Py_ssize_t n = total.shape[0], U = per.shape[2], m
    if not (0 <= r0 <= r1 <= n and row_acc.shape[0] >= r1 and row_var.shape[0] >= r1 and value.shape[0] >= n
            and per.shape[0] == 5 and per.shape[1] == n):
        raise ValueError("assign_rows: inconsistent rows or buffers")
    if r1 == r0:
        return 0
    cdef Py_ssize_t n_acc = min(dirty.shape[0], tp.shape[0], tb.shape[0], ta.shape[0], val.shape[0]), bad
    with nogil:  # what protects memory (the book's own CSR rows)
        bad = dpm_first_outside(&row_acc[r0], r1 - r0, n_acc)
    if bad >= 0:
        raise ValueError(f"assign_rows: row {r0 + bad} names account {row_acc[r0 + bad]} outside the arrays")
    with nogil:
        m = dpm_assign_rows(r0, r1, &row_acc[0], &row_var[0], &dirty[0], &total[0], &value[0], &per[0, 0, 0], n, U,
                            &tp[0], &tb[0], &ta[0], &val[0])
    return m


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
