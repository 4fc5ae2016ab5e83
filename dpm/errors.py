"""Exceptions raised by dpm.

Every error names the offending field, the row (instrument name, account id or array index) and the bad
value, so that a user can fix the input without a debugger.
"""
from __future__ import annotations

__all__ = [
    "DPMError",
    "InvalidInputError",
    "InvalidTypeError",
    "UnknownInstrumentError",
    "UnknownAccountError",
    "MarketDataError",
    "MissingFileError",
]


class DPMError(Exception):
    """Base class of every exception raised by dpm."""


class InvalidInputError(DPMError, ValueError):
    """A value is out of its domain (NaN, negative vol, mismatched shapes, ...)."""


class InvalidTypeError(DPMError, TypeError):
    """An argument has a type or dtype dpm cannot use."""


class UnknownInstrumentError(DPMError, KeyError, ValueError):
    """An instrument name or id is not in the instrument table."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownAccountError(DPMError, KeyError, ValueError):
    """An account id or index is not in the book."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MarketDataError(DPMError, ValueError):
    """The market snapshot lacks data an instrument needs, or the data are inconsistent."""


class MissingFileError(InvalidInputError, FileNotFoundError):
    """An input file does not exist (also a :class:`FileNotFoundError`, so ``except OSError`` works)."""
