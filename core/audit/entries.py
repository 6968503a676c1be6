"""Reading the audit trail: entries in seq order, streamed in chunks, and their JSON-lines export."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from core.audit.chain import iso_time
from core.errors import AuditError
from core.persistence.engine import Database
from core.persistence.models import audit_entries_table

# Keyset pages: a 100,000-entry trail is read in 20 queries and never held in memory at once.
CHUNK = 5000


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the trail as stored."""

    seq: int
    recorded_at: datetime
    os_user: str
    kind: str
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON object (``recorded_at`` as UTC ISO text), as exported and shown."""
        return {
            "seq": self.seq,
            "recorded_at": iso_time(self.recorded_at),
            "os_user": self.os_user,
            "kind": self.kind,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
        }


def iter_entries(
    session: Session | Connection,
    since: datetime | None = None,
    kinds: Collection[str] | None = None,
    *,
    chunk: int = CHUNK,
) -> Iterator[AuditEntry]:
    """Yield entries in seq order, ``chunk`` rows per query.

    Parameters
    ----------
    session
        A session or connection; the caller owns the transaction.
    since
        Only entries recorded at or after this moment (naive values are taken as UTC).
    kinds
        Only entries of these kinds.
    """
    table = audit_entries_table
    query = select(table).order_by(table.c.seq).limit(chunk)
    if since is not None:
        query = query.where(table.c.recorded_at >= since)
    if kinds:
        query = query.where(table.c.kind.in_(list(kinds)))
    after = 0
    while True:
        rows = session.execute(query.where(table.c.seq > after)).all()
        for row in rows:
            yield AuditEntry(
                row.seq, row.recorded_at, row.os_user, row.kind, row.details, row.prev_hash, row.entry_hash
            )
        if len(rows) < chunk:
            return
        after = rows[-1].seq


def entries(
    session: Session | Connection, since: datetime | None = None, kinds: Collection[str] | None = None
) -> list[AuditEntry]:
    """Return the entries in seq order, optionally only those recorded since a moment or of some kinds."""
    return list(iter_entries(session, since, kinds))


def export_jsonl(db: Database, target: str | Path | TextIO, since: datetime | None = None) -> int:
    """Write the entries, one JSON object a line with their hashes, and return how many were written.

    The hashes travel with the entries, so the export can be checked away from the database.

    Parameters
    ----------
    target
        A file path (replaced), or an open text stream.

    Raises
    ------
    AuditError
        Naming the file, when it cannot be written.
    """
    if not isinstance(target, str | Path):
        return _write_lines(db, target, since)
    path = Path(target).expanduser()
    try:
        with path.open("w", encoding="utf-8", newline="\n") as stream:
            return _write_lines(db, stream, since)
    except OSError as exc:
        raise AuditError(f"Cannot write {path} ({exc.strerror or exc}): choose another file.") from None


def _write_lines(db: Database, stream: TextIO, since: datetime | None) -> int:
    count = 0
    with db.begin() as session:
        for entry in iter_entries(session, since):
            stream.write(json.dumps(entry.as_json(), sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    return count
