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

/* Legacy: the kernels no longer redo any element in extended precision (the out-of-the-money price
 * below is accurate everywhere); kept because other code may test the macro. */
#define DPM_CANCEL_LIMIT 128.0

typedef ptrdiff_t dpm_index;

/* always_inline: the loops only vectorise if these bodies are inlined into them */
#define DPM_INLINE static inline __attribute__((always_inline))

/* -708, the floor of an exp argument (e^-708 = 3.3e-308, still a normal double), and 1416 = -2 x
 * that floor, the d^2 above which dpm_otm_core uses it.  Variables, not constants, so that GCC can
 * neither fold exp(-708.0) nor relate the clamp's test to the `under` test: see dpm_otm_core.  Not
 * static, so GCC cannot prove that nothing writes them; hidden, so they stay inside each module. */
__attribute__((visibility("hidden"))) double dpm_exp_floor = -708.0;
__attribute__((visibility("hidden"))) double dpm_exp_clamp_sq = 1416.0;

static inline double dpm_ncdf(double z) { return 0.5 * erfc(-z * DPM_SQRT1_2); }
static inline double dpm_npdf(double z) { return DPM_INV_SQRT_2PI * exp(-0.5 * z * z); }

/* Exact product errors.  The AVX2/AVX-512 clones have FMA; the baseline x86-64 clone may run on a
 * CPU without it, where fma() is a slow software emulation, so the kernels take hw_fma as a
 * compile-time constant (loop versioning) and use Dekker's product splitting instead. */
DPM_INLINE double dpm_prod_err(double a, double b, double p, const int hw_fma)
{
    if (hw_fma) return fma(a, b, -p); /* a*b - p exactly */
    const double c = 134217729.0;     /* 2^27 + 1 */
    const double ac = a * c, bc = b * c;
    const double ah = ac - (ac - a), al = a - ah, bh = bc - (bc - b), bl = b - bh;
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}
#define DPM_FMA(a, b, c, hw) ((hw) ? fma((a), (b), (c)) : (a) * (b) + (c))

/* 1 if the CPU has FMA (chooses the loop version; cached). */
static int dpm_hw_fma(void)
{
    static int cached = -1;
    if (cached < 0) {
#if defined(DPM_FORCE_NO_FMA) || (defined(DPM_NATIVE) && !defined(__FMA__))
        /* testing switch; or a native build for a target without FMA, where fma() would be a
         * library call in every lane even on a CPU that has it */
        cached = 0;
#elif defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("fma") ? 1 : 0;
#elif defined(__FMA__) || defined(__aarch64__)
        cached = 1;
#else
        cached = 0;
#endif
    }
    return cached;
}

/* erfcx(u) = exp(u^2) erfc(u) for u >= 0 (and +inf), branch-free: with w = c/(u + c), c = 4, and
 * z = 1 - 2w in [-1, 1], erfcx(u) = w g(z) where g is smooth on [-1, 1] (g(1) = 1/(c sqrt(pi))).
 * g is a degree-22 polynomial: Chebyshev interpolation at 160 nodes of the 50-digit function,
 * converted to monomials (their absolute sum is 1.0, so Horner does not cancel).  Relative error
 * below 1e-15 on [0, inf) (tests/test_pricing.py checks it against mpmath).  Arguments go in
 * unrounded-sensitive: erfcx'(u)/erfcx(u) ~ -1/u, so a rounding of u moves erfcx by ~1 ulp only,
 * unlike erfc, whose rounding sensitivity grows like u^2. */
/* g(z) of erfcx(u) = w g(z), w = 4/(u + 4), z = 1 - 2w (the polynomial part, so that two erfcx
 * values can share one division) */
