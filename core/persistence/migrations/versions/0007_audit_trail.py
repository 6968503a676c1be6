"""Give the database an identity and add the tamper-evident audit trail (entries and their keyed head).

NEVER let a later migration rewrite ``audit_entries``: no ALTER, no batch copy, no type or data change. Each
entry's hash covers its stored values and the previous entry's hash, so rewriting the table (even to an
"equivalent" representation) would make every verification after it report tampering. New audit data goes
into new tables or into the ``details`` of new entries.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    identity = op.create_table(
        "database_identity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("identity", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Naive UTC: what UTCDateTime stores on SQLite, and a UTC instant to PostgreSQL's timestamptz.
    op.bulk_insert(
        identity, [{"id": 1, "identity": uuid.uuid4().hex, "created_at": datetime.now(UTC).replace(tzinfo=None)}]
    )
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("os_user", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_audit_entries_recorded_at", "audit_entries", ["recorded_at"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_index("ix_audit_entries_recorded_at", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_table("database_identity")
