/*
 * Kernels for VaR / expected shortfall and stress tests over joint market scenarios.
 *
 * dpm_revalue_joint: P&L (USD per contract) of instruments [start, stop) in the joint scenarios
 *   [c0, c1), where scenario s moves underlying u's price by move[u*ld + s] and shocks the implied
 *   vol of instrument i relatively by vscale[i] * volshock[u*ld + s] (vscale: the term-structure
 *   factor of the instrument's expiry, 1 for a uniform shock; the vol is floored at 0); time
 *   advances by dt (the horizon).  Uses the one Black-76
 *   formula of black_math.h.  The output is blocked: scenario c0 + s of instrument i is at
 *   out[((s / B) * M + i) * B + s % B], so each block of B scenarios is one contiguous M x B matrix
 *   (B = S gives the plain M x S layout); the tail of the last block is zero-filled.
 * dpm_tail_rows: for accounts [a0, a1) of a CSR book, updates the k largest losses (and their
 *   scenario indices), kept per account in a candidate buffer (see below), with the scenarios of
 *   one chunk of P (blocked layout above, nsc scenarios numbered from s_base).  The chunk is
 *   visited block by block and, inside a block, account by account, so the M x B block stays in
 *   L2 while every account of the range gathers from it; the accounts x scenarios matrix is never
 *   formed.  For B = 16, 32 and
 *   64 the B-wide accumulator of an account is held in vector registers for the whole position
 *   loop (GCC vector extensions, lowered to 2/4/8 zmm, 4/8/16 ymm or xmm per target clone): one FMA
 *   with a memory operand per 8 scenarios and position, no load/store of the accumulator.  Any other
 *   B takes a generic loop.  A block whose largest loss cannot beat the account's threshold is
 *   skipped at once (exactly the same appends as visiting every scenario).
 * dpm_gather_rows: the full N x S P&L of accounts (for stress tests with few scenarios).
 *
 * Every account is reduced by one thread in a fixed order (positions in CSR order, scenarios in
 * increasing order), so results do not depend on the number of threads or on B.
 */
#ifndef DPM_TAIL_KERNELS_H
#define DPM_TAIL_KERNELS_H

#include <stdint.h>
#include <string.h>
#include "black_math.h"

/* Option P&L of 8 consecutive scenarios (moves m[0..7], relative vol shocks v[0..7] scaled by the
 * instrument's term-structure factor ci) into o[0..7].
 * Always a full group of 8 with a constant trip count, so every scenario goes through the same
 * SIMD variant of exp/log/erfc whatever its position in a block: results do not depend on B, on
 * the chunking of scenarios or on the number of threads. */
static inline void dpm_option_group8(double Fi, double Ki, double si, double ci, double T1, double cpi,
                                     double scale, double b0, const double *restrict m,
                                     const double *restrict v, double *restrict o)
{
    /* scale * (B1 - B0), not scale * B1 - v0: the latter would be contracted into an FMA and
     * leave a rounding residue in a scenario that moves nothing */
    DPM_SIMD
    for (int j = 0; j < 8; j++) {
        const double mult = 1.0 + ci * v[j];
        o[j] = scale * (dpm_black76(Fi * (1.0 + m[j]), Ki, si * (mult > 0.0 ? mult : 0.0), T1, cpi) - b0);
    }
}

/* move / volshock: U x ld (ld >= c1 + 8: the 8 columns after the last scenario are padding that
 * full groups of 8 may read). */
