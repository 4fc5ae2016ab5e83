"""The gRPC service, run as a real server process on 127.0.0.1 (free port, bounded in time):
crash (SIGKILL) and recovery from snapshot + log with nothing acknowledged lost; concurrent
clients; malformed requests; a slow subscriber; graceful shutdown on SIGTERM."""
from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

from live_stream import recorded_stream  # noqa: E402

from dpm.engines.margin import MarginEngine  # noqa: E402
from dpm.live import EventRejected, Fill, LiveBook, MarketTick, OpenAccount, Transfer, UnderlyingTick  # noqa: E402
from dpm.market.sample import default_instruments, default_market  # noqa: E402
from dpm.portfolio.sample import generate_accounts  # noqa: E402
from dpm.service.client import LiveClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_ACCOUNTS = 200
STARTUP_TIMEOUT = 120.0


class Server:
    """``python -m dpm serve`` in a child process (killed at the end whatever happens)."""

    def __init__(self, journal: Path | None, *extra: str) -> None:
        cmd = [sys.executable, "-m", "dpm", "serve", "--port", "0", "--workers", "1"]
        if journal is not None:
            cmd += ["--journal", str(journal)]
        if journal is None or not journal.exists():
            cmd += ["--accounts", str(N_ACCOUNTS), "--seed", "0"]
        cmd += list(extra)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        self.port = self.check_port = None
        self.output: list[str] = []
        want_checks = "--check-port" in extra
        while self.port is None or (want_checks and self.check_port is None):
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"server did not start: {''.join(self.output)}") from None
            if line is None:
                raise AssertionError(f"server exited: {''.join(self.output)}")
            self.output.append(line)
            if "listening on" in line:
                self.port = int(line.rsplit(":", 1)[1])
            elif "checks on" in line:
                self.check_port = int(line.rsplit(":", 1)[1])
        self.client = LiveClient(f"127.0.0.1:{self.port}", timeout=60.0)
        self.client.wait_ready(STARTUP_TIMEOUT)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            self.kill()


@pytest.fixture(scope="module")
def engine():
    return MarginEngine(default_market(), default_instruments(), workers=1)


@pytest.fixture(scope="module")
def book(engine):
    return generate_accounts(N_ACCOUNTS, engine.instruments, seed=0)  # what the server generates


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("svc") / "live.sqlite", "--max-subscribers", "4", "--check-port", "0")
    yield s
    s.close()


def _replay(engine, book, events, until_seq=None):
    """The uninterrupted run in process: ``(book, index of the first event not evaluated)``."""
    live = LiveBook(engine, book, workers=1)
    k = 0
    for k, ev in enumerate(events):
        if until_seq is not None and live.last_seq >= until_seq:
            return live, k
        try:
            live.apply(ev)
        except EventRejected:
            pass
    return live, len(events)


# ----------------------------------------------------------------------------- crash and recovery
def test_sigkill_mid_stream_then_restart_loses_nothing(tmp_path, engine, book):
    events = recorded_stream(engine, book, 1500, seed=17)
    journal = tmp_path / "live.sqlite"
    srv = Server(journal, "--snapshot-every", "300")
    acked: dict[str, int] = {}
    try:
        def pump():
            try:
                for k, ack in enumerate(srv.client.submit_stream((ev, f"c{k}") for k, ev in enumerate(events))):
                    if ack.seq and not ack.duplicate:
                        acked[f"c{k}"] = ack.seq
            except grpc.RpcError:
                pass  # the server died under us

        t = threading.Thread(target=pump)
        t.start()
        deadline = time.monotonic() + 120
        while len(acked) < 700 and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.kill()  # SIGKILL mid-stream
        t.join(60)
    finally:
        srv.close()
    assert 0 < len(acked) < len(events)
    srv = Server(journal)
    try:
        st = srv.client.status()
        assert st.last_seq >= max(acked.values())  # every acknowledged event survived
        expect, nxt = _replay(engine, book, events, until_seq=st.last_seq)
        assert expect.last_seq == st.last_seq
        assert srv.client.digest().digest == expect.digest()  # and the state is exactly the uninterrupted run's
        # acknowledged events resubmitted with their client ids are not applied twice
        again = list(srv.client.submit_stream((events[int(k[1:])], k) for k in sorted(acked)))
        assert all(a.duplicate for a in again)
        assert [a.seq for a in again] == [acked[k] for k in sorted(acked)]
        # the client resumes where the server's log ends: the end state is the uninterrupted run's
        list(srv.client.submit_stream((ev, f"c{k}") for k, ev in enumerate(events) if k >= nxt))
        assert srv.client.digest().digest == _replay(engine, book, events)[0].digest()
    finally:
        srv.close()


