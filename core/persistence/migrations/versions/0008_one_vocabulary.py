"""One vocabulary and one stored copy of each number.

Vocabulary: a federation participant is a *site* (``clients`` -> ``sites``; ``client_id``/``client_name`` ->
``site_id``/``site_name``; role ``client`` -> ``site``), a round is a ``round_number`` everywhere, and the Flower
runs a PneumoFL run took part in are rows of ``flower_runs`` (a resumed federation is a new Flower run) instead of
one ``federation_run_id`` text per run.

One copy: a run's final statistics live only in ``runs.final_stats``. Runs recorded before that document existed
get it rebuilt from their ``final_epoch`` rows (and the ROC from their ``curve`` rows); then those rows go. The
``best_val_*`` columns go too: they are the best epoch's validation rows, which are kept (a value that only the
column held becomes such a row first), so nothing recorded is lost.

``audit_entries`` is not touched (see 0007).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")
BEST_VAL = ("recall", "auroc", "specificity")

runs = sa.table(
    "runs",
    sa.column("id", sa.Integer()),
    sa.column("role", sa.String()),
    sa.column("start_time", sa.DateTime()),
    sa.column("federation_run_id", sa.String()),
    sa.column("best_epoch", sa.Integer()),
    sa.column("final_stats", JSON_TYPE),
    *(sa.column(f"best_val_{name}", sa.Float()) for name in BEST_VAL),
)
metrics = sa.table(
    "run_metrics",
    sa.column("id", sa.BigInteger()),
    sa.column("run_id", sa.Integer()),
    sa.column("metric_name", sa.String()),
    sa.column("metric_value", sa.Float()),
    sa.column("step", sa.Integer()),
    sa.column("dataset_type", sa.String()),
    sa.column("context", sa.String()),
    sa.column("client_id", sa.String()),
)


def upgrade() -> None:
    bind = op.get_bind()
    flower_runs = op.create_table(
        "flower_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("flower_run_id", sa.BigInteger(), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "flower_run_id", name="uq_flower_runs_run_flower"),
    )
    op.create_index("ix_flower_runs_flower_run_id", "flower_runs", ["flower_run_id"])
    linked = bind.execute(
        sa.select(runs.c.id, runs.c.federation_run_id, runs.c.start_time).where(runs.c.federation_run_id.is_not(None))
    ).all()
    links = [
        {"run_id": run_id, "flower_run_id": _signed64(int(text)), "joined_at": start}
        for run_id, text, start in linked
        if text.strip().isdigit()
    ]
    if links:
        op.bulk_insert(flower_runs, links)
    bind.execute(sa.update(runs).where(runs.c.role == "client").values(role="site"))

    for run in bind.execute(sa.select(runs)).mappings().all():
        _keep_final_numbers(bind, run)
    bind.execute(sa.delete(metrics).where(metrics.c.context.in_(("final_epoch", "curve"))))
    for column in ("federation_run_id", *(f"best_val_{name}" for name in BEST_VAL)):
        op.execute(f"ALTER TABLE runs DROP COLUMN {column}")

    # RENAME COLUMN keeps the table (and its millions of metric rows) in place on both SQLite and PostgreSQL;
    # the indexes follow the columns.
    op.execute("ALTER TABLE run_metrics RENAME COLUMN client_id TO site_id")
    op.execute("ALTER TABLE run_metrics RENAME COLUMN round_id TO round_number")
    op.execute("ALTER TABLE site_updates RENAME COLUMN client_id TO site_id")
    op.execute("ALTER TABLE site_updates RENAME COLUMN client_name TO site_name")
    op.execute("ALTER TABLE rounds RENAME COLUMN aggregated_client_metrics TO aggregated_site_metrics")
    _copy_table("clients", "sites", ("client_id", "client_name"), ("site_id", "site_name"), "uq_sites_run_site")


def downgrade() -> None:
    bind = op.get_bind()
    _copy_table("sites", "clients", ("site_id", "site_name"), ("client_id", "client_name"), "uq_clients_run_client")
    op.execute("ALTER TABLE rounds RENAME COLUMN aggregated_site_metrics TO aggregated_client_metrics")
    op.execute("ALTER TABLE site_updates RENAME COLUMN site_name TO client_name")
    op.execute("ALTER TABLE site_updates RENAME COLUMN site_id TO client_id")
    op.execute("ALTER TABLE run_metrics RENAME COLUMN round_number TO round_id")
    op.execute("ALTER TABLE run_metrics RENAME COLUMN site_id TO client_id")
    op.add_column("runs", sa.Column("federation_run_id", sa.String(length=64), nullable=True))
    for name in BEST_VAL:
        op.add_column("runs", sa.Column(f"best_val_{name}", sa.Float(), nullable=True))
        best = (
            sa.select(metrics.c.metric_value)
            .where(
                metrics.c.run_id == runs.c.id,
                metrics.c.step == runs.c.best_epoch,
                metrics.c.client_id.is_(None),
                metrics.c.metric_name == f"val_{name}",
                metrics.c.context.in_(("epoch_end", "server_eval")),
            )
            .order_by(metrics.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        bind.execute(sa.update(runs).values({f"best_val_{name}": best}))
    flower = sa.table("flower_runs", sa.column("run_id", sa.Integer()), sa.column("flower_run_id", sa.BigInteger()))
    for run_id, flower_run_id in bind.execute(
        sa.select(flower.c.run_id, sa.func.min(flower.c.flower_run_id)).group_by(flower.c.run_id)
    ):
        bind.execute(sa.update(runs).where(runs.c.id == run_id).values(federation_run_id=str(flower_run_id % 2**64)))
    bind.execute(sa.update(runs).where(runs.c.role == "site").values(role="client"))
    op.drop_index("ix_flower_runs_flower_run_id", table_name="flower_runs")
    op.drop_table("flower_runs")


def _signed64(value: int) -> int:
    """Flower's unsigned 64-bit run id as the signed value of the same bits (what a BIGINT holds)."""
    return value - 2**64 if value >= 2**63 else value


