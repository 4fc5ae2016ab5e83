"""Tests of dpm.portfolio.accounts: CSR building against a pure-Python reference, constructors, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import accounts_ref
from reference.accounts_ref import build_csr_reference

from dpm.errors import InvalidInputError, InvalidTypeError, UnknownInstrumentError
from dpm.market.table import InstrumentTable
from dpm.portfolio.accounts import Account, AccountBook, UnknownAccountError

NAMES = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC-27DEC26",
    "BTC-27DEC26-60000-C",
    "BTC-27DEC26-60000-P",
    "ETH-27DEC26-3000-C",
    "BTC_USDC-PERPETUAL",
]


@pytest.fixture(scope="module")
def table():
    return InstrumentTable.from_names(NAMES)


def big_table(m):
    return InstrumentTable.from_names([f"BTC-27DEC26-{1000 * (k + 1)}-C" for k in range(m)])


def assert_matches_reference(book, acc, inst, qty, n):
    ip, ii, qq = build_csr_reference(acc, inst, qty, n)
    assert book.indptr.tolist() == ip
    assert book.instrument_idx.tolist() == ii
    # same summation order as the reference: bit-identical, not just close
    assert book.quantity.tolist() == qq
    assert book.indptr.dtype == np.int64 and book.instrument_idx.dtype == np.int64
    assert book.quantity.dtype == np.float64


def random_triples(rng, n, m, p, sorted_accounts=False):
    acc = rng.integers(0, n, p) if n else np.zeros(0, np.int64)
    if sorted_accounts:
        acc = np.sort(acc)
    inst = rng.integers(0, m, p)
    qty = np.round(rng.normal(size=p) * 10, 3)
    return acc, inst, qty


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sorted_accounts", [False, True])
def test_csr_matches_reference_random(seed, sorted_accounts):
    rng = np.random.default_rng(seed)
    m = [3, 50, 400][seed % 3]
    t = big_table(m)
    n = int(rng.integers(1, 300))
    p = int(rng.integers(0, 5000))
    acc, inst, qty = random_triples(rng, n, m, p, sorted_accounts)
    copies = (acc.copy(), inst.copy(), qty.copy())
    book = AccountBook.from_arrays(acc, inst, qty, t, n_accounts=n)
    assert_matches_reference(book, acc, inst, qty, n)
    # inputs untouched and still writable
    for a, b in zip((acc, inst, qty), copies):
        np.testing.assert_array_equal(a, b)
        assert a.flags.writeable


def test_long_rows_use_merge_sort_and_match_reference():
    rng = np.random.default_rng(7)
    t = big_table(300)
    n = 5
    acc = np.repeat(np.arange(n), [0, 1, 33, 700, 2500])
    inst = rng.integers(0, 300, len(acc))
    qty = rng.normal(size=len(acc))
    perm = rng.permutation(len(acc))
    acc, inst, qty = acc[perm], inst[perm], qty[perm]
    book = AccountBook.from_arrays(acc, inst, qty, t, n_accounts=n)
    assert_matches_reference(book, acc, inst, qty, n)


def test_sparse_rows_use_comparison_sorts_and_match_reference():
    # ids spread over a wide range: the bitmap would be larger than the row, so rows go through the
    # insertion sort (<= 32 positions) and the merge sort (longer rows)
    rng = np.random.default_rng(8)
    m = 20_000
    t = InstrumentTable.from_columns(
        [f"i{k}" for k in range(m)],
        np.full(m, 2),
        ["BTC"] * m,
        np.zeros(m),
        np.full(m, np.nan),
        np.full(m, np.iinfo(np.int64).max),
        np.ones(m, bool),
        np.ones(m),
        ["BTC"] * m,
    )
    sizes = [2, 5, 20, 32, 33, 60, 100, 257]
    acc = np.repeat(np.arange(len(sizes)), sizes)
    inst = rng.integers(0, m, len(acc))
    inst[::7] = inst[::7][::-1]  # a few duplicates at far-apart positions
    dup = rng.integers(0, len(acc), 40)
    inst[dup] = inst[(dup * 31) % len(acc)]
    qty = rng.normal(size=len(acc))
    perm = rng.permutation(len(acc))
    acc, inst, qty = acc[perm], inst[perm], qty[perm]
    book = AccountBook.from_arrays(acc, inst, qty, t, n_accounts=len(sizes))
    assert_matches_reference(book, acc, inst, qty, len(sizes))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_csr_matches_reference_hypothesis(data):
    n = data.draw(st.integers(0, 12))
    m = data.draw(st.integers(1, 8))
    p = data.draw(st.integers(0, 80)) if n else 0
    acc = data.draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=p, max_size=p))
    inst = data.draw(st.lists(st.integers(0, m - 1), min_size=p, max_size=p))
    qty = data.draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=p, max_size=p))
    t = big_table(m)
    book = AccountBook.from_arrays(
        np.array(acc, dtype=np.int64),
        np.array(inst, dtype=np.int64),
        np.array(qty, dtype=np.float64),
        t,
        n_accounts=n,
    )
    assert_matches_reference(book, acc, inst, qty, n)
    assert len(book) == n


def test_already_csr_fast_path_and_numpy_reference_agree():
    rng = np.random.default_rng(3)
    t = big_table(100)
    acc, inst, qty = random_triples(rng, 200, 100, 6000)
    book = AccountBook.from_arrays(acc, inst, qty, t, n_accounts=200)
    # feeding the CSR back in (strictly increasing) takes the copy-only path
    again = AccountBook.from_arrays(
        book.account_of_position(), book.instrument_idx, book.quantity, t, n_accounts=200
    )
    assert again.equals(book)
    ip, ii, qq = accounts_ref.build_csr_numpy(acc, inst, qty, 200)
    np.testing.assert_array_equal(ip, book.indptr)
    np.testing.assert_array_equal(ii, book.instrument_idx)
    np.testing.assert_array_equal(qq, book.quantity)


def test_result_independent_of_workers():
    rng = np.random.default_rng(11)
    t = big_table(500)
    acc, inst, qty = random_triples(rng, 40_000, 500, 200_000)
    b1 = AccountBook.from_arrays(acc, inst, qty, t, n_accounts=40_000, workers=1)
    b2 = AccountBook.from_arrays(acc, inst, qty, t, n_accounts=40_000, workers=2)
    assert b1.equals(b2)


def test_book_is_read_only(table):
    book = AccountBook.from_arrays([0, 1], [0, 3], [1.0, -2.0], table, collateral=np.ones((2, 4)))
    for arr in (book.account_id, book.indptr, book.instrument_idx, book.quantity, book.collateral):
        assert not arr.flags.writeable
    with pytest.raises(AttributeError):
        book.quantity = np.zeros(2)


def test_accounts_access_and_round_trips(table):
    coll = np.zeros((3, 4))
    coll[0, 0] = 1.5
    coll[2, 2] = 1000.0
    book = AccountBook.from_arrays(
        [2, 0, 2, 0, 2],
        [3, 0, 0, 0, 3],
        [1.0, 10.0, -5.0, 20.0, 2.0],
        table,
        account_ids=["alice", "bob", "carol"],
        collateral=coll,
    )
    assert len(book) == 3 and book.n_positions == 3
    a = book.account(0)
    assert a == Account("alice", [("BTC-PERPETUAL", 30.0)], {"BTC": 1.5})
    assert book["bob"] == Account("bob", [], {})
    carol = book["carol"]
    assert carol.positions == [("BTC-PERPETUAL", -5.0), ("BTC-27DEC26-60000-C", 3.0)]
    assert carol.collateral == {"USDC": 1000.0} and carol.quantity("BTC-27DEC26-60000-C") == 3.0
    assert book[-1] == carol
    assert list(book.positions_per_account) == [1, 0, 2]
    with pytest.raises(UnknownAccountError, match="dave"):
        book["dave"]
    with pytest.raises(UnknownAccountError):
        book.account(3)
    # from_accounts and from_positions rebuild the same book
    assert AccountBook.from_accounts(list(book), table, currencies=book.currencies).equals(book)
    cols = book.to_columns()
    again = AccountBook.from_positions(
        cols,
        table,
        collateral=book.collateral_columns(),
        account_ids=book.account_id,
        currencies=book.currencies,
    )
    assert again.equals(book)
    records = [dict(zip(cols, row)) for row in zip(*cols.values())]
    crec = book.collateral_columns(include_zero=False)
    c_records = [dict(zip(crec, row)) for row in zip(*crec.values())]
    again = AccountBook.from_positions(records, table, collateral=c_records)
    # order of first appearance: positions first (alice, carol), then collateral-only accounts
    assert list(again.account_id) == ["alice", "carol"]
    assert again["carol"] == carol


def test_from_positions_dataframe_and_ids(table):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "account_id": ["x", "y", "x", "x"],
            "instrument": ["ETH-PERPETUAL", "BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26"],
            "quantity": [1.0, 2.0, 3.0, -1.0],
        }
    )
    coll = pd.DataFrame(
        {"account_id": ["z", "x", "x"], "currency": ["SOL", "BTC", "BTC"], "amount": [5.0, 1.0, 2.0]}
    )
    book = AccountBook.from_positions(df, table, collateral=coll)
    assert list(book.account_id) == ["x", "y", "z"]
    assert book.currencies == ("BTC", "ETH", "USDC", "USDT", "SOL")
    assert book["x"] == Account("x", [("ETH-PERPETUAL", 4.0), ("BTC-27DEC26", -1.0)], {"BTC": 3.0})
    assert book["z"].collateral == {"SOL": 5.0} and book["z"].positions == []
    with pytest.raises(InvalidInputError, match=r"unknown currency 'SOL'.*'z'"):
        AccountBook.from_positions(df, table, collateral=coll, currencies=("BTC", "USDC"))
    with pytest.raises(InvalidInputError, match="'y'.*not in account_ids"):
        AccountBook.from_positions(df, table, account_ids=["x"])
    with pytest.raises(UnknownInstrumentError, match="BTC-28DEC26"):
        AccountBook.from_positions(
            {"account_id": ["a"], "instrument": ["BTC-28DEC26"], "quantity": [1.0]}, table
        )
    with pytest.raises(InvalidInputError, match="quantity"):
        AccountBook.from_positions({"account_id": ["a"], "instrument": ["BTC-27DEC26"]}, table)


def test_subset(table):
    rng = np.random.default_rng(5)
    acc, inst, qty = random_triples(rng, 30, len(table), 200)
    coll = rng.uniform(0, 10, (30, 4))
    book = AccountBook.from_arrays(acc, inst, qty, table, collateral=coll)
    sel = [7, 2, 29, 0]
    sub = book.subset(sel)
    assert list(sub.account_id) == [book.account_id[i] for i in sel]
    for k, i in enumerate(sel):
        assert sub.account(k) == book.account(i)
    mask = np.zeros(30, bool)
    mask[[3, 4]] = True
    assert [a.id for a in book.subset(mask)] == ["3", "4"]
    assert len(book.subset([])) == 0
    with pytest.raises(InvalidInputError, match="twice"):
        book.subset([1, 1])


def test_empty_books_and_accounts(table):
    empty = AccountBook.empty(table)
    assert len(empty) == 0 and empty.n_positions == 0 and empty.indptr.tolist() == [0]
    assert empty.collateral.shape == (0, 4)
    no_pos = AccountBook.from_arrays([], [], [], table, account_ids=["a", "b"])
    assert no_pos.indptr.tolist() == [0, 0, 0] and no_pos["b"].positions == []
    assert AccountBook.from_accounts([], table).equals(empty)
    assert len(AccountBook.from_arrays([], [], [], table)) == 0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"quantity": [1.0, np.nan, 3.0]}, InvalidInputError, r"quantity.*'b'.*'ETH-PERPETUAL'.*nan"),
        ({"quantity": [1.0, 2.0, np.inf]}, InvalidInputError, r"quantity.*'a'.*'BTC-27DEC26'.*inf"),
        ({"instrument_idx": [0, 7, 2]}, InvalidInputError, r"instrument_idx.*position 1.*'b'.*7.*\[0, 7\)"),
        ({"instrument_idx": [0, 1, -1]}, InvalidInputError, r"instrument_idx.*position 2"),
        ({"account_index": [0, 2, 0]}, InvalidInputError, r"account_index.*position 1.*2.*\[0, 2\)"),
        ({"account_index": [0, -1, 0]}, InvalidInputError, r"account_index.*position 1"),
        ({"account_index": [0, 1.5, 0]}, InvalidInputError, r"account_index.*integers"),
        ({"quantity": [1.0, 2.0]}, InvalidInputError, r"same length"),
        ({"quantity": ["1", "2", "3"]}, InvalidTypeError, r"quantity"),
        ({"quantity": [True, False, True]}, InvalidTypeError, r"quantity"),
        (
            {"collateral": np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])},
            InvalidInputError,
            r"collateral.*'b'.*'BTC'.*-1",
        ),
        (
            {"collateral": np.array([[np.nan, 0, 0, 0], [1.0, 0, 0, 0]])},
            InvalidInputError,
            r"collateral.*'a'.*'BTC'.*nan",
        ),
        ({"collateral": np.ones((2, 3))}, InvalidInputError, r"collateral.*shape"),
        ({"collateral": {"DOGE": [1.0, 2.0]}}, InvalidInputError, r"unknown currency 'DOGE'"),
        ({"account_ids": ["a", "a"]}, InvalidInputError, r"duplicate id 'a'"),
        ({"account_ids": ["a", "b", "c"], "collateral": np.ones((2, 4))}, InvalidInputError, r"collateral"),
        ({"currencies": ("BTC", "btc")}, InvalidInputError, r"currencies"),
        ({"currencies": ("BTC", "BTC")}, InvalidInputError, r"duplicate"),
    ],
)
def test_from_arrays_bad_inputs(table, kwargs, exc, match):
    args = {
        "account_index": [0, 1, 0],
        "instrument_idx": [2, 1, 2],
        "quantity": [1.0, 2.0, 3.0],
        "account_ids": ["a", "b"],
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        AccountBook.from_arrays(
            args.pop("account_index"), args.pop("instrument_idx"), args.pop("quantity"), table, **args
        )


def test_from_arrays_bad_table():
    with pytest.raises(InvalidTypeError, match="table"):
        AccountBook.from_arrays([0], [0], [1.0], table=None)


def test_collateral_dict_and_caller_array_untouched(table):
    coll = np.array([[1.0, 0, 0, 0], [0, 2.0, 0, 0]])
    book = AccountBook.from_arrays([0], [0], [1.0], table, collateral=coll)
    assert coll.flags.writeable
    coll[0, 0] = 99.0
    assert book.collateral[0, 0] == 1.0
    book2 = AccountBook.from_arrays(
        [0],
        [0],
        [1.0],
        table,
        account_ids=["a", "b"],
        collateral={"ETH": [0.0, 2.0], "BTC": np.array([1.0, 0.0])},
    )
    assert book2["b"].collateral == {"ETH": 2.0} and book2["a"].collateral == {"BTC": 1.0}


def test_from_accounts_errors(table):
    with pytest.raises(UnknownInstrumentError, match=r"'nope'.*'b'"):
        AccountBook.from_accounts(
            [Account("a", [("BTC-PERPETUAL", 1.0)]), Account("b", [("nope", 1.0)])], table
        )
    with pytest.raises(InvalidInputError, match=r"unknown currency 'XYZ'.*'a'"):
        AccountBook.from_accounts([Account("a", [], {"XYZ": 1.0})], table, currencies=("BTC",))
    with pytest.raises(InvalidTypeError):
        AccountBook.from_accounts([("a", [])], table)
    with pytest.raises(InvalidInputError, match="duplicate"):
        AccountBook.from_accounts([Account("a"), Account("a")], table)


def test_direct_constructor_checks_csr(table):
    AccountBook(["a"], [0, 2], [0, 3], [1.0, 2.0], np.zeros((1, 1)), ("BTC",), table)
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        AccountBook(["a"], [0, 2], [3, 0], [1.0, 2.0], np.zeros((1, 1)), ("BTC",), table)
    with pytest.raises(InvalidInputError, match="indptr"):
        AccountBook(["a"], [0, 3], [0, 3], [1.0, 2.0], np.zeros((1, 1)), ("BTC",), table)


@pytest.mark.parametrize("offset", [0, 1, 1000])
def test_direct_constructor_refuses_instrument_ids_outside_the_table(table, offset):
    # the CSR constructor must check ids itself, not only from_arrays: the kernels index the
    # instrument x scenario matrix with them without bounds checks
    m = len(table)
    bad = m + offset  # offset 0: the id equal to the table length
    with pytest.raises(InvalidInputError, match=rf"instrument_idx: position 1 of account 'a' has id {bad}, "
                                                rf"not in \[0, {m}\)"):
        AccountBook(["a"], [0, 2], [0, bad], [1.0, 2.0], np.zeros((1, 1)), ("BTC",), table)
    with pytest.raises(InvalidInputError, match=r"instrument_idx: position 0 of account 'b' has id -1"):
        AccountBook(["a", "b"], [0, 0, 1], [-1], [1.0], np.zeros((2, 1)), ("BTC",), table)
    last = AccountBook(["a"], [0, 1], [m - 1], [1.0], np.zeros((1, 1)), ("BTC",), table)
    assert last.instrument_idx.tolist() == [m - 1]


def test_direct_constructor_refuses_non_finite_quantity_and_bad_collateral(table):
    with pytest.raises(InvalidInputError, match=r"quantity: must be finite; account 'a'"):
        AccountBook(["a"], [0, 1], [0], [np.nan], np.zeros((1, 1)), ("BTC",), table)
    with pytest.raises(InvalidInputError, match=r"collateral: must be finite and >= 0; account 'a'"):
        AccountBook(["a"], [0, 1], [0], [1.0], -np.ones((1, 1)), ("BTC",), table)


# ------------------------------------------------------------------ found by the fuzz suite (tests/fuzz)
def test_ids_are_exact_integers_or_refused(table):
    m = len(table)
    with pytest.raises(InvalidInputError, match=r"instrument_idx: position 0 is 18446744073709551615, outside"):
        AccountBook.from_arrays([0], np.array([2**64 - 1], dtype=np.uint64), [1.0], table)
    with pytest.raises(InvalidInputError, match=r"account_index: position 0 is 1e\+300, outside the int64 range"):
        AccountBook.from_arrays([1e300], [0], [1.0], table)
    with pytest.raises(InvalidTypeError, match=r"instrument_idx: expected integers, position 0 is True"):
        AccountBook.from_arrays([0], np.array([True], dtype=object), [1.0], table)
    with pytest.raises(InvalidTypeError, match=r"instrument_idx: expected integers, position 0 is '1'"):
        AccountBook.from_arrays([0], np.array(["1"], dtype=object), [1.0], table)
    # a Python int above 2**53 is not rounded through float64 on its way to an id
    with pytest.raises(InvalidInputError, match=r"instrument id 9007199254740993, not in \[0, "):
        AccountBook.from_arrays([0], np.array([2**53 + 1], dtype=object), [1.0], table)
    assert AccountBook.from_arrays([0], np.array([m - 1], dtype=object), [1.0], table).instrument_idx[0] == m - 1
    with pytest.raises(InvalidInputError, match=r"quantity: position 0 is 1000000000.*beyond the floating-point"):
        AccountBook.from_arrays([0], [0], np.array([10**400], dtype=object), table)
    with pytest.raises(InvalidInputError, match=r"quantity: cannot read as a 1-d array"):
        AccountBook.from_arrays([0, 0], [0, 1], [[1.0], [1.0, 2.0]], table)


def test_n_accounts_and_collateral_columns_are_checked(table):
    with pytest.raises(InvalidInputError, match=r"n_accounts: must be >= 0, got -1"):
        AccountBook.from_arrays([], [], [], table, n_accounts=-1)
    with pytest.raises(InvalidTypeError, match=r"n_accounts: expected an int, got 2.5"):
        AccountBook.from_arrays([], [], [], table, n_accounts=2.5)
    with pytest.raises(InvalidInputError, match=r"collateral\['BTC'\]: expected 1 amounts \(one per account\), got "
                                                r"shape \(0,\)"):
        AccountBook.from_arrays([0], [0], [1.0], table, collateral={"BTC": np.zeros(0)})


def test_direct_constructor_names_bad_types_instead_of_numpy_errors(table):
    with pytest.raises(InvalidTypeError, match=r"indptr: expected integers, position 1 is ''"):
        AccountBook(["a"], np.array([0, ""], dtype=object), [0], [1.0], np.zeros((1, 1)), ("BTC",), table)
    with pytest.raises(InvalidTypeError, match=r"quantity: expected real numbers, position 0 is None"):
        AccountBook(["a"], [0, 1], [0], np.array([None], dtype=object), np.zeros((1, 1)), ("BTC",), table)
    with pytest.raises(InvalidInputError, match=r"collateral: expected 1 x 4 amounts \(accounts x currencies\), got "
                                                r"shape \(1,\)"):
        AccountBook(["a"], [0, 1], [0], [1.0], np.zeros(1), ("BTC", "ETH", "USDC", "USDT"), table)


def test_duplicates_that_sum_beyond_the_float_range_are_refused(table):
    # found by the fuzz suite: two finite quantities of one position summed to inf
    with pytest.raises(InvalidInputError, match=r"positions of account '0' in instrument '.*' sum to inf"):
        AccountBook.from_arrays([0, 0], [1, 1], [1e308, 1e308], table)
    with pytest.raises(InvalidInputError, match=r"sum to -inf"):
        AccountBook.from_positions({"account_id": ["a", "a"], "instrument": ["BTC-PERPETUAL"] * 2,
                                    "quantity": [-1e308, -1e308]}, table)
