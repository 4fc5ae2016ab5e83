/*
 * The one gather: accounts read rows of an instrument x scenario P&L matrix through their CSR
 * positions (S multiply-adds per position, no pricing), then reduce their scenario vectors.
 *
 * - dpm_gather_W (W = 8, 16, 32, 64): one parameterised register-blocked accumulation of W scenarios
 *   over a run of positions, optionally fused with the add-on sums; every user below calls it.
 * - Margin (dpm_margin_rows, dpm_what_if): per-underlying scenario vectors plus add-on inputs (the
 *   account "state"), then the worst weighted/dampened loss per underlying, the add-ons, and the
 *   combination across underlyings (dpm_types.h DPM_AGG_*: sum, sqrt(L'CL), joint correlated
 *   scenarios, Deribit-style pnl_offset, SPAN-style spread credits).
 * - Tails (dpm_tail_rows, dpm_tail_finish): the joint scenario vector of each account offered to a
 *   per-account buffer of its k worst losses (VaR / ES), block by block of scenarios.
 * - Full vectors (dpm_gather_rows): the N x S P&L of accounts (stress tests, risk vectors).
 *
 * Every account is reduced by one thread in a fixed order (positions in CSR order, scenarios in
 * increasing order): results do not depend on the number of threads or on the block width.
 * All pointers are to validated, contiguous arrays; nothing here allocates, raises or touches Python.
 */
#ifndef DPM_GATHER_H
#define DPM_GATHER_H
#if defined(_MSC_VER)
#  include <intrin.h>
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "black_math.h"
#include "dpm_types.h"

/* ------------------------------------------------------------------------------------------ */
/* Register-blocked accumulation                                                               */
/* ------------------------------------------------------------------------------------------ */

/* Running add-on sums of one underlying's run of positions (registers inside the gather loop). */
typedef struct {
    double net, som, gross, value;
} dpm_addon_acc;

/* Add-on sums of one position. */
DPM_INLINE void dpm_addon_step(const dpm_inst_info *restrict f, double q, double *restrict bucket,
                               dpm_addon_acc *restrict ad)
{
    /* straight into the bucket's slot: the same sums in the same order as a running sum flushed at
     * each change of bucket, without that branch (buckets alternate unpredictably within an
     * account; 6-7 % of margin_many's time on the AVX-512 host) */
    const double d = q * f->delta;
    bucket[f->bucket] += d;
    ad->net += d;
    /* branch-free (long/short signs are unpredictable); for q >= 0 this subtracts exactly +0 */
    const double qs = q < 0.0 ? q : 0.0;
    ad->som -= qs * f->som;
    ad->gross += fabs(q) * f->notional;
    ad->value += q * f->value;
}

#if defined(__GNUC__)
#  define DPM_HAVE_VEC 1
/* 8 doubles; aligned(8) allows unaligned rows, may_alias lets it view double arrays */
typedef double dpm_v8d __attribute__((vector_size(64), aligned(8), may_alias));
/* 4 doubles: the native width of AVX2. GCC lowers 8-double vectors on a 256-bit target through the
 * stack (store-forwarding stalls on every position: 4x slower than scipy's sparse product on a Zen 3
 * host), so CPUs without AVX-512 accumulate in these. */
typedef double dpm_v4d __attribute__((vector_size(32), aligned(8), may_alias));

/* acc[0:W] (+)= sum_j q[j] * P[inst[j] * ld + s0 : + W], in the order of j, with the W/8
 * accumulators held in vector registers for the whole run; with `addons` (a compile-time constant
 * after inlining) also the add-on sums of the positions, fused into the pass where they overlap the
 * row loads. */
#  define DPM_DEFINE_GATHER(W, VT, VL, NAME)                                                        \
DPM_INLINE void NAME##_##W(const double *restrict P, dpm_index ld, dpm_index s0,                    \
                               const int64_t *restrict inst, const double *restrict qty, int64_t n, \
                               double *restrict acc, int first, int addons,                         \
                               const dpm_inst_info *restrict info, double *restrict bucket,         \
                               dpm_addon_acc *restrict ad)                                          \
{                                                                                                   \
    enum { NV = (W) / (VL) };                                                                       \
    VT a[NV];                                                                                       \
    _Pragma("GCC unroll 8")                                                                         \
    for (int v = 0; v < NV; v++)                                                                    \
        a[v] = first ? (VT){0.0} : ((const VT *)acc)[v];                                            \
    dpm_addon_acc r;                                                                                \
    if (addons) r = *ad;                                                                            \
    for (int64_t j = 0; j < n; j++) {                                                               \
        const int64_t i = inst[j];                                                                  \
        const VT *row = (const VT *)(P + i * ld + s0);                                              \
        const double qj = qty[j];                                                                   \
        const VT q = qj - (VT){0.0};  /* broadcast */                                               \
        _Pragma("GCC unroll 8")                                                                     \
        for (int v = 0; v < NV; v++) a[v] += q * row[v];                                            \
        if (addons) dpm_addon_step(info + i, qj, bucket, &r);                                       \
    }                                                                                               \
    if (addons) *ad = r;                                                                            \
    _Pragma("GCC unroll 8")                                                                         \
    for (int v = 0; v < NV; v++) ((VT *)acc)[v] = a[v];                                             \
}
#else
#  define DPM_HAVE_VEC 0
/* portable fallback: the same sums in the same order, without vector extensions */
#  define DPM_DEFINE_GATHER(W, VT, VL, NAME)                                                        \
DPM_INLINE void NAME##_##W(const double *restrict P, dpm_index ld, dpm_index s0,                    \
                               const int64_t *restrict inst, const double *restrict qty, int64_t n, \
                               double *restrict acc, int first, int addons,                         \
                               const dpm_inst_info *restrict info, double *restrict bucket,         \
                               dpm_addon_acc *restrict ad)                                          \
{                                                                                                   \
    if (first) memset(acc, 0, sizeof(double) * (W));                                                \
    for (int64_t j = 0; j < n; j++) {                                                               \
        const double *row = P + inst[j] * ld + s0;                                                  \
        for (int s = 0; s < (W); s++) acc[s] += qty[j] * row[s];                                    \
        if (addons) dpm_addon_step(info + inst[j], qty[j], bucket, ad);                             \
    }                                                                                               \
}
#endif
/* 1 when the running CPU has 32 vector registers (AVX-512F): the gather then keeps 64 scenario
 * accumulators in registers (8 zmm); narrower CPUs use blocks of 32 in 4-double vectors (8 ymm). */
