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
 * 3. Branches (dpm_iv_setup): lower (beta <= b(x, s_c)) solves ln b(s) = ln beta in u = 1/s^2;
 *    "small" (b(x, s_c) < beta <= e^{x/2}/4, near the money) solves the same objective above s_c;
 *    upper solves ln(e^{x/2} - b(s)) = ln(e^{x/2} - beta) in w = s^2.  The brackets reach 1e-4 past
 *    s_c (the root may be s_c itself).  For small t the lower objective uses the series of
 *    black_math.h instead of the cancelling erfcx difference.  Householder steps of order 3
 *    (quartic convergence) follow from asymptotic guesses, safeguarded by a bracket that every
 *    evaluation narrows; a step leaving it is replaced by bisection.  The loop stops once a
 *    Householder step inside the bracket is below DPM_IV_QUARTIC_STOP relative (a Newton fallback
 *    or bisection step: below 1e-9), or after DPM_IV_MAX_ITER evaluations: a fixed bound, no
 *    data-dependent hang; a lane that has not converged gets NaN and DPM_IV_NO_CONVERGENCE.
 *
 * Accuracy: see docs/pricing.md (worst measured 4e-15 relative in s on a 40-digit grid).
 *
 * IEEE semantics throughout (no fast-math); the loop over options is embarrassingly parallel and
 * results do not depend on how the array is chunked.
 */
#ifndef DPM_IMPLIED_MATH_H
#define DPM_IMPLIED_MATH_H

#include <math.h>
#include <stddef.h>
#include <float.h>
#include "black_math.h" /* DPM_SIMD, DPM_CLONES, libm SIMD declarations, erfcx polynomial, series */

typedef ptrdiff_t dpm_iv_index;

/* status codes of dpm_implied_vol (documented in docs/pricing.md and dpm.pricing.implied_vol) */
#define DPM_IV_OK 0
#define DPM_IV_BELOW_INTRINSIC 1 /* price < intrinsic value: NaN */
#define DPM_IV_ABOVE_BOUND 2     /* price >= upper bound (F for calls, K for puts, discounted): NaN */
#define DPM_IV_NO_TIME_VALUE 3   /* price == intrinsic value with T > 0: vol 0 (the only solution) */
#define DPM_IV_EXPIRED 4         /* T == 0 and price == intrinsic: every vol fits, NaN */
#define DPM_IV_NO_CONVERGENCE 5  /* the bounded iteration did not converge: NaN (never silent) */

#define DPM_IV_MAX_ITER 10
/* A safeguarded Householder(3) step leaves an error of about C d^4 after a step of relative size d;
 * on a 5,776-point mpmath grid (x down to -12, s 1e-4..12) a stop at 1e-3 gave 3.4e-13, so C ~ 0.3
 * and a stop at 3e-4 leaves C d^4 ~ 3e-15, below the rounding of the objective: the grid's worst
 * error is 6.7e-15 with it, 6.4e-15 with the old 1e-9 stop (and 6.7e-15 / 7.1e-15 against 1e-5 on
 * 17,328 random 40-digit points). Against 1e-5 it saves the third step on 40 % of the lanes of the
 * chain-shaped benchmark book (3.58 -> 3.24 evaluations on average). */
#define DPM_IV_QUARTIC_STOP 3e-4
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

/* dpm_inv_ncdf for 0 < p < 0.5 without branches (only the lower tail and central forms) */
DPM_INLINE double dpm_inv_ncdf_lower_v(double p)
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

/* erfcx(u) for any real u: the polynomial of black_math.h for |u|, and erfcx(u) = 2 e^{u^2} -
 * erfcx(-u) below 0 (the lower objective meets u < 0 just above s_c; u^2 is capped at 700). */
DPM_INLINE double dpm_iv_erfcx(double u, const int hw)
{
    const double a = u < 0.0 ? -u : u;
    const double e = dpm_erfcx_poly(a, hw);
    const double p = a * a;
    const double pc = p < 700.0 ? p : 700.0;
    const double big = exp(u < 0.0 ? pc : 0.0) * (1.0 + (p < 700.0 ? dpm_prod_err(a, a, p, hw) : 0.0));
    return u < 0.0 ? 2.0 * big - e : e;
}

