# cython: language_level=3
"""Array entry point of the implied-volatility solver (the method is described in implied_math.h).

``dpm.pricing.implied_vol`` validates, broadcasts and allocates; :func:`implied_chunk` runs the
``nogil`` loop over ``[start, stop)`` so that a thread pool can work on disjoint chunks at once.
"""

cdef extern from "implied_math.h" nogil:
    ctypedef Py_ssize_t dpm_iv_index
    int DPM_IV_OK, DPM_IV_BELOW_INTRINSIC, DPM_IV_ABOVE_BOUND, DPM_IV_NO_TIME_VALUE, DPM_IV_EXPIRED
    int DPM_IV_NO_CONVERGENCE
    int DPM_IV_MAX_ITER, DPM_IV_SIMD_STEPS, DPM_IV_BLOCK
    double dpm_erfcx(double u) noexcept
    double dpm_inv_ncdf(double p) noexcept
    double dpm_implied_normalised(double x, double beta, double gam, int *iters) noexcept
    double dpm_implied_solve(double x, double beta, double gam, int *iters, int *ok) noexcept
    dpm_iv_index dpm_implied_vol(const double *P, const double *F, const double *K, const double *T,
                                 const double *cp, const double *r, const double *q, int model,
                                 int inverse, double *out, signed char *flags, unsigned char *iters,
                                 int scalar_only, dpm_iv_index n) noexcept
    int dpm_iv_use_simd() noexcept

OK = DPM_IV_OK
BELOW_INTRINSIC = DPM_IV_BELOW_INTRINSIC
ABOVE_BOUND = DPM_IV_ABOVE_BOUND
NO_TIME_VALUE = DPM_IV_NO_TIME_VALUE
EXPIRED = DPM_IV_EXPIRED
NO_CONVERGENCE = DPM_IV_NO_CONVERGENCE
MAX_ITER = DPM_IV_MAX_ITER          # evaluations of the scalar solver (fallback, helpers)
SIMD_STEPS = DPM_IV_SIMD_STEPS      # fixed Householder steps of the SIMD block solver
BLOCK = DPM_IV_BLOCK                # lanes per SIMD block
# most objective evaluations any option can take: 1 + SIMD_STEPS in the SIMD pass, then at most
# MAX_ITER in the scalar fallback for lanes that have not converged (a hard bound: no hang)
MAX_EVALS = 1 + DPM_IV_SIMD_STEPS + DPM_IV_MAX_ITER


def uses_simd():
    """True if implied_chunk runs the vector block solver on this CPU (AVX2+FMA and libmvec)."""
    return bool(dpm_iv_use_simd())


cdef inline const double* _opt(const double[::1] a, Py_ssize_t start) noexcept nogil:
    # rate/carry arrays are optional: an empty array means "all zero"
    return &a[start] if a.shape[0] > 0 else NULL


def implied_chunk(const double[::1] P, const double[::1] F, const double[::1] K,
                  const double[::1] T, const double[::1] cp, const double[::1] r,
                  const double[::1] q, int model, int inverse, double[::1] out,
                  signed char[::1] flags, unsigned char[::1] iters, Py_ssize_t start,
                  Py_ssize_t stop, bint scalar_only=False):
    """Implied vols of elements ``[start, stop)``; returns how many got a non-zero flag.

    ``iters`` (empty to skip) receives the number of objective evaluations per element (0 for
    elements that needed no solve).  ``scalar_only`` skips the SIMD block solver (used by the
    tests to check the scalar path that CPUs without AVX2 run).
    """
    cdef dpm_iv_index n = stop - start
    cdef dpm_iv_index nbad = 0
    cdef unsigned char *it = NULL
    if n <= 0:
        return 0
    if iters.shape[0] > 0:
        it = &iters[start]
    with nogil:
        nbad = dpm_implied_vol(&P[start], &F[start], &K[start], &T[start], &cp[start],
                               _opt(r, start), _opt(q, start), model, inverse, &out[start],
                               &flags[start], it, scalar_only, n)
    return nbad


def normalised_implied(double x, double beta, double gam):
    """Total vol ``s`` with ``b(x, s) = beta`` for ``x <= 0`` (testing helper); returns ``(s, evals)``
    (``s`` is NaN if the bounded iteration did not converge)."""
    cdef int it = 0
    cdef int ok = 0
    cdef double s = dpm_implied_solve(x, beta, gam, &it, &ok)
    return (s if ok else float("nan")), it


def erfcx(double u):
    """The scaled complementary error function used by the solver (testing helper)."""
    return dpm_erfcx(u)


def inv_ncdf(double p):
    """The inverse normal CDF used for initial guesses (testing helper; ~1e-9 relative)."""
    return dpm_inv_ncdf(p)
