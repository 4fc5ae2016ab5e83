# cython: language_level=3
"""Entry points of the gather kernels (gather.h): margin aggregation, what-if, tails, full vectors.

dpm.engines validates every array (dtype, shape, ranges, finiteness) before it reaches this module;
the functions here check only what protects memory, take pointers and release the GIL.
"""
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.math cimport isfinite
from dpm._core._black cimport dpm_index
from cpython.pycapsule cimport PyCapsule_New
import numpy as np

#: the name of the capsule of a plan's C parameters (``AggregationPlan.params_capsule``)
PARAMS_CAPSULE = <bytes>DPM_PARAMS_CAPSULE


cdef bint _zero_padding(Py_ssize_t S, const double[:, ::1] pnl, const double[:, ::1] weight,
                        const double[:, ::1] damp) noexcept:
    """Columns ``S:`` of the P&L, weights and dampeners are all exactly zero."""
    cdef Py_ssize_t i, s
    for i in range(pnl.shape[0]):
        for s in range(S, pnl.shape[1]):
            if pnl[i, s] != 0.0:
                return False
    for i in range(weight.shape[0]):
        for s in range(S, weight.shape[1]):
            if weight[i, s] != 0.0 or damp[i, s] != 0.0:
                return False
    return True


cdef inline void *_malloc64(size_t nbytes, void **raw) noexcept nogil:
    """``nbytes`` starting on a 64-byte boundary (cache line / zmm); ``*raw`` is what to free."""
    cdef char *r = <char *>malloc(nbytes + 64)
    raw[0] = r
    if r == NULL:
        return NULL
    return <void *>(r + (64 - <uintptr_t>r % 64))


cdef const double *_dp(const double[::1] a):
    return &a[0] if a.shape[0] > 0 else NULL


cdef const int64_t *_ip(const int64_t[::1] a):
    return &a[0] if a.shape[0] > 0 else NULL


cdef int _check_positions(str what, const int64_t[::1] indptr, Py_ssize_t last, const int64_t[::1] inst,
                          const double[::1] qty) except -1:
    """The positions of the accounts up to ``last`` lie inside the position arrays."""
    if indptr[last] > inst.shape[0] or indptr[last] > qty.shape[0]:
        raise IndexError(f"{what}: indptr points outside the position arrays")
    return 0


