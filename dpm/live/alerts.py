"""Margin alerts: threshold crossings with hysteresis, delivered in order to bounded subscribers.

An account is at one of three levels:

* ``ok`` — equity covers the initial margin (IM, open orders included);
* ``margin_call`` — equity is below IM: the account may only reduce risk;
* ``liquidation`` — equity is below the maintenance margin (MM): the venue closes positions.

Going *down* a level happens as soon as the equity crosses the line (strictly below IM, strictly
below MM). Going back *up* needs the equity to clear the line by a relative band
(``AlertPolicy.hysteresis``, 2 % by default): a price flickering around a threshold raises one
alert, not one per tick. Every change of level is one :class:`Alert` (``margin_call``,
``liquidation`` or ``recovery``) with a global sequence number.

The :class:`AlertBus` hands alerts to subscribers through bounded queues. Publishing never blocks:
a subscriber whose queue is full is cut off (its iterator raises :class:`SubscriberOverflow`
naming the first alert it missed) and can resubscribe from that sequence number while it is still
in the bus's ring buffer. The engine is never slowed down by a slow reader.
"""
from __future__ import annotations

import collections
import math
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from dpm._core import _live
from dpm.errors import DPMError, InvalidInputError

__all__ = ["Alert", "AlertBus", "AlertPolicy", "LEVELS", "Subscription", "SubscriberOverflow", "next_level",
           "next_levels"]

#: level codes (index) and names
LEVELS = ("ok", "margin_call", "liquidation")
OK, CALL, LIQUIDATION = 0, 1, 2


class SubscriberOverflow(DPMError):
    """A subscriber fell too far behind and was disconnected; resubscribe from ``next_seq``."""

    def __init__(self, message: str, next_seq: int) -> None:
        super().__init__(message)
        self.next_seq = next_seq


@dataclass(frozen=True)
class AlertPolicy:
    """Alert thresholds.

    Parameters
    ----------
    hysteresis : float
        Relative band in [0, 1) an account must clear to move back up a level: from
        ``margin_call`` to ``ok`` it needs ``equity >= IM * (1 + hysteresis)``, from
        ``liquidation`` it needs ``equity >= MM * (1 + hysteresis)`` (to ``margin_call``) or the
        IM band (to ``ok``). Default 0.02.
    """

    hysteresis: float = 0.02

    def __post_init__(self) -> None:
        h = self.hysteresis
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not (math.isfinite(h) and 0.0 <= h < 1.0):
            raise InvalidInputError(f"hysteresis: must be a number in [0, 1), got {h!r}")
        object.__setattr__(self, "hysteresis", float(h))


def next_levels(level: np.ndarray, equity: np.ndarray, im: np.ndarray, mm: np.ndarray,
                hysteresis: float) -> np.ndarray:
    """The new level of each account (vectorised state machine of the module docstring; one C
    pass, the same decisions as :func:`next_level` account by account)."""
    level = np.ascontiguousarray(level, dtype=np.int8)
    out = np.empty(level.shape[0], dtype=np.int8)
    _live.next_levels(level, np.ascontiguousarray(equity, dtype=np.float64),
                      np.ascontiguousarray(im, dtype=np.float64), np.ascontiguousarray(mm, dtype=np.float64),
                      float(hysteresis), out)
    return out


def next_level(level: int, equity: float, im: float, mm: float, hysteresis: float) -> int:
    """:func:`next_levels` for one account (plain floats: no array overhead on the fill path)."""
    if equity < mm:
        return LIQUIDATION
    up = 1.0 + hysteresis
    if level == OK:
        return CALL if equity < im else OK
    if equity >= im * up:
        return OK
    if level == LIQUIDATION and not equity >= mm * up:
        return LIQUIDATION
    return CALL


@dataclass(frozen=True)
class Alert:
    """One change of an account's margin level (amounts in USD)."""

    seq: int
    event_seq: int
    account: str
    kind: str          # "margin_call", "liquidation" or "recovery"
    from_level: str
    to_level: str
    equity: float
    initial_margin: float
    maintenance_margin: float
    timestamp_ms: int

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def alert_kind(old: int, new: int) -> str:
    if new == LIQUIDATION:
        return "liquidation"
    if new == CALL and old == OK:
        return "margin_call"
    return "recovery"


