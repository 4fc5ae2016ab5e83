"""The gRPC server of the live book (``python -m dpm serve``).

Every RPC runs on a bounded thread pool; writes go through the runner's bounded queue (a full
queue answers ``RESOURCE_EXHAUSTED``: back-pressure, never unbounded memory), reads take the
book's reader lock for microseconds, and alert streams read bounded per-subscriber queues (a
subscriber that falls behind is cut off with ``RESOURCE_EXHAUSTED`` naming the sequence number to
resume from). SIGTERM / SIGINT stop the server gracefully: no new RPCs, running ones finish within
the grace period, queued events are applied and a final snapshot is written.
"""
from __future__ import annotations

import collections
import gc
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from dpm.errors import (
    DPMError,
    InvalidInputError,
    InvalidTypeError,
    MarketDataError,
    UnknownAccountError,
    UnknownInstrumentError,
)
from dpm.live.alerts import SubscriberOverflow
from dpm.live.events import EventRejected
from dpm.live.runner import Backpressure, LiveRunner, RunnerStopped
from dpm.service.protocol import event_from_proto, load

__all__ = ["LiveServicer", "serve", "start_server", "status_code", "status_name"]

#: requests (events, or batches) in flight per SubmitStream / SubmitBatches call at most (the
#: client then waits: gRPC flow control)
STREAM_WINDOW = 1024
#: events in one SubmitBatches batch at most (a larger batch is refused whole)
MAX_BATCH = 4096


def status_name(exc: BaseException) -> str:
    """The name of the gRPC status code of a dpm error (``"NOT_FOUND"``, ...)."""
    if isinstance(exc, Backpressure):
        return "RESOURCE_EXHAUSTED"
    if isinstance(exc, RunnerStopped):
        return "UNAVAILABLE"
    if isinstance(exc, (UnknownAccountError, UnknownInstrumentError)):
        return "NOT_FOUND"
    if isinstance(exc, (EventRejected, MarketDataError)):
        return "FAILED_PRECONDITION"
    if isinstance(exc, (InvalidInputError, InvalidTypeError)):
        return "INVALID_ARGUMENT"
    if isinstance(exc, DPMError):
        return "FAILED_PRECONDITION"
    return "INTERNAL"


def status_code(exc: BaseException) -> Any:
    """The gRPC status code of a dpm error."""
    import grpc

    return getattr(grpc.StatusCode, status_name(exc))


