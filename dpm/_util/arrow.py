"""pyarrow fast paths of the readers and writers (optional: every function here has a standard-library
twin in :mod:`dpm.portfolio.io`, and the two give the same results).

* **Reading** — :func:`read_csv_table`, :func:`read_parquet_table` and :func:`read_ipc_table` return the
  columns of a file as pyarrow columns, or ``None`` when the file is anything but plainly valid for
  the fast path (a quote character, a NUL byte, a UTF-16 byte-order mark, a repeated column, a row
  pyarrow cannot parse, ...). The caller then reads the file with the standard-library path, which
  names the exact problem (file, column, row); so both paths accept the same files and refuse them
  with the same message, and a bad file only costs a second read. :func:`factorize` turns a text
  column into its distinct values in order of first appearance and int64 codes, without a Python
  loop over rows.
* **Writing** — :func:`float_text` formats floats exactly as Python's ``repr`` (the shortest text
  that reads back to the same bits; pyarrow's formatter gives the same digits, and the few values
  whose layout differs are formatted by ``repr``), so the fast CSV and JSON writers produce the
  same bytes as the standard-library ones.

* **Kernels** — :func:`compute` calls pyarrow's compute kernels by name without importing
  ``pyarrow.compute`` (whose import takes longer than reading a large Parquet book).

pyarrow is imported inside the functions (about 0.2 s), so importing this module costs nothing.
"""
from __future__ import annotations

import codecs
import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dpm._util.files import check_header
from dpm.errors import InvalidInputError

__all__ = [
    "append_index",
    "arrow_available",
    "compute",
    "factorize",
    "float_text",
    "prefer_arrow",
    "read_csv_table",
    "read_ipc_table",
    "read_parquet_table",
    "text_cells",
    "numpy_array",
    "to_numpy",
    "without_pandas",
]

#: Below this many bytes (reading) or cells (writing) the standard-library path is faster than
#: importing pyarrow (about 0.2 s) unless pyarrow is imported already.
FAST_PATH_MIN_BYTES = 4_000_000
FAST_PATH_MIN_CELLS = 200_000

_AVAILABLE: bool | None = None
#: Off: every reader and writer takes its standard-library path (tests compare the two paths).
ENABLED = True


class _Kernels:
    """The pyarrow compute kernels dpm calls, by name through ``call_function``, with the options
    ``pyarrow.compute``'s wrappers of the same names pass (see :func:`compute`)."""

    def __init__(self, mod: Any) -> None:
        self._m = mod
        self._call = mod.call_function

    def _c(self, name: str, *args: Any, options: Any = None) -> Any:
        return self._call(name, list(args), options)

    def any(self, x: Any) -> Any:
        return self._c("any", x)

    def equal(self, x: Any, y: Any) -> Any:
        return self._c("equal", x, y)

    def match_substring(self, x: Any, pattern: str) -> Any:
        return self._c("match_substring", x, options=self._m.MatchSubstringOptions(pattern))

    def match_substring_regex(self, x: Any, pattern: str) -> Any:
        return self._c("match_substring_regex", x, options=self._m.MatchSubstringOptions(pattern))

    def starts_with(self, x: Any, pattern: str) -> Any:
        return self._c("starts_with", x, options=self._m.MatchSubstringOptions(pattern))

    def replace_substring(self, x: Any, pattern: str, replacement: str) -> Any:
        return self._c("replace_substring", x, options=self._m.ReplaceSubstringOptions(pattern, replacement))

    def if_else(self, cond: Any, x: Any, y: Any) -> Any:
        return self._c("if_else", cond, x, y)

    def cast(self, x: Any, target: Any, safe: bool = True) -> Any:
        opts = self._m.CastOptions.safe(target) if safe else self._m.CastOptions.unsafe(target)
        return self._c("cast", x, options=opts)

    def fill_null(self, x: Any, value: Any) -> Any:
        import pyarrow as pa

        if not isinstance(value, (pa.Array, pa.ChunkedArray, pa.Scalar)):
            value = pa.scalar(value, type=x.type)
        elif value.type != x.type:  # as pyarrow.compute.fill_null
            value = pa.scalar(value.as_py(), type=x.type)
        return self._c("coalesce", x, value)

    def is_null(self, x: Any) -> Any:
        return self._c("is_null", x)

    def count_distinct(self, x: Any) -> Any:
        return self._c("count_distinct", x)

    def unique(self, x: Any) -> Any:
        return self._c("unique", x)

    def index_in(self, x: Any, value_set: Any) -> Any:
        return self._c("index_in", x, options=self._m.SetLookupOptions(value_set))

    def replace_with_mask(self, x: Any, mask: Any, replacements: Any) -> Any:
        return self._c("replace_with_mask", x, mask, replacements)

    def binary_join_element_wise(self, *strings: Any) -> Any:
        return self._c("binary_join_element_wise", *strings)

    def filter(self, x: Any, mask: Any) -> Any:
        return self._c("filter", x, mask)

    def take(self, x: Any, indices: Any) -> Any:
        return self._c("take", x, indices)

    def dictionary_encode(self, x: Any, null_encoding: str = "mask") -> Any:
        return self._c("dictionary_encode", x, options=self._m.DictionaryEncodeOptions(null_encoding))

    def dictionary_decode(self, x: Any) -> Any:
        return self.take(x.dictionary, x.indices)


