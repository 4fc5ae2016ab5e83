"""Accounts: the readable :class:`Account` and the columnar :class:`AccountBook` (CSR).

An :class:`AccountBook` holds ``N`` accounts over an :class:`~dpm.market.InstrumentTable` as
compressed sparse rows (see ``docs/architecture.md``):

* ``account_id`` — object array of ``N`` unique str ids;
* ``indptr`` — int64, ``N + 1``; the positions of account ``i`` are ``indptr[i]:indptr[i + 1]``;
* ``instrument_idx`` — int64, ``P``; instrument ids, strictly increasing inside each account;
* ``quantity`` — float64, ``P``; signed contracts (long > 0), duplicates summed in input order
  (a net quantity of 0 is kept as a position);
* ``collateral`` — float64, ``N × C``, amounts >= 0 in the currencies of ``currencies`` (tuple of C str).

All arrays are read-only. Building from columnar arrays (:meth:`AccountBook.from_arrays`) runs a
counting sort by account and a per-account stable sort/merge in a ``nogil`` Cython kernel
(``dpm._core._book``): no Python loop over positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpm._core import _book as _kernel
from dpm._util.parallel import run_chunked
from dpm._util.validation import check_memory
from dpm.errors import InvalidInputError, InvalidTypeError, UnknownAccountError
from dpm.market.table import InstrumentTable

__all__ = ["DEFAULT_CURRENCIES", "Account", "AccountBook", "UnknownAccountError"]

#: Memory of a book per account (indptr, id string, collateral row, sort scratch) and per position
#: (instrument id, quantity and the sort's copies), for the size check before building one.
_BYTES_PER_ACCOUNT = 160
_BYTES_PER_POSITION = 48

#: Collateral currencies of a book unless ``currencies=`` says otherwise.
DEFAULT_CURRENCIES: tuple[str, ...] = ("BTC", "ETH", "USDC", "USDT")



@dataclass(frozen=True)
class Account:
    """One account in readable form.

    Parameters
    ----------
    id : str
        Account id.
    positions : list of (str, float)
        ``(instrument name, signed quantity in contracts)``.
    collateral : dict of str to float
        Amount per currency (>= 0).
    """

    id: str
    positions: list[tuple[str, float]] = field(default_factory=list)
    collateral: dict[str, float] = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        return len(self.positions)

    def quantity(self, instrument: str) -> float:
        """Net quantity of ``instrument`` (0 when the account has no position in it)."""
        return float(sum(q for n, q in self.positions if n == instrument))


def _v(x: Any) -> Any:
    """Plain Python value of a numpy scalar (readable in messages: 7, not np.int64(7))."""
    return x.item() if isinstance(x, np.generic) else x


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _as_id_array(ids: Any, n: int | None = None) -> np.ndarray:
    """Object array of unique non-empty str ids (a new array)."""
    vals = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)  # tolist gives Python str
    if n is not None and len(vals) != n:
        raise InvalidInputError(f"account_ids: expected {n} ids, got {len(vals)}")
    # fast path first (all plain str, checked by type in C, none empty); the slow loop only runs to
    # name the bad one
    unique = set(vals) if set(map(type, vals)) <= {str} else None
    if unique is None or "" in unique:
        vals = [str(v) if isinstance(v, np.str_) else v for v in vals]
        for i, v in enumerate(vals):
            if not isinstance(v, str) or not v:
                raise InvalidInputError(f"account_id: expected non-empty str ids, index {i} is {v!r}")
        unique = set(vals)
    if len(unique) != len(vals):
        seen: dict[str, int] = {}
        for i, v in enumerate(vals):
            if v in seen:
                raise InvalidInputError(f"account_id: duplicate id {v!r} at indices {seen[v]} and {i}")
            seen[v] = i
    arr = np.empty(len(vals), dtype=object)
    arr[:] = vals
    return arr


def _default_ids(n: int) -> np.ndarray:
    """``"0" ... "n-1"`` as an object array."""
    arr = np.empty(n, dtype=object)
    arr[:] = list(map(str, range(n)))
    return arr


def _check_currencies(currencies: Any) -> tuple[str, ...]:
    if isinstance(currencies, str):
        currencies = (currencies,)
    cur = tuple(currencies)
    for c in cur:
        if not isinstance(c, str) or not c.isalnum() or c.upper() != c:
            raise InvalidInputError(f"currencies: expected upper-case codes like 'BTC', got {c!r}")
    if len(set(cur)) != len(cur):
        raise InvalidInputError(f"currencies: duplicate codes in {cur!r}")
    return cur


def _factorize(
    values: Sequence[Any], index: dict[Any, int] | None = None
) -> tuple[np.ndarray, dict[Any, int]]:
    """Codes of ``values`` in order of first appearance (dict-based: fast on str objects)."""
    d: dict[Any, int] = {} if index is None else index
    codes = np.fromiter((d.setdefault(v, len(d)) for v in values), dtype=np.int64, count=len(values))
    return codes, d


def _columns_of(obj: Any, required: Sequence[str], what: str) -> dict[str, Any]:
    """Columns of a DataFrame, a mapping of columns or a list of record dicts."""
    if hasattr(obj, "columns") and hasattr(obj, "to_numpy"):  # pandas DataFrame
        missing = [c for c in required if c not in obj.columns]
        if missing:
            raise InvalidInputError(f"{what}: missing column {missing[0]!r}")
        return {c: obj[c].to_numpy() for c in obj.columns}
    if isinstance(obj, Mapping):
        missing = [c for c in required if c not in obj]
        if missing:
            raise InvalidInputError(f"{what}: missing column {missing[0]!r}")
        return dict(obj)
    records = list(obj)
    cols: dict[str, list[Any]] = {c: [] for c in required}
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise InvalidTypeError(f"{what}: row {i} is {type(r).__name__}, expected a dict")
        for c in required:
            if c not in r:
                raise InvalidInputError(f"{what}: row {i} has no {c!r}")
            cols[c].append(r[c])
    return cols


class AccountBook:
    """``N`` accounts as CSR arrays over an :class:`InstrumentTable` (immutable; see module docs).

    Build with :meth:`from_arrays` (fast, columnar), :meth:`from_positions` (long-format records or a
    DataFrame with ``account_id, instrument, quantity``) or :meth:`from_accounts`.
    """

    __slots__ = (
        "_id_index",
        "account_id",
        "collateral",
        "currencies",
        "indptr",
        "instrument_idx",
        "quantity",
        "table",
    )

    def __init__(
        self,
        account_id: np.ndarray,
        indptr: np.ndarray,
        instrument_idx: np.ndarray,
        quantity: np.ndarray,
        collateral: np.ndarray,
        currencies: tuple[str, ...],
        table: InstrumentTable,
        *,
        _trusted: bool = False,
    ) -> None:
        """Wrap CSR arrays. Without ``_trusted`` the CSR invariants are checked (and arrays copied)."""
        if not isinstance(table, InstrumentTable):
            raise InvalidTypeError(f"table: expected an InstrumentTable, got {type(table).__name__}")
        currencies = _check_currencies(currencies)
        if not _trusted:
            account_id = _as_id_array(account_id)
            n = len(account_id)
            # copies (the book's arrays become read-only; the caller's stay as they are)
            indptr = _as_index(indptr, "indptr").copy()
            instrument_idx = _as_index(instrument_idx, "instrument_idx").copy()
            quantity = _as_float(quantity, "quantity").copy()
            coll = np.asarray(collateral)
            if coll.dtype.kind not in "fiu" or coll.dtype.kind == "b":
                raise InvalidTypeError(f"collateral: expected numbers, got dtype {coll.dtype}")
            if coll.size != n * len(currencies):
                raise InvalidInputError(
                    f"collateral: expected {n} x {len(currencies)} amounts (accounts x currencies), got shape "
                    f"{coll.shape}"
                )
            collateral = np.array(coll, dtype=np.float64).reshape(n, len(currencies))
            if indptr.shape != (n + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                raise InvalidInputError("indptr: must have N + 1 non-decreasing entries starting at 0")
            if indptr[-1] != len(instrument_idx) or len(quantity) != len(instrument_idx):
                raise InvalidInputError("indptr: last entry must equal the number of positions")
            _check_positions(account_id, indptr, instrument_idx, quantity, table)
            rows = np.repeat(np.arange(n), np.diff(indptr))
            same = (rows[1:] == rows[:-1]) & (instrument_idx[1:] <= instrument_idx[:-1])
            if same.any():
                j = int(np.flatnonzero(same)[0]) + 1
                raise InvalidInputError(
                    f"instrument_idx: positions of account {account_id[rows[j]]!r} are not strictly "
                    f"increasing at position {j}"
                )
            _check_collateral(collateral, account_id, currencies)
        for name, arr in (
            ("account_id", account_id),
            ("indptr", indptr),
            ("instrument_idx", instrument_idx),
            ("quantity", quantity),
            ("collateral", collateral),
        ):
            object.__setattr__(self, name, _readonly(arr))
        object.__setattr__(self, "currencies", currencies)
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "_id_index", None)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("AccountBook is immutable")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        account_index: Any,
        instrument_idx: Any,
        quantity: Any,
        table: InstrumentTable,
        account_ids: Sequence[str] | np.ndarray | None = None,
        collateral: Any = None,
        currencies: Sequence[str] = DEFAULT_CURRENCIES,
        n_accounts: int | None = None,
        workers: int | None = None,
    ) -> AccountBook:
        """Build a book from columnar positions (no Python loop over positions).

        Parameters
        ----------
        account_index : array of int, shape (P,)
            Dense account index in ``[0, N)`` of every position (any order).
        instrument_idx : array of int, shape (P,)
            Instrument id (row of ``table``) of every position.
        quantity : array of float, shape (P,)
            Signed quantity in contracts; duplicates of (account, instrument) are summed.
        table : InstrumentTable
        account_ids : sequence of str, optional
            Ids of the ``N`` accounts; default ``"0" ... "N-1"``.
        collateral : array (N, C) or dict currency -> array (N,), optional
            Amounts >= 0; default zeros.
        currencies : sequence of str
            Collateral currencies (columns of ``collateral``).
        n_accounts : int, optional
            ``N`` when neither ``account_ids`` nor ``collateral`` gives it (trailing empty accounts);
            default ``max(account_index) + 1``.
        workers : int, optional
            Threads for the per-account sort (``None``: all cores); the result does not depend on it.

        Returns
        -------
        AccountBook
        """
        return cls._from_arrays(account_index, instrument_idx, quantity, table, account_ids, collateral, currencies,
                                n_accounts, workers, owned=False)

    @classmethod
    def _from_owned_arrays(cls, account_index: np.ndarray, instrument_idx: np.ndarray, quantity: np.ndarray,
                           table: InstrumentTable, **kwargs: Any) -> AccountBook:
        """:meth:`from_arrays` for dpm's own readers and generator, whose position arrays are
        temporaries nobody else holds: when they are already in CSR order the book keeps them (made
        read-only) instead of copying them (2 x 30 MB for 3.8 M positions: 40-90 ms of fresh-memory
        page faults on a 2-vCPU host). Every check of :meth:`from_arrays` runs."""
        return cls._from_arrays(account_index, instrument_idx, quantity, table, owned=True, **kwargs)

    @classmethod
    def _from_arrays(cls, account_index: Any, instrument_idx: Any, quantity: Any, table: InstrumentTable,
                     account_ids: Sequence[str] | np.ndarray | None = None, collateral: Any = None,
                     currencies: Sequence[str] = DEFAULT_CURRENCIES, n_accounts: int | None = None,
                     workers: int | None = None, *, owned: bool) -> AccountBook:
        if not isinstance(table, InstrumentTable):
            raise InvalidTypeError(f"table: expected an InstrumentTable, got {type(table).__name__}")
        currencies = _check_currencies(currencies)
        acc = _as_index(account_index, "account_index")
        inst = _as_index(instrument_idx, "instrument_idx")
        qty = _as_float(quantity, "quantity")
        p = len(acc)
        if len(inst) != p or len(qty) != p:
            raise InvalidInputError(
                f"arrays must have the same length: account_index has {p}, instrument_idx has {len(inst)}, "
                f"quantity has {len(qty)}"
            )

        # N from the most explicit source; all sources must agree
        n = None
        if account_ids is not None:
            n = len(account_ids)
        if collateral is not None and not isinstance(collateral, Mapping):
            c_n = np.shape(collateral)[0] if np.ndim(collateral) >= 1 else None
            if n is not None and c_n != n:
                raise InvalidInputError(f"collateral: has {c_n} rows for {n} accounts")
            n = c_n if n is None else n
        if n_accounts is not None:
            if isinstance(n_accounts, (bool, np.bool_)) or not isinstance(n_accounts, (int, np.integer)):
                raise InvalidTypeError(f"n_accounts: expected an int, got {n_accounts!r}")
            if n_accounts < 0:
                raise InvalidInputError(f"n_accounts: must be >= 0, got {n_accounts}")
            if n is not None and n != n_accounts:
                raise InvalidInputError(f"n_accounts: {n_accounts} disagrees with {n} account ids/rows")
            n = int(n_accounts)
        amin = int(acc.min()) if p else 0
        amax = int(acc.max()) if p else -1
        if n is None:
            n = amax + 1
        if amin < 0 or amax >= n:
            bad = (acc < 0) | (acc >= n)
            j = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"account_index: position {j} has account {acc[j]}, not in [0, {n})")
        # before any array of N is made: an account index of 10**12 would otherwise ask for terabytes
        check_memory(n * _BYTES_PER_ACCOUNT + p * _BYTES_PER_POSITION,
                     f"{n:,} accounts ({'account_index' if n_accounts is None and account_ids is None else 'n_accounts'}) "
                     f"and {p:,} positions")

        if account_ids is None:
            ids = _default_ids(n)
        else:
            ids = _as_id_array(account_ids, n)
        m = len(table)
        if p and (int(inst.min()) < 0 or int(inst.max()) >= m):
            bad = (inst < 0) | (inst >= m)
            j = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"instrument_idx: position {j} of account {ids[acc[j]]!r} has instrument id {inst[j]}, "
                f"not in [0, {m})"
            )
        if p and not np.isfinite(qty).all():
            j = int(np.flatnonzero(~np.isfinite(qty))[0])
            raise InvalidInputError(
                f"quantity: must be finite; account {ids[acc[j]]!r}, instrument {table.name[inst[j]]!r} "
                f"(position {j}) has {_v(qty[j])!r}"
            )
        coll = _collateral_matrix(collateral, n, currencies)
        _check_collateral(coll, ids, currencies)

        indptr, out_inst, out_qty = _build_csr(acc, inst, qty, n, m, workers, owned=owned)
        _check_merged_finite(indptr, out_inst, out_qty, ids, table)
        return cls(ids, indptr, out_inst, out_qty, coll, currencies, table, _trusted=True)

    @classmethod
    def _from_generated_rows(cls, account_ids: np.ndarray, indptr: np.ndarray, instrument_idx: np.ndarray,
                             quantity: np.ndarray, collateral: np.ndarray, currencies: tuple[str, ...],
                             table: InstrumentTable, workers: int | None = None) -> AccountBook:
        """The sample generator's book from rows it built itself (``dpm.portfolio.sample``): unique
        str ids by construction, ``indptr`` consistent, ids in the table, positions grouped by
        account in the order :meth:`from_arrays` would have grouped them. Rows are sorted and merged
        as :meth:`from_arrays` does, and the checks that cost no pass of their own still run."""
        currencies = _check_currencies(currencies)
        n = len(account_ids)
        if len(indptr) != n + 1 or int(indptr[-1]) != len(instrument_idx) or len(quantity) != len(instrument_idx):
            raise InvalidInputError("generated rows: indptr does not match the positions")
        coll = _collateral_matrix(collateral, n, currencies)
        _check_collateral(coll, account_ids, currencies)
        indptr, out_inst, out_qty = _sort_merge_rows(indptr, instrument_idx, quantity, n, len(table), workers)
        _check_merged_finite(indptr, out_inst, out_qty, account_ids, table)
        return cls(account_ids, indptr, out_inst, out_qty, coll, currencies, table, _trusted=True)

    @classmethod
    def from_positions(
        cls,
        positions: Any,
        table: InstrumentTable,
        collateral: Any = None,
        account_ids: Sequence[str] | None = None,
        currencies: Sequence[str] | None = None,
    ) -> AccountBook:
        """Build a book from long-format positions.

        Parameters
        ----------
        positions : DataFrame, mapping of columns or list of dicts
            Columns ``account_id`` (str), ``instrument`` (name) and ``quantity``.
        table : InstrumentTable
        collateral : DataFrame, mapping of columns or list of dicts, or dict id -> {currency: amount}
            Long-format ``account_id, currency, amount`` (rows of one account and currency are summed).
        account_ids : sequence of str, optional
            The accounts and their order (accounts without positions are kept); default: ids in order of
            first appearance in ``positions``, then in ``collateral``.
        currencies : sequence of str, optional
            Default :data:`DEFAULT_CURRENCIES` plus any other currency found in ``collateral``.
        """
        cols = _columns_of(positions, ("account_id", "instrument", "quantity"), "positions")
        ids_col = _as_list(cols["account_id"])
        names = _as_list(cols["instrument"])
        qty = cols["quantity"]
        if len(names) != len(ids_col) or len(qty) != len(ids_col):
            raise InvalidInputError("positions: columns account_id, instrument and quantity differ in length")
        for i, v in enumerate(ids_col):
            if not isinstance(v, str) or not v:
                raise InvalidInputError(f"account_id: expected a non-empty str, position {i} has {v!r}")
        index: dict[str, int] = {}
        if account_ids is not None:
            ids_arr = _as_id_array(account_ids)
            index = {v: i for i, v in enumerate(ids_arr.tolist())}
            n_fixed = len(index)
        acc, index = _factorize(ids_col, index)
        if account_ids is not None and len(index) != n_fixed:
            extra = next(v for v, i in index.items() if i >= n_fixed)
            raise InvalidInputError(f"account_id: {extra!r} in positions is not in account_ids")
        inst = table.index_of(names)
        qty_arr = _as_float(
            np.asarray(qty, dtype=object) if not isinstance(qty, np.ndarray) else qty, "quantity"
        )

        coll_rows = None
        found_cur: list[str] = []
        if collateral is not None:
            if (
                isinstance(collateral, Mapping)
                and collateral
                and all(isinstance(v, Mapping) for v in collateral.values())
            ):
                c_ids, c_cur, c_amt = [], [], []
                for aid, d in collateral.items():
                    for cur, amt in d.items():
                        c_ids.append(aid)
                        c_cur.append(cur)
                        c_amt.append(amt)
            else:
                ccols = _columns_of(collateral, ("account_id", "currency", "amount"), "collateral")
                c_ids = _as_list(ccols["account_id"])
                c_cur = _as_list(ccols["currency"])
                c_amt = ccols["amount"]
            for i, v in enumerate(c_ids):
                if not isinstance(v, str) or not v:
                    raise InvalidInputError(f"collateral: account_id of row {i} is {v!r}, expected a str")
            n_before = len(index)
            c_acc, index = _factorize(c_ids, index)
            if account_ids is not None and len(index) != n_before:
                extra = next(v for v, i in index.items() if i >= n_before)
                raise InvalidInputError(f"collateral: account {extra!r} is not in account_ids")
            c_amt_arr = _as_float(
                np.asarray(c_amt, dtype=object) if not isinstance(c_amt, np.ndarray) else c_amt,
                "collateral amount",
            )
            found_cur = list(dict.fromkeys(c_cur))
            coll_rows = (c_acc, c_cur, c_amt_arr)

        if currencies is None:
            currencies = DEFAULT_CURRENCIES + tuple(c for c in found_cur if c not in DEFAULT_CURRENCIES)
        currencies = _check_currencies(currencies)
        ids = np.empty(len(index), dtype=object)
        ids[list(index.values())] = list(index.keys())
        n = len(ids)
        coll = np.zeros((n, len(currencies)))
        if coll_rows is not None:
            c_acc, c_cur, c_amt_arr = coll_rows
            cpos = {c: j for j, c in enumerate(currencies)}
            c_col = np.empty(len(c_cur), dtype=np.int64)
            for i, c in enumerate(c_cur):
                j = cpos.get(c)
                if j is None:
                    raise InvalidInputError(
                        f"collateral: unknown currency {c!r} for account {ids[c_acc[i]]!r} (row {i}); "
                        f"currencies are {currencies!r}"
                    )
                c_col[i] = j
            if not np.isfinite(c_amt_arr).all() or (c_amt_arr < 0).any():
                i = int(np.flatnonzero(~(np.isfinite(c_amt_arr) & (c_amt_arr >= 0)))[0])
                raise InvalidInputError(
                    f"collateral: amount must be finite and >= 0; account {ids[c_acc[i]]!r}, currency "
                    f"{c_cur[i]!r} (row {i}) has {_v(c_amt_arr[i])!r}"
                )
            np.add.at(coll, (c_acc, c_col), c_amt_arr)
        return cls.from_arrays(
            acc, inst, qty_arr, table, account_ids=ids, collateral=coll, currencies=currencies
        )

    @classmethod
    def from_accounts(
        cls, accounts: Iterable[Account], table: InstrumentTable, currencies: Sequence[str] | None = None
    ) -> AccountBook:
        """Build a book from :class:`Account` objects (order kept)."""
        accounts = list(accounts)
        ids, acc, names, qty = [], [], [], []
        coll: dict[str, dict[str, float]] = {}
        for i, a in enumerate(accounts):
            if not isinstance(a, Account):
                raise InvalidTypeError(f"accounts: item {i} is {type(a).__name__}, expected an Account")
            ids.append(a.id)
            for pos in a.positions:
                if len(pos) != 2:
                    raise InvalidInputError(f"positions: account {a.id!r} has {pos!r}, expected (name, qty)")
                names.append(pos[0])
                qty.append(pos[1])
                acc.append(i)
            coll[a.id] = dict(a.collateral)
        ids_arr = _as_id_array(ids)
        try:
            inst = table.index_of(names)
        except KeyError as exc:
            j = int(str(exc).rsplit("position ", 1)[-1]) if "position" in str(exc) else None
            who = f" in account {ids[acc[j]]!r}" if j is not None else ""
            raise type(exc)(f"{exc}{who}") from None
        found = list(dict.fromkeys(c for d in coll.values() for c in d))
        if currencies is None:
            currencies = DEFAULT_CURRENCIES + tuple(c for c in found if c not in DEFAULT_CURRENCIES)
        currencies = _check_currencies(currencies)
        cpos = {c: j for j, c in enumerate(currencies)}
        mat = np.zeros((len(ids), len(currencies)))
        for i, aid in enumerate(ids):
            for c, amt in coll[aid].items():
                if c not in cpos:
                    raise InvalidInputError(
                        f"collateral: unknown currency {c!r} for account {aid!r}; currencies are {currencies!r}"
                    )
                mat[i, cpos[c]] += float(amt)
        qty_arr = _as_float(np.array(qty, dtype=object), "quantity") if qty else np.zeros(0)
        return cls.from_arrays(
            np.array(acc, dtype=np.int64),
            inst,
            qty_arr,
            table,
            account_ids=ids_arr,
            collateral=mat,
            currencies=currencies,
        )

    @classmethod
    def empty(cls, table: InstrumentTable, currencies: Sequence[str] = DEFAULT_CURRENCIES) -> AccountBook:
        """A book with no accounts."""
        return cls.from_arrays(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0),
            table,
            account_ids=[],
            currencies=currencies,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.account_id)

    @property
    def n_accounts(self) -> int:
        return len(self.account_id)

    @property
    def n_positions(self) -> int:
        """Total number of (unique) positions ``P``."""
        return len(self.instrument_idx)

    @property
    def positions_per_account(self) -> np.ndarray:
        """int64 array of the number of positions of every account."""
        return np.diff(self.indptr)

    def account_of_position(self) -> np.ndarray:
        """int64 array (P,) giving the account index of every position."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    def __repr__(self) -> str:
        return (
            f"AccountBook({len(self)} accounts, {self.n_positions} positions over "
            f"{len(self.table)} instruments; currencies={self.currencies})"
        )

    def index_of(self, account_ids: Any) -> Any:
        """Index of an account id (int) or of a sequence of ids (int64 array)."""
        if self._id_index is None:
            object.__setattr__(self, "_id_index", {v: i for i, v in enumerate(self.account_id.tolist())})
        d = self._id_index
        if isinstance(account_ids, str):
            if account_ids not in d:
                raise UnknownAccountError(f"account_id: unknown account {account_ids!r}")
            return d[account_ids]
        seq = list(account_ids)
        idx = np.fromiter((d.get(v, -1) for v in seq), dtype=np.int64, count=len(seq))
        if len(idx) and idx.min() < 0:
            j = int(np.flatnonzero(idx < 0)[0])
            raise UnknownAccountError(f"account_id: unknown account {seq[j]!r} at position {j}")
        return idx

    def account(self, i: int) -> Account:
        """Account number ``i`` as an :class:`Account` (collateral lists the non-zero amounts)."""
        n = len(self)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise InvalidTypeError(f"account: expected an int index, got {i!r}")
        if not -n <= i < n:
            raise UnknownAccountError(f"account: index {i} is not in [0, {n})")
        i = int(i) % n
        s, e = int(self.indptr[i]), int(self.indptr[i + 1])
        names = self.table.name[self.instrument_idx[s:e]].tolist()
        positions = list(zip(names, self.quantity[s:e].tolist()))
        coll = {c: float(a) for c, a in zip(self.currencies, self.collateral[i].tolist()) if a != 0.0}
        return Account(self.account_id[i], positions, coll)

    def __getitem__(self, key: Any) -> Account:
        if isinstance(key, str):
            return self.account(self.index_of(key))
        return self.account(key)

    def __iter__(self):
        for i in range(len(self)):
            yield self.account(i)

    def require_table(self, table: InstrumentTable, owner: str = "engine") -> None:
        """Raise unless this book was built on ``table`` (the same object or equal contents)."""
        if self.table is not table and not self.table.equals(table):
            raise InvalidInputError(
                f"accounts: the AccountBook was built on a different InstrumentTable than the {owner}'s "
                f"({len(self.table)} vs {len(table)} instruments)"
            )

    def first_position_in(self, instrument_mask: np.ndarray) -> tuple[int, int] | None:
        """``(account index, instrument id)`` of the first position whose instrument is flagged in
        ``instrument_mask`` (a bool array over the table), or None."""
        if not self.n_positions:
            return None
        hit = instrument_mask[self.instrument_idx]
        if not hit.any():
            return None
        k = int(np.flatnonzero(hit)[0])
        return int(np.searchsorted(self.indptr, k, side="right") - 1), int(self.instrument_idx[k])

    def subset(self, account_indices: Any) -> AccountBook:
        """New book of the selected accounts (integer indices in the given order, or a boolean mask)."""
        n = len(self)
        sel = np.asarray(account_indices)
        if sel.dtype.kind == "b":
            if sel.shape != (n,):
                raise InvalidInputError(f"account_indices: mask must have shape ({n},), got {sel.shape}")
            sel = np.flatnonzero(sel)
        elif sel.dtype.kind in "iu" or sel.size == 0:
            sel = sel.astype(np.int64).ravel()
            bad = (sel < -n) | (sel >= n)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise UnknownAccountError(f"account_indices: {sel[j]} at position {j} is not in [0, {n})")
            sel = np.where(sel < 0, sel + n, sel)
        else:
            raise InvalidTypeError(f"account_indices: expected ints or a boolean mask, got dtype {sel.dtype}")
        if len(np.unique(sel)) != len(sel):
            raise InvalidInputError("account_indices: an account is selected twice (ids must stay unique)")
        counts = np.diff(self.indptr)[sel]
        indptr = np.zeros(len(sel) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        gather = np.repeat(self.indptr[:-1][sel] - indptr[:-1], counts) + np.arange(
            indptr[-1], dtype=np.int64
        )
        return AccountBook(
            self.account_id[sel],
            indptr,
            self.instrument_idx[gather],
            self.quantity[gather],
            self.collateral[sel],
            self.currencies,
            self.table,
            _trusted=True,
        )

    def to_columns(self) -> dict[str, np.ndarray]:
        """Long-format positions: ``account_id`` (object), ``instrument`` (object), ``quantity``."""
        return {
            "account_id": self.account_id[self.account_of_position()],
            "instrument": self.table.name[self.instrument_idx],
            "quantity": self.quantity.copy(),
        }

    def collateral_columns(self, include_zero: bool = True) -> dict[str, np.ndarray]:
        """Long-format collateral ``account_id, currency, amount`` (every account × currency by default,
        so that accounts without positions survive a round trip through files)."""
        n, c = self.collateral.shape
        acc = np.repeat(np.arange(n), c)
        cur = np.tile(np.array(self.currencies + ("",), dtype=object)[:-1] if c else np.empty(0, object), n)
        amt = self.collateral.ravel().copy()
        if not include_zero:
            keep = amt != 0
            acc, cur, amt = acc[keep], cur[keep], amt[keep]
        return {"account_id": self.account_id[acc], "currency": cur, "amount": amt}

    def equals(self, other: AccountBook) -> bool:
        """Same ids, CSR arrays, collateral, currencies and an equal instrument table."""
        return bool(
            isinstance(other, AccountBook)
            and self.currencies == other.currencies
            and np.array_equal(self.account_id, other.account_id)
            and np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.instrument_idx, other.instrument_idx)
            and np.array_equal(self.quantity, other.quantity)
            and np.array_equal(self.collateral, other.collateral)
            and (self.table is other.table or self.table.equals(other.table))
        )

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccountBook):
            return NotImplemented
        return self.equals(other)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _as_list(values: Any) -> list[Any]:
    if isinstance(values, np.ndarray):
        return [str(v) if isinstance(v, np.str_) else v for v in values.tolist()]
    return list(values)