/* The objective and its derivative in s.  up = 0: ln b(x, s); up = 1: ln(e^{x/2} - b(x, s)).
 * With h = x/s, t = s/2, E = e^{-(h^2+t^2)/2}:  b = E Q and e^{x/2} - b = E Q', where
 *   Q  = [erfcx(-(h+t)/sqrt2) - erfcx((t-h)/sqrt2)] / 2, or for small t (t < 0.1, |h| t < 0.72)
 *        Q = 2 t S / sqrt(2 pi) with the series S of black_math.h (no cancelling difference: the
 *        near-the-money, short-expiry case keeps full relative accuracy),
 *   Q' = [erfcx((h+t)/sqrt2) + erfcx((t-h)/sqrt2)] / 2,
 * and db/ds = E / sqrt(2 pi), so d ln b / ds = 1 / (sqrt(2 pi) Q). */
DPM_INLINE double dpm_iv_objective(double x, double s, const int up, double *g1, const int hw)
{
    const double h = x / s, t = 0.5 * s;
    const int series = up ? 0 : ((t < DPM_SERIES_T ? -h * t : DPM_SERIES_HT) < DPM_SERIES_HT);
    const double a1 = series ? -h * DPM_IV_SQRT1_2 : (up ? (h + t) : -(h + t)) * DPM_IV_SQRT1_2;
    const double E1 = dpm_iv_erfcx(a1, hw);
    const double E2 = dpm_erfcx_poly((t - h) * DPM_IV_SQRT1_2, hw);
    const double S = dpm_series_sum(h, 0.0, 1.25331413731550025121 * E1, t * t, hw);
    const double Q = series ? 2.0 * DPM_IV_INV_SQRT_2PI * t * S : 0.5 * (up ? E1 + E2 : E1 - E2);
    *g1 = (up ? -DPM_IV_INV_SQRT_2PI : DPM_IV_INV_SQRT_2PI) / Q;
    return -0.5 * (h * h + t * t) + log(Q); /* Q <= 0 (no information) gives NaN/-inf */
}

/* ln b(x, s) (lower objective); kept as a scalar entry point. */
static inline double dpm_nb_ln_lower(double x, double s, double *g1)
{
    return dpm_hw_fma() ? dpm_iv_objective(x, s, 0, g1, 1) : dpm_iv_objective(x, s, 0, g1, 0);
}

/* ln(e^{x/2} - b(x, s)) (upper objective). */
static inline double dpm_nb_ln_upper(double x, double s, double *g1)
{
    return dpm_hw_fma() ? dpm_iv_objective(x, s, 1, g1, 1) : dpm_iv_objective(x, s, 1, g1, 0);
}

/* Branch, bracket and initial guess of one normalised problem (x <= 0, beta in (0, e^{x/2}),
 * gam = e^{x/2} - beta).  Branches: "lower" solves ln b = ln beta below the inflection point s_c =
 * sqrt(-2x) (beta <= b(x, s_c)); "small" solves the same objective above s_c when beta is still
 * small (<= e^{x/2}/4: the upper objective ln(e^{x/2} - b) would lose beta's digits, e.g. at the
 * money with a tiny price); "upper" solves ln(e^{x/2} - b) = ln gam.  The root may be s_c itself:
 * the brackets reach 1e-4 (relative) past s_c, so that it is an interior point (both objectives
 * are valid there) and the Householder steps converge instead of being bisected at the edge. */
typedef struct { double s, lo, hi, ln_target, up; } dpm_iv_start; /* up: 1.0 or 0.0 (a double lane flag keeps the set-up loop vectorisable) */

