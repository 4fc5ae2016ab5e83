"""Daily price history: the bundled crypto data set and loaders for a user's own history.

The statistics layer (:mod:`dpm.models.calibration`, :mod:`dpm.models.measures`, :mod:`dpm.models.generators.stress`,
:mod:`dpm.models.backtest`) works on plain arrays of daily log returns. This module turns price files into
those arrays and checks them on the way in: a price must be finite and positive, dates must be
strictly increasing, and an asset may start later than the others (its prices are NaN before its
first day) but may not have gaps afterwards.

Bundled data
------------
``dpm/data/crypto_daily_usd.csv``: daily USD closes of BTC (2014-09-17 .. 2025-01-07), ETH and USDT
(2017-11-09 .. 2025-01-07), from Yahoo Finance (tickers BTC-USD, ETH-USD, USDT-USD) as stored in the
public repository emmaebrl/crypto-volatility-lab, file ``sandbox/data/all_currencies_data.csv`` at
commit c79a47eb9e5a5fa46ed6d2487f73a0bea6741997 (no license stated there). Dates are UTC days; a
"close" is the price at 00:00 UTC of the next day.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpm._util.arrow import compute
from dpm._util.fields import number_column, text_column
from dpm._util.files import check_header, read_bytes, read_csv
from dpm.errors import DPMError, InvalidInputError, InvalidTypeError, MissingFileError

__all__ = [
    "BUNDLED_HISTORY_SOURCE",
    "LogReturns",
    "OHLCHistory",
    "PriceHistory",
    "history_from_long",
    "history_from_wide",
    "load_history",
    "load_ohlc",
]

BUNDLED_HISTORY_SOURCE = (
    "Yahoo Finance daily closes (BTC-USD, ETH-USD, USDT-USD) via github.com/emmaebrl/"
    "crypto-volatility-lab sandbox/data/all_currencies_data.csv @ c79a47eb"
)

# dpm/data/, next to the other bundled files (this module is in dpm/market/)
_BUNDLED = Path(__file__).resolve().parents[1] / "data" / "crypto_daily_usd.csv"


def _freeze(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def _as_day(value: Any, name: str) -> np.datetime64:
    try:
        day = np.datetime64(value, "D")
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{name}: cannot read {value!r} as a date ({exc})") from None
    if np.isnat(day):
        raise InvalidInputError(f"{name}: {value!r} is not a valid date")
    return day


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(?:$|[T ])")


def _as_days(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[D]")
    texts = [str(v).strip() for v in arr.ravel()]
    for i, t in enumerate(texts):
        # a full YYYY-MM-DD: numpy would read "2024" or "2024-03" as the first day of the period
        if not _ISO_DAY.match(t):
            raise InvalidInputError(f"{name}: row {i + 1} is {t!r}, not a date as YYYY-MM-DD")
    try:
        days = np.array([np.datetime64(t[:10], "D") for t in texts], dtype="datetime64[D]")
    except (ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{name}: cannot read dates ({exc})") from None
    if np.isnat(days).any():
        i = int(np.flatnonzero(np.isnat(days))[0])
        raise InvalidInputError(f"{name}: row {i} is not a valid date ({arr.ravel()[i]!r})")
    return days.reshape(arr.shape)


@dataclass(frozen=True)
class LogReturns:
    """Daily log returns of several assets over a common date range.

    Attributes
    ----------
    dates : ndarray of datetime64[D], shape (n,)
        Day on which each return ends: ``values[t] = ln(close[dates[t]] / close[previous day])``.
    assets : tuple of str, length A
    values : ndarray of float64, shape (n, A)
        Log returns (decimal, per day), C-contiguous, read-only.
    prices : ndarray of float64, shape (n + 1, A)
        The closes the returns come from (``prices[0]`` is the close before ``dates[0]``).
    """

    dates: np.ndarray
    assets: tuple[str, ...]
    values: np.ndarray
    prices: np.ndarray

    def __post_init__(self) -> None:
        for name in ("dates", "values", "prices"):
            _freeze(getattr(self, name))

    def __len__(self) -> int:
        return len(self.dates)

    def column(self, asset: str) -> np.ndarray:
        """Returns of one asset, shape (n,)."""
        return self.values[:, _asset_position(self.assets, asset)]


def _asset_position(assets: Sequence[str], asset: str) -> int:
    try:
        return list(assets).index(asset)
    except ValueError:
        raise InvalidInputError(
            f"asset: unknown asset {asset!r}; the history has {', '.join(assets)}"
        ) from None


@dataclass(frozen=True)
class PriceHistory:
    """Daily closes of several assets, one row per date.

    Build with :func:`load_history`, :func:`history_from_long` or :func:`history_from_wide`, which
    validate the data; the constructor itself assumes validated, aligned arrays.

    Attributes
    ----------
    dates : ndarray of datetime64[D], shape (T,)
        Strictly increasing UTC days.
    assets : tuple of str, length A
    close : ndarray of float64, shape (T, A)
        Close price in USD (or the file's quote currency); NaN before an asset's first day, finite
        and > 0 from then on. Read-only.
    source : str
        Where the data came from (file path or description).
    """

    dates: np.ndarray
    assets: tuple[str, ...]
    close: np.ndarray
    source: str = ""
    first_index: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _freeze(self.dates)
        _freeze(self.close)
        valid = np.isfinite(self.close)
        first = np.where(valid.any(axis=0), valid.argmax(axis=0), len(self.dates))
        object.__setattr__(self, "first_index", _freeze(first.astype(np.int64)))

    def __len__(self) -> int:
        return len(self.dates)

    def first_date(self, asset: str) -> np.datetime64:
        """First day with a price for ``asset``."""
        return self.dates[self.first_index[_asset_position(self.assets, asset)]]

    def prices(self, asset: str) -> tuple[np.ndarray, np.ndarray]:
        """``(dates, close)`` of one asset from its first day (no NaN)."""
        j = _asset_position(self.assets, asset)
        i0 = self.first_index[j]
        return self.dates[i0:], self.close[i0:, j]

    def price_on(self, asset: str, date: Any) -> float:
        """Close of ``asset`` on ``date``; raises if the day is missing or before the first price."""
        j = _asset_position(self.assets, asset)
        day = _as_day(date, "date")
        i = int(np.searchsorted(self.dates, day))
        if i >= len(self.dates) or self.dates[i] != day or not np.isfinite(self.close[i, j]):
            raise InvalidInputError(f"date: no close for {asset} on {day}")
        return float(self.close[i, j])

    def _window(self, assets: Sequence[str] | str | None, start: Any, end: Any,
                extra_before: int) -> tuple[list[int], int, int]:
        if assets is None:
            names = list(self.assets)
        elif isinstance(assets, str):
            names = [assets]
        else:
            names = list(assets)
        if not names:
            raise InvalidInputError("assets: need at least one asset")
        cols = [_asset_position(self.assets, a) for a in names]
        lo = int(max(self.first_index[c] for c in cols))
        hi = len(self.dates)
        if start is not None:
            s = int(np.searchsorted(self.dates, _as_day(start, "start"))) - extra_before
            lo = max(lo, s)
        if end is not None:
            hi = min(hi, int(np.searchsorted(self.dates, _as_day(end, "end"), side="right")))
        return cols, lo, hi

    def close_matrix(self, assets: Sequence[str] | str | None = None, start: Any = None,
                     end: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Closes of ``assets`` on the dates where all of them have a price, within [start, end].

        Returns ``(dates, close)`` with close of shape (n, len(assets)).
        """
        cols, lo, hi = self._window(assets, start, end, 0)
        if hi <= lo:
            raise InvalidInputError(
                f"start/end: no common dates for {', '.join(self.assets[c] for c in cols)} "
                f"between {start} and {end}"
            )
        return self.dates[lo:hi].copy(), np.ascontiguousarray(self.close[lo:hi][:, cols])

    def log_returns(self, assets: Sequence[str] | str | None = None, start: Any = None,
                    end: Any = None, *, min_obs: int = 1) -> LogReturns:
        """Daily log returns of ``assets`` on their common date range.

        Parameters
        ----------
        assets : str or sequence of str, optional
            Assets to include (default: all). The range starts at the latest first day among them.
        start, end : date-like, optional
            Inclusive bounds on the **return dates** (the day each return ends).
        min_obs : int
            Minimum number of returns; fewer raise :class:`~dpm.errors.InvalidInputError`.

        Returns
        -------
        LogReturns
            ``values[t] = ln(close[t+1] / close[t])`` on consecutive rows of the history.
        """
        cols, lo, hi = self._window(assets, start, end, 1)
        n = hi - lo - 1
        names = [self.assets[c] for c in cols]
        if n < min_obs:
            raise InvalidInputError(
                f"history: too little history for {', '.join(names)} between {start} and {end}: "
                f"{max(n, 0)} returns, need at least {min_obs}"
            )
        prices = np.ascontiguousarray(self.close[lo:hi][:, cols])
        values = np.ascontiguousarray(np.diff(np.log(prices), axis=0))
        return LogReturns(self.dates[lo + 1:hi].copy(), tuple(names), values, prices)


# ---------------------------------------------------------------------------------------------
# Construction and validation
# ---------------------------------------------------------------------------------------------

def _check_prices(dates: np.ndarray, assets: Sequence[str], close: np.ndarray, min_days: int) -> None:
    if len(dates) < min_days:
        raise InvalidInputError(
            f"history: too little history, {len(dates)} dates, need at least {min_days}"
        )
    if len(dates) > 1:
        step = np.diff(dates.astype(np.int64))
        bad = np.flatnonzero(step <= 0)
        if bad.size:
            i = int(bad[0])
            what = "duplicate date" if step[i] == 0 else "dates not sorted"
            raise InvalidInputError(
                f"date: {what}: row {i + 1} ({dates[i + 1]}) follows row {i} ({dates[i]})"
            )
    with np.errstate(invalid="ignore"):
        seen = np.maximum.accumulate(~np.isnan(close), axis=0)
        gap = seen & np.isnan(close)
        inf = np.isinf(close)
        nonpos = np.isfinite(close) & (close <= 0)
    for mask, what in ((inf, "price must be finite"), (nonpos, "price must be > 0"),
                       (gap, "missing price after the asset's first day")):
        if mask.any():
            t, j = (int(v) for v in np.argwhere(mask)[0])
            raise InvalidInputError(
                f"close: {what}: asset {assets[j]!r} on {dates[t]} has {close[t, j]!r}"
            )
    empty = ~seen[-1] if len(dates) else np.ones(len(assets), bool)
    if np.any(empty):
        j = int(np.flatnonzero(empty)[0])
        raise InvalidInputError(f"close: asset {assets[j]!r} has no price")


def history_from_wide(dates: Any, assets: Sequence[str], close: Any, *, source: str = "",
                      min_days: int = 2) -> PriceHistory:
    """Build a :class:`PriceHistory` from a date column and a (T, A) matrix of closes.

    NaN is allowed only before an asset's first price. Dates must be strictly increasing.
    """
    days = _as_days(dates, "date").ravel()
    names = tuple(str(a) for a in assets)
    if len(set(names)) != len(names):
        raise InvalidInputError(f"assets: duplicate asset names in {names}")
    mat = np.asarray(close)
    if mat.dtype.kind not in "fiu" or mat.dtype.kind == "b":
        raise InvalidTypeError(f"close: expected numbers, got dtype {mat.dtype}")
    mat = np.array(mat, dtype=np.float64, copy=True)
    if mat.ndim == 1:
        mat = mat[:, None]
    if mat.shape != (len(days), len(names)):
        raise InvalidInputError(
            f"close: shape {mat.shape} does not match {len(days)} dates x {len(names)} assets"
        )
    _check_prices(days, names, mat, min_days)
    return PriceHistory(days.copy(), names, np.ascontiguousarray(mat), source)


def history_from_long(dates: Any, assets: Any, close: Any, *, source: str = "",
                      min_days: int = 2) -> PriceHistory:
    """Build a :class:`PriceHistory` from long records (one row per date and asset).

    Every record must carry a finite, positive close; a repeated (date, asset) pair is an error.
    Assets keep the order in which they first appear.
    """
    days = _as_days(dates, "date").ravel()
    names = np.asarray(assets, dtype=object).ravel()
    values = np.asarray(close)
    if values.dtype.kind not in "fiu" or values.dtype.kind == "b":
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidTypeError(f"close: expected numbers, got dtype {values.dtype}") from None
    values = values.astype(np.float64).ravel()
    if not (len(days) == len(names) == len(values)):
        raise InvalidInputError(
            f"long history: date has {len(days)} rows, asset {len(names)}, close {len(values)}"
        )
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"close: price must be finite and > 0: asset {names[i]!r} on {days[i]} "
            f"(row {i}) has {values[i]!r}"
        )
    order_assets: list[str] = list(dict.fromkeys(str(a) for a in names))
    col = {a: j for j, a in enumerate(order_assets)}
    col_idx = np.fromiter((col[str(a)] for a in names), dtype=np.int64, count=len(names))
    uniq, row_idx = np.unique(days, return_inverse=True)
    key = row_idx * len(order_assets) + col_idx
    if np.unique(key).size != key.size:
        srt = np.sort(key, kind="stable")
        dup = srt[np.flatnonzero(np.diff(srt) == 0)[0]]
        raise InvalidInputError(
            f"date: duplicate record for asset {order_assets[dup % len(order_assets)]!r} "
            f"on {uniq[dup // len(order_assets)]}"
        )
    mat = np.full((len(uniq), len(order_assets)), np.nan)
    mat[row_idx, col_idx] = values
    _check_prices(uniq, tuple(order_assets), mat, min_days)
    return PriceHistory(uniq, tuple(order_assets), mat, source)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a history CSV (UTF-8; blank rows skipped; repeated columns refused)."""
    header, cols = read_csv(path, case_sensitive=False, skip_blank=True)
    rows = [list(r) for r in zip(*cols)] if cols else []
    return header, [r for r in rows if any(c.strip() for c in r)]


_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def _to_float(text: str, where: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na", "null", "none"):
        return np.nan
    if "," in text:
        # 1,234.5 is a thousands separator; 1,5 (a decimal comma) must not silently read as 15
        if not _THOUSANDS.fullmatch(text):
            raise InvalidInputError(f"close: cannot read {text!r} as a number ({where}); "
                                    "write a decimal point, not a decimal comma")
        text = text.replace(",", "")
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"close: cannot read {text!r} as a number ({where})") from None


def _from_columns(header: list[str], columns: dict[str, Any], source: str, min_days: int,
                  date_col: str, asset_col: str, close_col: str) -> PriceHistory:
    lower = {h.lower(): h for h in header}
    if date_col.lower() not in lower:
        raise InvalidInputError(f"{source}: no {date_col!r} column (columns: {', '.join(header)})")
    dcol = lower[date_col.lower()]
    if asset_col.lower() in lower:  # long format
        if close_col.lower() not in lower:
            raise InvalidInputError(f"{source}: long format needs a {close_col!r} column")
        assets = columns[lower[asset_col.lower()]]
        text_column(list(assets), "json", asset_col, source, lambda i: f"row {i + 1}")
        return _with_source(source, lambda: history_from_long(
            columns[dcol], assets, _prices(columns[lower[close_col.lower()]], close_col, source),
            source=source, min_days=min_days))
    assets = [h for h in header if h != dcol]
    if not assets:
        raise InvalidInputError(f"{source}: wide format needs one price column per asset")
    mat = np.column_stack([_prices(columns[a], a, source) for a in assets])
    return _with_source(source, lambda: history_from_wide(columns[dcol], assets, mat, source=source,
                                                          min_days=min_days))


def _prices(values: Any, column: str, source: str) -> np.ndarray:
    """Float prices of a column (NaN = missing); a value that is not a number names the row."""
    arr = np.asarray(values) if not isinstance(values, list) else None
    if arr is not None and arr.dtype.kind in "fiu":
        return arr.astype(np.float64)
    vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return number_column(vals, "json", column, source, lambda i: f"row {i + 1}", required=False,
                         finite=False)[0]


def _with_source(source: str, build: Any) -> Any:
    try:
        return build()
    except DPMError as exc:
        if str(exc).startswith(source):
            raise
        raise type(exc)(f"{source}: {exc}") from None


def load_history(path: str | os.PathLike | None = None, *, min_days: int = 2,
                 date_col: str = "date", asset_col: str = "asset",
                 close_col: str = "close") -> PriceHistory:
    """Load a daily price history.

    Parameters
    ----------
    path : path-like, optional
        ``None`` loads the bundled BTC/ETH/USDT history (see the module docstring for its source).
        A ``.csv`` file is read either in **long** format (columns ``date, asset, close``, other
        columns ignored) or in **wide** format (a ``date`` column and one close column per asset;
        empty cells allowed only before an asset's first price). A ``.parquet``/``.pq`` file is read
        with pyarrow (or pandas) in the same two layouts.
    min_days : int
        Minimum number of dates.
    date_col, asset_col, close_col : str
        Column names (case-insensitive).

    Returns
    -------
    PriceHistory

    Raises
    ------
    InvalidInputError
        Missing file or columns, unreadable numbers, NaN/inf/non-positive prices (naming the asset
        and date), unsorted or duplicate dates, too little history.
    """
    if path is None:
        return _bundled()
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        header, columns = _read_parquet(p)
    else:
        header, rows = _read_csv(p)
        if date_col.lower() not in (h.lower() for h in header):
            raise InvalidInputError(f"{p}: no {date_col!r} column (columns: {', '.join(header)})")
        columns = {}
        width = len(header)
        for i, r in enumerate(rows):
            if len(r) != width:
                raise InvalidInputError(f"{p}: row {i + 1} has {len(r)} fields, header has {width}")
        lower = [h.lower() for h in header]
        for j, h in enumerate(header):
            col = [r[j] for r in rows]
            if lower[j] in (date_col.lower(), asset_col.lower()):
                columns[h] = [c.strip() for c in col]
            elif asset_col.lower() in lower and lower[j] != close_col.lower():
                columns[h] = col  # long format: other columns unused
            else:
                columns[h] = [_to_float(c, f"column {h!r}, row {i + 1}") for i, c in enumerate(col)]
        if asset_col.lower() in lower:
            header = [h for h in header if h.lower() in
                      (date_col.lower(), asset_col.lower(), close_col.lower())]
    return _from_columns(header, columns, str(p), min_days, date_col, asset_col, close_col)


def _read_parquet(p: Path) -> tuple[list[str], dict[str, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq  # lazy: optional dependency
    except ImportError:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("reading Parquet needs pyarrow or pandas (pip install pyarrow)") from None
        try:
            frame = pd.read_parquet(p)
        except Exception as exc:  # any failure to decode these bytes: not valid Parquet
            raise InvalidInputError(f"{p}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        header = check_header([str(c) for c in frame.columns], str(p), case_sensitive=False)
        return [h for h in header if h], {h: frame.iloc[:, j].to_numpy() for j, h in enumerate(header) if h}
    data = read_bytes(p)
    try:
        # ParquetFile.read, not read_table: the dataset reader fails on a repeated column name
        table = pq.ParquetFile(pa.BufferReader(data)).read()
        names = list(table.column_names)  # decoding the names may fail too (bytes not UTF-8)
    except Exception as exc:  # any failure to decode these bytes: not valid Parquet
        msg = " ".join(str(exc).splitlines())[:200]
        raise InvalidInputError(f"{p}: not a readable Parquet file ({type(exc).__name__}: {msg})") from None
    header = check_header(names, str(p), case_sensitive=False)
    cols: dict[str, Any] = {}
    for j, name in enumerate(header):
        if not name:
            continue
        col = table.column(j)
        t = col.type
        try:
            if pa.types.is_timestamp(t) or pa.types.is_date(t):
                arr = compute().cast(col, pa.timestamp("s"), safe=False).to_numpy(zero_copy_only=False)
                if np.isnat(arr).any():
                    i = int(np.flatnonzero(np.isnat(arr))[0])
                    raise InvalidInputError(f"{p}: {name} at row {i + 1} is missing")
                arr = arr.astype("datetime64[D]")
            elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
                arr = number_column(col, "parquet", name, str(p), required=False, finite=False)[0]
            else:
                arr = col.to_pylist()
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"{p}: {name}: cannot read the Parquet column of type {t} ({exc})") from None
        cols[name] = arr
    return [h for h in header if h], cols


@functools.lru_cache(maxsize=1)
def _bundled() -> PriceHistory:
    path = _BUNDLED
    if not path.exists():  # pragma: no cover - a broken installation
        raise MissingFileError(f"bundled history not found at {_BUNDLED}; reinstall dpm or pass a path")
    header, rows = _read_csv(path)
    idx = {h: j for j, h in enumerate(header)}  # the bundled file: known columns, validated below
    hist = history_from_long([r[idx["date"]] for r in rows], [r[idx["asset"]] for r in rows],
                             [float(r[idx["close"]]) for r in rows], source=str(path))
    return hist


# ---------------------------------------------------------------------------------------------
# Daily open/high/low/close of one asset (range-based volatility estimators)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OHLCHistory:
    """Daily open, high, low and close of one asset (read-only arrays of one length).

    The bundled data are UTC days: ``open`` at 00:00, ``close`` at 24:00, ``high``/``low`` the
    extremes in between, so ``ln(close[t] / close[t-1])`` spans the same day as the range.
    """

    dates: np.ndarray
    asset: str
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def __post_init__(self) -> None:
        for name in ("dates", "open", "high", "low", "close"):
            _freeze(getattr(self, name))

    def __len__(self) -> int:
        return len(self.dates)


def load_ohlc(asset: str, path: str | os.PathLike | None = None) -> OHLCHistory:
    """Open/high/low/close of ``asset`` from the bundled data or a long CSV with the columns
    ``date, asset, open, high, low, close`` (other columns ignored).

    Raises :class:`~dpm.errors.InvalidInputError` naming the date of a non-finite or non-positive
    price, of a high below the open/close or a low above them, and on unsorted or duplicate dates.
    """
    p = Path(path) if path is not None else _BUNDLED
    if not p.exists():
        raise InvalidInputError(f"path: no such file {str(p)!r}")
    header, rows = _read_csv(p)
    idx = {h.lower(): j for j, h in enumerate(header)}
    need = ("date", "asset", "open", "high", "low", "close")
    missing = [c for c in need if c not in idx]
    if missing:
        raise InvalidInputError(f"{p}: missing column(s) {missing} (columns: {', '.join(header)})")
    sel = [r for r in rows if r[idx["asset"]].strip() == asset]
    if not sel:
        raise InvalidInputError(f"asset: no rows for {asset!r} in {p}")
    days = _as_days([r[idx["date"]] for r in sel], "date")
    cols = {c: np.array([_to_float(r[idx[c]], f"column {c!r}, {asset} row {i + 1}") for i, r in enumerate(sel)])
            for c in ("open", "high", "low", "close")}
    order = np.argsort(days, kind="stable")
    days = days[order]
    cols = {c: v[order] for c, v in cols.items()}
    step = np.diff(days.astype(np.int64))
    if np.any(step <= 0):
        i = int(np.flatnonzero(step <= 0)[0])
        raise InvalidInputError(f"date: duplicate date {days[i + 1]} for {asset!r}")
    for c, v in cols.items():
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"{c}: price must be finite and > 0: {asset!r} on {days[i]} has {v[i]!r}")
    o, h, lo, c = cols["open"], cols["high"], cols["low"], cols["close"]
    bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"high/low: {asset!r} on {days[i]}: high {h[i]!r} / low {lo[i]!r} do not bracket "
            f"open {o[i]!r} and close {c[i]!r}")
    return OHLCHistory(days, asset, o, h, lo, c)
