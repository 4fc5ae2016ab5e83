"""Seeded random event streams for the live-book tests and benchmarks.

The generator reads the reference state (``tests/reference/live_ref.py``) so every event it emits
is well formed (known account, instrument, order id); whether a risk rule accepts it is up to the
book (withdrawals and checked orders can be refused).
"""
from __future__ import annotations

import numpy as np

from dpm.live.events import (
    CancelOrder,
    Fill,
    Funding,
    MarketTick,
    OpenAccount,
    PlaceOrder,
    Settle,
    Transfer,
    UnderlyingTick,
)
from dpm.market.sample import default_marks
from dpm.market.specs import Kind


class StreamGenerator:
    """Events in a realistic mix: fills (mostly on held instruments, some closing), deposits and
    withdrawals, orders, cancels and order fills, market ticks (index moves of a few basis
    points, now and then a few minutes of time), funding, a few settlements and new accounts."""

    def __init__(self, ref, seed: int = 0, *, tick_rate: float = 0.002, settle_count: int = 3,
                 n_events: int = 100_000):
        self.ref = ref
        self.rng = np.random.default_rng(seed)
        t = ref.table
        self.marks = np.asarray(default_marks(t, ref.market), dtype=np.float64)
        kind = np.asarray(t.kind)
        expiry = np.asarray(t.expiry_ms, dtype=np.int64)
        self.perps = np.flatnonzero(kind == Kind.PERPETUAL)
        # a liquid subset: perpetuals, futures and options of the three nearest expiries
        dated = np.unique(expiry[kind == Kind.OPTION])
        near = np.isin(expiry, dated[:3]) & (kind == Kind.OPTION)
        self.liquid = np.concatenate([np.flatnonzero(kind != Kind.OPTION), np.flatnonzero(near)])
        self.expiries = dated
        self.tick_rate = tick_rate
        self.settle_at = set(self.rng.choice(np.arange(n_events // 10, n_events), size=settle_count,
                                             replace=False).tolist()) if settle_count else set()
        self.settle_candidates = [int(i) for i in np.flatnonzero(near & (expiry == dated[0]))]
        self.n = 0
        self.order_seq = 0
        self._u: list[float] = []
        self._z: list[float] = []
        self.liquid_l = self.liquid.tolist()
        self.perps_l = self.perps.tolist()

    # pre-drawn blocks: one numpy call per 65,536 draws instead of one per draw
    def _uniform(self) -> float:
        if not self._u:
            self._u = self.rng.random(65_536).tolist()
        return self._u.pop()

    def _normal(self) -> float:
        if not self._z:
            self._z = self.rng.standard_normal(65_536).tolist()
        return self._z.pop()

    def _int(self, n: int) -> int:
        return min(int(self._uniform() * n), n - 1)

    def _price(self, i: int) -> float:
        return float(self.marks[i]) * (1.0 + 0.01 * self._normal())

    def _account(self) -> int:
        return self._int(len(self.ref.ids))

    def __iter__(self):
        return self

    def __next__(self):
        self.n += 1
        r = self._uniform()
        ref = self.ref
        if self.n in self.settle_at and self.settle_candidates:
            i = self.settle_candidates.pop(int(self.rng.integers(len(self.settle_candidates))))
            u = ref.table.underlyings[ref.und[i]]
            return Settle(ref.names[i], float(ref.market[u].index_price * (1 + 0.01 * self._normal())))
        if r < self.tick_rate:
            return self._tick()
        r = self._uniform()
        if r < 0.70:
            return self._fill()
        if r < 0.78:
            a = self._account()
            c = self._int(len(ref.currencies))
            ccy = ref.currencies[c]
            unit = 1.0 if ccy in ("USDC", "USDT") else 1.0 / float(ref.market[ccy].index_price)
            if self._uniform() < 0.7 or ref.bal[a][c] <= 0:
                amount = round(float(np.exp(8.0 + 1.5 * self._normal())) * unit, 8)
                return Transfer(ref.ids[a], ccy, amount or 1.0)
            return Transfer(ref.ids[a], ccy, -(ref.bal[a][c] * (0.01 + 0.49 * self._uniform())) or -1e-9)
        if r < 0.86:
            a = self._account()
            i = self._instrument(a)
            self.order_seq += 1
            q = self._qty(i) * (1 if self._uniform() < 0.5 else -1)
            return PlaceOrder(ref.ids[a], f"o{self.order_seq}", ref.names[i], q, self._price(i),
                              check=self._uniform() < 0.5)
        if r < 0.95:
            a = next((b for b in (self._account() for _ in range(64)) if ref.orders[b]), None)
            if a is None:
                return self._fill()
            oid = list(ref.orders[a])[self._int(len(ref.orders[a]))]
            o = ref.orders[a][oid]
            if self._uniform() < 0.4:
                return CancelOrder(ref.ids[a], oid)
            part = o[1] if self._uniform() < 0.5 else o[1] * (0.1 + 0.8 * self._uniform())
            return Fill(ref.ids[a], ref.names[o[0]], part, self._price(o[0]), order_id=oid)
        if r < 0.952:
            i = self.perps_l[self._int(len(self.perps_l))]
            return Funding(ref.names[i], 0.0001 + 0.0002 * self._normal())
        if r < 0.954:
            self.order_seq += 1
            return OpenAccount(f"new-{self.order_seq}")
        return self._fill()

    def _instrument(self, a: int) -> int:
        pos = self.ref.pos[a]
        if pos and self._uniform() < 0.5:
            held = list(pos)
            i = held[self._int(len(held))]
            if i not in self.ref.settled:
                return i
        while True:
            i = self.liquid_l[self._int(len(self.liquid_l))]
            if i not in self.ref.settled:
                return i

    def _qty(self, i: int) -> float:
        ref = self.ref
        if ref.lin_kind[i] and ref.inverse[i]:
            return float(1 + self._int(1999)) * 10.0
        return round(float(np.exp(self._normal())), 1) or 0.1

    def _fill(self):
        ref = self.ref
        a = self._account()
        i = self._instrument(a)
        held = ref.pos[a].get(i)
        if held is not None and self._uniform() < 0.15:
            q = -held  # close the position
        else:
            q = self._qty(i) * (1 if self._uniform() < 0.5 else -1)
        fee = abs(q) * 1e-6 if self._uniform() < 0.3 else 0.0
        return Fill(ref.ids[a], ref.names[i], q, self._price(i), fee=fee)

    def _tick(self):
        ref = self.ref
        unds = [u for u in ref.table.underlyings if u in ref.market]
        pick = [u for u in unds if self._uniform() < 0.6] or [unds[0]]
        ticks = []
        for u in pick:
            S = float(ref.market[u].index_price) * float(np.exp(0.002 * self._normal()))
            perp = None if self._uniform() < 0.7 else S * (1 + 0.0005 * self._normal())
            ticks.append(UnderlyingTick(u, S, perp))
        ts = None
        if self._uniform() < 0.05:
            ts = int(ref.market.timestamp_ms + (1 + self._int(119)) * 1000)
        return MarketTick(tuple(ticks), ts)


def recorded_stream(engine, book, n, seed, tick_rate=0.01):
    """``n`` events of a :class:`StreamGenerator` on ``book``, each applied (when accepted) to a live
    book and to the reference as it is drawn, so later events follow the state earlier ones left."""
    from reference.live_ref import LiveReference

    from dpm.live import LiveBook
    from dpm.live.events import EventRejected

    ref = LiveReference(engine.market, engine.instruments, engine.model, book, book.currencies)
    live = LiveBook(engine, book, workers=1)
    gen = StreamGenerator(ref, seed=seed, tick_rate=tick_rate, n_events=n)
    out = []
    for _ in range(n):
        ev = next(gen)
        out.append(ev)
        try:
            live.apply(ev)
            ref.apply(ev)
        except EventRejected:
            pass
    return out
