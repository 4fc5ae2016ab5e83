"""Portfolio layer: accounts as a CSR book over an instrument table, collateral, file readers and
writers, and the seeded sample-account generator.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "ARCHETYPES": "dpm.portfolio.sample",
    "Account": "dpm.portfolio.accounts",
    "AccountBook": "dpm.portfolio.accounts",
    "DEFAULT_CURRENCIES": "dpm.portfolio.accounts",
    "PART_PATTERN": "dpm.portfolio.partitions",
    "UNITS": "dpm.portfolio.venue",
    "UnknownAccountError": "dpm.portfolio.accounts",
    "collateral_path_for": "dpm.portfolio.io",
    "contracts_from_size": "dpm.portfolio.venue",
    "deribit_account": "dpm.portfolio.venue",
    "format_of": "dpm.portfolio.io",
    "generate_accounts": "dpm.portfolio.sample",
    "json_columns_text": "dpm.portfolio.io",
    "partition_files": "dpm.portfolio.partitions",
    "read_accounts": "dpm.portfolio.io",
    "read_columns": "dpm.portfolio.io",
    "read_instruments": "dpm.portfolio.io",
    "write_accounts": "dpm.portfolio.io",
    "write_columns": "dpm.portfolio.io",
    "write_generated_partitions": "dpm.portfolio.partitions",
    "write_instruments": "dpm.portfolio.io",
    "write_partitions": "dpm.portfolio.partitions",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