DPM_INLINE dpm_iv_start dpm_iv_setup(double x, double beta, double gam, const int hw)
{
    dpm_iv_start st;
    const double s_c = sqrt(-2.0 * x);
    const double ex2 = exp(0.5 * x);
    /* b(x, s_c) = e^{x/2} (1 - erfcx(sqrt(-x))) / 2 (at s_c, h + t = 0) */
    const double b_c = 0.5 * ex2 * (1.0 - dpm_erfcx_poly(sqrt(-x), hw));
    /* single comparisons: GCC 12 does not vectorise int '|'/'&' of double comparisons here */
    const double small_max = b_c > 0.25 * ex2 ? b_c : 0.25 * ex2;
    const double up = beta > small_max ? 1.0 : 0.0;
    /* one inverse normal CDF per lane, at the argument of its branch (below: lower map; small:
     * at-the-money map; up: upper map) */
    const double pl = exp(log(beta / (DPM_IV_TWO_PI_OVER_3SQRT3 * (x < 0.0 ? -x : 1.0))) * (1.0 / 3.0));
    const double bp = beta / ex2;
    const double pu = gam / (ex2 + 1.0 / ex2);
    const double p_up = pu < 0.5 ? pu : 0.25;
    const double p_lo = beta <= b_c ? (pl < 0.5 ? pl : 0.25) : 0.5 - 0.5 * (bp < 0.5 ? bp : 0.5);
    const double z = dpm_inv_ncdf_lower_v(up > 0.5 ? p_up : p_lo);
    /* lower guess: lower map beta = (2 pi |x| / 3^{3/2}) N(-|x|/(sqrt3 s))^3, capped by the tangent of
     * b at s_c (an upper bound of the root, b being convex below s_c; b'(s_c) = e^{x/2}/sqrt(2 pi));
     * single-comparison selects only (nested or combined conditions stop GCC's vectoriser);
     * pl < 0.5 implies z < 0, and x = 0 never takes the lower branch */
    const double s_map = pl < 0.5 ? x / (DPM_IV_SQRT3 * z) : HUGE_VAL;
    const double s_t = s_c - (b_c - beta) / (DPM_IV_INV_SQRT_2PI * ex2);
    const double s_tp = s_t > 0.0 ? s_t : HUGE_VAL;
    const double s_l0 = s_tp < s_map ? s_tp : s_map;
    const double hi_l = s_c * (1.0 + 1e-4);
    const double s_l = s_l0 <= s_c ? s_l0 : 0.5 * s_c;
    /* small guess: at the money b = 2 N(s/2) - 1, so s = 2 N^{-1}((1 + beta')/2), beta' = beta e^{-x/2};
     * s ~ sqrt(2 pi) beta' for tiny beta' (where 1 + beta' would round) */
    const double s_s0 = bp < 1e-6 ? 2.5066282746310002 * bp : -2.0 * z;
    const double s_s = s_s0 > s_c ? s_s0 : 1.01 * s_c + 1e-300;
    /* upper guess: upper map gam = 2 cosh(x/2) N(-s/2) */
    const double s_u0 = pu < 0.5 ? -2.0 * z : 0.0;
    const double s_u = s_u0 > s_c ? s_u0 : (s_c > 0.0 ? 1.5 * s_c : 1.0);
    st.up = up;
    st.s = up > 0.5 ? s_u : (beta <= b_c ? s_l : s_s);
    /* beta <= b_c (lower branch) is re-tested in each select: a stored int mask stops the vectoriser */
    st.lo = beta <= b_c ? 0.0 : s_c * (1.0 - 1e-4); /* up implies beta > b_c */
    st.hi = beta <= b_c ? hi_l : HUGE_VAL;
    st.ln_target = log(up > 0.5 ? gam : beta);
    return st;
}

/* One safeguarded Householder(3) step of lane state (s, lo, hi, done, evals, ok).  Householder's
 * method of order 3 in the variable u = 1/s^2 (lower objectives, where ln b ~ -x^2 u/2 - 3/2 ln u)
 * or w = s^2 (upper, ~ -w/8 - 1/2 ln w), inside a bracket that every evaluation narrows; a step
 * leaving it is replaced by bisection.  A lane is done when a Householder step inside the bracket
 * is below DPM_IV_QUARTIC_STOP relative (the error left is about its fourth power), any other step
 * below 1e-9, or f == 0. */
