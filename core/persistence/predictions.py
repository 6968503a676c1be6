"""Which model said what about which image (never pixel data). The caller owns the transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from core.persistence.models import (
    predictions_table,
    utcnow,
)


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
