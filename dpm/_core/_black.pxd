# cython: language_level=3
# C-level API of the Black-76 / Black-Scholes-Merton formulas (implemented once, in black_math.h).
# Other kernels (revaluation, implied vol) cimport these; never re-write a formula.

cdef extern from "black_math.h" nogil:
    ctypedef Py_ssize_t dpm_index

    double dpm_ncdf(double z) noexcept
    double dpm_npdf(double z) noexcept
    # undiscounted Black-76 price per unit; s = sigma*sqrt(T) = 0 gives intrinsic value
    double dpm_black76(double F, double K, double sigma, double T, double cp) noexcept
    # extended-precision out-of-the-money price for total vol s, side cpo
    double dpm_black_otm_precise(double F, double K, double s, double cpo) noexcept

    ctypedef struct dpm_black_out:
        double price, delta, gamma, vega, theta, rho, vanna, volga
        int fix

    dpm_black_out dpm_black_all(double F, double K, double sigma, double T, double cp,
                                double r, double q, int model, int inverse) noexcept
    dpm_black_out dpm_black_all_precise(double F, double K, double sigma, double T, double cp,
                                        double r, double q, int model, int inverse) noexcept

    dpm_index dpm_price(const double *F, const double *K, const double *sigma, const double *T,
                        const double *cp, const double *r, const double *q, int model, int inverse,
                        double *out, unsigned char *fix, dpm_index n) noexcept
    dpm_index dpm_greeks(const double *F, const double *K, const double *sigma, const double *T,
                         const double *cp, const double *r, const double *q, int model, int inverse,
                         int full, double *price, double *delta, double *gamma, double *vega, double *theta,
                         double *rho, double *vanna, double *volga, unsigned char *fix,
                         dpm_index n) noexcept
    int dpm_inputs_ok(const double *F, const double *K, const double *sigma, const double *T,
                      const double *cp, const double *r, const double *q, dpm_index n) noexcept
    void dpm_plain_black(const double *F, const double *K, const double *sigma, const double *T,
                         const double *cp, int greeks, double *price, double *delta, double *gamma,
                         double *vega, double *theta, dpm_index n) noexcept
    double dpm_erfcx_fast(double u) noexcept
    double dpm_fp_probe(long long iterations) noexcept
    # the array kernels with the input check fused in: -1, or the offset of the first bad block
    dpm_index dpm_price_checked(const double *F, const double *K, const double *sigma,
                                const double *T, const double *cp, const double *r, const double *q,
                                int model, int inverse, double *out, dpm_index n) noexcept
    dpm_index dpm_greeks_checked(const double *F, const double *K, const double *sigma,
                                 const double *T, const double *cp, const double *r, const double *q,
                                 int model, int inverse, int full, double *price, double *delta,
                                 double *gamma, double *vega, double *theta, double *rho,
                                 double *vanna, double *volga, dpm_index n) noexcept
    # accurate undiscounted out-of-the-money price for total vol s
    double dpm_black_otm(double F, double K, double s) noexcept
    int DPM_HAVE_LIBMVEC
    int DPM_DEBUG_BUILD
