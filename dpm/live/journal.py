"""Durability of a live book: an SQLite (WAL) event log plus snapshot files.

Layout of a journal at ``PATH``:

* ``PATH`` — an SQLite database in WAL mode (Python's standard ``sqlite3``):
  ``events(seq INTEGER PRIMARY KEY, client_id TEXT UNIQUE, body TEXT)`` holds every accepted input
  event (:func:`dpm.live.events.encode_event`), ``snapshots(seq, file, sha256, created_ms)``
  registers the snapshots, ``meta(key, value)`` the fingerprint of the instruments, model and base
  market the journal belongs to, ``client_ids(client_id, seq)`` the client id of every accepted event
  (kept when old events are pruned after a snapshot, so a client that retries an acknowledged event
  long after is still told it is a duplicate).
* ``PATH.snapshots/<seq>.npz`` — the book state after event ``seq``
  (:meth:`dpm.live.book.LiveBook.to_state`: numpy arrays plus a JSON document, loaded with
  ``allow_pickle=False``), written to a temporary file, fsynced and renamed, then registered with
  its SHA-256. Writing a snapshot never blocks the log.

Recovery (:meth:`Journal.latest_snapshot` + :meth:`Journal.events_after`) loads the newest snapshot
whose file is intact and replays the events after it; a damaged newest snapshot falls back to the
one before. ``synchronous="normal"`` (the default) survives a crash of the process (the committed
WAL frames are in the operating system's cache); ``"full"`` also survives a power failure, at the
cost of an fsync per commit.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dpm.errors import DPMError, InvalidInputError

__all__ = ["Journal", "JournalError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, client_id TEXT UNIQUE, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS client_ids (client_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL,
                                      created_ms INTEGER NOT NULL);
"""


class JournalError(DPMError):
    """The journal cannot be read or written (I/O error, damaged file, foreign journal)."""


def _state_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    arrays = {f"a_{k}": np.ascontiguousarray(v) for k, v in state["arrays"].items()}
    meta = np.frombuffer(json.dumps(state["meta"], allow_nan=False).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, meta=meta, **arrays)
    return buf.getvalue()


def _state_from_bytes(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode("utf-8"))
        arrays = {k[2:]: z[k] for k in z.files if k.startswith("a_")}
    return {"meta": meta, "arrays": arrays}


class Journal:
    """An event log and snapshot store (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The SQLite file (created if missing, with its ``.snapshots`` directory).
    synchronous : {"normal", "full"}
        SQLite's durability level of a commit.
    keep_snapshots : int
        Registered snapshots kept (older ones and the events before the oldest kept are deleted).
    """

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "normal", keep_snapshots: int = 2) -> None:
        if synchronous not in ("normal", "full"):
            raise InvalidInputError(f"synchronous: expected 'normal' or 'full', got {synchronous!r}")
        if isinstance(keep_snapshots, bool) or not isinstance(keep_snapshots, int) or keep_snapshots < 1:
            raise InvalidInputError(f"keep_snapshots: must be an int >= 1, got {keep_snapshots!r}")
        self.path = Path(path)
        self.snap_dir = Path(str(self.path) + ".snapshots")
        self.keep_snapshots = keep_snapshots
        self._lock = threading.RLock()
        try:
            self.snap_dir.mkdir(exist_ok=True)  # the directory of PATH must exist
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"journal {str(self.path)!r}: cannot open ({exc})") from None
        self._in_txn = False

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ events
    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
            snap = self._db.execute("SELECT MAX(seq) FROM snapshots").fetchone()
        return max(row[0] or 0, snap[0] or 0)

    def begin(self) -> None:
        """Open a transaction (the writer appends a batch, then :meth:`commit`)."""
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        except sqlite3.Error as exc:
            self._lock.release()
            raise JournalError(f"journal: cannot begin a transaction ({exc})") from None

    def append(self, seq: int, body: str, client_id: str | None = None) -> None:
        try:
            self._db.execute("INSERT INTO events(seq, client_id, body) VALUES (?, ?, ?)", (seq, client_id, body))
            if client_id is not None:
                self._db.execute("INSERT INTO client_ids(client_id, seq) VALUES (?, ?)", (client_id, seq))
        except sqlite3.Error as exc:
            raise JournalError(f"journal: cannot append event {seq} ({exc})") from None

    def commit(self) -> None:
        """Make the batch durable (``synchronous`` decides against what)."""
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"journal: commit failed ({exc})") from None
        finally:
            self._in_txn = False
            self._lock.release()

    def rollback(self) -> None:
        try:
            if self._in_txn:
                self._db.execute("ROLLBACK")
        finally:
            self._in_txn = False
            self._lock.release()

    def lookup_client(self, client_id: str) -> int | None:
        """Sequence number of the event submitted with ``client_id`` (None if unknown)."""
        row = self._db.execute("SELECT seq FROM client_ids WHERE client_id = ?", (client_id,)).fetchone()
        return None if row is None else int(row[0])

    def events_after(self, seq: int) -> Iterator[tuple[int, str, str | None]]:
        """``(seq, body, client_id)`` of the events after ``seq``, in order."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body, client_id FROM events WHERE seq > ? ORDER BY seq",
                                    (seq,)).fetchall()
        prev = seq
        for s, body, cid in rows:
            if s != prev + 1:
                raise JournalError(f"journal: event {prev + 1} is missing (next is {s})")
            prev = s
            yield int(s), body, cid

    # ------------------------------------------------------------------ snapshots
    def write_snapshot(self, seq: int, state: dict[str, Any]) -> Path:
        """Write the state after event ``seq`` to a file (atomically) and register it.

        Safe to call from another thread than the writer's (the registration is one small
        transaction)."""
        data = _state_bytes(state)
        digest = hashlib.sha256(data).hexdigest()
        final = self.snap_dir / f"{seq:012d}.npz"
        tmp = self.snap_dir / f".{seq:012d}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            dfd = os.open(self.snap_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise JournalError(f"journal: cannot write snapshot {seq} ({exc})") from None
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO snapshots(seq, file, sha256, created_ms) VALUES (?, ?, ?, ?)",
                             (seq, final.name, digest, int(time.time() * 1000)))
            self._prune()
        return final

    def _prune(self) -> None:
        rows = self._db.execute("SELECT seq, file FROM snapshots ORDER BY seq DESC").fetchall()
        for s, f in rows[self.keep_snapshots:]:
            self._db.execute("DELETE FROM snapshots WHERE seq = ?", (s,))
            try:
                (self.snap_dir / f).unlink()
            except OSError:
                pass
        if len(rows) >= self.keep_snapshots:
            oldest = rows[min(len(rows), self.keep_snapshots) - 1][0]
            self._db.execute("DELETE FROM events WHERE seq <= ?", (oldest,))

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        """``(seq, state)`` of the newest intact snapshot (None when there is none)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, file, sha256 FROM snapshots ORDER BY seq DESC").fetchall()
        for s, f, digest in rows:
            try:
                data = (self.snap_dir / f).read_bytes()
            except OSError:
                continue
            if hashlib.sha256(data).hexdigest() != digest:
                continue
            try:
                return int(s), _state_from_bytes(data)
            except (ValueError, KeyError, OSError):
                continue
        return None

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