static int dpm_cpu_wide(void)
{
#if DPM_HAVE_VEC && defined(__x86_64__) && !defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

/* dpm_gather_W: 8-double vectors (AVX-512); dpm_gather_n_W: 4-double vectors (AVX2 and narrower).
 * Every lane runs the same operations in the same order, so both give the same bits. */
#if DPM_HAVE_VEC
DPM_DEFINE_GATHER(8, dpm_v8d, 8, dpm_gather)
DPM_DEFINE_GATHER(32, dpm_v8d, 8, dpm_gather)
DPM_DEFINE_GATHER(64, dpm_v8d, 8, dpm_gather)
DPM_DEFINE_GATHER(8, dpm_v4d, 4, dpm_gather_n)
DPM_DEFINE_GATHER(16, dpm_v4d, 4, dpm_gather_n)
DPM_DEFINE_GATHER(32, dpm_v4d, 4, dpm_gather_n)
#else
DPM_DEFINE_GATHER(8, double, 1, dpm_gather)
DPM_DEFINE_GATHER(32, double, 1, dpm_gather)
DPM_DEFINE_GATHER(64, double, 1, dpm_gather)
DPM_DEFINE_GATHER(8, double, 1, dpm_gather_n)
DPM_DEFINE_GATHER(16, double, 1, dpm_gather_n)
DPM_DEFINE_GATHER(32, double, 1, dpm_gather_n)
#endif

/* ------------------------------------------------------------------------------------------ */
/* Margin: per-underlying vectors, add-ons, combination across underlyings                     */
/* ------------------------------------------------------------------------------------------ */

/* 8-double vectors (GCC / Clang vector extensions: AVX-512 registers in the v4 clone, two or four
 * narrower ones elsewhere) for the joint scan's lane-wise maxima */
#if defined(__GNUC__) && !defined(__clang__)
/* static inline helpers only: the by-value vector ABI GCC warns about never crosses a call boundary */
#  pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef double dpm_v8d __attribute__((vector_size(64)));
typedef int64_t dpm_v8l __attribute__((vector_size(64)));
static inline dpm_v8d dpm_v8d_splat(double x) { return (dpm_v8d){x, x, x, x, x, x, x, x}; }
static inline dpm_v8l dpm_v8l_splat(int64_t x) { return (dpm_v8l){x, x, x, x, x, x, x, x}; }
static inline dpm_v8d dpm_v8d_load(const double *p)
{
    dpm_v8d v;
    memcpy(&v, p, sizeof v);  /* unaligned load */
    return v;
}

#define DPM_JOINT_MAX 4 /* joint scenarios over at most this many held underlyings (else: the sum) */

/* Market/model data shared by every account (read-only). Arrays indexed by instrument (M),
 * underlying (U), scenario (Sp = S padded to a multiple of 8), expiry bucket (NB) or tier (NT). */
typedef struct {
    dpm_index S, Sp, U, NB, NT, M;
    dpm_index S_scan;           /* scenarios the worst-loss scan reads: Sp when the padding columns
                                 * are zero in pnl, weight and damp (they never lose: the same result
                                 * with no scalar remainder loop), else S */
    const double *pnl;          /* M x Sp P&L per contract in the risk currency */
    const double *pnl_blk;      /* the same, blocked by scenarios (dpm_block_copy), or NULL */
    dpm_index group;            /* accounts per group of dpm_margin_rows (1: row by row from pnl) */
    const dpm_inst_info *info;  /* M: packed add-on inputs */
    int und_sorted;             /* inst_und is non-decreasing in the instrument id */
    int wide;                   /* gather 64 scenarios per pass (the CPU has 32 vector registers) */
    const double *weight;       /* U x Sp: fraction of the scenario P&L counted */
    const double *damp;         /* U x Sp: dampener (risk ccy) shrinking P&L toward zero */
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
    double scan_round;          /* > 0: worst loss rounded to 1/scan_round in the risk ccy (Deribit: 1e9) */
    int agg;                    /* DPM_AGG_* */
    const double *corr;         /* U x U correlation (DPM_AGG_SQRT_CORR) */
    /* DPM_AGG_JOINT */
    dpm_index G;                /* groups (distinct price moves) per underlying, at most */
    const int32_t *grp;         /* U x Sp: group of each scenario (-1: padding, not a scenario) */
    const int32_t *ngrp;        /* U */
    const int64_t *pair_off;    /* U x U: offset of the c-table of (u, v), u < v, in ctab, or -1 */
    const double *ctab;         /* c(g_u, g_v) = min(1, 1 / Mahalanobis norm), row-major per pair */
    const double *gz;           /* U x G: normalised move of each group (move / scan range, clipped) */
    const int64_t *mask_off;    /* 2^U: offset in qsub of the inverse correlation of a held subset of
                                 * 3 or 4 underlyings (row-major, in increasing underlying order) */
    const double *qsub;
    /* DPM_AGG_PNL_OFFSET */
    const double *offset;       /* U: fraction of a gain that offsets losses */
    const double *max_offset;   /* U: largest gain (USD) that counts, per scenario */
    /* DPM_AGG_SPREAD */
    dpm_index NSP;
    const int32_t *sp_leg;      /* NSP x 2: underlyings of each spread, in priority order */
    const double *sp_rate;      /* NSP: credit rate */
    const double *sp_ratio;     /* NSP: USD delta of leg b per USD delta of leg a */
} dpm_agg_params;

/* One account's state, what what-if caches: acc U*Sp | bucket delta NB | net delta U | som U |
 * gross U | present U | value 1 */
static inline dpm_index dpm_state_size(const dpm_agg_params *p)
{
    return p->U * p->Sp + p->NB + 4 * p->U + 1;
}

/* scratch of dpm_state_finish (group maxima and their scenarios, the aggregated vector) */
static inline dpm_index dpm_finish_scratch_size(const dpm_agg_params *p)
{
    return 2 * p->U * (p->G > 0 ? p->G : 1) + p->Sp + 2 * p->U + 8;
}

static inline void dpm_state_clear(const dpm_agg_params *p, double *st)
{
    memset(st, 0, sizeof(double) * (size_t)dpm_state_size(p));
}

/* Add q contracts of instrument i to the state: S multiply-adds plus the add-on accumulators. The
 * account already holds `cur` of i: the scenario P&L, deltas and value are linear in q, the gross
 * notional and the short-option sums move by |cur + q| - |cur| and min(cur + q, 0) - min(cur, 0)
 * (cur = 0: the plain sum, bit for bit). */
DPM_INLINE void dpm_state_add_to(const dpm_agg_params *restrict p, double *restrict st, int64_t i, double q,
                                 double cur)
{
    const dpm_index Sp = p->Sp, U = p->U, NB = p->NB;
    const dpm_inst_info *f = p->info + i;
    const dpm_index u = f->und;
    double *restrict acc = st + u * Sp;
    const double *restrict row = p->pnl + i * Sp;
    DPM_SIMD
    for (dpm_index s = 0; s < Sp; s++) acc[s] += q * row[s];
    double *bucket = st + U * Sp;
    double *net = bucket + NB, *som = net + U, *gross = som + U, *present = gross + U;
    double *value = present + U;
    const double d = q * f->delta;
    bucket[f->bucket] += d;
    net[u] += d;
    const double after = cur + q;
    const double qs = (after < 0.0 ? after : 0.0) - (cur < 0.0 ? cur : 0.0);
    som[u] -= qs * f->som;
    gross[u] += (fabs(after) - fabs(cur)) * f->notional;
    present[u] = 1.0;
    value[0] += q * f->value;
}

DPM_INLINE void dpm_state_add(const dpm_agg_params *restrict p, double *restrict st, int64_t i, double q)
{
    dpm_state_add_to(p, st, i, q, 0.0);
}

/* Index of instrument i among an account's positions (ids[0:n] increasing), -1 if not held. */
static inline int64_t dpm_held_index(const int64_t *ids, int64_t n, int64_t i)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (ids[mid] < i) lo = mid + 1;
        else hi = mid;
    }
    return (lo < n && ids[lo] == i) ? lo : -1;
}

