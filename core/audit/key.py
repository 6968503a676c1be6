"""The audit key and this computer's watermark: two small files kept outside the database.

``<identity>.key`` holds 32 random bytes that sign the trail's head (HMAC-SHA256); whoever can only write the
database cannot forge that signature. ``<identity>.head`` remembers the highest entry this computer wrote or
verified, so a head row rolled back to an older, validly signed copy is still caught here. Both live in
``$PNEUMOFL_AUDIT_KEY_DIR``, else in ``audit-keys`` in the user config folder. Every workstation that shares a
PostgreSQL database needs a copy of the key file of the workstation that wrote the trail's first entry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from core.errors import AuditError, AuditKeyMissing

KEY_DIR_ENV = "PNEUMOFL_AUDIT_KEY_DIR"
KEY_BYTES = 32
# The identity names files: only what uuid4().hex makes, so a doctored identity row cannot point elsewhere.
_IDENTITY = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watermark:
    """The highest entry this computer wrote or verified: its seq and its hash."""

    seq: int
    entry_hash: str


def key_dir() -> Path:
    """The folder of key and watermark files: ``$PNEUMOFL_AUDIT_KEY_DIR``, else ``<user config>/audit-keys``."""
    configured = os.environ.get(KEY_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_config_dir("pneumofl")) / "audit-keys"


def key_path(identity: str) -> Path:
    """Where the key of the database named ``identity`` lives on this computer.

    Raises
    ------
    AuditError
        If ``identity`` is not a 32-digit lowercase hex identity.
    """
    if not _IDENTITY.fullmatch(identity):
        raise AuditError(f"The database identity {identity[:40]!r} is not valid; the identity row was altered.")
    return key_dir() / f"{identity}.key"


def load_key(identity: str, database: str = "this database") -> bytes:
    """Return the key of ``identity``'s database.

    Raises
    ------
    AuditKeyMissing
        With a sentence naming the key path and where to copy it from, if this computer has no key.
    AuditError
        If the key file cannot be read or is damaged.
    """
    path = key_path(identity)
    try:
        return _read_key(path)
    except FileNotFoundError:
        raise AuditKeyMissing(
            f"This computer has no audit key for {database}: {path} does not exist. Copy the key file {path.name} "
            f"from the workstation that created this database's audit trail into {path.parent} "
            f"(or point {KEY_DIR_ENV} at a folder holding it)."
        ) from None


def load_or_create_key(identity: str) -> bytes:
    """Return the key of ``identity``'s database, creating it (mode 0600, folder 0700) if there is none.

    Two processes creating it at once end with the same key: each writes a private temporary file and links
    it to the key's name, which succeeds for one of them only (``link`` is atomic and exclusive, like O_EXCL).

    Raises
    ------
    AuditError
        If the key cannot be written or read.
    """
    path = key_path(identity)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(secrets.token_bytes(KEY_BYTES))
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    except OSError as exc:
        raise AuditError(
            f"Cannot create the audit key {path}: {exc.strerror or exc}. Check that the folder is writable."
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise AuditError(f"Cannot read the audit key {path}: {exc.strerror or exc}.") from None
    if len(key) != KEY_BYTES:
        raise AuditError(
            f"The audit key {path} is damaged ({len(key)} bytes instead of {KEY_BYTES}); copy it again from the "
            "workstation that created it."
        )
    return key


def watermark_path(identity: str) -> Path:
    """Where this computer's watermark for ``identity``'s database lives (next to its key)."""
    return key_path(identity).with_suffix(".head")


def read_watermark(identity: str) -> Watermark | None:
    """Return this computer's watermark for ``identity``'s database; None where it has none or cannot read it."""
    path = watermark_path(identity)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        seq, entry_hash = data["seq"], data["entry_hash"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("Ignoring the unreadable audit watermark %s: %s", path, exc)
        return None
    if not isinstance(seq, int) or not isinstance(entry_hash, str):
        log.warning("Ignoring the audit watermark %s: it does not hold a seq and a hash", path)
        return None
    return Watermark(seq, entry_hash)


def advance_watermark(identity: str, seq: int, entry_hash: str) -> None:
    """Remember entry ``seq`` (hash ``entry_hash``) as seen here, unless a higher one is remembered already.

    Never raises: the entry is already committed. Two processes advancing at once may leave the lower of their
    marks, which is still a true entry of the trail, so no false alarm can follow.
    """
    current = read_watermark(identity)
    if current is not None and current.seq >= seq:
        return
    path = watermark_path(identity)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump({"seq": seq, "entry_hash": entry_hash}, stream)
        os.replace(temporary, path)  # readers see the old mark or the new one, never half of one
    except OSError as exc:
        log.warning("Cannot update the audit watermark %s: %s", path, exc)
        temporary.unlink(missing_ok=True)
