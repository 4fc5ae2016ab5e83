# cython: language_level=3
"""Entry points of the revaluation and aggregation kernels (risk_kernels.h).

dpm.engine validates every array (dtype, shape, ranges, finiteness) before it reaches this module;
the functions here only take pointers and release the GIL.
"""
from libc.stdint cimport int8_t, uint8_t, int32_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from dpm._core._black cimport dpm_index
from dpm._core._risk cimport (
    dpm_revalue_rows, dpm_agg_params, dpm_agg_out, dpm_inst_info, dpm_state_size, dpm_state_clear,
    dpm_state_add, dpm_state_finish, dpm_margin_rows, dpm_what_if, dpm_account_state, dpm_cpu_wide,
)



cdef inline void *_malloc64(size_t nbytes, void **raw) noexcept nogil:
    """``nbytes`` starting on a 64-byte boundary (cache line / zmm); ``*raw`` is what to free."""
    cdef char *r = <char *>malloc(nbytes + 64)
    raw[0] = r
    if r == NULL:
        return NULL
    return <void *>(r + (64 - <uintptr_t>r % 64))


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
    cdef Py_ssize_t M = out.shape[0]
    if start < 0 or stop > M or kind.shape[0] < M or F.shape[0] < M or vol_cols.shape[0] < M \
            or base.shape[0] < M or S > out.shape[1] or move.shape[1] != out.shape[1] \
            or volcol.shape[1] != out.shape[1] or price.shape[1] != out.shape[1]:
        raise IndexError(f"revalue_rows: rows [{start}, {stop}) or shapes out of range")
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
    cdef void *_info_raw
    cdef readonly Py_ssize_t n_underlyings, n_scenarios, n_instruments, state_size

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
        self.n_instruments = inst_und.shape[0]
        self.state_size = dpm_state_size(&self.p)
        # packed per-instrument add-on inputs: one 40-byte record per position for the batch gather
        cdef Py_ssize_t i, M = inst_und.shape[0]
        cdef dpm_inst_info *info = <dpm_inst_info *>_malloc64(
            <size_t>(M if M > 0 else 1) * sizeof(dpm_inst_info), &self._info_raw)
        if info == NULL:
            raise MemoryError()
        memset(info, 0, <size_t>(M if M > 0 else 1) * sizeof(dpm_inst_info))
        for i in range(M):
            info[i].delta = inst_delta[i]
            info[i].som = inst_som[i]
            info[i].notional = inst_notional[i]
            info[i].value = inst_value[i]
            info[i].und = inst_und[i]
            info[i].bucket = inst_bucket[i]
        self.p.info = info
        self.p.wide = dpm_cpu_wide()
        self.p.und_sorted = 1
        for i in range(1, M):
            if inst_und[i] < inst_und[i - 1]:
                self.p.und_sorted = 0
                break

    def __dealloc__(self):
        free(self._info_raw)

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
        if start < 0 or stop + 1 > indptr.shape[0] or scratch.shape[0] < self.state_size \
                or total.shape[0] < stop or L.shape[0] < stop or worst.shape[0] < stop:
            raise IndexError(f"margin_rows: accounts [{start}, {stop}) or buffers out of range")
        cdef dpm_agg_out o = self._out(total, value, L, scan, worst, roll, dshock, floor)
        cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
        cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
        with nogil:
            dpm_margin_rows(&self.p, start, stop, &indptr[0], ip, qp, &scratch[0], &o)

    def account_state(self, const int64_t[::1] inst, const double[::1] qty, double[::1] state):
        """Fill ``state`` with the aggregation state of one account's positions."""
        cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
        cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
        with nogil:
            dpm_account_state(&self.p, ip, qp, inst.shape[0], &state[0])

    def what_if(self, const double[::1] state, const int64_t[::1] inst, const double[::1] qty,
                double[::1] work, double[::1] total, double[::1] value, double[:, ::1] L,
                double[:, ::1] scan, int32_t[:, ::1] worst, double[:, ::1] roll,
                double[:, ::1] dshock, double[:, ::1] floor):
        """Margin after adding orders ``(inst, qty)`` to a cached ``state`` (left unchanged).

        O(scenarios) per order: ``work`` receives a copy of the state plus the orders.
        """
        cdef dpm_agg_out o = self._out(total, value, L, scan, worst, roll, dshock, floor)
        cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
        cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
        with nogil:
            dpm_what_if(&self.p, &state[0], ip, qp, inst.shape[0], &work[0], &o)

    def margin_job(self, const int64_t[::1] indptr, const int64_t[::1] inst, const double[::1] qty,
                   double[::1] total, double[::1] value, double[:, ::1] L, double[:, ::1] scan,
                   int32_t[:, ::1] worst, double[:, ::1] roll, double[:, ::1] dshock,
                   double[:, ::1] floor):
        """A :class:`MarginJob` bound to one book and its output arrays (see ``margin_rows``)."""
        cdef MarginJob job = MarginJob.__new__(MarginJob)
        job.plan = self
        job.keep = (indptr, inst, qty, total, value, L, scan, worst, roll, dshock, floor)
        job.n = indptr.shape[0] - 1
        if job.n <= 0 or self.p.U == 0:
            job.n = 0  # nothing to compute (run() returns at once)
            return job
        cdef Py_ssize_t U = self.p.U, n = job.n
        # the kernel writes row a of each (N, U) output at a * U: exactly U columns
        if (total.shape[0] < n or value.shape[0] < n or L.shape[0] < n or L.shape[1] != U
                or scan.shape[0] < n or scan.shape[1] != U or worst.shape[0] < n or worst.shape[1] != U
                or roll.shape[0] < n or roll.shape[1] != U or dshock.shape[0] < n or dshock.shape[1] != U
                or floor.shape[0] < n or floor.shape[1] != U):
            raise ValueError("margin_job: output arrays do not match the book (N rows, U columns)")
        if indptr[job.n] > inst.shape[0] or indptr[job.n] > qty.shape[0] or indptr[0] < 0:
            raise ValueError("margin_job: indptr points outside the position arrays")
        job.o = self._out(total, value, L, scan, worst, roll, dshock, floor)
        job.indptr = &indptr[0]
        job.inst = &inst[0] if inst.shape[0] > 0 else NULL
        job.qty = &qty[0] if qty.shape[0] > 0 else NULL
        return job

    def finish(self, const double[::1] state, double[::1] total, double[::1] value,
               double[:, ::1] L, double[:, ::1] scan, int32_t[:, ::1] worst, double[:, ::1] roll,
               double[:, ::1] dshock, double[:, ::1] floor):
        """Margin of one account from its state (outputs of length 1 / shape (1, U))."""
        cdef dpm_agg_out o = self._out(total, value, L, scan, worst, roll, dshock, floor)
        with nogil:
            dpm_state_finish(&self.p, &state[0], &o, 0)


