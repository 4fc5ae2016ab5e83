"""Margin, VaR/ES and stress of a partitioned book, partition by partition, on a Dask cluster.

A partitioned book (:mod:`dpm.portfolio.partitions`: ``part-NNNNN.parquet`` files, whole accounts
per file) is processed one partition per task. The engine's inputs (market snapshot, instrument
table, model or scenario set) are sent to every worker once (``Client.scatter(..., broadcast=True)``)
and each worker process builds the engine once and keeps it for the next partitions of the run; a
task reads its partition, computes, and writes its results as ``part-NNNNN.parquet`` into the output
directory. Only per-partition summaries (totals, counts, the largest rows) travel back to the
client, so memory is bounded by the partition size on the workers and by the number of partitions on
the client, never by the size of the book.

Every account's figures depend on that account alone, so the concatenated partition results are
the single-process results, bit for bit (tests compare them), whatever the partitioning, the number
of workers or their threads.

``client=None`` runs the partitions one after another in this process (the same code path, no
Dask needed). Dask is the optional extra ``dask`` (``pip install dpm[dask]``), imported inside the
functions that need it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpm.engines.results import first_non_finite
from dpm.errors import DPMError, InvalidInputError, InvalidTypeError
from dpm.portfolio.partitions import partition_files

__all__ = [
    "DistributedRun",
    "PartitionResult",
    "cluster",
    "id_hashes",
    "margin_partitions",
    "stress_partitions",
    "var_es_partitions",
]


@dataclass(frozen=True)
class PartitionResult:
    """What one partition's task returns to the client (small: no per-account arrays).

    Attributes
    ----------
    source, output : str
        The partition's positions file and its results file (``""`` when not written).
    accounts, positions : int
    totals : dict of str to float
        Sums over the partition's accounts of the run's summary columns.
    counts : dict of str to int
        Accounts meeting the run's conditions (e.g. below initial margin).
    top : dict of str to list
        The partition's rows with the largest ranking value (column -> values, largest first).
    seconds : dict of str to float
        ``engine`` (0 when the worker had built it already), ``read``, ``compute``, ``write``, ``task``.
    worker : str
        ``host:pid`` of the process that ran the task.
    """

    source: str
    output: str
    accounts: int
    positions: int
    totals: dict[str, float]
    counts: dict[str, int]
    top: dict[str, list[Any]]
    seconds: dict[str, float]
    worker: str
    id_hashes: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.uint64))


def id_hashes(ids: Any) -> np.ndarray:
    """A 64-bit FNV-1a hash of every account id (the same in every process, unlike ``hash``): the
    client finds an account that appears in two partitions from 8 bytes per account."""
    vals = np.asarray(list(ids), dtype=str)
    if vals.size == 0:
        return np.zeros(0, dtype=np.uint64)
    width = vals.dtype.itemsize // 4
    codes = vals.view(np.uint32).reshape(len(vals), width).astype(np.uint64)
    h = np.full(len(vals), 14695981039346656037, dtype=np.uint64)
    prime = np.uint64(1099511628211)
    with np.errstate(over="ignore"):
        for j in range(width):
            h = (h ^ codes[:, j]) * prime
        h = (h ^ np.char.str_len(vals).astype(np.uint64)) * prime
    return h


@dataclass(frozen=True)
class DistributedRun:
    """All partitions of a run (in partition order) and its timings.

    Attributes
    ----------
    kind : {'margin', 'var_es', 'stress'}
    partitions : tuple of PartitionResult
    outputs : tuple of str
        The results files, one per partition, in partition order.
    seconds : float
        Wall time of the run (scatter, tasks, moving the outputs into place).
    setup_seconds : float
        Wall time of sending the shared inputs to the workers.
    rank : str
        Column the ``top`` rows are ranked by.
    """

    kind: str
    partitions: tuple[PartitionResult, ...]
    outputs: tuple[str, ...]
    seconds: float
    setup_seconds: float
    rank: str
    workers: tuple[str, ...] = field(default=())

    @property
    def accounts(self) -> int:
        return sum(p.accounts for p in self.partitions)

    @property
    def positions(self) -> int:
        return sum(p.positions for p in self.partitions)

    @property
    def totals(self) -> dict[str, float]:
        """Book totals: partition totals added in partition order."""
        out: dict[str, float] = {}
        for p in self.partitions:
            for k, v in p.totals.items():
                out[k] = out.get(k, 0.0) + v
        return out

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.partitions:
            for k, v in p.counts.items():
                out[k] = out.get(k, 0) + v
        return out

    def top(self, n: int = 10) -> dict[str, list[Any]]:
        """The ``n`` rows with the largest :attr:`rank` value over the book (ties: partition order)."""
        cols = [c for c in (self.partitions[0].top if self.partitions else {})]
        rows = [tuple(p.top[c][i] for c in cols) for p in self.partitions for i in range(len(p.top[self.rank]))]
        j = cols.index(self.rank) if cols else 0
        rows = sorted(rows, key=lambda r: -r[j])[: max(int(n), 0)]  # stable: partition order on ties
        return {c: [r[k] for r in rows] for k, c in enumerate(cols)}


# ----------------------------------------------------------------------------------------------------
# cluster
# ----------------------------------------------------------------------------------------------------
def _dask() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise DPMError(f"running on a Dask cluster needs the optional extra 'dask' (pip install 'dpm[dask]'): "
                       f"{exc}") from None
    return distributed


@contextlib.contextmanager
def cluster(scheduler: Any = "local", *, n_workers: int = 2, threads_per_worker: int = 1,
            timeout: float = 60.0) -> Iterator[Any]:
    """A Dask ``Client`` for ``scheduler``, closed (and a local cluster shut down) on exit.

    ``"local"`` starts a ``LocalCluster`` of ``n_workers`` worker processes with
    ``threads_per_worker`` threads each on 127.0.0.1 (no dashboard); any other string is the address
    of a running scheduler (``tcp://host:8786``); a ``Client`` is used as it is (and left open).
    """
    if not isinstance(scheduler, str):
        yield scheduler
        return
    distributed = _dask()
    if scheduler == "local":
        local = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                         processes=True, host="127.0.0.1", dashboard_address=None,
                                         silence_logs=logging.ERROR)
        try:
            with distributed.Client(local, timeout=timeout) as client:
                yield client
        finally:
            local.close()
        return
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except OSError as exc:
        raise InvalidInputError(f"scheduler {scheduler!r}: cannot connect ({exc})") from None
    with client:
        yield client


# ----------------------------------------------------------------------------------------------------
# tasks (module level: Dask sends them by reference; everything they need comes as arguments)
# ----------------------------------------------------------------------------------------------------
_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()


def _cached(key: Any, build: Callable[[], Any]) -> tuple[Any, float]:
    """``(value, seconds spent building it)``: built once per process for a run's token."""
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit, 0.0
        t0 = time.perf_counter()
        value = build()
        if len(_CACHE) >= 8:  # an old run's engines
            _CACHE.clear()
        _CACHE[key] = value
        return value, time.perf_counter() - t0


@dataclass(frozen=True)
class _Inputs:
    """What every task of a run shares (sent to each worker once)."""

    kind: str
    market: Any
    table: Any
    model: Any = None
    scenarios: Any = None
    levels: tuple[float, ...] = ()
    threads: int | None = None
    top: int = 10


def _top_rows(order_by: np.ndarray, cols: dict[str, np.ndarray], n: int) -> dict[str, list[Any]]:
    idx = np.argsort(-order_by, kind="stable")[:n]
    return {c: v[idx].tolist() for c, v in cols.items()}


def _check_finite(columns: dict[str, Any], ids: np.ndarray, source: str, allow_infinite: Sequence[str] = ()) -> None:
    bad = first_non_finite(columns, allow_infinite)
    if bad is not None:
        name, i, value = bad
        raise InvalidInputError(f"{source}: results: column {name!r} of account {str(ids[i])!r} is "
                                f"{value!r}; no result file is written for a figure that is not a finite number")


def _run_partition(path: str, out: str, token: str, inputs: _Inputs) -> PartitionResult:
    """Read one partition, compute, write its results file, return the summary."""
    import socket

    from dpm.portfolio.io import read_accounts, write_columns

    t_task = time.perf_counter()
    engine, t_engine = _cached((token, inputs.kind), lambda: _build(inputs))
    t0 = time.perf_counter()
    book = read_accounts(path, inputs.table)
    t1 = time.perf_counter()
    if inputs.kind == "margin":
        res = engine.margin_many(book, workers=inputs.threads)
        cols = res.to_columns()
        _check_finite(cols, res.account_id, path, allow_infinite=("margin_ratio",))
        s = res.summary()
        totals = {k: s[k] for k in ("total_initial_margin", "total_maintenance_margin", "total_equity")}
        counts = {"below_initial": int(s["below_initial"]), "below_maintenance": int(s["below_maintenance"])}
        top = _top_rows(res.initial_margin, {
            "account_id": res.account_id, "initial_margin": res.initial_margin,
            "maintenance_margin": res.maintenance_margin, "equity": res.equity, "margin_ratio": res.margin_ratio,
        }, inputs.top)
    elif inputs.kind == "var_es":
        res = engine[0].var_es(book, engine[1], inputs.levels, workers=inputs.threads)
        cols = {"account_id": res.account_id}
        for r, lv in enumerate(res.levels):
            cols[f"var_{lv:g}"] = res.var[r]
            cols[f"es_{lv:g}"] = res.es[r]
        _check_finite(cols, res.account_id, path)
        totals = {k: float(np.sum(v)) for k, v in cols.items() if k != "account_id"}
        counts = {}
        top = _top_rows(res.es[0], cols, inputs.top)
    else:
        res = engine.stress(book, inputs.scenarios, workers=inputs.threads)
        names = res.scenario_names
        cols = {"account_id": res.account_id, "worst_loss": res.worst_loss,
                "worst_scenario": np.array([names[k] for k in res.worst_scenario], dtype=object)}
        cols.update({f"loss:{n}": res.loss[:, j] for j, n in enumerate(names)})
        _check_finite(cols, res.account_id, path)
        totals = {f"loss:{n}": float(res.loss[:, j].sum()) for j, n in enumerate(names)}
        counts = {f"worst:{n}": int((res.worst_scenario == j).sum()) for j, n in enumerate(names)}
        top = _top_rows(res.worst_loss, {"account_id": res.account_id, "worst_loss": res.worst_loss,
                                         "worst_scenario": cols["worst_scenario"]}, inputs.top)
    t2 = time.perf_counter()
    if out:
        write_columns(out, cols)
    t3 = time.perf_counter()
    return PartitionResult(
        source=path, output=out, accounts=len(book), positions=book.n_positions, totals=totals, counts=counts,
        top=top, seconds={"engine": t_engine, "read": t1 - t0, "compute": t2 - t1, "write": t3 - t2,
                          "task": t3 - t_task},
        worker=f"{socket.gethostname()}:{os.getpid()}", id_hashes=id_hashes(book.account_id))


def _build(inputs: _Inputs) -> Any:
    if inputs.kind == "margin":
        from dpm.engines.margin import MarginEngine

        return MarginEngine(inputs.market, inputs.table, inputs.model, workers=inputs.threads)
    from dpm.engines.risk import ScenarioRiskEngine

    engine = ScenarioRiskEngine(inputs.market, inputs.table, workers=inputs.threads)
    if inputs.kind == "var_es":
        # the scenarios' P&L per contract once per worker: each partition then only gathers it
        return engine, engine.revalue(inputs.scenarios, workers=inputs.threads)
    return engine


# ----------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------
def _check_common(market: Any, instruments: Any, threads: Any, top: Any) -> None:
    from dpm.market.snapshot import MarketSnapshot
    from dpm.market.table import InstrumentTable

    if not isinstance(market, MarketSnapshot):
        raise InvalidTypeError(f"market: expected a MarketSnapshot, got {type(market).__name__}")
    if not isinstance(instruments, InstrumentTable):
        raise InvalidTypeError(f"instruments: expected an InstrumentTable, got {type(instruments).__name__}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads: expected None or an int >= 1, got {threads!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise InvalidInputError(f"top: expected an int >= 0, got {top!r}")


def _run(book: Any, out: Any, client: Any, inputs: _Inputs, rank: str) -> DistributedRun:
    parts = [str(p) for p in partition_files(book)]
    t_start = time.perf_counter()
    out_dir = None if out is None else Path(out)
    staging = None
    if out_dir is not None:
        parent = out_dir.parent if str(out_dir.parent) else Path(".")
        if not parent.is_dir():
            raise InvalidInputError(f"out: directory {str(parent)!r} does not exist")
        if out_dir.exists() and not out_dir.is_dir():
            raise InvalidInputError(f"out: {str(out_dir)!r} exists and is not a directory")
        out_dir.mkdir(exist_ok=True)
        # results go to a hidden staging directory and are moved into place when every partition is done
        staging = Path(out_dir) / f".dpm-{uuid.uuid4().hex[:12]}.tmp"
        staging.mkdir()
    names = [Path(p).with_suffix(".parquet").name for p in parts]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{book}: two partition files have the same number")
    outs = ["" if staging is None else str(staging / n) for n in names]
    token = uuid.uuid4().hex
    try:
        t0 = time.perf_counter()
        if client is None:
            shared, setup = inputs, 0.0
            results = [_run_partition(p, o, token, shared) for p, o in zip(parts, outs)]
            workers: tuple[str, ...] = ()
        else:
            shared = client.scatter(inputs, broadcast=True, hash=False)
            setup = time.perf_counter() - t0
            futures = [client.submit(_run_partition, p, o, token, shared, pure=False, key=f"dpm-{inputs.kind}-{j}-{token}")
                       for j, (p, o) in enumerate(zip(parts, outs))]
            try:
                results = client.gather(futures)
            finally:
                client.cancel(futures)
            workers = tuple(sorted(client.scheduler_info().get("workers", {})))
        _check_disjoint(results, inputs.table)
        final = []
        if staging is not None:
            for o, n in zip(outs, names):
                dest = out_dir / n
                os.replace(o, dest)
                final.append(str(dest))
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return DistributedRun(kind=inputs.kind, partitions=tuple(results), outputs=tuple(final),
                          seconds=time.perf_counter() - t_start, setup_seconds=setup, rank=rank, workers=workers)


def _check_disjoint(results: Sequence[PartitionResult], table: Any) -> None:
    """Fail closed on an account in two partitions: each would be margined on part of its positions."""
    if len(results) < 2:
        return
    h = np.concatenate([r.id_hashes for r in results])
    part = np.repeat(np.arange(len(results)), [len(r.id_hashes) for r in results])
    order = np.argsort(h, kind="stable")
    same = np.flatnonzero(h[order][1:] == h[order][:-1])
    for k in same:
        a, b = int(part[order[k]]), int(part[order[k + 1]])
        if a == b:
            continue  # ids are unique within a partition (the reader checks): a hash collision
        from dpm.portfolio.io import read_accounts

        common = set(read_accounts(results[a].source, table).account_id.tolist()) & \
            set(read_accounts(results[b].source, table).account_id.tolist())
        if common:
            raise InvalidInputError(
                f"account {sorted(common)[0]!r} appears in partitions {results[a].source!r} and "
                f"{results[b].source!r}; every account must lie in one partition (else each part would be margined "
                "on part of its positions)")


def margin_partitions(book: str | os.PathLike, market: Any, instruments: Any, model: Any = None, *,
                      out: str | os.PathLike | None = None, client: Any = None, threads: int | None = None,
                      top: int = 10) -> DistributedRun:
    """Margin of every account of a partitioned book, one task per partition.

    Parameters
    ----------
    book : path
        Directory of ``part-NNNNN.parquet`` positions files (with their collateral files).
    market, instruments, model
        As :class:`dpm.engines.margin.MarginEngine` (model default: dpm's).
    out : path, optional
        Directory for the results, one ``part-NNNNN.parquet`` per partition (the columns of
        :meth:`MarginResults.to_columns`); created if needed. Workers write there directly, so on a
        multi-machine cluster it must be on storage every worker and the client see.
    client : dask.distributed.Client, optional
        None: the partitions run one after another in this process.
    threads : int, optional
        Threads of each task (None: all cores of the worker).
    top : int
        Largest-IM rows each partition returns (:meth:`DistributedRun.top`).

    Raises
    ------
    DPMError
        Any partition's error (file, field and row named); no results file is left in ``out``.
    """
    from dpm.models.presets import dpm_default

    _check_common(market, instruments, threads, top)
    model = dpm_default() if model is None else model
    return _run(book, out, client, _Inputs("margin", market, instruments, model=model, threads=threads, top=top),
                "initial_margin")


def var_es_partitions(book: str | os.PathLike, market: Any, instruments: Any, scenarios: Any,
                      levels: float | Sequence[float] = (0.99,), *, out: str | os.PathLike | None = None,
                      client: Any = None, threads: int | None = None, top: int = 10) -> DistributedRun:
    """VaR and ES of every account of a partitioned book over ``scenarios`` (e.g. Monte Carlo paths
    from :func:`dpm.models.generators.montecarlo.mc_scenarios`), one task per partition; each worker
    revalues the scenarios once. Results columns ``account_id, var_<level>, es_<level>``; ``top``
    ranks by the ES at the first level. See :func:`margin_partitions` for the other parameters."""
    lv = (float(levels),) if isinstance(levels, (int, float)) else tuple(float(x) for x in levels)
    _check_common(market, instruments, threads, top)
    return _run(book, out, client, _Inputs("var_es", market, instruments, scenarios=scenarios, levels=lv,
                                           threads=threads, top=top), f"es_{lv[0]:g}" if lv else "es")


def stress_partitions(book: str | os.PathLike, market: Any, instruments: Any, scenarios: Any, *,
                      out: str | os.PathLike | None = None, client: Any = None, threads: int | None = None,
                      top: int = 10) -> DistributedRun:
    """Loss of every account of a partitioned book under each named scenario, one task per partition.
    Results columns ``account_id, worst_loss, worst_scenario, loss:<name>...``. See
    :func:`margin_partitions` for the other parameters."""
    _check_common(market, instruments, threads, top)
    return _run(book, out, client, _Inputs("stress", market, instruments, scenarios=scenarios, threads=threads,
                                           top=top), "worst_loss")

