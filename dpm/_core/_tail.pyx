# cython: language_level=3
"""Entry points of the VaR/ES and stress kernels (tail_kernels.h); inputs are validated by
dpm.models.var before they get here."""
from libc.stdint cimport int8_t, uint8_t, int32_t, int64_t
from dpm._core._black cimport dpm_index
import numpy as np

cdef extern from "tail_kernels.h" nogil:
    void dpm_revalue_joint(dpm_index start, dpm_index stop, dpm_index ld, dpm_index c0, dpm_index c1,
                           dpm_index M, dpm_index B, const int8_t *kind,
                           const uint8_t *inverse, const int32_t *und, const double *F,
                           const double *K, const double *cp, const double *T, const double *cs,
                           const double *vol, const double *vscale, const double *index,
                           const double *move, const double *volshock, double dt,
                           double *out) noexcept
    void dpm_tail_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                       const double *qty, const double *P, dpm_index nsc, dpm_index s_base,
                       dpm_index M, dpm_index B, dpm_index k, dpm_index cap, double *acc,
                       double *cval, int32_t *cidx, int32_t *cn, double *thr, double *sv,
                       int32_t *si) noexcept
    void dpm_tail_finish(dpm_index a0, dpm_index a1, dpm_index k, dpm_index cap, double *cval,
                         int32_t *cidx, int32_t *cn, double *sv, int32_t *si) noexcept
    void dpm_gather_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                         const double *qty, const double *P, dpm_index S, double *out) noexcept


def revalue_joint(Py_ssize_t start, Py_ssize_t stop, Py_ssize_t c0, Py_ssize_t c1,
                  const int8_t[::1] kind, const uint8_t[::1] inverse, const int32_t[::1] und,
                  const double[::1] F, const double[::1] K, const double[::1] cp, const double[::1] T,
                  const double[::1] cs, const double[::1] vol, const double[::1] vscale,
                  const double[::1] index, const double[:, ::1] move,
                  const double[:, ::1] volshock, double dt, double[:, :, ::1] out):
    """Rows ``[start, stop)`` of the blocked (n_blocks x M x B) instrument x scenario USD P&L of
    scenarios ``[c0, c1)`` (columns of ``move``/``volshock``, U x (S + 8): 8 padding columns);
    ``vscale`` is each instrument's term-structure factor on the relative vol shock."""
    if stop <= start or c1 <= c0:
        return
    cdef dpm_index ld = move.shape[1]
    if c1 + 8 > ld or volshock.shape[1] != ld or move.shape[0] != volshock.shape[0]:
        raise ValueError("move/volshock: need 8 padding columns after the last scenario")
    if vscale.shape[0] < stop or vol.shape[0] < stop or kind.shape[0] < stop:
        raise ValueError("vscale/vol/kind: shorter than the instrument range")
    if out.shape[0] * out.shape[2] < c1 - c0 or stop > out.shape[1]:
        raise ValueError("out: too small for the scenarios / instruments")
    with nogil:
        dpm_revalue_joint(start, stop, ld, c0, c1, out.shape[1], out.shape[2], &kind[0], &inverse[0],
                          &und[0], &F[0], &K[0], &cp[0], &T[0], &cs[0], &vol[0], &vscale[0],
                          &index[0], &move[0, 0], &volshock[0, 0], dt, &out[0, 0, 0])


def tail_rows(Py_ssize_t a0, Py_ssize_t a1, const int64_t[::1] indptr, const int64_t[::1] inst,
              const double[::1] qty, const double[:, :, ::1] P, Py_ssize_t nsc, Py_ssize_t s_base,
              Py_ssize_t k, double[:, ::1] cval, int32_t[:, ::1] cidx, int32_t[::1] cn,
              double[::1] thr):
    """Offer ``nsc`` scenarios (numbered from ``s_base``) of the blocked chunk ``P``
    (n_blocks x M x B) to the tail buffers (N x cap, ``cap >= k``) of accounts ``[a0, a1)``.
    Start with ``cn = 0``, ``thr = -inf``."""
    if a1 <= a0 or nsc <= 0:
        return
    cdef Py_ssize_t cap = cval.shape[1]
    if k < 1 or cap < k or cidx.shape[1] != cap or a1 > cn.shape[0] or a1 > thr.shape[0]:
        raise ValueError("tail_rows: inconsistent buffer sizes")
    acc = np.empty(P.shape[2])
    sv = np.empty(cap)
    si = np.empty(cap, dtype=np.int32)
    cdef double[::1] acc_v = acc, sv_v = sv
    cdef int32_t[::1] si_v = si
    cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
    cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
    with nogil:
        dpm_tail_rows(a0, a1, &indptr[0], ip, qp, &P[0, 0, 0], nsc, s_base, P.shape[1], P.shape[2],
                      k, cap, &acc_v[0], &cval[0, 0], &cidx[0, 0], &cn[0], &thr[0], &sv_v[0],
                      &si_v[0])


def tail_finish(Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t k, double[:, ::1] cval,
                int32_t[:, ::1] cidx, int32_t[::1] cn):
    """Reduce the tail buffers of accounts ``[a0, a1)`` to their ``k`` best (first ``k`` columns),
    sorted by loss descending, ties by scenario index ascending."""
    if a1 <= a0:
        return
    cdef Py_ssize_t cap = cval.shape[1]
    sv = np.empty(cap)
    si = np.empty(cap, dtype=np.int32)
    cdef double[::1] sv_v = sv
    cdef int32_t[::1] si_v = si
    with nogil:
        dpm_tail_finish(a0, a1, k, cap, &cval[0, 0], &cidx[0, 0], &cn[0], &sv_v[0], &si_v[0])


def gather_rows(Py_ssize_t a0, Py_ssize_t a1, const int64_t[::1] indptr, const int64_t[::1] inst,
                const double[::1] qty, const double[:, ::1] P, double[:, ::1] out):
    """Scenario P&L of accounts ``[a0, a1)`` into rows of ``out`` (N x S)."""
    if a1 <= a0:
        return
    if a0 < 0 or a1 + 1 > indptr.shape[0] or out.shape[0] < a1 or out.shape[1] != P.shape[1]:
        raise IndexError(f"gather_rows: accounts [{a0}, {a1}) or buffers out of range")
    cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
    cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
    with nogil:
        dpm_gather_rows(a0, a1, &indptr[0], ip, qp, &P[0, 0], P.shape[1], &out[0, 0])