_KERNELS: _Kernels | None = None


def compute() -> _Kernels:
    """pyarrow's compute kernels that dpm uses, without importing ``pyarrow.compute``.

    ``import pyarrow.compute`` builds a Python wrapper and a docstring for each of pyarrow's ~300
    kernels: 120-180 ms on a 2-vCPU host, about what reading a 3.8 M-position Parquet book takes.
    The kernels are the same either way: they are called by name through ``call_function`` of the
    compiled module that ``pyarrow.compute`` re-exports (falling back to ``pyarrow.compute`` should a
    release move it). pyarrow's array methods that compute (``cast``, ``filter``, ``take``,
    ``dictionary_encode``, ``dictionary_decode``, ...) import ``pyarrow.compute``, so dpm calls
    these instead.
    """
    global _KERNELS
    if _KERNELS is None:
        try:
            import pyarrow._compute as mod

            for name in ("call_function", "CastOptions", "MatchSubstringOptions", "ReplaceSubstringOptions",
                         "SetLookupOptions", "DictionaryEncodeOptions"):
                getattr(mod, name)
        except (ImportError, AttributeError):  # pragma: no cover - a pyarrow that moved them
            import pyarrow.compute as mod
        _KERNELS = _Kernels(mod)
    return _KERNELS


@contextlib.contextmanager
def without_pandas() -> Iterator[None]:
    """Within the block, ``import pandas`` fails (unless pandas is imported already).

    pyarrow imports pandas, when it is installed, on its first ``pa.array``, ``pa.scalar``,
    ``to_numpy`` or compute call with a Python value, to recognise pandas objects and missing values
    (its C++ converters retry the import on every call until it succeeds): 0.46-0.6 s on a 2-vCPU
    host with pandas 3.1, more than reading a 3.8 M-position Parquet file. The command-line tool
    hands pyarrow no pandas objects and uses no pandas itself, so it runs its commands in this block;
    pyarrow then works as it does where pandas is not installed. A library user's process is left
    as it is.
    """
    if "pandas" in sys.modules:
        yield
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


class _NoPandas:
    """Import finder of :func:`without_pandas`: pandas is not found (a None in ``sys.modules``
    would not do: Cython's import, pyarrow's, takes it for the module)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (not imported by dpm's command-line tool)",
                                      name=name)


def numpy_array(arr: np.ndarray, mask: np.ndarray | None = None) -> Any:
    """pyarrow array of a 1-d numeric or boolean numpy array (``mask``: True = null), zero-copy for
    numbers. ``pa.array`` does the same but first tests for a masked array, which imports
    ``numpy.ma`` (25-35 ms) in a process that had none."""
    import pyarrow as pa

    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # pyarrow's buffers: this machine's order
    n = len(arr)
    validity = None
    nulls = 0
    if mask is not None and mask.any():
        validity = pa.py_buffer(np.packbits(~np.asarray(mask, dtype=bool), bitorder="little"))
        nulls = int(np.count_nonzero(mask))
    if arr.dtype == np.bool_:
        return pa.Array.from_buffers(pa.bool_(), n, [validity, pa.py_buffer(np.packbits(arr, bitorder="little"))],
                                     null_count=nulls)
    return pa.Array.from_buffers(pa.from_numpy_dtype(arr.dtype), n, [validity, pa.py_buffer(arr)], null_count=nulls)


def arrow_available() -> bool:
    """Whether pyarrow can be imported (checked once, without importing it)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = importlib.util.find_spec("pyarrow") is not None
    return _AVAILABLE