def test_sigterm_is_graceful(tmp_path, engine, book):
    journal = tmp_path / "live.sqlite"
    srv = Server(journal, "--snapshot-every", "0", "--check-port", "0")
    try:
        from dpm.service.fastcheck import CheckClient

        for k in range(20):
            srv.client.submit(Fill(book.account_id[k], "BTC-PERPETUAL", 100.0, 92_000.0), f"g{k}")
        digest = srv.client.digest().digest
        idle = CheckClient("127.0.0.1", srv.check_port)  # an open check connection does not hold up the exit
        idle.ping()
        assert srv.terminate() == 0
        idle.close()
        assert any("listening" in line for line in srv.output)
    finally:
        srv.close()
    srv = Server(journal)
    try:
        assert srv.client.digest().digest == digest
        assert srv.client.status().last_seq == 20
    finally:
        srv.close()


# ----------------------------------------------------------------------------- robustness
def test_concurrent_clients(server, engine):
    ids = list(generate_accounts(N_ACCOUNTS, engine.instruments, seed=0).account_id)
    before = server.client.status().last_seq
    got: dict[int, object] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(w):
        rng = np.random.default_rng(w)
        with LiveClient(f"127.0.0.1:{server.port}") as c:
            for _ in range(60):
                ev = Fill(ids[int(rng.integers(len(ids)))], "ETH-PERPETUAL", float(rng.integers(-50, 50) or 1),
                          3100.0)
                try:
                    ack = c.submit(ev)
                    with lock:
                        got[ack.seq] = ev
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        errors.append(exc)

    def reader(w):
        rng = np.random.default_rng(100 + w)
        with LiveClient(f"127.0.0.1:{server.port}") as c:
            for _ in range(80):
                aid = ids[int(rng.integers(len(ids)))]
                try:
                    m = c.margin(aid)
                    r = c.check(aid, [("BTC-PERPETUAL", 10.0)])
                    assert m.initial_margin >= 0 and r.initial_margin_after >= 0
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=reader, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    seqs = sorted(got)
    assert seqs == list(range(before + 1, before + 1 + len(seqs)))
    assert server.client.status().last_seq == before + len(seqs)


