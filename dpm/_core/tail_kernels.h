/*
 * Kernels for VaR / expected shortfall and stress tests over joint market scenarios.
 *
 * dpm_revalue_joint: P&L (USD per contract) of instruments [start, stop) in the joint scenarios
 *   [c0, c1), where scenario s moves underlying u's price by move[u*ld + s] and multiplies its
 *   implied vols by volmult[u*ld + s]; time advances by dt (the horizon).  Uses the one Black-76 formula of
 *   black_math.h.  The output is blocked: scenario c0 + s of instrument i is at
 *   out[((s / B) * M + i) * B + s % B], so each block of B scenarios is one contiguous M x B matrix
 *   (B = S gives the plain M x S layout); the tail of the last block is zero-filled.
 * dpm_tail_rows: for accounts [a0, a1) of a CSR book, updates the k largest losses (and their
 *   scenario indices) kept in a per-account binary min-heap with the scenarios of one chunk of P
 *   (blocked layout above, nsc scenarios numbered from s_base).  The chunk is visited block by block
 *   and, inside a block, account by account, so the M x B block stays in L2 while every account of
 *   the range gathers from it; the accounts x scenarios matrix is never formed.  For B = 16, 32 and
 *   64 the B-wide accumulator of an account is held in vector registers for the whole position
 *   loop (GCC vector extensions, lowered to 2/4/8 zmm, 4/8/16 ymm or xmm per target clone): one FMA
 *   with a memory operand per 8 scenarios and position, no load/store of the accumulator.  Any other
 *   B takes a generic loop.  A block whose largest loss cannot enter a full heap is skipped without
 *   touching the heap (exactly the same pushes as visiting every scenario).
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

/* Option P&L of 8 consecutive scenarios (moves m[0..7], vol multipliers v[0..7]) into o[0..7].
 * Always a full group of 8 with a constant trip count, so every scenario goes through the same
 * SIMD variant of exp/log/erfc whatever its position in a block: results do not depend on B, on
 * the chunking of scenarios or on the number of threads. */
static inline void dpm_option_group8(double Fi, double Ki, double si, double T1, double cpi, double scale,
                                     double v0, const double *restrict m, const double *restrict v,
                                     double *restrict o)
{
    DPM_SIMD
    for (int j = 0; j < 8; j++)
        o[j] = scale * dpm_black76(Fi * (1.0 + m[j]), Ki, si * v[j], T1, cpi) - v0;
}

/* move / volmult: U x ld (ld >= c1 + 8: the 8 columns after the last scenario are padding that
 * full groups of 8 may read). */