DPM_CLONES
static void dpm_revalue_joint(dpm_index start, dpm_index stop, dpm_index ld, dpm_index c0,
                              dpm_index c1, dpm_index M, dpm_index B, const int8_t *kind,
                              const uint8_t *inverse, const int32_t *und, const double *F,
                              const double *K, const double *cp, const double *T, const double *cs,
                              const double *vol, const double *vscale, const double *index,
                              const double *move, const double *volshock, double dt, double *out)
{
    const dpm_index n = c1 - c0;
    for (dpm_index i = start; i < stop; i++) {
        const int k = kind[i], inv = inverse[i];
        const dpm_index u = und[i];
        const double Fi = F[i], Ki = K[i], cpi = cp[i], csi = cs[i], si = vol[i], Si = index[u];
        const double ci = vscale[i];
        const double Ti = T[i];
        const double T1 = Ti - dt > 0.0 ? Ti - dt : 0.0;
        const double *mv = move + u * ld + c0, *vm = volshock + u * ld + c0;
        /* USD value: linear cs*B; inverse (coin) cs*B/F converted at the underlying's price S, i.e.
         * cs*B*S/F, and F1/S1 = F/S in every scenario (the curve moves together). */
        const double scale = csi * ((k == 3 && inv) ? Si / Fi : 1.0);
        if (k == 3) {
            /* today's value through the same SIMD group as the scenarios, so that a scenario that
             * moves nothing over a zero horizon has a P&L of exactly 0 */
            static const double m0[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
            double g0[8];
            dpm_option_group8(Fi, Ki, si, ci, Ti, cpi, 1.0, 0.0, m0, m0, g0);
            const double b0 = g0[0]; /* undiscounted Black-76 price per unit today */
            if (B % 8 == 0) {
                /* groups of 8 never straddle a block; the last one may spill into the block's
                 * zero-filled tail, which is rewritten below */
                for (dpm_index s0 = 0; s0 < n; s0 += 8)
                    dpm_option_group8(Fi, Ki, si, ci, T1, cpi, scale, b0, mv + s0, vm + s0,
                                      out + ((s0 / B) * M + i) * B + s0 % B);
            } else {
                double g[8];
                for (dpm_index s0 = 0; s0 < n; s0 += 8) {
                    dpm_option_group8(Fi, Ki, si, ci, T1, cpi, scale, b0, mv + s0, vm + s0, g);
                    for (dpm_index j = s0; j < s0 + 8 && j < n; j++)
                        out[((j / B) * M + i) * B + j % B] = g[j - s0];
                }
            }
        } else {
            for (dpm_index s0 = 0; s0 < n; s0 += B) {
                const dpm_index nb = n - s0 < B ? n - s0 : B;
                double *restrict row = out + ((s0 / B) * M + i) * B;
                const double *restrict m = mv + s0;
                if (inv) {
                    /* inverse: coin P&L cs*(1/F - 1/F1), worth that many coins at the scenario price */
                    DPM_SIMD
                    for (dpm_index j = 0; j < nb; j++) {
                        const double F1 = Fi * (1.0 + m[j]);
                        row[j] = csi * (1.0 / Fi - 1.0 / F1) * Si * (1.0 + m[j]);
                    }
                } else {
                    DPM_SIMD
                    for (dpm_index j = 0; j < nb; j++) row[j] = csi * (Fi * (1.0 + m[j]) - Fi);
                }
            }
        }
        /* zero the tail of the last block (padding the accounts' kernel reads but never appends) */
        const dpm_index nlast = n % B;
        if (nlast) {
            double *row = out + (((n - 1) / B) * M + i) * B;
            for (dpm_index j = nlast; j < B; j++) row[j] = 0.0;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Per-account tail: the k largest losses, ranked by (loss descending, scenario index ascending) -
 * a total order, so the set kept is canonical (ties go to the earlier scenario).
 *
 * Each account owns a candidate buffer of cap >= k entries (cval, cidx), a count cn and a
 * threshold thr.  A loss is appended only if loss > thr; when the buffer is full it is compacted
 * to its k best (quickselect) and thr becomes the k-th best loss.  Scenarios arrive in increasing
 * index, so a later loss equal to thr ranks below the k-th kept one and may be dropped.  Compared
 * with a binary heap this turns the frequent updates into sequential appends (the heap's sift-down
 * walked ~13 cache lines of a cold heap per push) and does a few O(cap) selections per account.
 * The sequence of appends depends only on the order of the scenarios, so the result does not
 * depend on B, on the chunking or on the threads.
 * ------------------------------------------------------------------------------------------- */
static inline int dpm_tail_better(double va, int32_t ia, double vb, int32_t ib)
{
    return va > vb || (va == vb && ia < ib);
}

static inline void dpm_tail_swap(double *v, int32_t *ix, dpm_index a, dpm_index b)
{
    const double tv = v[a];
    const int32_t ti = ix[a];
    v[a] = v[b];
    ix[a] = ix[b];
    v[b] = tv;
    ix[b] = ti;
}

/* Reorder (v, ix)[0, n) so that its k best entries come first, the k-th best at k-1
 * (quickselect with a median-of-three pivot).  The partition is branchless and out of place: each
 * element is written to both ends of the scratch (sv, si; n entries) and the end it belongs to
 * advances.  The keys are unique and in random order, so a branch per element would be
 * mispredicted half of the time, and an in-place branchless swap chains every element through a
 * store-to-load forwarding. */
static void dpm_tail_select(double *v, int32_t *ix, dpm_index n, dpm_index k, double *sv, int32_t *si)
{
    const dpm_index t = k - 1;
    dpm_index l = 0, r = n - 1;
    while (r > l) {
        const dpm_index m = l + (r - l) / 2;
        if (dpm_tail_better(v[m], ix[m], v[l], ix[l])) dpm_tail_swap(v, ix, m, l);
        if (dpm_tail_better(v[r], ix[r], v[l], ix[l])) dpm_tail_swap(v, ix, r, l);
        if (dpm_tail_better(v[m], ix[m], v[r], ix[r])) dpm_tail_swap(v, ix, m, r);
        const double pv = v[r]; /* the median of the three is the pivot, at r */
        const int32_t pi = ix[r];
        dpm_index lo = l, hi = r - 1;
        for (dpm_index i = l; i < r; i++) {
            const double x = v[i];
            const int32_t y = ix[i];
            const dpm_index b = (x > pv) | ((x == pv) & (y < pi));
            sv[lo] = x;
            si[lo] = y;
            sv[hi] = x;
            si[hi] = y;
            lo += b;
            hi -= 1 - b;
        }
        memcpy(v + l, sv + l, sizeof(double) * (size_t)(r - l));
        memcpy(ix + l, si + l, sizeof(int32_t) * (size_t)(r - l));
        const dpm_index st = lo; /* [l, st) better than the pivot, [st, r) worse */
        dpm_tail_swap(v, ix, st, r);
        if (st == t) return;
        if (st < t) l = st + 1;
        else r = st - 1;
    }
}

/* Compact a full buffer to its k best; returns the new threshold (the k-th best loss). */
static inline double dpm_tail_compact(double *v, int32_t *ix, int32_t *cn, dpm_index k, double *sv,
                                      int32_t *si)
{
    dpm_tail_select(v, ix, *cn, k, sv, si);
    *cn = (int32_t)k;
    double t = v[0];
    for (dpm_index j = 1; j < k; j++) t = v[j] < t ? v[j] : t;
    return t;
}

/* Offer the nb P&L values of one account and block (scenarios s0, s0+1, ...); mn is their
 * minimum (largest loss -mn): a block that cannot beat the threshold is skipped at once. */
static inline void dpm_tail_block(const double *pnl, dpm_index nb, double mn, double *v, int32_t *ix,
                                  int32_t *cn, double *thr, dpm_index k, dpm_index cap, dpm_index s0,
                                  double *sv, int32_t *si)
{
    double t = *thr;
    if (!(-mn > t)) return;
    dpm_index n = *cn;
    for (dpm_index j = 0; j < nb; j++) {
        const double loss = -pnl[j];
        if (loss > t) {
            v[n] = loss;
            ix[n] = (int32_t)(s0 + j);
            if (++n == cap) {
                int32_t c = (int32_t)n;
                t = dpm_tail_compact(v, ix, &c, k, sv, si);
                n = c;
            }
        }
    }
    *cn = (int32_t)n;
    *thr = t;
}

/* Sort (v, ix)[0, n) best first (quicksort by selection of the better half, insertion sort below
 * 16 elements). */
static void dpm_tail_sort(double *v, int32_t *ix, dpm_index n, double *sv, int32_t *si)
{
    while (n > 16) {
        const dpm_index h = n / 2;
        dpm_tail_select(v, ix, n, h, sv, si); /* the h best are now in [0, h) */
        dpm_tail_sort(v + h, ix + h, n - h, sv, si);
        n = h;
    }
    for (dpm_index i = 1; i < n; i++) {
        const double xv = v[i];
        const int32_t xi = ix[i];
        dpm_index j = i;
        while (j > 0 && dpm_tail_better(xv, xi, v[j - 1], ix[j - 1])) {
            v[j] = v[j - 1];
            ix[j] = ix[j - 1];
            j--;
        }
        v[j] = xv;
        ix[j] = xi;
    }
}

/* Reduce every account of [a0, a1) to its k best candidates, sorted worst loss first (positions
 * 0..k-1 of its buffer). */
static void dpm_tail_finish(dpm_index a0, dpm_index a1, dpm_index k, dpm_index cap, double *cval,
                            int32_t *cidx, int32_t *cn, double *sv, int32_t *si)
{
    for (dpm_index a = a0; a < a1; a++) {
        if (cn[a] > k) (void)dpm_tail_compact(cval + a * cap, cidx + a * cap, cn + a, k, sv, si);
        dpm_tail_sort(cval + a * cap, cidx + a * cap, cn[a], sv, si);
    }
}

#if defined(__GNUC__)
/* 8 doubles; aligned(8) makes loads through it unaligned (numpy buffers are only 16-byte aligned). */
typedef double dpm_v8d __attribute__((vector_size(64), aligned(8)));

/* One specialisation per compile-time block width W (a multiple of 8): the accumulator is W/8
 * vector variables that GCC keeps in registers across the position loop. */
#define DPM_TAIL_ROWS_W(W)                                                                           \
DPM_CLONES                                                                                           \
static void dpm_tail_rows_##W(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst, \
                              const double *qty, const double *P, dpm_index nsc, dpm_index s_base,    \
                              dpm_index M, dpm_index k, dpm_index cap, double *cval, int32_t *cidx,   \
                              int32_t *cn, double *thr, double *sv, int32_t *si)                      \
{                                                                                                    \
    enum { NV = (W) / 8 };                                                                           \
    double pnl[W] __attribute__((aligned(64)));                                                      \
    for (dpm_index s0 = 0; s0 < nsc; s0 += (W)) {                                                    \
        const dpm_index nb = nsc - s0 < (W) ? nsc - s0 : (W);                                        \
        const double *blk = P + (s0 / (W)) * M * (W);                                                \
        for (dpm_index a = a0; a < a1; a++) {                                                        \
            dpm_v8d acc[NV];                                                                         \
            _Pragma("GCC unroll 8")                                                                  \
            for (int v = 0; v < NV; v++) acc[v] = (dpm_v8d){0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}; \
            const int64_t pe = indptr[a + 1];                                                        \
            for (int64_t p = indptr[a]; p < pe; p++) {                                               \
                const double q = qty[p];                                                             \
                const dpm_v8d *row = (const dpm_v8d *)(blk + inst[p] * (W));                         \
                _Pragma("GCC unroll 8")                                                              \
                for (int v = 0; v < NV; v++) acc[v] += q * row[v];                                   \
            }                                                                                        \
            _Pragma("GCC unroll 8")                                                                  \
            for (int v = 0; v < NV; v++) memcpy(pnl + 8 * v, &acc[v], sizeof(dpm_v8d));             \
            double mn = pnl[0];                                                                      \
            _Pragma("omp simd reduction(min:mn)")                                                    \
            for (int j = 1; j < (W); j++) mn = pnl[j] < mn ? pnl[j] : mn;                            \
            dpm_tail_block(pnl, nb, mn, cval + a * cap, cidx + a * cap, cn + a, thr + a, k, cap,     \
                           s_base + s0, sv, si);                                                     \
        }                                                                                            \
    }                                                                                                \
}
DPM_TAIL_ROWS_W(16)
DPM_TAIL_ROWS_W(32)
DPM_TAIL_ROWS_W(64)
#define DPM_TAIL_FIXED 1
#else
#define DPM_TAIL_FIXED 0
#endif

/* Generic block width (and compilers without vector extensions). acc: B doubles of scratch. */
DPM_CLONES
static void dpm_tail_rows_any(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                              const double *qty, const double *P, dpm_index nsc, dpm_index s_base,
                              dpm_index M, dpm_index B, dpm_index k, dpm_index cap, double *acc,
                              double *cval, int32_t *cidx, int32_t *cn, double *thr, double *sv,
                              int32_t *si)
{
    for (dpm_index s0 = 0; s0 < nsc; s0 += B) {
        const dpm_index nb = nsc - s0 < B ? nsc - s0 : B;
        const double *blk = P + (s0 / B) * M * B;
        for (dpm_index a = a0; a < a1; a++) {
            memset(acc, 0, sizeof(double) * (size_t)nb);
            for (int64_t p = indptr[a]; p < indptr[a + 1]; p++) {
                const double q = qty[p];
                const double *restrict row = blk + inst[p] * B;
                double *restrict ac = acc;
                DPM_SIMD
                for (dpm_index j = 0; j < nb; j++) ac[j] += q * row[j];
            }
            double mn = acc[0];
            for (dpm_index j = 1; j < nb; j++) mn = acc[j] < mn ? acc[j] : mn;
            dpm_tail_block(acc, nb, mn, cval + a * cap, cidx + a * cap, cn + a, thr + a, k, cap,
                           s_base + s0, sv, si);
        }
    }
}

/* Dispatch on the block width.  Before the first chunk: cn = 0 and thr = -inf for every account;
 * after the last: dpm_tail_finish.  Scratch: acc (B doubles), sv / si (cap entries). */
static void dpm_tail_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                          const double *qty, const double *P, dpm_index nsc, dpm_index s_base,
                          dpm_index M, dpm_index B, dpm_index k, dpm_index cap, double *acc,
                          double *cval, int32_t *cidx, int32_t *cn, double *thr, double *sv,
                          int32_t *si)
{
#if DPM_TAIL_FIXED
    switch (B) {
    case 16: dpm_tail_rows_16(a0, a1, indptr, inst, qty, P, nsc, s_base, M, k, cap, cval, cidx, cn, thr, sv, si); return;
    case 32: dpm_tail_rows_32(a0, a1, indptr, inst, qty, P, nsc, s_base, M, k, cap, cval, cidx, cn, thr, sv, si); return;
    case 64: dpm_tail_rows_64(a0, a1, indptr, inst, qty, P, nsc, s_base, M, k, cap, cval, cidx, cn, thr, sv, si); return;
    default: break;
    }
#endif
    dpm_tail_rows_any(a0, a1, indptr, inst, qty, P, nsc, s_base, M, B, k, cap, acc, cval, cidx, cn, thr, sv, si);
}

static void dpm_gather_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                            const double *qty, const double *P, dpm_index S, double *out)
{
    for (dpm_index a = a0; a < a1; a++) {
        double *restrict o = out + a * S;
        memset(o, 0, sizeof(double) * (size_t)S);
        for (int64_t p = indptr[a]; p < indptr[a + 1]; p++) {
            const double q = qty[p];
            const double *restrict row = P + inst[p] * S;
            DPM_SIMD
            for (dpm_index s = 0; s < S; s++) o[s] += q * row[s];
        }
    }
}

#endif /* DPM_TAIL_KERNELS_H */
