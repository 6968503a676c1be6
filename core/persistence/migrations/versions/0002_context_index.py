"""Index run_metrics by (run_id, context, metric_name, step) so opening a run never scans its batch rows.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_run_metrics_run_context_name_step", "run_metrics", ["run_id", "context", "metric_name", "step"])


def downgrade() -> None:
    op.drop_index("ix_run_metrics_run_context_name_step", table_name="run_metrics")