DPM_INLINE double dpm_erfcx_g(double z, const int hw_fma)
{
    /* Estrin's scheme: dependency depth 5 instead of Horner's 22 (the loops are latency-bound) */
    const double z2 = z * z, z4 = z2 * z2, z8 = z4 * z4, z16 = z8 * z8;
    const double p0 = DPM_FMA(-2.44137182270220604e-01, z, 2.73998915250122765e-01, hw_fma);
    const double p1 = DPM_FMA(-1.35213457828299410e-01, z, 1.93302175566307660e-01, hw_fma);
    const double p2 = DPM_FMA(-4.35027343102230776e-02, z, 8.27128969695789668e-02, hw_fma);
    const double p3 = DPM_FMA(-6.59251333229525591e-03, z, 1.90953787259277030e-02, hw_fma);
    const double p4 = DPM_FMA(-7.02397339847800215e-05, z, 1.52801392709659800e-03, hw_fma);
    const double p5 = DPM_FMA(4.42032701640101717e-05, z, -1.13763242914232012e-04, hw_fma);
    const double p6 = DPM_FMA(-4.71536834474533832e-06, z, -9.08550953736742834e-07, hw_fma);
    const double p7 = DPM_FMA(3.56236604332617538e-07, z, 1.17309597843865979e-06, hw_fma);
    const double p8 = DPM_FMA(-1.89922483216737570e-08, z, -2.10912903014044835e-07, hw_fma);
    const double p9 = DPM_FMA(2.05956021403690043e-10, z, 3.06322051766131277e-08, hw_fma);
    const double p10 = DPM_FMA(6.63613627087004204e-11, z, -3.81882222497661988e-09, hw_fma);
    const double q0 = DPM_FMA(p1, z2, p0, hw_fma), q1 = DPM_FMA(p3, z2, p2, hw_fma);
    const double q2 = DPM_FMA(p5, z2, p4, hw_fma), q3 = DPM_FMA(p7, z2, p6, hw_fma);
    const double q4 = DPM_FMA(p9, z2, p8, hw_fma), q5 = DPM_FMA(3.01845414851638119e-10, z2, p10, hw_fma);
    const double o0 = DPM_FMA(q1, z4, q0, hw_fma), o1 = DPM_FMA(q3, z4, q2, hw_fma);
    const double o2 = DPM_FMA(q5, z4, q4, hw_fma);
    return DPM_FMA(o2, z16, DPM_FMA(o1, z8, o0, hw_fma), hw_fma);
}

DPM_INLINE double dpm_erfcx_poly(double u, const int hw_fma)
{
    const double w = 4.0 / (u + 4.0);
    return w * dpm_erfcx_g(1.0 - 2.0 * w, hw_fma);
}

/* Small-t series of the normalised Black function: Y(h+t) - Y(h-t) = 2 t S with
 * S = sum_{k=0..5} Y^(2k+1)(h) w^k / (2k+1)!, w = t^2, where Y(u) = N(u)/phi(u), Y0 = Y(h), h + h_err
 * the exact h; Y' = 1 + hY and Y^(n+1) = h Y^(n) + n Y^(n-1).  For t < 0.1 the first omitted term
 * is below 1e-17 relative; rounding errors stay below ~h^2 eps for |h| t < 0.72. */
DPM_INLINE double dpm_series_sum(double h, double h_err, double Y0, double w, const int hw_fma)
{
    const double Y1 = DPM_FMA(h, Y0, 1.0, hw_fma) + h_err * Y0;
    const double Y2 = DPM_FMA(h, Y1, Y0, hw_fma);
    const double Y3 = DPM_FMA(h, Y2, 2.0 * Y1, hw_fma);
    const double Y4 = DPM_FMA(h, Y3, 3.0 * Y2, hw_fma);
    const double Y5 = DPM_FMA(h, Y4, 4.0 * Y3, hw_fma);
    const double Y6 = DPM_FMA(h, Y5, 5.0 * Y4, hw_fma);
    const double Y7 = DPM_FMA(h, Y6, 6.0 * Y5, hw_fma);
    const double Y8 = DPM_FMA(h, Y7, 7.0 * Y6, hw_fma);
    const double Y9 = DPM_FMA(h, Y8, 8.0 * Y7, hw_fma);
    const double Y10 = DPM_FMA(h, Y9, 9.0 * Y8, hw_fma);
    const double Y11 = DPM_FMA(h, Y10, 10.0 * Y9, hw_fma);
    double S = Y11 * (1.0 / 39916800.0);
    S = DPM_FMA(S, w, Y9 * (1.0 / 362880.0), hw_fma);
    S = DPM_FMA(S, w, Y7 * (1.0 / 5040.0), hw_fma);
    S = DPM_FMA(S, w, Y5 * (1.0 / 120.0), hw_fma);
    S = DPM_FMA(S, w, Y3 * (1.0 / 6.0), hw_fma);
    return DPM_FMA(S, w, Y1, hw_fma);
}

