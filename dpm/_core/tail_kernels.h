/*
 * Kernels for VaR / expected shortfall and stress tests over joint market scenarios.
 *
 * dpm_revalue_joint: P&L (USD per contract) of each instrument in each joint scenario, where
 *   scenario s moves underlying u's price by move[u*S + s] and multiplies its implied vols by
 *   volmult[u*S + s]; time advances by dt (the horizon).  Uses the one Black-76 formula of
 *   black_math.h.  The output is blocked: scenario s of instrument i is at
 *   out[((s / B) * M + i) * B + s % B], so each block of B scenarios is one contiguous M x B matrix
 *   (B = S gives the plain M x S layout); the tail of the last block is zero-filled.
 * dpm_tail_rows: for accounts [a0, a1) of a CSR book, the k largest losses over all scenarios (and
 *   their scenario indices), kept in a per-account binary min-heap; P in the blocked layout above.  Scenarios are visited in
 *   blocks of B columns, accounts inside each block, so the M x B block of P stays in cache while
 *   every account of the chunk gathers from it; the accounts x scenarios matrix is never formed.
 * dpm_gather_rows: the full N x S P&L of accounts (for stress tests with few scenarios).
 */
#ifndef DPM_TAIL_KERNELS_H
#define DPM_TAIL_KERNELS_H

#include <stdint.h>
#include <string.h>
#include "black_math.h"

DPM_CLONES
static void dpm_revalue_joint(dpm_index start, dpm_index stop, dpm_index S, dpm_index M,
                              dpm_index B, const int8_t *kind,
                              const uint8_t *inverse, const int32_t *und, const double *F,
                              const double *K, const double *cp, const double *T, const double *cs,
                              const double *vol, const double *index, const double *move,
                              const double *volmult, double dt, double *out)
{
    for (dpm_index i = start; i < stop; i++) {
        const int k = kind[i], inv = inverse[i];
        const dpm_index u = und[i];
        const double Fi = F[i], Ki = K[i], cpi = cp[i], csi = cs[i], si = vol[i], Si = index[u];
        const double Ti = T[i];
        const double T1 = Ti - dt > 0.0 ? Ti - dt : 0.0;
        const double *mv = move + u * S, *vm = volmult + u * S;
        const double conv = (k == 3 && inv) ? Si / Fi : 1.0;
        const double v0 = k == 3 ? csi * conv * dpm_black76(Fi, Ki, si, Ti, cpi) : 0.0;
        for (dpm_index s0 = 0; s0 < S; s0 += B) {
            const dpm_index nb = S - s0 < B ? S - s0 : B;
            double *row = out + ((s0 / B) * M + i) * B;
            const double *m = mv + s0, *v = vm + s0;
            if (k == 3) {
                /* USD value: linear cs*B; inverse (coin) cs*B/F converted at the underlying's price
                 * S, i.e. cs*B*S/F, and F1/S1 = F/S in every scenario (the curve moves together). */
                DPM_SIMD
                for (dpm_index j = 0; j < nb; j++) {
                    const double F1 = Fi * (1.0 + m[j]);
                    row[j] = csi * conv * dpm_black76(F1, Ki, si * v[j], T1, cpi) - v0;
                }
            } else {
                /* inverse: coin P&L cs*(1/F - 1/F1), worth that many coins at the scenario price */
                DPM_SIMD
                for (dpm_index j = 0; j < nb; j++) {
                    const double F1 = Fi * (1.0 + m[j]);
                    row[j] = inv ? csi * (1.0 / Fi - 1.0 / F1) * Si * (1.0 + m[j]) : csi * (F1 - Fi);
                }
            }
            for (dpm_index j = nb; j < B; j++) row[j] = 0.0;
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

DPM_CLONES
static void dpm_tail_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                          const double *qty, const double *P, dpm_index S, dpm_index M,
                          dpm_index B, dpm_index k,
                          double *acc, double *heap_val, int32_t *heap_idx, int32_t *heap_n)
{
    for (dpm_index a = a0; a < a1; a++) heap_n[a] = 0;
    for (dpm_index s0 = 0; s0 < S; s0 += B) {
        const dpm_index nb = S - s0 < B ? S - s0 : B;
        for (dpm_index a = a0; a < a1; a++) {
            memset(acc, 0, sizeof(double) * (size_t)nb);
            for (int64_t p = indptr[a]; p < indptr[a + 1]; p++) {
                const double q = qty[p];
                const double *restrict row = P + ((s0 / B) * M + inst[p]) * B; /* blocked */
                double *restrict ac = acc;
                DPM_SIMD
                for (dpm_index j = 0; j < nb; j++) ac[j] += q * row[j];
            }
            double *hv = heap_val + a * k;
            int32_t *hi = heap_idx + a * k;
            for (dpm_index j = 0; j < nb; j++)
                dpm_heap_push(hv, hi, heap_n + a, k, -acc[j], (int32_t)(s0 + j));
        }
    }
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
