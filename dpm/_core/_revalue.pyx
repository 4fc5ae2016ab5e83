# cython: language_level=3
"""Entry point of the one revaluation kernel (revalue.h).

dpm.engines.plan validates and packs every array before it reaches this module; the function here
checks only what protects memory, takes pointers and releases the GIL.
"""
from libc.stdint cimport int8_t, uint8_t, int32_t
from dpm._core._black cimport dpm_index

cdef extern from "revalue.h" nogil:
    void dpm_revalue(dpm_index start, dpm_index stop, dpm_index ld, dpm_index c0, dpm_index c1,
                     dpm_index M, dpm_index B, const int8_t *kind, const uint8_t *inverse,
                     const int8_t *conv, const int32_t *und, const double *F, const double *K,
                     const double *cp, const double *T, const double *cs, const double *vol,
                     const double *vscale, const int8_t *vmode, const double *index,
                     const double *min_up, const double *move, const double *vshock, double dt,
                     const double *volmat, dpm_index ldv, double *out) noexcept


def revalue(Py_ssize_t start, Py_ssize_t stop, Py_ssize_t c0, Py_ssize_t c1,
            const int8_t[::1] kind, const uint8_t[::1] inverse, const int8_t[::1] conv,
            const int32_t[::1] und, const double[::1] F, const double[::1] K, const double[::1] cp,
            const double[::1] T, const double[::1] cs, const double[::1] vol,
            const double[::1] vscale, const int8_t[::1] vmode, const double[::1] index,
            const double[::1] min_up, const double[:, ::1] move, const double[:, ::1] vshock,
            double dt, volmat, double[:, :, ::1] out):
    """Rows ``[start, stop)`` of the blocked (n_blocks x M x B) instrument x scenario P&L of
    scenarios ``[c0, c1)`` (columns of ``move``/``vshock``, U x ld with ld >= c1 + 8).

    ``volmat``: None (sticky strike) or an M x ldv array of base vols of scenarios ``[c0, c0 + ldv)``.
    """
    if stop <= start or c1 <= c0:
        return
    cdef Py_ssize_t M = out.shape[1], B = out.shape[2], U = index.shape[0]
    cdef dpm_index ld = move.shape[1]
    if (start < 0 or stop > M or kind.shape[0] < M or inverse.shape[0] < M or conv.shape[0] < M
            or und.shape[0] < M or F.shape[0] < M or K.shape[0] < M or cp.shape[0] < M
            or T.shape[0] < M or cs.shape[0] < M or vol.shape[0] < M or vscale.shape[0] < M
            or vmode.shape[0] < M or min_up.shape[0] != U or move.shape[0] != U
            or vshock.shape[0] != U or vshock.shape[1] != ld or c0 < 0 or c1 + 8 > ld
            or out.shape[0] * B < c1 - c0 or B < 1):
        raise ValueError("revalue: inconsistent shapes (need 8 padding scenario columns)")
    cdef const double[:, ::1] vm
    cdef const double *vp = NULL
    cdef dpm_index ldv = 0
    if volmat is not None:
        vm = volmat
        ldv = vm.shape[1]
        if vm.shape[0] < M or ldv < ((c1 - c0 + 7) // 8) * 8:
            raise ValueError("revalue: volmat too small")
        vp = &vm[0, 0]
    with nogil:
        dpm_revalue(start, stop, ld, c0, c1, M, B, &kind[0], &inverse[0], &conv[0], &und[0], &F[0],
                    &K[0], &cp[0], &T[0], &cs[0], &vol[0], &vscale[0], &vmode[0], &index[0],
                    &min_up[0], &move[0, 0], &vshock[0, 0], dt, vp, ldv, &out[0, 0, 0])
