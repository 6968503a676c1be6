"""The hash chain's arithmetic: canonical JSON, entry hashes, the head's HMAC, and what details may hold.

An entry's hash is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of its seq, recorded_at (ISO
text, UTC, microseconds), os_user, kind, details and prev_hash. Writer and verifier both call
:func:`entry_hash`, so the rules live here once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from core.errors import AuditError

ZERO_HASH = "0" * 64
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
# PostgreSQL's JSONB prints a large float such as 1e300 as an integer, which would change the entry's hash when
# it is read back; below 2**53 every float survives both backends exactly.
_MAX_FLOAT = 2.0**53


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, non-ASCII kept as is: the one text a value hashes as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def iso_time(moment: datetime) -> str:
    """``recorded_at`` as hashed: UTC, with microseconds (what both backends store)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    seq: int, recorded_at: datetime, os_user: str, kind: str, details: Mapping[str, Any], prev_hash: str
) -> str:
    """SHA-256 hex of one entry's canonical JSON (see the module docstring)."""
    document = {
        "seq": seq,
        "recorded_at": iso_time(recorded_at),
        "os_user": os_user,
        "kind": kind,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def head_mac(key: bytes, identity: str, seq: int, last_hash: str) -> str:
    """HMAC-SHA256 hex of ``"{identity}:{seq}:{entry_hash}"``: only a key holder can sign a head."""
    return hmac.new(key, f"{identity}:{seq}:{last_hash}".encode(), hashlib.sha256).hexdigest()


def macs_match(given: str, expected: str) -> bool:
    """Constant-time comparison of two hex MACs."""
    return hmac.compare_digest(given.encode(), expected.encode())


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a lowercase word of at most 64 characters (see :mod:`core.audit.kinds`).

    Raises
    ------
    AuditError
        Naming the kind, otherwise.
    """
    if not isinstance(kind, str) or not KIND_PATTERN.fullmatch(kind):
        raise AuditError(f"{kind!r} is not an audit kind: use a constant of core.audit.kinds.")
    return kind


def require_json(details: Mapping[str, Any]) -> dict[str, Any]:
    """Return a plain copy of ``details`` (tuples become lists) that hashes the same after a database round trip.

    Raises
    ------
    AuditError
        Naming the first value that is not JSON (a path, a date, NaN, a non-text key, ...).
    """
    if not isinstance(details, Mapping):
        raise AuditError(f"Audit details must be a mapping of names to values, not {type(details).__name__}.")
    return _plain(details, "details")


def _plain(value: Any, where: str) -> Any:
    # Subclasses (enums, numpy scalars that subclass float) become the plain type they hash as.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= _MAX_FLOAT:
            raise AuditError(f"Audit {where} is {value!r}: only finite numbers below 2**53 can be kept exactly.")
        return float(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise AuditError(f"Audit {where} contains a NUL character, which the database cannot store.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise AuditError(f"Audit {where} is not valid Unicode text.") from None
        return str(value)
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditError(f"Audit {where} has the key {key!r}: keys must be text.")
            plain[key] = _plain(item, f"{where}[{key!r}]")
        return plain
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise AuditError(
        f"Audit {where} is a {type(value).__name__}: details may hold only text, numbers, true/false, null, "
        "lists and mappings (convert it, e.g. str(path) or moment.isoformat())."
    )