/* Width of the scenario block that starts at s0: the register-blocked passes (64s on wide CPUs,
 * then 32s, then 8s) of every gather, and the layout of the plan's blocked copy of the P&L. */
static inline dpm_index dpm_block_width(dpm_index Sp, dpm_index s0, int wide)
{
    if (wide && s0 + 64 <= Sp) return 64;
    if (s0 + 32 <= Sp) return 32;
    return 8;
}

/* The blocked copy of the M x Sp P&L: the block of scenarios [s0, s0 + w) is an M x w matrix at
 * out + s0 * M, so one block of every instrument is a contiguous array that stays in L2 while a
 * group of accounts gathers from it (the rows of a 1,652 x 64 matrix do not fit in 512 KB). */
static void dpm_block_copy(const double *P, dpm_index M, dpm_index Sp, int wide, double *out)
{
    for (dpm_index s0 = 0; s0 < Sp;) {
        const dpm_index w = dpm_block_width(Sp, s0, wide);
        for (dpm_index i = 0; i < M; i++) memcpy(out + s0 * M + i * w, P + i * Sp + s0, sizeof(double) * (size_t)w);
        s0 += w;
    }
}

/* acc[0:w] (+)= the run's rows P[inst[j] * ld + s0 : + w] (w from dpm_block_width); `addons` a
 * literal at each call site, so the fused add-on sums stay a compile-time choice. */
DPM_INLINE void dpm_gather_block(const double *restrict P, dpm_index ld, dpm_index s0, dpm_index w, int wide,
                                 const int64_t *restrict inst,
                                 const double *restrict qty, int64_t n, double *restrict acc, int first,
                                 int addons, const dpm_inst_info *restrict info, double *restrict bucket,
                                 dpm_addon_acc *restrict ad)
{
    if (w == 0) { /* no scenarios at all: the add-ons still count */
        if (addons)
            for (int64_t j = 0; j < n; j++) dpm_addon_step(info + inst[j], qty[j], bucket, ad);
        return;
    }
    if (wide) {
        if (w == 64) dpm_gather_64(P, ld, s0, inst, qty, n, acc, first, addons, info, bucket, ad);
        else if (w == 32) dpm_gather_32(P, ld, s0, inst, qty, n, acc, first, addons, info, bucket, ad);
        else dpm_gather_8(P, ld, s0, inst, qty, n, acc, first, addons, info, bucket, ad);
    } else {
        if (w == 32) dpm_gather_n_32(P, ld, s0, inst, qty, n, acc, first, addons, info, bucket, ad);
        else dpm_gather_n_8(P, ld, s0, inst, qty, n, acc, first, addons, info, bucket, ad);
    }
}

/* acc[0:ld] = the positions' rows (ld a multiple of 8), one register-blocked pass per block of
 * dpm_block_width scenarios (the full vectors of stress, tails and reverse stress). */
DPM_INLINE void dpm_gather_run(const double *restrict P, dpm_index ld, const int64_t *restrict inst,
                               const double *restrict qty, int64_t n, double *restrict acc, int wide)
{
    for (dpm_index s0 = 0; s0 < ld;) {
        const dpm_index w = dpm_block_width(ld, s0, wide);
        dpm_gather_block(P, ld, s0, w, wide, inst, qty, n, acc + s0, 1, 0, NULL, NULL, NULL);
        s0 += w;
    }
}

/* The scenarios [s0, s0 + w) of the state of positions (inst, qty)[0:n] of one account (sorted by
 * instrument id), read from P[i * ld + off : + w] (the plan's row-major P&L with ld = Sp, off = s0,
 * or its blocked copy: the block at s0 with ld = w, off = 0): each run of same-underlying positions
 * in one register-blocked pass. The first block (s0 = 0) also sets the add-on sums and the held
 * underlyings; later blocks start the held underlyings' slices from zero, which gives the bits of
 * the first pass's zero-initialised registers. Accumulator rows of underlyings the account does not
 * hold are left as they are: dpm_state_finish never reads them (present[u] == 0). */
DPM_INLINE void dpm_state_block(const dpm_agg_params *restrict p, double *restrict st,
                                const int64_t *restrict inst, const double *restrict qty, int64_t n,
                                dpm_index s0, dpm_index w, const double *restrict P, dpm_index ld,
                                dpm_index off)
{
    const dpm_index Sp = p->Sp, U = p->U, NB = p->NB;
    const dpm_inst_info *restrict info = p->info;
    double *bucket = st + U * Sp;
    double *net = bucket + NB, *som = net + U, *gross = som + U, *present = gross + U;
    if (s0 == 0) {
        for (dpm_index j = 0; j < NB + 4 * U + 1; j++) bucket[j] = 0.0;
    } else {
        for (dpm_index u = 0; u < U; u++)
            if (present[u] != 0.0) memset(st + u * Sp + s0, 0, sizeof(double) * (size_t)w);
    }
    double value = 0.0;
    int64_t k = 0;
    while (k < n) {
        const dpm_index u = info[inst[k]].und;
        int64_t e = n;
        /* one check covers the account when underlyings occupy contiguous id ranges */
        if (!(p->und_sorted && info[inst[n - 1]].und == u)) {
            e = k + 1;
            while (e < n && info[inst[e]].und == u) e++;
        }
        if (s0 == 0) {
            const int first = present[u] == 0.0;
            dpm_addon_acc ad;
            ad.net = net[u]; ad.som = som[u]; ad.gross = gross[u]; ad.value = value;
            dpm_gather_block(P, ld, off, w, p->wide, inst + k, qty + k, e - k, st + u * Sp, first, 1, info, bucket, &ad);
            net[u] = ad.net; som[u] = ad.som; gross[u] = ad.gross; value = ad.value;
            present[u] = 1.0;
        } else {
            dpm_gather_block(P, ld, off, w, p->wide, inst + k, qty + k, e - k, st + u * Sp + s0, 0, 0, NULL, NULL, NULL);
        }
        k = e;
    }
    if (s0 == 0) present[U] = value;
}

/* Outputs of one account, all in USD; per-underlying arrays have length U. */
typedef struct {
    double *total;   /* combined risk (before IM/MM factors) */
    double *value;   /* mark value of the positions */
    double *L;       /* per underlying charge (standalone) */
    double *scan;    /* worst weighted loss (standalone) */
    int32_t *worst;  /* per underlying: its scenario in the binding case (-1: none) */
    double *roll;    /* roll shock */
    double *dshock;  /* delta shock */
    double *floor;   /* max(short option minimum, size charge) */
    double *joint;   /* the cross-underlying scan (joint / offset worst loss, or net of credits) */
} dpm_agg_out;

