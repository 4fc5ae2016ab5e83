/*
 * Black-76 / Black-Scholes-Merton formulas and array kernels for dpm.
 *
 * Written in C (not Cython) for one reason: the array loops must carry `#pragma omp simd` and
 * `restrict` so that GCC vectorises them and calls the SIMD versions of exp/log/erfc from glibc's
 * vector math library (libmvec).  We declare those SIMD variants here instead of compiling with
 * -ffast-math, so IEEE semantics (NaN, inf, signed zero) stay intact; inputs are validated as finite
 * in Python before any kernel runs.  Cython code reaches every function below through
 * `_black.pxd`, so each formula is written exactly once.
 *
 * Portability: the array kernels are built with GCC `target_clones` (x86-64-v4 = AVX-512,
 * x86-64-v3 = AVX2+FMA, baseline x86-64) and the dynamic loader picks the clone for the running CPU,
 * so one wheel runs on old and new x86-64 machines.  DPM_NATIVE (set by setup.py when the user asks
 * for -march=native) drops the clones.
 *
 * Conventions: B(F, K, s) is the undiscounted Black price per unit of underlying, s = sigma*sqrt(T)
 * the total volatility, cp = +1 call / -1 put.  Prices are computed on the out-of-the-money side and
 * the in-the-money option is obtained by put-call parity (C - P = F - K): this avoids the loss of
 * relative accuracy of F*N(d1) - K*N(d2) when both terms are close to one.
 */
#ifndef DPM_BLACK_MATH_H
#define DPM_BLACK_MATH_H

#include <math.h>
#include <stddef.h>

#if defined(__GLIBC__) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) \
    && !defined(DPM_NO_SIMD_MATH)
#  define DPM_HAVE_LIBMVEC 1
/* glibc declares these only under __FAST_MATH__; declaring them ourselves keeps IEEE semantics. */
#  pragma omp declare simd notinbranch
extern double exp(double);
#  pragma omp declare simd notinbranch
extern double log(double);
#  if __GLIBC_PREREQ(2, 35)
#    pragma omp declare simd notinbranch
extern double erfc(double);
#  endif
#  define DPM_SIMD _Pragma("omp simd")
#  if defined(DPM_NATIVE)
#    define DPM_CLONES
#  else
#    define DPM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#  endif
#else
#  define DPM_HAVE_LIBMVEC 0
#  define DPM_SIMD
#  define DPM_CLONES
#endif

/* 1 in a DPM_DEBUG=1 build (bounds checks on); exposed to Python as dpm._core._black.DEBUG_BUILD */
#ifndef DPM_DEBUG_BUILD
#  define DPM_DEBUG_BUILD 0
#endif

#define DPM_INV_SQRT_2PI 0.398942280401432677939946059934
#define DPM_SQRT1_2 0.707106781186547524400844362105

/* Elements whose price lost more than this factor to cancellation (K N(d2) > limit x price, where
 * the price includes the intrinsic value added by parity, so in-the-money options whose small OTM
 * part is inaccurate but negligible are not redone) are recomputed in extended precision (see
 * dpm_black_otm_precise); so are in-the-money options whose time value (nearly) cancelled away.
 * The fast path's relative error grows like ~4e-15 x the cancellation factor (libmvec erfc/exp/log
 * are not correctly rounded, and the rounding of d1, d2 is amplified by |d| in N(d)): measured
 * against mpmath on 150,000 random options over the whole range (tests/test_pricing.py), 2^8 left a
 * worst case of 1.02e-12, 2^7 leaves 5.5e-13, half the 1e-12 target.  On a BTC-like book ~0.2 % of
 * options are redone (x87 erfcl, ~300 ns each): ~0.6 ns/option. */
#define DPM_CANCEL_LIMIT 128.0

typedef ptrdiff_t dpm_index;

static inline double dpm_ncdf(double z) { return 0.5 * erfc(-z * DPM_SQRT1_2); }
static inline double dpm_npdf(double z) { return DPM_INV_SQRT_2PI * exp(-0.5 * z * z); }

/* Undiscounted Black-76 price per unit (the one scalar formula every revaluation kernel uses).
 * Valid for F, K > 0, sigma >= 0, T >= 0; s = 0 gives the intrinsic value. */
