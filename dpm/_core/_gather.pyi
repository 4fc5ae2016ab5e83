from typing import Any

import numpy as np

class AggregationPlan:
    n_underlyings: int
    n_scenarios: int
    n_instruments: int
    state_size: int
    scratch_size: int
    def __init__(self, *, S: int, pnl: np.ndarray, inst_und: np.ndarray, inst_bucket: np.ndarray,
                 inst_delta: np.ndarray, inst_som: np.ndarray, inst_notional: np.ndarray,
                 inst_value: np.ndarray, weight: np.ndarray, damp: np.ndarray, bucket_ptr: np.ndarray,
                 bucket_rate: np.ndarray, und_price: np.ndarray, to_risk: np.ndarray, risk_to_usd: np.ndarray,
                 ds_threshold: np.ndarray, ds_m_inc: np.ndarray, ds_max: np.ndarray, size_rate: np.ndarray,
                 tier_bound: np.ndarray, tier_mult: np.ndarray, scan_round: float, agg: int, corr: np.ndarray,
                 grp: np.ndarray, ngrp: np.ndarray, pair_off: np.ndarray, ctab: np.ndarray, gz: np.ndarray,
                 mask_off: np.ndarray, qsub: np.ndarray, offset: np.ndarray, max_offset: np.ndarray,
                 sp_leg: np.ndarray, sp_rate: np.ndarray, sp_ratio: np.ndarray, keep: Any) -> None: ...
    def account_state(self, inst: np.ndarray, qty: np.ndarray, state: np.ndarray) -> None: ...
    def margin_job(self, indptr: np.ndarray, inst: np.ndarray, qty: np.ndarray,
                   outs: tuple[np.ndarray, ...]) -> MarginJob: ...
    def finish(self, state: np.ndarray, outs: tuple[np.ndarray, ...]) -> None: ...

class MarginJob:
    def run(self, start: int, stop: int) -> None: ...

class WhatIf:
    def __init__(self, plan: AggregationPlan, state: np.ndarray) -> None: ...
    def total(self, inst: np.ndarray, qty: np.ndarray) -> tuple[float, float]: ...
    def total_one(self, inst: int, qty: float) -> tuple[float, float]: ...

def tail_rows(a0: int, a1: int, indptr: np.ndarray, inst: np.ndarray, qty: np.ndarray, P: np.ndarray,
              nsc: int, s_base: int, k: int, cval: np.ndarray, cidx: np.ndarray, cn: np.ndarray,
              thr: np.ndarray) -> None: ...
def tail_finish(a0: int, a1: int, k: int, cval: np.ndarray, cidx: np.ndarray, cn: np.ndarray) -> None: ...
def gather_rows(a0: int, a1: int, indptr: np.ndarray, inst: np.ndarray, qty: np.ndarray, P: np.ndarray,
                out: np.ndarray) -> None: ...
