"""Fuzz book construction (from_arrays, the CSR constructor, from_positions), market snapshots
(ForwardCurve, UnderlyingMarket, MarketSnapshot.instrument_inputs) and instrument names."""
from __future__ import annotations

import numpy as np
from fuzz_harness import attempt, fuzz, oracle
from fuzz_strategies import CURRENCIES, INSTRUMENTS, NASTY_TEXT, arrays_of, json_scalars, nasty_floats
from hypothesis import given
from hypothesis import strategies as st

from dpm.market.names import format_name, parse_name
from dpm.market.sample import default_market
from dpm.market.snapshot import ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import AccountBook

TABLE = InstrumentTable.from_names(INSTRUMENTS)
M = len(TABLE)
BOOK_FIELDS = ("account_index", "instrument_idx", "quantity", "account_id", "account_ids", "collateral",
               "currencies", "n_accounts", "arrays", "indptr", "positions", "instrument", "amount", "table")

#: Integers a book meets: valid small ones, boundaries, negatives and sizes no machine holds.
book_ints = st.one_of(st.integers(-2, M + 1), st.sampled_from([M, -1, 10**12, -(10**12), 2**63 - 1, -(2**63)]))
index_arrays = st.one_of(
    st.lists(book_ints, max_size=10).map(lambda v: np.array(v, dtype=np.int64)),
    st.lists(st.one_of(st.integers(0, M - 1).map(float), nasty_floats), max_size=10).map(
        lambda v: np.array(v, dtype=np.float64)),
    arrays_of(json_scalars, max_size=6),
)
quantity_arrays = st.one_of(
    st.lists(st.floats(-1e6, 1e6), max_size=10).map(lambda v: np.array(v, dtype=np.float64)),
    st.lists(st.sampled_from([1e308, -1e308, 1.0, 5e-324]), max_size=6).map(lambda v: np.array(v)),
    arrays_of(json_scalars, max_size=8),
)
currency_sets = st.one_of(st.just(("BTC", "ETH", "USDC", "USDT")), st.lists(st.sampled_from(CURRENCIES + ["btc", "",
                                                                                                      "X Y"]),
                                                                           max_size=4).map(tuple))


def _reference_csr(acc, inst, qty, n):
    """Positions per account, duplicates summed left to right (the documented rule)."""
    rows = [dict() for _ in range(n)]
    for a, i, q in zip(acc.tolist(), inst.tolist(), qty.tolist()):
        rows[a][i] = rows[a].get(i, 0.0) + q if i in rows[a] else q
    return [sorted(r.items()) for r in rows]


def _check_invariants(target: str, book: AccountBook) -> None:
    ip = book.indptr
    oracle(target, ip[0] == 0 and (np.diff(ip) >= 0).all() and ip[-1] == len(book.instrument_idx),
           "indptr is not a valid CSR pointer")
    oracle(target, ((book.instrument_idx >= 0) & (book.instrument_idx < len(book.table))).all(),
           "an instrument id outside the table")
    oracle(target, np.isfinite(book.quantity).all(), "a non-finite quantity")
    oracle(target, (np.isfinite(book.collateral) & (book.collateral >= 0)).all(), "bad collateral")
    rows = np.repeat(np.arange(len(book)), np.diff(ip))
    same = rows[1:] == rows[:-1]
    oracle(target, (book.instrument_idx[1:][same] > book.instrument_idx[:-1][same]).all(),
           "instrument ids not strictly increasing inside an account")
    oracle(target, len(set(book.account_id.tolist())) == len(book), "repeated account ids")


@fuzz("book.from_arrays", ci=200, long=15_000)
@given(acc=index_arrays, inst=index_arrays, qty=quantity_arrays,
       ids=st.none() | st.lists(st.one_of(st.sampled_from(NASTY_TEXT), json_scalars), max_size=6),
       collateral=st.none() | st.lists(st.lists(nasty_floats, min_size=4, max_size=4), max_size=6).map(np.array)
       | st.dictionaries(st.sampled_from(CURRENCIES + ["DOGE"]), st.lists(nasty_floats, max_size=4).map(np.array),
                         max_size=2),
       n_accounts=st.none() | book_ints, currencies=currency_sets)
def test_from_arrays(acc, inst, qty, ids, collateral, n_accounts, currencies) -> None:
    inputs = [x for x in (acc, inst, qty) if isinstance(x, np.ndarray)]
    if isinstance(collateral, np.ndarray):
        inputs.append(collateral)
    book = attempt("book.from_arrays",
                   lambda: AccountBook.from_arrays(acc, inst, qty, TABLE, account_ids=ids, collateral=collateral,
                                                   currencies=currencies, n_accounts=n_accounts),
                   fields=BOOK_FIELDS, inputs=inputs)
    if book is None:
        return
    _check_invariants("book.from_arrays", book)
    a, i, q = (np.asarray(acc).astype(np.int64), np.asarray(inst).astype(np.int64),
               np.asarray(qty).astype(np.float64))
    ref = _reference_csr(a, i, q, len(book))
    got = [list(zip(book.instrument_idx[s:e].tolist(), book.quantity[s:e].tolist()))
           for s, e in zip(book.indptr[:-1].tolist(), book.indptr[1:].tolist())]
    oracle("book.from_arrays", got == ref, f"CSR differs from the reference: {got} vs {ref}")