/* The name of the capsule that carries a plan's parameters between kernel modules
   (AggregationPlan.params_capsule, read by the C check path). */
#define DPM_PARAMS_CAPSULE "dpm._core._gather.dpm_agg_params"

/* The outputs of one account laid over one buffer of 3 + 6 U doubles (the what-if evaluators'):
   total | value | joint | L, scan, roll, dshock, floor (U each) | worst (U int32 in the last U). */
static inline void dpm_out_layout(double *outs, dpm_index U, dpm_agg_out *o)
{
    o->total = outs;
    o->value = outs + 1;
    o->joint = outs + 2;
    o->L = outs + 3;
    o->scan = outs + 3 + U;
    o->roll = outs + 3 + 2 * U;
    o->dshock = outs + 3 + 3 * U;
    o->floor = outs + 3 + 4 * U;
    o->worst = (int32_t *)(outs + 3 + 5 * U);
}

static inline double dpm_tier_multiplier(const dpm_agg_params *p, double raw_usd)
{
    dpm_index t = 0;
    while (t < p->NT && raw_usd > p->tier_bound[t]) t++;
    return p->tier_mult[t];
}

/* Weighted, dampened P&L of scenario s: the dampener shrinks |w acc| toward zero (never past it).
 * Both sides are computed and one is selected (no branch: the sign of the P&L is unpredictable in
 * the loops over scenarios). */
static inline double dpm_weighted(double w, double acc, double dm)
{
    const double v = w * acc;
    const double dn = v + dm, dp = v - dm;
    const double rn = dn > 0.0 ? 0.0 : dn;
    const double rp = dp < 0.0 ? 0.0 : dp;
    return v < 0.0 ? rn : rp;
}

#define DPM_FBLK 64 /* scenarios per block of the worst-loss search */
#if DPM_HAVE_LIBMVEC
#  define DPM_SIMD_MAX_BM_CK _Pragma("omp simd reduction(max:bm) reduction(+:ck)")
#  define DPM_SIMD_MIN_FIRST _Pragma("omp simd reduction(min:first)")
#else
#  define DPM_SIMD_MIN_FIRST
#  define DPM_SIMD_MAX_BM_CK
#endif

/* Worst loss (>= 0) of one underlying's vector and its first scenario (-1 if no loss); NaN when any
 * entry of the vector is not finite (fail closed: a NaN must never turn into "no loss"). */
static inline double dpm_scan(const double *restrict acc, const double *restrict w,
                              const double *restrict dm, dpm_index S, int32_t *ws)
{
    double scan = 0.0, chk = 0.0;
    *ws = -1;
    /* blocks of losses with a vectorised max; only a block that raises the maximum is searched for
     * the index (the same result as a sequential "if (loss > scan)" scan) */
    for (dpm_index s0 = 0; s0 < S; s0 += DPM_FBLK) {
        const dpm_index nb = S - s0 < DPM_FBLK ? S - s0 : DPM_FBLK;
        double loss[DPM_FBLK];
        double bm = 0.0, ck = 0.0;
        /* ck: NaN iff an entry is inf/NaN, else a sum of signed zeros, whatever the order (so the
         * vectorised reduction may reorder it) */
        DPM_SIMD_MAX_BM_CK
        for (dpm_index s = 0; s < nb; s++) {
            const double v = w[s0 + s] * acc[s0 + s];
            const double d = v + dm[s0 + s];
            const double l = v < 0.0 ? (d > 0.0 ? 0.0 : -d) : 0.0;
            loss[s] = l;
            bm = bm > l ? bm : l;
            ck += acc[s0 + s] * 0.0;
        }
        chk += ck;
        if (bm > scan) {
            /* the first scenario of the block's maximum, as a vectorised min-reduction (a search
             * loop stopped at an unpredictable place: half the scan's time) */
            int32_t first = (int32_t)nb;
            DPM_SIMD_MIN_FIRST
            for (dpm_index s = 0; s < nb; s++) {
                const int32_t c = loss[s] == bm ? (int32_t)s : (int32_t)nb;
                first = first < c ? first : c;
            }
            scan = bm;
            *ws = (int32_t)(s0 + first);
        }
    }
    return chk == 0.0 ? scan : NAN;
}

/* Joint worst loss over the held underlyings h[0..k) (k >= 2): every combination of one group
 * (price move) per underlying, each at its worst vol state, its total loss scaled by
 * min(1, 1/m) where m is the Mahalanobis norm of the normalised moves under the correlation: a
 * combination outside the correlation ellipse is pulled back onto it.  lg/sg: per underlying and
 * group the largest loss (USD, signed) and its scenario.  Returns the loss (>= 0) and writes the
 * scenario of each held underlying in the binding combination (-1 when no combination loses). */
/* compiled per ISA like the kernel (an out-of-line function is otherwise built for the baseline ISA
 * only: SSE2, 2-double vectors; it took 28 % of the margin of two-underlying accounts). One
 * dispatched copy, so the margin kernel and the what-if use the same one: the same bits. */
