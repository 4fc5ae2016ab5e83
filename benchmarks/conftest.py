"""pytest configuration of the benchmark suite (pytest-benchmark).

Run from the repository root::

    python -m pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json          # Markdown tables for docs/benchmarks.md

Benchmark modules are named ``bench_*.py`` so that ``python -m pytest`` (testpaths = tests) never
runs them; this conftest makes pytest collect them when ``benchmarks/`` is given explicitly.  Each
benchmark stores the number of items it processed in ``benchmark.extra_info["n"]`` (and a
``"unit"``, default ``"option"``) so that report.py can print ns per item, and the machine
description below goes into the JSON file.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess

import pytest


def pytest_collect_file(file_path, parent):
    # files named on the command line are collected by pytest itself
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def cpu_description() -> dict:
    """CPU model, core count and SIMD features of this machine (from lscpu on Linux)."""
    info = {"processor": platform.processor(), "machine": platform.machine()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["model"] = fields.get("Model name", "")
        info["cpus"] = fields.get("CPU(s)", "")
        flags = set(fields.get("Flags", "").split())
        info["simd"] = " ".join(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq")
                                if f in flags)
    except (OSError, subprocess.CalledProcessError):  # pragma: no cover - not Linux
        info["model"] = platform.processor()
    info["usable_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["libc"] = " ".join(platform.libc_ver())
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["dpm_cpu"] = cpu_description()
    machine_info["dpm_date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        from dpm._core import _black

        machine_info["dpm_libmvec"] = bool(_black.HAVE_LIBMVEC)
    except ImportError:  # pragma: no cover - extension not built
        machine_info["dpm_libmvec"] = None
    try:
        os.sched_getaffinity(0)
        machine_info["dpm_loadavg"] = os.getloadavg()
    except (AttributeError, OSError):  # pragma: no cover
        pass
