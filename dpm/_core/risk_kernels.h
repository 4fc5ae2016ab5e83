/*
 * Scenario revaluation and CSR account aggregation kernels (see docs/methodology.md).
 *
 * Stage 1 (dpm_revalue_rows): each instrument is revalued once per scenario of its underlying:
 *   an M x Sp matrix of P&L per contract in the risk currency (Sp = S padded to a multiple of 8 so
 *   every row starts on a vector boundary; padded columns are 0 and never read as scenarios).
 * Stage 2 (dpm_margin_rows): each account's positions are gathered from that matrix into a per
 *   underlying scenario P&L vector (S multiply-adds per position, no pricing), then the worst
 *   weighted/dampened loss, the add-ons and the correlation combine give the margin.
 * What-if reuses an account's state (the same struct stage 2 builds) and applies orders to it.
 *
 * All pointers are to validated, contiguous arrays; nothing here allocates, raises or touches Python.
 */
#ifndef DPM_RISK_KERNELS_H
#define DPM_RISK_KERNELS_H

#include <stdint.h>
#include <string.h>
#include "black_math.h"

/* instrument kinds, as dpm.instruments.Kind */
#define DPM_SPOT 0
#define DPM_FUTURE 1
#define DPM_PERPETUAL 2
#define DPM_OPTION 3

/* currency conversion of an instrument's native P&L into the risk currency, per scenario */
#define DPM_CONV_NONE 0     /* native currency is the risk currency */
#define DPM_CONV_MUL_PRICE 1 /* coin P&L -> USD: multiply by the scenario's underlying price */
#define DPM_CONV_DIV_PRICE 2 /* USD P&L -> coin: divide by the scenario's underlying price */

/* ------------------------------------------------------------------------------------------ */
/* Stage 1: revaluation                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Value of one contract in its native currency (USD-like for linear, coin for inverse). */
static inline double dpm_contract_value(int kind, int inverse, double F, double K, double sigma,
                                        double T, double cp, double cs)
{
    if (kind == DPM_OPTION) {
        const double b = dpm_black76(F, K, sigma, T, cp);
        return cs * (inverse ? b / F : b);
    }
    /* futures, perpetuals, spot: the P&L basis is the price (linear) or -1/price (inverse) */
    return inverse ? -cs / F : cs * F;
}

/* Revalue instruments [start, stop).
 * per instrument: kind, inverse, conv, und (underlying code), F (forward), K, cp, T (years), cs
 *   (contract size), vol_cols (M x V: vol for each vol column), base (out: M, value at the base
 *   market in the risk currency).
 * per underlying u and scenario s (U x Sp arrays): move (relative price move), volcol (column of
 *   vol_cols to use), price (the underlying's price in the scenario, for currency conversion).
 * base_price: U, the underlying's current price (for the base value's conversion).
 * dt: time that passes in every scenario (years; SPAN reprices for the next day).
 * out: M x Sp P&L matrix, row i = P&L per contract of instrument i in each scenario. */
