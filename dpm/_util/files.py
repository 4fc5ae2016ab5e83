"""Reading text files strictly and writing files atomically.

Readers take UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one) and refuse
anything else with a message that names the file, the byte offset and the line of the first byte
that is not UTF-8, so that a Latin-1 or UTF-16 export is reported as such instead of as a missing
column or a bare ``UnicodeDecodeError``.

Writers never leave a partial file: they write to a temporary file in the destination directory
and rename it over the destination only when everything was written (``os.replace`` is atomic on
POSIX and Windows within one file system). On failure the temporary file is removed and an existing
destination is left as it was.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dpm.errors import InvalidInputError, MissingFileError

__all__ = [
    "atomic_path",
    "atomic_paths",
    "check_header",
    "decode_utf8",
    "load_json",
    "parse_csv",
    "read_bytes",
    "read_csv",
    "read_text",
]

PathLike = str | os.PathLike


def read_bytes(path: PathLike) -> bytes:
    """Bytes of a file; a missing or unreadable file raises a dpm error naming it."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise MissingFileError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{p}: is a directory, not a file") from None
    except PermissionError:
        raise InvalidInputError(f"{p}: permission denied") from None
    except OSError as exc:
        raise InvalidInputError(f"{p}: cannot read ({exc.strerror or exc})") from None


def decode_utf8(data: bytes, source: str) -> str:
    """UTF-8 text of ``data`` without a leading byte-order mark; other encodings are refused."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InvalidInputError(
            f"{source}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); dpm reads UTF-8 "
            "text: save it as UTF-8 (Excel: 'CSV UTF-8')"
        )
    nul = data.find(b"\x00")
    if nul >= 0:  # valid UTF-8, but no text file has NUL bytes: UTF-16/32 without a byte-order mark
        line = data.count(b"\n", 0, nul) + 1
        raise InvalidInputError(
            f"{source}: not UTF-8 text: byte 0x00 at offset {nul} (line {line}); NUL bytes mean UTF-16 "
            "without a byte-order mark or a binary file; save the file as UTF-8 (Excel: 'CSV UTF-8')"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line = data.count(b"\n", 0, offset) + 1
        byte = data[offset]
        raise InvalidInputError(
            f"{source}: not UTF-8 text: byte 0x{byte:02x} at offset {offset} (line {line}) is not valid "
            "UTF-8 (Latin-1 / Windows-1252 text looks like this); save the file as UTF-8 (Excel: 'CSV UTF-8')"
        ) from None


def read_text(path: PathLike) -> str:
    """Text of a UTF-8 file (a byte-order mark is dropped; other encodings raise, see module docs)."""
    return decode_utf8(read_bytes(path), os.fspath(path))


def check_header(header: Sequence[str], source: str, *, case_sensitive: bool = True) -> list[str]:
    """Header names with surrounding white space removed; a repeated name is refused.

    A repeated column would otherwise silently shadow the other one (``csv.DictReader`` keeps the
    last); ``case_sensitive=False`` for readers that look columns up ignoring case. Unnamed columns
    (``""``, such as the index column pandas writes) are allowed: readers ignore them.
    """
    names = [h.strip() for h in header]
    seen: dict[str, int] = {}
    for j, h in enumerate(names):
        if not h:
            continue
        key = h if case_sensitive else h.lower()
        if key in seen:
            raise InvalidInputError(
                f"{source}: column {h!r} appears twice in the header (columns {seen[key] + 1} and {j + 1}); "
                "rename or remove one"
            )
        seen[key] = j
    return names


def parse_csv(text: str, source: str, *, case_sensitive: bool = True,
              skip_blank: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and columns (lists of cell text) of CSV ``text`` (RFC 4180: ``,`` and ``"``).

    Trailing empty lines are dropped, and with ``skip_blank`` every empty line; every other row must
    have as many fields as the header (a row with one empty field is written ``""``).
    Only ``\\n``, ``\\r\\n`` and ``\\r`` end a line (not the other Unicode line separators).
    """
    if not text.strip():
        raise InvalidInputError(f"{source}: empty file (no header)")
    if '"' not in text and "\r" not in text:
        # no quoting anywhere: split in C instead of the csv module's per-field state machine
        lines = text.split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        header = check_header(lines[0].split(","), source, case_sensitive=case_sensitive)
        k = len(header)
        body = [line for line in lines[1:] if line] if skip_blank else lines[1:]
        counts = [line.count(",") for line in body]
        if any(c != k - 1 for c in counts):
            i = next(i for i, c in enumerate(counts) if c != k - 1)
            raise InvalidInputError(f"{source}: row {i + 1} has {counts[i] + 1} fields, the header has {k}")
        flat = ",".join(body).split(",") if body else []
        return _named(header, [flat[j::k] for j in range(k)])
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InvalidInputError(f"{source}: malformed CSV at line {reader.line_num}: {exc}") from None
    while rows and not rows[-1]:
        rows.pop()
    if skip_blank:
        rows = [r for r in rows if r]
    rows = [r if r else [""] for r in rows]  # a blank line is one empty field, as in the fast path
    if not rows:
        raise InvalidInputError(f"{source}: empty file (no header)")
    header = check_header(rows[0], source, case_sensitive=case_sensitive)
    k = len(header)
    for i, r in enumerate(rows[1:]):
        if len(r) != k:
            raise InvalidInputError(f"{source}: row {i + 1} has {len(r)} fields, the header has {k}")
    return _named(header, [[r[j] for r in rows[1:]] for j in range(k)])


