"""Persistence reads only the tests use: a run's best value of a metric and per-metric statistics."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.persistence.metric_reads import _M
from core.persistence.models import (
    CONTEXTS,
    metrics_table,
)
from core.persistence.runs import value_of


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
    is included.
    """
    if context is not None and context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {context!r}")
    scope = [_M.run_id == run_id, *([_M.context == context] if context else [])]
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
