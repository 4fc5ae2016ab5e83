"""End to end: fresh ``python -m dpm`` processes on real-size books, with pyarrow-only references.

    python benchmarks/bench_end_to_end.py                       # 100,000 accounts (3.8 M positions)
    python benchmarks/bench_end_to_end.py --accounts 10000 --repeat 5 --json e2e.json

What it does:

1. **Prepares the files once** (kept in ``--workdir``, default ``.bench-e2e/`` in the current
   directory, and reused while the account count and seed match): the generated book of
   ``--accounts`` accounts (``generate_accounts``, seed 0) as positions + collateral in CSV, Parquet
   and Arrow IPC.
2. **Times fresh processes**, each case ``--repeat`` times, in rotation (case 1, 2, ..., then again)
   so that a burst of load from other processes on a shared machine does not hit one case only:
   wall time from ``subprocess`` start to exit, the CPU time of the child (user + sys, from
   ``getrusage``), peak memory (max RSS), and the phases ``python -m dpm --timings`` prints
   (``startup`` = from importing ``dpm.cli`` to the subcommand; the interpreter start, ``numpy`` and
   the other imports before it are the wall time minus the phases).
3. **References in the same run**: ``python -c pass`` (interpreter), ``import numpy``, ``import
   pyarrow``, and the pyarrow-only floor of reading a book: read the positions file, dictionary-encode
   account ids and instrument names, and take the codes and quantities as numpy arrays (Parquet and
   CSV), in a fresh process too, with pandas unimportable as in dpm's own run (pyarrow would import
   it to look for pandas objects, 0.5 s here). ``machine``: SHA-256 of two 16 MB buffers on 1 and 2 threads (C code
   that releases the GIL), the parallel ceiling of the machine at the time of the run.

The children run with bytecode caching on (``PYTHONDONTWRITEBYTECODE`` removed and one warm-up run),
as an installed package does. Reported: the best and the median of the repeats; the JSON output has
every sample. The system load average and the share of CPU time other processes took during the run
(from ``/proc/stat``) are printed and stored, since on a shared machine they explain the spread.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def prepare(workdir: Path, n: int) -> dict[str, Path]:
    """Write the book once (CSV, Parquet, Arrow); reuse it when the stamp matches."""
    stamp = workdir / "stamp.json"
    files = {fmt: workdir / f"book.{fmt}" for fmt in ("csv", "parquet", "arrow")}
    want = {"accounts": n, "seed": 0}
    if stamp.exists() and json.loads(stamp.read_text()) == want and all(p.exists() for p in files.values()):
        return files
    workdir.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys\n"
        "from dpm.portfolio.sample import generate_accounts\n"
        "from dpm.portfolio.io import write_accounts\n"
        f"book = generate_accounts({n}, seed=0)\n"
        "for p in sys.argv[1:]:\n"
        "    write_accounts(book, p)\n"
    )
    subprocess.run([sys.executable, "-c", code, *map(str, files.values())], check=True, env=_env())
    stamp.write_text(json.dumps(want))
    return files


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def run_once(argv: list[str], cwd: Path) -> dict:
    busy0, tot0 = _cpu_busy()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    streams: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: streams.__setitem__(k, f.read()))
               for k, f in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    # wait4, not wait: the child's own CPU time and peak memory (getrusage of all children keeps the max)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    stdout, stderr = streams["out"], streams["err"]
    busy1, tot1 = _cpu_busy()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    phases = {}
    for line in stderr.splitlines():
        if line.startswith("timings: "):
            for part in line[len("timings: "):].split(" (")[0].split(", "):
                name, value, _ = part.rsplit(" ", 2)
                phases[name] = float(value) / 1e3
    ncpu = os.cpu_count() or 1
    machine_busy = (busy1 - busy0) / max(tot1 - tot0, 1)  # share of all CPUs busy during the run
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, machine_busy - cpu / max(wall * ncpu, 1e-9))
    return {"wall": wall, "cpu": cpu, "maxrss_mb": usage.ru_maxrss / 1024, "phases": phases,
            "other_processes_cpu_share": others, "stdout_tail": stdout[-300:]}


def wait_for_idle(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (up to ``limit_s``) until other processes use under ``threshold`` of the CPUs for a second;
    returns their share at the end (on a shared machine, a quiet moment makes the 2-core figures mean
    something)."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, t0 = _cpu_busy()
        time.sleep(1.0)
        b1, t1 = _cpu_busy()
        share = (b1 - b0) / max(t1 - t0, 1)
        if share < threshold or time.monotonic() >= deadline:
            return share
        time.sleep(4.0)


def machine_ceiling() -> dict:
    """SHA-256 of two 16 MB buffers on 1 thread, then on 2 threads (GIL released): the speed-up ceiling."""
    bufs = [os.urandom(16 << 20) for _ in range(2)]
    t0 = time.perf_counter()
    for b in bufs:
        hashlib.sha256(b).digest()
    one = time.perf_counter() - t0
    threads = [threading.Thread(target=lambda b=b: hashlib.sha256(b).digest()) for b in bufs]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    two = time.perf_counter() - t0
    return {"one_thread_s": one, "two_threads_s": two, "speedup": one / two}


READ_REFERENCE = """
import sys, time


class NoPandas:  # pyarrow without pandas, as dpm's command-line tool runs it (it would import it: 0.5 s)
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(name=name)


