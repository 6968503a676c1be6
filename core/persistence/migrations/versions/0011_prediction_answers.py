"""Record with each reading the DICOM objects that answered it (its SR's and secondary capture's SOP instance
UIDs) and the warnings it got when the image differed from the model's training data.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("warnings", sa.Text(), nullable=True))
    op.add_column("predictions", sa.Column("report_uid", sa.String(64), nullable=True))
    op.add_column("predictions", sa.Column("capture_uid", sa.String(64), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite 3.35+ and PostgreSQL): nothing refers to these columns.
    op.execute("ALTER TABLE predictions DROP COLUMN capture_uid")
    op.execute("ALTER TABLE predictions DROP COLUMN report_uid")
    op.execute("ALTER TABLE predictions DROP COLUMN warnings")
