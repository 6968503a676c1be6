"""Appending to the audit trail: one entry per call, chained to the last, the head signed in the same transaction.

Writers are serialised by the database itself, so the chain never forks: ``BEGIN IMMEDIATE`` takes SQLite's
write lock before the head is read (several processes on one file), and a transaction-scoped advisory lock does
the same on PostgreSQL (several workstations on one server; it also covers the empty trail, which has no head
row to lock). The unique ``seq`` is the last guard: a writer that lost a race anyway retries.
"""

from __future__ import annotations

import functools
import getpass
import logging
import logging.handlers
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from core.audit.chain import ZERO_HASH, canonical_json, check_kind, entry_hash, head_mac, macs_match, require_json
from core.audit.key import advance_watermark, load_key, load_or_create_key, read_watermark, watermark_path
from core.errors import AuditError, DatabaseError
from core.persistence.engine import Database, describe_failure
from core.persistence.identity import database_identity
from core.persistence.models import audit_entries_table, audit_head_table, utcnow

SYSLOG_ENV = "PNEUMOFL_AUDIT_SYSLOG"
_PG_AUDIT_LOCK = 0x504E4155  # "PNAU": one writer at a time per database
_ATTEMPTS = 5
log = logging.getLogger(__name__)


def record(db: Database, kind: str, details: Mapping[str, Any], *, os_user: str | None = None) -> int:
    """Append one entry to the audit trail and return its seq.

    Security-relevant callers use this, so a failure to audit stops their action. The first entry of a database
    creates its key file (see :mod:`core.audit.key`); later ones need that key, and refuse to extend a trail whose
    head fails its signature check or ends before the last entry this computer wrote or verified.

    Parameters
    ----------
    db
        The node's database.
    kind
        One of :mod:`core.audit.kinds`.
    details
        What happened, as JSON values (text, numbers, true/false, null, lists, mappings).
    os_user
        Who did it; the logged-in user by default.

    Raises
    ------
    AuditError
        For details that are not JSON, a missing or wrong key, or a head that fails its check.
    DatabaseError
        If the database fails (a lost race or a busy SQLite file is retried first).
    """
    check_kind(kind)
    document = require_json(details)
    user = os_user if os_user is not None else current_user()
    identity, seq, digest = _append_with_retries(db, kind, document, user)
    advance_watermark(identity, seq, digest)
    _to_syslog(seq, kind, user, document)
    return seq


def record_safely(
    db_or_url: Database | str | None, kind: str, details: Mapping[str, Any], *, os_user: str | None = None
) -> int | None:
    """Append like :func:`record`, but never raise: a failure is logged as a warning and None returned.

    For actions that must not fail because auditing did (reading images, exporting a model). Security-relevant
    callers (approving a plan, joining a federation) use :func:`record`, so nothing happens unrecorded.

    Parameters
    ----------
    db_or_url
        An open database, or a URL to open (None: the default database).
    """
    try:
        if isinstance(db_or_url, Database):
            return record(db_or_url, kind, details, os_user=os_user)
        with Database.open(db_or_url) as db:
            return record(db, kind, details, os_user=os_user)
    except Exception as exc:  # noqa: BLE001 - the caller's action goes on whatever went wrong here
        log.warning("Could not add a %s entry to the audit trail: %s", kind, exc)
        return None


def current_user() -> str:
    """The logged-in user's name, or ``uid <n>`` where the system cannot say."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _append_with_retries(db: Database, kind: str, details: dict[str, Any], user: str) -> tuple[str, int, str]:
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with _write_lock(db) as connection:
                return _append(connection, db.url_for_display, kind, details, user)
        except (IntegrityError, OperationalError) as exc:
            # A writer without the lock took the seq, or SQLite stayed busy past its timeout: try again.
            if attempt == _ATTEMPTS or not _lost_race(exc):
                raise DatabaseError(describe_failure(exc, db.engine.url, "add an audit entry to")) from exc
            time.sleep(0.05 * attempt)
        except SQLAlchemyError as exc:
            raise DatabaseError(describe_failure(exc, db.engine.url, "add an audit entry to")) from exc
    raise AssertionError("unreachable")


@contextmanager
def _write_lock(db: Database) -> Iterator[Connection]:
    """A transaction holding the database's audit write lock until it commits or rolls back."""
    with db.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_AUDIT_LOCK})
        yield connection


