"""LiveRunner: the single writer of a live book, with a bounded queue and a durable journal.

Submitters (service threads, in-process callers) put events on a bounded queue; one writer thread
takes them in batches and, for each event in order: validates it and computes its effect
(:meth:`LiveBook.prepare`), appends it to the journal, applies it (:meth:`LiveBook.commit`). After
the batch the journal commits (one WAL write for the batch), then the alerts are published and
the submitters get their acknowledgements: an acknowledged event is durable, an alert is only
ever published for a durable event.

A full queue is back-pressure: :meth:`LiveRunner.submit` waits at most ``timeout`` seconds for room
and then raises :class:`Backpressure`. An event carrying a ``client_id`` already in the journal
is not applied again; its original sequence number is returned (safe retries after a timeout or
a crash). If the journal cannot commit, the in-memory book is ahead of the log: the runner stops
accepting events (:class:`RunnerStopped`) rather than acknowledge anything it might lose.
"""
from __future__ import annotations

import collections
import hashlib
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from dpm.engines.margin import MarginEngine
from dpm.errors import DPMError, InvalidInputError
from dpm.live.alerts import Alert
from dpm.live.book import LiveBook
from dpm.live.events import Event, decode_event, encode_event
from dpm.live.journal import Journal, JournalError
from dpm.portfolio.accounts import AccountBook

__all__ = ["Ack", "Backpressure", "LiveRunner", "RunnerStopped"]

_STOP = object()


class Backpressure(DPMError):
    """The event queue stayed full for the whole timeout (the writer is behind): retry later."""


class RunnerStopped(DPMError):
    """The runner is shutting down or has stopped after a journal failure."""


@dataclass(frozen=True)
class Ack:
    """Acknowledgement of an applied (and durable, with a journal) event."""

    seq: int
    duplicate: bool = False
    alerts: int = 0


class _Pending:
    __slots__ = ("event", "client_id", "done", "ack", "error", "callback")

    def __init__(self, event: Event, client_id: str | None, callback: Callable | None = None) -> None:
        self.event = event
        self.client_id = client_id
        self.done = threading.Event()
        self.ack: Ack | None = None
        self.error: BaseException | None = None
        self.callback = callback

    def finish(self, ack: Ack | None = None, error: BaseException | None = None) -> None:
        self.ack, self.error = ack, error
        self.done.set()
        if self.callback is not None:
            try:
                self.callback(self)
            except Exception:  # noqa: BLE001 - a broken callback must not kill the writer
                pass

    def result(self, timeout: float | None = None) -> Ack:
        if not self.done.wait(timeout):
            raise Backpressure("the event was queued but not applied within the timeout; it may still be "
                               "applied: resubmit with the same client_id to find out")
        if self.error is not None:
            raise self.error
        assert self.ack is not None
        return self.ack