static inline double dpm_black76(double F, double K, double sigma, double T, double cp)
{
    const double s = sigma * sqrt(T);
    const int live = s > 0.0;
    const double ss = live ? s : 1.0;
    const double cpo = F > K ? -1.0 : 1.0; /* the out-of-the-money side */
    const double d1 = log(F / K) / ss + 0.5 * ss;
    const double d2 = d1 - ss;
    double otm = cpo * (F * dpm_ncdf(cpo * d1) - K * dpm_ncdf(cpo * d2));
    otm = (live && otm > 0.0) ? otm : 0.0;
    return otm + ((cp != cpo) ? cp * (F - K) : 0.0);
}

/* Extended-precision out-of-the-money price (x87 long double: 64-bit mantissa) for the rare options
 * where F*N(d1) and K*N(d2) nearly cancel (short-dated, low-vol, away from the money). */
static double dpm_black_otm_precise(double F, double K, double s, double cpo)
{
    const long double x = logl((long double)F / (long double)K);
    const long double ss = (long double)s;
    const long double d1 = x / ss + 0.5L * ss;
    const long double d2 = d1 - ss;
    const long double r1 = 0.70710678118654752440084436210484903928L;
    const long double v = (long double)cpo * (0.5L * (long double)F * erfcl(-(long double)cpo * d1 * r1)
                                              - 0.5L * (long double)K * erfcl(-(long double)cpo * d2 * r1));
    return v > 0.0L ? (double)v : 0.0;
}

/* All outputs of one option.  model: 0 = Black-76 (input F is the forward), 1 = Black-Scholes-Merton
 * (input F is the spot S, q the dividend/carry yield).  inverse: 1 = value in coin, B/F (Black-76 only).
 * fix: set when the fast price lost more than DPM_CANCEL_LIMIT to cancellation. */
typedef struct {
    double price, delta, gamma, vega, theta, rho, vanna, volga;
    double otm_u, d1, s, cpo, fwd; /* intermediates the precise fix-up needs */
    int fix;
} dpm_black_out;

/* always_inline: the greeks loop only vectorises if this body is inlined into it */
static inline __attribute__((always_inline)) dpm_black_out dpm_black_all(double F_in, double K, double sigma, double T, double cp,
                                          double r, double q, int model, int inverse)
{
    dpm_black_out o;
    const double sqrtT = sqrt(T);
    const double s = sigma * sqrtT;
    const int live = s > 0.0;
    const double ss = live ? s : 1.0;
    const double sig = live ? sigma : 1.0;
    const double sqT = live ? sqrtT : 1.0;
    const double df = exp(-r * T);
    const double F = model ? F_in * exp((r - q) * T) : F_in;
    const double cpo = F > K ? -1.0 : 1.0;
    /* clamped: when F/K over- or underflows, d1 = +-inf would turn pdf1 * d2 (vanna, volga) into
     * 0 * inf = NaN; at |d1| = 1e100 pdf1 is 0 and every product stays finite */
    const double d1r = log(F / K) / ss + 0.5 * ss;
    const double d1 = live ? (d1r < -1e100 ? -1e100 : (d1r > 1e100 ? 1e100 : d1r)) : 0.0; /* not fmin/fmax: those are libm calls that stop the vectoriser */
    const double d2 = d1 - ss;
    const double n1 = live ? dpm_ncdf(cpo * d1) : 0.0;
    const double n2 = live ? dpm_ncdf(cpo * d2) : 0.0;
    const double pdf1 = live ? dpm_npdf(d1) : 0.0;
    const double t2 = K * n2;
    double otm = cpo * (F * n1 - t2);
    otm = otm > 0.0 ? otm : 0.0;
    const int flip = cp != cpo;
    const double B = otm + (flip ? cp * (F - K) : 0.0);  /* undiscounted price */
    const double dB = cpo * n1 + (flip ? cp : 0.0);       /* dB/dF */
    const double Ncpd2 = flip ? 1.0 - n2 : n2;            /* N(cp * d2) */
    const double gB = pdf1 / (F * ss);                    /* d2B/dF2 (0 when not live) */
    const double vB = F * pdf1 * sqT;                     /* dB/dsigma */
    const double dBdT = live ? 0.5 * F * pdf1 * sig / sqT : 0.0;

    o.fix = live && ((B * DPM_CANCEL_LIMIT < t2) | (otm * 0x1p40 < t2));
    o.otm_u = otm; o.d1 = d1; o.s = ss; o.cpo = cpo; o.fwd = F;

    const double V = df * B;
    if (model == 0) {
        o.price = V;
        o.delta = df * dB;
        o.gamma = df * gB;
        o.vega = df * vB;
        o.theta = r * V - df * dBdT;
        o.rho = -T * V;
        o.vanna = -df * pdf1 * d2 / sig;
        o.volga = df * vB * d1 * d2 / sig;
        if (inverse) {
            /* coin value c = V / F; derivatives of c itself (see docs/pricing.md) */
            const double dc = cp * df * K * Ncpd2 / (F * F);
            o.gamma = o.gamma / F - 2.0 * dc / F;
            o.delta = dc;
            o.price = V / F;
            o.vega /= F;
            o.theta /= F;
            o.rho /= F;
            o.vanna = -df * pdf1 * d1 / (sig * F);
            o.volga /= F;
        }
    } else {
        const double S = F_in;
        const double carry = exp(-q * T); /* df * F / S */
        o.price = V;
        o.delta = carry * dB;
        o.gamma = carry * pdf1 / (S * ss);
        o.vega = df * vB;
        o.theta = r * V - df * (dB * (r - q) * F + dBdT);
        o.rho = T * (df * F * dB - V);
        o.vanna = -carry * pdf1 * d2 / sig;
        o.volga = df * vB * d1 * d2 / sig;
    }
    return o;
}