def error_message(exc: BaseException) -> str:
    if isinstance(exc, DPMError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


class LiveServicer:
    """Implements the ``LiveMargin`` service on a :class:`LiveRunner`."""

    def __init__(self, runner: LiveRunner, *, submit_timeout: float = 2.0, max_subscribers: int = 8,
                 subscriber_queue: int = 10_000) -> None:
        self.runner = runner
        self.book = runner.book
        self.pb, _ = load()
        self.submit_timeout = submit_timeout
        self.max_subscribers = max_subscribers
        self.subscriber_queue = subscriber_queue
        self._subs = 0
        self._subs_lock = threading.Lock()
        self._stopping = threading.Event()

    def _abort(self, context: Any, exc: BaseException) -> None:
        context.abort(status_code(exc), error_message(exc))

    # ------------------------------------------------------------------ writes
    def Submit(self, request: Any, context: Any) -> Any:
        try:
            event, client_id = event_from_proto(request)
            ack = self.runner.submit(event, client_id, timeout=self.submit_timeout)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            self._abort(context, exc)
        return self.pb.Ack(seq=ack.seq, duplicate=ack.duplicate, alerts=ack.alerts)

    def SubmitStream(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        return self._pipelined(request_iterator, context, self._submit_event, self._ack)

    def SubmitBatches(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        def submit(batch: Any) -> list:
            n = len(batch.events)
            if n > MAX_BATCH:  # refused whole: nothing of it is applied
                exc = InvalidInputError(f"batch: {n} events, above the limit of {MAX_BATCH}")
                return [exc] * n
            return [self._submit_event(req) for req in batch.events]

        return self._pipelined(request_iterator, context, submit,
                               lambda items: self.pb.AckBatch(acks=[self._ack(item) for item in items]))

    def _submit_event(self, req: Any) -> Any:
        """Queue one Event message: its pending handle, or the exception that refused it."""
        try:
            event, client_id = event_from_proto(req)
            return self.runner.submit_async(event, client_id, timeout=self.submit_timeout)
        except Exception as exc:  # noqa: BLE001 - reported in the Ack
            return exc

    def _ack(self, item: Any) -> Any:
        """The Ack of a queued event (waiting for the writer) or of a refusal."""
        if isinstance(item, BaseException):
            return self.pb.Ack(error=error_message(item), error_code=status_code(item).name)
        try:
            ack = item.result(None)
            return self.pb.Ack(seq=ack.seq, duplicate=ack.duplicate, alerts=ack.alerts)
        except Exception as exc:  # noqa: BLE001 - reported in the Ack
            return self.pb.Ack(error=error_message(exc), error_code=status_code(exc).name)

    def _pipelined(self, request_iterator: Iterator[Any], context: Any, submit: Callable[[Any], Any],
                   reply: Callable[[Any], Any]) -> Iterator[Any]:
        """Read requests on a thread of their own and ``submit`` each while earlier ones are being
        applied; yield ``reply(submitted)`` for each, in order, at most ``STREAM_WINDOW`` ahead."""
        pending: collections.deque = collections.deque()
        cond = threading.Condition()
        state = {"done": False, "error": None}
        window = threading.Semaphore(STREAM_WINDOW)

        def reader() -> None:
            try:
                for req in request_iterator:
                    window.acquire()
                    item = submit(req)
                    with cond:
                        pending.append(item)
                        cond.notify()
            except Exception as exc:  # noqa: BLE001 - the client went away or sent garbage
                state["error"] = exc
            finally:
                with cond:
                    state["done"] = True
                    cond.notify()

        t = threading.Thread(target=reader, name="dpm-submit-stream", daemon=True)
        t.start()
        while True:
            with cond:
                while not pending and not state["done"]:
                    cond.wait(0.5)
                    if not context.is_active():
                        return
                if not pending and state["done"]:
                    return
                item = pending.popleft()
            window.release()
            yield reply(item)

    # ------------------------------------------------------------------ reads
    def _margin_msg(self, st: Any) -> Any:
        return self.pb.AccountMargin(
            account=st.account, initial_margin=st.initial_margin, maintenance_margin=st.maintenance_margin,
            equity=st.equity, collateral_value=st.collateral_value, position_value=st.position_value,
            margin_ratio=st.margin_ratio, level=st.level, version=st.version, open_orders=st.open_orders,
            as_of_seq=st.as_of_seq)

    def GetMargin(self, request: Any, context: Any) -> Any:
        try:
            return self._margin_msg(self.book.margin(request.account))
        except Exception as exc:  # noqa: BLE001
            self._abort(context, exc)

    def GetAccount(self, request: Any, context: Any) -> Any:
        try:
            book = self.book
            with book._lock:  # one consistent view
                st = book.margin(request.account)
                pos = book.positions(request.account)
                orders = book.orders(request.account)
                bal = book.balances(request.account)
            pb = self.pb
            return pb.AccountDetail(
                margin=self._margin_msg(st),
                positions=[pb.Position(instrument=k, quantity=v) for k, v in pos.items()],
                orders=[pb.Order(order_id=k, instrument=o[0], quantity=o[1],
                                 **({} if o[2] is None else {"price": o[2]})) for k, o in orders.items()],
                balances=bal)
        except Exception as exc:  # noqa: BLE001
            self._abort(context, exc)

    def Check(self, request: Any, context: Any) -> Any:
        try:
            if not request.account:
                raise InvalidInputError("check: account is required")
            legs = [(leg.instrument, leg.quantity) for leg in request.orders]
            r = self.book.check(request.account, legs)
            return self.pb.CheckReply(accepted=r.accepted, initial_margin=r.initial_margin,
                                      initial_margin_after=r.initial_margin_after,
                                      maintenance_margin=r.maintenance_margin, equity=r.equity, reason=r.reason)
        except Exception as exc:  # noqa: BLE001
            self._abort(context, exc)

    def Status(self, request: Any, context: Any) -> Any:
        book = self.book
        m = book.market
        return self.pb.StatusReply(
            last_seq=book.last_seq, accounts=len(book), market_timestamp_ms=m.timestamp_ms,
            index_prices={u: um.index_price for u, um in m.underlyings.items()},
            queue_depth=self.runner.queue_depth, alerts_published=book.bus.published,
            subscribers=book.bus.subscribers, durable=self.runner.journal is not None,
            applied=self.runner.applied, rejected=self.runner.rejected,
            **dict(zip(("checks_in_c", "checks_in_python", "check_states_built", "check_states_recomputed"),
                       book._checks.counters())),
            timings=[self.pb.Timing(kind=k, **v) for k, v in self.runner.timing_summary().items()])

    def Digest(self, request: Any, context: Any) -> Any:
        book = self.book
        with book._writer:
            return self.pb.DigestReply(digest=book.digest(), last_seq=book.last_seq)

    # ------------------------------------------------------------------ alerts
    def Subscribe(self, request: Any, context: Any) -> Iterator[Any]:
        import grpc

        with self._subs_lock:
            if self._subs >= self.max_subscribers:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"too many subscribers (at most {self.max_subscribers})")
            self._subs += 1
        try:
            max_queue = int(request.max_queue) or self.subscriber_queue
            try:
                sub = self.book.bus.subscribe(int(request.from_seq) or None,
                                              max_queue=min(max_queue, self.subscriber_queue),
                                              account=request.account or None)
            except SubscriberOverflow as exc:
                context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
            context.add_callback(sub.close)
            pb = self.pb
            while not self._stopping.is_set():
                try:
                    a = sub.get(0.25)
                except StopIteration:
                    return
                except SubscriberOverflow as exc:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
                if a is None:
                    if not context.is_active():
                        return
                    continue
                yield pb.Alert(seq=a.seq, event_seq=a.event_seq, account=a.account, kind=a.kind,
                               from_level=a.from_level, to_level=a.to_level, equity=a.equity,
                               initial_margin=a.initial_margin, maintenance_margin=a.maintenance_margin,
                               timestamp_ms=a.timestamp_ms)
        finally:
            with self._subs_lock:
                self._subs -= 1

    def stop(self) -> None:
        self._stopping.set()


def start_server(runner: LiveRunner, host: str = "127.0.0.1", port: int = 0, *, max_workers: int = 16,
                 max_subscribers: int = 8, submit_timeout: float = 2.0,
                 subscriber_queue: int = 10_000) -> tuple[Any, LiveServicer, int]:
    """Start a gRPC server for ``runner``; returns ``(server, servicer, port)`` (port 0: a free one)."""
    import grpc

    _, services = load()
    if max_subscribers >= max_workers:
        raise InvalidInputError(f"max_subscribers ({max_subscribers}) must be below max_workers ({max_workers}): "
                                "alert streams hold a thread each")
    servicer = LiveServicer(runner, submit_timeout=submit_timeout, max_subscribers=max_subscribers,
                            subscriber_queue=subscriber_queue)
    server = grpc.server(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dpm-rpc"),
                         maximum_concurrent_rpcs=4 * max_workers,
                         options=[("grpc.max_receive_message_length", 4 * 1024 * 1024),
                                  ("grpc.so_reuseport", 0)])
    services.add_LiveMarginServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise DPMError(f"serve: cannot listen on {host}:{port}")
    server.start()
    return server, servicer, bound


def serve(runner: LiveRunner, host: str = "127.0.0.1", port: int = 50051, *, grace: float = 5.0,
          announce: Callable[[str], None] = print, install_signals: bool = True,
          switch_interval: float = 0.0005, check_port: int | None = None, **kwargs: Any) -> int:
    """Run the service until SIGTERM or SIGINT, then shut down gracefully; returns 0.

    ``announce`` receives one line ``dpm serve: listening on HOST:PORT`` once the port is bound
    (the real port when ``port`` is 0). ``switch_interval`` (seconds) is the interpreter's thread
    switch interval while serving: the writer thread runs Python between kernel calls, and an RPC
    thread waiting for the interpreter waits up to one interval (Python's default is 5 ms).
    ``check_port`` (0: any free port) also opens the binary pre-trade check channel
    (:mod:`dpm.service.fastcheck`) on ``host``, announced as ``dpm serve: checks on HOST:PORT``.
    """
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)
    gc.freeze()  # the book's long-lived objects leave the collector's generations: shorter pauses
    server = channel = None
    try:
        server, servicer, bound = start_server(runner, host, port, **kwargs)
        if check_port is not None:
            from dpm.service.fastcheck import CheckChannel

            channel = CheckChannel(runner.book, host, check_port)
            channel.start()
    except BaseException:
        # a port that cannot be bound: nothing keeps serving, and the interpreter is left as it was
        if server is not None:
            server.stop(None)
        sys.setswitchinterval(previous_interval)
        gc.unfreeze()
        raise
    stop = threading.Event()
    previous = {}
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        announce(f"dpm serve: listening on {host}:{bound}")
        if channel is not None:
            announce(f"dpm serve: checks on {host}:{channel.port}")
        while not stop.wait(0.5):
            if runner.failed is not None:
                break
    finally:
        servicer.stop()
        if channel is not None:
            channel.stop()
        server.stop(grace).wait(grace + 1.0)
        runner.close()
        for sig, h in previous.items():
            signal.signal(sig, h)
        sys.setswitchinterval(previous_interval)
        gc.unfreeze()
    return 0 if runner.failed is None else 1
