"""dpm._util.release: containers handed over are emptied on the release thread, in batches, and
their items freed; the caller does not wait for the frees."""
from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import pytest

from dpm._util.release import BATCH, held_back, pending_releases, release_later


class Item:
    pass


def _wait_until(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_dict_and_list_items_are_freed():
    d = {k: Item() for k in range(5 * BATCH + 3)}
    lst = [Item() for _ in range(BATCH - 1)]
    refs = [weakref.ref(v) for v in d.values()] + [weakref.ref(v) for v in lst]
    release_later(d)
    release_later(lst)
    del d, lst
    _wait_until(lambda: pending_releases() == 0)
    gc.collect()
    assert all(r() is None for r in refs)


def test_empty_and_many_containers():
    release_later({})
    release_later([])
    boxes = [{k: Item() for k in range(50)} for _ in range(20)]
    refs = [weakref.ref(v) for b in boxes for v in b.values()]
    for b in boxes:
        release_later(b)
    del boxes, b
    _wait_until(lambda: pending_releases() == 0)
    gc.collect()
    assert all(r() is None for r in refs)


def test_held_back_defers_the_frees_unless_containers_queue_up():
    """Inside held_back() the release thread frees at most a batch more of the container it is
    emptying; the rest waits for the exit. A second container queued behind it lets the first be
    emptied anyway (memory stays bounded), and only the last one waits."""
    _wait_until(lambda: pending_releases() == 0)
    first = [Item() for _ in range(40 * BATCH)]
    refs = [weakref.ref(v) for v in first]
    with held_back():
        release_later(first)
        del first
        time.sleep(0.2)
        gc.collect()
        assert sum(r() is None for r in refs) <= BATCH  # held: one batch at most went
        assert pending_releases() == 1
        second = [Item() for _ in range(40 * BATCH)]
        refs2 = [weakref.ref(v) for v in second]
        release_later(second)
        del second
        _wait_until(lambda: pending_releases() == 1)  # the first was emptied: two were queued
        gc.collect()
        assert all(r() is None for r in refs)
        time.sleep(0.2)
        gc.collect()
        assert sum(r() is None for r in refs2) <= BATCH  # the last one waits again
    _wait_until(lambda: pending_releases() == 0)
    gc.collect()
    assert all(r() is None for r in refs2)


def test_other_threads_run_while_a_large_container_is_freed():
    # a container whose items take a while to free: another thread still gets the interpreter
    # between batches (it is not held for the whole container)
    class Slow:
        def __del__(self):
            t = time.perf_counter()
            while time.perf_counter() - t < 2e-4:
                pass

    d = {k: Slow() for k in range(4000)}  # about 0.8 s of frees
    refs = [weakref.ref(v) for v in d.values()]
    ticks = []
    stop = threading.Event()

    def other():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=other)
    t.start()
    try:
        release_later(d)
        del d
        alive = sum(r() is not None for r in refs)  # the caller freed nothing itself
        start = time.perf_counter()
        _wait_until(lambda: pending_releases() == 0)
        end = time.perf_counter()
    finally:
        stop.set()
        t.join(10)
    assert alive > 2000
    assert sum(start <= x <= end for x in ticks) >= 10  # the other thread ran during the frees


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_releases_on_its_own_thread():
    from dpm._util import release

    # the parent's release thread is busy, and its lock is held at the fork (as the release thread
    # holds it while it takes a container): the child must neither block nor lose its releases
    release_later({k: Item() for k in range(20_000)})
    with release._ready:
        pid = os.fork()
        if pid == 0:  # the child (it never leaves this block: os._exit)
            code = 1
            try:
                d = {k: Item() for k in range(100)}
                release_later(d)
                deadline = time.monotonic() + 20
                while d and time.monotonic() < deadline:
                    time.sleep(0.01)
                code = 0 if not d else 2
            finally:
                os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, "the child hung"
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
