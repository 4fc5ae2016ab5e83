# cython: language_level=3
# C-level API of the scenario revaluation and account aggregation kernels (risk_kernels.h).
from libc.stdint cimport int8_t, uint8_t, int32_t, int64_t
from dpm._core._black cimport dpm_index

cdef extern from "risk_kernels.h" nogil:
    void dpm_revalue_rows(dpm_index start, dpm_index stop, dpm_index S, dpm_index Sp,
                          const int8_t *kind, const uint8_t *inverse, const int8_t *conv,
                          const int32_t *und, const double *F, const double *K,
                          const double *cp, const double *T, const double *cs,
                          const double *vol_cols, dpm_index V, const double *move,
                          const int32_t *volcol, const double *price, const double *base_price,
                          double dt, double *base, double *out) noexcept

    ctypedef struct dpm_inst_info:
        double delta, som, notional, value
        int32_t und, bucket

    ctypedef struct dpm_agg_params:
        dpm_index S, Sp, U, NB, NT
        const double *pnl
        const dpm_inst_info *info
        int und_sorted
        int wide
        const int32_t *inst_und
        const int32_t *inst_bucket
        const double *inst_delta
        const double *inst_som
        const double *inst_notional
        const double *inst_value
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
        const double *corr

    ctypedef struct dpm_agg_out:
        double *total
        double *value
        double *L
        double *scan
        int32_t *worst
        double *roll
        double *dshock
        double *floor

    int dpm_cpu_wide() noexcept
    dpm_index dpm_state_size(const dpm_agg_params *p) noexcept
    void dpm_state_clear(const dpm_agg_params *p, double *st) noexcept
    void dpm_state_add(const dpm_agg_params *p, double *st, int64_t i, double q) noexcept
    void dpm_state_finish(const dpm_agg_params *p, const double *st, const dpm_agg_out *o,
                          dpm_index a) noexcept
    void dpm_margin_rows(const dpm_agg_params *p, dpm_index start, dpm_index stop,
                         const int64_t *indptr, const int64_t *inst, const double *qty,
                         double *scratch, const dpm_agg_out *o) noexcept
    void dpm_what_if(const dpm_agg_params *p, const double *st, const int64_t *inst,
                     const double *qty, int64_t n, double *work, const dpm_agg_out *o) noexcept
    void dpm_account_state(const dpm_agg_params *p, const int64_t *inst, const double *qty,
                           int64_t n, double *st) noexcept
