"""Carry step, client and value in the (run_id, context, metric_name, step) index: series are read from it alone.

Drawing a run with a million batch points thins each series in the database (``downsampled_batch_series``); with
the value in the index that scan never visits the table, which halves the time to the first chart.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

COLUMNS = ["run_id", "context", "metric_name", "step", "client_id", "metric_value"]


def upgrade() -> None:
    op.create_index("ix_run_metrics_series", "run_metrics", COLUMNS)
    op.drop_index("ix_run_metrics_run_context_name_step", table_name="run_metrics")  # a prefix of the new one


def downgrade() -> None:
    op.create_index("ix_run_metrics_run_context_name_step", "run_metrics", COLUMNS[:4])
    op.drop_index("ix_run_metrics_series", table_name="run_metrics")