/* Redo one element whose fast OTM price suffered cancellation, in extended precision. */
static inline dpm_black_out dpm_black_all_precise(double F_in, double K, double sigma, double T,
                                                  double cp, double r, double q, int model, int inverse)
{
    dpm_black_out o = dpm_black_all(F_in, K, sigma, T, cp, r, q, model, inverse);
    if (!o.fix) return o;
    const double otm = dpm_black_otm_precise(o.fwd, K, o.s, o.cpo);
    const double df = exp(-r * T);
    const double B = otm + ((cp != o.cpo) ? cp * (o.fwd - K) : 0.0);
    const double V = df * B;
    const double dV = V - df * (o.otm_u + ((cp != o.cpo) ? cp * (o.fwd - K) : 0.0));
    /* price enters theta (r*V) and rho (-T*V, or -V for BSM) linearly: shift them by the correction */
    if (model == 0 && inverse) {
        o.price = V / o.fwd;
        o.theta += r * dV / o.fwd;
        o.rho += -T * dV / o.fwd;
    } else {
        o.price = V;
        o.theta += r * dV;
        o.rho += -T * dV;
    }
    return o;
}

/* ---------------------------------------------------------------------------------------------
 * Array kernels.  All arrays have length n, are contiguous and do not alias (outputs distinct from
 * inputs).  Each returns the number of elements it re-did in extended precision.
 * ------------------------------------------------------------------------------------------- */

/* The loop bodies take has_rq as a compile-time constant (always_inline) so that the common
 * zero-rate case reads no rate arrays and the vectoriser sees unconditional loads only. */
#define DPM_INLINE static inline __attribute__((always_inline))

DPM_INLINE dpm_index dpm_price_loop(const double *restrict F, const double *restrict K,
                                    const double *restrict sigma, const double *restrict T,
                                    const double *restrict cp, const double *restrict r,
                                    const double *restrict q, const int has_rq, const int model,
                                    const int inverse, double *restrict out,
                                    unsigned char *restrict fix, dpm_index n)
{
    dpm_index nfix = 0;
    DPM_SIMD
    for (dpm_index i = 0; i < n; i++) {
        const double ri = has_rq ? r[i] : 0.0;
        const double qi = has_rq ? q[i] : 0.0;
        const double Ti = T[i];
        const double s = sigma[i] * sqrt(Ti);
        const int live = s > 0.0;
        const double ss = live ? s : 1.0;
        const double Fi = (model && has_rq) ? F[i] * exp((ri - qi) * Ti) : F[i];
        const double Ki = K[i];
        const double cpo = Fi > Ki ? -1.0 : 1.0;
        const double d1 = log(Fi / Ki) / ss + 0.5 * ss;
        const double t2 = Ki * dpm_ncdf(cpo * (d1 - ss));
        double otm = cpo * (Fi * dpm_ncdf(cpo * d1) - t2);
        otm = (live && otm > 0.0) ? otm : 0.0;
        const double B = otm + ((cp[i] != cpo) ? cp[i] * (Fi - Ki) : 0.0);
        const double V = has_rq ? exp(-ri * Ti) * B : B;
        out[i] = inverse ? V / Fi : V;
        /* also redo an in-the-money option whose time value (nearly) cancelled away (lost > 40 bits):
         * the price must stay above the intrinsic value, or implied vol would call it arbitrage */
        const unsigned char f = live && ((B * DPM_CANCEL_LIMIT < t2) | (otm * 0x1p40 < t2));
        fix[i] = f;
        nfix += f;
    }
    return nfix;
}