def _as_index(x: Any, name: str) -> np.ndarray:
    """int64 copy-or-view of integer ids; floats must be whole, and no value may leave the int64 range."""
    arr = _as_array(x, name)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "i":
        return np.ascontiguousarray(arr, dtype=np.int64)
    if kind == "u":
        if arr.size and int(arr.max()) > _INT64_MAX:  # would wrap to a negative id in the cast
            j = int(np.argmax(arr))
            raise InvalidInputError(f"{name}: position {j} is {_v(arr[j])!r}, outside the int64 range")
        return np.ascontiguousarray(arr, dtype=np.int64)
    if kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"{name}: expected integers, position {j} is {_v(arr[j])!r}")
        big = np.abs(arr) >= 2.0**63  # would wrap to INT64_MIN in the cast
        if big.any():
            j = int(np.flatnonzero(big)[0])
            raise InvalidInputError(f"{name}: position {j} is {_v(arr[j])!r}, outside the int64 range")
        return arr.astype(np.int64)
    if kind == "O":
        out = []
        for j, v in enumerate(arr.tolist()):
            # exact ints (a float64 round trip would move ids above 2**53); no bools, no text
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise InvalidTypeError(f"{name}: expected integers, position {j} is {v!r}")
            if isinstance(v, (float, np.floating)) and not (math.isfinite(v) and v == math.floor(v)):
                raise InvalidInputError(f"{name}: expected integers, position {j} is {v!r}")
            iv = int(v)
            if not -_INT64_MAX - 1 <= iv <= _INT64_MAX:
                raise InvalidInputError(f"{name}: position {j} is {v!r}, outside the int64 range")
            out.append(iv)
        return np.array(out, dtype=np.int64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    raise InvalidTypeError(f"{name}: expected integers, got dtype {arr.dtype}")


_INT64_MAX = 2**63 - 1


def _as_array(x: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists, objects numpy cannot hold
        raise InvalidInputError(f"{name}: cannot read as a 1-d array ({exc})") from None


def _as_float(x: Any, name: str) -> np.ndarray:
    arr = _as_array(x, name)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if arr.dtype.kind == "b" or (arr.dtype.kind not in "fiuO" and arr.size):
        raise InvalidTypeError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "O":
        for j, v in enumerate(arr.tolist()):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise InvalidTypeError(f"{name}: expected real numbers, position {j} is {v!r}")
            if isinstance(v, int) and not -2.0**1023 < v < 2.0**1023:
                raise InvalidInputError(f"{name}: position {j} is {v!r}, beyond the floating-point range")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _collateral_matrix(collateral: Any, n: int, currencies: tuple[str, ...]) -> np.ndarray:
    c = len(currencies)
    if collateral is None:
        return np.zeros((n, c))
    if isinstance(collateral, Mapping):
        mat = np.zeros((n, c))
        for cur, col in collateral.items():
            if cur not in currencies:
                raise InvalidInputError(
                    f"collateral: unknown currency {cur!r}; currencies are {currencies!r}"
                )
            arr = np.asarray(col)
            if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
                raise InvalidTypeError(f"collateral[{cur!r}]: expected numbers, got dtype {arr.dtype}")
            if arr.shape not in ((), (n,), (1,)):
                raise InvalidInputError(f"collateral[{cur!r}]: expected {n} amounts (one per account), got shape "
                                        f"{arr.shape}")
            mat[:, currencies.index(cur)] = np.broadcast_to(arr.astype(np.float64), (n,))
        return mat
    arr = np.asarray(collateral)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise InvalidTypeError(f"collateral: expected numbers, got dtype {arr.dtype}")
    if arr.shape != (n, c):
        raise InvalidInputError(
            f"collateral: expected shape ({n}, {c}) (accounts × currencies), got {arr.shape}"
        )
    return np.array(arr, dtype=np.float64)  # copy: the book's array becomes read-only


def _check_collateral(coll: np.ndarray, ids: np.ndarray, currencies: tuple[str, ...]) -> None:
    bad = ~np.isfinite(coll) | (coll < 0)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InvalidInputError(
            f"collateral: must be finite and >= 0; account {ids[i]!r}, currency {currencies[j]!r} "
            f"has {_v(coll[i, j])!r}"
        )


def _check_positions(
    ids: np.ndarray, indptr: np.ndarray, inst: np.ndarray, qty: np.ndarray, table: InstrumentTable
) -> None:
    rows = np.repeat(np.arange(len(ids)), np.diff(indptr))
    bad = (inst < 0) | (inst >= len(table))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"instrument_idx: position {j} of account {ids[rows[j]]!r} has id {inst[j]}, not in [0, {len(table)})"
        )
    bad = ~np.isfinite(qty)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"quantity: must be finite; account {ids[rows[j]]!r}, instrument {table.name[inst[j]]!r} has {_v(qty[j])!r}"
        )