DPM_CLONES
static void dpm_revalue_joint(dpm_index start, dpm_index stop, dpm_index ld, dpm_index c0,
                              dpm_index c1, dpm_index M, dpm_index B, const int8_t *kind,
                              const uint8_t *inverse, const int32_t *und, const double *F,
                              const double *K, const double *cp, const double *T, const double *cs,
                              const double *vol, const double *index, const double *move,
                              const double *volmult, double dt, double *out)
{
    const dpm_index n = c1 - c0;
    for (dpm_index i = start; i < stop; i++) {
        const int k = kind[i], inv = inverse[i];
        const dpm_index u = und[i];
        const double Fi = F[i], Ki = K[i], cpi = cp[i], csi = cs[i], si = vol[i], Si = index[u];
        const double Ti = T[i];
        const double T1 = Ti - dt > 0.0 ? Ti - dt : 0.0;
        const double *mv = move + u * ld + c0, *vm = volmult + u * ld + c0;
        /* USD value: linear cs*B; inverse (coin) cs*B/F converted at the underlying's price S, i.e.
         * cs*B*S/F, and F1/S1 = F/S in every scenario (the curve moves together). */
        const double scale = csi * ((k == 3 && inv) ? Si / Fi : 1.0);
        if (k == 3) {
            /* today's value through the same SIMD group as the scenarios, so that a scenario that
             * moves nothing over a zero horizon has a P&L of exactly 0 */
            static const double m0[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
            static const double v1[8] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
            double g0[8];
            dpm_option_group8(Fi, Ki, si, Ti, cpi, scale, 0.0, m0, v1, g0);
            const double v0 = g0[0];
            if (B % 8 == 0) {
                /* groups of 8 never straddle a block; the last one may spill into the block's
                 * zero-filled tail, which is rewritten below */
                for (dpm_index s0 = 0; s0 < n; s0 += 8)
                    dpm_option_group8(Fi, Ki, si, T1, cpi, scale, v0, mv + s0, vm + s0,
                                      out + ((s0 / B) * M + i) * B + s0 % B);
            } else {
                double g[8];
                for (dpm_index s0 = 0; s0 < n; s0 += 8) {
                    dpm_option_group8(Fi, Ki, si, T1, cpi, scale, v0, mv + s0, vm + s0, g);
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
        /* zero the tail of the last block (padding the accounts' kernel reads but never pushes) */
        const dpm_index nlast = n % B;
        if (nlast) {
            double *row = out + (((n - 1) / B) * M + i) * B;
            for (dpm_index j = nlast; j < B; j++) row[j] = 0.0;
        }
    }
}

/* Push (loss, s) into a min-heap of capacity k holding the k largest losses seen so far. */
static inline void dpm_heap_push(double *hv, int32_t *hi, int32_t *hn, dpm_index k, double loss, int32_t s)
{
    dpm_index n = *hn;
    if (n < k) {
        dpm_index c = n;
        while (c > 0) {
            const dpm_index p = (c - 1) / 2;
            if (hv[p] <= loss) break;
            hv[c] = hv[p];
            hi[c] = hi[p];
            c = p;
        }
        hv[c] = loss;
        hi[c] = s;
        *hn = (int32_t)(n + 1);
        return;
    }
    if (!(loss > hv[0])) return;
    dpm_index c = 0;
    for (;;) {
        dpm_index l = 2 * c + 1;
        if (l >= k) break;
        if (l + 1 < k && hv[l + 1] < hv[l]) l++;
        if (hv[l] >= loss) break;
        hv[c] = hv[l];
        hi[c] = hi[l];
        c = l;
    }
    hv[c] = loss;
    hi[c] = s;
}

/* Push the nb valid P&L values of one account and block (scenarios s0, s0+1, ...) unless the block's
 * worst P&L mn cannot enter the (full) heap. */
static inline void dpm_heap_block(const double *pnl, dpm_index nb, double mn, double *hv, int32_t *hi,
                                  int32_t *hn, dpm_index k, dpm_index s0)
{
    if (*hn == k && !(-mn > hv[0])) return;
    for (dpm_index j = 0; j < nb; j++) dpm_heap_push(hv, hi, hn, k, -pnl[j], (int32_t)(s0 + j));
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
                              dpm_index M, dpm_index k, double *heap_val, int32_t *heap_idx,          \
                              int32_t *heap_n)                                                        \
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
            for (int j = 1; j < (W); j++) mn = pnl[j] < mn ? pnl[j] : mn;                            \
            dpm_heap_block(pnl, nb, mn, heap_val + a * k, heap_idx + a * k, heap_n + a, k,           \
                           s_base + s0);                                                             \
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
                              dpm_index M, dpm_index B, dpm_index k, double *acc, double *heap_val,
                              int32_t *heap_idx, int32_t *heap_n)
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
            dpm_heap_block(acc, nb, mn, heap_val + a * k, heap_idx + a * k, heap_n + a, k, s_base + s0);
        }
    }
}

/* Dispatch on the block width; heaps must be initialised (heap_n = 0) before the first chunk. */
static void dpm_tail_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                          const double *qty, const double *P, dpm_index nsc, dpm_index s_base,
                          dpm_index M, dpm_index B, dpm_index k, double *acc, double *heap_val,
                          int32_t *heap_idx, int32_t *heap_n)
{
#if DPM_TAIL_FIXED
    switch (B) {
    case 16: dpm_tail_rows_16(a0, a1, indptr, inst, qty, P, nsc, s_base, M, k, heap_val, heap_idx, heap_n); return;
    case 32: dpm_tail_rows_32(a0, a1, indptr, inst, qty, P, nsc, s_base, M, k, heap_val, heap_idx, heap_n); return;
    case 64: dpm_tail_rows_64(a0, a1, indptr, inst, qty, P, nsc, s_base, M, k, heap_val, heap_idx, heap_n); return;
    default: break;
    }
#endif
    dpm_tail_rows_any(a0, a1, indptr, inst, qty, P, nsc, s_base, M, B, k, acc, heap_val, heap_idx, heap_n);
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
