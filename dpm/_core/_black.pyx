# cython: language_level=3
"""Array entry points of the Black-76 / BSM kernels (see black_math.h for the formulas).

The Python layer (dpm.pricing) validates and broadcasts the inputs and allocates the outputs; these
functions only run the nogil loops over the ``[start, stop)`` slice they are given, so a thread pool
can call them on disjoint chunks concurrently.
"""

from dpm._core._black cimport (dpm_price, dpm_greeks, dpm_inputs_ok, dpm_index, DPM_HAVE_LIBMVEC,
                              DPM_DEBUG_BUILD, dpm_plain_black, dpm_erfcx_fast, dpm_black_otm,
                              dpm_price_checked, dpm_greeks_checked, dpm_fp_probe)

HAVE_LIBMVEC = bool(DPM_HAVE_LIBMVEC)
DEBUG_BUILD = bool(DPM_DEBUG_BUILD)  # built with DPM_DEBUG=1 (bounds checks on)


cdef inline const double* _opt(const double[::1] a, Py_ssize_t start) noexcept nogil:
    # rate/dividend arrays are optional: an empty array means "all zero"
    return &a[start] if a.shape[0] > 0 else NULL


def price_chunk(const double[::1] F, const double[::1] K, const double[::1] sigma,
                const double[::1] T, const double[::1] cp, const double[::1] r,
                const double[::1] q, int model, int inverse, double[::1] out,
                unsigned char[::1] fix, Py_ssize_t start, Py_ssize_t stop, bint check=False):
    """Price elements ``[start, stop)``.

    Returns -1; with ``check=True`` the inputs are validated block by block inside the kernel and
    the index of the first element of the first 64-element block holding an invalid input is
    returned instead (outputs from there on are not written).  ``fix`` is not written (it may be
    empty): nothing is redone in extended precision any more; the argument is kept for the
    signature.
    """
    cdef dpm_index n = stop - start
    cdef dpm_index bad = -1
    if n <= 0:
        return -1
    if start < 0 or stop > F.shape[0] or out.shape[0] < stop:
        raise IndexError(f"price_chunk: elements [{start}, {stop}) out of range")
    with nogil:
        if check:
            bad = dpm_price_checked(&F[start], &K[start], &sigma[start], &T[start], &cp[start],
                                    _opt(r, start), _opt(q, start), model, inverse, &out[start], n)
        else:
            dpm_price(&F[start], &K[start], &sigma[start], &T[start], &cp[start],
                      _opt(r, start), _opt(q, start), model, inverse, &out[start], NULL, n)
    return bad if bad < 0 else start + bad


def greeks_chunk(const double[::1] F, const double[::1] K, const double[::1] sigma,
                 const double[::1] T, const double[::1] cp, const double[::1] r,
                 const double[::1] q, int model, int inverse, double[::1] price,
                 double[::1] delta, double[::1] gamma, double[::1] vega, double[::1] theta,
                 double[::1] rho, double[::1] vanna, double[::1] volga, unsigned char[::1] fix,
                 Py_ssize_t start, Py_ssize_t stop, bint check=False):
    """Price and greeks of elements ``[start, stop)``.

    ``rho``, ``vanna`` and ``volga`` may be empty arrays: then only price, delta, gamma, vega and
    theta are computed (a leaner kernel variant).  ``fix`` is not written (it may be empty).
    Returns -1, or with ``check=True`` the first element of the first invalid block (see
    :func:`price_chunk`).
    """
    cdef dpm_index n = stop - start
    cdef dpm_index bad = -1
    cdef int full = rho.shape[0] > 0
    if n <= 0:
        return -1
    if start < 0 or stop > F.shape[0] or price.shape[0] < stop or theta.shape[0] < stop or delta.shape[0] < stop \
            or gamma.shape[0] < stop or vega.shape[0] < stop \
            or (full and (rho.shape[0] < stop or vanna.shape[0] < stop or volga.shape[0] < stop)):
        raise IndexError(f"greeks_chunk: elements [{start}, {stop}) out of range")
    with nogil:
        if check:
            bad = dpm_greeks_checked(&F[start], &K[start], &sigma[start], &T[start], &cp[start],
                                     _opt(r, start), _opt(q, start), model, inverse, full,
                                     &price[start], &delta[start], &gamma[start], &vega[start],
                                     &theta[start], &rho[start] if full else NULL,
                                     &vanna[start] if full else NULL,
                                     &volga[start] if full else NULL, n)
        else:
            dpm_greeks(&F[start], &K[start], &sigma[start], &T[start], &cp[start],
                       _opt(r, start), _opt(q, start), model, inverse, full, &price[start],
                       &delta[start], &gamma[start], &vega[start], &theta[start],
                       &rho[start] if full else NULL, &vanna[start] if full else NULL,
                       &volga[start] if full else NULL, NULL, n)
    return bad if bad < 0 else start + bad


def inputs_ok(const double[::1] F, const double[::1] K, const double[::1] sigma,
              const double[::1] T, const double[::1] cp, const double[::1] r, const double[::1] q):
    """True if every element is in the pricing domain (one vectorised pass, no error raised)."""
    cdef dpm_index n = F.shape[0]
    cdef int ok = 1
    if n == 0:
        return True
    with nogil:
        ok = dpm_inputs_ok(&F[0], &K[0], &sigma[0], &T[0], &cp[0], _opt(r, 0), _opt(q, 0), n)
    return bool(ok)


def plain_chunk(const double[::1] F, const double[::1] K, const double[::1] sigma,
                const double[::1] T, const double[::1] cp, bint with_greeks, double[::1] price,
                double[::1] delta, double[::1] gamma, double[::1] vega, double[::1] theta):
    """Benchmark reference: the textbook Black-76 (price, or price, delta, gamma, vega, theta) in
    one plain SIMD loop over libmvec, without dpm's accuracy safeguards.  Not for pricing."""
    cdef dpm_index n = F.shape[0]
    if n == 0:
        return
    if K.shape[0] < n or sigma.shape[0] < n or T.shape[0] < n or cp.shape[0] < n or price.shape[0] < n \
            or (with_greeks and (delta.shape[0] < n or gamma.shape[0] < n or vega.shape[0] < n
                                 or theta.shape[0] < n)):
        raise IndexError("plain_chunk: arrays shorter than F")
    with nogil:
        dpm_plain_black(&F[0], &K[0], &sigma[0], &T[0], &cp[0], with_greeks, &price[0],
                        &delta[0] if with_greeks else NULL, &gamma[0] if with_greeks else NULL,
                        &vega[0] if with_greeks else NULL, &theta[0] if with_greeks else NULL, n)


def fp_probe(long long iterations):
    """Benchmark probe: ``iterations`` rounds of 64 independent multiply-adds (every FMA unit of a
    core busy, no memory traffic), GIL released; returns a checksum. Timed on 1 and 2 threads it
    gives the floating-point throughput a second thread really gets on this host."""
    cdef double out
    if iterations < 0:
        raise ValueError("fp_probe: iterations must be >= 0")
    with nogil:
        out = dpm_fp_probe(iterations)
    return out


def erfcx(double u):
    """The branch-free erfcx of the pricing kernels (u >= 0; testing helper)."""
    return dpm_erfcx_fast(u)


def black_otm(double F, double K, double s):
    """Undiscounted out-of-the-money Black price for total vol ``s`` (testing helper)."""
    return dpm_black_otm(F, K, s)