def _build_csr(
    acc: np.ndarray, inst: np.ndarray, qty: np.ndarray, n: int, m: int, workers: int | None = None,
    owned: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays from validated triples (inputs untouched; new arrays unless ``owned`` and already
    in CSR order, when ``inst`` and ``qty`` themselves are returned)."""
    p = len(acc)
    indptr = np.empty(n + 1, dtype=np.int64)
    nondec, strict = _kernel.is_strictly_increasing_pairs(acc, inst)
    if strict:  # already CSR order without duplicates: counts and copies only
        counts = np.bincount(acc, minlength=n) if p else np.zeros(n, np.int64)
        indptr[0] = 0
        np.cumsum(counts, out=indptr[1:])
        return (indptr, inst, qty) if owned else (indptr, inst.copy(), qty.copy())
    out_inst = np.empty(p, dtype=np.int64)
    out_qty = np.empty(p, dtype=np.float64)
    _kernel.count_scatter(acc, inst, qty, nondec, indptr, out_inst, out_qty)
    return _sort_merge_rows(indptr, out_inst, out_qty, n, m, workers)


def _check_merged_finite(indptr: np.ndarray, inst: np.ndarray, qty: np.ndarray, ids: np.ndarray,
                         table: InstrumentTable) -> None:
    """Finite duplicates can sum beyond the float range: name the first account and instrument."""
    if not np.isfinite(qty).all():
        k = int(np.flatnonzero(~np.isfinite(qty))[0])
        a = int(np.searchsorted(indptr, k, side="right") - 1)
        raise InvalidInputError(
            f"quantity: the positions of account {ids[a]!r} in instrument {table.name[inst[k]]!r} sum "
            f"to {_v(qty[k])!r}, beyond the floating-point range"
        )


def _sort_merge_rows(
    indptr: np.ndarray, out_inst: np.ndarray, out_qty: np.ndarray, n: int, m: int, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (positions grouped by account, in input order within a row) sorted by instrument, with
    duplicates summed in input order; in place, the arrays compacted (views) when some merged."""
    p = len(out_inst)
    ucount = np.empty(n, dtype=np.int64)
    # rows are independent: chunks over threads give the same bits for any worker count
    run_chunked(
        lambda s, e: _kernel.sort_merge_rows(indptr, out_inst, out_qty, ucount, s, e, m),
        n,
        workers,
        min_chunk=8192,
    )
    if int(ucount.sum()) != p:
        total = _kernel.compact_rows(indptr, out_inst, out_qty, ucount)
        # views, not copies: the few slots freed by merged duplicates are not worth a 2 x P copy
        out_inst = out_inst[:total]
        out_qty = out_qty[:total]
    return indptr, out_inst, out_qty
