"""What a market move can take from each account: equity now, and which factors its P&L depends on.

An account's loss under a joint move ``z`` is minus the P&L of its positions (full revaluation by
the one revaluation core, :class:`~dpm.engines.risk.ScenarioRiskEngine`) minus the change in value
of its collateral: coin collateral moves with its coin's price (``value * x_u``, at the margin
model's haircut), USD-like collateral only in scenario sets that move it (a stablecoin de-peg).
It is exhausted when the loss reaches its equity (collateral after haircuts plus the mark value of
its positions, :class:`~dpm.engines.margin.MarginEngine`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpm.engines.margin import USD_LIKE, MarginEngine
from dpm.errors import InvalidInputError, InvalidTypeError
from dpm.market.specs import Kind
from dpm.portfolio.accounts import AccountBook

__all__ = ["BookExposure", "book_exposure"]


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class BookExposure:
    """Equity and collateral of a book, ready for stress revaluation (all USD, read-only arrays).

    Attributes
    ----------
    book : AccountBook
    equity : ndarray (N,)
        Collateral after haircuts plus the mark value of the positions.
    maintenance_margin, initial_margin : ndarray (N,)
        Before any move.
    currencies : tuple of str
        The book's collateral currencies.
    collateral_usd : ndarray (N, C)
        USD value after haircut of each collateral currency (the part that moves with its price).
    """

    book: AccountBook
    equity: np.ndarray
    maintenance_margin: np.ndarray
    initial_margin: np.ndarray
    currencies: tuple[str, ...]
    collateral_usd: np.ndarray

    def __len__(self) -> int:
        return len(self.book)

    def collateral_pnl(self, underlyings: Sequence[str], price_move: np.ndarray,
                       accounts: Any = slice(None), out: np.ndarray | None = None) -> np.ndarray:
        """``(n, S)`` USD P&L of the collateral of ``accounts`` under price moves ``(S, len(underlyings))``
        (a currency moves when it is one of ``underlyings``); with ``out`` (n, S), added into it."""
        cols = [(j, underlyings.index(c)) for j, c in enumerate(self.currencies) if c in underlyings]
        coll = self.collateral_usd[accounts]
        if out is None:
            out = np.zeros((coll.shape[0], price_move.shape[0]))
        for j, k in cols:
            if coll[:, j].any():  # most books hold only some coins
                out += coll[:, j:j + 1] * price_move[None, :, k]
        return out

    def collateral_by_underlying(self, underlyings: Sequence[str]) -> np.ndarray:
        """``(N, U)`` collateral value moving with each of ``underlyings`` (read-only; computed once
        per tuple of underlyings: the searches ask for it on every evaluation)."""
        key = tuple(underlyings)
        cache = self.__dict__.setdefault("_by_underlying", {})
        hit = cache.get(key)
        if hit is not None:
            return hit
        out = np.zeros((len(self.book), len(key)))
        for j, c in enumerate(self.currencies):
            if c in key:
                out[:, key.index(c)] += self.collateral_usd[:, j]
        out.setflags(write=False)
        cache[key] = out
        return out


def book_exposure(engine: MarginEngine, book: AccountBook, *, workers: int | None = None) -> BookExposure:
    """Equity, margin and collateral values of every account of ``book`` under ``engine``'s model."""
    if not isinstance(engine, MarginEngine):
        raise InvalidTypeError(f"engine: expected a MarginEngine, got {type(engine).__name__}")
    if not isinstance(book, AccountBook):
        raise InvalidTypeError(f"accounts: expected an AccountBook, got {type(book).__name__}")
    res = engine.margin_many(book, workers=workers)
    _, rates = engine.collateral_rates(book.currencies, book)
    coll = book.collateral * rates[None, :] if book.collateral.size else np.zeros((len(book), len(rates)))
    return BookExposure(book, _ro(np.array(res.equity, dtype=np.float64)),
                        _ro(np.array(res.maintenance_margin, dtype=np.float64)),
                        _ro(np.array(res.initial_margin, dtype=np.float64)), tuple(book.currencies),
                        _ro(np.ascontiguousarray(coll, dtype=np.float64)))


def factor_masks(exposure: BookExposure, underlyings: Sequence[str], vol: bool) -> np.ndarray:
    """Per account, a bit mask of the factors its loss depends on: bit ``u`` its price of underlying
    ``underlyings[u]`` (a position on it, or collateral in it), bit ``U + u`` its vol (an option on it).

    Raises InvalidInputError naming the first account that holds an instrument (or coin collateral)
    of an underlying that is not in ``underlyings``.
    """
    book = exposure.book
    table = book.table
    U = len(underlyings)
    if 2 * U > 62:
        raise InvalidInputError(f"underlyings: at most 31 underlyings in a reverse stress, got {U}")
    t_und = np.array([underlyings.index(u) if u in underlyings else -1 for u in table.underlyings],
                     dtype=np.int64)
    inst = book.instrument_idx
    live = book.quantity != 0.0
    # per instrument first (M rows), then one lookup per position
    code_i = t_und[np.asarray(table.underlying, dtype=np.int64)] if len(table) else np.zeros(0, np.int64)
    bits_i = np.where(code_i >= 0, np.left_shift(np.int64(1), np.maximum(code_i, 0)), 0).astype(np.int64)
    if vol and len(table):
        opt = (np.asarray(table.kind) == Kind.OPTION) & (code_i >= 0)
        bits_i |= np.where(opt, np.left_shift(np.int64(1), U + np.maximum(code_i, 0)), 0)
    missing_i = code_i < 0
    if missing_i.any() and inst.size:
        bad = live & missing_i[inst]
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            a = int(np.searchsorted(book.indptr, p, side="right") - 1)
            raise InvalidInputError(
                f"account {book.account_id[a]!r}: instrument {table.name[inst[p]]!r} is on an underlying that "
                f"the stress space does not move (space: {tuple(underlyings)})")
    mask = np.zeros(len(book), dtype=np.int64)
    bits = np.where(live, bits_i[inst], 0) if inst.size else np.zeros(0, np.int64)
    # positions are grouped by account (CSR): one reduction per non-empty account
    nonempty = np.flatnonzero(np.diff(book.indptr) > 0)
    if nonempty.size:
        mask[nonempty] = np.bitwise_or.reduceat(bits, book.indptr[nonempty])
    for j, c in enumerate(exposure.currencies):
        held = exposure.collateral_usd[:, j] != 0.0
        if not held.any() or c in USD_LIKE:
            continue
        if c not in underlyings:
            a = int(np.flatnonzero(held)[0])
            raise InvalidInputError(f"account {book.account_id[a]!r}: collateral in {c!r}, an underlying the "
                                    f"stress space does not move (space: {tuple(underlyings)})")
        mask[held] |= np.int64(1) << underlyings.index(c)
    return mask
