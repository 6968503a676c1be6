"""Record when a run was resumed and from which epoch (``runs.resumes``), so its charts can mark it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("resumes", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    # Not batch mode: rebuilding ``runs`` on SQLite would cascade-delete every row that refers to it.
    op.execute("ALTER TABLE runs DROP COLUMN resumes")