/* Out-of-the-money Black price and the quantities the greeks need, accurate to a few ulps times a
 * bounded cancellation factor everywhere (no extended precision, no data-dependent branches, so
 * the body vectorises and every input mix costs the same).
 *
 * With A = min(F, K), B = max(F, K), x = ln(A/B) <= 0, s the total vol, h = x/s, t = s/2, the
 * out-of-the-money option (call if F < K, put if F > K) is worth A N(h + t) - B N(h - t), and with
 * Y(u) = N(u)/phi(u) (a Mills ratio; Y(u) = sqrt(pi/2) erfcx(-u/sqrt2)) and A phi(h+t) = B phi(h-t):
 *
 *     price = A e^{-(h+t)^2/2} [Y(h+t) - Y(h-t)] / sqrt(2 pi)                          (1)
 *
 * (the normalised Black function of P. Jaeckel, "Let's be rational", Wilmott 2015).  Three
 * evaluations of (1), chosen per lane by select:
 * - t < 0.1 and |h| t < 0.72 ("series"): Y(h+t) - Y(h-t) = 2 sum_k Y^(2k+1)(h) t^(2k+1)/(2k+1)!,
 *   with Y' = 1 + hY and Y^(n+1) = h Y^(n) + n Y^(n-1); six terms (the first omitted one is below
 *   1e-17 relative).  The difference of the two Mills ratios, which cancels for small t, is never
 *   formed; the only cancellation is in Y' = 1 + hY (a factor ~h^2 <= 52 here).
 * - otherwise, h + t <= 0: Y(h+t) - Y(h-t) from two erfcx values (cancellation factor
 *   ~(|h| + t)/(2t) <= 37 where prices exceed 1e-22 F).
 * - otherwise (h + t > 0): A - A e^{-(h+t)^2/2} [erfcx(-(h+t)/sqrt2) + erfcx((t-h)/sqrt2)] / 2
 *   (cancellation factor <= ~15).
 * The exponent is formed from d = h + t with its rounding error carried separately (x/s and h + t
 * remainders by fma), and ln(A/B) gets the remainder of the division A/B, so that the steep factor
 * e^{-d^2/2} keeps full relative accuracy; erfcx is insensitive to the rounding of its argument.
 * Costs one log, one exp, one sqrt-free pair of erfcx polynomials and a few divisions per lane. */
typedef struct {
    double otm;      /* undiscounted out-of-the-money price (0 when s == 0) */
    double n1, n2;   /* N(cpo d1), N(cpo d2) of the real option side cpo */
    double pdf1;     /* phi(d1) */
    double d1;       /* d1 = ln(F/K)/s + s/2 (clamped to +-1e4 + s/2) */
} dpm_otm_t;

#define DPM_SERIES_T 0.1
#define DPM_SERIES_HT 0.72

DPM_INLINE dpm_otm_t dpm_otm_core(double F, double K, double s, double cpo, const int hw_fma)
{
    dpm_otm_t o;
    const int live = s > 0.0;
    const double ss = live ? s : 1.0;
    const double A = F < K ? F : K, B = F < K ? K : F;
    const double q = A / B;
    const double qB = q * B;
    const double rem = (A - qB) - dpm_prod_err(q, B, qB, hw_fma); /* A - q B exactly */
    double x = log(q) + rem / A;                    /* ln(A/B) = ln q + ln(1 + rem/(qB)) */
    x = x < 0.0 ? x : 0.0;
    const double invs = 1.0 / ss;
    double h = x * invs;
    const double hs = h * ss;
    double h_err = ((x - hs) - dpm_prod_err(h, ss, hs, hw_fma)) * invs; /* x/s = h + h_err */
    /* |h| > 1e4 gives prices far below 1e-300 F; clamping keeps every product finite */
    h_err = h < -1e4 ? 0.0 : h_err;
    h = h < -1e4 ? -1e4 : h;
    const double t = 0.5 * ss;
    const double d = h + t;                          /* TwoSum: d + d_err = h + h_err + t */
    const double bv = d - h;
    const double d_err = ((h - (d - bv)) + (t - bv)) + h_err;
    const double p = d * d;
    const double pe = dpm_prod_err(d, d, p, hw_fma);
    const double ex = -0.5 * p;
    const int under = ex < -708.0;                   /* e^{-d^2/2} < 3e-308: counts as 0 */
    /* Lanes below libmvec's range would each take glibc's scalar exp (on a short-dated book about
     * one lane in ten, which cost a third of the kernel's time).  The clamp is written so that
     * GCC keeps it: with exp(under ? 0.0 : ex) it threads the branch on `under` (the lane's exp is
     * unused there), folds exp(0) and calls the vector exp on the raw ex; with fmax it stops
     * vectorising.  So the clamp tests p against a variable (a constant bound GCC 13's float ranges
     * could relate to `under`), and its arm is a variable it cannot fold.  Lanes that take the
     * floor are exactly the `under` ones. */
    const double e0 = exp(p > dpm_exp_clamp_sq ? dpm_exp_floor : ex);
    const double Ed = under ? 0.0 : e0 * (1.0 - (0.5 * pe + d * d_err));
    const double u1 = -d * DPM_SQRT1_2;
    const double u2 = (t - h) * DPM_SQRT1_2;
    /* one comparison: GCC 12 does not vectorise an int '&' of two double comparisons here.  (The
     * 32-bit int lane flags make GCC run 8 lanes as two AVX2 registers, which interleaves two
     * dependency chains: measured faster than 64-bit flags with 4 lanes.) */
    const int series = (t < DPM_SERIES_T ? -h * t : DPM_SERIES_HT) < DPM_SERIES_HT;
    const double v1 = series ? -h * DPM_SQRT1_2 : (u1 < 0.0 ? -u1 : u1);
    /* both erfcx share one division: 4/(a+4) = 4 (b+4) / ((a+4)(b+4)); arguments are capped at
     * 1e6 so that the product stays finite (beyond it both terms are multiplied by e^{-d^2/2} = 0) */
    const double a4 = (v1 < 1e6 ? v1 : 1e6) + 4.0, b4 = (u2 < 1e6 ? u2 : 1e6) + 4.0;
    const double rab = 4.0 / (a4 * b4);
    const double w1 = rab * b4, w2 = rab * a4;
    const double X1 = w1 * dpm_erfcx_g(1.0 - 2.0 * w1, hw_fma);
    const double X2 = w2 * dpm_erfcx_g(1.0 - 2.0 * w2, hw_fma);
    const double S = dpm_series_sum(h, h_err, 1.25331413731550025121 * X1, t * t, hw_fma);
    const double AE = A * Ed;
    const double p_series = AE * (t * S) * (2.0 * DPM_INV_SQRT_2PI);
    const double p_lower = 0.5 * AE * (X1 - X2);
    const double p_upper = A - 0.5 * AE * (X1 + X2);
    double otm = series ? p_series : (u1 >= 0.0 ? p_lower : p_upper);
    otm = (live && otm > 0.0) ? otm : 0.0;
    o.otm = otm;
    /* greeks: B N(h - t) = A e^{-(h+t)^2/2} erfcx((t-h)/sqrt2) / 2, A N(h + t) = otm + B N(h - t) */
    const double NB = live ? 0.5 * Ed * q * X2 : 0.0;
    const double NA = live ? otm / A + 0.5 * Ed * X2 : 0.0;
    const double pdfA = Ed * DPM_INV_SQRT_2PI;
    const int call = cpo > 0.0;
    o.n1 = call ? NA : NB;
    o.n2 = call ? NB : NA;
    o.pdf1 = live ? (call ? pdfA : pdfA * q) : 0.0;
    o.d1 = live ? t + cpo * h : 0.0;
    return o;
}

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