sys.meta_path.insert(0, NoPandas())
t0 = time.perf_counter()
import numpy as np, pyarrow as pa, pyarrow.compute as pc
fmt, path = sys.argv[1], sys.argv[2]
t1 = time.perf_counter()
if fmt == "parquet":
    import pyarrow.parquet as pq
    table = pq.read_table(path, read_dictionary=["account_id", "instrument"])
elif fmt == "arrow":
    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
else:
    import pyarrow.csv as pacsv
    d = pa.dictionary(pa.int32(), pa.string())
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={"account_id": d, "instrument": d, "quantity": pa.float64()}))
t2 = time.perf_counter()
table = table.unify_dictionaries()
out = []
for name in ("account_id", "instrument"):
    col = table.column(name)
    col = col if pa.types.is_dictionary(col.type) else col.dictionary_encode()
    out.append(np.concatenate([c.indices.to_numpy() for c in col.chunks]))
qty = table.column("quantity").to_numpy()
t3 = time.perf_counter()
print(f"timings: imports {1e3*(t1-t0):.1f} ms, read {1e3*(t2-t1):.1f} ms, arrays {1e3*(t3-t2):.1f} ms "
      f"(rows {len(qty)})", file=sys.stderr)
"""


def cases(files: dict[str, Path], n: int, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    dpm = [py, "-m", "dpm"]
    return {
        "python -c pass": [py, "-c", "pass"],
        "import numpy": [py, "-c", "import numpy"],
        "import pyarrow": [py, "-c", "import pyarrow, pyarrow.parquet"],
        "import dpm.engines.margin": [py, "-c", "import dpm.engines.margin"],
        "python -m dpm --help": [*dpm, "--help"],
        f"generated {n:,} (print only)": [*dpm, "--accounts", str(n), "--top", "10", "--timings"],
        f"generated {n:,} -> results.parquet": [*dpm, "--accounts", str(n), "--timings",
                                                "--out", str(out / "res.parquet")],
        f"generated {n:,} -> results.arrow": [*dpm, "--accounts", str(n), "--timings", "--out", str(out / "res.arrow")],
        f"generated {n:,} -> results.csv": [*dpm, "--accounts", str(n), "--timings", "--out", str(out / "res.csv")],
        "book.parquet -> results.parquet": [*dpm, "--accounts-file", str(files["parquet"]), "--timings",
                                            "--out", str(out / "res.parquet")],
        "book.arrow -> results.arrow": [*dpm, "--accounts-file", str(files["arrow"]), "--timings",
                                        "--out", str(out / "res.arrow")],
        "book.csv -> results.csv": [*dpm, "--accounts-file", str(files["csv"]), "--timings",
                                    "--out", str(out / "res.csv")],
        "book.csv -> results.parquet": [*dpm, "--accounts-file", str(files["csv"]), "--timings",
                                        "--out", str(out / "res.parquet")],
        "reference: pyarrow read book.parquet": [py, "-c", READ_REFERENCE, "parquet", str(files["parquet"])],
        "reference: pyarrow read book.arrow": [py, "-c", READ_REFERENCE, "arrow", str(files["arrow"])],
        "reference: pyarrow read book.csv": [py, "-c", READ_REFERENCE, "csv", str(files["csv"])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=".bench-e2e")
    ap.add_argument("--only", action="append", default=[], help="run the cases whose name contains this text")
    ap.add_argument("--json", help="write every sample to this file")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each round, wait up to this long for the other processes to go quiet")
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    files = prepare(workdir, args.accounts)
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    todo = cases(files, args.accounts, out)
    if args.only:
        todo = {k: v for k, v in todo.items() if any(s in k for s in args.only)}
    for argv in todo.values():  # warm-up: bytecode caches, page cache
        run_once(argv, workdir)
    if args.wait_idle:
        wait_for_idle(args.wait_idle)
    ceiling = [machine_ceiling() for _ in range(3)]
    samples: dict[str, list[dict]] = {k: [] for k in todo}
    load0 = os.getloadavg()
    quiet = []
    for _ in range(args.repeat):
        if args.wait_idle:
            quiet.append(wait_for_idle(args.wait_idle))
        for name, argv in todo.items():
            samples[name].append(run_once(argv, workdir))
    load1 = os.getloadavg()
    speedups = ", ".join(f"{c['speedup']:.2f}" for c in ceiling)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average "
          f"{load0[0]:.2f} -> {load1[0]:.2f}; SHA-256 2-thread speed-up now {speedups}")
    print(f"{'case':42s} {'best s':>7s} {'median s':>8s} {'cpu s':>6s} {'RSS MB':>7s} {'others':>6s}  phases "
          "(best run, ms)")
    for name, runs in samples.items():
        best = min(runs, key=lambda r: r["wall"])
        med = statistics.median(r["wall"] for r in runs)
        ph = ", ".join(f"{k} {1e3 * v:.0f}" for k, v in best["phases"].items())
        if best["phases"]:
            ph = f"before cli {1e3 * (best['wall'] - sum(best['phases'].values())):.0f}, " + ph
        print(f"{name:42s} {best['wall']:7.3f} {med:8.3f} {best['cpu']:6.2f} {best['maxrss_mb']:7.0f} "
              f"{best['other_processes_cpu_share']:6.0%}  {ph}")
    if args.json:
        Path(args.json).write_text(json.dumps({"accounts": args.accounts, "repeat": args.repeat, "ceiling": ceiling,
                                               "load": [load0, load1], "busy_before_rounds": quiet,
                                               "samples": samples}, indent=1))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
