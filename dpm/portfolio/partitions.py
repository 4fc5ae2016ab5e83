"""Partitioned books: a directory of Parquet (or Arrow, CSV) positions files, whole accounts per file.

A partitioned book is a directory holding ``part-00000.parquet``, ``part-00001.parquet``, ... and
next to each its collateral file ``part-00000.collateral.parquet`` (the layout of
:func:`dpm.portfolio.io.write_accounts`). Every account lies in exactly one partition, so a
partition is margined on its own (:mod:`dpm.engines.distributed` runs them on a Dask cluster) and
the memory of one task is bounded by the partition, not by the book.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import AccountBook

__all__ = ["PART_PATTERN", "partition_files", "partition_name", "write_generated_partitions", "write_partitions"]

#: File names of the positions files of a partitioned book (the collateral files are skipped).
PART_PATTERN = re.compile(r"^part-(\d+)\.(parquet|pq|arrow|feather|ipc|csv)$")


def partition_name(index: int, suffix: str = ".parquet") -> str:
    """``part-00042.parquet``: the file name of partition ``index``."""
    return f"part-{index:05d}{suffix}"


def partition_files(directory: str | os.PathLike) -> list[Path]:
    """Positions files of a partitioned book, in partition order.

    Raises
    ------
    InvalidInputError
        ``directory`` is not a directory, or holds no ``part-NNNNN`` positions file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InvalidInputError(f"{d}: not a directory (a partitioned book is a directory of part-NNNNN files)")
    found = []
    for p in d.iterdir():
        m = PART_PATTERN.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p.name, p))
    if not found:
        raise InvalidInputError(f"{d}: no partition files (expected part-00000.parquet, part-00001.parquet, ...)")
    return [p for _, _, p in sorted(found)]


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name}: expected an int, got {value!r}")
    if value < 1:
        raise InvalidInputError(f"{name}: must be >= 1, got {value}")
    return int(value)


def write_partitions(book: AccountBook, directory: str | os.PathLike, accounts_per_partition: int,
                     format: str = "parquet") -> list[Path]:
    """Write ``book`` as a partitioned book of ``accounts_per_partition`` consecutive accounts per file.

    The directory is created if needed (its parent must exist); returns the positions files written.
    """
    from dpm.portfolio.io import write_accounts

    if not isinstance(book, AccountBook):
        raise InvalidTypeError(f"book: expected an AccountBook, got {type(book).__name__}")
    per = _check_count("accounts_per_partition", accounts_per_partition)
    suffix = "." + format.lower().lstrip(".")
    d = Path(directory)
    d.mkdir(exist_ok=True)
    paths = []
    for j, start in enumerate(range(0, max(len(book), 1), per)):
        part = book.subset(np.arange(start, min(start + per, len(book))))
        path = d / partition_name(j, suffix)
        write_accounts(part, path)
        paths.append(path)
    return paths


def write_generated_partitions(directory: str | os.PathLike, n_accounts: int, accounts_per_partition: int,
                               table: InstrumentTable | None = None, seed: int = 0,
                               currencies: Sequence[str] | None = None) -> list[Path]:
    """Generate a partitioned sample book of ``n_accounts`` accounts one partition at a time.

    Partition ``j`` is :func:`dpm.portfolio.sample.generate_accounts` of its accounts with the
    ``j``-th child of ``numpy.random.SeedSequence(seed)`` and ids ``p00042-acc-000123`` (unique over
    the book), so memory stays that of one partition: ten million accounts fit on a laptop. (It is
    not the book of one ``generate_accounts(n_accounts)`` call, whose random stream is different.)
    """
    from dpm.portfolio.io import write_accounts
    from dpm.portfolio.sample import generate_accounts

    n = _check_count("n_accounts", n_accounts)
    per = _check_count("accounts_per_partition", accounts_per_partition)
    d = Path(directory)
    d.mkdir(exist_ok=True)
    k = -(-n // per)
    seeds = np.random.SeedSequence(seed).spawn(k)
    kw = {} if currencies is None else {"currencies": tuple(currencies)}
    paths = []
    for j in range(k):
        m = min(per, n - j * per)
        book = generate_accounts(m, table, seed=np.random.default_rng(seeds[j]), id_prefix=f"p{j:05d}-acc-", **kw)
        path = d / partition_name(j)
        write_accounts(book, path)
        paths.append(path)
    return paths
