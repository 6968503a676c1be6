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

from sqlalchemy import Float, case, delete, func, insert, select, type_coerce, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from core.errors import RunNotFoundError
from core.jsonsafe import json_safe
from core.persistence.engine import url_for_display
from core.persistence.models import (
    RUN_STATUSES,
    artifacts_table,
    blobs_table,
    flower_runs_table,
    metrics_table,
    predictions_table,
    rounds_table,
    runs_table,
    site_updates_table,
    sites_table,
    utcnow,
    warnings_table,
)

BEST_VAL = ("recall", "auroc", "specificity")


def _best_val(name: str) -> ColumnElement[float]:
    """``best_val_<name>``, derived: the best epoch's (server: round's) validation row, stored once.

    A site's is its evaluation of the final global model (its final statistics): its own epoch rows are its
    local model's, before the server aggregated them.
    """
    m = metrics_table.alias(f"best_{name}")
    row = (
        select(func.max(m.c.metric_value))
        .where(
            m.c.run_id == runs_table.c.id,
            m.c.context.in_(("epoch_end", "server_eval")),
            m.c.metric_name == f"val_{name}",
            m.c.step == func.coalesce(runs_table.c.best_epoch, 0),
            m.c.site_id.is_(None),
        )
        .scalar_subquery()
    )
    report = runs_table.c.final_stats[("val", name)].as_float()
    site = runs_table.c.role == "site"
    return type_coerce(case((site, func.coalesce(report, row)), else_=func.coalesce(row, report)), Float)


DERIVED = {f"best_val_{name}": _best_val(name) for name in BEST_VAL}
SORT_KEYS = (*runs_table.c.keys(), *DERIVED)


def run_columns() -> list[ColumnElement[Any]]:
    """What a :class:`RunRecord` is selected from: the ``runs`` columns and the derived ``best_val_*``."""
    return [*runs_table.c, *(expression.label(name) for name, expression in DERIVED.items())]


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs`` as plain values (``best_val_*`` derived, see :func:`run_columns`)."""

    id: int
    experiment_name: str
    training_mode: str
    role: str
    status: str
    start_time: datetime
    end_time: datetime | None
    source_path: str
    config: dict[str, Any]
    server_address: str | None
    best_epoch: int | None
    final_stats: dict[str, Any] | None
    duration: float | None
    error_message: str | None
    host: str
    pid: int
    best_val_recall: float | None = None
    best_val_auroc: float | None = None
    best_val_specificity: float | None = None
    resumes: list[dict[str, Any]] | None = None


class MetricRow(NamedTuple):
    """One metric value as stored."""

    metric_name: str
    metric_value: float
    step: int
    dataset_type: str
    context: str
    site_id: str | None
    round_number: int | None


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
    flower_run_id: int | None = None,
    server_address: str | None = None,
    owner_pid: int | None = None,
) -> int:
    """Insert a run ``in_progress`` owned by this process (host and pid) and return its id.

    ``flower_run_id`` links a federated run to the Flower run it began in (``flower_runs``). ``owner_pid``
    names a longer-lived owner: a Flower app process lives for one round, the node that launched it for the
    whole federation (a run is marked interrupted once its owner is gone).
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
            server_address=server_address,
            host=socket.gethostname(),
            pid=owner_pid or os.getpid(),
        )
        .returning(runs_table.c.id)
    )
    run_id = int(result.scalar_one())
    if flower_run_id is not None:
        link = {"run_id": run_id, "flower_run_id": to_signed64(flower_run_id), "joined_at": utcnow()}
        session.execute(insert(flower_runs_table).values(**link))
    return run_id


def to_signed64(value: int) -> int:
    """Flower's unsigned 64-bit run id as the signed BIGINT of the same bits."""
    return value - 2**64 if value >= 2**63 else value


def from_signed64(value: int) -> int:
    """The inverse of :func:`to_signed64`."""
    return value + 2**64 if value < 0 else value


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: str,
    best_epoch: int | None = None,
    final_stats: dict[str, Any] | None = None,
    duration: float | None = None,
    error_message: str | None = None,
) -> None:
    """Set the final status and summary of a run (``error_message`` is kept if not given).

    ``final_stats`` is the whole document of :class:`core.reporting.RunReport`; the best epoch's validation
    numbers are its ``epoch_end`` rows (see :func:`run_columns`).
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    values: dict[str, Any] = {
        "status": status,
        "end_time": utcnow(),
        "best_epoch": best_epoch,
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
    row = session.execute(select(*run_columns()).where(runs_table.c.id == run_id)).mappings().first()
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
    column = DERIVED[sort_by] if sort_by in DERIVED else runs_table.c[sort_by]
    # id as a tie-breaker keeps pages stable when many runs share a value; runs without a value come last on
    # every backend (PostgreSQL would put NULL first when descending, SQLite last).
    direction = column.desc() if descending else column.asc()
    order = (direction.nulls_last(), runs_table.c.id.desc() if descending else runs_table.c.id.asc())
    query = (
        select(*run_columns())
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
    """Delete a run with its metrics, sites, Flower run links, rounds, site updates, warnings and artifacts.

    An artifact's bytes go with it unless another run refers to the same bytes.

    Raises
    ------
    RunNotFoundError
        If there is no such run.
    """
    get_run(session, run_id)
    # Explicit child deletes: the database cascades too, but a SQLite connection opened elsewhere without
    # PRAGMA foreign_keys would not.
    hashes = [
        row[0] for row in session.execute(select(artifacts_table.c.sha256).where(artifacts_table.c.run_id == run_id))
    ]
    tables = (metrics_table, sites_table, flower_runs_table, rounds_table, site_updates_table, warnings_table)
    for table in (*tables, artifacts_table):
        session.execute(delete(table).where(table.c.run_id == run_id))
    still_used = select(artifacts_table.c.sha256).where(artifacts_table.c.sha256.in_(hashes))
    session.execute(
        delete(blobs_table).where(blobs_table.c.sha256.in_(hashes), blobs_table.c.sha256.not_in(still_used))
    )
    # Readings stay (they are a record of what was told to whom), traceable by the model's SHA-256.
    session.execute(update(predictions_table).where(predictions_table.c.run_id == run_id).values(run_id=None))
    session.execute(delete(runs_table).where(runs_table.c.id == run_id))
