"""Reading and writing runs and their metrics. Every function takes a session; the caller owns the transaction.

Reads are Core selects returning plain values (never ORM-loaded metric rows), and each function issues a
fixed number of statements however long the run is, so opening a 300-epoch run costs what a 3-epoch one does.
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
from core.persistence.engine import url_for_display
from core.persistence.models import (
    CONTEXTS,
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
_M = metrics_table.c


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


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` so the value is valid JSON (PostgreSQL JSONB rejects NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


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
    document of :func:`core.training.evaluation.final_stats`.
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
    values: dict[str, Any] = {
        "status": status,
        "end_time": utcnow(),
        "best_epoch": best_epoch,
        "best_val_recall": _finite_or_none(best_val_recall),
        "best_val_auroc": _finite_or_none(best_val_auroc),
        "best_val_specificity": _finite_or_none(best_val_specificity),
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


def get_metrics(
    session: Session,
    run_id: int,
    *,
    names: list[str] | None = None,
    dataset_type: str | None = None,
    context: str | None = None,
    client_id: str | None = None,
    round_id: int | None = None,
) -> list[MetricRow]:
    """Return a run's metric values, filtered, ordered by step (then insertion)."""
    query = select(
        _M.metric_name, _M.metric_value, _M.step, _M.dataset_type, _M.context, _M.client_id, _M.round_id
    ).where(_M.run_id == run_id)
    if names:
        query = query.where(_M.metric_name.in_(names))
    if dataset_type:
        query = query.where(_M.dataset_type == dataset_type)
    if context:
        query = query.where(_M.context == context)
    if client_id is not None:
        query = query.where(_M.client_id == client_id)
    if round_id is not None:
        query = query.where(_M.round_id == round_id)
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


def best_metric(session: Session, run_id: int, name: str, mode: str = "max") -> tuple[int, float] | None:
    """Return ``(epoch, value)`` of the best epoch-end value of ``name`` (earliest on ties), or ``None``."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    order = _M.metric_value.desc() if mode == "max" else _M.metric_value.asc()
    row = session.execute(
        select(_M.step, _M.metric_value)
        .where(_M.run_id == run_id, _M.metric_name == name, _M.context == "epoch_end", _M.metric_value.is_not(None))
        .order_by(order, _M.step)
        .limit(1)
    ).first()
    return None if row is None else (int(row[0]), float(row[1]))


def metric_stats(session: Session, run_id: int, *, context: str | None = None) -> dict[str, dict[str, float]]:
    """Return ``{name: {"count", "min", "max", "mean", "last"}}`` in one GROUP BY query.

    ``last`` is the value at the highest step. ``context`` restricts to one context; by default every context
    except ``final_epoch`` (those are summaries, see :func:`final_stats`) is included.
    """
    if context is not None and context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {context!r}")
    scope = [_M.run_id == run_id, _M.context == context if context else _M.context != "final_epoch"]
    agg = (
        select(
            _M.metric_name.label("name"),
            func.count(_M.id).label("count"),
            func.min(_M.metric_value).label("min"),
            func.max(_M.metric_value).label("max"),
            func.avg(_M.metric_value).label("mean"),
            func.max(_M.step).label("last_step"),
        )
        .where(*scope)
        .group_by(_M.metric_name)
        .subquery()
    )
    # Join back on (name, last step) to pick the last value in the same round trip.
    query = (
        select(agg, _M.metric_value)
        .join(metrics_table, (_M.metric_name == agg.c.name) & (_M.step == agg.c.last_step))
        .where(*scope)
        .order_by(agg.c.name, _M.id)
    )
    stats: dict[str, dict[str, float]] = {}
    for row in session.execute(query):
        stats[row.name] = {
            "count": int(row.count),
            "min": value_of(row.min),
            "max": value_of(row.max),
            "mean": value_of(None if row.mean is None else float(row.mean)),
            "last": value_of(row.metric_value),
        }
    return stats


def final_stats(session: Session, run_id: int) -> dict[str, Any]:
    """The run's final statistics (see :func:`core.training.evaluation.final_stats`).

    Runs recorded before the document was kept get ``{"val": {...}, "test": {...}, "youden": {...}}``
    rebuilt from their ``final_epoch`` rows.
    """
    document = session.execute(select(runs_table.c.final_stats).where(runs_table.c.id == run_id)).scalar()
    if document:
        return dict(document)
    rows = session.execute(
        select(_M.metric_name, _M.metric_value).where(_M.run_id == run_id, _M.context == "final_epoch").order_by(_M.id)
    )
    stats: dict[str, Any] = {}
    for name, stored in rows:
        value = value_of(stored)
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


def upsert_client(session: Session, run_id: int, client_id: str, client_name: str) -> None:
    """Record a federation client for a run, renaming it if already known."""
    existing = session.execute(
        select(clients_table.c.id).where(clients_table.c.run_id == run_id, clients_table.c.client_id == client_id)
    ).scalar()
    if existing is None:
        session.execute(insert(clients_table).values(run_id=run_id, client_id=client_id, client_name=client_name))
    else:
        session.execute(update(clients_table).where(clients_table.c.id == existing).values(client_name=client_name))


def record_site_update(session: Session, update: dict[str, Any]) -> None:
    """Insert one site's outcome in one round (see :class:`~core.persistence.models.SiteUpdate`)."""
    session.execute(insert(site_updates_table).values(**update))


