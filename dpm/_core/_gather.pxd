# cython: language_level=3
# C-level declarations of the gather kernels (implemented once, in gather.h). _gather.pyx binds
# them for Python; the GIL-free pre-trade check path (_checkpath.pyx) cimports the what-if and
# account-state kernels from here, so both run the same code on the same plan.
from libc.stdint cimport int32_t, int64_t
from dpm._core._black cimport dpm_index

cdef extern from "gather.h" nogil:
    ctypedef struct dpm_inst_info:
        double delta, som, notional, value
        int32_t und, bucket

    ctypedef struct dpm_agg_params:
        dpm_index S, Sp, U, NB, NT, M
        dpm_index S_scan
        const double *pnl
        const double *pnl_blk
        dpm_index group
        const dpm_inst_info *info
        int und_sorted
        int wide
        const double *weight
        const double *damp
        const int64_t *bucket_ptr
        const double *bucket_rate
        const double *und_price
        const double *to_risk
        const double *risk_to_usd
        const double *ds_threshold
        const double *ds_m_inc
        const double *ds_max
        const double *size_rate
        const double *tier_bound
        const double *tier_mult
        double scan_round
        int agg
        const double *corr
        dpm_index G
        const int32_t *grp
        const int32_t *ngrp
        const int64_t *pair_off
        const double *ctab
        const double *gz
        const int64_t *mask_off
        const double *qsub
        const double *offset
        const double *max_offset
        dpm_index NSP
        const int32_t *sp_leg
        const double *sp_rate
        const double *sp_ratio

    ctypedef struct dpm_agg_out:
        double *total
        double *value
        double *L
        double *scan
        int32_t *worst
        double *roll
        double *dshock
        double *floor
        double *joint

    int dpm_cpu_wide() noexcept
    const char *DPM_PARAMS_CAPSULE
    void dpm_out_layout(double *outs, dpm_index U, dpm_agg_out *o) noexcept
    dpm_index dpm_state_size(const dpm_agg_params *p) noexcept
    dpm_index dpm_finish_scratch_size(const dpm_agg_params *p) noexcept
    dpm_index dpm_margin_scratch_size(const dpm_agg_params *p, dpm_index n) noexcept
    void dpm_block_copy(const double *P, dpm_index M, dpm_index Sp, int wide, double *out) noexcept
    dpm_index dpm_block_width(dpm_index Sp, dpm_index s0, int wide) noexcept
    void dpm_state_finish(const dpm_agg_params *p, const double *st, const dpm_agg_out *o,
                          dpm_index a, double *fs) noexcept
    void dpm_finish_one(const dpm_agg_params *p, const double *st, const dpm_agg_out *o, double *fs) noexcept
    void dpm_margin_rows(const dpm_agg_params *p, dpm_index start, dpm_index stop,
                         const int64_t *indptr, const int64_t *inst, const double *qty,
                         double *scratch, const dpm_agg_out *o) noexcept
    int64_t dpm_next_chunk(int64_t *counter) noexcept
    void dpm_what_if(const dpm_agg_params *p, const double *st, const int64_t *inst,
                     const double *qty, int64_t n, int held_known, const int64_t *held_ids,
                     const double *held_qty, int64_t n_held, double *work, const dpm_agg_out *o) noexcept
    void dpm_account_state(const dpm_agg_params *p, const int64_t *inst, const double *qty,
                           int64_t n, double *st) noexcept
    void dpm_tail_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                       const double *qty, const double *P, dpm_index nsc, dpm_index s_base,
                       dpm_index M, dpm_index B, dpm_index k, dpm_index cap, double *acc,
                       double *cval, int32_t *cidx, int32_t *cn, double *thr, double *sv,
                       int32_t *si) noexcept
    void dpm_tail_finish(dpm_index a0, dpm_index a1, dpm_index k, dpm_index cap, double *cval,
                         int32_t *cidx, int32_t *cn, double *sv, int32_t *si) noexcept
    void dpm_gather_rows(dpm_index a0, dpm_index a1, const int64_t *indptr, const int64_t *inst,
                         const double *qty, const double *P, dpm_index ld, double *out,
                         dpm_index ldo) noexcept
    void dpm_gather_select(const int64_t *acc, dpm_index n, const int64_t *indptr, const int64_t *inst,
                           const double *qty, const double *P, dpm_index ld, double *out,
                           dpm_index ldo) noexcept
    void dpm_gather_own(const int64_t *acc, const int64_t *col, dpm_index n, const int64_t *indptr,
                        const int64_t *inst, const int64_t *imap, dpm_index nmap, const double *qty,
                        const double *Pt, dpm_index ldt, double *out) noexcept