/* Legacy scalar helper, kept because _black.pxd declares it (the kernels no longer use it):
 * extended-precision out-of-the-money price (x87 long double: 64-bit mantissa) for options
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
 * fix: always 0 (kept for the layout; nothing is redone in extended precision any more). */
typedef struct {
    double price, delta, gamma, vega, theta, rho, vanna, volga;
    double otm_u, d1, s, cpo, fwd; /* intermediates (kept for the layout) */
    int fix;
} dpm_black_out;

DPM_INLINE dpm_black_out dpm_black_all_core(double F_in, double K, double sigma, double T, double cp,
                                            double r, double q, const int model, const int inverse,
                                            const int has_rq, const int hw_fma)
{
    dpm_black_out o;
    const double sqrtT = sqrt(T);
    const double s = sigma * sqrtT;
    const int live = s > 0.0;
    const double ss = live ? s : 1.0;
    const double sig = live ? sigma : 1.0;
    const double sqT = live ? sqrtT : 1.0;
    const double df = has_rq ? exp(-r * T) : 1.0;
    const double F = (model && has_rq) ? F_in * exp((r - q) * T) : F_in;
    const double cpo = F > K ? -1.0 : 1.0;
    const dpm_otm_t c = dpm_otm_core(F, K, s, cpo, hw_fma);
    const double d1 = c.d1;
    const double d2 = d1 - ss;
    const double n1 = c.n1, n2 = c.n2, pdf1 = c.pdf1;
    const int flip = cp != cpo;
    const double B = c.otm + (flip ? cp * (F - K) : 0.0);  /* undiscounted price */
    const double dB = cpo * n1 + (flip ? cp : 0.0);         /* dB/dF */
    const double Ncpd2 = flip ? 1.0 - n2 : n2;              /* N(cp * d2) */
    const double gB = pdf1 / (F * ss);                      /* d2B/dF2 (0 when not live) */
    const double vB = F * pdf1 * sqT;                       /* dB/dsigma */
    const double dBdT = live ? 0.5 * F * pdf1 * sig / sqT : 0.0;

    o.fix = 0;
    o.otm_u = c.otm; o.d1 = d1; o.s = ss; o.cpo = cpo; o.fwd = F;

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
        const double carry = has_rq ? exp(-q * T) : 1.0; /* df * F / S */
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

/* Price and greeks of one option (scalar entry point; the array kernels inline the same body). */
static inline dpm_black_out dpm_black_all(double F_in, double K, double sigma, double T, double cp,
                                          double r, double q, int model, int inverse)
{
    const int inv = model ? 0 : inverse;
    return dpm_hw_fma() ? dpm_black_all_core(F_in, K, sigma, T, cp, r, q, model, inv, 1, 1)
                        : dpm_black_all_core(F_in, K, sigma, T, cp, r, q, model, inv, 1, 0);
}

/* Kept for API stability: dpm_black_all is accurate everywhere, nothing is redone. */
static inline dpm_black_out dpm_black_all_precise(double F_in, double K, double sigma, double T,
                                                  double cp, double r, double q, int model, int inverse)
{
    return dpm_black_all(F_in, K, sigma, T, cp, r, q, model, inverse);
}

/* ---------------------------------------------------------------------------------------------
 * Array kernels.  All arrays have length n and are contiguous; outputs must not overlap inputs
 * (dpm.pricing copies any input that shares memory with an output).  They return 0 (the number
 * of elements redone in extended precision, which no longer happens; kept for the signature).
 * ------------------------------------------------------------------------------------------- */

/* The loop bodies take has_rq as a compile-time constant (always_inline) so that the common
 * zero-rate case reads no rate arrays and the vectoriser sees unconditional loads only. */
DPM_INLINE void dpm_price_loop(const double *restrict F, const double *restrict K,
                               const double *restrict sigma, const double *restrict T,
                               const double *restrict cp, const double *restrict r,
                               const double *restrict q, const int has_rq, const int model,
                               const int inverse, const int hw_fma, double *restrict out,
                               dpm_index n)
{
    DPM_SIMD
    for (dpm_index i = 0; i < n; i++) {
        const double ri = has_rq ? r[i] : 0.0;
        const double qi = has_rq ? q[i] : 0.0;
        const double Ti = T[i];
        const double s = sigma[i] * sqrt(Ti);
        const double Fi = (model && has_rq) ? F[i] * exp((ri - qi) * Ti) : F[i];
        const double Ki = K[i];
        const double cpo = Fi > Ki ? -1.0 : 1.0;
        const dpm_otm_t c = dpm_otm_core(Fi, Ki, s, cpo, hw_fma);
        const double B = c.otm + ((cp[i] != cpo) ? cp[i] * (Fi - Ki) : 0.0);
        const double V = has_rq ? exp(-ri * Ti) * B : B;
        out[i] = inverse ? V / Fi : V;
    }
}

/* Results must not depend on where an element sits in the array (dpm promises bit-identical
 * results for every number of workers, i.e. for every chunking).  A vectorised loop over n elements
 * has an epilogue that runs the last n % VF elements through narrower SIMD variants or scalar libm,
 * whose roundings differ from the full-width libmvec variant (and GCC picks the unroll factor,
 * hence which elements land in the epilogue).  So the SIMD loop only ever runs on blocks of exactly
 * DPM_BLOCK elements, a compile-time trip count that is a multiple of every vector width (no
 * epilogue is generated); the last n % DPM_BLOCK elements are copied into a padded local block
 * and run through the same call site.  Every element then goes through the same instructions
 * wherever it sits, and no element is read after any output was written (no overlapping window). */
#ifndef DPM_BLOCK
#define DPM_BLOCK 64
#endif
_Static_assert(DPM_BLOCK % 16 == 0, "DPM_BLOCK must be a multiple of every SIMD width (and unroll)");

/* 1 if every element of a block is in the pricing domain (F, K > 0 finite; sigma, T >= 0 finite;
 * cp = +-1; r, q finite): a branch-free OR-reduction that vectorises.  The block drivers run it
 * on each block, while the block is in L1, before computing it (no separate pass over memory). */
DPM_INLINE int dpm_block_ok(const double *restrict F, const double *restrict K,
                            const double *restrict sigma, const double *restrict T,
                            const double *restrict cp, const double *restrict r,
                            const double *restrict q, const int has_rq, dpm_index n)
{
    int bad = 0;
    DPM_SIMD
    for (dpm_index i = 0; i < n; i++) {
        bad |= !(F[i] > 0.0 && F[i] < HUGE_VAL) | !(K[i] > 0.0 && K[i] < HUGE_VAL)
             | !(sigma[i] >= 0.0 && sigma[i] < HUGE_VAL) | !(T[i] >= 0.0 && T[i] < HUGE_VAL)
             | !(cp[i] == 1.0 || cp[i] == -1.0);
        if (has_rq) bad |= !(fabs(r[i]) < HUGE_VAL) | !(fabs(q[i]) < HUGE_VAL);
    }
    return !bad;
}

/* Copy n < DPM_BLOCK elements into full-block buffers for the tail of the block drivers; padding
 * lanes get sigma = T = 0, which prices the intrinsic value (no special case). */
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

/* Returns -1, or (check = 1) the offset of the first block holding an invalid input; blocks from
 * there on are not computed. */
DPM_INLINE dpm_index dpm_price_blocks(const double *F, const double *K, const double *sigma,
                                      const double *T, const double *cp, const double *r,
                                      const double *q, const int has_rq, const int model,
                                      const int inverse, const int hw_fma, const int check,
                                      double *out, dpm_index n)
{
    const dpm_index nfull = n - n % DPM_BLOCK;
    for (dpm_index b = 0; b < nfull; b += DPM_BLOCK) {
        if (check && !dpm_block_ok(F + b, K + b, sigma + b, T + b, cp + b, has_rq ? r + b : r,
                                   has_rq ? q + b : q, has_rq, DPM_BLOCK))
            return b;
        dpm_price_loop(F + b, K + b, sigma + b, T + b, cp + b, has_rq ? r + b : r,
                       has_rq ? q + b : q, has_rq, model, inverse, hw_fma, out + b, DPM_BLOCK);
    }
    if (nfull < n) {
        const dpm_index m = n - nfull;
        double tF[DPM_BLOCK], tK[DPM_BLOCK], ts[DPM_BLOCK], tT[DPM_BLOCK], tc[DPM_BLOCK];
        double tr[DPM_BLOCK], tq[DPM_BLOCK], to[DPM_BLOCK];
        dpm_pad_block(F + nfull, K + nfull, sigma + nfull, T + nfull, cp + nfull,
                      has_rq ? r + nfull : r, has_rq ? q + nfull : q, has_rq, m, tF, tK, ts, tT,
                      tc, tr, tq);
        if (check && !dpm_block_ok(tF, tK, ts, tT, tc, tr, tq, has_rq, DPM_BLOCK)) return nfull;
        dpm_price_loop(tF, tK, ts, tT, tc, tr, tq, has_rq, model, inverse, hw_fma, to, DPM_BLOCK);
        for (dpm_index j = 0; j < m; j++) out[nfull + j] = to[j];
    }
    return -1;
}

DPM_CLONES
static dpm_index dpm_price_fast(const double *F, const double *K, const double *sigma,
                                const double *T, const double *cp, const double *r, const double *q,
                                int model, int inverse, int check, double *out, dpm_index n)
{
/* `check` stays a run-time argument (one test per block of 64): a compile-time copy of each loop
 * per value of it added a third of _black's compile time for no speed */
#define DPM_P(hr, m, inv) (hw ? dpm_price_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 1, check, out, n) \
                              : dpm_price_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 0, check, out, n))
    const int hw = dpm_hw_fma();
    if (r && q) {
        if (model) return DPM_P(1, 1, 0);
        return inverse ? DPM_P(1, 0, 1) : DPM_P(1, 0, 0);
    }
    if (model) return DPM_P(0, 1, 0);
    return inverse ? DPM_P(0, 0, 1) : DPM_P(0, 0, 0);