DPM_INLINE void dpm_iv_step(double x, const int up, double ln_target, double *s_, double *lo_,
                            double *hi_, int *done_, int *evals_, const int hw)
{
    const double s = *s_, lo0 = *lo_, hi0 = *hi_;
    const int done = *done_;
    double g1;
    const double f = dpm_iv_objective(x, s, up, &g1, hw) - ln_target;
    /* b increases with s: ln b too, ln(e^{x/2} - b) decreases */
    const int raise_lo = (f < 0.0) != up;
    const double lo = raise_lo ? s : lo0, hi = raise_lo ? hi0 : s;
    const double is = 1.0 / s; /* reciprocals once: divisions are the slowest vector operations */
    const double h = x * is, t = 0.5 * s;
    const double A = (h * h - t * t) * is;           /* b''/b' */
    const double Ap = -3.0 * h * h * (is * is) - 0.25; /* d(b''/b')/ds */
    const double g2 = g1 * (A - g1);
    const double g3 = g1 * ((A - g1) * (A - 2.0 * g1) + Ap);
    const double s2 = s * s;
    const double is2 = is * is;
    const double S1 = up ? 0.5 * is : -0.5 * s2 * s;
    const double S2 = up ? -0.5 * S1 * is2 : -1.5 * S1 * s2;
    const double S3 = up ? -1.5 * S2 * is2 : -2.5 * S2 * s2;
    const double y = up ? s2 : is2;
    const double f1 = g1 * S1;
    const double f2 = g2 * S1 * S1 + g1 * S2;
    const double f3 = g3 * S1 * S1 * S1 + 3.0 * g2 * S1 * S2 + g1 * S3;
    const double if1 = 1.0 / f1;
    const double nu = -f * if1, gm = f2 * if1, dl = f3 * if1;
    const double hh0 = (1.0 + 0.5 * gm * nu) / (1.0 + gm * nu + dl * nu * nu * (1.0 / 6.0));
    const double hh = (hh0 > 0.0 && hh0 < 2.0) ? hh0 : 1.0; /* far from the root: plain Newton */
    const double yn = y + nu * hh;
    const double ry = sqrt(yn > 0.0 ? yn : 1.0);
    const double sn = yn > 0.0 ? (up ? ry : 1.0 / ry) : -1.0;
    /* a Householder step (not the Newton fallback) inside the bracket leaves an error of about
     * the step's fourth power: a step below DPM_IV_QUARTIC_STOP relative is the last one */
    const int inside = sn > lo && sn < hi;
    const double tol = (hh0 > 0.0 && hh0 < 2.0 && inside) ? DPM_IV_QUARTIC_STOP : 1e-9;
    const int conv = (f == 0.0) | (fabs(sn - s) <= tol * s);
    const double bis = hi == HUGE_VAL ? (lo > 0.0 ? 2.0 * lo : 2.0 * s)
                                      : (lo > 0.0 ? sqrt(lo * hi) : 0.25 * hi);
    const double snew = (f == 0.0) ? s : ((conv || inside) ? sn : bis);
    const int fin = f == f; /* a NaN objective (no information) never counts as converged */
    *s_ = done ? s : snew;
    *lo_ = done ? lo0 : lo;
    *hi_ = done ? hi0 : hi;
    *evals_ += !done;
    *done_ = done | (conv & fin);
}

/* Total implied volatility s of the normalised out-of-the-money call, scalar.
 * x <= 0; beta = b target in (0, e^{x/2}); gam = e^{x/2} - beta (> 0), passed separately because the
 * caller can compute it without cancellation.  *iters receives the number of objective evaluations,
 * *ok whether the iteration converged (the result is meaningless otherwise). */
static double dpm_implied_solve(double x, double beta, double gam, int *iters, int *ok)
{
    const int hw = dpm_hw_fma();
    dpm_iv_start st = hw ? dpm_iv_setup(x, beta, gam, 1) : dpm_iv_setup(x, beta, gam, 0);
    double s = st.s, lo = st.lo, hi = st.hi;
    const int up = st.up > 0.5;
    int done = 0, it = 1; /* the set-up evaluates erfcx at s_c: counted as one evaluation */
    while (!done && it < DPM_IV_MAX_ITER) {
        if (hw) dpm_iv_step(x, up, st.ln_target, &s, &lo, &hi, &done, &it, 1);
        else dpm_iv_step(x, up, st.ln_target, &s, &lo, &hi, &done, &it, 0);
    }
    *iters = it;
    *ok = done;
    return s;
}

