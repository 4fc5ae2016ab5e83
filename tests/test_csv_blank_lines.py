"""Blank lines in CSV files: the pyarrow reader leaves every file that may have one to the
standard-library reader (which skips them), so both paths read the same books.

The fast path looks for blank lines in the columns it read (a blank line is a row of empty cells
there) instead of searching the text; these tests hold it to the old text search.
"""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from dpm._util import arrow as _arrow  # noqa: E402
from dpm.errors import InvalidInputError  # noqa: E402
from dpm.market.sample import default_instruments  # noqa: E402
from dpm.portfolio import io  # noqa: E402
from dpm.portfolio.sample import generate_accounts  # noqa: E402

BLANK_LINE_STYLES = [
    b"h1,h2,h3\na,b,1\n\nc,d,2\n",            # LF files
    b"h1,h2,h3\r\na,b,1\r\n\r\nc,d,2\r\n",    # CRLF
    b"h1,h2,h3\ra,b,1\r\rc,d,2\r",            # CR
    b"h1,h2,h3\na,b,1\n\r\nc,d,2\n",          # mixed: LF then CRLF
    b"h1,h2,h3\n\na,b,1\n",                   # right after the header
    b"h1,h2,h3\na,b,1\nc,d,2\n\n",            # at the end
]


def _text_search(data: bytes) -> bool:
    """The old test: a blank line is one of these pairs of line breaks."""
    return b"\n\n" in data or b"\r\r" in data or b"\n\r" in data


@pytest.mark.parametrize("data", BLANK_LINE_STYLES)
@pytest.mark.parametrize("numbers", [("h3",), ()])
@pytest.mark.parametrize("dictionary", [("h1",), ()])
def test_files_with_a_blank_line_go_to_the_standard_reader(data, numbers, dictionary):
    assert _text_search(data)
    assert _arrow.read_csv_table(data, "f.csv", dictionary=dictionary, numbers=numbers) is None


@pytest.mark.parametrize("data", [
    b"h1,h2,h3\na,,1\n,b,2\n",   # empty cells, but no row of them
    b"h1,h2,h3\r\na,b,\r\nc,,2\r\n",
    b"h1,h2\nx,\nz,y\n",
])
def test_empty_cells_alone_stay_on_the_fast_path(data):
    numbers = ("h3",) if b"h3" in data and b",\r\n" not in data else ()
    got = _arrow.read_csv_table(data, "f.csv", numbers=numbers)
    assert not _text_search(data) and got is not None
    assert len(next(iter(got.values()))) == 2


def test_empty_cells_in_every_column_are_left_to_the_standard_reader_too():
    # no blank line, but the columns cannot tell: the standard reader decides
    assert _arrow.read_csv_table(b"h1,h2\na,b\n,\n", "f.csv") is None
    assert _arrow.read_csv_table(b"h1,h2\nx,\n,y\n", "f.csv") is None


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_accounts_with_blank_lines_get_the_same_answer_on_both_paths(tmp_path, eol, monkeypatch):
    """A positions file with blank lines is refused by the standard reader (naming the row); the
    pyarrow path must not read it as a book."""
    table = default_instruments()
    book = generate_accounts(3_000, table, seed=5)
    path = tmp_path / "book.csv"
    io.write_accounts(book, path)
    lines = path.read_bytes().split(b"\n")
    monkeypatch.setattr(_arrow, "FAST_PATH_MIN_BYTES", 0)  # the pyarrow path whatever the size
    path.write_bytes(eol.join(lines))
    assert io.read_accounts(path, table).equals(book)  # the same file without blank lines reads
    path.write_bytes(eol.join(lines[:50] + [b""] + lines[50:900] + [b"", b""] + lines[900:]))
    with pytest.raises(InvalidInputError) as fast:
        io.read_accounts(path, table)
    monkeypatch.setattr(_arrow, "ENABLED", False)
    with pytest.raises(InvalidInputError) as slow:
        io.read_accounts(path, table)
    assert str(fast.value) == str(slow.value) and "row 50 has 1 fields" in str(slow.value)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_account_order_from_the_collateral_file_on_both_paths(tmp_path, fmt, monkeypatch):
    """Accounts are numbered in order of first appearance in the collateral file, then in the
    positions file: a collateral file in another order (or missing accounts) renumbers the
    positions' accounts on the pyarrow path exactly as on the standard-library path."""
    table = default_instruments()
    book = generate_accounts(2_000, table, seed=9)
    io.write_accounts(book, tmp_path / f"book.{fmt}")
    # the collateral of every third account, accounts in reverse order
    ids = book.account_id[::-3]
    rows = [(a, c, float(book.collateral[book.index_of(a), j])) for a in ids for j, c in enumerate(book.currencies)]
    cols = {"account_id": np.array([r[0] for r in rows], dtype=object), "currency": np.array([r[1] for r in rows],
            dtype=object), "amount": np.array([r[2] for r in rows])}
    io.write_columns(tmp_path / f"book.collateral.{fmt}", cols, format=fmt)
    monkeypatch.setattr(_arrow, "FAST_PATH_MIN_BYTES", 0)
    fast = io.read_accounts(tmp_path / f"book.{fmt}", table)
    monkeypatch.setattr(_arrow, "ENABLED", False)
    slow = io.read_accounts(tmp_path / f"book.{fmt}", table)
    assert fast.equals(slow)
    assert fast.account_id[: len(ids)].tolist() == ids.tolist()  # collateral order first
    assert np.array_equal(fast.collateral, slow.collateral)