DPM_CLONES
static double dpm_joint(const dpm_agg_params *restrict p, const dpm_index *h, int k,
                        const double *restrict lg, const int32_t *restrict sg, int32_t *worst,
                        double *restrict work)
{
    const dpm_index G = p->G, U = p->U;
    double best = 0.0;
    int32_t arg[DPM_JOINT_MAX];
    for (int a = 0; a < k; a++) arg[a] = -1;
    if (k == 2) {
        /* c-table rows are padded with zeros to n2p columns (a multiple of 8); l2 is copied into
         * `work` with zeros after it, so every row is whole vectors. A padding entry is 0 (or NaN)
         * and never beats best >= 0. Pass 1 takes lane-wise maxima over every pair with no
         * reduction per row, each lane remembering the first row where it reached its maximum; the
         * first row holding the overall maximum is the earliest of those, and its first column
         * reaching it gives the pair a row-major scan with "if (x > best)" keeps. A row with
         * l1[a] + max(l2) <= 0 cannot win (c <= 1) and is skipped, NaN included, as that scan
         * skipped it. */
        const dpm_index u = h[0], v = h[1];
        const dpm_index n1 = p->ngrp[u], n2 = p->ngrp[v];
        const dpm_index n2p = (n2 + 7) & ~(dpm_index)7;
        const double *l1 = lg + u * G, *l2 = lg + v * G;
        const double *c = p->ctab + p->pair_off[u * U + v];
        double m2 = l2[0];
        for (dpm_index b = 1; b < n2; b++) m2 = l2[b] > m2 ? l2[b] : m2;
        double *restrict l2p = work;
        for (dpm_index b = 0; b < n2p; b++) l2p[b] = b < n2 ? l2[b] : 0.0;
        /* 8 lanes in vector-extension registers (an array here was kept in memory behind masked
         * stores); the selects are bitwise, the comparison gives all-ones / zero lanes */
        dpm_v8d vmx[4];
        dpm_v8l vrow[4];  /* four independent chains: blocks of 8 columns j, j + 4, ... */
        for (int j = 0; j < 4; j++) {
            vmx[j] = dpm_v8d_splat(-INFINITY);
            vrow[j] = dpm_v8l_splat(-1);
        }
        for (dpm_index a = 0; a < n1; a++) {
            if (!(l1[a] + m2 > 0.0)) continue;
            const double *ca = c + a * n2p;
            const dpm_v8d la = dpm_v8d_splat(l1[a]);
            const dpm_v8l av = dpm_v8l_splat((int64_t)a);
            for (dpm_index b0 = 0; b0 < n2p; b0 += 32) {
                for (int j = 0; j < 4 && b0 + 8 * j < n2p; j++) {
                    const dpm_index bj = b0 + 8 * j;
                    const dpm_v8d x = dpm_v8d_load(ca + bj) * (la + dpm_v8d_load(l2p + bj));
                    const dpm_v8l up = x > vmx[j];
                    vmx[j] = (dpm_v8d)(((dpm_v8l)x & up) | ((dpm_v8l)vmx[j] & ~up));
                    vrow[j] = (av & up) | (vrow[j] & ~up);
                }
            }
        }
        /* per lane of the four chains, its maximum and the first row where it was reached */
        double vm[32];
        int32_t vr[32];
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++) {
                vm[8 * j + l] = vmx[j][l];
                vr[8 * j + l] = (int32_t)vrow[j][l];
            }
        double bm = 0.0;
        for (int l = 0; l < 32; l++) bm = vm[l] > bm ? vm[l] : bm;
        if (bm > 0.0) {
            /* the first row holding the maximum: the earliest of the lanes that reach it */
            int32_t ra = (int32_t)n1;
            for (int l = 0; l < 32; l++)
                if (vm[l] == bm && vr[l] < ra) ra = vr[l];
            const double *ca = c + (dpm_index)ra * n2p;
            const double la = l1[ra];
            int32_t first = (int32_t)n2p;
            DPM_SIMD_MIN_FIRST
            for (dpm_index b = 0; b < n2p; b++) {
                const int32_t cb = ca[b] * (la + l2p[b]) == bm ? (int32_t)b : (int32_t)n2p;
                first = first < cb ? first : cb;
            }
            arg[0] = ra;
            arg[1] = first;
            best = bm;
        }
    } else {
        /* k = 3 or 4: the inverse correlation of the held subset, the combinations enumerated */
        uint64_t mask = 0;
        for (int a = 0; a < k; a++) mask |= (uint64_t)1 << h[a];
        const double *Q = p->qsub + p->mask_off[mask];
        dpm_index ng[DPM_JOINT_MAX], idx[DPM_JOINT_MAX];
        for (int a = 0; a < k; a++) {
            ng[a] = p->ngrp[h[a]];
            idx[a] = 0;
        }
        for (;;) {
            double tot = 0.0;
            double z[DPM_JOINT_MAX];
            for (int a = 0; a < k; a++) {
                tot += lg[h[a] * G + idx[a]];
                z[a] = p->gz[h[a] * G + idx[a]];
            }
            if (tot > best) { /* c <= 1: only a combination whose unscaled loss beats best can win */
                double m2 = 0.0;
                for (int a = 0; a < k; a++) {
                    double r = 0.0;
                    for (int b = 0; b < k; b++) r += Q[a * k + b] * z[b];
                    m2 += z[a] * r;
                }
                const double c = m2 > 1.0 ? 1.0 / sqrt(m2) : 1.0;
                const double x = c * tot;
                if (x > best) {
                    best = x;
                    for (int a = 0; a < k; a++) arg[a] = (int32_t)idx[a];
                }
            }
            int a = k - 1;
            while (a >= 0 && ++idx[a] == ng[a]) idx[a--] = 0;
            if (a < 0) break;
        }
    }
    for (int a = 0; a < k; a++) worst[h[a]] = arg[a] >= 0 ? sg[h[a] * G + arg[a]] : -1;
    return best;
}

/* Margin of one account from its state; writes element `a` of each output array.  fs: scratch of
 * dpm_finish_scratch_size() doubles. */