@st.composite
def csr_arrays(draw):
    """CSR arrays of a valid book, then sometimes one of them perturbed (so both paths are reached)."""
    n = draw(st.integers(0, 4))
    counts = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    inst = np.concatenate([np.sort(draw(st.lists(st.integers(0, M - 1), min_size=c, max_size=c, unique=True)))
                           for c in counts] + [np.zeros(0)]).astype(np.int64)
    qty = np.array(draw(st.lists(st.floats(-1e6, 1e6), min_size=len(inst), max_size=len(inst))), dtype=np.float64)
    coll = np.array(draw(st.lists(st.floats(0, 1e6), min_size=4 * n, max_size=4 * n)), dtype=np.float64)
    ids = [f"a{i}" for i in range(n)]
    which = draw(st.sampled_from(["none", "none", "indptr", "inst", "qty", "coll", "ids"]))
    if which == "indptr" and n:
        indptr[draw(st.integers(0, n))] += draw(st.sampled_from([-1, 1, M]))
    elif which == "inst" and len(inst):
        inst[draw(st.integers(0, len(inst) - 1))] = draw(book_ints)
    elif which == "qty" and len(qty):
        qty[draw(st.integers(0, len(qty) - 1))] = draw(nasty_floats)
    elif which == "coll" and len(coll):
        coll[draw(st.integers(0, len(coll) - 1))] = draw(nasty_floats)
    elif which == "ids" and n:
        ids[draw(st.integers(0, n - 1))] = draw(st.one_of(st.sampled_from(["a0", ""]), json_scalars))
    return ids, indptr, inst, qty, coll


@fuzz("book.csr", ci=200, long=15_000)
@given(arrays=st.one_of(csr_arrays(), st.tuples(
    st.lists(st.one_of(st.sampled_from(["a", "b", "c", ""]), json_scalars), max_size=4),
    st.lists(book_ints, max_size=6).map(lambda v: np.array(v, dtype=np.int64)) | arrays_of(json_scalars, 6),
    index_arrays, quantity_arrays, st.lists(nasty_floats, max_size=8).map(np.array))),
    currencies=st.one_of(st.just(("BTC", "ETH", "USDC", "USDT")), currency_sets))
def test_csr_constructor(arrays, currencies) -> None:
    ids, indptr, inst, qty, collateral = arrays
    inputs = [x for x in (indptr, inst, qty, collateral) if isinstance(x, np.ndarray)]
    book = attempt("book.csr", lambda: AccountBook(ids, indptr, inst, qty, collateral, currencies, TABLE),
                   fields=BOOK_FIELDS, inputs=inputs)
    if book is not None:
        _check_invariants("book.csr", book)


@fuzz("book.from_positions", ci=200, long=10_000)
@given(records=st.lists(st.fixed_dictionaries({
    "account_id": st.one_of(st.sampled_from(["a", "b", "=x", ""]), json_scalars),
    "instrument": st.one_of(st.sampled_from(INSTRUMENTS + ["BTC-NOPE"]), json_scalars),
    "quantity": st.one_of(st.floats(-1e6, 1e6), json_scalars)}), max_size=6),
    collateral=st.none() | st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                           st.dictionaries(st.sampled_from(CURRENCIES + ["usd", "DOGE"]), json_scalars,
                                                           max_size=2), max_size=3),
    as_columns=st.booleans())
def test_from_positions(records, collateral, as_columns) -> None:
    positions = ({k: [r[k] for r in records] for k in ("account_id", "instrument", "quantity")} if as_columns
                 else records)
    book = attempt("book.from_positions", lambda: AccountBook.from_positions(positions, TABLE, collateral=collateral),
                   fields=BOOK_FIELDS, inputs=[positions, collateral])
    if book is not None:
        _check_invariants("book.from_positions", book)


# ----------------------------------------------------------------------------------------------------
# market snapshots
# ----------------------------------------------------------------------------------------------------
_MARKET = default_market()
_SURFACE = _MARKET["BTC"].vol_surface
MARKET_FIELDS = ("index_price", "times", "basis", "prices", "forward", "perpetual_price", "funding_rate",
                 "timestamp_ms", "underlyings", "T", "instrument", "from_futures", "vol", "forward_curve",
                 "expired", "expiry")
