/*
 * Types and codes shared by every kernel and mirrored in Python (tests/test_core_types.py pins the
 * mirrors: dpm.market.specs.Kind, dpm.engines.plan and dpm.models.scenarios constants).
 */
#ifndef DPM_TYPES_H
#define DPM_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifndef DPM_INDEX_DEFINED
#define DPM_INDEX_DEFINED
typedef ptrdiff_t dpm_index;
#endif

/* instrument kinds (int8), as dpm.market.specs.Kind */
enum { DPM_SPOT = 0, DPM_FUTURE = 1, DPM_PERPETUAL = 2, DPM_OPTION = 3 };

/* conversion of an instrument's native P&L (coin for inverse, quote for linear) into the plan's
 * currency, per scenario (int8, dpm.engines.plan.CONV_*) */
enum { DPM_CONV_NONE = 0, DPM_CONV_MUL_PRICE = 1, DPM_CONV_DIV_PRICE = 2 };

/* how a scenario's vol shock v moves an instrument's vol s (int8 per instrument,
 * dpm.models.scenarios.VOL_RELATIVE / VOL_ABSOLUTE):
 *   relative: s * max(0, 1 + c v), raised to min_vol_up when v > 0 (c = term-structure factor)
 *   absolute: max(0, s + v)                                                                     */
enum { DPM_VOL_RELATIVE = 0, DPM_VOL_ABSOLUTE = 1 };

/* scenario flags (uint8 bit mask, dpm.models.scenarios.FLAG_*) */
enum { DPM_FLAG_EXTENDED = 1, DPM_FLAG_EXTREME = 2, DPM_FLAG_DAMPENED = 4, DPM_FLAG_PADDING = 8 };

/* how per-underlying scenario vectors combine into one account figure (dpm.models.risk_matrix) */
enum {
    DPM_AGG_SUM = 0,        /* sum of per-underlying charges: no offsets across underlyings */
    DPM_AGG_SQRT_CORR = 1,  /* sqrt(L' C L) of per-underlying charges: conservative, direction-blind */
    DPM_AGG_JOINT = 2,      /* worst correlation-weighted joint scenario: hedges across underlyings count */
    DPM_AGG_PNL_OFFSET = 3, /* Deribit X:PM: aligned vectors, gains count at pnl_offset */
    DPM_AGG_SPREAD = 4      /* SPAN-style inter-commodity spread credits on opposite deltas */
};

/* the add-on inputs of one instrument packed together: the gather reads one record per position */
typedef struct {
    double delta, som, notional, value;
    int32_t und, bucket;
} dpm_inst_info;

#endif /* DPM_TYPES_H */
