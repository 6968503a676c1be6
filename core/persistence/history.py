"""A recorded run as chart-ready numpy series, read with a handful of Core queries (never ORM metric rows).

Batch-level series can hold millions of points. ``max_points`` asks the database for a peak-preserving overview
instead (the min and the max of each of ``max_points / 2`` step buckets), so a viewer can paint at once and load the
full resolution afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from core.persistence.models import metrics_table as m
from core.persistence.repository import RunRecord, final_stats, get_run

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass
class RunHistory:
    """Everything the dashboard draws for one run."""

    run: RunRecord
    epoch_series: dict[str, Arrays] = field(default_factory=dict)  # "val_recall" -> (epochs, values)
    batch_series: dict[str, Arrays] = field(default_factory=dict)  # "train_loss", "grad_norm", "lr" -> (steps, values)
    final_stats: dict[str, Any] = field(default_factory=dict)
    early_stopping_epoch: int | None = None
    roc: dict[str, list[float]] | None = None
    overview: bool = False  # batch series are min/max overviews, not every point


def load_run_history(session: Session, run_id: int, *, max_points: int | None = None) -> RunHistory:
    """Load a run for display.

    Parameters
    ----------
    session
        Caller-owned session.
    run_id
        The run.
    max_points
        If given, batch series longer than this come back as a min/max-per-bucket overview.

    Raises
    ------
    core.errors.RunNotFoundError
        If the run does not exist.
    """
    history = RunHistory(run=get_run(session, run_id))
    rows = session.execute(
        select(m.c.metric_name, m.c.step, m.c.metric_value)
        .where(m.c.run_id == run_id, m.c.context == "epoch_end", m.c.client_id.is_(None))
        .order_by(m.c.metric_name, m.c.step)
    ).all()
    for name, steps, values in _group(rows):
        if name == "early_stopping":
            history.early_stopping_epoch = int(steps[-1])
        else:
            history.epoch_series[name] = (steps, values)
    history.batch_series, history.overview = _batch_series(session, run_id, max_points)
    history.final_stats = final_stats(session, run_id)
    curve = session.execute(
        select(m.c.metric_name, m.c.step, m.c.metric_value)
        .where(m.c.run_id == run_id, m.c.context == "curve", m.c.metric_name.in_(("roc_fpr", "roc_tpr")))
        .order_by(m.c.metric_name, m.c.step)
    ).all()
    points = {name: values.tolist() for name, _, values in _group(curve)}
    if "roc_fpr" in points and "roc_tpr" in points:
        history.roc = {"fpr": points["roc_fpr"], "tpr": points["roc_tpr"]}
    return history


def _batch_series(session: Session, run_id: int, max_points: int | None) -> tuple[dict[str, Arrays], bool]:
    base = and_(m.c.run_id == run_id, m.c.context == "batch", m.c.client_id.is_(None))
    counts = dict(session.execute(select(m.c.metric_name, func.count()).where(base).group_by(m.c.metric_name)).all())
    series: dict[str, Arrays] = {}
    full = [n for n, c in counts.items() if max_points is None or c <= max_points]
    if full:
        rows = session.execute(
            select(m.c.metric_name, m.c.step, m.c.metric_value)
            .where(base, m.c.metric_name.in_(full))
            .order_by(m.c.metric_name, m.c.step)
        ).all()
        series.update({name: (steps, values) for name, steps, values in _group(rows)})
    big = [n for n in counts if n not in full]
    for name in big:
        series[name] = _overview(session, run_id, name, max_points or 1)
    return series, bool(big)


def _overview(session: Session, run_id: int, name: str, max_points: int) -> Arrays:
    """Min and max of each step bucket, in step order: peaks survive, the point count is bounded."""
    where = and_(m.c.run_id == run_id, m.c.context == "batch", m.c.metric_name == name, m.c.client_id.is_(None))
    lo, hi = session.execute(select(func.min(m.c.step), func.max(m.c.step)).where(where)).one()
    width = max(1, -(-(hi - lo + 1) // max(1, max_points // 2)))
    bucket = ((m.c.step - lo) / width).label("bucket")
    if session.get_bind().dialect.name == "postgresql":  # integer division there too
        bucket = func.floor((m.c.step - lo) / width).label("bucket")
    rows = session.execute(
        select(
            bucket,
            func.min(m.c.step),
            func.max(m.c.step),
            func.min(m.c.metric_value),
            func.max(m.c.metric_value),
        )
        .where(where)
        .group_by(bucket)
        .order_by(bucket)
    ).all()
    xs = np.empty(2 * len(rows))
    ys = np.empty(2 * len(rows))
    for i, (_, first, last, low, high) in enumerate(rows):
        xs[2 * i], xs[2 * i + 1] = first, last
        ys[2 * i], ys[2 * i + 1] = low, high
    return xs, ys


def _group(rows: list[Any]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Split rows sorted by (name, step) into one (name, steps, values) triple per name."""
    if not rows:
        return []
    names = [r[0] for r in rows]
    steps = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    values = np.fromiter((np.nan if r[2] is None else r[2] for r in rows), dtype=np.float64, count=len(rows))
    out, start = [], 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            out.append((names[start], steps[start:i], values[start:i]))
            start = i
    return out
