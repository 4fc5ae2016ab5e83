"""The binary pre-trade check channel (``dpm.service.fastcheck``) on a live book, over real sockets
on 127.0.0.1: the same answers as ``LiveBook.check``; malformed frames refused with the field named
and the connection kept (or closed when the framing is lost); pipelining; a connection limit; clients
that stall or never read do not hold up the others; the book never changes."""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.errors import InvalidInputError
from dpm.live import Fill, LiveBook
from dpm.market.sample import default_instruments, default_market
from dpm.portfolio.sample import generate_accounts
from dpm.service.fastcheck import (
    CHECK_REPLY,
    ERROR,
    MAX_FRAME,
    CheckChannel,
    CheckChannelError,
    CheckClient,
    encode_check,
)

N_ACCOUNTS = 60


@pytest.fixture(scope="module")
def live():
    table = default_instruments()
    book = generate_accounts(N_ACCOUNTS, table, seed=3)
    lb = LiveBook(MarginEngine(default_market(), table, workers=1), book, workers=1)
    # one account that cannot afford much: no collateral, a large short position
    lb.apply(Fill(book.account_id[0], "BTC-PERPETUAL", -400.0, 92_000.0))
    return lb


@pytest.fixture()
def channel(live):
    ch = CheckChannel(live, max_connections=4, send_timeout=1.0)
    ch.start()
    yield ch
    ch.stop()


def _frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def _error(reply) -> tuple[int, str]:
    kind, _, body = reply
    assert kind == ERROR
    status, n = struct.unpack_from("<HH", body)
    return status, body[4:4 + n].decode()


def test_answers_equal_the_book(live, channel):
    names = [str(n) for n in live.instruments.name]
    ids = live.account_ids
    rng = np.random.default_rng(0)
    seen_refusal = False
    with CheckClient("127.0.0.1", channel.port) as c:
        for k in range(300):
            legs = [(names[int(i)], float(rng.integers(1, 50)) * float(rng.choice([-1, 1])))
                    for i in rng.integers(0, len(names), 1 + k % 3)]
            if len({n for n, _ in legs}) < len(legs):
                continue
            account = ids[int(rng.integers(N_ACCOUNTS))] if k % 5 else ids[0]
            got = c.check(account, legs)
            want = live.check(account, legs)
            assert (got.accepted, got.reason) == (want.accepted, want.reason)
            # the same bits: the reply carries IEEE doubles
            assert (got.initial_margin, got.initial_margin_after, got.maintenance_margin, got.equity) == (
                want.initial_margin, want.initial_margin_after, want.maintenance_margin, want.equity)
            seen_refusal |= not got.accepted
        c.ping()
    assert seen_refusal  # the refusal path (reason text) was exercised too


def test_refusals_name_the_field_and_keep_the_connection(live, channel):
    digest = live.digest()
    aid = live.account_ids[1]
    good = encode_check(7, aid, [("BTC-PERPETUAL", 1.0)])
    head = struct.pack("<BQ", 1, 9)
    a = aid.encode()
    body = struct.pack("<H", len(a)) + a
    cases = [
        (encode_check(9, "nobody", [("BTC-PERPETUAL", 1.0)]), 5, "unknown account 'nobody'"),
        (encode_check(9, aid, [("NOPE", 1.0)]), 5, "NOPE"),
        (encode_check(9, aid, [("BTC-PERPETUAL", 0.0)]), 3, "must be finite and non-zero"),
        (encode_check(9, aid, [("BTC-PERPETUAL", float("nan"))]), 3, "legs[0].quantity: not finite"),
        (encode_check(9, aid, [("BTC-PERPETUAL", 1.0), ("ETH-PERPETUAL", float("inf"))]), 3,
         "legs[1].quantity: not finite"),
        (_frame(head + struct.pack("<H", 0)), 3, "account: empty"),
        (_frame(head + struct.pack("<H", 50) + b"abc"), 3, "account: length 50 runs past"),
        (_frame(head + struct.pack("<H", 2) + b"\xff\xfe" + struct.pack("<H", 1)), 3, "account: not valid UTF-8"),
        (_frame(head + body), 3, "legs: the payload ends before the leg count"),
        (_frame(head + body + struct.pack("<H", 0)), 3, "legs: count 0 outside 1..1024"),
        (_frame(head + body + struct.pack("<H", 1) + struct.pack("<H", 3) + b"BTC"), 3,
         "legs[0].quantity: the payload ends inside it"),
        (_frame(struct.pack("<BQ", 77, 9)), 3, "kind: unknown request kind 77"),
        (_frame(struct.pack("<BQ", 2, 9) + b"x"), 3, "after a PING"),
        (_frame(b"\x01\x02"), 3, "shorter than kind and request id"),
    ]
    # a valid frame with trailing bytes in its payload
    extra = struct.pack("<I", len(good) - 4 + 2) + good[4:] + b"zz"
    cases.append((extra, 3, "2 bytes after the last leg"))
    with CheckClient("127.0.0.1", channel.port) as c:
        for frame, status, text in cases:
            c.send_raw(frame)
            got_status, message = _error(c.read_reply())
            assert got_status == status and text in message, (frame, message)
            c.send_raw(good)  # the connection is still usable
            kind, rid, _ = c.read_reply()
            assert (kind, rid) == (CHECK_REPLY, 7)
        with pytest.raises(CheckChannelError, match="NOT_FOUND"):
            c.check("nobody", [("BTC-PERPETUAL", 1.0)])
    with pytest.raises(InvalidInputError, match="frame limit"):
        encode_check(1, aid, [("X" * 1000, 1.0)] * 70)
    assert live.digest() == digest  # nothing changed


