/*
 * The one revaluation kernel: P&L of instruments under joint market scenarios.
 *
 * Margin, VaR/ES, stress and solvency all fill their instrument x scenario P&L matrices here, so a
 * scenario set gives the same matrix bit for bit whichever engine asks for it.
 *
 * Scenario s moves every forward, mark and index of underlying u by move[u*ld + s] (relative), shocks
 * the implied vol of each option of u by vshock[u*ld + s] (dpm_types.h: relative with the option's
 * term-structure factor vscale[i] and the underlying's vol-up floor, or absolute vol points) and lets
 * dt years pass.  Values are Black-76 (the one formula of black_math.h) on the shocked forward; coin
 * (inverse) and quote (linear) values are converted into the plan's currency per scenario (conv[i]).
 *
 * The output is blocked: scenario c0 + s of instrument i goes to out[((s / B) * M + i) * B + s % B],
 * so each block of B scenarios is one contiguous M x B matrix (B >= the scenario count gives the plain
 * M x B layout); columns after the last scenario of the last block are zero.
 *
 * Options are revalued in groups of 8 scenarios with a constant trip count, so every scenario goes
 * through the same SIMD variant of exp/log/erfc whatever its position: results do not depend on B,
 * on the chunking of scenarios or on the threads.  The base value goes through the same group, so a
 * scenario that moves nothing over a zero horizon has a P&L of exactly 0.
 *
 * All pointers are to validated, contiguous arrays; nothing here allocates, raises or touches Python.
 */
#ifndef DPM_REVALUE_H
#define DPM_REVALUE_H

#include <stdint.h>
#include <string.h>
#include "black_math.h"
#include "dpm_types.h"

/* Shocked vol of 8 scenarios: base vols b[j], shocks v[j]. */
static inline void dpm_shock_vols8(const double *restrict b, const double *restrict v, double c,
                                   int mode, double min_up, double *restrict out)
{
    if (mode == DPM_VOL_ABSOLUTE) {
        for (int j = 0; j < 8; j++) {
            const double s = b[j] + v[j];
            out[j] = s > 0.0 ? s : 0.0;
        }
    } else {
        for (int j = 0; j < 8; j++) {
            double x = 1.0 + c * v[j];
            x = x > 0.0 ? x : 0.0;
            double s = b[j] * x;
            if (v[j] > 0.0) s = s > min_up ? s : min_up;
            out[j] = s;
        }
    }
}

/* Undiscounted Black-76 values of 8 scenarios (forwards F*(1+m[j]), vols sig[j], time T). */
static inline void dpm_black_group8(double F, double K, double cp, double T, const double *restrict m,
                                    const double *restrict sig, double *restrict o)
{
    DPM_SIMD
    for (int j = 0; j < 8; j++) o[j] = dpm_black76(F * (1.0 + m[j]), K, sig[j], T, cp);
}

/* Revalue instruments [start, stop) under scenarios [c0, c1).
 * Per instrument (M): kind, inverse, conv, und, F (forward or mark), K (strike; 1 if not an option),
 *   cp (+1 call, -1 put), T (years), cs (contract size), vol (base implied vol; 0 if not an option),
 *   vscale (term-structure factor of the vol shock), vmode (DPM_VOL_*).
 * Per underlying (U): index (today's price, for conversions), min_up (floor of vol-up shocks).
 * move, vshock: U x ld, ld >= c1 + 8 (8 padding columns that full groups may read).
 * volmat: NULL (sticky strike: base vol = vol[i]) or M x ldv base vols of scenarios [c0, c0 + ldv)
 *   (sticky moneyness: the surface read at each scenario's forward), ldv >= roundup8(c1 - c0).
 * out: blocked n_blocks x M x B (see above). */