#undef DPM_P
}

/* Prices of n options with the input check fused in: returns -1, or the offset of the first
 * 64-element block holding an invalid input (outputs from that block on are not written). */
static dpm_index dpm_price_checked(const double *F, const double *K, const double *sigma,
                                   const double *T, const double *cp, const double *r,
                                   const double *q, int model, int inverse, double *out, dpm_index n)
{
    return dpm_price_fast(F, K, sigma, T, cp, r, q, model, inverse, 1, out, n);
}

/* Prices of n options.  fix (may be NULL) is not written; returns 0 (see above). */
static dpm_index dpm_price(const double *F, const double *K, const double *sigma, const double *T,
                           const double *cp, const double *r, const double *q, int model,
                           int inverse, double *out, unsigned char *fix, dpm_index n)
{
    (void)fix;
    dpm_price_fast(F, K, sigma, T, cp, r, q, model, inverse, 0, out, n);
    return 0;
}

DPM_INLINE void dpm_greeks_loop(const double *restrict F, const double *restrict K,
                                const double *restrict sigma, const double *restrict T,
                                const double *restrict cp, const double *restrict r,
                                const double *restrict q, const int has_rq, const int model,
                                const int inverse, const int full, double *restrict price,
                                double *restrict delta, double *restrict gamma,
                                double *restrict vega, double *restrict theta,
                                double *restrict rho, double *restrict vanna,
                                double *restrict volga, const int hw_fma, dpm_index n)
{
    DPM_SIMD
    for (dpm_index i = 0; i < n; i++) {
        const dpm_black_out o = dpm_black_all_core(F[i], K[i], sigma[i], T[i], cp[i],
                                                   has_rq ? r[i] : 0.0, has_rq ? q[i] : 0.0,
                                                   model, inverse, has_rq, hw_fma);
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
    }
}