/* Kept for API stability (testing helper): the solve without the convergence flag. */
static double dpm_implied_normalised(double x, double beta, double gam, int *iters)
{
    int ok = 0;
    return dpm_implied_solve(x, beta, gam, iters, &ok);
}

/* ---------------------------------------------------------------------------------------------
 * Array kernel.  The solver is latency-bound (each step waits for the previous one), so the array
 * kernel runs it on blocks of DPM_IV_BLOCK options at once: a vectorised loop over the block's
 * lanes does the set-up (bounds, flags, normalisation) and the guesses, then DPM_IV_FULL_STEPS
 * vectorised steps run on every lane (converged lanes frozen) and the later ones, up to
 * DPM_IV_SIMD_STEPS in all, only on the lanes still unconverged, packed together; the rare lanes
 * unconverged after that are finished by the scalar solver,
 * and a lane that does not converge there either gets NaN and flag DPM_IV_NO_CONVERGENCE.  The
 * block buffers are local and padded, so every option goes through the same instructions
 * wherever it sits in the array (results do not depend on the chunking).
 * ------------------------------------------------------------------------------------------- */
#define DPM_IV_BLOCK 64
#define DPM_IV_SIMD_STEPS 4
/* steps run on the whole block; later steps run on its unconverged lanes only, packed together
 * (most lanes stop after the second or third step: a block no longer waits for its slowest lane) */
#define DPM_IV_FULL_STEPS 2
/* packed lane counts are padded to a multiple of this: every lane runs in the vector body of the
 * step loop (never a scalar or narrower remainder), so its bits do not depend on its neighbours */
#define DPM_IV_PACK 8


/* Whether the vector block solver pays: with AVX2/AVX-512 and libmvec it runs several times faster
 * than the scalar solver; without (baseline x86-64 clone, DPM_NO_SIMD_MATH, other platforms) its
 * fixed steps and selects make it slower, so the scalar solver runs instead. */
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

/* Set-up of one block (vectorised): bounds and flags, normalisation, guesses.  Lanes without a
 * solve get a harmless problem (x = -1/2, s = 1/2) and active = 0. */