cdef class AggregationPlan:
    """The read-only data every account's aggregation needs, bound into one C struct.

    Arguments are keyword-only numpy arrays prepared by :mod:`dpm.engines.margin`; the plan keeps
    references to them so the pointers stay valid.
    """
    cdef dpm_agg_params p
    cdef object _keep
    cdef void *_info_raw
    cdef void *_blk_raw
    cdef readonly Py_ssize_t n_underlyings, n_scenarios, n_instruments, state_size, scratch_size

    def __init__(self, *, Py_ssize_t S, const double[:, ::1] pnl, const int32_t[::1] inst_und,
                 const int32_t[::1] inst_bucket, const double[::1] inst_delta,
                 const double[::1] inst_som, const double[::1] inst_notional,
                 const double[::1] inst_value, const double[:, ::1] weight,
                 const double[:, ::1] damp, const int64_t[::1] bucket_ptr,
                 const double[::1] bucket_rate, const double[::1] und_price,
                 const double[::1] to_risk, const double[::1] risk_to_usd,
                 const double[::1] ds_threshold, const double[::1] ds_m_inc,
                 const double[::1] ds_max, const double[::1] size_rate,
                 const double[::1] tier_bound, const double[::1] tier_mult, double scan_round,
                 int agg, const double[:, ::1] corr, const int32_t[:, ::1] grp,
                 const int32_t[::1] ngrp, const int64_t[::1] pair_off, const double[::1] ctab,
                 const double[:, ::1] gz, const int64_t[::1] mask_off, const double[::1] qsub,
                 const double[::1] offset, const double[::1] max_offset,
                 const int32_t[:, ::1] sp_leg, const double[::1] sp_rate,
                 const double[::1] sp_ratio, keep):
        cdef Py_ssize_t U = weight.shape[0], M = inst_und.shape[0], i
        if (pnl.shape[0] != M or weight.shape[1] != pnl.shape[1] or damp.shape[0] != U
                or damp.shape[1] != pnl.shape[1] or bucket_ptr.shape[0] != U + 1
                or und_price.shape[0] != U or corr.shape[0] != U or corr.shape[1] != U
                or grp.shape[0] != U or grp.shape[1] != pnl.shape[1] or ngrp.shape[0] != U
                or gz.shape[0] != U or pair_off.shape[0] != U * U or offset.shape[0] != U
                or max_offset.shape[0] != U or tier_mult.shape[0] != tier_bound.shape[0] + 1
                or sp_leg.shape[0] != sp_rate.shape[0] or sp_ratio.shape[0] != sp_rate.shape[0]
                or S > pnl.shape[1]):
            raise ValueError("AggregationPlan: inconsistent array shapes")
        # the joint scan reads each pair's c-table as ngrp[u] rows of ngrp[v] padded to a multiple of 8
        cdef Py_ssize_t u, v
        for u in range(U):
            for v in range(U):
                if pair_off[u * U + v] >= 0 and (
                        u >= v or ngrp[u] < 0 or ngrp[v] < 0 or ngrp[u] > gz.shape[1] or ngrp[v] > gz.shape[1]
                        or pair_off[u * U + v] + <Py_ssize_t>ngrp[u] * ((ngrp[v] + 7) // 8 * 8) > ctab.shape[0]
                        or (ngrp[v] + 7) // 8 * 8 > pnl.shape[1]):
                    raise ValueError(f"AggregationPlan: the c-table of underlyings ({u}, {v}) does not fit")
        self._keep = keep
        self.p.S = S
        self.p.Sp = pnl.shape[1]
        # the scan may read the padding columns when they can never lose (all zero): whole vectors
        self.p.S_scan = pnl.shape[1] if _zero_padding(S, pnl, weight, damp) else S
        self.p.U = U
        self.p.NB = bucket_rate.shape[0]
        self.p.NT = tier_bound.shape[0]
        self.p.pnl = &pnl[0, 0] if M > 0 and pnl.shape[1] > 0 else NULL
        self.p.weight = &weight[0, 0] if U > 0 else NULL
        self.p.damp = &damp[0, 0] if U > 0 else NULL
        self.p.bucket_ptr = &bucket_ptr[0]
        self.p.bucket_rate = _dp(bucket_rate)
        self.p.und_price = _dp(und_price)
        self.p.to_risk = _dp(to_risk)
        self.p.risk_to_usd = _dp(risk_to_usd)
        self.p.ds_threshold = _dp(ds_threshold)
        self.p.ds_m_inc = _dp(ds_m_inc)
        self.p.ds_max = _dp(ds_max)
        self.p.size_rate = _dp(size_rate)
        self.p.tier_bound = _dp(tier_bound)
        self.p.tier_mult = _dp(tier_mult)
        self.p.scan_round = scan_round
        self.p.agg = agg
        self.p.corr = &corr[0, 0] if U > 0 else NULL
        self.p.G = gz.shape[1]
        self.p.grp = &grp[0, 0] if U > 0 and grp.shape[1] > 0 else NULL
        self.p.ngrp = &ngrp[0] if U > 0 else NULL
        self.p.pair_off = &pair_off[0] if U > 0 else NULL
        self.p.ctab = _dp(ctab)
        self.p.gz = &gz[0, 0] if U > 0 and gz.shape[1] > 0 else NULL
        self.p.mask_off = &mask_off[0] if mask_off.shape[0] > 0 else NULL
        self.p.qsub = _dp(qsub)
        self.p.offset = _dp(offset)
        self.p.max_offset = _dp(max_offset)
        self.p.NSP = sp_rate.shape[0]
        self.p.sp_leg = &sp_leg[0, 0] if sp_rate.shape[0] > 0 else NULL
        self.p.sp_rate = _dp(sp_rate)
        self.p.sp_ratio = _dp(sp_ratio)
        self.n_underlyings = U
        self.n_scenarios = S
        self.n_instruments = M
        self.state_size = dpm_state_size(&self.p)
        self.scratch_size = dpm_finish_scratch_size(&self.p)
        # packed per-instrument add-on inputs: one 40-byte record per position for the gather
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
        self.p.M = M
        self.p.pnl_blk = NULL
        self._blk_raw = NULL
        # margin_many reads a copy of the P&L blocked by scenarios, accounts by groups of 64
        # (gather.h, dpm_margin_rows): one block stays in L2 while the group gathers from it
        self.set_group(64)
        self.p.und_sorted = 1
        for i in range(1, M):
            if inst_und[i] < inst_und[i - 1]:
                self.p.und_sorted = 0
                break

    def __dealloc__(self):
        free(self._info_raw)
        free(self._blk_raw)

    @property
    def scan_columns(self):
        """Scenario columns the worst-loss scan reads: the padded width when the padding is all
        zero (it can never lose), else the scenario count."""
        return self.p.S_scan

    @property
    def group(self):
        """Accounts per group of the margin kernel (1: one account at a time, row by row)."""
        return self.p.group

    def set_group(self, Py_ssize_t group):
        """Accounts per group of the margin kernel: 1 reads the row-major P&L one account at a time;
        more reads a copy blocked by scenarios (made on first use; the default is 64). Results are the
        same bits either way: this is a tuning and testing knob. Not to be called while a job runs."""
        if group < 1 or group > 4096:
            raise ValueError(f"group: expected 1 to 4096 accounts, got {group}")
        self._set_layout(group, self.p.wide)

    def _set_wide(self, int wide):
        """Tests only: run the 8-double-vector passes of CPUs with 32 vector registers (blocks of 64)
        whatever this CPU has (GCC lowers them through memory on AVX2: slow, the same bits)."""
        self._set_layout(self.p.group, 1 if wide else 0)

    cdef _set_layout(self, Py_ssize_t group, int wide):
        cdef Py_ssize_t M = self.p.M, Sp = self.p.Sp
        cdef double *blk
        cdef void *raw = NULL
        if group > 1 and Sp > 0 and dpm_block_width(Sp, 0, wide) >= Sp:
            # one block holds every scenario (64 on AVX-512 CPUs): the blocked layout is the
            # row-major matrix itself, so the kernel reads the plan's P&L, no copy (0.85 MB per
            # market update for 1,652 instruments, and the rows the revaluation just wrote)
            free(self._blk_raw)
            self._blk_raw = NULL
            self.p.pnl_blk = self.p.pnl
        elif group > 1 and (self.p.pnl_blk == NULL or wide != self.p.wide):
            # the block widths follow the vector width: a new copy (the old one is freed after)
            blk = <double *>_malloc64(<size_t>(M * Sp if M * Sp > 0 else 1) * sizeof(double), &raw)
            if blk == NULL:
                raise MemoryError()
            if M > 0 and Sp > 0:
                dpm_block_copy(self.p.pnl, M, Sp, wide, blk)
            free(self._blk_raw)
            self._blk_raw = raw
            self.p.pnl_blk = blk
        elif wide != self.p.wide:
            free(self._blk_raw)  # made again for the new widths when groups are used again
            self._blk_raw = NULL
            self.p.pnl_blk = NULL
        self.p.wide = wide
        self.p.group = group

    cdef int _bind(self, outs, Py_ssize_t n, dpm_agg_out *o) except -1:
        """Point ``o`` at ``outs = (total, value, joint, L, scan, worst, roll, dshock, floor)``."""
        cdef double[::1] total, value, joint
        cdef double[:, ::1] L, scan, roll, dshock, floor
        cdef int32_t[:, ::1] worst
        total, value, joint, L, scan, worst, roll, dshock, floor = outs
        cdef Py_ssize_t U = self.p.U
        if (total.shape[0] < n or value.shape[0] < n or joint.shape[0] < n
                or L.shape[0] < n or L.shape[1] != U or scan.shape[0] < n or scan.shape[1] != U
                or worst.shape[0] < n or worst.shape[1] != U or roll.shape[0] < n
                or roll.shape[1] != U or dshock.shape[0] < n or dshock.shape[1] != U
                or floor.shape[0] < n or floor.shape[1] != U):
            raise ValueError("outputs do not match (N rows, U columns)")
        if n == 0:
            return 0
        o.total = &total[0]
        o.value = &value[0]
        o.joint = &joint[0]
        o.L = &L[0, 0] if U > 0 else NULL
        o.scan = &scan[0, 0] if U > 0 else NULL
        o.worst = &worst[0, 0] if U > 0 else NULL
        o.roll = &roll[0, 0] if U > 0 else NULL
        o.dshock = &dshock[0, 0] if U > 0 else NULL
        o.floor = &floor[0, 0] if U > 0 else NULL
        return 0

    def params_capsule(self):
        """The plan's C parameters as a capsule named ``PARAMS_CAPSULE``: how another kernel module
        (the GIL-free check path) runs the same what-if on this plan. The pointer is valid while
        the plan lives; the holder keeps a reference to the plan."""
        return PyCapsule_New(<void *>&self.p, DPM_PARAMS_CAPSULE, NULL)

    def account_state(self, const int64_t[::1] inst, const double[::1] qty, double[::1] state):
        """Fill ``state`` (``state_size`` values) with the aggregation state of one account's positions."""
        if state.shape[0] < self.state_size or qty.shape[0] != inst.shape[0]:
            raise ValueError("account_state: wrong buffer sizes")
        cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
        cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
        with nogil:
            dpm_account_state(&self.p, ip, qp, inst.shape[0], &state[0])

    def margin_job(self, const int64_t[::1] indptr, const int64_t[::1] inst, const double[::1] qty, outs):
        """A :class:`MarginJob` bound to one book and its outputs
        ``(total, value, joint, L, scan, worst, roll, dshock, floor)``."""
        cdef MarginJob job = MarginJob.__new__(MarginJob)
        job.plan = self
        job.keep = (indptr, inst, qty, outs)
        job.n = indptr.shape[0] - 1
        if job.n <= 0 or self.p.U == 0:
            job.n = 0  # nothing to compute (run() returns at once)
            return job
        self._bind(outs, job.n, &job.o)
        if indptr[job.n] > inst.shape[0] or indptr[job.n] > qty.shape[0] or indptr[0] < 0:
            raise ValueError("margin_job: indptr points outside the position arrays")
        job.indptr = &indptr[0]
        job.inst = &inst[0] if inst.shape[0] > 0 else NULL
        job.qty = &qty[0] if qty.shape[0] > 0 else NULL
        return job

    def finish(self, const double[::1] state, outs):
        """Margin of one account from its state (outputs of length 1 / shape (1, U))."""
        cdef dpm_agg_out o
        if state.shape[0] < self.state_size:
            raise ValueError("finish: state too short")
        self._bind(outs, 1, &o)
        scratch = np.empty(self.scratch_size)
        cdef double[::1] fs = scratch
        with nogil:
            dpm_finish_one(&self.p, &state[0], &o, &fs[0])


cdef class MarginJob:
    """Accounts of one book bound to their outputs: ``run(start, stop)`` only releases the GIL.

    Binding the pointers once keeps the per-chunk cost of a threaded ``margin_many`` to one call;
    each call gets its own scratch (threads never share it).
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
        cdef size_t nd = <size_t>dpm_margin_scratch_size(&self.plan.p, stop - start)
        cdef double *scratch = <double *>_malloc64(nd * sizeof(double), &raw)
        if scratch == NULL:
            raise MemoryError()
        with nogil:
            dpm_margin_rows(&self.plan.p, start, stop, self.indptr, self.inst, self.qty, scratch,
                            &self.o)
        free(raw)

    def run_shared(self, const int64_t[:, ::1] bounds, int64_t[::1] counter):
        """Margin of the account ranges ``bounds[j] = (start, stop)``, ``j`` taken from the shared
        ``counter`` (atomically incremented) until none is left; returns the number of ranges run.

        Several threads may call it with the same ``bounds`` and ``counter``: each range runs once.
        The whole loop runs without the GIL, so a thread started on it keeps working while the
        caller runs Python (the live book's tick does its bookkeeping beside the kernel).
        """
        if bounds.shape[1] != 2 or counter.shape[0] != 1:
            raise ValueError("run_shared: bounds must be (n, 2) and counter one int64")
        cdef Py_ssize_t nb = bounds.shape[0], j, biggest = 0, done = 0
        for j in range(nb):
            if bounds[j, 0] < 0 or bounds[j, 1] > self.n or bounds[j, 1] < bounds[j, 0]:
                raise IndexError(f"run_shared: range {j} [{bounds[j, 0]}, {bounds[j, 1]}) outside [0, {self.n})")
            biggest = max(biggest, bounds[j, 1] - bounds[j, 0])
        if self.n == 0 or nb == 0 or biggest == 0:
            return 0
        cdef void *raw = NULL
        cdef size_t nd = <size_t>dpm_margin_scratch_size(&self.plan.p, biggest)
        cdef double *scratch = <double *>_malloc64(nd * sizeof(double), &raw)
        if scratch == NULL:
            raise MemoryError()
        with nogil:
            while True:
                j = <Py_ssize_t>dpm_next_chunk(&counter[0])
                if j >= nb:
                    break
                if bounds[j, 1] > bounds[j, 0]:
                    dpm_margin_rows(&self.plan.p, bounds[j, 0], bounds[j, 1], self.indptr, self.inst, self.qty,
                                    scratch, &self.o)
                done += 1
        free(raw)
        return done


cdef class WhatIf:
    """What-if evaluator of one cached account state, with its own C work buffers.

    ``total(ids, qty)`` returns the combined risk (and the position value) after adding the orders to
    the state, which is never modified. One instance is not meant to be shared by threads; the
    state array must not change while the instance lives (the engine keeps it read-only).
    """
    cdef AggregationPlan plan
    cdef object state_ref
    cdef const double *state
    cdef object held_ref
    cdef const int64_t *held_ids
    cdef const double *held_qty
    cdef int64_t n_held
    cdef int held_known
    cdef object available_ref
    cdef const unsigned char *available
    cdef double *work
    cdef double *outs
    cdef void *raw_work
    cdef void *raw_outs
    cdef dpm_agg_out o

    def __cinit__(self, AggregationPlan plan, const double[::1] state, held_ids=None, held_qty=None):
        cdef Py_ssize_t U = plan.p.U
        if state.shape[0] != plan.state_size:
            raise ValueError(f"state: expected {plan.state_size} values, got {state.shape[0]}")
        # the account's positions behind the state (ids increasing): orders on held instruments (or
        # several on one) are then margined from the merged positions, exactly as a full recompute
        self.held_ids = NULL
        self.held_qty = NULL
        self.n_held = 0
        self.held_known = held_ids is not None
        cdef const int64_t[::1] hv
        cdef const double[::1] qv
        cdef Py_ssize_t k
        if held_ids is not None:
            if held_qty is None:
                raise ValueError("held_qty: the quantities of held_ids are needed")
            # private copies (the caller may change its arrays); a plain copy when they are already
            # 1-d arrays of the right type (np.array(...) costs four times as much)
            if type(held_ids) is np.ndarray and held_ids.ndim == 1 and held_ids.dtype == np.int64:
                ids = held_ids.copy()
            else:
                ids = np.array(held_ids, dtype=np.int64, copy=True).reshape(-1)
            if type(held_qty) is np.ndarray and held_qty.ndim == 1 and held_qty.dtype == np.float64:
                qs = held_qty.copy()
            else:
                qs = np.array(held_qty, dtype=np.float64, copy=True).reshape(-1)
            if ids.shape != qs.shape:
                raise ValueError("held_ids/held_qty: expected one quantity per instrument id")
            if ids.size:
                hv = ids
                qv = qs
                # a C loop: the numpy form of this check took 4 us, most of a cold pre-trade check
                for k in range(1, hv.shape[0]):
                    if hv[k] <= hv[k - 1]:
                        raise ValueError("held_ids: instrument ids must be strictly increasing")
                self.held_ref = (ids, qs)
                self.held_ids = &hv[0]
                self.held_qty = &qv[0]
                self.n_held = ids.size
        self.plan = plan
        self.state_ref = state.base if state.base is not None else state
        self.state = &state[0]
        self.work = <double *>_malloc64(<size_t>(plan.state_size + plan.scratch_size) * sizeof(double),
                                        &self.raw_work)
        self.outs = <double *>_malloc64(<size_t>(3 + 6 * U) * sizeof(double), &self.raw_outs)
        if self.work == NULL or self.outs == NULL:
            raise MemoryError()
        dpm_out_layout(self.outs, U, &self.o)

    def __dealloc__(self):
        free(self.raw_work)
        free(self.raw_outs)

    cdef void _run(self, const int64_t *ip, const double *qp, int64_t n) noexcept nogil:
        """The C what-if of orders (ip, qp)[0:n] on this state, into ``outs``."""
        dpm_what_if(&self.plan.p, self.state, ip, qp, n, self.held_known, self.held_ids, self.held_qty,
                    self.n_held, self.work, &self.o)

    def rebuilt(self, AggregationPlan plan):
        """A what-if of the same held positions on ``plan`` (the same table on a new market): the
        state is computed again from the positions this evaluator keeps, without copying or
        checking them again. Gives the bits of a new ``WhatIf(plan, state, ids, qty)`` whose state
        ``plan.account_state`` filled from the same positions."""
        if not self.held_known:
            raise ValueError("rebuilt: the positions behind this state are not known (no held_ids)")
        if plan.n_instruments != self.plan.n_instruments or plan.state_size != self.plan.state_size:
            raise ValueError("rebuilt: the plan is for another table or model")
        cdef int64_t k, M = plan.n_instruments
        for k in range(self.n_held):
            if self.held_ids[k] < 0 or self.held_ids[k] >= M:
                raise IndexError(f"rebuilt: held instrument id {self.held_ids[k]} is not in the table")
        state = np.empty(plan.state_size)
        cdef double[::1] sv = state
        with nogil:
            dpm_account_state(&plan.p, self.held_ids, self.held_qty, self.n_held, &sv[0])
        state.setflags(write=False)
        cdef WhatIf w = WhatIf.__new__(WhatIf, plan, state)
        w.held_known = 1
        w.held_ref = self.held_ref
        w.held_ids = self.held_ids
        w.held_qty = self.held_qty
        w.n_held = self.n_held
        return w

    @property
    def state(self):
        """The (read-only) account state this evaluator adds orders to."""
        return self.state_ref

    @property
    def held(self):
        """``(ids, quantities)`` of the positions behind the state (empty arrays when none)."""
        if self.held_ref is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return self.held_ref

    def bind_available(self, const unsigned char[::1] available):
        """The instruments orders may name (1: revaluable), one byte per instrument of the table."""
        if available.shape[0] != self.plan.n_instruments:
            raise ValueError(f"available: expected {self.plan.n_instruments} flags, got {available.shape[0]}")
        self.available_ref = available.base if available.base is not None else available
        self.available = &available[0]

    def first_bad_order(self, const int64_t[::1] inst, const double[::1] qty):
        """Index of the first order with an id outside the table, a quantity that is not finite or an
        instrument that cannot be revalued (see ``bind_available``); -1 when every order is good.
        One C pass, so that a checked what-if costs no numpy calls; the engine reports the detail."""
        cdef Py_ssize_t k, n = inst.shape[0]
        cdef int64_t M = self.plan.n_instruments
        if qty.shape[0] != n:
            return 0
        for k in range(n):
            if inst[k] < 0 or inst[k] >= M or not isfinite(qty[k]):
                return k
            if self.available != NULL and not self.available[inst[k]]:
                return k
        return -1

    def total(self, const int64_t[::1] inst, const double[::1] qty):
        """``(risk, position value)`` after orders ``(inst, qty)`` (validated int64 ids in the
        table, finite float64 contracts: the engine checks them; out-of-range ids raise IndexError)."""
        cdef Py_ssize_t k, n = inst.shape[0]
        cdef int64_t M = self.plan.n_instruments
        if qty.shape[0] != n:
            raise ValueError(f"quantities: expected {n} values (one per instrument id), got {qty.shape[0]}")
        for k in range(n):
            if inst[k] < 0 or inst[k] >= M:
                raise IndexError(f"instrument id {inst[k]} at index {k} is not in the table (0..{M - 1})")
        cdef const int64_t *ip = &inst[0] if n > 0 else NULL
        cdef const double *qp = &qty[0] if n > 0 else NULL
        with nogil:
            self._run(ip, qp, n)
        return self.outs[0], self.outs[1]

    def total_one(self, int64_t inst, double qty):
        """``total`` for one order given as scalars (no arrays at all)."""
        cdef int64_t M = self.plan.n_instruments
        if inst < 0 or inst >= M:
            raise IndexError(f"instrument id {inst} is not in the table (0..{M - 1})")
        with nogil:
            self._run(&inst, &qty, 1)
        return self.outs[0], self.outs[1]

    def risk_one(self, int64_t inst, double qty):
        """The risk of ``total_one`` alone, as a float, keeping the GIL: for the pre-trade hot path,
        where releasing and re-taking the GIL and building a tuple cost a sizeable part of the
        microsecond the evaluation takes."""
        cdef int64_t M = self.plan.n_instruments
        if inst < 0 or inst >= M:
            raise IndexError(f"instrument id {inst} is not in the table (0..{M - 1})")
        self._run(&inst, &qty, 1)
        return self.outs[0]


def tail_rows(Py_ssize_t a0, Py_ssize_t a1, const int64_t[::1] indptr, const int64_t[::1] inst,
              const double[::1] qty, const double[:, :, ::1] P, Py_ssize_t nsc, Py_ssize_t s_base,
              Py_ssize_t k, double[:, ::1] cval, int32_t[:, ::1] cidx, int32_t[::1] cn,
              double[::1] thr):
    """Offer ``nsc`` scenarios (numbered from ``s_base``) of the blocked chunk ``P``
    (n_blocks x M x B, B a multiple of 8) to the tail buffers (N x cap, ``cap >= k``) of accounts
    ``[a0, a1)``. Start with ``cn = 0``, ``thr = -inf``."""
    if a1 <= a0 or nsc <= 0:
        return
    cdef Py_ssize_t cap = cval.shape[1], B = P.shape[2]
    if (k < 1 or cap < k or cidx.shape[1] != cap or a1 > cn.shape[0] or a1 > thr.shape[0]
            or a1 > cval.shape[0] or a1 + 1 > indptr.shape[0] or B % 8 != 0
            or P.shape[0] * B < nsc):
        raise ValueError("tail_rows: inconsistent buffer sizes")
    acc = np.empty(B)
    sv = np.empty(cap)
    si = np.empty(cap, dtype=np.int32)
    cdef double[::1] acc_v = acc, sv_v = sv
    cdef int32_t[::1] si_v = si
    cdef const int64_t *ip = &inst[0] if inst.shape[0] > 0 else NULL
    cdef const double *qp = &qty[0] if qty.shape[0] > 0 else NULL
    with nogil:
        dpm_tail_rows(a0, a1, &indptr[0], ip, qp, &P[0, 0, 0], nsc, s_base, P.shape[1], B,
                      k, cap, &acc_v[0], &cval[0, 0], &cidx[0, 0], &cn[0], &thr[0], &sv_v[0],
                      &si_v[0])


def tail_finish(Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t k, double[:, ::1] cval,
                int32_t[:, ::1] cidx, int32_t[::1] cn):
    """Reduce the tail buffers of accounts ``[a0, a1)`` to their ``k`` best (first ``k`` columns),
    sorted by loss descending, ties by scenario index ascending."""
    if a1 <= a0:
        return
    cdef Py_ssize_t cap = cval.shape[1]
    if k < 1 or cap < k or cidx.shape[1] != cap or a1 > cn.shape[0] or a1 > cval.shape[0]:
        raise ValueError("tail_finish: inconsistent buffer sizes")
    sv = np.empty(cap)
    si = np.empty(cap, dtype=np.int32)
    cdef double[::1] sv_v = sv
    cdef int32_t[::1] si_v = si
    with nogil:
        dpm_tail_finish(a0, a1, k, cap, &cval[0, 0], &cidx[0, 0], &cn[0], &sv_v[0], &si_v[0])


def gather_rows(Py_ssize_t a0, Py_ssize_t a1, const int64_t[::1] indptr, const int64_t[::1] inst,
                const double[::1] qty, const double[:, ::1] P, double[:, ::1] out):
    """Scenario P&L of accounts ``[a0, a1)`` into rows of ``out`` (N x ld; P is M x ld, ld a
    multiple of 8)."""
    if a1 <= a0:
        return
    cdef Py_ssize_t ld = P.shape[1]
    if (a0 < 0 or a1 + 1 > indptr.shape[0] or out.shape[0] < a1 or out.shape[1] < ld
            or ld % 8 != 0):
        raise IndexError(f"gather_rows: accounts [{a0}, {a1}) or buffers out of range")
    _check_positions("gather_rows", indptr, a1, inst, qty)
    cdef const int64_t *ip = _ip(inst)
    cdef const double *qp = _dp(qty)
    with nogil:
        dpm_gather_rows(a0, a1, &indptr[0], ip, qp, &P[0, 0], ld, &out[0, 0], out.shape[1])


def gather_select(const int64_t[::1] acc, const int64_t[::1] indptr, const int64_t[::1] inst,
                  const double[::1] qty, const double[:, ::1] P, double[:, ::1] out):
    """Scenario P&L of the listed accounts ``acc`` (indices into ``indptr``) into the rows of ``out``
    (len(acc) x ld at least; P is M x ld, ld a multiple of 8). The callers pass account indices
    of the book and instrument ids of P's table: checked here only where a read would leave the
    arrays."""
    cdef Py_ssize_t n = acc.shape[0], ld = P.shape[1], N = indptr.shape[0] - 1
    if n == 0:
        return
    if out.shape[0] < n or out.shape[1] < ld or ld % 8 != 0 or N < 0:
        raise IndexError("gather_select: buffers out of range")
    cdef Py_ssize_t i
    for i in range(n):
        if acc[i] < 0 or acc[i] >= N:
            raise IndexError(f"gather_select: account {acc[i]} out of range")
    _check_positions("gather_select", indptr, N, inst, qty)
    cdef const int64_t *ip = _ip(inst)
    cdef const double *qp = _dp(qty)
    with nogil:
        dpm_gather_select(&acc[0], n, &indptr[0], ip, qp, &P[0, 0], ld, &out[0, 0], out.shape[1])


def gather_own(const int64_t[::1] acc, const int64_t[::1] col, const int64_t[::1] indptr,
               const int64_t[::1] inst, const int64_t[::1] imap, const double[::1] qty,
               const double[:, ::1] Pt, double[::1] out):
    """``out[i]``: P&L of account ``acc[i]`` in scenario ``col[i]`` (row of ``Pt``, scenarios x
    sub-table instruments; ``imap`` maps the book's instrument ids to its columns, -1 outside it,
    which gives NaN)."""
    cdef Py_ssize_t n = acc.shape[0], N = indptr.shape[0] - 1, i
    if n == 0:
        return
    if Pt.shape[0] == 0 or Pt.shape[1] == 0:
        raise IndexError("gather_own: empty scenario matrix")
    if col.shape[0] != n or out.shape[0] < n or N < 0:
        raise IndexError("gather_own: buffers out of range")
    for i in range(n):
        if acc[i] < 0 or acc[i] >= N or col[i] < 0 or col[i] >= Pt.shape[0]:
            raise IndexError(f"gather_own: account {acc[i]} or scenario {col[i]} out of range")
    _check_positions("gather_own", indptr, N, inst, qty)
    cdef const int64_t *ip = _ip(inst)
    cdef const double *qp = _dp(qty)
    cdef const int64_t *mp = _ip(imap)
    with nogil:
        dpm_gather_own(&acc[0], &col[0], n, &indptr[0], ip, mp, imap.shape[0], qp, &Pt[0, 0], Pt.shape[1],
                       &out[0])
