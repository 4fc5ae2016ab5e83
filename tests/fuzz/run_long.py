"""Run the fuzz suite's long profile and print what it found.

Usage (from the repository root; run it at low priority, it takes about an hour)::

    nice -n 19 python tests/fuzz/run_long.py                  # the long profile: > 1,000,000 inputs
    nice -n 19 python tests/fuzz/run_long.py --scale 0.1      # a tenth of it
    python tests/fuzz/run_long.py --minutes 90 -k readers     # bounded time, only the reader targets

It runs ``pytest tests/fuzz`` with ``HYPOTHESIS_PROFILE=long`` and prints, per target, the inputs
tried, how many gave a result and how many a dpm error, and the crashes (another exception, or a
dpm error that names no field), hangs (a call past the watchdog) and wrong numbers (a changed
input, a failed round trip or invariant). A target stops at its first failure: hypothesis then
shrinks the input and pytest prints it. The exit status is pytest's (0 when nothing was found).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every target's long input count")
    p.add_argument("--variants", type=int, default=12, help="byte-level variants per generated file")
    p.add_argument("--minutes", type=float, default=120.0, help="stop the run after this many minutes")
    p.add_argument("--hang-seconds", type=float, default=30.0, help="a call slower than this is a hang")
    p.add_argument("-k", default="", help="pytest -k expression selecting targets")
    p.add_argument("--stats", default="", help="also keep the JSON statistics in this file")
    args = p.parse_args(argv)

    stats = Path(args.stats) if args.stats else Path(tempfile.mkstemp(suffix=".json")[1])
    env = dict(os.environ, HYPOTHESIS_PROFILE="long", DPM_FUZZ_SCALE=str(args.scale),
               DPM_FUZZ_VARIANTS=str(args.variants), DPM_FUZZ_HANG_SECONDS=str(args.hang_seconds),
               DPM_FUZZ_STATS=str(stats), PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                                 os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE)]
    if args.k:
        cmd += ["-k", args.k]
    t0 = time.monotonic()
    try:
        status = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.minutes * 60).returncode
        stopped = ""
    except subprocess.TimeoutExpired:
        status, stopped = 1, f" (stopped by the {args.minutes:g}-minute bound)"
    elapsed = time.monotonic() - t0
    try:
        data = json.loads(stats.read_text())
    except (OSError, ValueError):
        print("no statistics were written")
        return status or 1
    print(report(data, elapsed, stopped))
    return status


def report(data: dict, elapsed: float, stopped: str = "") -> str:
    cols = ["tried", "ok", "dpm_error", "crash", "hang", "wrong"]
    rows = [[t] + [str(c.get(k, 0)) for k in cols] + [f"{c.get('seconds', 0.0):.0f}"]
            for t, c in data["targets"].items()]
    total = [sum(c.get(k, 0) for c in data["targets"].values()) for k in cols]
    rows.append(["total"] + [f"{v:,}" for v in total] + [f"{elapsed:.0f}"])
    header = ["target", "inputs tried", "result", "dpm error", "crashes", "hangs", "wrong numbers", "seconds"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = [f"fuzz profile {data['profile']} (scale {data['scale']:g}){stopped}",
             "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    for t, c in data["targets"].items():
        for f in c.get("failures", []):
            lines.append(f"{t}: {f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
