"""A binary TCP channel for pre-trade checks, beside the gRPC service.

A gRPC call from Python costs about 0.6-0.8 ms at p99 on a 2-vCPU host before the servicer does any
work (``benchmarks/probe_service_floor.py``: the C core's completion queue, the hand-off to a thread
pool, the interpreter lock), while a pre-trade check itself takes microseconds. Venues put their
latency-critical order entry on a plain binary protocol for the same reason (CME Group, "iLink 3
Binary Order Entry", https://www.cmegroup.com/confluence/display/EPICSANDBOX/iLink+3+Binary+Order+Entry,
read 2026-12-02).
This channel does only the check, with the same rule and answers as the ``Check`` RPC
(:meth:`dpm.live.LiveBook.check`). Each connection has a thread whose loop runs in C without the
interpreter lock (:mod:`dpm._core._checkpath`): it answers PINGs and checks (building the
account's what-if states from the book's positions when it has none), and calls
:meth:`CheckChannel._answer` in Python for everything else.

Frames (all integers little-endian; strings UTF-8)::

    frame    = u32 payload length (1..65535), payload
    request  = u8 kind, u64 request id, body
      kind 1 CHECK: u16 account length, account, u16 legs (1..1024),
                    legs x (u16 instrument length, instrument, f64 signed quantity)
      kind 2 PING:  nothing (the channel's floor: answered without touching the book)
    reply    = u8 kind, u64 request id (echoed), body
      0x81 CHECK:   u8 accepted, f64 initial margin, f64 initial margin after, f64 maintenance
                    margin, f64 equity (USD), u16 reason length, reason
      0x82 PONG:    nothing
      0xFF ERROR:   u16 status (gRPC's numbers: 3 invalid argument, 5 not found, 8 resource
                    exhausted, 9 failed precondition, 13 internal, 14 unavailable),
                    u16 message length, message

Replies come in request order on each connection (a client may pipeline). A malformed payload gets
an ERROR naming the field and the connection stays usable; a frame length outside 1..65535 cannot
be resynchronised, so it gets an ERROR and the connection is closed. Connections beyond
``max_connections`` get an ERROR (8) and are closed; a client that does not read its replies is
cut off after ``send_timeout`` seconds. None of this reaches the writer thread.
"""
from __future__ import annotations

import math
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from dpm.errors import DPMError, InvalidInputError, InvalidTypeError
from dpm.live.book import LiveBook
from dpm.service.server import error_message, status_name

__all__ = ["CheckChannel", "CheckClient", "CheckChannelError", "MAX_FRAME", "MAX_LEGS"]

MAX_FRAME = 65_535
MAX_LEGS = 1024
CHECK, PING = 1, 2
CHECK_REPLY, PONG, ERROR = 0x81, 0x82, 0xFF

_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<BQ")            # kind, request id
_U16 = struct.Struct("<H")
_F64 = struct.Struct("<d")
_CHECK_REPLY = struct.Struct("<IBQBddddH")  # frame length, kind, id, accepted, 4 x f64, reason length
_CHECK_BODY = struct.Struct("<BddddH")  # the same reply after kind and id
_PONG = struct.Struct("<IBQ")
_ERROR = struct.Struct("<IBQHH")
_MAX_MESSAGE = 1024

#: gRPC status numbers of the refusals (the same codes as the ``Check`` RPC's)
STATUS_NUMBERS = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
                  "INTERNAL": 13, "UNAVAILABLE": 14}


class _Malformed(Exception):
    """A payload that does not parse (the frame itself was intact)."""


def _string(payload: memoryview, at: int, field: str) -> tuple[str, int]:
    if at + 2 > len(payload):
        raise _Malformed(f"{field}: the payload ends inside its length")
    n = _U16.unpack_from(payload, at)[0]
    at += 2
    if at + n > len(payload):
        raise _Malformed(f"{field}: length {n} runs past the payload's end")
    try:
        return bytes(payload[at:at + n]).decode("utf-8"), at + n
    except UnicodeDecodeError:
        raise _Malformed(f"{field}: not valid UTF-8") from None


