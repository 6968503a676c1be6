"""Initial schema: runs, run_metrics, clients, rounds.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when models.py changes later.
_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_bigint_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_name", sa.String(255), nullable=False),
        sa.Column("training_mode", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", _utc(), nullable=False),
        sa.Column("end_time", _utc(), nullable=True),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("config", _json, nullable=False),
        sa.Column("federation_run_id", sa.String(64), nullable=True),
        sa.Column("server_address", sa.String(255), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("best_val_recall", sa.Float(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runs_start_time", "runs", ["start_time"])
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "run_metrics",
        sa.Column("id", _bigint_id, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("metric_name", sa.String(255), nullable=False),
        sa.Column("metric_value", sa.Float(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("dataset_type", sa.String(16), nullable=False),
        sa.Column("context", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_run_metrics_run_name_step", "run_metrics", ["run_id", "metric_name", "step"])
    op.create_index("ix_run_metrics_run_round", "run_metrics", ["run_id", "round_id"])

    op.create_table(
        "clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("client_name", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "client_id", name="uq_clients_run_client"),
    )

    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        sa.Column("server_metrics", _json, nullable=False),
        sa.Column("aggregated_client_metrics", _json, nullable=False),
        sa.Column("start_time", _utc(), nullable=True),
        sa.Column("end_time", _utc(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "round_number", name="uq_rounds_run_round"),
    )


def downgrade() -> None:
    """Drop everything (development only: this deletes every recorded run)."""
    op.drop_table("rounds")
    op.drop_table("clients")
    op.drop_index("ix_run_metrics_run_round", table_name="run_metrics")
    op.drop_index("ix_run_metrics_run_name_step", table_name="run_metrics")
    op.drop_table("run_metrics")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_start_time", table_name="runs")
    op.drop_table("runs")