def record_round(
    session: Session,
    run_id: int,
    round_number: int,
    server_metrics: dict[str, Any],
    aggregated_client_metrics: dict[str, Any],
    start_time: datetime | None,
    end_time: datetime | None,
) -> None:
    """Insert or replace the summary of one federated round."""
    values = {
        "server_metrics": json_safe(server_metrics),
        "aggregated_client_metrics": json_safe(aggregated_client_metrics),
        "start_time": start_time,
        "end_time": end_time,
    }
    where = (rounds_table.c.run_id == run_id) & (rounds_table.c.round_number == round_number)
    existing = session.execute(select(rounds_table.c.id).where(where)).scalar()
    if existing is None:
        session.execute(insert(rounds_table).values(run_id=run_id, round_number=round_number, **values))
    else:
        session.execute(update(rounds_table).where(rounds_table.c.id == existing).values(**values))


def list_clients(session: Session, run_id: int) -> list[tuple[str, str]]:
    """Return ``(client_id, client_name)`` pairs of a run."""
    rows = session.execute(
        select(clients_table.c.client_id, clients_table.c.client_name)
        .where(clients_table.c.run_id == run_id)
        .order_by(clients_table.c.id)
    )
    return [(r[0], r[1]) for r in rows]


def list_rounds(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Return the round summaries of a run, in round order."""
    rows = session.execute(
        select(rounds_table).where(rounds_table.c.run_id == run_id).order_by(rounds_table.c.round_number)
    ).mappings()
    return [dict(r) for r in rows]


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def find_federated_run(session: Session, federation_run_id: str, role: str, experiment_name: str) -> int | None:
    """The id of this node's run in Flower run ``federation_run_id`` (a site's rounds all land in one run)."""
    return session.execute(
        select(runs_table.c.id)
        .where(
            runs_table.c.federation_run_id == federation_run_id,
            runs_table.c.role == role,
            runs_table.c.experiment_name == experiment_name,
        )
        .order_by(runs_table.c.id)
    ).scalar()


def federated_runs(session: Session, federation_run_id: str) -> list[RunRecord]:
    """Every run (server and sites) recorded for Flower run ``federation_run_id``, server first."""
    rows = session.execute(
        select(runs_table)
        .where(runs_table.c.federation_run_id == federation_run_id)
        .order_by(runs_table.c.role.desc(), runs_table.c.id)
    ).mappings()
    return [RunRecord(**dict(r)) for r in rows]


def record_predictions(session: Session, readings: list[dict[str, Any]]) -> None:
    """Insert readings: dicts with the columns of ``predictions`` (``time`` defaults to now)."""
    if readings:
        now = utcnow()
        session.execute(insert(predictions_table), [{"time": now} | r for r in readings])


def list_predictions(session: Session, *, run_id: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """The most recent readings (of one run's model, when given), newest first."""
    p = predictions_table.c
    query = select(predictions_table).order_by(p.time.desc(), p.id.desc()).limit(limit)
    if run_id is not None:
        query = query.where(p.run_id == run_id)
    return [dict(row) for row in session.execute(query).mappings()]
