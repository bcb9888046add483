"""Errors that tell the user what went wrong and how to fix it.

One base class so callers can catch everything mammo raises on purpose; each subclass
message names the file, row or parameter at fault and the fix. `user_error_message` turns the
errors a user can cause through a library (MLflow, SQLAlchemy, the OS) into the same kind of
one-line message, so an entry point never shows a traceback for them.
"""

from __future__ import annotations

import re


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


class RegistryError(MammoError):
    """The model registry refused or failed an operation (permission, lock, server)."""


class TrackingError(MammoError):
    """The tracking server refused or failed a call that the caller can report and go on after."""


class TrialError(MammoError):
    """An Optuna trial cannot produce a value (e.g. an undefined metric); the study goes on."""


_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@", re.IGNORECASE)


def hide_passwords(text: str) -> str:
    """`postgresql://user:secret@host` → `postgresql://user:***@host` anywhere in `text`."""
    return _PASSWORD_IN_URL.sub(r"\g<scheme>\g<user>:***@", text)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return hide_passwords(text.splitlines()[0] if text else type(error).__name__)


def user_error_message(error: BaseException) -> str | None:
    """A one-line message with the fix for an error the user caused, or None for a bug.

    Bugs keep their traceback (they are ours to fix); bad parameters, missing or corrupt files,
    unreachable databases or tracking servers, unknown model URIs and refused permissions get one
    line that says what is wrong and what to do.
    """
    if isinstance(error, MammoError):
        return hide_passwords(str(error))
    module = type(error).__module__
    if module.startswith("mlflow"):
        return _mlflow_message(error)
    if module.startswith("sqlalchemy") or module.startswith("psycopg"):
        return (
            f"the database refused or could not be reached ({_first_line(error)}). Check the URL, that the server "
            "is running and reachable, and the user name and password (PGPASSWORD or ~/.pgpass for PostgreSQL)."
        )
    if module.startswith("optuna") and type(error).__name__ in ("StorageInternalError", "DuplicatedStudyError"):
        return f"the Optuna storage failed ({_first_line(error)}); check --storage and that the database is reachable."
    if isinstance(error, FileNotFoundError):
        return f"{error.filename or _first_line(error)}: no such file or folder; check the path."
    if isinstance(error, PermissionError):
        return f"{error.filename or _first_line(error)}: permission denied; check the path's owner and mode."
    if isinstance(error, (ConnectionError, TimeoutError)):
        return f"a server could not be reached ({_first_line(error)}); check the URL and that the server is running."
    return None


def _mlflow_message(error: BaseException) -> str:
    code = str(getattr(error, "error_code", ""))
    text = _first_line(error)
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in text.lower():
        return f"{text} Check the run id, model name, version or alias (`mlflow models` URIs: models:/<name>@<alias>)."
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or "401" in text or "403" in text:
        return (
            f"the tracking server refused the request ({text}). Set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to a user with the permission this needs (ask the server's admin)."
        )
    if "Max retries exceeded" in text or "Connection refused" in text or "API request to" in text:
        return f"the MLflow tracking server could not be reached ({text}). Check MLFLOW_TRACKING_URI and the server."
    return f"MLflow: {text}"
