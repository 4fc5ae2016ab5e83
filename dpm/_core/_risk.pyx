# cython: language_level=3
"""Entry points of the revaluation and aggregation kernels (risk_kernels.h).

dpm.engine validates every array (dtype, shape, ranges, finiteness) before it reaches this module;
the functions here only take pointers and release the GIL.
"""
from libc.stdint cimport int8_t, uint8_t, int32_t, int64_t
from libc.string cimport memcpy
from dpm._core._black cimport dpm_index
from dpm._core._risk cimport (
    dpm_revalue_rows, dpm_agg_params, dpm_agg_out, dpm_state_size, dpm_state_clear,
    dpm_state_add, dpm_state_finish, dpm_margin_rows,
)


def revalue_rows(Py_ssize_t start, Py_ssize_t stop, Py_ssize_t S,
                 const int8_t[::1] kind, const uint8_t[::1] inverse, const int8_t[::1] conv,
                 const int32_t[::1] und, const double[::1] F, const double[::1] K,
                 const double[::1] cp, const double[::1] T, const double[::1] cs,
                 const double[:, ::1] vol_cols, const double[:, ::1] move,
                 const int32_t[:, ::1] volcol, const double[:, ::1] price,
                 const double[::1] base_price, double dt, double[::1] base, double[:, ::1] out):
    """Fill rows ``[start, stop)`` of the instrument x scenario P&L matrix ``out``."""
    if stop <= start:
        return
    cdef dpm_index Sp = out.shape[1]
    cdef dpm_index V = vol_cols.shape[1]
    with nogil:
        dpm_revalue_rows(start, stop, S, Sp, &kind[0], &inverse[0], &conv[0], &und[0], &F[0],
                         &K[0], &cp[0], &T[0], &cs[0], &vol_cols[0, 0], V, &move[0, 0],
                         &volcol[0, 0], &price[0, 0], &base_price[0], dt, &base[0], &out[0, 0])