DPM_CLONES
static void dpm_revalue(dpm_index start, dpm_index stop, dpm_index ld, dpm_index c0, dpm_index c1,
                        dpm_index M, dpm_index B, const int8_t *kind, const uint8_t *inverse,
                        const int8_t *conv, const int32_t *und, const double *F, const double *K,
                        const double *cp, const double *T, const double *cs, const double *vol,
                        const double *vscale, const int8_t *vmode, const double *index,
                        const double *min_up, const double *move, const double *vshock, double dt,
                        const double *volmat, dpm_index ldv, double *out)
{
    const dpm_index n = c1 - c0;
    for (dpm_index i = start; i < stop; i++) {
        const int k = kind[i], inv = inverse[i], cv = conv[i];
        const dpm_index u = und[i];
        const double Fi = F[i], csi = cs[i], S0 = index[u];
        const double *mv = move + u * ld + c0, *vm = vshock + u * ld + c0;
        if (k == DPM_OPTION) {
            const double Ki = K[i], cpi = cp[i], Ti = T[i], si = vol[i], ci = vscale[i];
            const double T1 = Ti - dt > 0.0 ? Ti - dt : 0.0;
            const int mode = vmode[i];
            const double mu = min_up[u];
            static const double zero8[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
            double base8[8], b0g[8], sig[8], g[8], p[8];
            for (int j = 0; j < 8; j++) base8[j] = si;
            dpm_black_group8(Fi, Ki, cpi, Ti, zero8, base8, b0g);
            const double b0 = b0g[0];
            /* value per contract in the plan's currency: linear cs*B, inverse cs*B/F; the USD value of
             * an inverse option is cs*B*S/F with F/S the same in every scenario (the curve moves
             * together), and the coin value of a linear one cs*B/S at the scenario's price */
            const double usd_inv = csi * (S0 / Fi);
            const double v0c = cv == DPM_CONV_DIV_PRICE ? csi * b0 / S0 : inv ? csi * b0 / Fi : 0.0;
            for (dpm_index s0 = 0; s0 < n; s0 += 8) {
                const double *bv = volmat ? volmat + i * ldv + s0 : base8;
                dpm_shock_vols8(bv, vm + s0, ci, mode, mu, sig);
                dpm_black_group8(Fi, Ki, cpi, T1, mv + s0, sig, g);
                for (int j = 0; j < 8; j++) {
                    const double m1 = 1.0 + mv[s0 + j];
                    double x;
                    if (cv == DPM_CONV_MUL_PRICE) x = usd_inv * (g[j] - b0);           /* inverse -> USD */
                    else if (cv == DPM_CONV_DIV_PRICE) x = csi * g[j] / (S0 * m1) - v0c; /* linear -> coin */
                    else if (inv) x = csi * g[j] / (Fi * m1) - v0c;                       /* coin, coin */
                    else x = csi * (g[j] - b0);                                           /* quote, quote */
                    p[j] = x;
                }
                if (B % 8 == 0) {
                    /* groups never straddle a block; the last may spill into the zeroed tail */
                    memcpy(out + ((s0 / B) * M + i) * B + s0 % B, p, sizeof p);
                } else {
                    for (dpm_index j = s0; j < s0 + 8 && j < n; j++)
                        out[((j / B) * M + i) * B + j % B] = p[j - s0];
                }
            }
        } else {
            /* futures, perpetuals and spot: P&L of the price move, converted (P&L, not values) */
            for (dpm_index s0 = 0; s0 < n; s0 += B) {
                const dpm_index nb = n - s0 < B ? n - s0 : B;
                double *restrict row = out + ((s0 / B) * M + i) * B;
                const double *restrict m = mv + s0;
                DPM_SIMD
                for (dpm_index j = 0; j < nb; j++) {
                    const double m1 = 1.0 + m[j];
                    const double F1 = Fi * m1;
                    double pnl = inv ? csi * (1.0 / Fi - 1.0 / F1) : csi * (F1 - Fi);
                    pnl = cv == DPM_CONV_MUL_PRICE ? pnl * (S0 * m1)
                        : cv == DPM_CONV_DIV_PRICE ? pnl / (S0 * m1) : pnl;
                    row[j] = pnl;
                }
            }
        }
        const dpm_index nlast = n % B;
        if (nlast) {
            double *row = out + (((n - 1) / B) * M + i) * B;
            for (dpm_index j = nlast; j < B; j++) row[j] = 0.0;
        }
    }
}

#endif /* DPM_REVALUE_H */
