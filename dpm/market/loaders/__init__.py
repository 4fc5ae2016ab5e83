"""Loaders of market data saved from venues' public APIs and files.

:func:`load_market` is the one entry point (venue JSON payloads, marks tables, saved dpm snapshots);
:func:`save_market` writes a snapshot it reads back exactly. :mod:`~dpm.market.loaders.deribit` reads the
bundled Deribit ticker dump into an instrument table and columnar marks.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "DERIBIT_SAMPLE_CHAIN": "dpm.market.loaders.deribit",
    "DeribitChain": "dpm.market.loaders.deribit",
    "FORMATS": "dpm.market.loaders.market",
    "check_market_covers": "dpm.market.loaders.market",
    "load_market": "dpm.market.loaders.market",
    "okx_name": "dpm.market.loaders.venues",
    "read_deribit_chain": "dpm.market.loaders.deribit",
    "save_market": "dpm.market.loaders.market",
    "snapshot_from_dict": "dpm.market.loaders.market",
    "snapshot_to_dict": "dpm.market.loaders.market",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
