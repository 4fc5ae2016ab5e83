"""What a round trip through a local service costs on this host, before dpm does any work.

Issue 14 asks for a pre-trade check through the service in <= 500 µs p99. This probe measures the
floor under that number on the machine at hand, with no dpm code on the path: a client process
sends a 40-byte request to a server process on 127.0.0.1 and waits for the echo.

* ``tcp``: a plain blocking TCP socket (TCP_NODELAY) in both processes: the host's loopback and
  process wake-up latency.
* ``grpc-sync``: a grpcio server with a thread pool (what ``python -m dpm serve`` runs), one unary
  method that returns its request; the client is grpcio's blocking stub.
* ``grpc-aio``: the same method on a ``grpc.aio`` server (asyncio, no thread-pool hop).

Each server runs in its own process, started and stopped by this script (bounded in time).
Usage: ``python benchmarks/probe_service_floor.py [--calls 5000]``.
"""
from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import time

import numpy as np

PAYLOAD = b"x" * 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------- servers
def _serve_tcp(port: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(64)
        if not data:
            return
        conn.sendall(data)


def _serve_grpc_sync(port: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    sys.setswitchinterval(0.0005)  # as dpm serve
    server = grpc.server(ThreadPoolExecutor(max_workers=16))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Echo", {"Echo": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def _serve_grpc_aio(port: int) -> None:
    import asyncio

    import grpc

    async def echo(request, context):
        return request

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Echo", {"Echo": handler}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


SERVERS = {"tcp": _serve_tcp, "grpc-sync": _serve_grpc_sync, "grpc-aio": _serve_grpc_aio}


# ----------------------------------------------------------------------------------- clients
def _client_tcp(port: int, calls: int, warmup: int) -> np.ndarray:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    perf = time.perf_counter_ns
    lat = np.empty(calls)
    for k in range(warmup + calls):
        t = perf()
        conn.sendall(PAYLOAD)
        conn.recv(64)
        if k >= warmup:
            lat[k - warmup] = perf() - t
    conn.close()
    return lat / 1e3


def _client_grpc(port: int, calls: int, warmup: int) -> np.ndarray:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        echo = channel.unary_unary("/probe.Echo/Echo")
        perf = time.perf_counter_ns
        lat = np.empty(calls)
        for k in range(warmup + calls):
            t = perf()
            echo(PAYLOAD, timeout=5)
            if k >= warmup:
                lat[k - warmup] = perf() - t
    return lat / 1e3


def measure(kind: str, calls: int, warmup: int = 500) -> dict:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)  # bounded: a server that hangs fails
        if not ready or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind}: the server did not start within 30 s")
        lat = (_client_tcp if kind == "tcp" else _client_grpc)(port, calls, warmup)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.stdout.close()
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
    return {"kind": kind, "p50": p50, "p99": p99, "p99.9": p999, "n": calls}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=2, help="each kind is measured this many times, alternating")
    ap.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        SERVERS[args.serve](args.port)
        return 0
    load = os.getloadavg()[0]
    print(f"Round trip of a 40-byte request on 127.0.0.1, {args.calls:,} calls per run, load average {load:.1f}")
    print()
    print("| server | p50 (µs) | p99 (µs) | p99.9 (µs) |")
    print("|---|---:|---:|---:|")
    for _ in range(args.rounds):
        for kind in ("tcp", "grpc-sync", "grpc-aio"):
            r = measure(kind, args.calls)
            print(f"| {kind} | {r['p50']:,.0f} | {r['p99']:,.0f} | {r['p99.9']:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