/* Block driver of the greeks loop (see dpm_price_blocks for why). */
DPM_INLINE dpm_index dpm_greeks_blocks(const double *F, const double *K, const double *sigma,
                                       const double *T, const double *cp, const double *r,
                                       const double *q, const int has_rq, const int model,
                                       const int inverse, const int full, double *price,
                                       double *delta, double *gamma, double *vega, double *theta,
                                       double *rho, double *vanna, double *volga, const int hw_fma,
                                       const int check, dpm_index n)
{
    const dpm_index nfull = n - n % DPM_BLOCK;
    for (dpm_index b = 0; b < nfull; b += DPM_BLOCK) {
        if (check && !dpm_block_ok(F + b, K + b, sigma + b, T + b, cp + b, has_rq ? r + b : r,
                                   has_rq ? q + b : q, has_rq, DPM_BLOCK))
            return b;
        dpm_greeks_loop(F + b, K + b, sigma + b, T + b, cp + b, has_rq ? r + b : r,
                        has_rq ? q + b : q, has_rq, model, inverse, full, price + b, delta + b,
                        gamma + b, vega + b, theta + b, full ? rho + b : rho,
                        full ? vanna + b : vanna, full ? volga + b : volga, hw_fma, DPM_BLOCK);
    }
    if (nfull < n) {
        const dpm_index m = n - nfull;
        double tF[DPM_BLOCK], tK[DPM_BLOCK], ts[DPM_BLOCK], tT[DPM_BLOCK], tc[DPM_BLOCK];
        double tr[DPM_BLOCK], tq[DPM_BLOCK], o[8][DPM_BLOCK];
        dpm_pad_block(F + nfull, K + nfull, sigma + nfull, T + nfull, cp + nfull,
                      has_rq ? r + nfull : r, has_rq ? q + nfull : q, has_rq, m, tF, tK, ts, tT,
                      tc, tr, tq);
        if (check && !dpm_block_ok(tF, tK, ts, tT, tc, tr, tq, has_rq, DPM_BLOCK)) return nfull;
        dpm_greeks_loop(tF, tK, ts, tT, tc, tr, tq, has_rq, model, inverse, full, o[0], o[1],
                        o[2], o[3], o[4], o[5], o[6], o[7], hw_fma, DPM_BLOCK);
        for (dpm_index j = 0; j < m; j++) {
            const dpm_index i = nfull + j;
            price[i] = o[0][j]; delta[i] = o[1][j]; gamma[i] = o[2][j]; vega[i] = o[3][j];
            theta[i] = o[4][j];
            if (full) { rho[i] = o[5][j]; vanna[i] = o[6][j]; volga[i] = o[7][j]; }
        }
    }
    return -1;
}

