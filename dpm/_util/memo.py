"""A small memo of values derived from immutable objects, keyed by their identities.

An entry holds weak references to the objects it was computed from: it never keeps them alive, and
an object that reuses a freed object's ``id`` is never served its value. The memo is bounded (it is
cleared when full). Used for what a market update can reuse: a model's scenario set and aggregation
arrays, an underlying's instrument inputs.
"""
from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

__all__ = ["WeakMemo"]


class WeakMemo:
    """``value = memo.get(owners, extra)`` or ``memo.put(owners, extra, value)``; ``owners`` is a tuple
    of objects compared by identity, ``extra`` a hashable key compared by equality."""

    def __init__(self, max_entries: int = 64) -> None:
        self._entries: dict[tuple, tuple[tuple[weakref.ref, ...], Any]] = {}
        self._max = max_entries

    def get(self, owners: tuple, extra: Hashable = None) -> Any:
        """The value stored for exactly these objects and ``extra``, or None."""
        hit = self._entries.get((tuple(map(id, owners)), extra))
        if hit is None or any(ref() is not obj for ref, obj in zip(hit[0], owners)):
            return None
        return hit[1]

    def put(self, owners: tuple, extra: Hashable, value: Any) -> Any:
        """Store ``value`` (returned); objects without weak references are not memoised."""
        try:
            refs = tuple(weakref.ref(obj) for obj in owners)
        except TypeError:
            return value
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[(tuple(map(id, owners)), extra)] = (refs, value)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
