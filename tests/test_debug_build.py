"""The DPM_DEBUG=1 build really checks bounds (CI runs the whole suite once on it)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dpm._core import _black, _gather, _revalue


@pytest.mark.skipif(not _black.DEBUG_BUILD, reason="only meaningful on the DPM_DEBUG=1 build")
def test_out_of_range_slice_raises_in_debug_build() -> None:
    a = np.ones(4)
    out = np.empty(4)
    fix = np.empty(4, dtype=np.uint8)
    e = np.empty(0)
    with pytest.raises(IndexError):
        # start beyond the arrays: the optimised build would read past the buffers
        _black.price_chunk(a, a, a, a, a, e, e, 0, 0, out, fix, 6, 8)


def test_kernel_wrappers_check_row_ranges_in_every_build() -> None:
    M, U = 2, 1
    z8, zi8 = np.zeros(M, np.int8), np.zeros(M, np.uint8)
    with pytest.raises(ValueError):
        _revalue.revalue(0, M + 5, 0, 3, z8, zi8, z8, np.zeros(M, np.int32), np.ones(M), np.ones(M), np.ones(M),
                         np.zeros(M), np.ones(M), np.zeros(M), np.ones(M), z8, np.ones(U), np.zeros(U),
                         np.zeros((U, 11)), np.zeros((U, 11)), 0.0, None, np.zeros((1, M, 8)))
    with pytest.raises(IndexError):
        _gather.gather_rows(0, 3, np.array([0, 1], np.int64), np.zeros(1, np.int64), np.ones(1),
                            np.zeros((M, 8)), np.zeros((1, 8)))


def test_build_flags_are_reported() -> None:
    assert isinstance(_black.DEBUG_BUILD, bool)
    assert isinstance(_black.HAVE_LIBMVEC, bool)


_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(not (_black.DEBUG_BUILD and _ASAN), reason="needs the DPM_DEBUG=1 DPM_SANITIZE=1 build under ASan")
def test_sanitizer_catches_out_of_bounds_reads_in_c_kernels() -> None:
    # bypass every Python-level check and hand the aggregation kernel an instrument id one past the
    # end of the P&L matrix: the sanitized build must abort loudly instead of reading garbage
    code = textwrap.dedent(
        """
        import numpy as np
        from dpm.engines.margin import MarginEngine
        from dpm.market.sample import default_instruments
        from dpm.market.sample import default_market
        e = MarginEngine(default_market(), default_instruments(), workers=1)
        agg = e._plan.agg
        state = np.empty(agg.state_size)
        M = len(e.instruments)
        agg.account_state(np.array([M], dtype=np.int64), np.array([1.0]), state)
        print("no error")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "AddressSanitizer" in proc.stderr
