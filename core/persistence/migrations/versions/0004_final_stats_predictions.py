"""Keep the full final statistics and the best epoch's AUROC and specificity with each run; record predictions.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("best_val_auroc", sa.Float(), nullable=True))
        batch.add_column(sa.Column("best_val_specificity", sa.Float(), nullable=True))
        batch.add_column(sa.Column("final_stats", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "predictions",
        sa.Column("id", big_id, primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("operating_point", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_predictions_run_id", "predictions", ["run_id"])
    op.create_index("ix_predictions_image_sha256", "predictions", ["image_sha256"])


def downgrade() -> None:
    op.drop_index("ix_predictions_image_sha256", table_name="predictions")
    op.drop_index("ix_predictions_run_id", table_name="predictions")
    op.drop_table("predictions")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("final_stats")
        batch.drop_column("best_val_specificity")
        batch.drop_column("best_val_auroc")
