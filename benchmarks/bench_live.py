"""Live margin under load: the real gRPC server on 127.0.0.1 with 100,000 accounts.

    python benchmarks/bench_live.py                      # 100,000 accounts, 60 s of load
    python benchmarks/bench_live.py --accounts 10000 --duration 10 --json out.json

Two parts, both bounded in time and count:

1. **In process** (one :class:`dpm.live.LiveBook` of the same generated accounts): the pre-trade
   check ``LiveBook.check_one`` (warm what-if cache, and right after a tick when every state is
   rebuilt), a fill, a tick of one and of both underlyings (tick-to-all-margins-fresh), against the
   references in the same run: ``MarginEngine.prepare(...).what_if`` (the engine's own what-if: it
   builds a one-account book per account) and ``with_market`` + a full ``margin_many``.
2. **Through the service** (``python -m dpm serve`` in a child process, journal on disk): for
   ``--duration`` seconds, one process streams fills (and a few deposits) at ``--fill-rate`` per
   second (one ``SubmitStream`` message each, or with ``--fill-batch-ms`` the fills due in each
   interval as one ``SubmitBatches`` batch), one sends a market tick every ``--tick-interval``
   seconds, ``--checkers`` processes send gRPC pre-trade checks back to back, ``--fast-checkers``
   processes send checks through the binary check channel (``dpm serve --check-port``) at
   ``--fast-check-rate`` per second (``--fast-checker-nice``: at that scheduling priority, standing
   in for a client on a CPU of its own), one subscriber counts alerts; the server's memory (RSS) is sampled every second. Reported: check round-trip
   p50 / p99 / p99.9 through gRPC and through the binary channel (each with its no-work floor:
   ``Status``, PING), tick apply time on the server (its ``Status.timings``) and tick round trip,
   events applied per second, RSS over time. ``--skip-in-process`` runs this part alone.

Prints a Markdown summary (for docs/benchmarks.md) and writes everything to ``--json``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values, qs=(50, 99, 99.9)):
    v = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": float(np.percentile(v, q)) for q in qs} | {"n": int(v.size), "max": float(v.max())}


# ----------------------------------------------------------------------------- in process
def in_process(n_accounts: int, seed: int, workers: int) -> dict:
    from dpm.engines.margin import MarginEngine
    from dpm.live import Fill, LiveBook, MarketTick, UnderlyingTick
    from dpm.market.sample import default_instruments, default_market
    from dpm.portfolio.sample import generate_accounts

    table, market = default_instruments(), default_market()
    engine = MarginEngine(market, table, workers=workers)
    book = generate_accounts(n_accounts, table, seed=seed)
    t0 = time.perf_counter()
    live = LiveBook(engine, book, workers=workers)
    out: dict = {"build_s": time.perf_counter() - t0, "positions": int(book.n_positions)}
    rng = np.random.default_rng(seed)
    kind = np.asarray(table.kind)
    liquid = np.flatnonzero(kind != 3).tolist() + rng.choice(np.flatnonzero(kind == 3), 300).tolist()
    perf = time.perf_counter_ns

    def checks(n, accounts):
        lat = np.empty(n)
        ins = rng.choice(liquid, n)
        qs = rng.choice([-1.0, 1.0], n) * rng.integers(1, 20, n)
        for k in range(n):
            a, i, q = int(accounts[k]), int(ins[k]), float(qs[k])
            t = perf()
            live.check_one(a, i, q)
            lat[k] = perf() - t
        return lat / 1e3

    hot = rng.integers(0, n_accounts, 2000)  # a working set of active accounts (cache warm)
    checks(20_000, rng.choice(hot, 20_000))
    out["check_warm_us"] = pct(checks(200_000, rng.choice(hot, 200_000)))
    # the same checks on a working set of 20 accounts: what the 2,000 accounts' memory costs
    few = hot[:20]
    checks(20_000, rng.choice(few, 20_000))
    out["check_warm_20_us"] = pct(checks(200_000, rng.choice(few, 200_000)))
    live.apply(MarketTick((UnderlyingTick("BTC", 92_100.0), UnderlyingTick("ETH", 3_101.0))))
    out["check_after_tick_us"] = pct(checks(20_000, rng.choice(hot, 20_000)))  # every state rebuilt once
    out["check_cold_us"] = pct(checks(20_000, rng.integers(0, n_accounts, 20_000)))
    # reference: the engine's own what-if (AccountState), per call
    ref = []
    for k in range(300):
        a = int(rng.integers(n_accounts))
        t = perf()
        engine.prepare(book, a).what_if_ids(np.array([liquid[k % len(liquid)]]), np.array([1.0]))
        ref.append((perf() - t) / 1e3)
    out["engine_prepare_what_if_us"] = pct(ref)
    # fills
    ids = live.account_ids
    names = table.name
    lat = []
    for k in range(20_000):
        ev = Fill(ids[int(rng.integers(n_accounts))], names[liquid[int(rng.integers(len(liquid)))]],
                  float(rng.integers(1, 10)) * (1 if k % 2 else -1), None)
        t = perf()
        live.apply(ev)
        lat.append((perf() - t) / 1e3)
    out["fill_us"] = pct(lat)
    # ticks: one underlying (BTC holders re-margined) and both
    for label, unds in (("tick_btc_ms", ("BTC",)), ("tick_both_ms", ("BTC", "ETH"))):
        lat = []
        for k in range(8):
            ticks = tuple(UnderlyingTick(u, float(live.market[u].index_price) * (1 + 0.0005 * (-1) ** k))
                          for u in unds)
            t = perf()
            live.apply(MarketTick(ticks))
            lat.append((perf() - t) / 1e6)
        out[label] = pct(lat)
    lat_wm, lat_mm = [], []
    cur = live.to_book()
    for k in range(4):
        t = perf()
        e2 = engine.with_market(live.market)
        lat_wm.append((perf() - t) / 1e6)
        t = perf()
        e2.margin_many(cur)
        lat_mm.append((perf() - t) / 1e6)
    out["ref_with_market_ms"] = pct(lat_wm)
    out["ref_margin_many_ms"] = pct(lat_mm)
    return out


# ----------------------------------------------------------------------------- through the service
def _fill_streamer(port, ids, names, rate, stop_at, q, batch_ms=0.0):
    from dpm.live import Fill, Transfer
    from dpm.service.client import LiveClient

    rng = np.random.default_rng(1)
    c = LiveClient(f"127.0.0.1:{port}")
    sent = [0]

    def event():
        sent[0] += 1
        a = ids[int(rng.integers(len(ids)))]
        if sent[0] % 20 == 0:
            return Transfer(a, "USDC", 1000.0)
        return Fill(a, names[int(rng.integers(len(names)))], float(rng.integers(1, 10)) * rng.choice([-1, 1]))

    def gen():
        t0 = time.monotonic()
        while time.monotonic() < stop_at:
            due = t0 + sent[0] / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            yield event()

    def gen_batches():
        # the events due in each batch_ms interval, sent together at its end (SubmitBatches)
        t0, k = time.monotonic(), 0
        while time.monotonic() < stop_at:
            k += 1
            end = t0 + k * batch_ms / 1e3
            now = time.monotonic()
            if end > now:
                time.sleep(end - now)
            due = int(rate * (end - t0))
            yield [event() for _ in range(max(0, due - sent[0]))]

    acked = refused = 0
    acks = (a for batch in c.submit_batches(gen_batches()) for a in batch) if batch_ms else c.submit_stream(gen())
    for ack in acks:
        if ack.seq:
            acked += 1
        else:
            refused += 1
    q.put(("fills", {"sent": sent[0], "acked": acked, "refused": refused}))


def _ticker(port, interval, stop_at, q):
    from dpm.live import MarketTick, UnderlyingTick
    from dpm.service.client import LiveClient

    c = LiveClient(f"127.0.0.1:{port}")
    st = c.status()
    S = dict(st.index_prices)
    lat = []
    k = 0
    rng = np.random.default_rng(2)
    while time.monotonic() < stop_at:
        k += 1
        unds = ("BTC",) if k % 2 else ("BTC", "ETH")
        for u in unds:
            S[u] *= float(np.exp(0.001 * rng.standard_normal()))
        t = time.perf_counter()
        c.submit(MarketTick(tuple(UnderlyingTick(u, S[u]) for u in unds)))
        lat.append((time.perf_counter() - t) * 1e3)
        # never past the end of the run (a long --tick-interval means one tick)
        time.sleep(max(0.0, min(interval - (time.perf_counter() - t), stop_at - time.monotonic())))
    q.put(("ticks", lat))


def _checker(port, ids, names, stop_at, q, seed):
    from dpm.service.client import LiveClient

    c = LiveClient(f"127.0.0.1:{port}")
    rng = np.random.default_rng(seed)
    hot = [ids[int(i)] for i in rng.integers(0, len(ids), 2000)]
    pb = c.pb
    lat, floor = [], []
    status = pb.StatusRequest()
    while time.monotonic() < stop_at:
        req = pb.CheckRequest(account=hot[int(rng.integers(len(hot)))],
                              orders=[pb.OrderLeg(instrument=names[int(rng.integers(len(names)))],
                                                  quantity=float(rng.integers(1, 20)))])
        t = time.perf_counter_ns()
        c.stub.Check(req, timeout=30)
        lat.append((time.perf_counter_ns() - t) / 1e3)
        if len(lat) % 4 == 0:  # the same server's cheapest RPC, under the same load: the framework's floor
            t = time.perf_counter_ns()
            c.stub.Status(status, timeout=30)
            floor.append((time.perf_counter_ns() - t) / 1e3)
    q.put(("checks", lat))
    q.put(("floor", floor))


def _fast_checker(port, ids, names, stop_at, q, seed, rate, nice=0):
    """Checks through the binary channel (``dpm serve --check-port``), ``rate`` per second (0: back to back)."""
    from dpm.service.fastcheck import CheckClient

    if nice:
        # a client with a CPU of its own, as a gateway on another machine would have: on a small
        # host it otherwise waits for a CPU behind the load generators before it sees the reply
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    c = CheckClient("127.0.0.1", port)
    rng = np.random.default_rng(seed)
    hot = [ids[int(i)] for i in rng.integers(0, len(ids), 2000)]
    # the first check of each account, timed apart: it builds the account's record (in C from the
    # book's positions, or in Python for an account changed since the last compaction)
    first = []
    for account in dict.fromkeys(hot):
        t = time.perf_counter_ns()
        c.check(account, [(names[int(rng.integers(len(names)))], 1.0)])
        first.append((time.perf_counter_ns() - t) / 1e3)
    lat, floor = [], []
    t0, sent = time.monotonic(), 0
    while time.monotonic() < stop_at:
        if rate:
            due = t0 + sent / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
        sent += 1
        legs = [(names[int(rng.integers(len(names)))], float(rng.integers(1, 20)))]
        account = hot[int(rng.integers(len(hot)))]
        t = time.perf_counter_ns()
        c.check(account, legs)
        lat.append((time.perf_counter_ns() - t) / 1e3)
        if sent % 4 == 0:  # the channel's floor under the same load: a PING, answered without the book
            t = time.perf_counter_ns()
            c.ping()
            floor.append((time.perf_counter_ns() - t) / 1e3)
    c.close()
    q.put(("fast_first", first))
    q.put(("fast_checks", lat))
    q.put(("fast_floor", floor))


def through_service(n_accounts, seed, workers, duration, fill_rate, tick_interval, checkers, journal,
                    fast_checkers=1, fast_rate=500.0, fill_batch_ms=0.0, fast_nice=0):
    import psutil

    from dpm.market.sample import default_instruments
    from dpm.portfolio.sample import generate_accounts
    from dpm.service.client import LiveClient

    cmd = [sys.executable, "-m", "dpm", "serve", "--port", "0", "--accounts", str(n_accounts), "--seed",
           str(seed), "--journal", str(journal), "--snapshot-every", "0", "--queue", "20000", "--check-port", "0"]
    if workers:
        cmd += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = check_port = None
    lines = []
    try:
        deadline = time.monotonic() + 600
        while (port is None or check_port is None) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited: " + "".join(lines))
            lines.append(line)
            if "listening on" in line:
                port = int(line.rsplit(":", 1)[1])
            elif "checks on" in line:
                check_port = int(line.rsplit(":", 1)[1])
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        startup = time.monotonic() - t0
        client = LiveClient(f"127.0.0.1:{port}")
        client.wait_ready(60)
        table = default_instruments()
        ids = list(generate_accounts(n_accounts, table, seed=seed).account_id)
        kind = np.asarray(table.kind)
        rng = np.random.default_rng(seed)
        liquid = np.flatnonzero(kind != 3).tolist() + rng.choice(np.flatnonzero(kind == 3), 300).tolist()
        names = [str(table.name[i]) for i in liquid]
        sp = psutil.Process(proc.pid)
        st0 = client.status()
        sub = client.subscribe()
        alerts = [0]

        def count():
            try:
                for _ in sub:
                    alerts[0] += 1
            except Exception:  # noqa: BLE001 - cancelled at the end
                pass

        threading.Thread(target=count, daemon=True).start()
        stop_at = time.monotonic() + duration
        ctx = mp.get_context("spawn")  # gRPC does not survive fork()
        q = ctx.Queue()
        procs = [ctx.Process(target=_fill_streamer, args=(port, ids, names, fill_rate, stop_at, q, fill_batch_ms)),
                 ctx.Process(target=_ticker, args=(port, tick_interval, stop_at, q))]
        procs += [ctx.Process(target=_checker, args=(port, ids, names, stop_at, q, 10 + k)) for k in range(checkers)]
        procs += [ctx.Process(target=_fast_checker, args=(check_port, ids, names, stop_at, q, 20 + k, fast_rate,
                                                          fast_nice))
                  for k in range(fast_checkers)]
        for p in procs:
            p.start()
        rss = []
        t_start = time.monotonic()
        while time.monotonic() < stop_at:
            rss.append((round(time.monotonic() - t_start, 1), sp.memory_info().rss / 2**20))
            time.sleep(1.0)
        results: dict = {"checks": [], "floor": [], "fast_checks": [], "fast_floor": [], "fast_first": []}
        for _ in range(len(procs) + checkers + 2 * fast_checkers):
            kind_, val = q.get(timeout=300)
            if kind_ in ("checks", "floor", "fast_checks", "fast_floor", "fast_first"):
                results[kind_].extend(val)
            else:
                results[kind_] = val
        for p in procs:
            p.join(60)
        elapsed = time.monotonic() - t_start
        st1 = client.status()
        sub.cancel()
        timings = {t.kind: {"count": t.count, "p50_us": t.p50_us, "p99_us": t.p99_us, "p999_us": t.p999_us,
                            "max_us": t.max_us} for t in st1.timings}
        out = {
            "startup_s": startup, "duration_s": elapsed,
            "events_applied": int(st1.last_seq - st0.last_seq),
            "events_per_s": (st1.last_seq - st0.last_seq) / elapsed,
            "check_rpc_us": pct(results["checks"]) if results["checks"] else None,
            "checks_per_s": len(results["checks"]) / elapsed,
            "status_rpc_us": pct(results["floor"]) if results["floor"] else None,
            "check_fast_us": pct(results["fast_checks"]) if results["fast_checks"] else None,
            "fast_checks_per_s": len(results["fast_checks"]) / elapsed,
            "ping_fast_us": pct(results["fast_floor"]) if results["fast_floor"] else None,
            "check_fast_first_us": pct(results["fast_first"]) if results["fast_first"] else None,
            "tick_rpc_ms": pct(results["ticks"]) if results.get("ticks") else None,
            "fills": results.get("fills"), "fill_batch_ms": fill_batch_ms, "fast_checker_nice": fast_nice,
            "alerts": alerts[0],
            "server_timings": timings,
            "rss_mib": rss, "queue_depth_end": st1.queue_depth,
            "check_channel": {"in_c": st1.checks_in_c, "in_python": st1.checks_in_python,
                              "states_built_in_c": st1.check_states_built,
                              "states_recomputed": st1.check_states_recomputed},
        }
        proc.send_signal(signal.SIGTERM)
        out["shutdown_exit"] = proc.wait(120)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        model, flags = platform.processor(), ""
    simd = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "SSE")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} vCPUs, {simd}; Python {platform.python_version()}; load average {load:.1f}"


def markdown(res: dict) -> str:
    ip, sv = res.get("in_process"), res.get("service")
    f = lambda d, k: f"{d[k]:,.1f}"  # noqa: E731
    positions = f" ({ip['positions']:,} positions)" if ip else ""
    lines = [f"Machine: {res['machine']}. Accounts: {res['accounts']:,}{positions}.", "",
             "| measure | p50 | p99 | p99.9 | n |", "|---|---:|---:|---:|---:|"]

    def row(label, d, unit):
        lines.append(f"| {label} ({unit}) | {f(d, 'p50')} | {f(d, 'p99')} | {f(d, 'p99.9')} | {d['n']:,} |")

    if ip:
        row("pre-trade check in process, warm (`check_one`), 2,000 active accounts", ip["check_warm_us"], "µs")
        row("pre-trade check in process, warm, 20 active accounts", ip["check_warm_20_us"], "µs")
        row("pre-trade check in process, first after a tick", ip["check_after_tick_us"], "µs")
        row("pre-trade check in process, random account", ip["check_cold_us"], "µs")
        row("reference: `engine.prepare(book, i).what_if_ids`", ip["engine_prepare_what_if_us"], "µs")
        row("fill in process (`apply`)", ip["fill_us"], "µs")
        row("tick of BTC in process (all margins fresh)", ip["tick_btc_ms"], "ms")
        row("tick of BTC + ETH in process", ip["tick_both_ms"], "ms")
        row("reference: `with_market`", ip["ref_with_market_ms"], "ms")
        row("reference: full `margin_many`", ip["ref_margin_many_ms"], "ms")
    if sv:
        if sv["check_rpc_us"]:
            row("pre-trade check through gRPC (`Check` round trip)", sv["check_rpc_us"], "µs")
        if sv.get("status_rpc_us"):
            row("reference: `Status` round trip (no work) under the same load", sv["status_rpc_us"], "µs")
        if sv.get("check_fast_us"):
            row("pre-trade check through the binary check channel (round trip)", sv["check_fast_us"], "µs")
        if sv.get("check_fast_first_us"):
            row("first check of an account through the binary channel (its record built)", sv["check_fast_first_us"],
                "µs")
        if sv.get("ping_fast_us"):
            row("reference: PING through the binary channel (no work) under the same load", sv["ping_fast_us"], "µs")
        if sv["tick_rpc_ms"]:
            row("tick through gRPC (`Submit` round trip)", sv["tick_rpc_ms"], "ms")
        t = sv["server_timings"].get("MarketTick")
        if t:
            lines.append(f"| tick on the server (writer: prepare + commit) (ms) | {t['p50_us'] / 1e3:,.1f} | "
                         f"{t['p99_us'] / 1e3:,.1f} | {t['p999_us'] / 1e3:,.1f} | {t['count']:,} |")
        t = sv["server_timings"].get("Fill")
        if t:
            lines.append(f"| fill on the server (writer) (µs) | {t['p50_us']:,.1f} | {t['p99_us']:,.1f} | "
                         f"{t['p999_us']:,.1f} | {t['count']:,} |")
        batching = (f"fills in SubmitBatches batches of {sv['fill_batch_ms']:g} ms" if sv.get("fill_batch_ms")
                    else "fills one SubmitStream message each")
        if sv.get("fast_checker_nice"):
            batching += f"; binary checker at nice {sv['fast_checker_nice']}"
        lines += ["", f"Service: {sv['duration_s']:.0f} s, {sv['events_applied']:,} events applied "
                      f"({sv['events_per_s']:,.0f}/s; {batching}), {sv['checks_per_s']:,.0f} gRPC checks/s, "
                      f"{sv.get('fast_checks_per_s', 0):,.0f} binary-channel checks/s, {sv['alerts']:,} alerts; "
                      f"server ready in {sv['startup_s']:.1f} s; exit status after SIGTERM {sv['shutdown_exit']}.",
                  "Binary channel: {in_c:,} checks answered in C, {in_python:,} in Python; {states_built_in_c:,} "
                  "account states built in C, {states_recomputed:,} recomputed after ticks.".format(
                      **sv["check_channel"]),
                  "RSS (MiB) over time: " + ", ".join(f"{t:.0f} s: {m:,.0f}" for t, m in sv["rss_mib"][::10])
                  + (f", {sv['rss_mib'][-1][0]:.0f} s: {sv['rss_mib'][-1][1]:,.0f}" if sv["rss_mib"] else "")]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--fill-rate", type=float, default=2000.0, help="fills per second offered")
    ap.add_argument("--tick-interval", type=float, default=1.0, help="seconds between ticks")
    ap.add_argument("--fast-checker-nice", type=int, default=0,
                    help="nice value of the binary-channel checker processes (negative needs CAP_SYS_NICE): "
                         "stands in for a client on a CPU of its own")
    ap.add_argument("--fill-batch-ms", type=float, default=0.0,
                    help="send the fills due in each interval of this many ms as one SubmitBatches batch "
                         "(0: one SubmitStream message per fill)")
    ap.add_argument("--checkers", type=int, default=2, help="processes sending gRPC pre-trade checks back to back")
    ap.add_argument("--fast-checkers", type=int, default=1,
                    help="processes sending checks through the binary check channel")
    ap.add_argument("--fast-check-rate", type=float, default=500.0,
                    help="checks per second of each binary-channel process (0: back to back)")
    ap.add_argument("--journal", default=None, help="journal path (default: a temporary file)")
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.fast_checker_nice < 0 and hasattr(os, "geteuid") and os.geteuid() != 0:
        ap.error("--fast-checker-nice below 0 needs root (CAP_SYS_NICE)")
    res = {"machine": machine(), "accounts": args.accounts, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                      time.gmtime())}
    if not args.skip_in_process:
        res["in_process"] = in_process(args.accounts, args.seed, args.workers)
    if not args.skip_service:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            journal = Path(args.journal) if args.journal else Path(tmp) / "live.sqlite"
            res["service"] = through_service(args.accounts, args.seed, args.workers, args.duration, args.fill_rate,
                                             args.tick_interval, args.checkers, journal, args.fast_checkers,
                                             args.fast_check_rate, args.fill_batch_ms, args.fast_checker_nice)
    res["machine_end"] = machine()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
