"""Errors that tell the user what went wrong and how to fix it.

One base class so callers can catch everything mammo raises on purpose; each subclass
message names the file, row or parameter at fault and the fix.
"""

from __future__ import annotations


class MammoError(Exception):
    """Base class for every error mammo raises on purpose."""


class ConfigError(MammoError, ValueError):
    """A parameter has an unknown name, a wrong type or a value out of range."""


class DataError(MammoError):
    """Input data (CSV, DICOM, numpy file, prepared dataset) is missing or malformed."""


class RecordError(DataError):
    """One record cannot be ingested; `reason` is the short key counted in skip reports."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
