"""The binary channel's C check path (``dpm._core._checkpath``): its replies are the bytes of the
Python path's (``LiveBook.check``) through a random stream of every kind of event; what it does not
answer it hands to Python; its table refuses bad input without changing; records stay bounded; and
checks running on other threads while the writer commits never see a half-written account."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from dpm.engines.margin import MarginEngine
from dpm.live import (
    CancelOrder,
    Fill,
    Funding,
    LiveBook,
    MarketTick,
    OpenAccount,
    PlaceOrder,
    Settle,
    Transfer,
    UnderlyingTick,
)
from dpm.live.events import MAX_QUANTITY
from dpm.market.sample import default_instruments, default_market
from dpm.portfolio.sample import generate_accounts
from dpm.service.fastcheck import _check_frame, encode_check


def _book(n: int, seed: int = 5, **kw) -> LiveBook:
    table = default_instruments()
    live = LiveBook(MarginEngine(default_market(), table, workers=1), generate_accounts(n, table, seed=seed),
                    workers=1, **kw)
    live._checks.users += 1  # as a running channel does: the book publishes its records
    return live


def _payload(rid: int, account: str, legs) -> bytes:
    return encode_check(rid, account, legs)[4:]


def _python_reply(live: LiveBook, rid: int, account: str, legs) -> bytes:
    return _check_frame(rid, live.check(account, legs))


def _tick(live: LiveBook, rng, unds=("BTC",)) -> None:
    live.apply(MarketTick(tuple(UnderlyingTick(u, float(live.market[u].index_price) * float(np.exp(
        0.002 * rng.standard_normal()))) for u in unds)))


def test_c_replies_are_the_python_replies_through_a_random_stream():
    live = _book(300)
    rng = np.random.default_rng(11)
    table = live.instruments
    names = [str(n) for n in table.name]
    kind = np.asarray(table.kind)
    liquid = [names[i] for i in np.flatnonzero(kind != 3)] + [names[i] for i in rng.choice(np.flatnonzero(kind == 3), 80)]
    futures = [names[i] for i in np.flatnonzero(kind == 1)]
    perps = [names[i] for i in np.flatnonzero(kind == 2)]
    ids = list(live.account_ids)
    hot = ids[:60]
    stats = {"c": 0, "python": 0, "c_with_orders": 0, "refused_in_c": 0, "c_several_legs": 0}
    orders: dict[str, list[str]] = {}
    settled = False
    for step in range(6000):
        account = hot[int(rng.integers(len(hot)))]
        legs = [(liquid[int(rng.integers(len(liquid)))],
                 float(rng.integers(1, 60)) * float(rng.choice([-1.0, 1.0])) * (0.01 if rng.random() < 0.2 else 1.0))
                for _ in range(1 if rng.random() < 0.7 else int(rng.integers(2, 5)))]  # several legs too
        got = live._checks.check_frame(_payload(step, account, legs))
        try:
            want = _python_reply(live, step, account, legs)
        except Exception:  # noqa: BLE001 - an error the Python path reports (a settled instrument)
            want = None
        if got is None:
            stats["python"] += 1
        else:
            assert got == want, (step, account, legs)
            stats["c"] += 1
            stats["c_with_orders"] += bool(live.orders(account))
            stats["refused_in_c"] += got[13] == 0
            stats["c_several_legs"] += len(legs) > 1
        r = rng.random()
        who = hot[int(rng.integers(len(hot)))] if rng.random() < 0.7 else ids[int(rng.integers(len(ids)))]
        try:
            if r < 0.05:
                live.apply(Fill(who, liquid[int(rng.integers(len(liquid)))], float(rng.integers(1, 20)) *
                                float(rng.choice([-1.0, 1.0]))))
            elif r < 0.07:
                oid = f"o{step}"
                live.apply(PlaceOrder(who, oid, liquid[int(rng.integers(len(liquid)))],
                                      float(rng.integers(1, 10)) * float(rng.choice([-1.0, 1.0])), None, False))
                orders.setdefault(who, []).append(oid)
            elif r < 0.08 and orders.get(who):
                live.apply(CancelOrder(who, orders[who].pop()))
            elif r < 0.10:
                live.apply(Transfer(who, "USDC", float(rng.choice([5_000.0, -1_000.0]))))
            elif r < 0.11:
                _tick(live, rng, ("BTC",) if rng.random() < 0.5 else ("BTC", "ETH"))
            elif r < 0.112:
                live.apply(Funding(perps[int(rng.integers(len(perps)))], 0.0001))
            elif r < 0.113:
                new = f"new-{step}"
                live.apply(OpenAccount(new))
                live.apply(Transfer(new, "USDC", 50_000.0))
                hot.append(new)
            elif step == 5000 and not settled:
                fut = futures[0]
                live.apply(Settle(fut, float(live.market[table.underlyings[int(table.underlying[names.index(fut)])]]
                                             .index_price)))
                settled = True
        except Exception:  # noqa: BLE001 - events the book refuses (an unaffordable order) change nothing
            pass
    assert settled
    # most checks stayed in C, including accounts with resting orders, refusals and rebuilt states
    assert stats["c"] > 0.8 * 6000 and stats["c_with_orders"] > 100 and stats["refused_in_c"] > 20, stats
    assert stats["c_several_legs"] > 1000, stats
    assert live._checks.rebuilt > 100 and live._checks.answered == stats["c"]


def test_what_c_does_not_answer_goes_to_python():
    live = _book(40)
    ids = list(live.account_ids)
    warm, dirty = ids[1], ids[2]
    live.check(warm, [("BTC-PERPETUAL", 1.0)])  # builds and publishes its record
    assert live._checks.check_frame(_payload(1, warm, [("BTC-PERPETUAL", 2.0)])) is not None
    # an account whose rows moved to the overlay (a new position) and that was never checked: its
    # record can only be built in Python
    live.apply(Fill(dirty, "ETH-PERPETUAL", 3.0))
    assert live._dirty[live.index_of(dirty)] and not live._checks.has_record(live.index_of(dirty))
    cases = [
        _payload(2, dirty, [("BTC-PERPETUAL", 1.0)]),                # no record, not in the CSR
        _payload(3, "nobody", [("BTC-PERPETUAL", 1.0)]),             # unknown account
        _payload(4, warm, [("NOPE", 1.0)]),                          # unknown instrument
        _payload(5, warm, [("BTC-PERPETUAL", 1.0), ("NOPE", 1.0)]),  # one unknown leg of two
        _payload(5, warm, [("BTC-PERPETUAL", 1.0), ("ETH-PERPETUAL", float("nan"))]),
        _payload(6, warm, [("BTC-PERPETUAL", 0.0)]),
        _payload(7, warm, [("BTC-PERPETUAL", float("nan"))]),
        _payload(8, warm, [("BTC-PERPETUAL", float("-inf"))]),
        _payload(9, warm, [("BTC-PERPETUAL", 2 * MAX_QUANTITY)]),
        _payload(10, warm, [("BTC-PERPETUAL", 1.0)]) + b"x",         # trailing byte
        _payload(11, warm, [("BTC-PERPETUAL", 1.0)])[:-1],           # truncated
        b"\x01" + bytes(8),                                          # no account
        b"\x02" + bytes(8),                                          # a PING is not a check
        b"\x01",
        b"",
    ]
    before = live._checks.fell_back
    for p in cases:
        assert live._checks.check_frame(p) is None, p
    assert live._checks.fell_back - before == len(cases)
    # a settled instrument is not tradable: Python refuses it, C hands it over
    table = live.instruments
    fut = next(str(n) for n, k in zip(table.name, table.kind) if k == 1)
    und = table.underlyings[int(table.underlying[list(table.name).index(fut)])]
    live.apply(Settle(fut, float(live.market[und].index_price)))
    live.check(warm, [("BTC-PERPETUAL", 1.0)])
    assert live._checks.check_frame(_payload(12, warm, [(fut, 1.0)])) is None
    assert live._checks.check_frame(_payload(13, warm, [("BTC-PERPETUAL", 1.0)])) == \
        _python_reply(live, 13, warm, [("BTC-PERPETUAL", 1.0)])


def test_a_changed_account_stays_on_the_c_path():
    live = _book(40)
    a = live.account_ids[3]
    live.check(a, [("BTC-PERPETUAL", 1.0)])
    for k, ev in enumerate([Fill(a, "BTC-PERPETUAL", 25.0), PlaceOrder(a, "x", "ETH-PERPETUAL", -40.0, None, False),
                            Transfer(a, "USDC", -500.0), CancelOrder(a, "x"), Fill(a, "ETH-PERPETUAL", 3.0)]):
        live.apply(ev)
        for q in (7.0, -7.0):
            got = live._checks.check_frame(_payload(k, a, [("BTC-PERPETUAL", q)]))
            assert got is not None and got == _python_reply(live, k, a, [("BTC-PERPETUAL", q)])


def test_records_are_bounded_and_replaced_oldest_first():
    live = _book(50, check_cache=4)
    ids = list(live.account_ids)
    for a in ids[:20]:
        live.check(a, [("BTC-PERPETUAL", 1.0)])
    assert live._checks.records == 4
    assert all(live._checks.has_record(live.index_of(a)) for a in ids[16:20])
    assert not live._checks.has_record(live.index_of(ids[0]))
    for rid, a in enumerate(ids[16:20]):
        assert live._checks.check_frame(_payload(rid, a, [("ETH-PERPETUAL", -2.0)])) == \
            _python_reply(live, rid, a, [("ETH-PERPETUAL", -2.0)])


def test_no_records_without_a_channel():
    live = _book(20)
    live._checks.users -= 1
    live.check(live.account_ids[0], [("BTC-PERPETUAL", 1.0)])
    assert live._checks.records == 0


def test_the_table_refuses_bad_input_and_stays_as_it_was():
    live = _book(20)
    t = live._checks
    live.check(live.account_ids[0], [("BTC-PERPETUAL", 1.0)])
    S = live._gen.agg.state_size
    st, ids, q = np.zeros(S), np.array([1, 5], dtype=np.int64), np.ones(2)
    bad_publish = [
        (10**6, 0, 0, st, ids, q, st, ids, q, True),                     # account outside the arrays
        (-1, 0, 0, st, ids, q, st, ids, q, True),
        (1, 0, 0, np.zeros(S + 1), ids, q, st, ids, q, True),             # state size
        (1, 0, 0, st, np.array([5, 1], dtype=np.int64), q, st, ids, q, True),  # ids not increasing
        (1, 0, 0, st, np.array([1, 10**9], dtype=np.int64), q, st, ids, q, True),  # id outside the table
        (1, 0, 0, st, ids, np.ones(3), st, ids, q, True),                 # one quantity per id
    ]
    for args in bad_publish:
        with pytest.raises((ValueError, IndexError)):
            t.publish(*args)
    with pytest.raises(IndexError):
        t.store_account(10**6, True, 0, 0, 0, 0, 0, 0)
    with pytest.raises(IndexError):
        t.store_equity(np.array([10**6], dtype=np.int64), np.zeros(1))
    with pytest.raises(ValueError):
        t.store_equity(np.array([0], dtype=np.int64), np.zeros(2))
    with pytest.raises(IndexError):
        t.mark_untradable(10**6)
    gen = live._gen
    arrays = [live._ver, live._tp, live._tb, live._ta, live._im, live._mm, live._eq]
    with pytest.raises(ValueError, match="differ in length"):
        t.bind(gen.agg, 0, 1.0, *arrays[:-1], live._eq[:3], live._tradable.view(np.uint8))
    with pytest.raises(ValueError, match="tradable flags"):
        t.bind(gen.agg, 0, 1.0, *arrays, live._tradable.view(np.uint8)[:3])
    with pytest.raises(ValueError, match="AggregationPlan"):
        t.bind(object(), 0, 1.0, *arrays, live._tradable.view(np.uint8))
    assert t.records == 1 and t.has_record(0)
    a = live.account_ids[0]
    assert t.check_frame(_payload(1, a, [("BTC-PERPETUAL", 3.0)])) == _python_reply(live, 1, a, [("BTC-PERPETUAL", 3.0)])


def test_checks_on_other_threads_while_the_writer_commits():
    live = _book(200)
    rng = np.random.default_rng(3)
    ids = list(live.account_ids)
    hot = ids[:30]
    for a in hot:
        live.check(a, [("BTC-PERPETUAL", 1.0)])
    stop = threading.Event()
    errors: list[BaseException] = []
    answered = [0]

    def checker(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                a = hot[int(r.integers(len(hot)))]
                got = live._checks.check_frame(_payload(1, a, [("ETH-PERPETUAL", float(r.integers(-9, 10)) or 1.0)]))
                if got is not None:
                    assert len(got) >= 48 and got[4] == 0x81
                    answered[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=checker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(1500):
            r = rng.random()
            who = hot[int(rng.integers(len(hot)))]
            try:
                if r < 0.6:
                    live.apply(Fill(who, "ETH-PERPETUAL", float(rng.integers(1, 5)) * float(rng.choice([-1, 1]))))
                elif r < 0.8:
                    live.apply(Transfer(who, "USDC", 100.0))
                elif r < 0.82:
                    _tick(live, rng, ("BTC", "ETH"))
                else:
                    live.apply(PlaceOrder(who, f"o{k}", "BTC-PERPETUAL", 1.0, None, False))
            except Exception:  # noqa: BLE001 - a refused event changes nothing
                pass
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors and answered[0] > 100
    # and once the writer has stopped, every answer is the Python one again
    for rid, a in enumerate(hot):
        for q in (4.0, -4.0):
            got = live._checks.check_frame(_payload(rid, a, [("ETH-PERPETUAL", q)]))
            assert got is not None and got == _python_reply(live, rid, a, [("ETH-PERPETUAL", q)])


def test_records_of_clean_accounts_are_built_in_c_from_the_csr():
    live = _book(120)
    ids = list(live.account_ids)
    live.apply(PlaceOrder(ids[7], "r1", "BTC-PERPETUAL", 5.0, None, False))  # orders: three CSR rows
    live.apply(PlaceOrder(ids[7], "r2", "ETH-PERPETUAL", -8.0, None, False))
    live.compact()  # every account clean again, the orders' rows in the CSR
    assert not live._dirty[:len(ids)].any() and live._checks.records == 0
    rid = 0
    for a in ids[:40] + [ids[7]]:
        for leg in (("BTC-PERPETUAL", 4.0), ("ETH-PERPETUAL", -6.0), ("BTC-PERPETUAL", -2.5)):
            rid += 1
            got = live._checks.check_frame(_payload(rid, a, [leg]))
            assert got is not None and got == _python_reply(live, rid, a, [leg]), (a, leg)
    assert live._checks.built == 40  # one record per account, built in C on its first check
    # a fill that resizes a position in place (a clean account: the CSR slot itself): the record
    # built in C afterwards reads the new size
    for rid, a in enumerate((ids[3], ids[50])):  # with a record (refreshed by the writer), without
        name = next(iter(live.positions(a)))
        live.apply(Fill(a, name, 1.0))
        assert not live._dirty[live.index_of(a)]
        got = live._checks.check_frame(_payload(999 + rid, a, [("BTC-PERPETUAL", 4.0)]))
        assert got is not None and got == _python_reply(live, 999 + rid, a, [("BTC-PERPETUAL", 4.0)])
    assert live._checks.built == 41
    # while the book rebuilds its CSR, no record is built from it
    live._checks.suspend_positions()
    assert live._checks.check_frame(_payload(1000, ids[60], [("BTC-PERPETUAL", 4.0)])) is None
    live._bind_positions()
    assert live._checks.check_frame(_payload(1001, ids[60], [("BTC-PERPETUAL", 4.0)])) is not None


def test_bind_positions_refuses_a_broken_csr():
    live = _book(20)
    t = live._checks
    ip, inst, qty = live._indptr, live._inst, live._qty
    ra, ar, d = live._row_acc, live._acc_row, live._dirty.view(np.uint8)
    bad = [
        (ip[:-1], inst, qty, ra, ar, d),                       # indptr length
        (ip, inst, qty[:-1], ra, ar, d),                       # one quantity per id
        (ip[::-1].copy(), inst, qty, ra, ar, d),                # does not start at 0
        (np.where(np.arange(ip.size) == 3, ip[-1], ip), inst, qty, ra, ar, d),  # decreases
        (ip, inst, qty, ra, np.full_like(ar, 10**6), d),       # an account's row outside
        (ip, inst, qty, ra, ar, d[:3]),                        # dirty flags
    ]
    for args in bad:
        with pytest.raises(ValueError):
            t.bind_positions(*args)
    with pytest.raises(IndexError):
        t.store_account(0, False, 0, 0, 0, 0, 0, 0, False, 10**9, 1.0)
    a = live.account_ids[0]
    assert t.check_frame(_payload(1, a, [("BTC-PERPETUAL", 3.0)])) == _python_reply(live, 1, a, [("BTC-PERPETUAL", 3.0)])


def test_several_legs_up_to_the_limit_are_answered_in_c():
    live = _book(30)
    a = live.account_ids[4]
    names = ["BTC-PERPETUAL", "ETH-PERPETUAL"] + [str(n) for n in live.instruments.name[:6]]
    for n in (2, 3, 17, 1024):
        legs = [(names[k % len(names)], float((k % 7) + 1) * (1.0 if k % 3 else -1.0)) for k in range(n)]
        got = live._checks.check_frame(_payload(n, a, legs))
        assert got is not None and got == _python_reply(live, n, a, legs), n
    only_sells = [("BTC-PERPETUAL", -3.0), ("ETH-PERPETUAL", -1.5)]
    assert live._checks.check_frame(_payload(1, a, only_sells)) == _python_reply(live, 1, a, only_sells)
    # no leg, or more than the limit: the Python path names the error
    head = encode_check(2, a, [("BTC-PERPETUAL", 1.0)])[4:]
    no_leg = head[:9 + 2 + len(a.encode())] + b"\x00\x00"
    assert live._checks.check_frame(no_leg) is None