DPM_INLINE void dpm_iv_block_setup(const double *restrict P, const double *restrict F_in,
                                   const double *restrict K, const double *restrict T,
                                   const double *restrict cp, const double *restrict r,
                                   const double *restrict q, const int has_rq, const int model,
                                   const int inverse, const int hw, double *restrict vol0,
                                   int *restrict flag, int *restrict active,
                                   double *restrict xs, double *restrict betas,
                                   double *restrict gams, double *restrict sq,
                                   double *restrict s, double *restrict lo, double *restrict hi,
                                   double *restrict tgt, int *restrict up)
{
    DPM_SIMD
    for (int j = 0; j < DPM_IV_BLOCK; j++) {
        const double Ti = T[j], Ki = K[j];
        const double ri = has_rq ? r[j] : 0.0, qi = has_rq ? q[j] : 0.0;
        const double Fi = (model && has_rq) ? F_in[j] * exp((ri - qi) * Ti) : F_in[j];
        const double df = has_rq ? exp(-ri * Ti) : 1.0;
        const double V = inverse ? P[j] * Fi : P[j];
        const double B = V / df;                   /* undiscounted price */
        const int call = cp[j] > 0.0;
        /* out-of-the-money part (parity) and the distance to the upper bound, undiscounted */
        const double intrinsic = call ? (Fi > Ki ? Fi - Ki : 0.0) : (Ki > Fi ? Ki - Fi : 0.0);
        const double otm = B - intrinsic;
        const double gap = call ? Fi - B : Ki - B;
        /* prices within a few ulps of a bound are taken to be on it: discounting, coin conversion
         * and the caller's own rounding move an intrinsic or bound price.  The intrinsic value
         * |F - K| carries the rounding of F and K, so its tolerance scales with max(F, K). */
        const double mx = Fi > Ki ? Fi : Ki;
        const double tol = intrinsic > 0.0 ? DPM_IV_BOUND_ULPS * DBL_EPSILON * mx : 0.0;
        const double bound = call ? Fi : Ki;
        /* the status as a double chain of selects (int logic of comparisons stops the vectoriser) */
        const double fd = otm < -tol ? (double)DPM_IV_BELOW_INTRINSIC
                        : Ti == 0.0 ? (otm > tol ? (double)DPM_IV_ABOVE_BOUND : (double)DPM_IV_EXPIRED)
                        : gap > DPM_IV_BOUND_ULPS * DBL_EPSILON * bound
                            ? (otm <= tol ? (double)DPM_IV_NO_TIME_VALUE : (double)DPM_IV_OK)
                            : (double)DPM_IV_ABOVE_BOUND;
        const int f = (int)fd;
        const int act = fd == 0.0;
        flag[j] = f;
        active[j] = act;
        vol0[j] = fd == (double)DPM_IV_NO_TIME_VALUE ? 0.0 : NAN;
        const double norm = sqrt(Fi) * sqrt(Ki);
        /* x = -|ln(F/K)| with the division's remainder (as in black_math.h): near the money with
         * a tiny total vol, h = x/s amplifies the rounding of F/K */
        const double qd = Fi / Ki, qK = qd * Ki;
        const double lq = log(qd) + ((Fi - qK) - dpm_prod_err(qd, Ki, qK, hw)) / Fi;
        const double x = act ? -fabs(lq) : -0.5; /* fabs, not a nested select */
        const double beta = act ? otm / norm : 0.1;
        const double gam = act ? gap / norm : 0.6788007830714049 - 0.1; /* e^{-1/4} - 0.1 */
        xs[j] = x; betas[j] = beta; gams[j] = gam;
        sq[j] = sqrt(Ti);
        const dpm_iv_start st = dpm_iv_setup(x, beta, gam, hw);
        s[j] = st.s; lo[j] = st.lo; hi[j] = st.hi; tgt[j] = st.ln_target; up[j] = (int)st.up;
    }
}

/* One vectorised step on lanes [0, n) (n = DPM_IV_BLOCK, or a multiple of DPM_IV_PACK of packed
 * lanes); returns 1 if every lane is done. */
DPM_INLINE int dpm_iv_lanes_step(const double *restrict xs, const double *restrict tgt,
                                 const int *restrict up, double *restrict s, double *restrict lo,
                                 double *restrict hi, int *restrict done, int *restrict evals,
                                 int n, const int hw)
{
    int all = 1;
    DPM_SIMD
    for (int j = 0; j < n; j++) {
        double sj = s[j], loj = lo[j], hij = hi[j];
        int dj = done[j], ej = evals[j];
        dpm_iv_step(xs[j], up[j], tgt[j], &sj, &loj, &hij, &dj, &ej, hw);
        s[j] = sj; lo[j] = loj; hi[j] = hij; done[j] = dj; evals[j] = ej;
        all &= dj;
    }
    return all;
}

/* Steps DPM_IV_FULL_STEPS.. of a block on its unconverged lanes, packed into the front of local
 * arrays (padding lanes repeat the last one; their results are dropped). */
