"""Fuzz suite hooks: write the per-target counts when ``DPM_FUZZ_STATS`` names a file."""
from __future__ import annotations

import os


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("DPM_FUZZ_STATS")
    if path:
        from fuzz_harness import write_stats

        write_stats(path)