/* Results must not depend on where an element sits in the array (dpm promises bit-identical
 * results for every number of workers, i.e. for every chunking).  A vectorised loop over n elements
 * has an epilogue that runs the last n % VF elements through narrower SIMD variants or scalar libm,
 * whose roundings differ from the full-width libmvec variant (and GCC picks the unroll factor,
 * hence which elements land in the epilogue).  So the SIMD loop only ever runs on blocks of exactly
 * DPM_BLOCK elements, a compile-time trip count that is a multiple of every vector width (no
 * epilogue is generated), and the last n % DPM_BLOCK elements are covered by running the same call
 * site on the final DPM_BLOCK elements of the array (an overlapping window whose outputs are
 * rewritten with the same bits).  Every element of an array of n >= DPM_BLOCK then goes through the same instructions
 * wherever it sits; the thread pool never makes chunks that short.  Arrays shorter than one block
 * are padded into local buffers. */
#ifndef DPM_BLOCK
#define DPM_BLOCK 64
#endif
_Static_assert(DPM_BLOCK % 16 == 0, "DPM_BLOCK must be a multiple of every SIMD width (and unroll)");

/* Copy n < DPM_BLOCK elements into full-block buffers for the short-array path of the block
 * drivers; padding lanes get sigma = T = 0, which prices the intrinsic value (no special case). */
DPM_INLINE void dpm_pad_block(const double *F, const double *K, const double *sigma, const double *T,
                              const double *cp, const double *r, const double *q, const int has_rq,
                              dpm_index n, double *tF, double *tK, double *ts, double *tT,
                              double *tc, double *tr, double *tq)
{
    for (dpm_index j = 0; j < DPM_BLOCK; j++) {
        const int in = j < n;
        tF[j] = in ? F[j] : 1.0; tK[j] = in ? K[j] : 1.0;
        ts[j] = in ? sigma[j] : 0.0; tT[j] = in ? T[j] : 0.0; tc[j] = in ? cp[j] : 1.0;
        tr[j] = (in && has_rq) ? r[j] : 0.0; tq[j] = (in && has_rq) ? q[j] : 0.0;
    }
}

DPM_INLINE dpm_index dpm_price_blocks(const double *F, const double *K, const double *sigma,
                                      const double *T, const double *cp, const double *r,
                                      const double *q, const int has_rq, const int model,
                                      const int inverse, double *out, unsigned char *fix,
                                      dpm_index n)
{
    if (n < DPM_BLOCK) {
        double tF[DPM_BLOCK], tK[DPM_BLOCK], ts[DPM_BLOCK], tT[DPM_BLOCK], tc[DPM_BLOCK];
        double tr[DPM_BLOCK], tq[DPM_BLOCK], to[DPM_BLOCK];
        unsigned char tx[DPM_BLOCK];
        dpm_pad_block(F, K, sigma, T, cp, r, q, has_rq, n, tF, tK, ts, tT, tc, tr, tq);
        const dpm_index nfix = dpm_price_loop(tF, tK, ts, tT, tc, tr, tq, has_rq, model, inverse,
                                              to, tx, DPM_BLOCK);
        for (dpm_index j = 0; j < n; j++) { out[j] = to[j]; fix[j] = tx[j]; }
        return nfix;
    }
    dpm_index nfix = 0;
    for (dpm_index b = 0; b < n; b += DPM_BLOCK) {
        /* the last window ends at n and overlaps the previous one */
        const dpm_index s0 = b + DPM_BLOCK <= n ? b : n - DPM_BLOCK;
        for (dpm_index j = s0; j < b; j++) nfix -= fix[j]; /* counted again below */
        nfix += dpm_price_loop(F + s0, K + s0, sigma + s0, T + s0, cp + s0,
                               has_rq ? r + s0 : r, has_rq ? q + s0 : q, has_rq, model, inverse,
                               out + s0, fix + s0, DPM_BLOCK);
    }
    return nfix;
}

