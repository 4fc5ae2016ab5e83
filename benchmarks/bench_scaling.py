"""How the cost of margining grows: 10k, 100k and 1M accounts in one process, 10M on a local Dask cluster.

    python benchmarks/bench_scaling.py --sizes 10000,100000,1000000 --dask 10000000 --json scaling.json
    python benchmarks/bench_scaling.py --threads --sizes 100000,1000000      # the 2-worker analysis

**In one process** (each size in a fresh process, so peak memory is that size's): generate the book
(``generate_accounts``, seed 0), build the engine (``dpm_default``), then ``margin_many`` at 1 and 2
workers, alternating, ``--repeat`` times. Reported per size: the best wall time of ``margin_many``,
per position and per account, the CPU time of the call (all threads) and the peak memory: the
process's peak RSS after the book is built and after margining (``ru_maxrss``), and the bytes
``margin_many`` itself allocates (``tracemalloc`` peak during the call: numpy's outputs are tracked).

``--threads`` splits ``margin_many`` into its parts at 1 and 2 workers: the gather kernel over the
pool (``run_chunked``), with fresh outputs and with outputs already written once (the first write
of a fresh page costs a page fault), and the numpy passes around it (book check, collateral value,
the finish — IM/MM/equity/ratio and the finite-results check —, result assembly), with the CPU time of the kernel's threads (``thread_time``)
next to the wall time. The SHA-256 ceiling (two 16 MB buffers, 1 vs 2 threads) is measured in the
same run: on a shared machine it tells how much of the second core was there.

**On a local Dask cluster** (``--dask N``): a partitioned book of ``N`` accounts written once as
Parquet (``write_generated_partitions``, ``--partition`` accounts per file; kept in ``--workdir``),
then ``margin_partitions`` on a ``LocalCluster`` of ``--cluster-workers`` processes x 1 thread, results
written as partitioned Parquet. Reported: cluster start-up, sending the engine inputs, the run's
wall time, accounts per second, the per-partition overhead (workers x wall - the tasks' own time,
per partition), the slowest task's phases, and the peak RSS of the worker processes (memory is
bounded by the partition size, not the book's).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import machine_ceiling  # noqa: E402

ONE_SIZE = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
from dpm._util import parallel as P
from dpm.engines import margin as M
from dpm.market.sample import default_instruments, default_market
from dpm.portfolio.sample import generate_accounts
n, repeat, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
table = default_instruments()
t0 = time.perf_counter(); book = generate_accounts(n, table, seed=0); gen = time.perf_counter() - t0
rss_book = rss()
engine = M.MarginEngine(default_market(), table)
engine.margin_many(book.subset(np.arange(min(n, 1000))))
out = {"accounts": n, "positions": book.n_positions, "generate_s": gen, "rss_book_mb": rss_book, "margin": {}}
for w in (1, 2) * repeat:
    c0 = time.process_time(); t0 = time.perf_counter()
    engine.margin_many(book, workers=w)
    out["margin"].setdefault(str(w), []).append({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0})
tracemalloc.start()
engine.margin_many(book, workers=2)
out["margin_alloc_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
tracemalloc.stop()
out["rss_peak_mb"] = rss()
if threads:
    N, U = len(book), len(engine.underlyings)
    parts = {}
    def kernel(w, outs):
        job = engine._plan.agg.margin_job(book.indptr, book.instrument_idx, book.quantity, outs)
        cpu = []
        def run(s, e):
            c = time.thread_time(); job.run(s, e); cpu.append(time.thread_time() - c)
        t0 = time.perf_counter(); P.run_chunked(run, N, w, min_chunk=256, chunks_per_worker=4)
        return time.perf_counter() - t0, sum(cpu)
    for w in (1, 2) * repeat:
        fresh = kernel(w, M._result_arrays(N, U))
        reused_outs = M._result_arrays(N, U)
        for a in reused_outs:
            a.view(np.uint8).fill(0)  # pages faulted in before the timed call
        reused = kernel(w, reused_outs)
        parts.setdefault(str(w), []).append({"kernel_fresh": fresh, "kernel_prefaulted": reused})
    t0 = time.perf_counter(); engine._check_book(book); check = time.perf_counter() - t0
    outs = M._result_arrays(N, U); kernel(2, outs)
    total, value, joint, L, scan, worst, roll, dshock, floor = outs
    t0 = time.perf_counter(); coll = engine._collateral_usd(book); collateral = time.perf_counter() - t0
    # IM/MM/equity/ratio/excess and the finite check (in margin_many: per chunk, in the kernel's threads)
    t0 = time.perf_counter()
    fin = M._RowFinish(N, total, value, coll, engine.model.im_factor, engine.model.mm_factor)
    fin(0, N); fin.check(book)
    finish = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine._results(book.account_id, total, value, joint, coll, L, scan, worst, roll, dshock, floor, None, book,
                    fin.arrays)
    results = time.perf_counter() - t0
    t0 = time.perf_counter(); M._result_arrays(N, U); alloc = time.perf_counter() - t0
    out["threads"] = {"kernel": parts, "serial": {"check_book": check, "alloc_outputs": alloc,
                      "collateral": collateral, "finish": finish, "results": results}}
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ceiling() -> float:
    """The machine's 2-thread speed-up ceiling of the moment (see ``bench_end_to_end.machine_ceiling``)."""
    return machine_ceiling()["speedup"]


