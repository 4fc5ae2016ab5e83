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
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dpm.errors import InvalidInputError, MissingFileError

__all__ = ["atomic_path", "atomic_paths", "decode_utf8", "read_bytes", "read_text"]

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
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line = data.count(b"\n", 0, offset) + 1
        byte = data[offset]
        hint = ""
        if b"\x00" in data[:4096]:
            hint = " (NUL bytes: probably UTF-16 without a byte-order mark)"
        elif 0x80 <= byte <= 0xFF:
            hint = " (probably Latin-1 / Windows-1252)"
        raise InvalidInputError(
            f"{source}: not UTF-8 text: byte 0x{byte:02x} at offset {offset} (line {line}) is not valid "
            f"UTF-8{hint}; save the file as UTF-8 (Excel: 'CSV UTF-8')"
        ) from None


def read_text(path: PathLike) -> str:
    """Text of a UTF-8 file (a byte-order mark is dropped; other encodings raise, see module docs)."""
    return decode_utf8(read_bytes(path), os.fspath(path))


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
