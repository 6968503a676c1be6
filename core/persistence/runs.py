"""Runs: their lifecycle (create, finish, status, warnings, delete) and listing.

Every function takes a session; the caller owns the transaction. Reads are Core selects returning plain values.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from core.errors import RunNotFoundError
from core.jsonsafe import json_safe
from core.persistence.engine import url_for_display
from core.persistence.models import (
    RUN_STATUSES,
    clients_table,
    metrics_table,
    predictions_table,
    rounds_table,
    runs_table,
    site_updates_table,
    utcnow,
    warnings_table,
)

SORT_KEYS = tuple(runs_table.c.keys())


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs`` as plain values."""

    id: int
    experiment_name: str
    training_mode: str
    role: str
    status: str
    start_time: datetime
    end_time: datetime | None
    source_path: str
    config: dict[str, Any]
    federation_run_id: str | None
    server_address: str | None
    best_epoch: int | None
    best_val_recall: float | None
    best_val_auroc: float | None
    best_val_specificity: float | None
    final_stats: dict[str, Any] | None
    duration: float | None
    error_message: str | None
    host: str
    pid: int


class MetricRow(NamedTuple):
    """One metric value as stored."""

    metric_name: str
    metric_value: float
    step: int
    dataset_type: str
    context: str
    client_id: str | None
    round_id: int | None


def value_of(stored: float | None) -> float:
    """SQLite stores NaN as NULL; give it back as NaN."""
    return math.nan if stored is None else stored


def create_run(
    session: Session,
    *,
    experiment_name: str,
    training_mode: str = "centralized",
    role: str = "standalone",
    config: dict[str, Any],
    source_path: str = "",
    federation_run_id: str | None = None,
    server_address: str | None = None,
    owner_pid: int | None = None,
) -> int:
    """Insert a run ``in_progress`` owned by this process (host and pid) and return its id.

    ``owner_pid`` names a longer-lived owner: a Flower app process lives for one round, the node that
    launched it for the whole federation (a run is marked interrupted once its owner is gone).
    """
    result = session.execute(
        insert(runs_table)
        .values(
            experiment_name=experiment_name,
            training_mode=training_mode,
            role=role,
            status="in_progress",
            start_time=utcnow(),
            source_path=source_path,
            config=json_safe(config),
            federation_run_id=federation_run_id,
            server_address=server_address,
            host=socket.gethostname(),
            pid=owner_pid or os.getpid(),
        )
        .returning(runs_table.c.id)
    )
    return int(result.scalar_one())


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: str,
    best_epoch: int | None = None,
    best_val_recall: float | None = None,
    best_val_auroc: float | None = None,
    best_val_specificity: float | None = None,
    final_stats: dict[str, Any] | None = None,
    duration: float | None = None,
    error_message: str | None = None,
) -> None:
    """Set the final status and summary of a run (``error_message`` is kept if not given).

    ``best_val_*`` are the best epoch's (or round's) validation metrics; ``final_stats`` is the whole
    document of :class:`core.reporting.RunReport`.
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    values: dict[str, Any] = {
        "status": status,
        "end_time": utcnow(),
        "best_epoch": best_epoch,
        "best_val_recall": finite_or_none(best_val_recall),
        "best_val_auroc": finite_or_none(best_val_auroc),
        "best_val_specificity": finite_or_none(best_val_specificity),
        "final_stats": json_safe(final_stats) if final_stats else None,
        "duration": duration,
    }
    if error_message is not None:
        values["error_message"] = error_message
    session.execute(update(runs_table).where(runs_table.c.id == run_id).values(**values))


def set_run_status(session: Session, run_ids: list[int], status: str, message: str | None = None) -> None:
    """Change the status of runs, keeping what they recorded (``end_time`` is set if it was not)."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    if not run_ids:
        return
    values: dict[str, Any] = {"status": status, "end_time": func.coalesce(runs_table.c.end_time, utcnow())}
    if message is not None:
        values["error_message"] = message
    session.execute(update(runs_table).where(runs_table.c.id.in_(run_ids)).values(**values))


def owned_runs(session: Session, pid: int, role: str, status: str = "in_progress") -> list[int]:
    """Ids of this host's runs owned by process ``pid`` with ``role`` and ``status``."""
    rows = session.execute(
        select(runs_table.c.id).where(
            runs_table.c.host == socket.gethostname(),
            runs_table.c.pid == pid,
            runs_table.c.role == role,
            runs_table.c.status == status,
        )
    )
    return [int(r) for r in rows.scalars()]


