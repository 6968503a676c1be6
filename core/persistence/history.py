"""A recorded run as chart-ready numpy series (never ORM metric rows).

Epoch metrics and final statistics are a few small queries, so a viewer can paint at once. Batch-level series can
hold millions of points: :func:`load_batch_series` reads them one series at a time through the driver's own cursor
straight into numpy (about a second per million points on SQLite), meant for a background thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.persistence.metric_reads import final_stats
from core.persistence.models import metrics_table as m
from core.persistence.runs import RunRecord, get_run
from core.reporting import RunReport

Arrays = tuple[np.ndarray, np.ndarray]

# A loose index scan: one index probe per distinct name instead of reading every row of the run.
_NAMES_SQL = text(
    """
    WITH RECURSIVE names(name) AS (
        SELECT MIN(metric_name) FROM run_metrics WHERE run_id = :run_id
        UNION ALL
        SELECT (SELECT MIN(metric_name) FROM run_metrics WHERE run_id = :run_id AND metric_name > names.name)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name FROM names WHERE name IS NOT NULL
    """
)
_SERIES_SQL = (
    "SELECT step, metric_value FROM run_metrics WHERE run_id = {p} AND metric_name = {p} AND context = {p} "
    "AND site_id IS NULL ORDER BY step"
)

_BUCKET_SQL = (
    "SELECT min(step), max(step), min(metric_value), max(metric_value) FROM run_metrics WHERE run_id = ? AND "
    "context = 'batch' AND metric_name = ? AND site_id IS NULL AND step >= ? AND step < ?"
)


@dataclass
class RunHistory:
    """Everything the dashboard draws for one run."""

    run: RunRecord
    epoch_series: dict[str, Arrays] = field(default_factory=dict)  # "val_recall" -> (epochs, values)
    batch_series: dict[str, Arrays] = field(default_factory=dict)  # "train_loss", "grad_norm", "lr" -> (steps, values)
    final_stats: dict[str, Any] = field(default_factory=dict)
    early_stopping_epoch: int | None = None
    roc: dict[str, list[float]] | None = None
    batch_loaded: bool = False

    @property
    def report(self) -> RunReport:
        """``final_stats`` read as a typed report (older versions upgraded)."""
        return RunReport.from_dict(self.final_stats)


def load_run_history(session: Session, run_id: int, *, include_batch: bool = True) -> RunHistory:
    """Load a run for display.

    Parameters
    ----------
    session
        Caller-owned session.
    run_id
        The run.
    include_batch
        Also load every batch-level series (see :func:`load_batch_series`); leave it off to paint at once.

    Raises
    ------
    core.errors.RunNotFoundError
        If the run does not exist.
    """
    history = RunHistory(run=get_run(session, run_id))
    if history.run.role == "server":
        # A federation server has rounds, not epochs: its evaluation of each global model, and the sites'
        # weighted training metrics of the round.
        where = m.c.site_id.is_(None) & (
            (m.c.context == "server_eval")
            | ((m.c.context == "aggregated") & m.c.metric_name.like("train\\_%", escape="\\"))
        )
    else:
        where = (m.c.context == "epoch_end") & m.c.site_id.is_(None)
    rows = session.execute(
        select(m.c.metric_name, m.c.step, m.c.metric_value)
        .where(m.c.run_id == run_id, where)
        .order_by(m.c.metric_name, m.c.step)
    ).all()
    for name, steps, values in _group(rows):
        if name == "early_stopping":
            history.early_stopping_epoch = int(steps[-1])
        else:
            history.epoch_series[name] = (steps, values)
    history.final_stats = final_stats(session, run_id)
    roc = history.report.roc
    if roc:
        history.roc = {"fpr": list(roc.fpr), "tpr": list(roc.tpr)}
    if include_batch:
        history.batch_series = load_batch_series(session, run_id)
        history.batch_loaded = True
    return history


def metric_names(session: Session, run_id: int) -> list[str]:
    """Every distinct metric name of a run, in name order, without scanning its rows."""
    return [row[0] for row in session.execute(_NAMES_SQL, {"run_id": run_id})]


def load_batch_series(session: Session, run_id: int, names: list[str] | None = None) -> dict[str, Arrays]:
    """Every batch-context series of a run (or only ``names``) as ``{name: (steps, values)}``."""
    connection = session.connection()
    placeholder = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    sql = _SERIES_SQL.format(p=placeholder)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    series: dict[str, Arrays] = {}
    try:
        for name in names if names is not None else metric_names(session, run_id):
            cursor.execute(sql, (run_id, name, "batch"))
            rows = cursor.fetchall()
            if rows:
                data = np.array(rows, dtype=np.float64)  # NULL (a stored NaN) becomes nan
                series[name] = (data[:, 0], data[:, 1])
    finally:
        cursor.close()
    return series


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


def downsampled_batch_series(
    session: Session, run_id: int, names: list[str], max_points: int = 2000
) -> dict[str, Arrays]:
    """Batch series thinned inside the database to about ``max_points`` points, keeping every bucket's peaks.

    A run with a million batch points is a few thousand rows over the wire: each bucket of consecutive steps
    gives its lowest and its highest value (at the bucket's first and last step), as the desktop's peak
    downsampling draws it. Series at or under ``max_points`` come back whole.
    """
    series: dict[str, Arrays] = {}
    where = (m.c.run_id == run_id) & (m.c.context == "batch") & m.c.site_id.is_(None)
    # SQLite sorts a GROUP BY on an expression through a temporary B-tree (a second over a million rows); one
    # range query per bucket walks the (run, context, name, step) index instead, three times faster. A server
    # database aggregates by hashing, and one query saves the round trips.
    per_bucket = session.get_bind().dialect.name == "sqlite"
    for name in names:
        of_name = where & (m.c.metric_name == name)
        # Up to max_points + 1 rows in step order: a short series whole, or the first step of a long one.
        head = session.execute(
            select(m.c.step, m.c.metric_value).where(of_name).order_by(m.c.step).limit(max_points + 1)
        ).all()
        if not head:
            continue
        if len(head) <= max_points:
            data = np.array([(s, np.nan if v is None else v) for s, v in head], dtype=np.float64)
            series[name] = (data[:, 0], data[:, 1])
            continue
        low = int(head[0][0])
        high = int(session.execute(select(m.c.step).where(of_name).order_by(m.c.step.desc()).limit(1)).scalar_one())
        width = max(1, -(-(high - low + 1) // (max_points // 2)))
        peaks = select(func.min(m.c.step), func.max(m.c.step), func.min(m.c.metric_value), func.max(m.c.metric_value))
        if per_bucket:  # a thousand small queries: straight to the driver, as load_batch_series does
            cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                rows = [
                    row
                    for start in range(low, high + 1, width)
                    if (row := cursor.execute(_BUCKET_SQL, (run_id, name, start, start + width)).fetchone())[0]
                    is not None
                ]
            finally:
                cursor.close()
        else:
            bucket = ((m.c.step - low) // width).label("bucket")  # integer division on every backend
            rows = session.execute(peaks.where(of_name).group_by(bucket).order_by(bucket)).all()
        steps = np.empty(2 * len(rows), dtype=np.float64)
        values = np.empty(2 * len(rows), dtype=np.float64)
        for i, (first, last, lowest, highest) in enumerate(rows):
            steps[2 * i], steps[2 * i + 1] = first, last if last != first else first + 0.5
            values[2 * i] = np.nan if lowest is None else lowest
            values[2 * i + 1] = np.nan if highest is None else highest
        series[name] = (steps, values)
    return series
