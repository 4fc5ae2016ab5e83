"""margin_many of this tree against an earlier revision, in the same run (alternating processes).

Usage::

    python benchmarks/compare_revisions.py [REVISION] [--accounts 100000] [--rounds 3]

Builds ``REVISION`` (default: the last commit before the one-pipeline rewrite) into a temporary git
worktree, then times ``MarginEngine.margin_many`` on the same generated book (bundled listing and
market, ``generate_accounts(N, seed=0)``) in fresh processes, alternating old and new tree
``--rounds`` times so that machine load affects both alike; best of 7 calls per process, 1 and 2
workers. Both trees are imported through the dpm 0.1 module paths, which the new tree keeps.
Prints a Markdown table (median over rounds of the per-process best).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REV = "8b5acd8"

TIMER = r'''
import json, sys, time
import numpy as np
from dpm.engine import MarginEngine
from dpm.sample import default_instruments, generate_accounts
from dpm.sample_market import default_market
from dpm.models import dpm_default, deribit_pm
n = int(sys.argv[1]); cases = json.loads(sys.argv[2])
table, market = default_instruments(), default_market()
book = generate_accounts(n, table, seed=0)
out = {}
for name, expr in cases.items():
    try:
        model = eval(expr)
    except TypeError:      # an option the old tree does not have
        continue
    engine = MarginEngine(market, table, model)
    for w in (1, 2):
        engine.margin_many(book, workers=w)
        best = min((lambda t0: (engine.margin_many(book, workers=w), time.perf_counter() - t0)[1])(time.perf_counter())
                   for _ in range(7))
        out[f"{name} | {w}"] = best
print(json.dumps(out))
'''

CASES = {
    "sqrt_corr": "dpm_default(0.8, aggregation='sqrt_corr')",   # new tree only
    "default": "dpm_default(0.8)",                               # old: sqrt(L'CL); new: joint
    "deribit": "deribit_pm('coin')",
}
#: table rows: (label, case timed in the old tree, case timed in this tree)
ROWS = [
    ("dpm_default, sqrt(L'CL) (the old default's computation)", "default", "sqrt_corr"),
    ("dpm_default, joint (the new default) vs the old default", "default", "default"),
    ("deribit_pm (coin, per currency)", "deribit", "deribit"),
]


def _build(rev: str, where: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=where, check=True,
                   capture_output=True)


def _time(tree: Path, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run([sys.executable, "-c", TIMER, str(n), json.dumps(CASES)], cwd=tree, env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("revision", nargs="?", default=DEFAULT_REV)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        _build(args.revision, old)
        try:
            runs: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
            for _ in range(args.rounds):
                for label, tree in (("old", old), ("new", ROOT)):
                    for k, v in _time(tree, args.accounts).items():
                        runs[label].setdefault(k, []).append(v)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           capture_output=True)
    print(f"margin_many, {args.accounts:,} generated accounts, ms (median of {args.rounds} rounds of best-of-7)\n")
    print(f"| model | workers | {args.revision} | this tree | ratio |")
    print("|---|---:|---:|---:|---:|")
    for label, old_case, new_case in ROWS:
        for w in (1, 2):
            o = statistics.median(runs["old"][f"{old_case} | {w}"]) * 1e3
            n = statistics.median(runs["new"][f"{new_case} | {w}"]) * 1e3
            print(f"| {label} | {w} | {o:.1f} | {n:.1f} | {n / o:.2f} |")


if __name__ == "__main__":
    main()