def prefer_arrow(size: int, threshold: int) -> bool:
    """Use the pyarrow path for ``size`` bytes/cells: pyarrow is installed, and it is imported already
    or the input is large enough to pay for the import."""
    return ENABLED and arrow_available() and ("pyarrow" in sys.modules or size >= threshold)


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------
def _first_line(data: bytes, start: int) -> bytes:
    ends = [i for i in (data.find(b"\n", start), data.find(b"\r", start)) if i >= 0]
    return data[start: min(ends)] if ends else data[start:]


def read_csv_table(data: bytes, source: str, *, dictionary: Sequence[str] = (),
                   numbers: Sequence[str] = ()) -> dict[str, Any] | None:
    """Named columns of CSV ``data`` read by pyarrow, or None (see the module docs).

    Columns named in ``dictionary`` come back as dictionary-encoded text, in ``numbers`` as float64
    (a cell pyarrow cannot parse as a number, or reads as null, makes the caller fall back), all
    others as text; every column is checked to be UTF-8. Header names are stripped of surrounding
    white space and unnamed columns dropped, as :func:`dpm._util.files.parse_csv` does.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    # the standard-library reader's quoting and blank-line rules are its own: leave such files to it
    if b'"' in data or b"\x00" in data or data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None
    try:
        raw = _first_line(data, start).decode("utf-8").split(",")
        names = check_header(raw, source)
    except (UnicodeDecodeError, InvalidInputError):
        return None
    if len(raw) < 2 or not any(names):  # one column: blank lines are rows there; leave it to the other path
        return None
    types = {}
    for r, n in zip(raw, names):
        types[r] = (pa.dictionary(pa.int32(), pa.string()) if n in dictionary
                    else pa.float64() if n in numbers else pa.string())
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data)[start:] if start else pa.py_buffer(data),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=",", quote_char=False, double_quote=False,
                                             escape_char=False, newlines_in_values=False,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=types, check_utf8=True, strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False),
        )
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None
    if table.num_columns != len(raw) or _may_have_blank_lines(table):
        return None
    return {n: table.column(j) for j, n in enumerate(names) if n}


def _may_have_blank_lines(table: Any) -> bool:
    """Whether the CSV just read may have had a blank line, which pyarrow reads as a row of empty
    cells and the standard-library reader skips: only if every column has an empty cell. Looked for
    in the columns, cheapest first, rather than in the text: searching 134 MB of text for the three
    two-byte line-break pairs took 0.45 s, counting a float column's nulls takes nothing."""
    import pyarrow as pa

    pc = compute()

    def empty(col: Any) -> bool:
        if pa.types.is_floating(col.type):
            return col.null_count > 0
        if pa.types.is_dictionary(col.type):  # an empty cell is in the (small) dictionary of its chunk
            return any(pc.any(pc.equal(c.dictionary, "")).as_py() for c in col.chunks)
        return bool(pc.any(pc.equal(col, "")).as_py())

    cols = sorted(table.columns, key=lambda c: (not pa.types.is_floating(c.type), not pa.types.is_dictionary(c.type)))
    return all(empty(c) for c in cols)


