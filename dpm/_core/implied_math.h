/*
 * Implied volatility of European options (Black-76 / BSM, linear and inverse) for dpm.
 *
 * Method (see docs/pricing.md for the derivation):
 *
 * 1. Reduce every option to an out-of-the-money normalised call: with x = ln(F/K),
 *    b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2), x <= 0, s = sigma*sqrt(T) the total
 *    vol.  An in-the-money price gives the out-of-the-money one by put-call parity, and the put of
 *    x is the call of -x.  The normalised target is beta = price_otm / sqrt(F K) in (0, e^{x/2}).
 *
 * 2. Evaluate the objective in the log domain with the scaled complementary error function
 *    erfcx(u) = e^{u^2} erfc(u), so nothing underflows and nothing cancels catastrophically:
 *      b(x, s)         = 1/2 e^{-(h^2+t^2)/2} [erfcx(-(h+t)/sqrt2) - erfcx((t-h)/sqrt2)]   (s <= s_c)
 *      e^{x/2} - b(x,s) = 1/2 e^{-(h^2+t^2)/2} [erfcx((h+t)/sqrt2) + erfcx((t-h)/sqrt2)]   (s >= s_c)
 *    with h = x/s, t = s/2 and s_c = sqrt(-2x) the inflection point of b in s (where h + t = 0, so
 *    every erfcx argument above is >= 0).  The vega db/ds = e^{-(h^2+t^2)/2}/sqrt(2 pi) cancels the
 *    exponential: d ln b / ds = sqrt(2/pi) / [erfcx(.) - erfcx(.)].
 *
 * 3. Lower branch (beta < b(x, s_c)): solve ln b(s) = ln beta in the variable u = 1/s^2, in which
 *    ln b ~ -x^2 u / 2 - 3/2 ln u + const is nearly linear.  Upper branch: solve
 *    ln(e^{x/2} - b(s)) = ln(e^{x/2} - beta) in w = s^2, in which it is ~ -w/8 - 1/2 ln w + const.
 *    Initial guesses invert asymptotic forms with the inverse normal CDF:
 *      lower: b ~ (2 pi |x| / 3^{3/2}) N(-|x| / (sqrt3 s))^3   (exact leading order as s -> 0),
 *      upper: e^{x/2} - b ~ 2 cosh(x/2) N(-s/2)                  (exact for x = 0).
 *    Householder steps of order 3 (quartic convergence) follow, safeguarded by a bracket that every
 *    evaluation narrows (b is increasing in s); a step leaving the bracket is replaced by bisection.
 *    The loop stops once a step is below 1e-9 relative (the next error is then ~1e-30) or after
 *    DPM_IV_MAX_ITER evaluations: a fixed bound, no data-dependent hang.
 *
 * Accuracy: the only rounding the solver adds is in the erfcx difference of the lower branch,
 * whose relative error in b is ~eps * |h| / s; divided by the price elasticity (~h^2 there) this
 * moves sigma by ~eps / (sqrt(T) max(1,|h|)) in absolute terms, i.e. < 1e-13 for T >= 1 hour.
 *
 * Everything here is plain scalar C with IEEE semantics (no fast-math); the loop over options is
 * embarrassingly parallel and results do not depend on how the array is chunked.
 */
#ifndef DPM_IMPLIED_MATH_H
#define DPM_IMPLIED_MATH_H

#include <math.h>
#include <stddef.h>
#include <float.h>

typedef ptrdiff_t dpm_iv_index;

/* status codes of dpm_implied_vol (documented in docs/pricing.md and dpm.pricing.implied_vol) */
#define DPM_IV_OK 0
#define DPM_IV_BELOW_INTRINSIC 1 /* price < intrinsic value: NaN */
#define DPM_IV_ABOVE_BOUND 2     /* price >= upper bound (F for calls, K for puts, discounted): NaN */
#define DPM_IV_NO_TIME_VALUE 3   /* price == intrinsic value with T > 0: vol 0 (the only solution) */
#define DPM_IV_EXPIRED 4         /* T == 0 and price == intrinsic: every vol fits, NaN */

