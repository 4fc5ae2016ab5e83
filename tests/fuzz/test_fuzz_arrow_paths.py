"""Differential fuzzing of the pyarrow fast paths against the standard-library readers and writers.

With pyarrow installed, large files go through :mod:`dpm._util.arrow`; the standard-library path
stays the reference (and the only path without pyarrow). The property: for every input, both paths
give the same book (same ids and order, CSR arrays, collateral bits) or raise the same error type
with the same message, and the writers give the same bytes. The fast path is forced here for tiny
inputs (its size thresholds set to 0).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fuzz_harness import fuzz, oracle
from fuzz_strategies import (
    COLLATERAL_SCHEMA,
    CURRENCIES,
    INSTRUMENTS,
    NASTY_TEXT,
    POSITIONS_SCHEMA,
    cells,
    csv_text,
    encoded,
    nasty_floats,
    parquet_bytes,
    valid_table_csv,
)
from hypothesis import given
from hypothesis import strategies as st

from dpm._util import arrow as fast
from dpm.errors import DPMError
from dpm.market.sample import default_instruments
from dpm.portfolio.io import read_accounts, read_columns, write_accounts, write_columns

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TABLE = default_instruments()
POSITION_COLUMNS = ["account_id", "instrument", "quantity", "account_id", "quantity", "", "extra"]
COLLATERAL_COLUMNS = ["account_id", "currency", "amount", "amount", ""]


@contextlib.contextmanager
def path(arrow: bool) -> Iterator[None]:
    """Force the pyarrow path (thresholds 0) or the standard-library path (fast paths off)."""
    saved = fast.ENABLED, fast.FAST_PATH_MIN_BYTES, fast.FAST_PATH_MIN_CELLS
    fast.ENABLED, fast.FAST_PATH_MIN_BYTES, fast.FAST_PATH_MIN_CELLS = arrow, 0, 0
    try:
        yield
    finally:
        fast.ENABLED, fast.FAST_PATH_MIN_BYTES, fast.FAST_PATH_MIN_CELLS = saved


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except DPMError as exc:
        return ("error", type(exc).__name__, str(exc))


def same(target: str, a: Any, b: Any) -> None:
    if a[0] == "ok" and b[0] == "ok":
        oracle(target, a[1].equals(b[1]) and a[1].account_id.tolist() == b[1].account_id.tolist()
               and np.array_equal(a[1].collateral.view(np.int64), b[1].collateral.view(np.int64)),
               "the two paths give different books")
    else:
        oracle(target, a == b, f"pyarrow path {a!r} != standard-library path {b!r}")


def both(call: Callable[[], Any]) -> tuple[Any, Any]:
    with path(True):
        a = outcome(call)
    with path(False):
        b = outcome(call)
    return a, b


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_arrow_paths")


position_cells = st.one_of(cells, st.sampled_from(INSTRUMENTS + CURRENCIES))


@fuzz("arrow_paths.accounts_csv", ci=150, long=12_000)
@given(positions=st.one_of(encoded(csv_text(POSITION_COLUMNS, position_cells)),
                           *[valid_table_csv(POSITIONS_SCHEMA).map(str.encode)] * 3),
       collateral=st.one_of(st.none(), encoded(csv_text(COLLATERAL_COLUMNS, position_cells)),
                            *[valid_table_csv(COLLATERAL_SCHEMA).map(str.encode)] * 3),
       currencies=st.one_of(st.none(), st.just(("BTC", "ETH", "USDC", "USDT", "DOGE"))))
def test_accounts_csv_paths_agree(workdir, positions, collateral, currencies) -> None:
    p, c = workdir / "p.csv", workdir / "p.collateral.csv"
    p.write_bytes(positions)
    if collateral is None:
        c.unlink(missing_ok=True)
    else:
        c.write_bytes(collateral)
    same("arrow_paths.accounts_csv", *both(lambda: read_accounts(p, TABLE, currencies=currencies)))


@st.composite
def positions_table(draw) -> Any:
    """A positions table with valid-looking values, as plain or dictionary text, in one or more row groups."""
    n = draw(st.integers(0, 8))
    ids = draw(st.lists(st.sampled_from(["A", "B", "C", "", "=x", "'=y", "é"]), min_size=n, max_size=n))
    names = draw(st.lists(st.sampled_from(INSTRUMENTS + ["BTC-NOPE"]), min_size=n, max_size=n))
    qty = draw(st.lists(st.one_of(st.none(), nasty_floats, st.floats(-1e6, 1e6)), min_size=n, max_size=n))
    cols = {"account_id": pa.array(ids, type=pa.string()), "instrument": pa.array(names, type=pa.string()),
            "quantity": pa.array(qty, type=pa.float64())}
    for k in ("account_id", "instrument"):
        if draw(st.booleans()):
            # a stored dictionary in any order (other tools do not keep the order of first appearance)
            values = sorted(set(cols[k].to_pylist()), reverse=draw(st.booleans()))
            codes = [values.index(v) for v in cols[k].to_pylist()]
            cols[k] = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()),
                                                     pa.array(values, type=pa.string()))
    return pa.table(cols), draw(st.sampled_from([1, 2, 3, 1000]))


@st.composite
def collateral_table(draw) -> Any:
    n = draw(st.integers(0, 6))
    return pa.table({
        "account_id": pa.array(draw(st.lists(st.sampled_from(["A", "B", "D", ""]), min_size=n, max_size=n))),
        "currency": pa.array(draw(st.lists(st.sampled_from(CURRENCIES + ["btc", "DOGE"]), min_size=n, max_size=n))),
        "amount": pa.array(draw(st.lists(st.one_of(st.floats(0, 1e6), nasty_floats), min_size=n, max_size=n)),
                           type=pa.float64()),
    })


def _parquet(table: Any, row_group: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group)
    return sink.getvalue()


@fuzz("arrow_paths.accounts_parquet", ci=120, long=8_000)
@given(positions=st.one_of(positions_table().map(lambda t: _parquet(*t)), parquet_bytes(POSITION_COLUMNS)),
       collateral=st.one_of(st.none(), collateral_table().map(lambda t: _parquet(t, 2)),
                            parquet_bytes(COLLATERAL_COLUMNS)))
def test_accounts_parquet_paths_agree(workdir, positions, collateral) -> None:
    p, c = workdir / "p.parquet", workdir / "p.collateral.parquet"
    p.write_bytes(positions)
    if collateral is None:
        c.unlink(missing_ok=True)
    else:
        c.write_bytes(collateral)
    same("arrow_paths.accounts_parquet", *both(lambda: read_accounts(p, TABLE)))


text_values = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=6))


def column_arrays(n: int):
    return st.one_of(
        st.lists(nasty_floats, min_size=n, max_size=n).map(lambda v: np.array(v, dtype=np.float64)),
        st.lists(st.floats(-1e18, 1e18), min_size=n, max_size=n).map(lambda v: np.array(v, dtype=np.float64)),
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.booleans(), min_size=n, max_size=n).map(lambda v: np.array(v, dtype=bool)),
        st.lists(text_values, min_size=n, max_size=n).map(lambda v: np.array(v, dtype=object)),
        st.lists(st.one_of(st.none(), st.booleans(), nasty_floats, st.integers(-10**6, 10**6), text_values),
                 min_size=n, max_size=n).map(lambda v: np.array(v, dtype=object)),
        st.lists(st.text(max_size=3), min_size=n, max_size=n).map(lambda v: np.array(v, dtype=str)),
    )


@st.composite
def column_sets(draw) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 8))
    k = draw(st.integers(2, 4))
    names = draw(st.lists(st.sampled_from(["a", "b", "=c", "d,e", 'q"', "é", "x\ny"]), min_size=k, max_size=k,
                          unique=True))
    return {name: draw(column_arrays(n)) for name in names}


def _written(p: Any, cols: dict[str, np.ndarray]) -> Any:
    try:
        write_columns(p, cols)
    except DPMError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", p.read_bytes())


@fuzz("arrow_paths.write_columns", ci=200, long=20_000)
@given(cols=column_sets(), fmt=st.sampled_from(["csv", "json"]))
def test_writers_give_the_same_bytes(workdir, cols, fmt) -> None:
    p = workdir / f"w.{fmt}"
    with path(True):
        a = _written(p, cols)
    with path(False):
        b = _written(p, cols)
    oracle("arrow_paths.write_columns", a == b, f"pyarrow writer {a!r} != standard-library writer {b!r}")
    if fmt == "csv" and a[0] == "ok":  # and the reader takes back what the writer wrote, on both paths
        oracle("arrow_paths.write_columns", str(both(lambda: read_columns(p))[0]) ==
               str(both(lambda: read_columns(p))[1]), "the two CSV readers disagree")


def test_fuzz_strategies_reach_both_outcomes(workdir) -> None:
    """The differential targets compare more than errors: a valid file gives the same book."""
    p = workdir / "ok.csv"
    p.write_text("account_id,instrument,quantity\nB,BTC-PERPETUAL,1\nA,ETH-PERPETUAL,-2.5\nB,BTC-PERPETUAL,3\n")
    (workdir / "ok.collateral.csv").write_text("account_id,currency,amount\nA,BTC,1.5\nC,USDC,2\n")
    a, b = both(lambda: read_accounts(p, TABLE))
    assert a[0] == b[0] == "ok" and a[1].account_id.tolist() == ["A", "C", "B"]
    same("arrow_paths.check", a, b)
    book = a[1]
    for fmt in ("csv", "parquet", "arrow"):
        out = workdir / f"round.{fmt}"
        with path(True):
            write_accounts(book, out)
        a, b = both(lambda: read_accounts(out, TABLE))
        assert a[0] == "ok" and a[1].equals(book)
        same("arrow_paths.check", a, b)