cdef class AggregationPlan:
    """The read-only data every account's aggregation needs, bound into one C struct.

    Holds references to the numpy arrays so the pointers in the struct stay valid.
    """
    cdef dpm_agg_params p
    cdef object _keep
    cdef readonly Py_ssize_t n_underlyings, n_scenarios, state_size

    def __init__(self, *, Py_ssize_t S, const double[:, ::1] pnl, const int32_t[::1] inst_und,
                 const int32_t[::1] inst_bucket, const double[::1] inst_delta,
                 const double[::1] inst_som, const double[::1] inst_notional,
                 const double[::1] inst_value, const double[:, ::1] weight,
                 const double[:, ::1] damp, const int64_t[::1] bucket_ptr,
                 const double[::1] bucket_rate, const double[::1] und_price,
                 const double[::1] to_risk, const double[::1] risk_to_usd,
                 const double[::1] ds_threshold,
                 const double[::1] ds_m_inc, const double[::1] ds_max,
                 const double[::1] size_rate, const double[::1] tier_bound,
                 const double[::1] tier_mult, corr, keep):
        cdef const double[:, ::1] corr_v
        self._keep = keep  # the owning numpy arrays
        self.p.S = S
        self.p.Sp = pnl.shape[1]
        self.p.U = weight.shape[0]
        self.p.NB = bucket_rate.shape[0]
        self.p.NT = tier_bound.shape[0]
        self.p.pnl = &pnl[0, 0] if pnl.shape[0] > 0 else NULL
        self.p.inst_und = &inst_und[0] if inst_und.shape[0] > 0 else NULL
        self.p.inst_bucket = &inst_bucket[0] if inst_bucket.shape[0] > 0 else NULL
        self.p.inst_delta = &inst_delta[0] if inst_delta.shape[0] > 0 else NULL
        self.p.inst_som = &inst_som[0] if inst_som.shape[0] > 0 else NULL
        self.p.inst_notional = &inst_notional[0] if inst_notional.shape[0] > 0 else NULL
        self.p.inst_value = &inst_value[0] if inst_value.shape[0] > 0 else NULL
        self.p.weight = &weight[0, 0]
        self.p.damp = &damp[0, 0]
        self.p.bucket_ptr = &bucket_ptr[0]
        self.p.bucket_rate = &bucket_rate[0] if bucket_rate.shape[0] > 0 else NULL
        self.p.und_price = &und_price[0]
        self.p.to_risk = &to_risk[0]
        self.p.risk_to_usd = &risk_to_usd[0]
        self.p.ds_threshold = &ds_threshold[0]
        self.p.ds_m_inc = &ds_m_inc[0]
        self.p.ds_max = &ds_max[0]
        self.p.size_rate = &size_rate[0]
        self.p.tier_bound = &tier_bound[0] if tier_bound.shape[0] > 0 else NULL
        self.p.tier_mult = &tier_mult[0]
        if corr is None:
            self.p.corr = NULL
        else:
            corr_v = corr
            self.p.corr = &corr_v[0, 0]
        self.n_underlyings = self.p.U
        self.n_scenarios = S
        self.state_size = dpm_state_size(&self.p)

    cdef inline dpm_agg_out _out(self, double[::1] total, double[::1] value, double[:, ::1] L,
                                 double[:, ::1] scan, int32_t[:, ::1] worst, double[:, ::1] roll,
                                 double[:, ::1] dshock, double[:, ::1] floor):
        cdef dpm_agg_out o
        o.total = &total[0]
        o.value = &value[0]
        o.L = &L[0, 0]
        o.scan = &scan[0, 0]
        o.worst = &worst[0, 0]
        o.roll = &roll[0, 0]
        o.dshock = &dshock[0, 0]
        o.floor = &floor[0, 0]
        return o

    def margin_rows(self, Py_ssize_t start, Py_ssize_t stop, const int64_t[::1] indptr,
                    const int64_t[::1] inst, const double[::1] qty, double[::1] scratch,
                    double[::1] total, double[::1] value, double[:, ::1] L, double[:, ::1] scan,
                    int32_t[:, ::1] worst, double[:, ::1] roll, double[:, ::1] dshock,
                    double[:, ::1] floor):
        """Margin of accounts ``[start, stop)``; ``scratch`` has ``state_size`` elements."""
        if stop <= start:
            return
        cdef dpm_agg_out o = self._out(total, value, L, scan, worst, roll, dshock, floor)
        cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
        cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
        with nogil:
            dpm_margin_rows(&self.p, start, stop, &indptr[0], ip, qp, &scratch[0], &o)

    def account_state(self, const int64_t[::1] inst, const double[::1] qty, double[::1] state):
        """Fill ``state`` with the aggregation state of one account's positions."""
        cdef Py_ssize_t k
        with nogil:
            dpm_state_clear(&self.p, &state[0])
            for k in range(inst.shape[0]):
                dpm_state_add(&self.p, &state[0], inst[k], qty[k])

    def what_if(self, const double[::1] state, const int64_t[::1] inst, const double[::1] qty,
                double[::1] work, double[::1] total, double[::1] value, double[:, ::1] L,
                double[:, ::1] scan, int32_t[:, ::1] worst, double[:, ::1] roll,
                double[:, ::1] dshock, double[:, ::1] floor):
        """Margin after adding orders ``(inst, qty)`` to a cached ``state`` (left unchanged).

        O(scenarios) per order: ``work`` receives a copy of the state plus the orders.
        """
        cdef dpm_agg_out o = self._out(total, value, L, scan, worst, roll, dshock, floor)
        cdef Py_ssize_t k
        with nogil:
            memcpy(&work[0], &state[0], sizeof(double) * self.state_size)
            for k in range(inst.shape[0]):
                dpm_state_add(&self.p, &work[0], inst[k], qty[k])
            dpm_state_finish(&self.p, &work[0], &o, 0)

    def finish(self, const double[::1] state, double[::1] total, double[::1] value,
               double[:, ::1] L, double[:, ::1] scan, int32_t[:, ::1] worst, double[:, ::1] roll,
               double[:, ::1] dshock, double[:, ::1] floor):
        """Margin of one account from its state (outputs of length 1 / shape (1, U))."""
        cdef dpm_agg_out o = self._out(total, value, L, scan, worst, roll, dshock, floor)
        with nogil:
            dpm_state_finish(&self.p, &state[0], &o, 0)