cdef class MarginJob:
    """Accounts of one book bound to their outputs: ``run(start, stop)`` only releases the GIL.

    Binding the pointers once keeps the per-chunk cost of a threaded ``margin_many`` to one call
    (no memoryview conversions); each call gets its own scratch state (threads never share it).
    """
    cdef AggregationPlan plan
    cdef object keep
    cdef dpm_agg_out o
    cdef const int64_t *indptr
    cdef const int64_t *inst
    cdef const double *qty
    cdef Py_ssize_t n

    def run(self, Py_ssize_t start, Py_ssize_t stop):
        """Margin of accounts ``[start, stop)`` into the bound outputs."""
        if self.n == 0 or stop <= start:
            return
        if start < 0 or stop > self.n:
            raise IndexError(f"accounts [{start}, {stop}) outside [0, {self.n})")
        cdef void *raw = NULL
        cdef double *scratch = <double *>_malloc64(<size_t>self.plan.state_size * sizeof(double), &raw)
        if scratch == NULL:
            raise MemoryError()
        with nogil:
            dpm_margin_rows(&self.plan.p, start, stop, self.indptr, self.inst, self.qty, scratch,
                            &self.o)
        free(raw)


cdef class WhatIf:
    """What-if evaluator of one cached account state, with its own C work buffers.

    ``total(ids, qty)`` returns the combined risk (and the position value) after adding the orders to
    the state, which is never modified. One instance is not meant to be shared by threads; the
    state array must not change while the instance lives (the engine keeps it read-only).
    """
    cdef AggregationPlan plan
    cdef object state_ref
    cdef const double *state
    cdef double *work
    cdef double *outs
    cdef int32_t *worst
    cdef void *raw_work
    cdef void *raw_outs
    cdef dpm_agg_out o

    def __cinit__(self, AggregationPlan plan, const double[::1] state):
        cdef Py_ssize_t U = plan.p.U
        if state.shape[0] != plan.state_size:
            raise ValueError(f"state: expected {plan.state_size} values, got {state.shape[0]}")
        self.plan = plan
        self.state_ref = state.base if state.base is not None else state
        self.state = &state[0]
        self.work = <double *>_malloc64(<size_t>plan.state_size * sizeof(double), &self.raw_work)
        # total | value | L, scan, roll, dshock, floor (U each) | worst (U int32)
        self.outs = <double *>_malloc64(<size_t>(2 + 6 * U) * sizeof(double), &self.raw_outs)
        if self.work == NULL or self.outs == NULL:
            raise MemoryError()
        self.worst = <int32_t *>(self.outs + 2 + 5 * U)
        self.o.total = self.outs
        self.o.value = self.outs + 1
        self.o.L = self.outs + 2
        self.o.scan = self.outs + 2 + U
        self.o.roll = self.outs + 2 + 2 * U
        self.o.dshock = self.outs + 2 + 3 * U
        self.o.floor = self.outs + 2 + 4 * U
        self.o.worst = self.worst

    def __dealloc__(self):
        free(self.raw_work)
        free(self.raw_outs)

    def total(self, const int64_t[::1] inst, const double[::1] qty):
        """``(risk, position value)`` after orders ``(inst, qty)`` (int64 ids, float64 contracts).

        Ids are checked against the table (an out-of-range id raises ``IndexError``; the engine checks them first);
        quantities are taken as given (finite numbers, as the engine validates).
        """
        cdef Py_ssize_t k, n = inst.shape[0]
        cdef int64_t M = self.plan.n_instruments
        if qty.shape[0] != n:
            raise ValueError(f"quantities: expected {n} values (one per instrument id), got {qty.shape[0]}")
        for k in range(n):
            if inst[k] < 0 or inst[k] >= M:
                raise IndexError(f"instrument_ids: id {inst[k]} at index {k} is not in the table (0..{M - 1})")
        cdef const int64_t *ip = &inst[0] if n > 0 else NULL
        cdef const double *qp = &qty[0] if n > 0 else NULL
        with nogil:
            dpm_what_if(&self.plan.p, self.state, ip, qp, n, self.work, &self.o)
        return self.outs[0], self.outs[1]

    def total_one(self, int64_t inst, double qty):
        """``total`` for one order given as scalars (no arrays at all)."""
        cdef int64_t M = self.plan.n_instruments
        if inst < 0 or inst >= M:
            raise IndexError(f"instrument_ids: id {inst} is not in the table (0..{M - 1})")
        with nogil:
            dpm_what_if(&self.plan.p, self.state, &inst, &qty, 1, self.work, &self.o)
        return self.outs[0], self.outs[1]
