"""Errors a user can hit, each carrying a sentence written for that user.

Every message names the file, field or address at fault and says what to do about it.
Code that catches these shows ``str(error)`` as-is; tracebacks are for logs only.
"""

from __future__ import annotations


class PneumoFLError(Exception):
    """Base for every error whose message is meant for the user."""


class ConfigError(PneumoFLError):
    """A run configuration field is missing, of the wrong type or out of range."""


class DataError(PneumoFLError):
    """The dataset cannot be used: missing paths, too many bad images, a single class, ..."""


class DatabaseError(PneumoFLError):
    """The database cannot be reached, migrated or written."""


class RunNotFoundError(PneumoFLError):
    """A run id given by the user does not exist in the database."""


class AuditError(PneumoFLError):
    """An audit entry cannot be written (details that are not JSON, a head that fails its check, ...)."""


class AuditKeyMissing(AuditError):
    """No key file on this computer for the database whose audit trail it was asked to extend or verify."""


class RunCancelled(Exception):
    """Raised inside training when the user asked to stop; not an error."""


class ImageProblem(DataError):
    """One image cannot be used; ``kind`` says why, for the dataset check's listing.

    Kinds: ``missing``, ``unreadable`` (PNG/JPEG), ``no_pixel_data``, ``multi_frame``, ``invalid_header``,
    ``truncated``, ``undecodable``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