@pytest.mark.parametrize("size", [0, MAX_FRAME + 1, 2**32 - 1])
def test_a_bad_frame_length_closes_the_connection(channel, size):
    with CheckClient("127.0.0.1", channel.port) as c:
        c.send_raw(struct.pack("<I", size) + b"\x01" * 16)
        status, message = _error(c.read_reply())
        assert status == 3 and f"length {size} outside" in message
        c.sock.settimeout(10)
        assert c.sock.recv(16) == b""  # closed by the server
    with CheckClient("127.0.0.1", channel.port) as c:  # the channel itself carries on
        c.ping()


def test_pipelined_requests_are_answered_in_order(live, channel):
    aid = live.account_ids[2]
    frames = [encode_check(100 + k, aid, [("BTC-PERPETUAL", float(k + 1))]) for k in range(50)]
    blob = b"".join(frames)
    with CheckClient("127.0.0.1", channel.port) as c:
        # split at awkward places: frames straddle the reads
        for at in range(0, len(blob), 37):
            c.send_raw(blob[at:at + 37])
        for k in range(50):
            kind, rid, body = c.read_reply()
            assert (kind, rid) == (CHECK_REPLY, 100 + k)
            im_after = struct.unpack_from("<d", body, 9)[0]
            assert im_after == live.check(aid, [("BTC-PERPETUAL", float(k + 1))]).initial_margin_after


def test_connection_limit(channel):
    clients = [CheckClient("127.0.0.1", channel.port) for _ in range(4)]
    try:
        for c in clients:
            c.ping()
        with CheckClient("127.0.0.1", channel.port) as extra:
            status, message = _error(extra.read_reply())
            assert status == 8 and "too many connections (at most 4)" in message
        assert channel.refused_connections == 1
        clients.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the slot frees once the server sees the close
            with CheckClient("127.0.0.1", channel.port) as again:
                try:
                    again.ping()
                    break
                except CheckChannelError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
    finally:
        for c in clients:
            c.close()


def test_stalled_and_non_reading_clients_do_not_hold_up_others(live, channel):
    aid = live.account_ids[3]
    # one client sends half a frame and stalls
    stalled = socket.create_connection(("127.0.0.1", channel.port))
    stalled.sendall(encode_check(1, aid, [("BTC-PERPETUAL", 1.0)])[:10])
    # one client pipelines requests and never reads a reply: its socket buffers fill up
    greedy = socket.create_connection(("127.0.0.1", channel.port))
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frame = encode_check(2, aid, [("BTC-PERPETUAL", 1.0)] * 20)
    stop = threading.Event()

    def flood():
        try:
            while not stop.is_set():
                greedy.sendall(frame * 50)
        except OSError:
            pass  # cut off by the server

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        errors = []

        def checker(w):
            try:
                with CheckClient("127.0.0.1", channel.port, timeout=20) as c:
                    for k in range(100):
                        r = c.check(aid, [("ETH-PERPETUAL", float(w + k + 1))])
                        assert r.initial_margin_after == live.check(
                            aid, [("ETH-PERPETUAL", float(w + k + 1))]).initial_margin_after
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=checker, args=(w,)) for w in range(2)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[0]
        assert time.monotonic() - t0 < 30
        # the client that never reads is cut off after the send timeout (1 s here)
        flooder.join(30)
        assert not flooder.is_alive()
    finally:
        stop.set()
        stalled.close()
        greedy.close()


def test_stop_closes_every_connection(live):
    ch = CheckChannel(live, send_timeout=1.0)
    port = ch.start()
    c = CheckClient("127.0.0.1", port, timeout=10)
    c.ping()
    ch.stop()
    with pytest.raises(Exception):  # noqa: B017 - closed connection: either error is right
        c.ping()
    c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_bad_arguments(live):
    from dpm.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError, match="expected a LiveBook"):
        CheckChannel(object())
    with pytest.raises(InvalidInputError, match="max_connections"):
        CheckChannel(live, max_connections=0)
    ch = CheckChannel(live)
    port = ch.start()
    try:
        from dpm.errors import DPMError

        with pytest.raises(DPMError, match="cannot listen"):
            CheckChannel(live, port=port).start()
    finally:
        ch.stop()


def test_warm_checks_are_answered_in_c_without_the_interpreter_lock(live):
    table = live._checks
    assert table.users == 0
    ch = CheckChannel(live)
    ch.start()
    try:
        assert table.users == 1  # the book now publishes each checked account's states
        aid = live.account_ids[5]
        with CheckClient("127.0.0.1", ch.port) as c:
            first = c.check(aid, [("BTC-PERPETUAL", 3.0)])  # no record yet: the Python path
            before = table.answered
            for q in (3.0, -3.0, 11.0):
                got = c.check(aid, [("BTC-PERPETUAL", q)])
                want = live.check(aid, [("BTC-PERPETUAL", q)])
                assert got == type(got)(want.accepted, want.initial_margin, want.initial_margin_after,
                                        want.maintenance_margin, want.equity, want.reason)
            assert table.answered - before == 3
            assert first.initial_margin_after == live.check(aid, [("BTC-PERPETUAL", 3.0)]).initial_margin_after
    finally:
        ch.stop()
    assert table.users == 0