def _append(
    connection: Connection, database: str, kind: str, details: dict[str, Any], user: str
) -> tuple[str, int, str]:
    """Insert the next entry and move the head; return (identity, seq, entry hash)."""
    identity = database_identity(connection)
    head = connection.execute(select(audit_head_table).where(audit_head_table.c.id == 1)).first()
    # Under the lock the head is at or past every entry this computer committed, so a lower head was rolled back.
    mark = read_watermark(identity)
    if mark is not None and mark.seq > (head.seq if head else 0):
        raise AuditError(
            f"The audit trail of {database} ends at entry {head.seq if head else 0}, but this computer wrote or "
            f"verified entry {mark.seq}, so nothing more is added to it; run `pneumofl audit verify`. If the "
            f"database was restored from a backup on purpose, delete {watermark_path(identity)} to accept it."
        )
    if head is None:
        if connection.execute(select(func.count()).select_from(audit_entries_table)).scalar_one():
            raise AuditError(f"The audit trail of {database} has entries but no head; run `pneumofl audit verify`.")
        key, seq, previous = load_or_create_key(identity), 1, ZERO_HASH
    else:
        key, seq, previous = load_key(identity, database), head.seq + 1, head.entry_hash
        if not macs_match(head.mac, head_mac(key, identity, head.seq, head.entry_hash)):
            raise AuditError(
                f"The audit trail of {database} fails its signature check, so nothing more is added to it; "
                "run `pneumofl audit verify`."
            )
    recorded_at = utcnow()
    digest = entry_hash(seq, recorded_at, user, kind, details, previous)
    connection.execute(
        insert(audit_entries_table).values(
            seq=seq,
            recorded_at=recorded_at,
            os_user=user,
            kind=kind,
            details=details,
            prev_hash=previous,
            entry_hash=digest,
        )
    )
    signed = {"seq": seq, "entry_hash": digest, "mac": head_mac(key, identity, seq, digest)}
    if head is None:
        connection.execute(insert(audit_head_table).values(id=1, **signed))
    else:
        connection.execute(update(audit_head_table).where(audit_head_table.c.id == 1).values(**signed))
    return identity, seq, digest


def _lost_race(exc: IntegrityError | OperationalError) -> bool:
    return isinstance(exc, IntegrityError) or "locked" in str(exc.orig) or "busy" in str(exc.orig)


def _to_syslog(seq: int, kind: str, user: str, details: dict[str, Any]) -> None:
    """One line per entry to the local syslog when ``PNEUMOFL_AUDIT_SYSLOG=1`` (a copy the database cannot lose)."""
    if os.environ.get(SYSLOG_ENV, "").strip() == "1":
        _syslog().info("pneumofl audit seq=%d kind=%s user=%s details=%s", seq, kind, user, canonical_json(details))


@functools.cache
def _syslog() -> logging.Logger:
    logger = logging.getLogger("pneumofl.audit.syslog")
    logger.propagate = False  # the line is for syslog, not for the console or the log file
    logger.setLevel(logging.INFO)
    logger.addHandler(_syslog_handler())
    return logger


class _QuietSysLogHandler(logging.handlers.SysLogHandler):
    """A syslog handler that drops a line it cannot deliver instead of printing a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        """Ignore the failure: syslog is a copy, the database holds the entry."""


def _syslog_handler() -> logging.Handler:
    for socket_path in ("/dev/log", "/var/run/syslog"):  # Linux, macOS
        if os.path.exists(socket_path):
            try:
                return _QuietSysLogHandler(address=socket_path)
            except OSError:
                break
    try:
        return _QuietSysLogHandler()  # UDP to localhost:514, which never fails to send
    except OSError:
        return logging.NullHandler()