market_numbers = st.one_of(nasty_floats, st.floats(0.01, 1e6), st.integers(-5, 10**6),
                           st.sampled_from([np.float64(np.nan), np.int64(3), True, "1", None]))
number_lists = st.lists(market_numbers, max_size=4)


@fuzz("market.forward_curve", ci=200, long=10_000)
@given(index=market_numbers, times=number_lists, values=number_lists, use_futures=st.booleans(), T=number_lists)
def test_forward_curve(index, times, values, use_futures, T) -> None:
    def build():
        if use_futures:
            return ForwardCurve.from_futures(index, times, values)
        return ForwardCurve(index, times, values)

    curve = attempt("market.forward_curve", build, fields=MARKET_FIELDS, inputs=[times, values])
    if curve is None:
        return
    F = attempt("market.forward_curve", lambda: curve.forward(T), fields=MARKET_FIELDS, inputs=[T])
    if F is not None:
        oracle("market.forward_curve", (np.isfinite(F) & (F > 0)).all(), f"forward {F!r} is not finite and > 0")


sane_prices = st.one_of(st.floats(1.0, 1e6), market_numbers)


@fuzz("market.snapshot", ci=150, long=8_000)
@given(index=sane_prices, basis=st.one_of(st.floats(-2, 2), nasty_floats), perp=st.none() | sane_prices,
       funding=st.one_of(st.floats(-0.01, 0.01), market_numbers),
       timestamp=st.one_of(st.sampled_from([_MARKET.timestamp_ms, 1_700_000_000_000]), st.integers(-10, 2**62),
                           st.sampled_from([1.5, "0", None])),
       with_surface=st.booleans(), underlying=st.sampled_from(["BTC", "ETH", "", "XRP"]))
def test_snapshot_instrument_inputs(index, basis, perp, funding, timestamp, with_surface, underlying) -> None:
    def build():
        curve = ForwardCurve.from_rate(index, basis)
        um = UnderlyingMarket(index, curve, _SURFACE if with_surface else None, perp, funding)
        snap = MarketSnapshot(timestamp, {underlying: um, **{u: _MARKET[u] for u in ("BTC", "ETH") if u != underlying}})
        return snap.instrument_inputs(TABLE)

    inp = attempt("market.snapshot", build, fields=MARKET_FIELDS + ("rate",))
    if inp is None:
        return
    oracle("market.snapshot", (np.isfinite(inp.forward) & (inp.forward > 0)).all(), "a forward not finite and > 0")
    oracle("market.snapshot", (np.isfinite(inp.time) & (inp.time >= 0)).all(), "a bad time to expiry")
    opt = TABLE.kind == 3
    oracle("market.snapshot", (np.isfinite(inp.vol[opt]) & (inp.vol[opt] > 0)).all(), "an option vol not finite > 0")


# ----------------------------------------------------------------------------------------------------
# instrument names
# ----------------------------------------------------------------------------------------------------
@st.composite
def names(draw) -> str:
    base = draw(st.sampled_from(INSTRUMENTS + ["XRP_USDC-27DEC26-0d625-C", "BTC_USDC", "BTC-SPOT"]))
    how = draw(st.sampled_from(["keep", "text", "edit", "edit"]))
    if how == "keep":
        return base
    if how == "text":
        return draw(st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=30)))
    chars = list(base)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        c = draw(st.sampled_from(list("0123456789-_dCPABEFMJNOSU.e ") + ["\x00", "é", "٣"]))
        if op == "insert":
            chars.insert(i, c)
        elif chars:
            j = min(i, len(chars) - 1)
            if op == "delete":
                del chars[j]
            else:
                chars[j] = c
    return "".join(chars)


@fuzz("names.parse", ci=300, long=20_000)
@given(name=st.one_of(names(), json_scalars), size=st.none() | market_numbers)
def test_parse_name(name, size) -> None:
    spec = attempt("names.parse", lambda: parse_name(name, contract_size=size), fields=("name", "contract_size"))
    if spec is None:
        return
    again = attempt("names.parse", lambda: parse_name(format_name(spec), contract_size=size),
                    fields=("name", "contract_size"))
    oracle("names.parse", again == spec, f"{name!r} -> {format_name(spec)!r} parses differently")
    oracle("names.parse", np.isfinite(spec.contract_size) and spec.contract_size > 0, "a bad contract size")


@fuzz("names.table", ci=150, long=8_000)
@given(batch=st.lists(st.one_of(names(), json_scalars), max_size=6))
def test_table_from_names(batch) -> None:
    table = attempt("names.table", lambda: InstrumentTable.from_names(batch), fields=("name", "row", "names"),
                    inputs=[batch])
    if table is not None:
        oracle("names.table", table.name.tolist() == batch, "the table reordered or changed the names")
        oracle("names.table", len(set(batch)) == len(batch), "repeated names accepted")