def one_size(n: int, repeat: int, threads: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", ONE_SIZE, str(n), str(repeat), "1" if threads else "0"],
                         env=_env(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


DASK_RUN = r"""
import json, sys, time
if __name__ == "__main__":
    from dpm.engines import distributed as D
    from dpm.market.sample import default_instruments, default_market
    book, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    table, market = default_instruments(), default_market()
    t0 = time.perf_counter()
    with D.cluster("local", n_workers=workers, threads_per_worker=1) as client:
        t1 = time.perf_counter()
        run = D.margin_partitions(book, market, table, out=out, client=client, threads=1)
        def peak(dask_worker=None):
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rss = client.run(peak)
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    tasks = [p.seconds for p in run.partitions]
    print(json.dumps({"startup_s": t1 - t0, "run_s": run.seconds, "setup_s": run.setup_seconds,
                      "teardown_s": t3 - t2, "accounts": run.accounts, "positions": run.positions,
                      "partitions": len(run.partitions), "tasks": tasks, "worker_rss_mb": rss,
                      "totals": run.totals}))
"""


def dask_size(n: int, per: int, workers: int, workdir: Path) -> dict:
    book = workdir / f"book-{n}-{per}"
    stamp = book / "complete"
    if not stamp.exists():
        code = ("import sys\nfrom dpm.portfolio.partitions import write_generated_partitions\n"
                "write_generated_partitions(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), seed=0)\n")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(book), str(n), str(per)], env=_env(), check=True)
        stamp.write_text(f"{time.perf_counter() - t0:.1f} s")
    out = workdir / f"results-{n}-{per}"
    proc = subprocess.run([sys.executable, "-c", DASK_RUN, str(book), str(out), str(workers)], env=_env(),
                          capture_output=True, text=True, check=True, cwd=workdir)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["write_book_s"] = stamp.read_text()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", action="store_true", help="the 2-worker analysis of margin_many")
    ap.add_argument("--dask", type=int, default=0, metavar="N", help="also N accounts on a local Dask cluster")
    ap.add_argument("--partition", type=int, default=100_000, metavar="ACCOUNTS")
    ap.add_argument("--cluster-workers", type=int, default=2)
    ap.add_argument("--workdir", default=".bench-scaling")
    ap.add_argument("--json")
    args = ap.parse_args()
    report: dict = {"ceiling_before": [ceiling() for _ in range(3)], "sizes": [], "load": [os.getloadavg()[0]]}
    for n in [int(x) for x in args.sizes.split(",") if x]:
        r = one_size(n, args.repeat, args.threads)
        report["sizes"].append(r)
        p, a = r["positions"], r["accounts"]
        for w in ("1", "2"):
            best = min(x["wall"] for x in r["margin"][w])
            cpu = statistics.median(x["cpu"] for x in r["margin"][w])
            print(f"{a:>10,} accounts {p:>12,} positions  workers {w}: margin_many {best:8.3f} s  "
                  f"{1e9 * best / p:6.1f} ns/position  {1e6 * best / a:7.2f} us/account  cpu {cpu:7.3f} s")
        print(f"{'':>35} generate {r['generate_s']:.2f} s; peak RSS {r['rss_book_mb']:.0f} MB with the book, "
              f"{r['rss_peak_mb']:.0f} MB after margining; margin_many allocates {r['margin_alloc_mb']:.1f} MB")
        if args.threads:
            for w, runs in r["threads"]["kernel"].items():
                fresh = min(x["kernel_fresh"][0] for x in runs)
                pre = min(x["kernel_prefaulted"][0] for x in runs)
                cpu = statistics.median(x["kernel_fresh"][1] for x in runs)
                print(f"{'':>35} kernel, {w} worker(s): fresh outputs {fresh:.3f} s, prefaulted {pre:.3f} s, "
                      f"thread CPU {cpu:.3f} s")
            print(f"{'':>35} serial parts: " + ", ".join(f"{k} {1e3 * v:.1f} ms"
                                                          for k, v in r["threads"]["serial"].items()))
    if args.dask:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(exist_ok=True)
        r = dask_size(args.dask, args.partition, args.cluster_workers, workdir)
        report["dask"] = r
        task_sum = sum(t["task"] for t in r["tasks"])
        overhead = (args.cluster_workers * r["run_s"] - task_sum) / r["partitions"]
        slow = max(r["tasks"], key=lambda t: t["task"])
        print(f"Dask LocalCluster {args.cluster_workers} x 1 thread: {r['accounts']:,} accounts, {r['positions']:,} "
              f"positions in {r['partitions']} partitions: start-up {r['startup_s']:.1f} s, inputs to workers "
              f"{1e3 * r['setup_s']:.0f} ms, run {r['run_s']:.1f} s ({r['accounts'] / r['run_s']:,.0f} accounts/s; "
              f"{1e9 * r['run_s'] / r['positions']:.1f} ns/position wall), teardown {r['teardown_s']:.1f} s")
        print(f"  per partition: tasks {task_sum / r['partitions']:.3f} s on average, overhead "
              f"{1e3 * overhead:.0f} ms; slowest task " + ", ".join(f"{k} {v:.3f}" for k, v in slow.items())
              + f"; worker peak RSS {', '.join(f'{v:.0f}' for v in r['worker_rss_mb'].values())} MB; "
              f"writing the book took {r['write_book_s']}")
    report["ceiling_after"] = [ceiling() for _ in range(3)]
    report["load"].append(os.getloadavg()[0])
    print(f"SHA-256 2-thread speed-up before {', '.join(f'{c:.2f}' for c in report['ceiling_before'])}; after "
          f"{', '.join(f'{c:.2f}' for c in report['ceiling_after'])}; load {report['load']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
