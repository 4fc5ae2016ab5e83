"""WeakMemo: values memoised per object identity, never outliving or mistaking their objects."""
from __future__ import annotations

import gc

from dpm._util.memo import WeakMemo


class Owner:
    pass


def test_served_only_for_the_same_live_objects_and_extra():
    memo = WeakMemo(max_entries=3)
    a, b = Owner(), Owner()
    assert memo.get((a, b), 1) is None
    assert memo.put((a, b), 1, "ab1") == "ab1"
    assert memo.get((a, b), 1) == "ab1"
    assert memo.get((a, b), 2) is None and memo.get((b, a), 1) is None
    # an entry keeps no object alive, and after its object is gone it serves nothing (the lookup
    # compares the weakly referenced object itself, not just the id a new object may reuse)
    probe = __import__("weakref").ref(a)
    key = next(iter(memo._entries))
    del a
    gc.collect()
    assert probe() is None and memo._entries[key][0][0]() is None
    assert memo.get((Owner(), b), 1) is None


def test_bounded_and_skips_objects_without_weak_references():
    memo = WeakMemo(max_entries=2)
    owners = [Owner() for _ in range(3)]
    for k, o in enumerate(owners):
        memo.put((o,), None, k)
    assert len(memo) <= 2
    assert memo.put((1, 2), None, "plain ints") == "plain ints"  # ints take no weak references
    assert memo.get((1, 2), None) is None
    memo.clear()
    assert len(memo) == 0