DPM_INLINE void dpm_iv_finish_lanes(const double *restrict xs, const double *restrict tgt,
                                    const int *restrict up, double *restrict s, double *restrict lo,
                                    double *restrict hi, int *restrict done, int *restrict evals,
                                    const int hw)
{
    int lane[DPM_IV_BLOCK];
    double px[DPM_IV_BLOCK], pt[DPM_IV_BLOCK], ps[DPM_IV_BLOCK], pl[DPM_IV_BLOCK], ph[DPM_IV_BLOCK];
    int pu[DPM_IV_BLOCK], pd[DPM_IV_BLOCK], pe[DPM_IV_BLOCK];
    int nl = 0;
    for (int j = 0; j < DPM_IV_BLOCK; j++)
        if (!done[j]) lane[nl++] = j;
    for (int k = DPM_IV_FULL_STEPS; k < DPM_IV_SIMD_STEPS && nl > 0; k++) {
        const int np = (nl + DPM_IV_PACK - 1) / DPM_IV_PACK * DPM_IV_PACK;
        for (int i = 0; i < np; i++) {
            const int j = lane[i < nl ? i : nl - 1];
            px[i] = xs[j]; pt[i] = tgt[j]; pu[i] = up[j];
            ps[i] = s[j]; pl[i] = lo[j]; ph[i] = hi[j]; pd[i] = 0; pe[i] = evals[j];
        }
        dpm_iv_lanes_step(px, pt, pu, ps, pl, ph, pd, pe, np, hw);
        int m = 0;
        for (int i = 0; i < nl; i++) {
            const int j = lane[i];
            s[j] = ps[i]; lo[j] = pl[i]; hi[j] = ph[i]; done[j] = pd[i]; evals[j] = pe[i];
            if (!pd[i]) lane[m++] = j;
        }
        nl = m;
    }
}

/* The vectorised steps of one set-up block: DPM_IV_FULL_STEPS on every lane, then the packed ones.
 * A function of its own (called once per block), so that the step code is compiled once per
 * target and FMA mode instead of being inlined into each of the kernel's six input variants. */
DPM_CLONES
static void dpm_iv_block_steps(const double *xs, const double *tgt, const int *up, double *s, double *lo,
                               double *hi, int *done, int *evals, int hw)
{
#define DPM_IV_STEPS(HW)                                                                          \
    do {                                                                                          \
        int all = 0;                                                                              \
        for (int k = 0; k < DPM_IV_FULL_STEPS && !all; k++)                                       \
            all = dpm_iv_lanes_step(xs, tgt, up, s, lo, hi, done, evals, DPM_IV_BLOCK, HW);      \
        if (!all) dpm_iv_finish_lanes(xs, tgt, up, s, lo, hi, done, evals, HW);                  \
    } while (0)
    if (hw) DPM_IV_STEPS(1);
    else DPM_IV_STEPS(0);
#undef DPM_IV_STEPS
}

/* Implied vols of n options.  P: prices (discounted; in coin when inverse), F: forward (Black-76)
 * or spot (BSM), K, T, cp = +-1, r/q: rate and carry arrays or NULL for zero.  Inputs are finite
 * and F, K > 0, T >= 0 (checked by the caller).  out: vols, flags: status codes, iters: evaluation
 * counts or NULL; scalar_only: skip the vector solver (testing).  Returns the number of elements
 * with a non-zero status. */