def parse_check(payload: memoryview) -> tuple[str, list[tuple[str, float]]]:
    """The account and the ``(instrument, quantity)`` legs of a CHECK payload (after kind and id)."""
    account, at = _string(payload, 0, "account")
    if not account:
        raise _Malformed("account: empty")
    if at + 2 > len(payload):
        raise _Malformed("legs: the payload ends before the leg count")
    n = _U16.unpack_from(payload, at)[0]
    at += 2
    if not 1 <= n <= MAX_LEGS:
        raise _Malformed(f"legs: count {n} outside 1..{MAX_LEGS}")
    legs = []
    for k in range(n):
        name, at = _string(payload, at, f"legs[{k}].instrument")
        if at + 8 > len(payload):
            raise _Malformed(f"legs[{k}].quantity: the payload ends inside it")
        q = _F64.unpack_from(payload, at)[0]
        at += 8
        if not math.isfinite(q):
            raise _Malformed(f"legs[{k}].quantity: not finite ({q!r})")
        legs.append((name, q))
    if at != len(payload):
        raise _Malformed(f"payload: {len(payload) - at} bytes after the last leg")
    return account, legs


def encode_check(request_id: int, account: str, legs: list[tuple[str, float]]) -> bytes:
    """One CHECK request frame."""
    a = account.encode("utf-8")
    parts = [_HEAD.pack(CHECK, request_id), _U16.pack(len(a)), a, _U16.pack(len(legs))]
    for name, q in legs:
        b = name.encode("utf-8")
        parts += [_U16.pack(len(b)), b, _F64.pack(float(q))]
    payload = b"".join(parts)
    if len(payload) > MAX_FRAME:
        raise InvalidInputError(f"check: the request is {len(payload)} bytes, above the frame limit {MAX_FRAME}")
    return _U32.pack(len(payload)) + payload


def _error_frame(request_id: int, status: int, message: str) -> bytes:
    m = message.encode("utf-8")[:_MAX_MESSAGE]
    return _ERROR.pack(_ERROR.size - 4 + len(m), ERROR, request_id, status, len(m)) + m


def _bad_frame(size: int) -> bytes:
    """The ERROR for a frame length that cannot be resynchronised (the connection then closes)."""
    return _error_frame(0, STATUS_NUMBERS["INVALID_ARGUMENT"],
                        f"frame: length {size} outside 1..{MAX_FRAME}; closing the connection")


def _check_frame(request_id: int, r: Any) -> bytes:
    reason = r.reason.encode("utf-8")[:_MAX_MESSAGE]
    return _CHECK_REPLY.pack(_CHECK_REPLY.size - 4 + len(reason), CHECK_REPLY, request_id, bool(r.accepted),
                             r.initial_margin, r.initial_margin_after, r.maintenance_margin, r.equity,
                             len(reason)) + reason


class CheckChannel:
    """The binary check channel of a live book: ``start()`` binds and returns the port; ``stop()``.

    Parameters
    ----------
    book : LiveBook
        The book whose :meth:`~dpm.live.LiveBook.check` answers (read-only: a check never queues an
        event).
    host, port : str, int
        Where to listen (port 0: any free port).
    max_connections : int
        Open connections at most; each holds one thread.
    send_timeout : float
        Seconds a reply may wait for a client that does not read before its connection is closed.
    """

    def __init__(self, book: Any, host: str = "127.0.0.1", port: int = 0, *, max_connections: int = 64,
                 send_timeout: float = 5.0) -> None:
        if not isinstance(book, LiveBook):  # the C loop reads the book's check table
            raise InvalidTypeError(f"book: expected a LiveBook, got {type(book).__name__}")
        if not 1 <= int(max_connections) <= 4096:
            raise InvalidInputError(f"max_connections: expected 1..4096, got {max_connections!r}")
        self.book = book
        self.host, self.port = host, int(port)
        self.max_connections = int(max_connections)
        self.send_timeout = float(send_timeout)
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        #: connections turned away at the limit (written by the accepting thread only)
        self.refused_connections = 0
        self._table_used = False

    def start(self) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self.port))
        except OSError as exc:
            s.close()
            raise DPMError(f"check channel: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        s.listen(128)
        self._listener = s
        if not self._table_used:
            with self.book._lock:  # from now on the book gives the table each account's what-if states
                self.book._checks.users += 1
            self._table_used = True
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept, name="dpm-check-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self.port

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.send_timeout)
            with self._lock:
                if self._closed.is_set():  # stop() ran meanwhile: it will not see this connection
                    conn.close()
                    return
                full = len(self._conns) >= self.max_connections
                if not full:
                    self._conns.add(conn)
            if full:
                self.refused_connections += 1
                try:
                    conn.sendall(_error_frame(0, STATUS_NUMBERS["RESOURCE_EXHAUSTED"],
                                              f"too many connections (at most {self.max_connections})"))
                except OSError:
                    pass
                conn.close()
                continue
            t = threading.Thread(target=self._serve, args=(conn,), name="dpm-check-conn", daemon=True)
            t.start()
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _serve(self, conn: socket.socket) -> None:
        try:
            # the C loop: a blocking socket whose sends give up after the send timeout
            conn.settimeout(None)
            sec = int(self.send_timeout)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("@ll", sec, int((self.send_timeout - sec) * 1e6)))
            self.book._checks.serve(conn.fileno(), self._answer, _bad_frame)
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, payload: memoryview) -> bytes:
        if len(payload) < _HEAD.size:
            return _error_frame(0, STATUS_NUMBERS["INVALID_ARGUMENT"],
                                f"payload: {len(payload)} bytes, shorter than kind and request id")
        kind, rid = _HEAD.unpack_from(payload, 0)
        try:
            if kind == CHECK:
                account, legs = parse_check(payload[_HEAD.size:])
                return _check_frame(rid, self.book.check(account, legs))
            if kind == PING:
                if len(payload) != _HEAD.size:
                    raise _Malformed(f"payload: {len(payload) - _HEAD.size} bytes after a PING")
                return _PONG.pack(_PONG.size - 4, PONG, rid)
            raise _Malformed(f"kind: unknown request kind {kind}")
        except _Malformed as exc:
            return _error_frame(rid, STATUS_NUMBERS["INVALID_ARGUMENT"], f"check: {exc}")
        except Exception as exc:  # noqa: BLE001 - every refusal becomes an ERROR reply
            return _error_frame(rid, STATUS_NUMBERS[status_name(exc)], error_message(exc))

    def stop(self) -> None:
        """Close the listener and every connection; join the threads (bounded)."""
        with self._lock:  # after this, the accepting thread adds no connection
            self._closed.set()
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(): close() alone leaves the port listening on Linux
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(2.0)
        if self._table_used:
            with self.book._lock:
                self.book._checks.users -= 1
            self._table_used = False


