"""Market data layer: instruments and their names, snapshots (forward curves, vol surfaces),
price history, venue loaders and the bundled sample market.

Modules: :mod:`~dpm.market.specs` (kinds, spec objects), :mod:`~dpm.market.names` (Deribit name
grammar), :mod:`~dpm.market.table` (:class:`InstrumentTable`), :mod:`~dpm.market.table_io`,
:mod:`~dpm.market.snapshot` (:class:`MarketSnapshot`), :mod:`~dpm.market.surface` (SVI surfaces),
:mod:`~dpm.market.history` (daily prices), :mod:`~dpm.market.loaders`, :mod:`~dpm.market.sample`.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "ArbitrageIssue": "dpm.market.surface",
    "ArbitrageReport": "dpm.market.surface",
    "BUNDLED_HISTORY_SOURCE": "dpm.market.history",
    "DATA_DIR": "dpm.market.sample",
    "DEFAULT_MARKET_PARAMS_PATH": "dpm.market.sample",
    "DERIBIT_CHAIN_PATH": "dpm.market.sample",
    "DERIBIT_SAMPLE_CHAIN": "dpm.market.loaders.deribit",
    "DeribitChain": "dpm.market.loaders.deribit",
    "EXPIRY_HOUR_UTC": "dpm.market.specs",
    "ForwardCurve": "dpm.market.snapshot",
    "Future": "dpm.market.specs",
    "INSTRUMENT_COLUMNS": "dpm.market.table",
    "InstrumentInputs": "dpm.market.snapshot",
    "InstrumentTable": "dpm.market.table",
    "Kind": "dpm.market.specs",
    "LEE_MAX_SLOPE": "dpm.market.surface",
    "LogReturns": "dpm.market.history",
    "MIN_QUOTES": "dpm.market.surface",
    "MS_PER_YEAR": "dpm.market.snapshot",
    "MarketSnapshot": "dpm.market.snapshot",
    "NO_EXPIRY": "dpm.market.specs",
    "Option": "dpm.market.specs",
    "Perpetual": "dpm.market.specs",
    "PriceHistory": "dpm.market.history",
    "SAMPLE_TIMESTAMP_MS": "dpm.market.sample",
    "SVISlice": "dpm.market.surface",
    "Spec": "dpm.market.specs",
    "Spot": "dpm.market.specs",
    "TimeLike": "dpm.market.specs",
    "UnderlyingMarket": "dpm.market.snapshot",
    "VolSurface": "dpm.market.surface",
    "default_contract_size": "dpm.market.specs",
    "default_instruments": "dpm.market.sample",
    "default_market": "dpm.market.sample",
    "default_marks": "dpm.market.sample",
    "deribit_marks": "dpm.market.sample",
    "deribit_snapshot": "dpm.market.sample",
    "fit_svi": "dpm.market.surface",
    "format_name": "dpm.market.names",
    "generate_default_market_params": "dpm.market.sample",
    "history_from_long": "dpm.market.history",
    "history_from_wide": "dpm.market.history",
    "load_default_market_params": "dpm.market.sample",
    "load_history": "dpm.market.history",
    "load_listing_parameters": "dpm.market.sample",
    "parse_name": "dpm.market.names",
    "read_deribit_chain": "dpm.market.loaders.deribit",
    "svi_density": "dpm.market.surface",
    "svi_derivatives": "dpm.market.surface",
    "svi_total_variance": "dpm.market.surface",
    "table_from_frame": "dpm.market.table_io",
    "table_from_records": "dpm.market.table_io",
    "table_to_arrow": "dpm.market.table_io",
    "table_to_frame": "dpm.market.table_io",
    "table_to_records": "dpm.market.table_io",
    "to_ms": "dpm.market.specs",
    "year_fraction": "dpm.market.snapshot",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