def read_parquet_table(data: bytes, source: str, *, dictionary: Sequence[str] = ()) -> dict[str, Any] | None:
    """Named columns of Parquet ``data`` (text columns in ``dictionary`` read dictionary-encoded when
    the file stores them so), or None when pyarrow cannot read the file or a column name repeats."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(pa.BufferReader(data)).schema_arrow.names
        stripped = check_header(names, source)
        want = [n for n, s in zip(names, stripped) if s in dictionary]
        table = pq.ParquetFile(pa.BufferReader(data), read_dictionary=want or None).read(use_threads=True)
    except Exception:  # noqa: BLE001 - any failure: the standard-library path names it
        return None
    if table.column_names != names:
        return None
    return {s: table.column(j) for j, s in enumerate(stripped) if s}


def read_ipc_table(data: bytes, source: str) -> Any:
    """pyarrow table of Arrow IPC ``data`` (the file format, also written as Feather v2, or the stream
    format); an unreadable file raises :class:`InvalidInputError` naming it."""
    import pyarrow as pa

    try:
        try:
            table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
        table.column_names  # noqa: B018 - decoding the names may fail too
    except Exception as exc:  # noqa: BLE001 - any failure to decode these bytes: not valid Arrow IPC
        msg = " ".join(str(exc).splitlines())[:200]
        raise InvalidInputError(f"{source}: not a readable Arrow IPC file ({type(exc).__name__}: {msg})") from None
    return table


def is_text_type(t: Any) -> bool:
    """A string column, or a dictionary of strings."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def factorize(col: Any, ordered: bool = True) -> tuple[Any, np.ndarray]:
    """``(distinct values in order of first appearance as a pyarrow array, int64 code of every row)``
    of a pyarrow text column (plain or dictionary-encoded, any chunking; a null is a value too).
    ``ordered=False``: the distinct values in any order (a dictionary column is then not renumbered,
    two passes over its rows fewer)."""
    import pyarrow as pa

    pc = compute()
    if col.num_chunks == 0 or len(col) == 0:
        return pa.array([], type=pa.string()), np.zeros(0, dtype=np.int64)
    if pa.types.is_dictionary(col.type) and any(c.dictionary.null_count for c in col.chunks):
        # a null among a dictionary's values (pyarrow cannot unify those): as plain text
        col = pa.chunked_array([pc.dictionary_decode(c) for c in col.chunks], type=col.type.value_type)
    if not pa.types.is_dictionary(col.type):
        # one hash table over all chunks: its dictionary is already in order of first appearance
        enc = pc.dictionary_encode(col, null_encoding="encode")
        values = enc.chunk(enc.num_chunks - 1).dictionary
        return values, to_numpy(pa.chunked_array([c.indices for c in enc.chunks]), np.int64)
    first = col.chunk(0).dictionary
    if all(c.dictionary.equals(first) for c in col.chunks[1:]) and pc.count_distinct(first).as_py() == len(first):
        # every chunk has the same dictionary of distinct values (a file written from one
        # dictionary stores all of it in each row group): its codes are common already; unifying
        # would hash every chunk's dictionary again (65-85 ms for 4 x 100,000 account ids)
        unified = col
    else:
        unified = pa.table({"c": col}).unify_dictionaries().column(0)
    values = unified.chunk(0).dictionary
    indices = pa.chunked_array([c.indices for c in unified.chunks])
    if indices.null_count:  # a null in a dictionary column: code it after the dictionary's values
        indices = pc.fill_null(indices, len(values))
        values = pa.concat_arrays([values, pa.nulls(1, values.type)])
    codes = to_numpy(indices, np.int64)
    if not ordered:
        return values, codes
    # the dictionary a file stores need not be in order of appearance: renumber by first appearance
    order = pc.unique(indices)
    if len(order) == len(values) and (to_numpy(order, np.int64) == np.arange(len(values))).all():
        return values, codes
    lut = np.empty(len(values), dtype=np.int64)
    lut[to_numpy(order, np.int64)] = np.arange(len(order), dtype=np.int64)
    return pc.take(values, order), lut[codes]


def append_index(first: Any, then: Any) -> tuple[Any, np.ndarray]:
    """``(first followed by the values of then not in first, index of every value of then in it)``
    for two pyarrow arrays of distinct values."""
    import pyarrow as pa

    pc = compute()
    idx = to_numpy(pc.fill_null(pc.index_in(then, value_set=first), -1), np.int64)
    new = idx < 0
    if not new.any():
        return first, idx
    idx[new] = len(first) + np.arange(int(new.sum()), dtype=np.int64)
    return pa.concat_arrays([pc.cast(first, pa.string()), pc.cast(pc.filter(then, numpy_array(new)), pa.string())]), idx


def _chunk_numpy(arr: Any) -> np.ndarray:
    """One pyarrow array as numpy: a zero-copy view of its data buffer when it is an integer or float
    array without nulls (pyarrow's ``to_numpy`` imports pandas on every call when it is installed,
    0.5 s the first time; see :func:`without_pandas`), else ``to_numpy``."""
    import pyarrow as pa

    t = arr.type
    kind = ("f" if pa.types.is_floating(t) else "i" if pa.types.is_signed_integer(t)
            else "u" if pa.types.is_unsigned_integer(t) else None)
    if kind is None or arr.null_count or len(arr) == 0:
        return arr.to_numpy(zero_copy_only=False)
    data = arr.buffers()[1]
    # pyarrow's arrays are in the machine's byte order (a file's is converted on reading); a slice
    # keeps its parent's buffer and an offset into it
    view = np.frombuffer(data, dtype=np.dtype(f"={kind}{t.bit_width // 8}"), count=arr.offset + len(arr))
    if data.parent is not None and data.parent.size >= 1.5 * data.size:
        # a slice of a larger buffer (an Arrow IPC record batch read into memory): a view would keep all of it
        # alive for as long as the array lives
        return view[arr.offset:].copy()
    view.flags.writeable = False  # pyarrow's memory, read-only as pyarrow's own view
    return view[arr.offset:]