@dataclass(frozen=True)
class CheckReply:
    """A CHECK answer (the ``Check`` RPC's fields)."""

    accepted: bool
    initial_margin: float
    initial_margin_after: float
    maintenance_margin: float
    equity: float
    reason: str


class CheckChannelError(DPMError):
    """An ERROR reply: ``status`` is the gRPC status number, ``name`` its name."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.name = next((k for k, v in STATUS_NUMBERS.items() if v == status), str(status))
        super().__init__(f"{self.name}: {message}")


class CheckClient:
    """Blocking client of one :class:`CheckChannel` connection (not thread-safe: one per thread).

    >>> client = CheckClient("127.0.0.1", 50052)                 # doctest: +SKIP
    >>> client.check("alice", [("BTC-PERPETUAL", 10.0)]).accepted  # doctest: +SKIP
    """

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next = 0
        self._buf = bytearray()

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65_536)
            if not chunk:
                raise DPMError("check channel: the server closed the connection")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _reply(self, rid: int, expect: int) -> bytes:
        """The body of the reply to request ``rid``, which must be of kind ``expect``."""
        kind, got, body = self.read_reply()
        if kind == ERROR:
            status, n = struct.unpack_from("<HH", body)
            raise CheckChannelError(status, body[4:4 + n].decode("utf-8", "replace"))
        if kind != expect or got != rid:
            raise DPMError(f"check channel: expected reply kind {expect:#x} to request {rid}, got {kind:#x} to {got}")
        return body

    def send_raw(self, frame: bytes) -> None:
        """Send bytes as they are (tests of malformed input)."""
        self.sock.sendall(frame)

    def read_reply(self) -> tuple[int, int, bytes]:
        """``(kind, request id, body)`` of the next reply, whatever it is (tests)."""
        size = _U32.unpack(self._read(4))[0]
        payload = self._read(size)
        kind, rid = _HEAD.unpack_from(payload, 0)
        return kind, rid, payload[_HEAD.size:]

    def check(self, account: str, orders: list[tuple[str, float]]) -> CheckReply:
        self._next += 1
        self.sock.sendall(encode_check(self._next, account, orders))
        body = self._reply(self._next, CHECK_REPLY)
        accepted, im, im_after, mm, eq, n = _CHECK_BODY.unpack_from(body)
        at = _CHECK_BODY.size
        return CheckReply(bool(accepted), im, im_after, mm, eq, body[at:at + n].decode("utf-8"))

    def ping(self) -> None:
        self._next += 1
        self.sock.sendall(_U32.pack(_HEAD.size) + _HEAD.pack(PING, self._next))
        self._reply(self._next, PONG)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "CheckClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