DPM_INLINE void dpm_state_finish(const dpm_agg_params *restrict p, const double *restrict st,
                                 const dpm_agg_out *o, dpm_index a, double *restrict fs)
{
    const dpm_index S = p->S, Sp = p->Sp, U = p->U, NB = p->NB;
    const double *bucket = st + U * Sp;
    const double *net = bucket + NB, *som = net + U, *gross = som + U, *present = gross + U;
    const double *value = present + U;
    double *L = o->L + a * U;
    double *scan_o = o->scan + a * U, *roll_o = o->roll + a * U, *ds_o = o->dshock + a * U;
    double *fl_o = o->floor + a * U;
    int32_t *worst = o->worst + a * U;
    double total_sum = 0.0, scan_sum = 0.0, addon_sum = 0.0, floor_sum = 0.0;
    int held = 0;
    for (dpm_index u = 0; u < U; u++) {
        double scan = 0.0, roll = 0.0, ds = 0.0, fl = 0.0, lu = 0.0;
        int32_t ws = -1;
        if (present[u] != 0.0) {
            held++;
            scan = dpm_scan(st + u * Sp, p->weight + u * Sp, p->damp + u * Sp, p->S_scan, &ws);
            if (p->scan_round > 0.0) scan = round(scan * p->scan_round) / p->scan_round;
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
            /* fail closed: a non-finite input anywhere (P&L, deltas, notionals) makes the charge NaN,
             * which the caller reports; the comparisons above would otherwise drop it */
            if (!(isfinite(scan) && isfinite(net[u]) && isfinite(som[u]) && isfinite(gross[u])
                  && isfinite(roll) && isfinite(ds) && isfinite(fl)))
                lu = NAN;
            const double x = p->risk_to_usd[u];
            scan *= x; roll *= x; ds *= x; fl *= x; lu *= x;
        }
        L[u] = lu;
        scan_o[u] = scan;
        worst[u] = ws;
        roll_o[u] = roll;
        ds_o[u] = ds;
        fl_o[u] = fl;
        total_sum += lu;
        scan_sum += scan;
        addon_sum += roll + ds;
        floor_sum += fl;
    }
    double total = total_sum, joint = scan_sum;
    if (p->agg == DPM_AGG_SQRT_CORR) {
        double q = 0.0;
        for (dpm_index u = 0; u < U; u++) {
            if (L[u] == 0.0) continue;
            const double *row = p->corr + u * U;
            double r = 0.0;
            for (dpm_index v = 0; v < U; v++) r += row[v] * L[v];
            q += L[u] * r;
        }
        total = q > 0.0 ? sqrt(q) : 0.0;
    } else if (held >= 2 && p->agg == DPM_AGG_JOINT && held <= DPM_JOINT_MAX
               && (held == 2 || p->mask_off != NULL)) {
        const dpm_index G = p->G;
        double *lg = fs;
        int32_t *sg = (int32_t *)(fs + U * G);
        dpm_index h[DPM_JOINT_MAX];
        int k = 0;
        for (dpm_index u = 0; u < U; u++) {
            if (present[u] == 0.0) continue;
            h[k++] = u;
            /* per group (price move): the largest signed loss over its scenarios, in USD */
            const double *acc = st + u * Sp, *w = p->weight + u * Sp, *dm = p->damp + u * Sp;
            const int32_t *grp = p->grp + u * Sp;
            const double x = p->risk_to_usd[u];
            double *lgu = lg + u * G;
            int32_t *sgu = sg + u * G;
            for (dpm_index g = 0; g < p->ngrp[u]; g++) {
                lgu[g] = -INFINITY;
                sgu[g] = -1;
            }
            /* scenarios of one group come in runs (the vol states of one price move): the run's
             * maximum is kept in registers with selects and merged into lg once per run. Runs go in
             * increasing s and every comparison is strict, so each group keeps its first scenario
             * of the largest loss, exactly as one "if (l > lg[g])" per scenario did (that loop
             * stored and reloaded lg[g] every scenario and mispredicted its branches: about half of
             * a cross-underlying what-if) */
            double *lv = fs + 2 * U * G; /* the signed losses, in one vectorised pass */
            DPM_SIMD
            for (dpm_index s = 0; s < S; s++) lv[s] = -dpm_weighted(w[s], acc[s], dm[s]) * x;
            dpm_index s = 0;
            while (s < S) {
                const int32_t g = grp[s];
                if (g < 0) { s++; continue; }
                double rb = -INFINITY;
                int32_t rs = -1;
                for (; s < S && grp[s] == g; s++) {
                    const double l = lv[s];
                    const int up = l > rb;
                    rs = up ? (int32_t)s : rs;
                    rb = up ? l : rb;
                }
                if (rb > lgu[g]) {
                    lgu[g] = rb;
                    sgu[g] = rs;
                }
            }
        }
        /* the losses' scratch is free again: Sp >= n2p doubles for the joint scan */
        joint = dpm_joint(p, h, k, lg, sg, worst, fs + 2 * U * G);
        const double jt = joint + addon_sum;
        total = jt > floor_sum ? jt : floor_sum;
    } else if (held >= 2 && p->agg == DPM_AGG_PNL_OFFSET) {
        /* aligned vectors: scenario s of every underlying together; gains count at `offset`,
         * capped at max_offset (USD) */
        double best = 0.0;
        int32_t sb = -1;
        for (dpm_index s = 0; s < S; s++) {
            double A = 0.0;
            int any = 0;
            for (dpm_index u = 0; u < U; u++) {
                if (present[u] == 0.0) continue;
                if (p->weight[u * Sp + s] == 0.0 && p->damp[u * Sp + s] == 0.0) continue;
                any = 1;
                double g = dpm_weighted(p->weight[u * Sp + s], st[u * Sp + s], p->damp[u * Sp + s])
                           * p->risk_to_usd[u];
                if (g > 0.0) {
                    g = g < p->max_offset[u] ? g : p->max_offset[u];
                    g *= p->offset[u];
                }
                A += g;
            }
            if (any && -A > best) {
                best = -A;
                sb = (int32_t)s;
            }
        }
        joint = best;
        for (dpm_index u = 0; u < U; u++)
            if (present[u] != 0.0) worst[u] = sb;
        const double jt = joint + addon_sum;
        total = jt > floor_sum ? jt : floor_sum;
    } else if (held >= 2 && p->agg == DPM_AGG_SPREAD) {
        /* spreads formed in priority order from opposite net deltas (USD); each spread earns
         * rate x the weighted price risk (scan per USD of delta) of both legs */
        double *rem = fs;  /* remaining |delta| (USD) per underlying */
        for (dpm_index u = 0; u < U; u++) rem[u] = present[u] != 0.0 ? fabs(net[u]) * p->und_price[u] : 0.0;
        double credit = 0.0;
        for (dpm_index k2 = 0; k2 < p->NSP; k2++) {
            const dpm_index ua = p->sp_leg[2 * k2], ub = p->sp_leg[2 * k2 + 1];
            if (present[ua] == 0.0 || present[ub] == 0.0) continue;
            if (!(net[ua] * net[ub] < 0.0)) continue;  /* only opposite deltas spread */
            const double ra = fabs(net[ua]) * p->und_price[ua], rb = fabs(net[ub]) * p->und_price[ub];
            if (!(ra > 0.0 && rb > 0.0)) continue;
            const double ratio = p->sp_ratio[k2];
            double nsp = rem[ua] < rem[ub] / ratio ? rem[ua] : rem[ub] / ratio;
            if (!(nsp > 0.0)) continue;
            credit += p->sp_rate[k2] * (nsp * scan_o[ua] / ra + nsp * ratio * scan_o[ub] / rb);
            rem[ua] -= nsp;
            rem[ub] -= nsp * ratio;
        }
        joint = scan_sum - credit;
        total = total_sum - credit;
        total = total > floor_sum ? total : floor_sum;
    }
    if (!isfinite(total_sum)) total = NAN; /* a NaN charge is never hidden by the combination */
    o->total[a] = total;
    if (o->joint) o->joint[a] = joint;
    o->value[a] = value[0];
}

/* Accounts ahead whose CSR rows the account loops fetch (dpm_prefetch_rows). */
#define DPM_CSR_AHEAD 4

/* Fetch the CSR rows (instruments and quantities) of account a, when a < stop, into the cache: a
 * loop over accounts calls it for the account DPM_CSR_AHEAD ahead. The hardware prefetchers left
 * the start of each account's rows to a miss (the gather runs at random rows of P between them):
 * on the AVX-512 Zen host, margin_many of 100,000 accounts took 27.8-29.3 ms on one thread
 * without, 25.0-25.5 ms with (15.5-16.0 and 13.3-13.6 ms on two); account_pnl 29.4-31.0 -> 24.7-24.9
 * ms. Not in dpm_tail_rows: it reads a chunk's rows once per block of scenarios, from L2 after the
 * first pass, and the Monte Carlo ES benchmark showed no gain. No effect on any result. */
DPM_INLINE void dpm_prefetch_rows(const int64_t *indptr, const int64_t *inst, const double *qty,
                                  dpm_index a, dpm_index stop)
{
#if defined(__GNUC__)
    if (a >= stop) return;
    const int64_t k0 = indptr[a], k1 = indptr[a + 1];
    for (int64_t k = k0; k < k1; k += 8) {  /* 8 entries: one 64-byte line of each array */
        __builtin_prefetch(inst + k);
        __builtin_prefetch(qty + k);
    }
#else
    (void)indptr; (void)inst; (void)qty; (void)a; (void)stop;
#endif
}

/* Scratch (doubles) of dpm_margin_rows for n accounts: the group's states plus the finish scratch. */
static inline dpm_index dpm_margin_scratch_size(const dpm_agg_params *p, dpm_index n)
{
    const dpm_index G = p->group > 0 ? p->group : 1;
    const dpm_index g = n < G ? (n > 0 ? n : 1) : G;
    return g * dpm_state_size(p) + dpm_finish_scratch_size(p);
}