def _copy_table(old: str, new: str, old_columns: tuple[str, str], new_columns: tuple[str, str], unique: str) -> None:
    """Move the small ``clients``/``sites`` table to its new name and columns (and unique constraint name).

    Copying (rather than renaming) gives the constraint its new name on SQLite too, where a named constraint is
    part of the table's DDL. Its ids are not referenced anywhere, so new ones are fine (the order is kept).
    """
    id_column, name_column = new_columns
    table = op.create_table(
        new,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column(id_column, sa.String(length=64), nullable=False),
        sa.Column(name_column, sa.String(length=255), nullable=False),
        sa.UniqueConstraint("run_id", id_column, name=unique),
    )
    source = sa.table(old, sa.column("id"), sa.column("run_id"), *(sa.column(c) for c in old_columns))
    rows = sa.select(source.c.run_id, *(source.c[c] for c in old_columns)).order_by(source.c.id)
    op.get_bind().execute(sa.insert(table).from_select(["run_id", id_column, name_column], rows))
    op.drop_table(old)


def _keep_final_numbers(bind: sa.Connection, run: Any) -> None:
    """Fold what only final_epoch/curve rows or best_val_* columns held into what stays."""
    rows = bind.execute(
        sa.select(metrics.c.metric_name, metrics.c.metric_value, metrics.c.step, metrics.c.context)
        .where(metrics.c.run_id == run["id"], metrics.c.context.in_(("final_epoch", "curve")))
        .order_by(metrics.c.id)
    ).all()
    document: dict[str, Any] = dict(run["final_stats"] or {})
    changed = False
    if not document:
        document = _rebuild_statistics([(name, value) for name, value, _, context in rows if context == "final_epoch"])
        changed = bool(document)
    curve: dict[str, list[tuple[int, float]]] = {}
    for name, value, step, context in rows:
        if context == "curve" and name in ("roc_fpr", "roc_tpr"):
            curve.setdefault(name[4:], []).append((step, value))
    if "roc" not in document and {"fpr", "tpr"} <= curve.keys():
        document["roc"] = {axis: [v for _, v in sorted(points)] for axis, points in curve.items()}
        changed = True
    if changed:
        bind.execute(sa.update(runs).where(runs.c.id == run["id"]).values(final_stats=document))

    step = run["best_epoch"] or 0
    for name in BEST_VAL:
        value = run[f"best_val_{name}"]
        if value is None or (isinstance(document.get("val"), dict) and document["val"].get(name) is not None):
            continue
        kept = bind.execute(
            sa.select(sa.func.count()).where(
                metrics.c.run_id == run["id"],
                metrics.c.step == step,
                metrics.c.client_id.is_(None),
                metrics.c.metric_name == f"val_{name}",
                metrics.c.context.in_(("epoch_end", "server_eval")),
            )
        ).scalar_one()
        if not kept:
            bind.execute(
                sa.insert(metrics).values(
                    run_id=run["id"],
                    metric_name=f"val_{name}",
                    metric_value=value,
                    step=step,
                    dataset_type="validation",
                    context="epoch_end",
                    client_id=None,
                )
            )


def _rebuild_statistics(rows: list[tuple[str, float | None]]) -> dict[str, Any]:
    """The version-1 document ``{"val", "test", "youden", "other"}`` from a run's final_epoch rows.

    A NULL (SQLite's NaN) stays None: PostgreSQL's JSONB has no NaN.
    """
    stats: dict[str, Any] = {}
    for name, value in rows:
        if name == "youden_threshold":
            stats.setdefault("youden", {})["threshold"] = value
        elif name.startswith("youden_val_"):
            stats.setdefault("youden", {}).setdefault("val", {})[name[len("youden_val_") :]] = value
        elif name.startswith(("val_", "test_")):
            split, metric = name.split("_", 1)
            stats.setdefault(split, {})[metric] = value
        else:
            stats.setdefault("other", {})[name] = value
    return stats