/* full = 0: price, delta, gamma, vega and theta only (rho, vanna, volga may be NULL). */
DPM_CLONES
static dpm_index dpm_greeks_fast(const double *F, const double *K, const double *sigma,
                                 const double *T, const double *cp, const double *r, const double *q,
                                 int model, int inverse, int full, int check, double *price,
                                 double *delta, double *gamma, double *vega, double *theta,
                                 double *rho, double *vanna, double *volga, dpm_index n)
{
#define DPM_G_ARGS price, delta, gamma, vega, theta, rho, vanna, volga
#define DPM_G(hr, m, inv) ( \
        (full && hw) ? dpm_greeks_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 1, DPM_G_ARGS, 1, check, n) : \
        full ? dpm_greeks_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 1, DPM_G_ARGS, 0, check, n) : \
        hw ? dpm_greeks_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 0, DPM_G_ARGS, 1, check, n) : \
        dpm_greeks_blocks(F, K, sigma, T, cp, r, q, hr, m, inv, 0, DPM_G_ARGS, 0, check, n))
    const int hw = dpm_hw_fma();
    if (r && q) {
        if (model) return DPM_G(1, 1, 0);
        return inverse ? DPM_G(1, 0, 1) : DPM_G(1, 0, 0);
    }
    if (model) return DPM_G(0, 1, 0);
    return inverse ? DPM_G(0, 0, 1) : DPM_G(0, 0, 0);
