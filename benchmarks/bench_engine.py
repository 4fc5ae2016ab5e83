"""Speed of dpm's margin engine, with the numpy + scipy.sparse reference measured in the same run.

    python -m pytest benchmarks/bench_engine.py --benchmark-only --benchmark-json=engine.json
    python benchmarks/run_engine_report.py engine.json     # the "Margin engine" table of docs/benchmarks.md

Workload: the bundled market (``default_market()``), the bundled listing (``default_instruments()``:
1,652 instruments over BTC and ETH), the ``dpm_default`` model (63 scenarios per underlying) and
books of 10,000 and 100,000 generated accounts (``generate_accounts``: 1-200 positions, ~38 on
average). Groups (``benchmark.group``):

- ``revaluation``: ``MarginEngine(...)`` build (1 and 2 workers) and the revaluation kernel alone
  (every instrument x scenario, 1 worker, the engine's own inputs), against the numpy revaluation
  of the reference (vectorised Black-76 with ``scipy.special.ndtr``);
- ``margin-10000`` / ``margin-100000``: ``margin_many`` from a built book at 1 and 2 workers, and the
  reference's three steps: building the per-underlying ``csr_matrix`` from the book's arrays, the
  sparse x dense product (then worst loss), and the add-ons/combine. The product benchmark checks
  that the reference's margins equal the engine's (relative 1e-9);
- ``what-if``: ``AccountState.what_if`` (one order by name, by id, a basket of 10) and
  ``what_if_ids`` (1 and 10 orders), per order, from Python;
- ``book``: ``AccountBook.from_arrays`` on shuffled and on pre-sorted (CSR order) columnar arrays;
- ``machine``: the parallel ceiling of this machine at the time of the run: SHA-256 of two 8 MB
  buffers (C code that releases the GIL, no shared data) on 1 and 2 threads through the same
  ``dpm._util.parallel.run_chunked`` as ``margin_many``. On a shared machine the 2-worker speed-up of
  ``margin_many`` cannot exceed this.

Every benchmark stores its item count in ``extra_info["n"]`` and the unit in ``extra_info["unit"]``
(``instrument``, ``account``, ``order``, ``position``) plus ``positions`` for the margin groups.
"""
from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest

from dpm._util import parallel as _parallel
from dpm.engines import margin as _engine
from dpm.engines.margin import MarginEngine
from dpm.market.sample import default_instruments, default_market
from dpm.models.presets import dpm_default
from dpm.portfolio.accounts import AccountBook
from dpm.portfolio.sample import generate_accounts

sys.path.insert(0, os.path.dirname(__file__))
import scipy_reference  # (benchmarks/ is not a package)

SIZES = (10_000, 100_000)
SEED = 1


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def table():
    return default_instruments()


@pytest.fixture(scope="module")
def market():
    return default_market()


@pytest.fixture(scope="module")
def model():
    # the combination the numpy reference implements (sqrt(L'CL)); the joint default is timed below
    return dpm_default(aggregation="sqrt_corr")


@pytest.fixture(scope="module")
def engine(market, table, model):
    return MarginEngine(market, table, model)


@pytest.fixture(scope="module")
def books(table):
    return {n: generate_accounts(n, table, seed=SEED) for n in SIZES}


@pytest.fixture(scope="module")
def reference(market, table, model):
    return scipy_reference.ScipyReference(market, table, model)


def _info(benchmark, n, unit, **extra):
    benchmark.extra_info["n"] = int(n)
    benchmark.extra_info["unit"] = unit
    benchmark.extra_info.update(extra)


# ----------------------------------------------------------------------------------- revaluation
@pytest.mark.parametrize("workers", [1, 2])
def test_engine_build(benchmark, market, table, model, workers):
    benchmark.group = "revaluation"
    e = benchmark(MarginEngine, market, table, model, workers=workers)
    S = e.pnl_matrix.shape[1]
    _info(benchmark, len(table), "instrument", impl="MarginEngine build (revalue + plan)", workers=workers,
          scenarios=S, pricings=len(table) * S)


def test_engine_build_cold(benchmark, market, table, model):
    """As above with the per-model scenario-set memo cleared: the first engine of a model."""
    benchmark.group = "revaluation"
    benchmark.pedantic(MarginEngine, args=(market, table, model), kwargs={"workers": 1},
                       setup=_engine._SCENARIO_CACHE.clear, rounds=50, warmup_rounds=2)
    _info(benchmark, len(table), "instrument", impl="MarginEngine build, first for this model", workers=1)