def _named(header: list[str], columns: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Drop unnamed columns (see :func:`check_header`)."""
    if all(header):
        return header, columns
    keep = [j for j, h in enumerate(header) if h]
    return [header[j] for j in keep], [columns[j] for j in keep]


def read_csv(path: PathLike, *, case_sensitive: bool = True,
             skip_blank: bool = False) -> tuple[list[str], list[list[str]]]:
    """:func:`parse_csv` of a UTF-8 file (see :func:`read_text`)."""
    return parse_csv(read_text(path), os.fspath(path), case_sensitive=case_sensitive, skip_blank=skip_blank)


def _no_constant(token: str) -> float:
    raise ValueError(f"{token} is not a JSON number (JSON has no NaN or Infinity; use null)")


def load_json(path: PathLike) -> object:
    """Parsed JSON of a UTF-8 file; invalid JSON, ``NaN``/``Infinity`` and repeated keys are refused."""
    source = os.fspath(path)
    text = read_text(path)

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"key {k!r} appears twice in one object")
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{source}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:  # raised by the hooks above
        raise InvalidInputError(f"{source}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInputError(f"{source}: JSON nested too deeply") from None


_UMASK: int | None = None


def _file_mode() -> int:
    """Permission bits a newly created file gets (0o666 minus the process umask)."""
    global _UMASK
    if _UMASK is None:
        # the only portable way to read the umask is to set it; done once, before any thread of ours runs
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_paths(paths: Sequence[PathLike]) -> Iterator[list[Path]]:
    """Temporary paths next to ``paths``; all are renamed onto ``paths`` when the block succeeds.

    If the block raises, every temporary file is removed and no destination is touched. The
    temporary files are hidden (``.name.XXXX.tmp``) and created in the destination directory so
    that the final rename is atomic.
    """
    dests = [Path(p) for p in paths]
    if len({os.path.abspath(d) for d in dests}) != len(dests):
        raise InvalidInputError(f"paths: the same output file is given twice in {[str(d) for d in dests]}")
    temps: list[Path] = []
    try:
        for d in dests:
            directory = d.parent if str(d.parent) else Path(".")
            try:
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{d.name}.", suffix=".tmp")
            except FileNotFoundError:
                raise InvalidInputError(f"{d}: directory {str(directory)!r} does not exist") from None
            except OSError as exc:
                raise InvalidInputError(f"{d}: cannot create a file in {str(directory)!r} "
                                        f"({exc.strerror or exc})") from None
            os.close(fd)
            temps.append(Path(tmp))
        yield list(temps)
        mode = _file_mode()
        for t, d in zip(temps, dests):
            os.chmod(t, mode)
            os.replace(t, d)
    finally:
        for t in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """One-file form of :func:`atomic_paths`."""
    with atomic_paths([path]) as temps:
        yield temps[0]