DPM_CLONES
static dpm_index dpm_price_fast(const double *F, const double *K, const double *sigma,
                                const double *T, const double *cp, const double *r, const double *q,
                                int model, int inverse, double *out, unsigned char *fix, dpm_index n)
{
    if (r && q)
        return model ? dpm_price_blocks(F, K, sigma, T, cp, r, q, 1, 1, 0, out, fix, n)
                     : dpm_price_blocks(F, K, sigma, T, cp, r, q, 1, 0, inverse, out, fix, n);
    return dpm_price_blocks(F, K, sigma, T, cp, r, q, 0, model, inverse, out, fix, n);
}

/* Fix-up pass: recompute flagged elements in extended precision (rare; scalar). */
static void dpm_price_fixup(const double *F, const double *K, const double *sigma, const double *T,
                            const double *cp, const double *r, const double *q, int model,
                            int inverse, double *out, const unsigned char *fix, dpm_index n)
{
    for (dpm_index i = 0; i < n; i++) {
        if (!fix[i]) continue;
        const dpm_black_out o = dpm_black_all_precise(F[i], K[i], sigma[i], T[i], cp[i],
                                                      r ? r[i] : 0.0, q ? q[i] : 0.0, model, inverse);
        out[i] = o.price;
    }
}

static dpm_index dpm_price(const double *F, const double *K, const double *sigma, const double *T,
                           const double *cp, const double *r, const double *q, int model,
                           int inverse, double *out, unsigned char *fix, dpm_index n)
{
    const dpm_index nfix = dpm_price_fast(F, K, sigma, T, cp, r, q, model, inverse, out, fix, n);
    if (nfix) dpm_price_fixup(F, K, sigma, T, cp, r, q, model, inverse, out, fix, n);
    return nfix;
}

DPM_INLINE dpm_index dpm_greeks_loop(const double *restrict F, const double *restrict K,
                                     const double *restrict sigma, const double *restrict T,
                                     const double *restrict cp, const double *restrict r,
                                     const double *restrict q, const int has_rq, const int model,
                                     const int inverse, const int full, double *restrict price,
                                     double *restrict delta, double *restrict gamma,
                                     double *restrict vega, double *restrict theta,
                                     double *restrict rho, double *restrict vanna,
                                     double *restrict volga, unsigned char *restrict fix,
                                     dpm_index n)
{
    dpm_index nfix = 0;
    DPM_SIMD
    for (dpm_index i = 0; i < n; i++) {
        const dpm_black_out o = dpm_black_all(F[i], K[i], sigma[i], T[i], cp[i],
                                              has_rq ? r[i] : 0.0, has_rq ? q[i] : 0.0, model, inverse);
        price[i] = o.price;
        delta[i] = o.delta;
        gamma[i] = o.gamma;
        vega[i] = o.vega;
        theta[i] = o.theta;
        if (full) { /* compile-time constant: the short variant never computes these */
            rho[i] = o.rho;
            vanna[i] = o.vanna;
            volga[i] = o.volga;
        }
        fix[i] = (unsigned char)o.fix;
        nfix += o.fix;
    }
    return nfix;
}

/* Block driver of the greeks loop (see dpm_price_blocks for why). */
DPM_INLINE dpm_index dpm_greeks_blocks(const double *F, const double *K, const double *sigma,
                                       const double *T, const double *cp, const double *r,
                                       const double *q, const int has_rq, const int model,
                                       const int inverse, const int full, double *price, double *delta,
                                       double *gamma, double *vega, double *theta, double *rho,
                                       double *vanna, double *volga, unsigned char *fix,
                                       dpm_index n)
{
    if (n < DPM_BLOCK) {
        double tF[DPM_BLOCK], tK[DPM_BLOCK], ts[DPM_BLOCK], tT[DPM_BLOCK], tc[DPM_BLOCK];
        double tr[DPM_BLOCK], tq[DPM_BLOCK], o[8][DPM_BLOCK];
        unsigned char tx[DPM_BLOCK];
        dpm_pad_block(F, K, sigma, T, cp, r, q, has_rq, n, tF, tK, ts, tT, tc, tr, tq);
        const dpm_index nfix = dpm_greeks_loop(tF, tK, ts, tT, tc, tr, tq, has_rq, model, inverse,
                                               full, o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7],
                                               tx, DPM_BLOCK);
        for (dpm_index j = 0; j < n; j++) {
            price[j] = o[0][j]; delta[j] = o[1][j]; gamma[j] = o[2][j]; vega[j] = o[3][j];
            theta[j] = o[4][j];
            if (full) { rho[j] = o[5][j]; vanna[j] = o[6][j]; volga[j] = o[7][j]; }
            fix[j] = tx[j];
        }
        return nfix;
    }
    dpm_index nfix = 0;
    for (dpm_index b = 0; b < n; b += DPM_BLOCK) {
        const dpm_index s0 = b + DPM_BLOCK <= n ? b : n - DPM_BLOCK;
        for (dpm_index j = s0; j < b; j++) nfix -= fix[j];
        nfix += dpm_greeks_loop(F + s0, K + s0, sigma + s0, T + s0, cp + s0,
                                has_rq ? r + s0 : r, has_rq ? q + s0 : q, has_rq, model, inverse,
                                full, price + s0, delta + s0, gamma + s0, vega + s0, theta + s0,
                                full ? rho + s0 : rho, full ? vanna + s0 : vanna,
                                full ? volga + s0 : volga, fix + s0, DPM_BLOCK);
    }
    return nfix;
}