#define DPM_IV_MAX_ITER 10
/* prices within this many ulps of the intrinsic value / upper bound are taken to be on it */
#define DPM_IV_BOUND_ULPS 8.0

#define DPM_IV_SQRT_2_OVER_PI 0.797884560802865355879892119869
#define DPM_IV_INV_SQRT_PI 0.564189583547756286948079451561
#define DPM_IV_INV_SQRT_2PI 0.398942280401432677939946059934
#define DPM_IV_SQRT1_2 0.707106781186547524400844362105
#define DPM_IV_TWO_PI_OVER_3SQRT3 1.20919957615614523218366365936 /* 2 pi / 3^{3/2} */
#define DPM_IV_SQRT3 1.73205080756887729352744634151

/* erfcx(u) = exp(u^2) erfc(u), for u > -5 (we only need u >= ~0).  Below 26 erfc(u) is a normal
 * double and exp(u^2) is finite; u^2 is split exactly (fma) so exp(u^2) keeps full relative
 * accuracy.  Above 26 the asymptotic series sum_n (-1)^n (2n-1)!! / (2u^2)^n, eight terms, has a
 * truncation error below 1e-17. */
static inline double dpm_erfcx(double u)
{
    if (u < 26.0) {
        const double p = u * u;
        const double e = fma(u, u, -p);
        return exp(p) * (1.0 + e) * erfc(u);
    }
    const double r = 0.5 / (u * u);
    const double sum =
        1.0 - r * (1.0 - 3.0 * r * (1.0 - 5.0 * r * (1.0 - 7.0 * r * (1.0 - 9.0 * r * (1.0 - 11.0 * r * (1.0 - 13.0 * r))))));
    return DPM_IV_INV_SQRT_PI / u * sum;
}

/* Inverse standard normal CDF, rational approximation of P. J. Acklam (relative error ~1.2e-9):
 * only used for initial guesses, so its accuracy is ample; valid for 0 < p < 1 (p may be tiny). */