DPM_CLONES
static void dpm_revalue_rows(dpm_index start, dpm_index stop, dpm_index S, dpm_index Sp,
                             const int8_t *kind, const uint8_t *inverse, const int8_t *conv,
                             const int32_t *und, const double *F, const double *K,
                             const double *cp, const double *T, const double *cs,
                             const double *vol_cols, dpm_index V, const double *move,
                             const int32_t *volcol, const double *price, const double *base_price,
                             double dt, double *base, double *out)
{
    for (dpm_index i = start; i < stop; i++) {
        const int k = kind[i], inv = inverse[i], cv = conv[i];
        const dpm_index u = und[i];
        const double Fi = F[i], Ki = K[i], cpi = cp[i], csi = cs[i];
        const double Ti = T[i];
        const double T1 = Ti - dt > 0.0 ? Ti - dt : 0.0;
        const double *vc = vol_cols + i * V;
        const double *mv = move + u * Sp;
        const int32_t *col = volcol + u * Sp;
        const double *px = price + u * Sp;
        double v0 = dpm_contract_value(k, inv, Fi, Ki, vc[0], Ti, cpi, csi);
        v0 = cv == DPM_CONV_MUL_PRICE ? v0 * base_price[u]
           : cv == DPM_CONV_DIV_PRICE ? v0 / base_price[u] : v0;
        base[i] = v0;
        double *row = out + i * Sp;
        if (k == DPM_OPTION) {
            DPM_SIMD
            for (dpm_index s = 0; s < S; s++) {
                const double F1 = Fi * (1.0 + mv[s]);
                const double b = dpm_black76(F1, Ki, vc[col[s]], T1, cpi);
                double v = csi * (inv ? b / F1 : b);
                v = cv == DPM_CONV_MUL_PRICE ? v * px[s] : cv == DPM_CONV_DIV_PRICE ? v / px[s] : v;
                row[s] = v - v0;
            }
        } else {
            DPM_SIMD
            for (dpm_index s = 0; s < S; s++) {
                const double F1 = Fi * (1.0 + mv[s]);
                double pnl = inv ? csi * (1.0 / Fi - 1.0 / F1) : csi * (F1 - Fi);
                /* P&L is relative to the base value; convert P&L, not values, for futures */
                pnl = cv == DPM_CONV_MUL_PRICE ? pnl * px[s] : cv == DPM_CONV_DIV_PRICE ? pnl / px[s] : pnl;
                row[s] = pnl;
            }
        }
        for (dpm_index s = S; s < Sp; s++) row[s] = 0.0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Stage 2: aggregation                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* The add-on inputs of one instrument packed together (copies of the inst_* arrays below): the
 * batch gather reads one 40-byte record per position instead of six scattered arrays. */
typedef struct {
    double delta, som, notional, value;
    int32_t und, bucket;
} dpm_inst_info;

/* Market/model data shared by every account (read-only). Arrays indexed by instrument (M),
 * underlying (U), expiry bucket (NB) or tier (NT). */
typedef struct {
    dpm_index S, Sp, U, NB, NT;
    const double *pnl;          /* M x Sp (rows 64-byte aligned when the caller can) */
    const dpm_inst_info *info;  /* M: packed copy of inst_und .. inst_value */
    int und_sorted;             /* inst_und is non-decreasing in the instrument id */
    int wide;                   /* gather 64 scenarios per pass (set when the CPU has AVX-512) */
    const int32_t *inst_und;    /* M */
    const int32_t *inst_bucket; /* M: expiry bucket (roll shock), global id in [0, NB) */
    const double *inst_delta;   /* M: delta per contract, in units of the underlying */
    const double *inst_som;     /* M: short-option minimum per short contract (risk ccy), 0 if none */
    const double *inst_notional;/* M: |notional| per contract (USD), for the size charge */
    const double *inst_value;   /* M: value per contract at the base market (USD) */
    const double *weight;       /* U x Sp: fraction of the scenario P&L counted */
    const double *damp;         /* U x Sp: dampener (risk ccy) that shrinks losses toward zero */
    const int64_t *bucket_ptr;  /* U + 1: buckets of underlying u are bucket_ptr[u]..bucket_ptr[u+1] */
    const double *bucket_rate;  /* NB: roll-shock charge per unit |net delta| (risk ccy) */
    const double *und_price;    /* U: the underlying's USD price */
    const double *to_risk;      /* U: USD -> risk currency factor (1, or 1/price in coin mode) */
    const double *risk_to_usd;  /* U: risk currency -> USD (outputs are reported in USD) */
    const double *ds_threshold; /* U: delta-shock threshold (USD notional) */
    const double *ds_m_inc;     /* U */
    const double *ds_max;       /* U: cap as a fraction of the net delta notional */
    const double *size_rate;    /* U: raw size charge per USD of gross notional */
    const double *tier_bound;   /* NT: ascending upper bounds (USD of raw charge) */
    const double *tier_mult;    /* NT + 1: multiplier below each bound, and above the last */
    const double *corr;         /* U x U correlation, or NULL for the plain sum */
} dpm_agg_params;

/* One account's state: what what-if caches. Layout in one double buffer of dpm_state_size(). */
static inline dpm_index dpm_state_size(const dpm_agg_params *p)
{
    /* acc U*Sp | bucket delta NB | net delta U | som U | gross U | present U | value 1 */
    return p->U * p->Sp + p->NB + 4 * p->U + 1;
}

static inline void dpm_state_clear(const dpm_agg_params *p, double *st)
{
    memset(st, 0, sizeof(double) * (size_t)dpm_state_size(p));
}

/* Add q contracts of instrument i to the state: S multiply-adds plus the add-on accumulators. */
DPM_INLINE void dpm_state_add(const dpm_agg_params *restrict p, double *restrict st, int64_t i,
                                 double q)
{
    const dpm_index Sp = p->Sp, U = p->U, NB = p->NB;
    const dpm_index u = p->inst_und[i];
    double *restrict acc = st + u * Sp;
    const double *restrict row = p->pnl + i * Sp;
    DPM_SIMD
    for (dpm_index s = 0; s < Sp; s++) acc[s] += q * row[s];
    double *bucket = st + U * Sp;
    double *net = bucket + NB, *som = net + U, *gross = som + U, *present = gross + U;
    double *value = present + U;
    const double d = q * p->inst_delta[i];
    bucket[p->inst_bucket[i]] += d;
    net[u] += d;
    if (q < 0.0) som[u] -= q * p->inst_som[i];
    gross[u] += fabs(q) * p->inst_notional[i];
    present[u] = 1.0;
    value[0] += q * p->inst_value[i];
}

/* Outputs of one account, all in USD; per-underlying arrays have length U. */
typedef struct {
    double *total;   /* combined risk (before IM/MM factors) */
    double *value;   /* mark value of the positions */
    double *L;       /* per underlying charge */
    double *scan;    /* worst weighted loss */
    int32_t *worst;  /* worst scenario index, -1 if no loss / no position */
    double *roll;    /* roll shock */
    double *dshock;  /* delta shock */
    double *floor;   /* max(short option minimum, size charge) */
} dpm_agg_out;

static inline double dpm_tier_multiplier(const dpm_agg_params *p, double raw_usd)
{
    dpm_index t = 0;
    while (t < p->NT && raw_usd > p->tier_bound[t]) t++;
    return p->tier_mult[t];
}

#define DPM_FBLK 64 /* scenarios per block of the worst-loss search */
#if DPM_HAVE_LIBMVEC
#  define DPM_SIMD_MAX_BM _Pragma("omp simd reduction(max:bm)")
#else
#  define DPM_SIMD_MAX_BM
#endif

/* Margin of one account from its state; writes element `a` of each output array. */
DPM_INLINE void dpm_state_finish(const dpm_agg_params *restrict p, const double *restrict st,
                                    const dpm_agg_out *o, dpm_index a)
{
    const dpm_index S = p->S, Sp = p->Sp, U = p->U, NB = p->NB;
    const double *bucket = st + U * Sp;
    const double *net = bucket + NB, *som = net + U, *gross = som + U, *present = gross + U;
    const double *value = present + U;
    double *L = o->L + a * U;
    double total_sum = 0.0;
    for (dpm_index u = 0; u < U; u++) {
        double scan = 0.0, roll = 0.0, ds = 0.0, fl = 0.0, lu = 0.0;
        int32_t ws = -1;
        if (present[u] != 0.0) {
            const double *acc = st + u * Sp;
            const double *w = p->weight + u * Sp, *dm = p->damp + u * Sp;
            /* worst loss and its first scenario. The loss of scenario s is -(w*acc + damp) clipped
             * at 0 when w*acc < 0, else none; blocks of DPM_FBLK losses are computed with a
             * vectorised max, and only a block that raises the maximum is searched for the index
             * (the same result as a sequential "if (loss > scan)" scan). */
            for (dpm_index s0 = 0; s0 < S; s0 += DPM_FBLK) {
                const dpm_index nb = S - s0 < DPM_FBLK ? S - s0 : DPM_FBLK;
                double loss[DPM_FBLK];
                double bm = 0.0;
                DPM_SIMD_MAX_BM
                for (dpm_index s = 0; s < nb; s++) {
                    const double v = w[s0 + s] * acc[s0 + s];
                    const double d = v + dm[s0 + s];
                    const double l = v < 0.0 ? (d > 0.0 ? 0.0 : -d) : 0.0;
                    loss[s] = l;
                    bm = bm > l ? bm : l;
                }
                if (bm > scan) {
                    dpm_index s = 0;
                    while (loss[s] != bm) s++;
                    scan = bm;
                    ws = (int32_t)(s0 + s);
                }
            }
            for (int64_t b = p->bucket_ptr[u]; b < p->bucket_ptr[u + 1]; b++)
                roll += fabs(bucket[b]) * p->bucket_rate[b];
            const double notional = fabs(net[u]) * p->und_price[u];
            double excess = notional - p->ds_threshold[u];
            excess = excess > 0.0 ? excess : 0.0;
            ds = excess * fabs(net[u]) * p->ds_m_inc[u];
            const double cap = p->ds_max[u] * notional;
            ds = (ds < cap ? ds : cap) * p->to_risk[u];
            const double raw = p->size_rate[u] * gross[u];
            const double size = raw > 0.0 ? raw * dpm_tier_multiplier(p, raw) * p->to_risk[u] : 0.0;
            fl = som[u] > size ? som[u] : size;
            lu = scan + roll + ds;
            lu = lu > fl ? lu : fl;
            const double x = p->risk_to_usd[u];
            scan *= x; roll *= x; ds *= x; fl *= x; lu *= x;
        }
        L[u] = lu;
        o->scan[a * U + u] = scan;
        o->worst[a * U + u] = ws;
        o->roll[a * U + u] = roll;
        o->dshock[a * U + u] = ds;
        o->floor[a * U + u] = fl;
        total_sum += lu;
    }
    if (p->corr) {
        double q = 0.0;
        for (dpm_index u = 0; u < U; u++) {
            if (L[u] == 0.0) continue;
            const double *row = p->corr + u * U;
            double r = 0.0;
            for (dpm_index v = 0; v < U; v++) r += row[v] * L[v];
            q += L[u] * r;
        }
        o->total[a] = q > 0.0 ? sqrt(q) : 0.0;
    } else {
        o->total[a] = total_sum;
    }
    o->value[a] = value[0];
}

/* ------------------------------------------------------------------------------------------ */
/* Batch gather: the scenario P&L accumulators live in registers                               */
/* ------------------------------------------------------------------------------------------ */

/* dpm_state_add keeps the accumulator vector in memory, so every position's S multiply-adds wait
 * on the previous position's stores (a store-to-load chain per scenario) and the add-on sums form
 * memory-carried chains too. The batch kernel below gathers each run of same-underlying positions
 * with the accumulators held in SIMD registers (blocks of DPM_GBLK scenarios) and the add-on sums
 * in scalar registers (fused into the first block's pass, where they overlap the row loads), then
 * stores them once. Every sum is taken in the same order with the same operations as
 * dpm_state_add, so the state (and the margin) is bit-identical to it. */
#if defined(__GNUC__)
#  define DPM_HAVE_VEC 1
/* 8 doubles; aligned(8) allows unaligned rows, may_alias lets it view double arrays */
typedef double dpm_v8d __attribute__((vector_size(64), aligned(8), may_alias));
#  define DPM_GBLK 32 /* 4 x 8 doubles: 4 zmm (AVX-512) or 8 ymm (AVX2) accumulators */
#else
#  define DPM_HAVE_VEC 0
#endif

/* Running add-on sums of one underlying's run of positions (registers inside the gather loop). */
typedef struct {
    double net, som, gross, value;
    double bsum;       /* running sum of the current expiry bucket */
    int32_t bcur;      /* the current expiry bucket */
} dpm_addon_acc;

/* Add-on sums of one position (the same operations, in the same order, as dpm_state_add). */
DPM_INLINE void dpm_addon_step(const dpm_inst_info *restrict f, double q, double *restrict bucket,
                               dpm_addon_acc *restrict ad)
{
    if (f->bucket != ad->bcur) {  /* a new expiry bucket: flush the running one */
        bucket[ad->bcur] = ad->bsum;
        ad->bcur = f->bucket;
        ad->bsum = bucket[ad->bcur];
    }
    /* d feeds two adds in one basic block, as in dpm_state_add: the compiler contracts (or not)
     * both the same way in both functions */
    const double d = q * f->delta;
    ad->bsum += d;
    ad->net += d;
    /* branch-free (long/short signs are unpredictable); for q >= 0 this subtracts exactly +0 */
    const double qs = q < 0.0 ? q : 0.0;
    ad->som -= qs * f->som;
    ad->gross += fabs(q) * f->notional;
    ad->value += q * f->value;
}

#if DPM_HAVE_VEC
/* acc[0:DPM_GBLK] (+)= sum_j q[j] * row(inst[j])[s0 : s0 + DPM_GBLK], in the order of j; with
 * `addons` (a compile-time constant after inlining) also the add-on sums of the positions. */
DPM_INLINE void dpm_gather_blk(const double *restrict pnl, dpm_index Sp, dpm_index s0,
                               const int64_t *restrict inst, const double *restrict qty, int64_t n,
                               double *restrict acc, int first, int addons,
                               const dpm_inst_info *restrict info, double *restrict bucket,
                               dpm_addon_acc *restrict ad)
{
    dpm_v8d a0, a1, a2, a3;
    if (first) {
        a0 = (dpm_v8d){0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        a1 = a0; a2 = a0; a3 = a0;
    } else {
        const dpm_v8d *va = (const dpm_v8d *)acc;
        a0 = va[0]; a1 = va[1]; a2 = va[2]; a3 = va[3];
    }
    dpm_addon_acc r = *ad;
    for (int64_t j = 0; j < n; j++) {
        const int64_t i = inst[j];
        const dpm_v8d *row = (const dpm_v8d *)(pnl + i * Sp + s0);
        const double qj = qty[j];
        const dpm_v8d q = {qj, qj, qj, qj, qj, qj, qj, qj};
        a0 += q * row[0];
        a1 += q * row[1];
        a2 += q * row[2];
        a3 += q * row[3];
        if (addons) dpm_addon_step(info + i, qj, bucket, &r);
    }
    *ad = r;
    dpm_v8d *wa = (dpm_v8d *)acc;
    wa[0] = a0; wa[1] = a1; wa[2] = a2; wa[3] = a3;
}

/* The same for 64 scenarios at once (8 accumulators): used when the CPU has 32 vector registers
 * (AVX-512), where one pass over the positions carries twice as many independent FMA chains. */
DPM_INLINE void dpm_gather_blk64(const double *restrict pnl, dpm_index Sp, dpm_index s0,
                                 const int64_t *restrict inst, const double *restrict qty, int64_t n,
                                 double *restrict acc, int first, int addons,
                                 const dpm_inst_info *restrict info, double *restrict bucket,
                                 dpm_addon_acc *restrict ad)
{
    dpm_v8d a0, a1, a2, a3, a4, a5, a6, a7;
    if (first) {
        a0 = (dpm_v8d){0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        a1 = a0; a2 = a0; a3 = a0; a4 = a0; a5 = a0; a6 = a0; a7 = a0;
    } else {
        const dpm_v8d *va = (const dpm_v8d *)acc;
        a0 = va[0]; a1 = va[1]; a2 = va[2]; a3 = va[3]; a4 = va[4]; a5 = va[5]; a6 = va[6]; a7 = va[7];
    }
    dpm_addon_acc r = *ad;
    for (int64_t j = 0; j < n; j++) {
        const int64_t i = inst[j];
        const dpm_v8d *row = (const dpm_v8d *)(pnl + i * Sp + s0);
        const double qj = qty[j];
        const dpm_v8d q = {qj, qj, qj, qj, qj, qj, qj, qj};
        a0 += q * row[0];
        a1 += q * row[1];
        a2 += q * row[2];
        a3 += q * row[3];
        a4 += q * row[4];
        a5 += q * row[5];
        a6 += q * row[6];
        a7 += q * row[7];
        if (addons) dpm_addon_step(info + i, qj, bucket, &r);
    }
    *ad = r;
    dpm_v8d *wa = (dpm_v8d *)acc;
    wa[0] = a0; wa[1] = a1; wa[2] = a2; wa[3] = a3; wa[4] = a4; wa[5] = a5; wa[6] = a6; wa[7] = a7;
}

/* The same for one block of 8 scenarios (Sp not a multiple of DPM_GBLK, or Sp < DPM_GBLK). */
DPM_INLINE void dpm_gather_blk8(const double *restrict pnl, dpm_index Sp, dpm_index s0,
                                const int64_t *restrict inst, const double *restrict qty, int64_t n,
                                double *restrict acc, int first, int addons,
                                const dpm_inst_info *restrict info, double *restrict bucket,
                                dpm_addon_acc *restrict ad)
{
    dpm_v8d a0 = first ? (dpm_v8d){0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0} : *(const dpm_v8d *)acc;
    dpm_addon_acc r = *ad;
    for (int64_t j = 0; j < n; j++) {
        const int64_t i = inst[j];
        const double qj = qty[j];
        const dpm_v8d q = {qj, qj, qj, qj, qj, qj, qj, qj};
        a0 += q * *(const dpm_v8d *)(pnl + i * Sp + s0);
        if (addons) dpm_addon_step(info + i, qj, bucket, &r);
    }
    *ad = r;
    *(dpm_v8d *)acc = a0;
}
#endif

/* The state of positions (inst, qty)[0:n] of one account, as dpm_state_clear + dpm_state_add would
 * build it (bit-identical), written into `st`. Accumulator rows of underlyings the account does not
 * hold are left as they are: dpm_state_finish never reads them (present[u] == 0). */
DPM_INLINE void dpm_state_build(const dpm_agg_params *restrict p, double *restrict st,
                                const int64_t *restrict inst, const double *restrict qty, int64_t n)
{
    const dpm_index Sp = p->Sp, U = p->U, NB = p->NB;
    const dpm_inst_info *restrict info = p->info;
    double *bucket = st + U * Sp;
    double *net = bucket + NB, *som = net + U, *gross = som + U, *present = gross + U;
    for (dpm_index j = 0; j < NB + 4 * U + 1; j++) bucket[j] = 0.0;
    double value = 0.0;
    int64_t k = 0;
    while (k < n) {
        /* a run of positions on one underlying (ids are sorted, and tables group underlyings) */
        const dpm_index u = info[inst[k]].und;
        int64_t e = n;
        /* the positions of an account are sorted by instrument id (AccountBook's invariant): when
         * underlyings occupy contiguous id ranges, one check covers the account; otherwise find
         * where the run ends */
        if (!(p->und_sorted && info[inst[n - 1]].und == u)) {
            e = k + 1;
            while (e < n && info[inst[e]].und == u) e++;
        }
        const int first = present[u] == 0.0;
        double *acc = st + u * Sp;
        dpm_addon_acc ad;
        ad.net = net[u]; ad.som = som[u]; ad.gross = gross[u]; ad.value = value;
        ad.bcur = info[inst[k]].bucket;
        ad.bsum = bucket[ad.bcur];
#if DPM_HAVE_VEC
        dpm_index s0 = 0;
        int addons = 1;
        if (p->wide) {
            for (; s0 + 64 <= Sp; s0 += 64) {
                if (addons)
                    dpm_gather_blk64(p->pnl, Sp, s0, inst + k, qty + k, e - k, acc + s0, first, 1,
                                     info, bucket, &ad);
                else
                    dpm_gather_blk64(p->pnl, Sp, s0, inst + k, qty + k, e - k, acc + s0, first, 0,
                                     info, bucket, &ad);
                addons = 0;
            }
        }
        for (; s0 + DPM_GBLK <= Sp; s0 += DPM_GBLK) {
            if (addons)
                dpm_gather_blk(p->pnl, Sp, s0, inst + k, qty + k, e - k, acc + s0, first, 1, info,
                               bucket, &ad);
            else
                dpm_gather_blk(p->pnl, Sp, s0, inst + k, qty + k, e - k, acc + s0, first, 0, info,
                               bucket, &ad);
            addons = 0;
        }
        for (; s0 < Sp; s0 += 8) {
            if (addons)
                dpm_gather_blk8(p->pnl, Sp, s0, inst + k, qty + k, e - k, acc + s0, first, 1, info,
                                bucket, &ad);
            else
                dpm_gather_blk8(p->pnl, Sp, s0, inst + k, qty + k, e - k, acc + s0, first, 0, info,
                                bucket, &ad);
            addons = 0;
        }
#else
        if (first) memset(acc, 0, sizeof(double) * (size_t)Sp);
        for (int64_t j = k; j < e; j++) {
            const double *restrict row = p->pnl + inst[j] * Sp;
            const double q = qty[j];
            DPM_SIMD
            for (dpm_index s = 0; s < Sp; s++) acc[s] += q * row[s];
            dpm_addon_step(info + inst[j], q, bucket, &ad);
        }
#endif
        bucket[ad.bcur] = ad.bsum;
        net[u] = ad.net; som[u] = ad.som; gross[u] = ad.gross; value = ad.value;
        present[u] = 1.0;
        k = e;
    }
    present[U] = value;
}

/* Margin of accounts [start, stop) of a CSR book; `scratch` holds one state. */
DPM_CLONES
static void dpm_margin_rows(const dpm_agg_params *p, dpm_index start, dpm_index stop,
                            const int64_t *indptr, const int64_t *inst, const double *qty,
                            double *scratch, const dpm_agg_out *o)
{
    for (dpm_index a = start; a < stop; a++) {
        const int64_t k0 = indptr[a];
        dpm_state_build(p, scratch, inst + k0, qty + k0, indptr[a + 1] - k0);
        dpm_state_finish(p, scratch, o, a);
    }
}

/* What-if: margin after adding orders (inst, qty)[0:n] to a cached state `st` (left unchanged);
 * `work` receives the state plus the orders. Compiled like dpm_margin_rows (same clones, so the
 * same FMA contraction), the result equals a full recomputation bit for bit. */
DPM_CLONES
static void dpm_what_if(const dpm_agg_params *p, const double *st, const int64_t *inst,
                        const double *qty, int64_t n, double *work, const dpm_agg_out *o)
{
    memcpy(work, st, sizeof(double) * (size_t)dpm_state_size(p));
    for (int64_t k = 0; k < n; k++) dpm_state_add(p, work, inst[k], qty[k]);
    dpm_state_finish(p, work, o, 0);
}

/* The state of one account's positions (dpm_state_clear + dpm_state_add), same clones as above. */
DPM_CLONES
static void dpm_account_state(const dpm_agg_params *p, const int64_t *inst, const double *qty,
                              int64_t n, double *st)
{
    dpm_state_clear(p, st);
    for (int64_t k = 0; k < n; k++) dpm_state_add(p, st, inst[k], qty[k]);
}

/* 1 when the running CPU has 32 vector registers (AVX-512F): the batch gather then keeps 64
 * scenario accumulators in registers (8 zmm); narrower CPUs use blocks of 32 (no spills). */
static int dpm_cpu_wide(void)
{
#if DPM_HAVE_VEC && defined(__x86_64__) && !defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

#endif /* DPM_RISK_KERNELS_H */
