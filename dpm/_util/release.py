"""Freeing large containers off the latency path.

Dropping a dict of thousands of cached objects frees them all in one C call that holds the
interpreter lock: about 2 µs per cached what-if state, 13 ms for the 6,700 states a tick used to
drop. :func:`release_later` hands the container to one daemon thread that empties it in small
batches and lets other threads run between batches, so neither the caller nor the threads waiting
for the interpreter (pre-trade checks) wait for the frees.
"""
from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from typing import Any, Iterator

__all__ = ["release_later", "pending_releases", "held_back"]

#: items freed between two yields of the interpreter lock (about 30 µs of frees)
BATCH = 16

_queue: collections.deque = collections.deque()
_ready = threading.Condition()
_thread: threading.Thread | None = None
_holds = 0  # callers inside held_back(): the frees wait for them (see held_back)


def release_later(container: Any) -> None:
    """Empty ``container`` (a dict or a list; the caller must hold no other reference that it still
    uses) on the release thread, in batches of :data:`BATCH` items."""
    global _thread
    if not container:
        return
    with _ready:
        _queue.append(container)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_drain, name="dpm-release", daemon=True)
            _thread.start()
        _ready.notify()


@contextlib.contextmanager
def held_back() -> Iterator[None]:
    """While inside, the release thread frees nothing more, unless containers queue up behind the
    one it is emptying (memory stays bounded however often the caller comes back).

    For short work that has every CPU busy: a tick of the live book runs the margin kernel on both
    vCPUs of a small host, and the 9 ms of frees of 8,192 cached what-if states that the tick before
    handed over took 3-5 ms from each of the next ticks when they came back to back."""
    global _holds
    with _ready:
        _holds += 1
    try:
        yield
    finally:
        with _ready:
            _holds -= 1
            _ready.notify_all()


def pending_releases() -> int:
    """Containers handed over and not yet emptied (tests)."""
    with _ready:
        return len(_queue)


def _reset_after_fork() -> None:
    """A forked child has no release thread, and the parent's lock may have been held at the fork:
    the child starts afresh (what the parent had queued is freed in the child as it is dropped)."""
    global _queue, _ready, _thread, _holds
    _queue = collections.deque()
    _ready = threading.Condition()
    _thread = None
    _holds = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _drain() -> None:
    while True:
        with _ready:
            while not _queue:
                _ready.wait()
            container = _queue[0]
        pop = container.popitem if isinstance(container, dict) else container.pop
        while container:
            if _holds:
                with _ready:
                    while _holds and len(_queue) <= 1:
                        _ready.wait()
            for _ in range(min(BATCH, len(container))):
                pop()
            time.sleep(0)  # lets a waiting thread take the interpreter lock between batches
        with _ready:
            _queue.popleft()