class Subscription:
    """An iterator over alerts from one :class:`AlertBus` (see :meth:`AlertBus.subscribe`).

    ``next(sub)`` blocks until an alert arrives; :meth:`get` waits at most ``timeout`` seconds
    (None when nothing arrived). Raises :class:`SubscriberOverflow` once it has been cut off and
    ``StopIteration`` after :meth:`close` or when the bus closes.
    """

    def __init__(self, bus: "AlertBus", max_queue: int, account: str | None) -> None:
        self._bus = bus
        self._queue: collections.deque[Alert] = collections.deque()
        self._max = max_queue
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self.account = account
        self.overflow_seq: int | None = None

    def _offer(self, alert: Alert) -> bool:
        """Called by the publisher; False when this subscription is to be dropped."""
        with self._cond:
            if self._closed or self.overflow_seq is not None:
                return False
            if len(self._queue) >= self._max:
                self.overflow_seq = alert.seq
                self._queue.clear()  # free the memory at once; the reader learns where to resume
                self._cond.notify_all()
                return False
            self._queue.append(alert)
            self._cond.notify()
            return True

    def get(self, timeout: float | None = None) -> Alert | None:
        with self._cond:
            if not self._queue and not self._closed and self.overflow_seq is None:
                self._cond.wait(timeout)
            if self._queue:
                return self._queue.popleft()
            if self.overflow_seq is not None:
                raise SubscriberOverflow(
                    f"subscriber fell more than {self._max} alerts behind and was disconnected; "
                    f"resubscribe from seq {self.overflow_seq}", self.overflow_seq)
            if self._closed:
                raise StopIteration
            return None

    def __iter__(self) -> Iterator[Alert]:
        return self

    def __next__(self) -> Alert:
        while True:
            a = self.get(1.0)
            if a is not None:
                return a

    @property
    def pending(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._bus._remove(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AlertBus:
    """Ordered fan-out of alerts to bounded subscriber queues, with a replay ring buffer.

    Parameters
    ----------
    ring : int
        How many of the latest alerts are kept for subscribers that resume from a sequence number.
    """

    def __init__(self, ring: int = 100_000, next_seq: int = 1) -> None:
        if isinstance(ring, bool) or not isinstance(ring, int) or ring < 1:
            raise InvalidInputError(f"ring: must be an int >= 1, got {ring!r}")
        self._ring: collections.deque[Alert] = collections.deque(maxlen=ring)
        #: sequence number of the next alert (alerts below it and not in the ring are gone)
        self.next_seq = next_seq
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False
        self.published = 0
        self.dropped_subscribers = 0

    def publish(self, alerts: list[Alert]) -> None:
        """Deliver ``alerts`` (in sequence order) to every subscriber; never blocks."""
        if not alerts:
            return
        with self._lock:
            self._ring.extend(alerts)
            self.published += len(alerts)
            self.next_seq = alerts[-1].seq + 1
            subs = list(self._subs)
        dead = []
        for s in subs:
            for a in alerts:
                if s.account is not None and a.account != s.account:
                    continue
                if not s._offer(a):
                    dead.append(s)
                    break
        if dead:
            with self._lock:
                for s in dead:
                    if s in self._subs:
                        self._subs.remove(s)
                        self.dropped_subscribers += 1 if s.overflow_seq is not None else 0

    def subscribe(self, from_seq: int | None = None, *, max_queue: int = 10_000,
                  account: str | None = None) -> Subscription:
        """A new subscription; with ``from_seq``, first the kept alerts with ``seq >= from_seq``.

        Raises
        ------
        SubscriberOverflow
            ``from_seq`` is older than the ring buffer (alerts were lost for this reader).
        """
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise InvalidInputError(f"max_queue: must be an int >= 1, got {max_queue!r}")
        sub = Subscription(self, max_queue, account)
        with self._lock:
            if self._closed:
                sub._closed = True
                return sub
            if from_seq is not None:
                oldest = self._ring[0].seq if self._ring else self.next_seq
                if from_seq < oldest:
                    raise SubscriberOverflow(
                        f"alerts before seq {oldest} are no longer kept (asked from {from_seq})", oldest)
                for a in self._ring:
                    if a.seq >= from_seq and (account is None or a.account == account):
                        if not sub._offer(a):
                            raise SubscriberOverflow(
                                f"more than {max_queue} kept alerts after seq {from_seq}; use a larger "
                                "max_queue", from_seq)
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """End every subscription (their iterators stop once drained)."""
        with self._lock:
            self._closed = True
            subs, self._subs = self._subs, []
        for s in subs:
            with s._cond:
                s._closed = True
                s._cond.notify_all()