def to_numpy(col: Any, dtype: Any) -> np.ndarray:
    """A pyarrow column without nulls as one numpy array of ``dtype`` (zero-copy when it can be)."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            col = col.chunk(0)
        elif col.num_chunks == 0:
            return np.zeros(0, dtype=dtype)
        else:
            return np.concatenate([np.asarray(_chunk_numpy(c), dtype=dtype) for c in col.chunks])
    return np.asarray(_chunk_numpy(col), dtype=dtype)


# ----------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------
def float_text(arr: np.ndarray) -> Any:
    """pyarrow string array of ``repr(float(v))`` for every value, null for NaN.

    pyarrow prints the same shortest round-trip digits as ``repr`` but switches to exponent notation
    at other magnitudes (below about 1e-6 and from 1e10 on; ``repr`` below 1e-4 and from 1e16 on)
    and leaves ``.0`` off whole numbers. Values in the magnitude bands where the two layouts can
    differ are formatted by ``repr`` (outside them every exponent has two digits, as ``repr`` writes
    it) and whole numbers get their ``.0``: the result is ``repr``'s, byte for byte (tests compare
    millions of values across every magnitude).
    """
    import pyarrow as pa

    pc = compute()
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    nan = np.isnan(arr)
    text = pc.cast(numpy_array(arr, nan), pa.string())
    a = np.abs(arr)
    with np.errstate(invalid="ignore"):
        odd = ((a >= 1e-9) & (a < 1e-4)) | ((a >= 1e9) & (a < 1e17))
        whole = (a < 1e9) & (arr == np.trunc(arr))  # NaN and inf compare False
    if whole.any():
        mask = numpy_array(whole)
        text = pc.replace_with_mask(text, mask, pc.binary_join_element_wise(pc.filter(text, mask), ".0", ""))
    if odd.any():
        text = pc.replace_with_mask(text, numpy_array(odd), pa.array([repr(v) for v in arr[odd].tolist()]))
    return text


_FORMULA_CELL = r"^'*[=+\-@\t\r]"  # dpm._util.fields.escape_text: a spreadsheet would evaluate it
_NEEDS_QUOTES = '[,"\n\r]'


def text_cells(col: Any, *, csv: bool) -> Any:
    """pyarrow string array of text cells: for CSV with the formula escape of
    :func:`dpm._util.fields.escape_text` (a leading ``'``); nulls stay null."""
    if not csv:
        return col
    pc = compute()
    hit = pc.match_substring_regex(col, _FORMULA_CELL)
    if pc.any(hit).as_py():
        col = pc.if_else(hit, pc.binary_join_element_wise("'", col, ""), col)
    return col


def csv_quote(col: Any) -> Any:
    """RFC 4180 quoting of the cells that need it (a comma, quote or line break)."""
    pc = compute()
    need = pc.match_substring_regex(col, _NEEDS_QUOTES)
    if not pc.any(need).as_py():
        return col
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(col, '"', '""'), '"', "")
    return pc.if_else(need, quoted, col)


def joined_rows(cells: Sequence[Any], sep: str, end: str) -> Any:
    """``sep``-joined cells of every row, each row followed by ``end``, as one pyarrow buffer
    (``cells`` are string arrays without nulls, short enough for 32-bit offsets)."""
    import pyarrow as pa

    pc = compute()
    rows = pc.binary_join_element_wise(*cells, sep) if len(cells) > 1 else cells[0]
    rows = pc.binary_join_element_wise(rows, "", end)  # appends ``end`` to every row
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    buffers = rows.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32 if rows.type == pa.string() else np.int64)
    lo, hi = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
    return buffers[2].slice(lo, hi - lo) if len(rows) and hi > lo else pa.py_buffer(b"")