#undef DPM_G
#undef DPM_G_ARGS
}

/* Price and greeks with the input check fused in (see dpm_price_checked). */
static dpm_index dpm_greeks_checked(const double *F, const double *K, const double *sigma,
                                    const double *T, const double *cp, const double *r,
                                    const double *q, int model, int inverse, int full,
                                    double *price, double *delta, double *gamma, double *vega,
                                    double *theta, double *rho, double *vanna, double *volga,
                                    dpm_index n)
{
    return dpm_greeks_fast(F, K, sigma, T, cp, r, q, model, inverse, full, 1, price, delta, gamma,
                           vega, theta, rho, vanna, volga, n);
}

/* Price and greeks of n options.  fix (may be NULL) is not written; returns 0. */
static dpm_index dpm_greeks(const double *F, const double *K, const double *sigma, const double *T,
                            const double *cp, const double *r, const double *q, int model, int inverse,
                            int full, double *price, double *delta, double *gamma, double *vega,
                            double *theta, double *rho, double *vanna, double *volga,
                            unsigned char *fix, dpm_index n)
{
    (void)fix;
    dpm_greeks_fast(F, K, sigma, T, cp, r, q, model, inverse, full, 0, price, delta, gamma, vega,
                    theta, rho, vanna, volga, n);
    return 0;
}

/* Benchmark reference only (benchmarks/bench_pricing.py): the textbook F N(d1) - K N(d2) and its
 * delta, gamma, vega, theta in one plain SIMD loop over libmvec, with no accuracy safeguards (it
 * loses relative accuracy wherever the two terms cancel) and a vectoriser epilogue. */
DPM_CLONES
static void dpm_plain_black(const double *restrict F, const double *restrict K,
                            const double *restrict sigma, const double *restrict T,
                            const double *restrict cp, int greeks, double *restrict price,
                            double *restrict delta, double *restrict gamma, double *restrict vega,
                            double *restrict theta, dpm_index n)
{
    if (!greeks) {
        DPM_SIMD
        for (dpm_index i = 0; i < n; i++) {
            const double s = sigma[i] * sqrt(T[i]);
            const double d1 = log(F[i] / K[i]) / s + 0.5 * s;
            price[i] = cp[i] * (F[i] * dpm_ncdf(cp[i] * d1) - K[i] * dpm_ncdf(cp[i] * (d1 - s)));
        }
        return;
    }
    DPM_SIMD
    for (dpm_index i = 0; i < n; i++) {
        const double sqT = sqrt(T[i]);
        const double s = sigma[i] * sqT;
        const double d1 = log(F[i] / K[i]) / s + 0.5 * s;
        const double n1 = dpm_ncdf(cp[i] * d1);
        const double pdf = dpm_npdf(d1);
        price[i] = cp[i] * (F[i] * n1 - K[i] * dpm_ncdf(cp[i] * (d1 - s)));
        delta[i] = cp[i] * n1;
        gamma[i] = pdf / (F[i] * s);
        vega[i] = F[i] * pdf * sqT;
        theta[i] = -0.5 * F[i] * pdf * sigma[i] / sqT;
    }
}

/* Benchmark probe only (benchmarks/host_probe.py): `iterations` rounds of 16 independent 4-wide
 * multiply-adds, enough chains to keep every FMA unit of one core busy and nothing else (no memory
 * traffic).  Run on 1 and on 2 threads it measures how much floating-point throughput the host
 * really gives a second thread (on a VM whose two vCPUs land on one physical core's two hardware
 * threads, about none).  Returns a checksum so the loop is not optimised away. */
DPM_CLONES
static double dpm_fp_probe(long long iterations)
{
    double a[64];
    for (int k = 0; k < 64; k++) a[k] = 1.0 + 1e-3 * k;
    const double m = 0.9999999, c = 1e-9;
    for (long long i = 0; i < iterations; i++) {
        DPM_SIMD
        for (int k = 0; k < 64; k++) a[k] = a[k] * m + c;
    }
    double sum = 0.0;
    for (int k = 0; k < 64; k++) sum += a[k];
    return sum;
}

/* Scalar entry points of the pieces above, for the tests. */
static inline double dpm_erfcx_fast(double u) { return dpm_hw_fma() ? dpm_erfcx_poly(u, 1) : dpm_erfcx_poly(u, 0); }
static inline double dpm_black_otm(double F, double K, double s)
{
    const double cpo = F > K ? -1.0 : 1.0;
    return dpm_hw_fma() ? dpm_otm_core(F, K, s, cpo, 1).otm : dpm_otm_core(F, K, s, cpo, 0).otm;
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
