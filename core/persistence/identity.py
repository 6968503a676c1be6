"""The database's own identity: one uuid4 hex per database, made once and never changed.

The audit trail's key file is named after it, and run artifacts can be addressed by it, so two databases
(two sites, or a site and its test copy) never share either.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.persistence.models import identity_table, utcnow


def database_identity(session: Session | Connection) -> str:
    """Return this database's identity, creating it if the row is missing.

    Migration 0007 creates the row; this also covers a database whose row was lost. Two processes creating it at
    once both end with the same value: the insert does nothing on a conflict and the row is read back.

    Parameters
    ----------
    session
        A session or connection; the caller owns the transaction.

    Returns
    -------
    str
        32 lowercase hex digits.
    """
    found = session.execute(select(identity_table.c.identity).where(identity_table.c.id == 1)).scalar()
    if found:
        return str(found)
    dialect = session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(identity_table)
        .values(id=1, identity=uuid.uuid4().hex, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return str(session.execute(select(identity_table.c.identity).where(identity_table.c.id == 1)).scalar_one())