/* full = 0: price, delta, gamma, vega and theta only (rho, vanna, volga may be NULL). */
DPM_CLONES
static dpm_index dpm_greeks_fast(const double *F, const double *K, const double *sigma,
                                 const double *T, const double *cp, const double *r, const double *q,
                                 int model, int inverse, int full, double *price, double *delta,
                                 double *gamma, double *vega, double *theta, double *rho,
                                 double *vanna, double *volga, unsigned char *fix, dpm_index n)
{
#define DPM_G_ARGS price, delta, gamma, vega, theta, rho, vanna, volga, fix, n
#define DPM_G(hr, m, inv) (full ? dpm_greeks_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 1, DPM_G_ARGS) \
                                : dpm_greeks_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 0, DPM_G_ARGS))
    if (r && q) {
        if (model) return DPM_G(1, 1, 0);
        return inverse ? DPM_G(1, 0, 1) : DPM_G(1, 0, 0);
    }
    if (model) return DPM_G(0, 1, 0);
    return inverse ? DPM_G(0, 0, 1) : DPM_G(0, 0, 0);
#undef DPM_G
#undef DPM_G_ARGS
}

static dpm_index dpm_greeks(const double *F, const double *K, const double *sigma, const double *T,
                            const double *cp, const double *r, const double *q, int model, int inverse,
                            int full, double *price, double *delta, double *gamma, double *vega,
                            double *theta, double *rho, double *vanna, double *volga,
                            unsigned char *fix, dpm_index n)
{
    const dpm_index nfix = dpm_greeks_fast(F, K, sigma, T, cp, r, q, model, inverse, full, price,
                                           delta, gamma, vega, theta, rho, vanna, volga, fix, n);
    if (nfix) {
        for (dpm_index i = 0; i < n; i++) {
            if (!fix[i]) continue;
            const dpm_black_out o = dpm_black_all_precise(F[i], K[i], sigma[i], T[i], cp[i],
                                                          r ? r[i] : 0.0, q ? q[i] : 0.0, model, inverse);
            price[i] = o.price;
            theta[i] = o.theta;
            if (full) rho[i] = o.rho;
        }
    }
    return nfix;
}

/* 1 if every input is in its domain (F, K > 0 finite; sigma, T >= 0 finite; cp = +-1; r, q finite).
 * A branch-free OR-reduction so it vectorises; Python locates the offending element only on failure. */
DPM_CLONES
static int dpm_inputs_ok(const double *restrict F, const double *restrict K,
                         const double *restrict sigma, const double *restrict T,
                         const double *restrict cp, const double *restrict r,
                         const double *restrict q, dpm_index n)
{
    int bad = 0;
    DPM_SIMD
    for (dpm_index i = 0; i < n; i++) {
        bad |= !(F[i] > 0.0 && F[i] < HUGE_VAL) | !(K[i] > 0.0 && K[i] < HUGE_VAL)
             | !(sigma[i] >= 0.0 && sigma[i] < HUGE_VAL) | !(T[i] >= 0.0 && T[i] < HUGE_VAL)
             | !(cp[i] == 1.0 || cp[i] == -1.0);
    }
    if (r) {
        DPM_SIMD
        for (dpm_index i = 0; i < n; i++)
            bad |= !(fabs(r[i]) < HUGE_VAL) | !(fabs(q[i]) < HUGE_VAL);
    }
    return !bad;
}

#endif /* DPM_BLACK_MATH_H */