/* Margin of accounts [start, stop) of a CSR book; `scratch` holds dpm_margin_scratch_size(p, stop -
 * start) doubles. Accounts go by groups of p->group (64 by default), each group block of scenarios
 * by block from the blocked P&L: the group's states (64 x 1.3 KB with two underlyings) and one block
 * stay in L2 together. On a 512 KB-L2 host this was 10-30 % faster than one account at a time, even
 * for matrices of 136 KB; p->group = 1 reads the row-major matrix one account at a time. Every
 * scenario of every account still sums its positions in CSR order, so the bits depend neither on
 * the grouping nor on the layout read. */
DPM_CLONES
static void dpm_margin_rows(const dpm_agg_params *p, dpm_index start, dpm_index stop,
                            const int64_t *indptr, const int64_t *inst, const double *qty,
                            double *scratch, const dpm_agg_out *o)
{
    const dpm_index ss = dpm_state_size(p), Sp = p->Sp, M = p->M;
    const dpm_index G = p->group > 0 ? p->group : 1;
    const int blocked = G > 1;
    const dpm_index g_max = stop - start < G ? stop - start : G;
    double *fs = scratch + g_max * ss;
    for (dpm_index g0 = start; g0 < stop; g0 += G) {
        const dpm_index g1 = stop - g0 < G ? stop : g0 + G;
        dpm_index s0 = 0;
        do {  /* at least one pass: with no scenarios the add-ons still count */
            const dpm_index w = s0 < Sp ? dpm_block_width(Sp, s0, p->wide) : 0;
            const double *P = blocked ? (w > 0 ? p->pnl_blk + s0 * M : p->pnl_blk) : p->pnl;
            const dpm_index ld = blocked ? w : Sp, off = blocked ? 0 : s0;
            for (dpm_index a = g0; a < g1; a++) {
                const int64_t k0 = indptr[a];
                if (s0 == 0)  /* later blocks read the rows again from the cache */
                    dpm_prefetch_rows(indptr, inst, qty, a + DPM_CSR_AHEAD, stop);
                dpm_state_block(p, scratch + (a - g0) * ss, inst + k0, qty + k0, indptr[a + 1] - k0, s0, w, P,
                                ld, off);
            }
            s0 += w > 0 ? w : 8;
        } while (s0 < Sp);
        for (dpm_index a = g0; a < g1; a++) dpm_state_finish(p, scratch + (a - g0) * ss, o, a, fs);
    }
}

/* The next chunk of a job shared by threads: an atomic counter, so a thread that joins late (the
 * caller, after its own work) just takes what is left. */
static inline int64_t dpm_next_chunk(int64_t *counter)
{
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
#elif defined(_MSC_VER)
    return _InterlockedExchangeAdd64((volatile __int64 *)counter, 1);
#else
#  error "dpm_next_chunk: no atomic add for this compiler"
#endif
}

/* an order larger than this times the gross notional left in its underlying is margined from the
 * merged positions (the incremental sum would keep rounding of about this many ulps of the result) */
#define DPM_WHATIF_REBUILD 1024.0

/* What the account holds of inst[k] before order k: its position (when the positions are known),
 * then the earlier orders on the same instrument, summed left to right. */
static inline double dpm_held_before(int held_known, const int64_t *held_ids, const double *held_qty,
                                     int64_t n_held, const int64_t *inst, const double *qty, int64_t k)
{
    double cur = 0.0;
    if (held_known) {
        const int64_t h = dpm_held_index(held_ids, n_held, inst[k]);
        cur = h >= 0 ? held_qty[h] : 0.0;
    }
    for (int64_t j = 0; j < k; j++)
        if (inst[j] == inst[k]) cur += qty[j];
    return cur;
}

/* What-if: margin after adding orders (inst, qty)[0:n] to a cached state `st` (left unchanged);
 * `work` receives the state plus the orders (and the finish scratch after it). */
DPM_CLONES
static void dpm_what_if(const dpm_agg_params *p, const double *st, const int64_t *inst,
                        const double *qty, int64_t n, int held_known, const int64_t *held_ids,
                        const double *held_qty, int64_t n_held, double *work, const dpm_agg_out *o)
{
    /* Orders are added to the cached state, with the held quantity of their instrument (the
     * position, then the earlier orders on it) for the non-linear add-on sums. Adding q P[i] to a
     * state that holds about -q P[i] cancels, leaving rounding of the order of eps |q P[i]|: when an
     * order (with what it meets) is large against what the underlying keeps in gross notional, the
     * state is rebuilt instead from the merged positions in instrument order, exactly as a full
     * recompute sums them. */
    memcpy(work, st, sizeof(double) * (size_t)dpm_state_size(p));
    /* per underlying, the largest notional an order meets (its held quantity found once per order),
     * in the finish scratch, which is free until dpm_state_finish; compared below with the gross
     * notional the underlying keeps after all the orders */
    double *met_max = work + dpm_state_size(p);
    for (dpm_index u = 0; u < p->U; u++) met_max[u] = -INFINITY;
    for (int64_t k = 0; k < n; k++) {
        const double cur = dpm_held_before(held_known, held_ids, held_qty, n_held, inst, qty, k);
        dpm_state_add_to(p, work, inst[k], qty[k], cur);
        const dpm_inst_info *f = p->info + inst[k];
        const double met = (fabs(cur) + fabs(qty[k])) * f->notional;
        if (met > met_max[f->und]) met_max[f->und] = met;
    }
    int rebuild = 0;
    if (held_known) {
        const double *gross = work + p->U * p->Sp + p->NB + 2 * p->U;
        for (dpm_index u = 0; u < p->U; u++)
            if (met_max[u] > DPM_WHATIF_REBUILD * gross[u]) rebuild = 1;
    }
    if (!rebuild) {
        dpm_state_finish(p, work, o, 0, work + dpm_state_size(p));
        return;
    }
    dpm_state_clear(p, work);
    int64_t h = 0, last = INT64_MIN;
    for (;;) {
        /* the next order instrument (ids increasing; a few orders: a scan per distinct id) */
        int64_t next = INT64_MAX;
        int any = 0;
        for (int64_t k = 0; k < n; k++)
            if (inst[k] > last && inst[k] <= next) { next = inst[k]; any = 1; }
        if (!any) break;
        while (h < n_held && held_ids[h] < next) { dpm_state_add(p, work, held_ids[h], held_qty[h]); h++; }
        double q = 0.0;
        if (h < n_held && held_ids[h] == next) { q = held_qty[h]; h++; }
        for (int64_t k = 0; k < n; k++)  /* the position, then the orders left to right */
            if (inst[k] == next) q += qty[k];
        dpm_state_add(p, work, next, q);
        last = next;
    }
    while (h < n_held) { dpm_state_add(p, work, held_ids[h], held_qty[h]); h++; }
    dpm_state_finish(p, work, o, 0, work + dpm_state_size(p));
}

/* dpm_state_finish of one state into row 0 of o, in the clones of dpm_margin_rows and dpm_what_if
 * (inlined into code compiled for the default target it would contract no multiply-adds and could
 * differ from them in the last bit). */