def test_engine_with_market(benchmark, engine, market, table):
    """A market update: a new engine on a new snapshot (here: the same data)."""
    benchmark.group = "revaluation"
    benchmark(engine.with_market, market, workers=1)
    _info(benchmark, len(table), "instrument", impl="engine.with_market (market update)", workers=1)


def test_revalue_kernel(benchmark, table, engine):
    """The one revaluation kernel (RevaluationPlan.revalue) on the engine's scenario set."""
    benchmark.group = "revaluation"
    plan, sset = engine.revaluation_plan, engine.scenarios
    benchmark(plan.revalue, sset, workers=1, padded=True, unavailable=0.0)
    S = len(sset)
    _info(benchmark, len(table), "instrument", impl="revaluation kernel alone", workers=1, scenarios=S,
          pricings=len(table) * S)


def test_numpy_revalue(benchmark, table, reference):
    benchmark.group = "revaluation"
    benchmark(reference.revalue)
    S = max(u.move.size for u in reference.inputs.unds)
    _info(benchmark, len(table), "instrument", impl="numpy + scipy.special.ndtr revaluation", workers=1,
          scenarios=S, pricings=len(table) * S)


# ----------------------------------------------------------------------------------- margin_many
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("n", SIZES)
def test_margin_many(benchmark, engine, books, n, workers):
    benchmark.group = f"margin-{n}"
    book = books[n]
    engine.margin_many(book, workers=workers)  # warm the pool and the caches
    res = benchmark(engine.margin_many, book, workers=workers)
    assert np.isfinite(res.initial_margin).all()
    _info(benchmark, n, "account", impl="dpm margin_many", workers=workers, positions=book.n_positions)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("n", SIZES)
def test_margin_many_joint(benchmark, market, table, books, n, workers):
    """The default joint (direction-aware) aggregation: its cost over sqrt(L'CL) on the same book."""
    benchmark.group = f"margin-{n}"
    engine = MarginEngine(market, table, dpm_default(), workers=workers)
    book = books[n]
    engine.margin_many(book, workers=workers)
    res = benchmark(engine.margin_many, book, workers=workers)
    assert np.isfinite(res.initial_margin).all()
    _info(benchmark, n, "account", impl="dpm margin_many, joint aggregation (default)", workers=workers,
          positions=book.n_positions)


@pytest.mark.parametrize("n", SIZES)
def test_scipy_sparse_build(benchmark, reference, books, n):
    benchmark.group = f"margin-{n}"
    book = books[n]
    benchmark.pedantic(reference.build, args=(book,), rounds=5 if n > 10_000 else 15, warmup_rounds=1)
    _info(benchmark, n, "account", impl="scipy: build csr_matrix per underlying", workers=1,
          positions=book.n_positions)


@pytest.mark.parametrize("n", SIZES)
def test_scipy_product(benchmark, reference, engine, books, n):
    benchmark.group = f"margin-{n}"
    book = books[n]
    sb = reference.build(book)
    pnl = benchmark.pedantic(reference.product, args=(sb,), rounds=7 if n > 10_000 else 20, warmup_rounds=1)
    # same work, same answer: the reference's margins equal the engine's
    ref = reference.finish(sb, pnl)
    res = engine.margin_many(book)
    np.testing.assert_allclose(ref["initial_margin"], res.initial_margin, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ref["charge"], res.charge, rtol=1e-9, atol=1e-9)
    rel = np.abs(ref["initial_margin"] - res.initial_margin) / np.maximum(np.abs(res.initial_margin), 1e-300)
    _info(benchmark, n, "account", impl="scipy: csr @ dense P&L", workers=1, positions=book.n_positions,
          max_rel_diff_vs_engine=float(rel.max()))


@pytest.mark.parametrize("n", SIZES)
def test_scipy_finish(benchmark, reference, books, n):
    benchmark.group = f"margin-{n}"
    book = books[n]
    sb = reference.build(book)
    pnl = reference.product(sb)
    benchmark.pedantic(reference.finish, args=(sb, pnl), rounds=3 if n > 10_000 else 10, warmup_rounds=1)
    _info(benchmark, n, "account", impl="scipy: worst loss + add-ons + combine", workers=1,
          positions=book.n_positions)


# ----------------------------------------------------------------------------------- what-if
@pytest.fixture(scope="module")
def state(engine, books):
    """A large account (a market maker's strip): what-if cost does not depend on its size."""
    book = books[SIZES[0]]
    a = int(np.argmax(np.diff(book.indptr)))
    return engine.prepare(book, a)