DPM_INLINE dpm_iv_index dpm_implied_blocks(const double *P, const double *F_in, const double *K,
                                           const double *T, const double *cp, const double *r,
                                           const double *q, const int has_rq, const int model,
                                           const int inverse, const int hw, double *out,
                                           signed char *flags, unsigned char *iters,
                                           int scalar_only, dpm_iv_index n)
{
    dpm_iv_index nbad = 0;
    const int simd = !scalar_only && dpm_iv_use_simd();
    double tP[DPM_IV_BLOCK], tF[DPM_IV_BLOCK], tK[DPM_IV_BLOCK], tT[DPM_IV_BLOCK], tc[DPM_IV_BLOCK];
    double tr[DPM_IV_BLOCK], tq[DPM_IV_BLOCK];
    double vol0[DPM_IV_BLOCK], xs[DPM_IV_BLOCK], betas[DPM_IV_BLOCK], gams[DPM_IV_BLOCK];
    double sq[DPM_IV_BLOCK], s[DPM_IV_BLOCK], lo[DPM_IV_BLOCK], hi[DPM_IV_BLOCK], tgt[DPM_IV_BLOCK];
    int flag[DPM_IV_BLOCK], active[DPM_IV_BLOCK], up[DPM_IV_BLOCK], done[DPM_IV_BLOCK];
    int evals[DPM_IV_BLOCK];
    for (dpm_iv_index b = 0; b < n; b += DPM_IV_BLOCK) {
        const int m = (n - b) < DPM_IV_BLOCK ? (int)(n - b) : DPM_IV_BLOCK;
        for (int j = 0; j < DPM_IV_BLOCK; j++) { /* padded copy: a harmless valid option */
            const int in = j < m;
            tP[j] = in ? P[b + j] : 0.1; tF[j] = in ? F_in[b + j] : 1.0; tK[j] = in ? K[b + j] : 1.0;
            tT[j] = in ? T[b + j] : 1.0; tc[j] = in ? cp[b + j] : 1.0;
            tr[j] = (in && has_rq) ? r[b + j] : 0.0; tq[j] = (in && has_rq) ? q[b + j] : 0.0;
        }
        dpm_iv_block_setup(tP, tF, tK, tT, tc, tr, tq, has_rq, model, inverse, hw, vol0, flag,
                           active, xs, betas, gams, sq, s, lo, hi, tgt, up);
        for (int j = 0; j < DPM_IV_BLOCK; j++) { done[j] = 0; evals[j] = 1; }
        if (simd) dpm_iv_block_steps(xs, tgt, up, s, lo, hi, done, evals, hw);
        for (int j = 0; j < m; j++) {
            const dpm_iv_index i = b + j;
            int f = flag[j], it = 0;
            double v = vol0[j];
            if (active[j]) {
                double sj = s[j];
                it = evals[j];
                if (!done[j]) { /* rare (or the scalar path): finish with the scalar solver */
                    int it2 = 0, ok = 0;
                    sj = dpm_implied_solve(xs[j], betas[j], gams[j], &it2, &ok);
                    it = simd ? it + it2 : it2;
                    if (!ok) f = DPM_IV_NO_CONVERGENCE;
                }
                v = f == DPM_IV_OK ? sj / sq[j] : NAN;
            }
            out[i] = v;
            flags[i] = (signed char)f;
            if (iters) iters[i] = (unsigned char)(it < 255 ? it : 255);
            nbad += f != DPM_IV_OK;
        }
    }
    return nbad;
}

DPM_CLONES
static dpm_iv_index dpm_implied_vol_impl(const double *P, const double *F_in, const double *K,
                                         const double *T, const double *cp, const double *r,
                                         const double *q, int model, int inverse, double *out,
                                         signed char *flags, unsigned char *iters, int scalar_only,
                                         dpm_iv_index n)
{
#define DPM_IVB(hr, m, inv, hw) dpm_implied_blocks(P, F_in, K, T, cp, r, q, hr, m, inv, hw, out, flags, \
                                                   iters, scalar_only, n)
    const int hw = dpm_hw_fma();
    if (r && q) {
        if (model) return hw ? DPM_IVB(1, 1, 0, 1) : DPM_IVB(1, 1, 0, 0);
        if (inverse) return hw ? DPM_IVB(1, 0, 1, 1) : DPM_IVB(1, 0, 1, 0);
        return hw ? DPM_IVB(1, 0, 0, 1) : DPM_IVB(1, 0, 0, 0);
    }
    if (model) return hw ? DPM_IVB(0, 1, 0, 1) : DPM_IVB(0, 1, 0, 0);
    if (inverse) return hw ? DPM_IVB(0, 0, 1, 1) : DPM_IVB(0, 0, 1, 0);
    return hw ? DPM_IVB(0, 0, 0, 1) : DPM_IVB(0, 0, 0, 0);
#undef DPM_IVB
}

static dpm_iv_index dpm_implied_vol(const double *P, const double *F_in, const double *K,
                                    const double *T, const double *cp, const double *r,
                                    const double *q, int model, int inverse, double *out,
                                    signed char *flags, unsigned char *iters, int scalar_only,
                                    dpm_iv_index n)
{
    return dpm_implied_vol_impl(P, F_in, K, T, cp, r, q, model, inverse, out, flags, iters,
                                scalar_only, n);
}

#endif /* DPM_IMPLIED_MATH_H */
