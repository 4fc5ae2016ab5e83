"""Slow reference of dpm.live.LiveBook: plain dicts and lists, margins by full recompute.

State is kept per account as Python dicts (positions, resting orders) and lists (balances); every
rule of ``docs/live.md`` (fill cash, variation margin at ticks, funding, settlement, open-orders
rule, collateral value) is written again here with Python floats, in the order the docs state.
Margins come from a *fresh* ``MarginEngine(market).margin_many`` over whole books (positions, +
all buy orders, + all sell orders), so the incremental machinery of the live book (CSR, dirty
accounts, scratch kernels, row ranges) is not used at all.
"""
from __future__ import annotations

import numpy as np

from dpm.engines.margin import USD_LIKE, MarginEngine
from dpm.live.events import CancelOrder, Fill, Funding, MarketTick, OpenAccount, PlaceOrder, Settle, Transfer
from dpm.market.snapshot import MarketSnapshot
from dpm.market.specs import Kind
from dpm.portfolio.accounts import AccountBook


class LiveReference:
    def __init__(self, market, table, model, book, currencies):
        self.market = market
        self.table = table
        self.model = model
        self.currencies = tuple(currencies)
        self.ids = list(book.account_id.tolist())
        self.index = {x: k for k, x in enumerate(self.ids)}
        self.pos = []
        for a in range(len(book)):
            s, e = book.indptr[a], book.indptr[a + 1]
            self.pos.append({int(i): float(q) for i, q in zip(book.instrument_idx[s:e], book.quantity[s:e]) if q != 0})
        self.orders = [dict() for _ in self.ids]
        self.lin_kind = [k in (Kind.FUTURE, Kind.PERPETUAL) for k in np.asarray(table.kind).tolist()]
        # linear (futures / perpetual) positions per account: the accounts ticks and funding visit
        self.lin = [{i for i in d if self.lin_kind[i]} for d in self.pos]
        self.bal = [list(map(float, row)) for row in np.asarray(book.collateral)]
        self.settled = set()
        self.kind = np.asarray(table.kind).tolist()
        self.und = np.asarray(table.underlying).tolist()
        self.inverse = np.asarray(table.inverse).tolist()
        self.cs = np.asarray(table.contract_size).tolist()
        self.strike = np.asarray(table.strike).tolist()
        self.cp = np.asarray(table.option_type).tolist()
        self.settle_ccy = [self.currencies.index(s) for s in table.settlement.tolist()]
        self.names = table.name.tolist()
        self.name_index = {n: i for i, n in enumerate(self.names)}
        self._F = self._forwards(market)
        self._engine = None

    # ------------------------------------------------------------------ helpers
    def _forwards(self, market):
        return market.instrument_inputs(self.table).forward.tolist()

    def engine(self):
        if self._engine is None or self._engine.market is not self.market:
            self._engine = MarginEngine(self.market, self.table, self.model, workers=1)
        return self._engine

    def prices(self):
        out, rate = [], []
        for c in self.currencies:
            p = 1.0 if c in USD_LIKE else (float(self.market[c].index_price) if c in self.market else 0.0)
            out.append(p)
            rate.append(p * (1.0 - float(self.model.haircuts.get(c, 0.0))))
        return out, rate

    def collateral(self, bal):
        px, rate = self.prices()
        v = 0.0
        for c, b in enumerate(bal):
            v = v + (b * rate[c] if b > 0.0 else b * px[c])
        return v

    @staticmethod
    def merged(pos, orders, side):
        d = dict(pos)
        for i, q, _ in orders.values():
            if (q > 0) == (side > 0):
                d[i] = d.get(i, 0.0) + q
        return {i: q for i, q in d.items() if q != 0.0}

    def _lin(self, i):
        return self.kind[i] in (Kind.FUTURE, Kind.PERPETUAL)

    # ------------------------------------------------------------------ events
    def apply(self, ev):
        a = self.index[ev.account] if hasattr(ev, "account") and not isinstance(ev, OpenAccount) else None
        if isinstance(ev, OpenAccount):
            self.index[ev.account] = len(self.ids)
            self.ids.append(ev.account)
            self.pos.append({})
            self.lin.append(set())
            self.orders.append({})
            self.bal.append([0.0] * len(self.currencies))
        elif isinstance(ev, Transfer):
            c = self.currencies.index(ev.currency)
            self.bal[a][c] = self.bal[a][c] + ev.amount
        elif isinstance(ev, Fill):
            i = self.name_index[ev.instrument]
            if ev.order_id is not None:
                o = self.orders[a][ev.order_id]
                rest = o[1] - ev.quantity
                if abs(rest) <= 1e-9 * abs(o[1]):
                    del self.orders[a][ev.order_id]
                else:
                    self.orders[a][ev.order_id] = [o[0], rest, o[2]]
            q = self.pos[a].get(i, 0.0) + ev.quantity
            if q == 0.0:
                self.pos[a].pop(i, None)
                self.lin[a].discard(i)
            else:
                self.pos[a][i] = q
                if self.lin_kind[i]:
                    self.lin[a].add(i)
            c = self.settle_ccy[i]
            cs, p, F = self.cs[i], ev.price, self._F[i]
            if self._lin(i):
                cash = ev.quantity * cs * (1.0 / p - 1.0 / F) if self.inverse[i] else ev.quantity * cs * (F - p)
            else:
                cash = -(ev.quantity * cs * p)
            self.bal[a][c] = self.bal[a][c] + cash
            if ev.fee:
                self.bal[a][c] = self.bal[a][c] - ev.fee
        elif isinstance(ev, PlaceOrder):
            self.orders[a][ev.order_id] = [self.name_index[ev.instrument], ev.quantity, ev.price]
        elif isinstance(ev, CancelOrder):
            del self.orders[a][ev.order_id]
        elif isinstance(ev, Funding):
            i = self.name_index[ev.instrument]
            F, cs = self._F[i], self.cs[i]
            pay = -(cs * ev.rate / F) if self.inverse[i] else -(cs * F * ev.rate)
            c = self.settle_ccy[i]
            for b in range(len(self.ids)):
                if i in self.lin[b]:
                    self.bal[b][c] = self.bal[b][c] + self.pos[b][i] * pay
        elif isinstance(ev, Settle):
            i = self.name_index[ev.instrument]
            X, cs = ev.price, self.cs[i]
            if self.kind[i] == Kind.OPTION:
                intrinsic = max(self.cp[i] * (X - self.strike[i]), 0.0)
                pay = cs * intrinsic / X if self.inverse[i] else cs * intrinsic
            else:
                F = self._F[i]
                pay = cs * (1.0 / F - 1.0 / X) if self.inverse[i] else cs * (X - F)
            c = self.settle_ccy[i]
            for b in range(len(self.ids)):
                if i in self.pos[b]:
                    self.bal[b][c] = self.bal[b][c] + self.pos[b].pop(i) * pay
                    self.lin[b].discard(i)
                self.orders[b] = {k: o for k, o in self.orders[b].items() if o[0] != i}
            self.settled.add(i)
        elif isinstance(ev, MarketTick):
            self._tick(ev)
        else:  # pragma: no cover
            raise TypeError(ev)

    def _tick(self, ev):
        und = dict(self.market.underlyings)
        unds = list(self.table.underlyings)
        moved = set()
        for t in ev.underlyings:
            um = und[t.underlying]
            perp = t.perpetual_price if t.perpetual_price is not None else \
                um.perpetual_price * (t.index_price / um.index_price)
            ch = {"index_price": t.index_price, "perpetual_price": perp}
            if t.funding_rate is not None:
                ch["funding_rate"] = t.funding_rate
            und[t.underlying] = um.with_updates(**ch)
            if t.underlying in unds:
                moved.add(unds.index(t.underlying))
        ts = self.market.timestamp_ms
        if ev.timestamp_ms is not None and ev.timestamp_ms != ts:
            ts = ev.timestamp_ms
            moved = set(range(len(unds)))
        new = MarketSnapshot(ts, und)
        F_old, F_new = self._F, self._forwards(new)
        for b in range(len(self.ids)):
            if not self.lin[b]:
                continue
            sums = {}
            for i in sorted(self.lin[b]):
                if self.und[i] in moved:
                    cs = self.cs[i]
                    d = cs * (1.0 / F_old[i] - 1.0 / F_new[i]) if self.inverse[i] else cs * (F_new[i] - F_old[i])
                    c = self.settle_ccy[i]
                    sums[c] = sums.get(c, 0.0) + self.pos[b][i] * d
            for c, s in sums.items():
                self.bal[b][c] = self.bal[b][c] + s
        self.market = new
        self._F = F_new

    # ------------------------------------------------------------------ margins by full recompute
    def _book(self, rows):
        acc, inst, qty = [], [], []
        for b, d in enumerate(rows):
            for i in sorted(d):
                acc.append(b)
                inst.append(i)
                qty.append(d[i])
        return AccountBook.from_arrays(np.array(acc, dtype=np.int64), np.array(inst, dtype=np.int64),
                                       np.array(qty, dtype=np.float64), self.table, account_ids=list(self.ids),
                                       n_accounts=len(self.ids), workers=1)

    def margins(self, accounts=None):
        """(IM, MM, equity) arrays of ``accounts`` (default all), by full recompute."""
        acc = list(range(len(self.ids))) if accounts is None else list(accounts)
        eng = self.engine()
        P = [self.pos[b] for b in acc]
        B = [self.merged(self.pos[b], self.orders[b], +1) for b in acc]
        A = [self.merged(self.pos[b], self.orders[b], -1) for b in acc]
        saved = self.ids
        try:
            self.ids = [saved[b] for b in acc]
            rP, rB, rA = (eng.margin_many(self._book(r), workers=1) for r in (P, B, A))
        finally:
            self.ids = saved
        im = np.maximum(rP.initial_margin, np.maximum(rB.initial_margin, rA.initial_margin))
        mm = rP.maintenance_margin
        eq = np.array([self.collateral(self.bal[b]) for b in acc]) + rP.position_value
        return im, mm, eq
