"""Reading a run's metrics and final statistics. Every function takes a session; the caller owns the transaction.

Reads are Core selects returning plain values (never ORM-loaded metric rows), and each function issues a
fixed number of statements however long the run is, so opening a 300-epoch run costs what a 3-epoch one does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.persistence.models import (
    metrics_table,
    runs_table,
)
from core.persistence.runs import MetricRow, value_of
from core.reporting import RunReport

_M = metrics_table.c


def get_metrics(
    session: Session,
    run_id: int,
    *,
    names: list[str] | None = None,
    dataset_type: str | None = None,
    context: str | None = None,
    site_id: str | None = None,
    round_number: int | None = None,
) -> list[MetricRow]:
    """Return a run's metric values, filtered, ordered by step (then insertion)."""
    query = select(
        _M.metric_name, _M.metric_value, _M.step, _M.dataset_type, _M.context, _M.site_id, _M.round_number
    ).where(_M.run_id == run_id)
    if names:
        query = query.where(_M.metric_name.in_(names))
    if dataset_type:
        query = query.where(_M.dataset_type == dataset_type)
    if context:
        query = query.where(_M.context == context)
    if site_id is not None:
        query = query.where(_M.site_id == site_id)
    if round_number is not None:
        query = query.where(_M.round_number == round_number)
    rows = session.execute(query.order_by(_M.step, _M.id))
    return [MetricRow(r[0], value_of(r[1]), *r[2:]) for r in rows]


def metric_series(
    session: Session, run_id: int, name: str, context: str = "epoch_end"
) -> tuple[list[int], list[float]]:
    """Return ``(steps, values)`` of one metric, for charts."""
    rows = session.execute(
        select(_M.step, _M.metric_value)
        .where(_M.run_id == run_id, _M.metric_name == name, _M.context == context)
        .order_by(_M.step, _M.id)
    ).all()
    return [r[0] for r in rows], [value_of(r[1]) for r in rows]


def epoch_table(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Return one dict per epoch, ``{"epoch": n, "train_loss": ..., "val_recall": ...}``, in one query.

    The ``early_stopping`` marker row is left out: it is an event, not a per-epoch column.
    """
    rows = session.execute(
        select(_M.step, _M.metric_name, _M.metric_value)
        .where(_M.run_id == run_id, _M.context == "epoch_end", _M.metric_name != "early_stopping")
        .order_by(_M.step, _M.id)
    )
    table: dict[int, dict[str, Any]] = {}
    for step, name, value in rows:
        table.setdefault(step, {"epoch": step})[name] = value_of(value)
    return list(table.values())


def run_report(session: Session, run_id: int) -> RunReport:
    """The run's final statistics as a typed report, whatever version they were stored in."""
    return RunReport.from_dict(final_stats(session, run_id))


def final_stats(session: Session, run_id: int) -> dict[str, Any]:
    """The run's final statistics as stored (see :class:`core.reporting.RunReport`); ``{}`` if it has none."""
    document = session.execute(select(runs_table.c.final_stats).where(runs_table.c.id == run_id)).scalar()
    return dict(document) if document else {}