class _SnapshotRequest:
    """A queue item: snapshot once everything before it is durable (run by the writer)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.seq = -1

    def run(self, runner: "LiveRunner") -> None:
        try:
            if runner._snap_thread is not None:
                runner._snap_thread.join()
            state = runner.book.to_state()
            self.seq = int(state["meta"]["last_seq"])
            runner.journal.write_snapshot(self.seq, state)
            runner._since_snapshot = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            self.error = exc
        self.done.set()

    def finish(self, ack: Any = None, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


def fingerprint(engine: MarginEngine, currencies: tuple[str, ...]) -> str:
    """What a journal belongs to: the instrument names, model and base market (hash)."""
    h = hashlib.sha256()
    h.update("\n".join(engine.instruments.name.tolist()).encode())
    m = engine.model
    h.update(json.dumps([m.name, m.im_factor, m.mm_factor, m.aggregation_mode, list(currencies)]).encode())
    mk = engine.market
    h.update(json.dumps([mk.timestamp_ms, {u: um.index_price for u, um in mk.underlyings.items()}],
                        sort_keys=True).encode())
    return h.hexdigest()


class LiveRunner:
    """Owns a :class:`LiveBook`, its :class:`Journal` (optional) and the writer thread.

    Build with :meth:`open` (recovers from a journal, or starts one) or directly from a book.

    Parameters
    ----------
    book : LiveBook
    journal : Journal, optional
        Without one nothing is durable (for tests and benchmarks of the book alone).
    queue_size : int
        Events waiting for the writer at most (back-pressure beyond).
    batch : int
        Events the writer applies per journal commit at most.
    snapshot_every : int
        Write a snapshot after this many events (in a background thread; 0: only at close).
    """

    def __init__(self, book: LiveBook, journal: Journal | None = None, *, queue_size: int = 10_000,
                 batch: int = 256, snapshot_every: int = 200_000) -> None:
        for name, v in (("queue_size", queue_size), ("batch", batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name}: must be an int >= 1, got {v!r}")
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 0:
            raise InvalidInputError(f"snapshot_every: must be an int >= 0, got {snapshot_every!r}")
        self.book = book
        self.journal = journal
        self.batch = batch
        self.snapshot_every = snapshot_every
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._accepting = True
        self.failed: BaseException | None = None
        self._since_snapshot = 0
        self._snap_thread: threading.Thread | None = None
        self._thread = threading.Thread(target=self._run, name="dpm-live-writer", daemon=True)
        self.applied = 0
        self.rejected = 0
        #: per event type, the last durations (seconds) of prepare + commit: for a tick, the time from
        #: the writer taking it to every account's margin being fresh
        self.timings: dict[str, collections.deque] = {}
        self._thread.start()

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(cls, path: Any, engine: MarginEngine, book: AccountBook | None = None, *,
             synchronous: str = "normal", book_options: dict[str, Any] | None = None,
             **kwargs: Any) -> "LiveRunner":
        """Recover the book from the journal at ``path``, or create the journal from ``book``.

        Raises
        ------
        InvalidInputError
            The journal exists but belongs to other instruments / model / market, or ``book`` is
            given for an existing journal.
        JournalError
            The journal cannot be read, or an event in it cannot be replayed.
        """
        journal = Journal(path, synchronous=synchronous)
        opts = dict(book_options or {})
        try:
            snap = journal.latest_snapshot()
            if snap is None:
                if journal.last_seq():
                    raise JournalError(f"journal {str(path)!r} has events but no intact snapshot")
                live = LiveBook(engine, book, **opts)
                journal.set_meta("fingerprint", fingerprint(engine, live.currencies))
                journal.write_snapshot(0, live.to_state())
            else:
                if book is not None:
                    raise InvalidInputError(f"journal {str(path)!r} already holds a book; do not pass one")
                seq, state = snap
                cur = tuple(state["meta"]["currencies"])
                if journal.get_meta("fingerprint") != fingerprint(engine, cur):
                    raise InvalidInputError(f"journal {str(path)!r} was written for other instruments, model or "
                                            "base market")
                live = LiveBook.from_state(engine, state, **opts)
                if live.last_seq != seq:
                    raise JournalError(f"journal: snapshot {seq} holds the state after event {live.last_seq}")
                for s, body, _ in journal.events_after(seq):
                    try:
                        ev = decode_event(body)
                        live.bus.publish(live.commit(live.prepare(ev), s))
                    except DPMError as exc:
                        raise JournalError(f"journal: event {s} cannot be replayed ({exc})") from None
        except BaseException:
            journal.close()
            raise
        return cls(live, journal, **kwargs)

    # ------------------------------------------------------------------ submitting
    def submit_async(self, event: Event, client_id: str | None = None, *, timeout: float | None = 5.0,
                     callback: Callable | None = None) -> _Pending:
        """Queue ``event``; the returned handle's ``result()`` waits for the acknowledgement."""
        if not self._accepting:
            raise RunnerStopped(self._stopped_reason())
        if client_id is not None and (not isinstance(client_id, str) or not client_id or len(client_id) > 128):
            raise InvalidInputError(f"client_id: must be a non-empty str of at most 128 characters, got {client_id!r}")
        p = _Pending(event, client_id, callback)
        try:
            self._queue.put(p, timeout=timeout)
        except queue.Full:
            raise Backpressure(f"the event queue is full ({self._queue.maxsize} events waiting)") from None
        if not self._thread.is_alive():  # the writer stopped meanwhile: the event will never be applied
            raise RunnerStopped(self._stopped_reason())
        return p

    def submit(self, event: Event, client_id: str | None = None, *, timeout: float | None = 5.0) -> Ack:
        """Apply ``event`` through the writer; returns its :class:`Ack` or raises its error."""
        p = self.submit_async(event, client_id, timeout=timeout)
        return p.result(None if timeout is None else timeout + 60.0)

    def timing_summary(self) -> dict[str, dict[str, float]]:
        """Per event type: count and p50 / p99 / p99.9 / max of the recent apply durations (µs)."""
        out = {}
        for kind, d in list(self.timings.items()):
            v = sorted(d)
            if not v:
                continue
            q = lambda f: v[min(len(v) - 1, int(f * len(v)))] * 1e6  # noqa: E731
            out[kind] = {"count": len(v), "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999),
                         "max_us": v[-1] * 1e6}
        return out

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def _stopped_reason(self) -> str:
        if self.failed is not None:
            return f"the live book stopped after a journal failure: {self.failed}"
        return "the live book is shutting down"

    # ------------------------------------------------------------------ the writer
    def _refuse_queued(self) -> None:
        """Empty the queue, finishing every waiting submission with ``RunnerStopped``."""
        while True:
            try:
                p = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(p, (_Pending, _SnapshotRequest)):
                p.finish(error=RunnerStopped(self._stopped_reason()))

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug in the writer: stop, never hang submitters
            self.failed = RuntimeError(f"internal error in the writer: {type(exc).__name__}: {exc}")
            self._accepting = False
            self._refuse_queued()

    def _loop(self) -> None:
        book, journal = self.book, self.journal
        carry = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is _STOP:
                return
            if isinstance(item, _SnapshotRequest):
                item.run(self)
                continue
            items = [item]
            while len(items) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or isinstance(nxt, _SnapshotRequest):
                    carry = nxt  # handled after this batch is durable
                    break
                items.append(nxt)
            self._apply_batch(book, journal, items)
            if journal is not None and self.snapshot_every and self._since_snapshot >= self.snapshot_every:
                self._snapshot_background()

    def _apply_batch(self, book: LiveBook, journal: Journal | None, items: list[_Pending]) -> None:
        if self.failed is not None:
            for p in items:
                p.finish(error=RunnerStopped(self._stopped_reason()))
            return
        done: list[tuple[_Pending, Ack, list[Alert]]] = []
        refused: list[tuple[_Pending, BaseException]] = []
        try:
            if journal is not None:
                journal.begin()
            for p in items:
                if journal is not None and p.client_id is not None:
                    prev = journal.lookup_client(p.client_id)
                    if prev is not None:
                        done.append((p, Ack(prev, duplicate=True), []))
                        continue
                t0 = time.perf_counter()
                try:
                    change = book.prepare(p.event)
                except DPMError as exc:
                    refused.append((p, exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - a bug: refuse the event, keep the writer alive
                    refused.append((p, RuntimeError(f"internal error: {type(exc).__name__}: {exc}")))
                    continue
                seq = book.last_seq + 1
                if journal is not None:
                    journal.append(seq, encode_event(p.event), p.client_id)
                alerts = book.commit(change, seq)
                done.append((p, Ack(seq, False, len(alerts)), alerts))
                kind = type(p.event).__name__
                d = self.timings.get(kind)
                if d is None:
                    d = self.timings[kind] = collections.deque(maxlen=100_000)
                d.append(time.perf_counter() - t0)
            if journal is not None:
                journal.commit()
        except JournalError as exc:
            # the book may now be ahead of the log: acknowledge nothing more, ever
            self.failed = exc
            self._accepting = False
            for p in items:
                if not p.done.is_set():
                    p.finish(error=RunnerStopped(self._stopped_reason()))
            return
        for _, _, alerts in done:
            book.bus.publish(alerts)
        for p, ack, _ in done:
            p.finish(ack)
        for p, exc in refused:
            p.finish(error=exc)
        self.applied += sum(1 for _, a, _ in done if not a.duplicate)
        self.rejected += len(refused)
        self._since_snapshot += len(done)

    def _snapshot_background(self) -> None:
        if self._snap_thread is not None and self._snap_thread.is_alive():
            return  # the previous one is still being written: try again after the next batch
        self._since_snapshot = 0
        state = self.book.to_state()  # a copy, taken by the writer: consistent
        seq = int(state["meta"]["last_seq"])
        journal = self.journal

        def write() -> None:
            try:
                journal.write_snapshot(seq, state)
            except JournalError:
                pass  # the log still has every event; the next snapshot will try again

        self._snap_thread = threading.Thread(target=write, name="dpm-live-snapshot", daemon=True)
        self._snap_thread.start()

    # ------------------------------------------------------------------ shutdown
    def snapshot(self, timeout: float = 300.0) -> int:
        """Write a snapshot after the events queued so far (waits); returns its sequence number."""
        if self.journal is None:
            raise InvalidInputError("snapshot: the runner has no journal")
        if not self._accepting:
            raise RunnerStopped(self._stopped_reason())
        req = _SnapshotRequest()
        self._queue.put(req, timeout=timeout)
        if not req.done.wait(timeout):
            raise Backpressure("snapshot: not written within the timeout")
        if req.error is not None:
            raise req.error
        return req.seq

    def close(self, *, snapshot: bool = True, timeout: float = 60.0) -> None:
        """Stop accepting events, apply what is queued, write a final snapshot, close the journal."""
        if not self._accepting and not self._thread.is_alive():
            return
        self._accepting = False
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:  # the writer is gone and the queue full: nothing will take the marker
            pass
        self._thread.join(timeout)
        self._refuse_queued()  # events queued after the stop marker: refused, never left waiting
        if self._snap_thread is not None:
            self._snap_thread.join(timeout)
        if self.journal is not None:
            if snapshot and self.failed is None:
                try:
                    state = self.book.to_state()
                    self.journal.write_snapshot(int(state["meta"]["last_seq"]), state)
                except JournalError:
                    pass
            self.journal.close()
        self.book.bus.close()

    def __enter__(self) -> "LiveRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
