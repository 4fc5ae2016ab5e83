"""Live margin: a mutable book margined incrementally as fills, transfers and ticks arrive.

- :class:`LiveBook` (:mod:`dpm.live.book`) — positions, resting orders and balances; incremental
  margin through the engines' kernels; pre-trade checks; snapshots.
- events (:mod:`dpm.live.events`) — :class:`Fill`, :class:`Transfer`, :class:`MarketTick`, ...
- alerts (:mod:`dpm.live.alerts`) — margin-call / liquidation / recovery with hysteresis, bounded
  subscribers.
- durability (:mod:`dpm.live.journal`) — SQLite (WAL) event log and snapshots; :class:`LiveRunner`
  (:mod:`dpm.live.runner`) — the single writer thread with a bounded queue.

The network service is :mod:`dpm.service` (optional extra ``service``). See ``docs/live.md``.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "AccountStatus": "dpm.live.book",
    "Alert": "dpm.live.alerts",
    "AlertBus": "dpm.live.alerts",
    "AlertPolicy": "dpm.live.alerts",
    "CancelOrder": "dpm.live.events",
    "CheckResult": "dpm.live.book",
    "EventRejected": "dpm.live.events",
    "Fill": "dpm.live.events",
    "Funding": "dpm.live.events",
    "Journal": "dpm.live.journal",
    "LiveBook": "dpm.live.book",
    "LiveRunner": "dpm.live.runner",
    "MarketTick": "dpm.live.events",
    "OpenAccount": "dpm.live.events",
    "PlaceOrder": "dpm.live.events",
    "Settle": "dpm.live.events",
    "SubscriberOverflow": "dpm.live.alerts",
    "Transfer": "dpm.live.events",
    "UnderlyingTick": "dpm.live.events",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