static inline double dpm_inv_ncdf(double p)
{
    static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                3.754408661907416e+00};
    if (p < 0.02425) {
        const double q = sqrt(-2.0 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    }
    if (p <= 1.0 - 0.02425) {
        const double q = p - 0.5;
        const double r = q * q;
        return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
               (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
    }
    const double q = sqrt(-2.0 * log1p(-p));
    return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
}

/* ln b(x, s) for x <= 0 and s <= ~s_c (lower branch); *g1 = d ln b / ds. */
static inline double dpm_nb_ln_lower(double x, double s, double *g1)
{
    const double h = x / s, t = 0.5 * s;
    const double D = dpm_erfcx(-(h + t) * DPM_IV_SQRT1_2) - dpm_erfcx((t - h) * DPM_IV_SQRT1_2);
    *g1 = DPM_IV_SQRT_2_OVER_PI / D;
    return -0.5 * (h * h + t * t) + log(0.5 * D); /* D <= 0 (total cancellation) gives NaN/-inf */
}

/* ln(e^{x/2} - b(x, s)) for x <= 0 and s >= ~s_c (upper branch); *g1 = its derivative in s. */
static inline double dpm_nb_ln_upper(double x, double s, double *g1)
{
    const double h = x / s, t = 0.5 * s;
    const double E = dpm_erfcx((h + t) * DPM_IV_SQRT1_2) + dpm_erfcx((t - h) * DPM_IV_SQRT1_2);
    *g1 = -DPM_IV_SQRT_2_OVER_PI / E;
    return -0.5 * (h * h + t * t) + log(0.5 * E);
}

/* Total implied volatility s of the normalised out-of-the-money call.
 * x <= 0; beta = b target in (0, e^{x/2}); gam = e^{x/2} - beta (> 0), passed separately because the
 * caller can compute it without cancellation.  *iters receives the number of objective evaluations. */
static double dpm_implied_normalised(double x, double beta, double gam, int *iters)
{
    const double s_c = sqrt(-2.0 * x);
    double lo, hi, s, ln_target, g1, ln_bc = 0.0;
    int upper = 1, it = 0;

    if (x < 0.0) {
        ln_bc = dpm_nb_ln_lower(x, s_c, &g1);
        it = 1;
        upper = log(beta) > ln_bc;
    }
    if (!upper) {
        lo = 0.0;
        hi = s_c;
        ln_target = log(beta);
        /* lower map: beta = (2 pi |x| / 3^{3/2}) N(z)^3, z = -|x| / (sqrt3 s).  It overestimates s
         * near s_c, where the tangent of b at s_c is accurate instead (an upper bound of the root,
         * b being convex on (0, s_c); b'(s_c) = e^{x/2} / sqrt(2 pi)): take the smaller. */
        const double p = cbrt(beta / (DPM_IV_TWO_PI_OVER_3SQRT3 * -x));
        const double z = p < 0.5 ? dpm_inv_ncdf(p) : 0.0;
        s = z < 0.0 ? x / (DPM_IV_SQRT3 * z) : HUGE_VAL;
        const double s_t = s_c - (exp(ln_bc) - beta) / (DPM_IV_INV_SQRT_2PI * exp(0.5 * x));
        if (s_t > 0.0 && s_t < s) s = s_t;
        if (!(s < hi)) s = 0.5 * hi;
    } else {
        lo = s_c;
        hi = HUGE_VAL;
        ln_target = log(gam);
        /* upper map: gam = 2 cosh(x/2) N(-s/2) */
        const double e = exp(0.5 * x);
        const double p = gam / (e + 1.0 / e);
        s = p < 0.5 ? -2.0 * dpm_inv_ncdf(p) : 0.0;
        if (!(s > lo)) s = lo > 0.0 ? 1.5 * lo : 1.0;
    }

    for (; it < DPM_IV_MAX_ITER; it++) {
        const double f = (upper ? dpm_nb_ln_upper(x, s, &g1) : dpm_nb_ln_lower(x, s, &g1)) - ln_target;
        if (f == 0.0) { it++; break; }
        /* b and ln(b) increase with s; ln(e^{x/2} - b) decreases */
        if ((f < 0.0) != (upper != 0)) lo = s; else hi = s;
        /* derivatives of the objective in s: g1 = f', g2 = f'', g3 = f''' (see header comment) */
        const double h = x / s, t = 0.5 * s;
        const double A = (h * h - t * t) / s;      /* b''/b' */
        const double Ap = -3.0 * h * h / (s * s) - 0.25; /* d(b''/b')/ds */
        const double g2 = g1 * (A - g1);
        const double g3 = g1 * ((A - g1) * (A - 2.0 * g1) + Ap);
        /* chain rule to the iteration variable y: u = 1/s^2 (lower) or w = s^2 (upper) */
        double S1, S2, S3, y;
        if (upper) {
            S1 = 0.5 / s; S2 = -0.5 * S1 / (s * s); S3 = -1.5 * S2 / (s * s); y = s * s;
        } else {
            const double s2 = s * s;
            S1 = -0.5 * s2 * s; S2 = -1.5 * S1 * s2; S3 = -2.5 * S2 * s2; y = 1.0 / s2;
        }
        const double f1 = g1 * S1;
        const double f2 = g2 * S1 * S1 + g1 * S2;
        const double f3 = g3 * S1 * S1 * S1 + 3.0 * g2 * S1 * S2 + g1 * S3;
        const double nu = -f / f1, gm = f2 / f1, dl = f3 / f1;
        double hh = (1.0 + 0.5 * gm * nu) / (1.0 + gm * nu + dl * nu * nu / 6.0);
        if (!(hh > 0.0 && hh < 2.0)) hh = 1.0; /* far from the root: plain Newton */
        const double yn = y + nu * hh;
        double sn = yn > 0.0 ? (upper ? sqrt(yn) : 1.0 / sqrt(yn)) : -1.0;
        /* converged: the error after a Householder(3) step is ~ (step)^4 */
        if (fabs(sn - s) <= 1e-9 * s) { s = sn; it++; break; }
        if (!(sn > lo && sn < hi)) {
            if (hi == HUGE_VAL) sn = lo > 0.0 ? 2.0 * lo : (s > 0.0 ? 2.0 * s : 1.0);
            else sn = lo > 0.0 ? sqrt(lo * hi) : 0.25 * hi;
        }
        s = sn;
    }
    *iters = it;
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * SIMD path.  The solver above is latency-bound (each Householder step waits for the previous one),
 * so the array kernel runs it on blocks of DPM_IV_BLOCK options at once: a vectorised loop over
 * the block's lanes does the set-up, the guesses and a fixed number DPM_IV_SIMD_STEPS of steps in
 * every lane (branches become selects; libmvec supplies vector exp/log/erfc, as in black_math.h),
 * lanes that have converged are frozen, and the rare lanes still unconverged after the fixed steps
 * are finished by the scalar solver.  The block buffers are local and padded, so every option goes
 * through the same instructions wherever it sits in the array (results do not depend on the
 * chunking).  The libmvec functions are not correctly rounded (<= 4 ulp): the SIMD results differ
 * from the scalar solver's in the last bits, well inside the accuracy target.
 * ------------------------------------------------------------------------------------------- */
#include "black_math.h" /* DPM_SIMD, DPM_CLONES and the `omp declare simd` libm declarations */

#define DPM_IV_BLOCK 64
#define DPM_IV_SIMD_STEPS 4
#define DPM_IV_AI static inline __attribute__((always_inline))

/* erfcx without branches: both forms are computed and one is selected */
DPM_IV_AI double dpm_erfcx_v(double u)
{
    const int near = u < 26.0;
    const double ud = near ? u : 26.0, ua = near ? 26.0 : u;
    const double p = ud * ud;
    const double e = fma(ud, ud, -p);
    const double direct = exp(p) * (1.0 + e) * erfc(ud);
    const double r = 0.5 / (ua * ua);
    const double asym = DPM_IV_INV_SQRT_PI / ua *
        (1.0 - r * (1.0 - 3.0 * r * (1.0 - 5.0 * r * (1.0 - 7.0 * r * (1.0 - 9.0 * r * (1.0 - 11.0 * r * (1.0 - 13.0 * r)))))));
    return near ? direct : asym;
}

/* dpm_inv_ncdf for 0 < p < 0.5 without branches (only the lower tail and central forms) */
DPM_IV_AI double dpm_inv_ncdf_lower_v(double p)
{
    const double qt = sqrt(-2.0 * log(p));
    const double tail = (((((-7.784894002430293e-03 * qt - 3.223964580411365e-01) * qt - 2.400758277161838e+00) * qt
                           - 2.549732539343734e+00) * qt + 4.374664141464968e+00) * qt + 2.938163982698783e+00) /
                        ((((7.784695709041462e-03 * qt + 3.224671290700398e-01) * qt + 2.445134137142996e+00) * qt
                          + 3.754408661907416e+00) * qt + 1.0);
    const double qc = p - 0.5, rc = qc * qc;
    const double central = (((((-3.969683028665376e+01 * rc + 2.209460984245205e+02) * rc - 2.759285104469687e+02) * rc
                              + 1.383577518672690e+02) * rc - 3.066479806614716e+01) * rc + 2.506628277459239e+00) * qc /
                           (((((-5.447609879822406e+01 * rc + 1.615858368580409e+02) * rc - 1.556989798598866e+02) * rc
                              + 6.680131188771972e+01) * rc - 1.328068155288572e+01) * rc + 1.0);
    return p < 0.02425 ? tail : central;
}

/* One safeguarded Householder(3) step of lane state (s, lo, hi, done, evals); see
 * dpm_implied_normalised for the method.  up: 1 upper branch, 0 lower branch. */
DPM_IV_AI void dpm_iv_step(double x, int up, double ln_target, double *s_, double *lo_,
                           double *hi_, int *done_, int *evals_)
{
    const double s = *s_, lo0 = *lo_, hi0 = *hi_;
    const int done = *done_;
    const double h = x / s, t = 0.5 * s;
    const double sgn = up ? 1.0 : -1.0;
    const double E1 = dpm_erfcx_v(sgn * (h + t) * DPM_IV_SQRT1_2);
    const double E2 = dpm_erfcx_v((t - h) * DPM_IV_SQRT1_2);
    const double D = up ? E1 + E2 : E1 - E2;
    const double g1 = -sgn * DPM_IV_SQRT_2_OVER_PI / D;
    const double f = -0.5 * (h * h + t * t) + log(0.5 * D) - ln_target;
    const int raise_lo = (f < 0.0) != up;
    const double lo = raise_lo ? s : lo0, hi = raise_lo ? hi0 : s;
    const double A = (h * h - t * t) / s;
    const double Ap = -3.0 * h * h / (s * s) - 0.25;
    const double g2 = g1 * (A - g1);
    const double g3 = g1 * ((A - g1) * (A - 2.0 * g1) + Ap);
    const double s2 = s * s;
    const double S1 = up ? 0.5 / s : -0.5 * s2 * s;
    const double S2 = up ? -0.5 * S1 / s2 : -1.5 * S1 * s2;
    const double S3 = up ? -1.5 * S2 / s2 : -2.5 * S2 * s2;
    const double y = up ? s2 : 1.0 / s2;
    const double f1 = g1 * S1;
    const double f2 = g2 * S1 * S1 + g1 * S2;
    const double f3 = g3 * S1 * S1 * S1 + 3.0 * g2 * S1 * S2 + g1 * S3;
    const double nu = -f / f1, gm = f2 / f1, dl = f3 / f1;
    const double hh0 = (1.0 + 0.5 * gm * nu) / (1.0 + gm * nu + dl * nu * nu / 6.0);
    const double hh = (hh0 > 0.0 && hh0 < 2.0) ? hh0 : 1.0;
    const double yn = y + nu * hh;
    const double ry = sqrt(yn > 0.0 ? yn : 1.0);
    const double sn = yn > 0.0 ? (up ? ry : 1.0 / ry) : -1.0;
    const int conv = f == 0.0 || fabs(sn - s) <= 1e-9 * s;
    const int inside = sn > lo && sn < hi;
    const double bis = hi == HUGE_VAL ? (lo > 0.0 ? 2.0 * lo : 2.0 * s)
                                      : (lo > 0.0 ? sqrt(lo * hi) : 0.25 * hi);
    const double snew = (f == 0.0) ? s : ((conv || inside) ? sn : bis);
    *s_ = done ? s : snew;
    *lo_ = done ? lo0 : lo;
    *hi_ = done ? hi0 : hi;
    *evals_ += !done;
    *done_ = done | conv;
}

/* Set-up, guesses and DPM_IV_SIMD_STEPS steps for DPM_IV_BLOCK lanes (all lanes valid). */
DPM_CLONES
static void dpm_iv_block_simd(const double *restrict xs, const double *restrict betas,
                              const double *restrict gams, double *restrict s_out,
                              int *restrict done_out, int *restrict evals_out)
{
    DPM_SIMD
    for (int j = 0; j < DPM_IV_BLOCK; j++) {
        const double x = xs[j], beta = betas[j], gam = gams[j];
        const double s_c = sqrt(-2.0 * x);
        /* at s_c, h + t = 0: b(x, s_c) = e^{x/2} (1 - erfcx(sqrt(-x))) / 2 */
        const double ln_bc = 0.5 * x + log(0.5 * (1.0 - dpm_erfcx_v(sqrt(-x))));
        const double ln_beta = log(beta);
        const int up = ln_beta > ln_bc;
        /* lower branch guess: lower map, capped by the tangent at s_c */
        const double pl = exp(log(beta / (DPM_IV_TWO_PI_OVER_3SQRT3 * -x)) * (1.0 / 3.0));
        const double zl = dpm_inv_ncdf_lower_v(pl < 0.5 ? pl : 0.25);
        const double s_map = (pl < 0.5 && zl < 0.0) ? x / (DPM_IV_SQRT3 * zl) : HUGE_VAL;
        const double s_t = s_c - (exp(ln_bc) - beta) / (DPM_IV_INV_SQRT_2PI * exp(0.5 * x));
        const double s_l0 = (s_t > 0.0 && s_t < s_map) ? s_t : s_map;
        const double s_l = s_l0 < s_c ? s_l0 : 0.5 * s_c;
        /* upper branch guess: upper map */
        const double e = exp(0.5 * x);
        const double pu = gam / (e + 1.0 / e);
        const double zu = dpm_inv_ncdf_lower_v(pu < 0.5 ? pu : 0.25);
        const double s_u0 = pu < 0.5 ? -2.0 * zu : 0.0;
        const double s_u = s_u0 > s_c ? s_u0 : (s_c > 0.0 ? 1.5 * s_c : 1.0);
        double s = up ? s_u : s_l;
        double lo = up ? s_c : 0.0, hi = up ? HUGE_VAL : s_c;
        const double ln_target = up ? log(gam) : ln_beta;
        int done = 0, evals = 1;
        dpm_iv_step(x, up, ln_target, &s, &lo, &hi, &done, &evals);
        dpm_iv_step(x, up, ln_target, &s, &lo, &hi, &done, &evals);
        dpm_iv_step(x, up, ln_target, &s, &lo, &hi, &done, &evals);
        dpm_iv_step(x, up, ln_target, &s, &lo, &hi, &done, &evals);
        s_out[j] = s;
        done_out[j] = done;
        evals_out[j] = evals;
    }
}

/* Whether the vector block solver pays: with AVX2/AVX-512 and libmvec it runs ~4x faster than the
 * scalar solver; without (baseline x86-64 clone, DPM_NO_SIMD_MATH, other platforms) its fixed
 * steps and both-branch selects make it slower, so the scalar solver runs instead. */
static int dpm_iv_use_simd(void)
{
#if DPM_HAVE_LIBMVEC && defined(DPM_NATIVE)
#  if defined(__AVX2__)
    return 1;
#  else
    return 0;
#  endif
#elif DPM_HAVE_LIBMVEC
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* Implied vols of n options.  P: prices (discounted; in coin when inverse), F: forward (Black-76)
 * or spot (BSM), K, T, cp = +-1, r/q: rate and carry arrays or NULL for zero.  Inputs are finite
 * and F, K > 0, T >= 0 (checked by the caller).  out: vols, flags: status codes, iters: evaluation
 * counts or NULL; scalar_only: skip the vector solver (testing).  Returns the number of elements
 * with a non-zero status. */
static dpm_iv_index dpm_implied_vol(const double *P, const double *F_in, const double *K,
                                    const double *T, const double *cp, const double *r,
                                    const double *q, int model, int inverse, double *out,
                                    signed char *flags, unsigned char *iters, int scalar_only,
                                    dpm_iv_index n)
{
    dpm_iv_index nbad = 0;
    const int simd = !scalar_only && dpm_iv_use_simd();
    double xs[DPM_IV_BLOCK], betas[DPM_IV_BLOCK], gams[DPM_IV_BLOCK], sq[DPM_IV_BLOCK];
    double s_out[DPM_IV_BLOCK];
    int done[DPM_IV_BLOCK], evals[DPM_IV_BLOCK], active[DPM_IV_BLOCK];
    for (dpm_iv_index b = 0; b < n; b += DPM_IV_BLOCK) {
        const int m = (n - b) < DPM_IV_BLOCK ? (int)(n - b) : DPM_IV_BLOCK;
        for (int j = 0; j < DPM_IV_BLOCK; j++) {
            /* padding and lanes without a solve get a harmless problem (x = -1/2, s = 1/2) */
            xs[j] = -0.5; betas[j] = 0.1; gams[j] = 0.6788007830714049 /* e^{-1/4} */ - 0.1;
            active[j] = 0;
            if (j >= m) continue;
            const dpm_iv_index i = b + j;
            const double Ti = T[i], Ki = K[i];
            const double ri = r ? r[i] : 0.0, qi = q ? q[i] : 0.0;
            const double Fi = model ? F_in[i] * exp((ri - qi) * Ti) : F_in[i];
            const double df = exp(-ri * Ti);
            const double V = inverse ? P[i] * Fi : P[i];
            const double B = V / df;               /* undiscounted price */
            const int call = cp[i] > 0.0;
            /* out-of-the-money part (parity) and the distance to the upper bound, undiscounted */
            const double intrinsic = call ? (Fi > Ki ? Fi - Ki : 0.0) : (Ki > Fi ? Ki - Fi : 0.0);
            const double otm = B - intrinsic;
            const double gap = call ? Fi - B : Ki - B;
            /* prices within a few ulps of a bound are taken to be on it: discounting, coin
             * conversion and the caller's own rounding move an intrinsic or bound price.  The
             * intrinsic value |F - K| carries the rounding of F and K (a forward from spot and
             * carry is rounded), so its tolerance scales with max(F, K), not with |F - K|. */
            const double tol = intrinsic > 0.0 ? DPM_IV_BOUND_ULPS * DBL_EPSILON * (Fi > Ki ? Fi : Ki) : 0.0;
            const double bound = call ? Fi : Ki;
            int flag = DPM_IV_OK;
            double vol = NAN;
            if (otm < -tol) {
                flag = DPM_IV_BELOW_INTRINSIC;
            } else if (Ti == 0.0) {
                flag = otm > tol ? DPM_IV_ABOVE_BOUND : DPM_IV_EXPIRED;
            } else if (!(gap > DPM_IV_BOUND_ULPS * DBL_EPSILON * bound)) {
                flag = DPM_IV_ABOVE_BOUND;
            } else if (otm <= tol) {
                flag = DPM_IV_NO_TIME_VALUE; vol = 0.0;
            } else {
                const double norm = sqrt(Fi) * sqrt(Ki);
                xs[j] = -fabs(log(Fi / Ki));
                betas[j] = otm / norm;
                gams[j] = gap / norm;
                sq[j] = sqrt(Ti);
                active[j] = 1;
            }
            out[i] = vol;
            flags[i] = (signed char)flag;
            if (iters) iters[i] = 0;
            nbad += flag != DPM_IV_OK;
        }
        if (simd) {
            dpm_iv_block_simd(xs, betas, gams, s_out, done, evals);
        } else {
            for (int j = 0; j < m; j++) { done[j] = 0; evals[j] = 0; }
        }
        for (int j = 0; j < m; j++) {
            if (!active[j]) continue;
            double s = s_out[j];
            int it = evals[j];
            if (!done[j]) { /* rare: finish with the scalar solver */
                int it2 = 0;
                s = dpm_implied_normalised(xs[j], betas[j], gams[j], &it2);
                it += it2;
            }
            out[b + j] = s / sq[j];
            if (iters) iters[b + j] = (unsigned char)(it < 255 ? it : 255);
        }
    }
    return nbad;
}

#endif /* DPM_IMPLIED_MATH_H */
