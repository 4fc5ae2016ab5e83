"""Durability of the live book: journal + snapshots restore the exact state; idempotent resubmission;
back-pressure; a journal failure stops the runner instead of acknowledging what could be lost."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
from live_stream import recorded_stream

from dpm.engines.margin import MarginEngine
from dpm.errors import InvalidInputError
from dpm.live import EventRejected, Fill, LiveBook, OpenAccount, Transfer
from dpm.live import runner as runner_module
from dpm.live.journal import Journal
from dpm.live.runner import Backpressure, LiveRunner, RunnerStopped
from dpm.market.sample import default_instruments, default_market
from dpm.models import deribit_pm
from dpm.portfolio.sample import generate_accounts


@pytest.fixture(scope="module")
def engine():
    return MarginEngine(default_market(), default_instruments(), workers=1)


@pytest.fixture(scope="module")
def book(engine):
    return generate_accounts(150, engine.instruments, seed=4)


@pytest.fixture(scope="module")
def events(engine, book):
    return recorded_stream(engine, book, 1200, seed=6)


def _in_process(engine, book, events):
    live = LiveBook(engine, book, workers=1)
    for ev in events:
        try:
            live.apply(ev)
        except EventRejected:
            pass
    return live


def _submit_all(runner, events, prefix="e"):
    acks = {}
    for k, ev in enumerate(events):
        try:
            acks[k] = runner.submit(ev, f"{prefix}{k}").seq
        except EventRejected:
            pass
    return acks


def test_reopen_restores_the_exact_state(tmp_path, engine, book, events):
    path = tmp_path / "live.sqlite"
    runner = LiveRunner.open(path, engine, book, book_options={"workers": 1}, snapshot_every=250)
    acks = _submit_all(runner, events)
    digest = runner.book.digest()
    runner.close()
    assert sorted(acks.values()) == list(range(1, len(acks) + 1))
    again = LiveRunner.open(path, engine, book_options={"workers": 1})
    try:
        assert again.book.digest() == digest == _in_process(engine, book, events).digest()
        assert again.book.last_seq == len(acks)
    finally:
        again.close()


def test_replay_after_an_unclean_stop(tmp_path, engine, book, events):
    """No close(): the state comes from the last snapshot plus the events after it."""
    path = tmp_path / "live.sqlite"
    runner = LiveRunner.open(path, engine, book, book_options={"workers": 1}, snapshot_every=400)
    _submit_all(runner, events[:900])
    expect = runner.book.digest()
    runner._accepting = False  # abandon it like a crashed process (the journal is not closed)
    journal = Journal(path)
    snap = journal.latest_snapshot()
    assert snap is not None and 0 < snap[0] < runner.book.last_seq  # replay has work to do
    journal.close()
    again = LiveRunner.open(path, engine, book_options={"workers": 1})
    try:
        assert again.book.digest() == expect
    finally:
        again.close()
        runner._queue.put(runner_module._STOP)  # end the abandoned writer thread


def test_damaged_snapshot_falls_back_to_the_previous_one(tmp_path, engine, book, events):
    path = tmp_path / "live.sqlite"
    runner = LiveRunner.open(path, engine, book, book_options={"workers": 1}, snapshot_every=0)
    _submit_all(runner, events[:300])
    runner.snapshot()
    _submit_all(runner, events[300:600], prefix="f")
    runner.snapshot()
    expect = runner.book.digest()
    runner.close(snapshot=False)
    snaps = sorted((tmp_path / "live.sqlite.snapshots").glob("*.npz"))
    newest = snaps[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    again = LiveRunner.open(path, engine, book_options={"workers": 1})
    try:
        assert again.book.digest() == expect
    finally:
        again.close()


def test_client_id_makes_resubmission_idempotent(tmp_path, engine, book):
    runner = LiveRunner.open(tmp_path / "j.sqlite", engine, book, book_options={"workers": 1})
    try:
        a = runner.submit(OpenAccount("zz"), "open-zz")
        b = runner.submit(Transfer("zz", "USDC", 10.0), "dep-1")
        d = runner.book.digest()
        again = runner.submit(Transfer("zz", "USDC", 10.0), "dep-1")
        assert again.duplicate and again.seq == b.seq and runner.book.digest() == d
        assert runner.submit(OpenAccount("zz"), "open-zz").seq == a.seq
        with pytest.raises(InvalidInputError):
            runner.submit(Transfer("zz", "USDC", 1.0), "")
    finally:
        runner.close()


def test_foreign_journal_is_refused(tmp_path, engine, book):
    path = tmp_path / "j.sqlite"
    LiveRunner.open(path, engine, book, book_options={"workers": 1}).close()
    other = MarginEngine(engine.market, engine.instruments, deribit_pm(), workers=1)
    with pytest.raises(InvalidInputError, match="other instruments, model"):
        LiveRunner.open(path, other)
    with pytest.raises(InvalidInputError, match="already holds a book"):
        LiveRunner.open(path, engine, book)


def test_full_queue_is_backpressure_not_memory(engine, book):
    runner = LiveRunner(LiveBook(engine, book, workers=1), None, queue_size=2)
    try:
        with runner.book._writer:  # the writer is stuck behind this lock
            runner.submit_async(OpenAccount("q0"))
            pend = []
            with pytest.raises(Backpressure):
                for k in range(10):
                    pend.append(runner.submit_async(OpenAccount(f"q{k + 1}"), timeout=0.05))
            assert runner.queue_depth <= 2
        for p in pend:
            p.result(10)
    finally:
        runner.close()


def test_journal_failure_stops_acknowledging(tmp_path, engine, book):
    runner = LiveRunner.open(tmp_path / "j.sqlite", engine, book, book_options={"workers": 1})
    runner.submit(OpenAccount("x"))
    runner.journal._db.close()  # the disk goes away
    with pytest.raises(RunnerStopped):
        runner.submit(Transfer("x", "USDC", 1.0))
    with pytest.raises(RunnerStopped):
        runner.submit(Transfer("x", "USDC", 1.0))
    assert runner.failed is not None
    runner.close()


def test_concurrent_submitters_are_serialised(tmp_path, engine, book):
    runner = LiveRunner.open(tmp_path / "j.sqlite", engine, book, book_options={"workers": 1})
    ids = runner.book.account_ids
    got: dict[int, object] = {}
    lock = threading.Lock()

    def worker(w):
        rng = np.random.default_rng(w)
        for k in range(150):
            ev = Fill(ids[int(rng.integers(len(ids)))], "BTC-PERPETUAL", float(rng.integers(1, 100)) * 10.0,
                      92_000.0)
            try:
                ack = runner.submit(ev, f"w{w}-{k}")
            except EventRejected:
                continue
            with lock:
                got[ack.seq] = ev

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(got) == list(range(1, len(got) + 1))
        ordered = [got[s] for s in sorted(got)]
        assert runner.book.digest() == _in_process(engine, book, ordered).digest()
    finally:
        runner.close()


def test_journal_rejects_gaps(tmp_path, engine, book):
    path = tmp_path / "j.sqlite"
    runner = LiveRunner.open(path, engine, book, book_options={"workers": 1}, snapshot_every=0)
    for k in range(5):
        runner.submit(OpenAccount(f"g{k}"))
    runner._accepting = False
    runner._queue.put(runner_module._STOP)
    db = sqlite3.connect(str(path))
    db.execute("DELETE FROM events WHERE seq = 3")
    db.commit()
    db.close()
    from dpm.live.journal import JournalError

    with pytest.raises(JournalError, match="missing"):
        LiveRunner.open(path, engine)


def test_client_ids_outlive_pruned_events(tmp_path):
    """Snapshots prune old events from the log; their client ids still mark retries as duplicates."""
    j = Journal(tmp_path / "j.sqlite", keep_snapshots=1)
    j.begin()
    for seq in range(1, 6):
        j.append(seq, f'{{"n": {seq}}}', f"c{seq}")
    j.commit()
    state = {"arrays": {"x": np.zeros(1)}, "meta": {"k": 1}}
    j.write_snapshot(3, state)
    j.write_snapshot(5, state)           # keeps one snapshot: events up to 5 are pruned
    assert list(j.events_after(0)) == []
    assert [j.lookup_client(f"c{s}") for s in range(1, 6)] == [1, 2, 3, 4, 5]
    assert j.lookup_client("c6") is None
