"""Verifying the audit trail: every hash and link, the end of the chain, the head's signature, this computer's mark.

What each check catches:

- an entry's content edited: its hash no longer matches (that entry);
- an entry deleted or entries swapped: a gap in seq, a broken link or a hash that covers another seq (that seq);
- the last entries cut off: the head, or this computer's watermark, names a later entry (the first one missing);
- the head rolled back to an older signed copy: entries after it are not covered, or this computer's watermark
  names a later entry (the first one after the head);
- the chain recomputed by someone without the key: the head's HMAC fails, so no entry can be trusted (seq 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select

from core.audit.chain import ZERO_HASH, entry_hash, head_mac, iso_time, macs_match
from core.audit.entries import iter_entries
from core.audit.key import Watermark, advance_watermark, load_key, read_watermark
from core.persistence.engine import Database
from core.persistence.identity import database_identity
from core.persistence.models import audit_head_table


@dataclass(frozen=True)
class VerifyResult:
    """The outcome: ``reason`` is one sentence, naming the first bad entry when ``ok`` is False."""

    ok: bool
    entries_checked: int
    first_bad_seq: int | None
    reason: str


@dataclass
class _Walk:
    """What walking the chain found: how far it got, the last hash, and the hash at the watermark's seq."""

    checked: int = 0
    last_hash: str = ZERO_HASH
    marked_hash: str | None = None
    failure: VerifyResult | None = None


def verify(db: Database) -> VerifyResult:
    """Check the whole audit trail of ``db`` and return the first problem, if any.

    An empty trail verifies. A trail that verifies moves this computer's watermark to its last entry.

    Raises
    ------
    AuditKeyMissing
        If the trail has entries and this computer has no key for the database (the sentence says where to
        copy the key from). Breaks found without the key are reported first.
    """
    with db.begin() as session:
        identity = database_identity(session)
    # Read before the snapshot: anything this computer committed is then inside it, so no false "cut off".
    mark = read_watermark(identity)
    with _snapshot(db) as connection:
        head = connection.execute(select(audit_head_table).where(audit_head_table.c.id == 1)).first()
        walk = _walk(connection, mark)
    if walk.failure is not None:
        return walk.failure
    last = walk.checked
    problem = _end_problem(identity, db.url_for_display, head, walk, mark)
    if problem is not None:
        return VerifyResult(False, last, *problem)
    if last:
        advance_watermark(identity, last, walk.last_hash)
    return VerifyResult(True, last, None, f"Audit trail intact: {last} {'entry' if last == 1 else 'entries'}.")


def _end_problem(
    identity: str, database: str, head: Row[Any] | None, walk: _Walk, mark: Watermark | None
) -> tuple[int, str] | None:
    """The first bad seq and why, for a chain whose entries are sound but whose end or head may not be."""
    last = walk.checked
    ends = f"the trail now ends at entry {last}" if last else "the trail is now empty"
    if mark is not None and mark.seq > last:
        return (
            last + 1,
            f"{_missing(last + 1, mark.seq)}: this computer wrote or verified entry {mark.seq}, but {ends}.",
        )
    if head is None:
        return None if last == 0 else (1, f"The audit trail has {last} entries but no head, so none can be trusted.")
    if head.seq > last:
        return last + 1, f"{_missing(last + 1, head.seq)}: the audit head names entry {head.seq}, but {ends}."
    if head.seq < last:
        return head.seq + 1, (
            f"Entry {head.seq + 1} is not covered by the audit head, which ends at entry {head.seq}: the head was "
            "rolled back or entries were added outside PneumoFL."
        )
    key = load_key(identity, database)
    if not macs_match(head.mac, head_mac(key, identity, head.seq, head.entry_hash)):
        return 1, (
            f"The audit head (entry {head.seq}) is not signed with this database's key, so no entry from 1 on can "
            "be trusted: the trail was rewritten or its head forged by someone without the key."
        )
    if head.entry_hash != walk.last_hash:
        return 1, (
            f"Entry {last} is not the entry the audit head signed: the trail was rewritten after it was signed, "
            "so no entry from 1 on can be trusted."
        )
    if mark is not None and mark.seq > 0 and walk.marked_hash != mark.entry_hash:
        return mark.seq, (
            f"Entry {mark.seq} differs from the one this computer wrote or verified: the trail was rewritten by "
            "someone holding the key."
        )
    return None


@contextmanager
def _snapshot(db: Database) -> Iterator[Connection]:
    """A read-only transaction that sees one state of the trail while others keep appending."""
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        elif connection.dialect.name == "sqlite":
            # The driver opens no transaction for reads; WAL keeps this one's snapshot from its first read.
            connection.exec_driver_sql("BEGIN")
        try:
            yield connection
        finally:
            connection.rollback()


def _walk(connection: Connection, mark: Watermark | None) -> _Walk:
    walk = _Walk()
    for entry in iter_entries(connection):
        expected = walk.checked + 1
        if entry.seq != expected:
            where = (
                f"the trail goes from entry {expected - 1} to entry {entry.seq}"
                if expected > 1
                else (f"the trail starts at entry {entry.seq}")
            )
            walk.failure = _bad(walk.checked, expected, f"Entry {expected} is missing: {where}.")
            return walk
        recomputed = entry_hash(entry.seq, entry.recorded_at, entry.os_user, entry.kind, entry.details, entry.prev_hash)
        if recomputed != entry.entry_hash:
            walk.failure = _bad(
                walk.checked,
                entry.seq,
                f"Entry {entry.seq} ({entry.kind}, recorded {iso_time(entry.recorded_at)}) "
                "was altered: its contents no longer match its hash.",
            )
            return walk
        if entry.prev_hash != walk.last_hash:
            walk.failure = _bad(
                walk.checked,
                entry.seq,
                f"Entry {entry.seq} does not follow entry {entry.seq - 1}: its link to "
                "the previous entry is wrong, so entries were removed, replaced or reordered.",
            )
            return walk
        walk.checked, walk.last_hash = entry.seq, entry.entry_hash
        if mark is not None and entry.seq == mark.seq:
            walk.marked_hash = entry.entry_hash
    return walk


def _missing(first: int, last: int) -> str:
    return f"Entry {first} is missing" if first == last else f"Entries {first} to {last} are missing"


def _bad(checked: int, seq: int, reason: str) -> VerifyResult:
    return VerifyResult(False, checked, seq, reason)
