"""The service-floor probe (benchmarks/probe_service_floor.py) runs end to end: it starts each echo
server in its own process on 127.0.0.1, measures a few round trips and stops the server."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grpc")
# benchmark tooling with no dpm code on its path: the main suite runs it, the sanitizer build skips it
pytestmark = pytest.mark.slow

PROBE = Path(__file__).resolve().parents[1] / "benchmarks" / "probe_service_floor.py"


def _probe():
    spec = importlib.util.spec_from_file_location("probe_service_floor", PROBE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("kind", ["tcp", "grpc-sync", "grpc-aio"])
def test_each_echo_server_answers_and_stops(kind):
    r = _probe().measure(kind, calls=30, warmup=5)
    assert r["n"] == 30
    assert 0 < r["p50"] <= r["p99"] <= r["p99.9"]


def test_the_probe_prints_a_table():
    out = subprocess.run([sys.executable, str(PROBE), "--calls", "20", "--rounds", "1"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "µs" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["tcp", "grpc-sync", "grpc-aio"]