@pytest.fixture(scope="module")
def orders(engine):
    names = engine.instruments.name
    rng = np.random.default_rng(3)
    ids = np.sort(rng.choice(len(names), 10, replace=False)).astype(np.int64)
    qty = np.round(rng.normal(0.0, 5.0, 10), 1)
    return ids, qty, [str(names[i]) for i in ids]


def test_what_if_one_by_name(benchmark, state, orders):
    benchmark.group = "what-if"
    _, qty, names = orders
    order = {names[0]: float(qty[0])}
    benchmark(state.what_if, order)
    _info(benchmark, 1, "order", impl="AccountState.what_if({name: qty})", workers=1)


def test_what_if_one_by_id(benchmark, state, orders):
    benchmark.group = "what-if"
    ids, qty, _ = orders
    order = [(int(ids[0]), float(qty[0]))]
    benchmark(state.what_if, order)
    _info(benchmark, 1, "order", impl="AccountState.what_if([(id, qty)])", workers=1)


def test_what_if_ids_one(benchmark, state, orders):
    benchmark.group = "what-if"
    ids, qty, _ = orders
    i1, q1 = ids[:1].copy(), qty[:1].copy()
    benchmark(state.what_if_ids, i1, q1)
    _info(benchmark, 1, "order", impl="AccountState.what_if_ids (arrays)", workers=1)


def test_what_if_basket_by_name(benchmark, state, orders):
    benchmark.group = "what-if"
    ids, qty, names = orders
    basket = dict(zip(names, qty.tolist()))
    res = benchmark(state.what_if, basket)
    assert res.initial_margin == pytest.approx(state.what_if_ids(ids, qty), rel=0, abs=0)
    _info(benchmark, 10, "order", impl="AccountState.what_if(basket of 10 by name)", workers=1)


def test_what_if_ids_basket(benchmark, state, orders):
    benchmark.group = "what-if"
    ids, qty, _ = orders
    benchmark(state.what_if_ids, ids, qty)
    _info(benchmark, 10, "order", impl="AccountState.what_if_ids (basket of 10)", workers=1)


# ----------------------------------------------------------------------------------- book build
@pytest.fixture(scope="module")
def columns(books):
    """Columnar positions of the largest book: CSR order and shuffled."""
    book = books[SIZES[-1]]
    n = len(book)
    acc = np.repeat(np.arange(n, dtype=np.int64), np.diff(book.indptr))
    perm = np.random.default_rng(7).permutation(acc.size)
    return {
        "sorted": (acc, np.array(book.instrument_idx), np.array(book.quantity)),
        "shuffled": (acc[perm], np.array(book.instrument_idx)[perm], np.array(book.quantity)[perm]),
        "ids": np.array(book.account_id), "collateral": np.array(book.collateral),
        "currencies": book.currencies, "n": n, "book": book,
    }


@pytest.mark.parametrize("order", ["shuffled", "sorted"])
def test_book_from_arrays(benchmark, table, columns, order):
    benchmark.group = "book"
    acc, inst, qty = columns[order]
    book = benchmark.pedantic(
        AccountBook.from_arrays, args=(acc, inst, qty, table),
        kwargs={"account_ids": columns["ids"], "collateral": columns["collateral"],
                "currencies": columns["currencies"]},
        rounds=7, warmup_rounds=1)
    ref = columns["book"]
    np.testing.assert_array_equal(book.indptr, ref.indptr)
    np.testing.assert_array_equal(book.instrument_idx, ref.instrument_idx)
    _info(benchmark, columns["n"], "account", impl=f"AccountBook.from_arrays ({order})", workers=os.cpu_count(),
          positions=int(acc.size))


# ----------------------------------------------------------------------------------- machine
@pytest.fixture(scope="module")
def buffers():
    rng = np.random.default_rng(0)
    return [rng.bytes(8 << 20) for _ in range(2)]


@pytest.mark.parametrize("workers", [1, 2])
def test_machine_parallel_ceiling(benchmark, buffers, workers):
    benchmark.group = "machine"

    def run() -> None:
        _parallel.run_chunked(lambda s, e: [hashlib.sha256(b).digest() for b in buffers[s:e]], 2, workers,
                              min_chunk=1)

    benchmark.pedantic(run, rounds=15, warmup_rounds=1)
    _info(benchmark, 2, "buffer", impl="sha256 of 2 x 8 MB (parallel ceiling)", workers=workers)