def test_malformed_requests_are_refused_and_change_nothing(server, book):
    c = server.client
    pb = c.pb
    d = c.digest().digest
    aid = book.account_id[0]
    cases = [
        (pb.Event(), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.Event(fill=pb.Fill(account=aid, instrument="BTC-PERPETUAL", quantity=float("nan"))),
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.Event(fill=pb.Fill(account=aid, instrument="BTC-PERPETUAL", quantity=0.0)), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.Event(fill=pb.Fill(account="nobody", instrument="BTC-PERPETUAL", quantity=1.0)), grpc.StatusCode.NOT_FOUND),
        (pb.Event(fill=pb.Fill(account=aid, instrument="NOPE", quantity=1.0)), grpc.StatusCode.NOT_FOUND),
        (pb.Event(fill=pb.Fill(account="", instrument="BTC-PERPETUAL", quantity=1.0)), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.Event(transfer=pb.Transfer(account=aid, currency="USDC", amount=-1e18)), grpc.StatusCode.FAILED_PRECONDITION),
        (pb.Event(tick=pb.MarketTick()), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.Event(tick=pb.MarketTick(underlyings=[pb.UnderlyingTick(underlying="BTC", index_price=-5.0)])),
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.Event(tick=pb.MarketTick(timestamp_ms=1)), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.Event(settle=pb.Settle(instrument="BTC-PERPETUAL", price=1.0)), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for msg, code in cases:
        with pytest.raises(grpc.RpcError) as exc:
            c.stub.Submit(msg, timeout=30)
        assert exc.value.code() == code, (msg, exc.value.details())
    with pytest.raises(grpc.RpcError) as exc:
        c.check(aid, [("BTC-PERPETUAL", float("inf"))])
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as exc:
        c.margin("nobody")
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    # bytes that are not a protobuf message at all
    raw = c.channel.unary_unary("/dpm.live.v1.LiveMargin/Submit", request_serializer=None,
                                response_deserializer=None)
    with pytest.raises(grpc.RpcError):
        raw(b"\xff\xff\xff\xff garbage", timeout=30)
    acks = list(c.submit_stream([Fill("nobody", "BTC-PERPETUAL", 1.0)]))
    assert acks[0].error_code == "NOT_FOUND" and acks[0].seq == 0
    assert c.digest().digest == d  # nothing changed
    assert c.status().accounts == N_ACCOUNTS  # and the server still answers


def test_binary_check_channel_answers_as_the_rpc(server, book):
    from dpm.service.fastcheck import CheckChannelError, CheckClient

    c = server.client
    rng = np.random.default_rng(5)
    with CheckClient("127.0.0.1", server.check_port, timeout=60) as fast:
        for _ in range(40):
            aid = book.account_id[int(rng.integers(N_ACCOUNTS))]
            legs = [("BTC-PERPETUAL", float(rng.integers(-30, 30) or 1)), ("ETH-PERPETUAL", 5.0)]
            d = c.digest()  # no event in between: both answers see the same state
            want = c.check(aid, legs)
            got = fast.check(aid, legs)
            assert c.digest().last_seq == d.last_seq
            assert (got.accepted, got.initial_margin, got.initial_margin_after, got.maintenance_margin,
                    got.equity, got.reason) == (want.accepted, want.initial_margin, want.initial_margin_after,
                                                want.maintenance_margin, want.equity, want.reason)
        with pytest.raises(CheckChannelError, match="NOT_FOUND"):
            fast.check("nobody", [("BTC-PERPETUAL", 1.0)])
        fast.ping()
    # the channel's counters: these checks were answered in C (each account's states handed over by
    # the gRPC check just before), the unknown account in Python
    st = c.status()
    assert st.checks_in_c >= 40 and st.checks_in_python >= 1


def test_slow_subscriber_does_not_stall_the_engine(server):
    c = server.client
    start = c.status().alerts_published + 1
    slow = c.subscribe(from_seq=0, max_queue=5)
    fast = c.subscribe(from_seq=0, max_queue=100_000)
    time.sleep(0.5)  # both subscriptions registered
    n = 1500
    events = []
    for k in range(n):  # accounts without collateral: each fill raises a liquidation alert
        events += [OpenAccount(f"slow-{k}"), Fill(f"slow-{k}", "BTC-PERPETUAL", 1000.0, 92_000.0)]
    t0 = time.monotonic()
    acks = list(c.submit_stream(events))
    elapsed = time.monotonic() - t0
    assert all(a.seq for a in acks)
    got = []
    for a in fast:
        got.append(a.seq)
        if len(got) == n:
            break
    fast.cancel()
    assert got == list(range(start, start + n))  # in order, none missing
    with pytest.raises(grpc.RpcError) as exc:
        for _ in slow:
            pass
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "resubscribe from seq" in exc.value.details()
    # the engine kept going: a tick and a check are answered at once
    c.submit(MarketTick((UnderlyingTick("BTC", 92_000.0),)))
    assert c.check("slow-0", [("BTC-PERPETUAL", 1.0)]).initial_margin > 0
    assert elapsed < 120


def test_subscriber_limit(server):
    c = server.client
    subs = [c.subscribe() for _ in range(4)]
    try:
        time.sleep(0.5)
        extra = c.subscribe()
        with pytest.raises(grpc.RpcError) as exc:
            next(iter(extra))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for s in subs:
            s.cancel()
    deadline = time.monotonic() + 30
    while c.status().subscribers and time.monotonic() < deadline:  # cancelled streams free their slot
        time.sleep(0.1)
    sub = c.subscribe(account="limit-0")
    time.sleep(0.5)
    c.submit(OpenAccount("limit-0"))
    c.submit(Transfer("limit-0", "USDC", 100.0))
    c.submit(Fill("limit-0", "BTC-PERPETUAL", 1000.0, 92_000.0))  # IM far above 100 USD: an alert
    alert = next(iter(sub))
    sub.cancel()
    assert alert.account == "limit-0" and alert.kind in ("margin_call", "liquidation")


# ----------------------------------------------------------------------------- command line
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dpm", "serve", *args], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=120)


def test_serve_command_line_errors(tmp_path):
    r = _cli("--max-subscribers", "16", "--rpc-threads", "16")
    assert r.returncode == 2 and "--max-subscribers must be below --rpc-threads" in r.stderr
    assert _cli("--port", "70000").returncode == 2
    r = _cli("--journal", str(tmp_path / "no-dir" / "j.sqlite"), "--accounts", "1")
    assert r.returncode == 1 and "journal" in r.stderr
    journal = tmp_path / "j.sqlite"
    journal.write_bytes(b"not a database" * 100)
    r = _cli("--journal", str(journal), "--accounts", "5")
    assert r.returncode == 2 and "already holds a book" in r.stderr
    r = _cli("--journal", str(journal))
    assert r.returncode == 1 and "journal" in r.stderr and "Traceback" not in r.stderr
    assert _cli("--check-port", "70000").returncode == 2
    with socket.socket() as busy:  # the check port is taken: one line, no traceback, exit 1
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        r = _cli("--port", "0", "--accounts", "5", "--check-port", str(busy.getsockname()[1]))
    assert r.returncode == 1 and "check channel: cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_serve_that_cannot_bind_leaves_the_interpreter_as_it_was(engine, book):
    import gc

    from dpm.errors import DPMError
    from dpm.live.runner import LiveRunner
    from dpm.service.server import serve

    runner = LiveRunner(LiveBook(engine, book.subset(np.arange(5)), workers=1), None)
    interval, frozen = sys.getswitchinterval(), gc.get_freeze_count()
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            with pytest.raises(DPMError, match="check channel: cannot listen"):
                serve(runner, "127.0.0.1", 0, check_port=busy.getsockname()[1], install_signals=False,
                      announce=lambda line: None)
        assert sys.getswitchinterval() == interval and gc.get_freeze_count() == frozen
    finally:
        runner.close()


def test_submit_batches_applies_in_order_like_one_by_one(engine, book):
    from dpm.service.server import MAX_BATCH

    events = recorded_stream(engine, book, 1200, seed=23)
    want, _ = _replay(engine, book, events)
    srv = Server(None)
    try:
        c = srv.client
        sizes = [1, 7, 50, 0, 300, 2]
        batches, k, j = [], 0, 0
        while k < len(events):
            n = sizes[j % len(sizes)]
            batches.append(events[k:k + n])
            k += n
            j += 1
        replies = list(c.submit_batches(batches))
        assert [len(r) for r in replies] == [len(b) for b in batches]  # one Ack per event, per batch
        acks = [a for r in replies for a in r]
        applied = [a for a in acks if a.seq]
        refused = [a for a in acks if not a.seq]
        assert [a.seq for a in applied] == list(range(1, len(applied) + 1))  # in order, none lost
        assert all(a.error and a.error_code for a in refused)
        assert len(applied) == want.last_seq
        d = c.digest()
        assert d.digest == want.digest()  # the same book as applying the events one by one
        # a batch above the limit is refused whole; nothing of it is applied
        big = [Transfer(book.account_id[0], "USDC", 1.0)] * (MAX_BATCH + 1)
        (reply,) = list(c.submit_batches([big]))
        assert len(reply) == MAX_BATCH + 1
        assert all(a.seq == 0 and a.error_code == "INVALID_ARGUMENT" and "above the limit" in a.error for a in reply)
        assert c.digest().digest == d.digest
    finally:
        srv.close()
