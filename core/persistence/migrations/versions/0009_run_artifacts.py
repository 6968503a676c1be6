"""Keep what a run made (its checkpoints and global models) in the database, addressed by SHA-256.

Before, a run's weights lived in the user data folder by run number, where another database's run with the same
number overwrote them, and no other workstation of a shared PostgreSQL could read them. Files already there are
adopted on first use, checked against the fingerprint the run recorded (``core.inference.models``).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifact_blobs",
        sa.Column("sha256", sa.String(length=64), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "run_artifacts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), sa.ForeignKey("artifact_blobs.sha256"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "kind", name="uq_run_artifacts_run_kind"),
    )
    op.create_index("ix_run_artifacts_sha256", "run_artifacts", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_run_artifacts_sha256", table_name="run_artifacts")
    op.drop_table("run_artifacts")
    op.drop_table("artifact_blobs")