DPM_CLONES
static void dpm_finish_one(const dpm_agg_params *p, const double *st, const dpm_agg_out *o, double *fs)
{
    dpm_state_finish(p, st, o, 0, fs);
}

/* The state of one account's positions (dpm_state_clear + dpm_state_add), same clones as above. */
DPM_CLONES
static void dpm_account_state(const dpm_agg_params *p, const int64_t *inst, const double *qty,
                              int64_t n, double *st)
{
    dpm_state_clear(p, st);
    for (int64_t k = 0; k < n; k++) dpm_state_add(p, st, inst[k], qty[k]);
}


/* ---------------------------------------------------------------------------------------------
 * Per-account tail: the k largest losses, ranked by (loss descending, scenario index ascending) -
 * a total order, so the set kept is canonical (ties go to the earlier scenario).
 *
 * Each account owns a candidate buffer of cap >= k entries (cval, cidx), a count cn and a
 * threshold thr.  A loss is appended only if loss > thr; when the buffer is full it is compacted
 * to its k best (quickselect) and thr becomes the k-th best loss.  Scenarios arrive in increasing
 * index, so a later loss equal to thr ranks below the k-th kept one and may be dropped.  Compared
 * with a binary heap this turns the frequent updates into sequential appends and does a few
 * O(cap) selections per account.  The sequence of appends depends only on the order of the
 * scenarios, so the result does not depend on B, on the chunking or on the threads.
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

/* Reorder (v, ix)[0, n) so that its k best entries come first, the k-th best at k-1 (quickselect
 * with a median-of-three pivot; branchless out-of-place partition into the scratch sv, si). */
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

/* Reduce every account of [a0, a1) to its k best candidates, sorted worst loss first. */
static void dpm_tail_finish(dpm_index a0, dpm_index a1, dpm_index k, dpm_index cap, double *cval,
                            int32_t *cidx, int32_t *cn, double *sv, int32_t *si)
{
    for (dpm_index a = a0; a < a1; a++) {
        if (cn[a] > k) (void)dpm_tail_compact(cval + a * cap, cidx + a * cap, cn + a, k, sv, si);
        dpm_tail_sort(cval + a * cap, cidx + a * cap, cn[a], sv, si);
    }
}

/* Offer nsc scenarios (numbered from s_base) of one blocked chunk P (n_blocks x M x B, B a multiple
 * of 8) to the tail buffers of accounts [a0, a1): the chunk is visited block by block and, inside a
 * block, account by account, so the M x B block stays in cache while every account gathers from it.
 * Scratch: acc (B doubles), sv / si (cap entries).  Before the first chunk: cn = 0, thr = -inf. */
DPM_CLONES
static void dpm_tail_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                          const double *qty, const double *P, dpm_index nsc, dpm_index s_base,
                          dpm_index M, dpm_index B, dpm_index k, dpm_index cap, double *acc,
                          double *cval, int32_t *cidx, int32_t *cn, double *thr, double *sv,
                          int32_t *si)
{
    const int wide = dpm_cpu_wide();
    for (dpm_index s0 = 0; s0 < nsc; s0 += B) {
        const dpm_index nb = nsc - s0 < B ? nsc - s0 : B;
        const double *blk = P + (s0 / B) * M * B;
        for (dpm_index a = a0; a < a1; a++) {
            const int64_t p0 = indptr[a], np = indptr[a + 1] - p0;
            /* the register-resident widths; any other width in steps of 8 */
            if (wide && B == 64)
                dpm_gather_64(blk, 64, 0, inst + p0, qty + p0, np, acc, 1, 0, NULL, NULL, NULL);
            else if (wide && B == 32)
                dpm_gather_32(blk, 32, 0, inst + p0, qty + p0, np, acc, 1, 0, NULL, NULL, NULL);
            else if (B == 32)
                dpm_gather_n_32(blk, 32, 0, inst + p0, qty + p0, np, acc, 1, 0, NULL, NULL, NULL);
            else if (B == 16)
                dpm_gather_n_16(blk, 16, 0, inst + p0, qty + p0, np, acc, 1, 0, NULL, NULL, NULL);
            else
                dpm_gather_run(blk, B, inst + p0, qty + p0, np, acc, wide);
            double mn = acc[0];
            for (dpm_index j = 1; j < nb; j++) mn = acc[j] < mn ? acc[j] : mn;
            dpm_tail_block(acc, nb, mn, cval + a * cap, cidx + a * cap, cn + a, thr + a, k, cap,
                           s_base + s0, sv, si);
        }
    }
}

/* The full P&L of accounts [a0, a1) over S scenarios (P: M x ld, ld >= S a multiple of 8) into
 * rows of out (N x ldo, ldo >= ld). */
DPM_CLONES
static void dpm_gather_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                            const double *qty, const double *P, dpm_index ld, double *out, dpm_index ldo)
{
    const int wide = dpm_cpu_wide();
    for (dpm_index a = a0; a < a1; a++) {
        const int64_t p0 = indptr[a];
        dpm_prefetch_rows(indptr, inst, qty, a + DPM_CSR_AHEAD, a1);
        dpm_gather_run(P, ld, inst + p0, qty + p0, indptr[a + 1] - p0, out + a * ldo, wide);
    }
}

/* The full P&L of the listed accounts acc[0..n) (rows of out, N x ldo) from the whole book: a
 * group of accounts margined without building its sub-book. */
DPM_CLONES
static void dpm_gather_select(const int64_t *acc, dpm_index n, const int64_t *indptr, const int64_t *inst,
                              const double *qty, const double *P, dpm_index ld, double *out, dpm_index ldo)
{
    const int wide = dpm_cpu_wide();
    for (dpm_index i = 0; i < n; i++) {
        const int64_t a = acc[i], p0 = indptr[a];
        dpm_gather_run(P, ld, inst + p0, qty + p0, indptr[a + 1] - p0, out + i * ldo, wide);
    }
}

/* Each listed account at its own scenario: out[i] = sum over the positions p of account acc[i] of
 * qty[p] * Pt[col[i] * ldt + imap[inst[p]]] (Pt: scenarios x ldt instruments of a sub-table, imap:
 * the book's nmap instrument ids to that sub-table's rows). Positions are summed in book order. An
 * instrument outside the map or the sub-table gives NaN, which the caller's finiteness check
 * reports: never an out-of-range read. */
static void dpm_gather_own(const int64_t *acc, const int64_t *col, dpm_index n, const int64_t *indptr,
                           const int64_t *inst, const int64_t *imap, dpm_index nmap, const double *qty,
                           const double *Pt, dpm_index ldt, double *out)
{
    for (dpm_index i = 0; i < n; i++) {
        const int64_t a = acc[i];
        const double *row = Pt + col[i] * ldt;
        double s = 0.0;
        for (int64_t p = indptr[a]; p < indptr[a + 1]; p++) {
            const uint64_t id = (uint64_t)inst[p];
            const int64_t m = id < (uint64_t)nmap ? imap[id] : -1;
            s += (m >= 0 && m < ldt) ? qty[p] * row[m] : NAN;
        }
        out[i] = s;
    }
}

#endif /* DPM_GATHER_H */