def set_run_error(session: Session, run_id: int, message: str) -> None:
    """Store an error message on a run without changing its status."""
    session.execute(update(runs_table).where(runs_table.c.id == run_id).values(error_message=message))


def add_run_warning(session: Session, run_id: int, source: str, message: str, time: datetime | None = None) -> None:
    """Keep a warning sentence with the run (see ``run_warnings``)."""
    session.execute(
        insert(warnings_table).values(run_id=run_id, time=time or utcnow(), source=source[:32], message=message)
    )


def run_warnings(session: Session, run_id: int) -> list[dict[str, Any]]:
    """The run's warnings, oldest first, as ``{"time", "source", "message"}``."""
    w = warnings_table.c
    rows = session.execute(select(w.time, w.source, w.message).where(w.run_id == run_id).order_by(w.time, w.id)).all()
    return [{"time": time, "source": source, "message": message} for time, source, message in rows]


def get_run(session: Session, run_id: int) -> RunRecord:
    """Return run ``run_id``.

    Raises
    ------
    RunNotFoundError
        If there is no such run.
    """
    row = session.execute(select(runs_table).where(runs_table.c.id == run_id)).mappings().first()
    if row is None:
        where = url_for_display(session.get_bind().engine.url)
        raise RunNotFoundError(f"Run {run_id} does not exist in {where}. `pneumofl runs list` shows the runs.")
    return RunRecord(**row)


def _run_filters(training_mode: str | None, status: str | None, name_contains: str | None) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if training_mode:
        filters.append(runs_table.c.training_mode == training_mode)
    if status:
        filters.append(runs_table.c.status == status)
    if name_contains:
        escaped = name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        filters.append(runs_table.c.experiment_name.ilike(f"%{escaped}%", escape="\\"))
    return filters


def list_runs(
    session: Session,
    *,
    training_mode: str | None = None,
    status: str | None = None,
    name_contains: str | None = None,
    sort_by: str = "start_time",
    descending: bool = True,
    limit: int = 100,
    offset: int = 0,
) -> list[RunRecord]:
    """Return one page of runs, filtered and sorted.

    Raises
    ------
    ValueError
        If ``sort_by`` is not a column of ``runs``.
    """
    if sort_by not in SORT_KEYS:
        raise ValueError(f"cannot sort runs by {sort_by!r}; valid keys: {', '.join(SORT_KEYS)}")
    column = runs_table.c[sort_by]
    # id as a tie-breaker keeps pages stable when many runs share a value.
    order = (column.desc(), runs_table.c.id.desc()) if descending else (column.asc(), runs_table.c.id.asc())
    query = (
        select(runs_table)
        .where(*_run_filters(training_mode, status, name_contains))
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    )
    return [RunRecord(**row) for row in session.execute(query).mappings()]


def count_runs(
    session: Session,
    *,
    training_mode: str | None = None,
    status: str | None = None,
    name_contains: str | None = None,
) -> int:
    """Count the runs :func:`list_runs` would page through with the same filters."""
    query = select(func.count()).select_from(runs_table).where(*_run_filters(training_mode, status, name_contains))
    return int(session.execute(query).scalar_one())


def delete_run(session: Session, run_id: int) -> None:
    """Delete a run and (by cascade) its metrics, clients, rounds, site updates and warnings.

    Raises
    ------
    RunNotFoundError
        If there is no such run.
    """
    get_run(session, run_id)
    # Explicit child deletes: the database cascades too, but a SQLite connection opened elsewhere without
    # PRAGMA foreign_keys would not.
    for table in (metrics_table, clients_table, rounds_table, site_updates_table, warnings_table):
        session.execute(delete(table).where(table.c.run_id == run_id))
    # Readings stay (they are a record of what was told to whom), traceable by the model's SHA-256.
    session.execute(update(predictions_table).where(predictions_table.c.run_id == run_id).values(run_id=None))
    session.execute(delete(runs_table).where(runs_table.c.id == run_id))


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is missing or not finite (stored numbers are finite or NULL)."""
    return None if value is None or not math.isfinite(value) else float(value)
