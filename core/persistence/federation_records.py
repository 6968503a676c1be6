"""A federation's records: its sites, rounds, each site's outcome per round, and the runs of one Flower run.

Every function takes a session; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, insert, select, update
from sqlalchemy.orm import Session

from core.jsonsafe import json_safe
from core.persistence.models import (
    flower_runs_table,
    rounds_table,
    runs_table,
    site_updates_table,
    sites_table,
    utcnow,
)
from core.persistence.runs import RunRecord, from_signed64, run_columns, to_signed64


def upsert_site(session: Session, run_id: int, site_id: str, site_name: str) -> None:
    """Record a site of a federated run, renaming it if already known."""
    existing = session.execute(
        select(sites_table.c.id).where(sites_table.c.run_id == run_id, sites_table.c.site_id == site_id)
    ).scalar()
    if existing is None:
        session.execute(insert(sites_table).values(run_id=run_id, site_id=site_id, site_name=site_name))
    else:
        session.execute(update(sites_table).where(sites_table.c.id == existing).values(site_name=site_name))


def record_site_update(session: Session, update: dict[str, Any]) -> None:
    """Insert one site's outcome in one round (see :class:`~core.persistence.models.SiteUpdate`)."""
    session.execute(insert(site_updates_table).values(**update))


def record_round(
    session: Session,
    run_id: int,
    round_number: int,
    server_metrics: dict[str, Any],
    aggregated_site_metrics: dict[str, Any],
    start_time: datetime | None,
    end_time: datetime | None,
) -> None:
    """Insert or replace the summary of one federated round."""
    values = {
        "server_metrics": json_safe(server_metrics),
        "aggregated_site_metrics": json_safe(aggregated_site_metrics),
        "start_time": start_time,
        "end_time": end_time,
    }
    where = (rounds_table.c.run_id == run_id) & (rounds_table.c.round_number == round_number)
    existing = session.execute(select(rounds_table.c.id).where(where)).scalar()
    if existing is None:
        session.execute(insert(rounds_table).values(run_id=run_id, round_number=round_number, **values))
    else:
        session.execute(update(rounds_table).where(rounds_table.c.id == existing).values(**values))


def list_sites(session: Session, run_id: int) -> list[tuple[str, str]]:
    """Return ``(site_id, site_name)`` pairs of a run, in the order they were first seen."""
    rows = session.execute(
        select(sites_table.c.site_id, sites_table.c.site_name)
        .where(sites_table.c.run_id == run_id)
        .order_by(sites_table.c.id)
    )
    return [(r[0], r[1]) for r in rows]


def list_rounds(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Return the round summaries of a run, in round order."""
    rows = session.execute(
        select(rounds_table).where(rounds_table.c.run_id == run_id).order_by(rounds_table.c.round_number)
    ).mappings()
    return [dict(r) for r in rows]


def link_flower_run(session: Session, run_id: int, flower_run_id: int) -> None:
    """Record that run ``run_id`` took part in Flower run ``flower_run_id`` (once; a resumed run adds another)."""
    stored = to_signed64(flower_run_id)
    f = flower_runs_table.c
    if session.execute(select(f.id).where(f.run_id == run_id, f.flower_run_id == stored)).scalar() is None:
        session.execute(insert(flower_runs_table).values(run_id=run_id, flower_run_id=stored, joined_at=utcnow()))


def flower_run_ids(session: Session, run_id: int) -> list[int]:
    """The Flower runs run ``run_id`` took part in, oldest first."""
    f = flower_runs_table.c
    rows = session.execute(select(f.flower_run_id).where(f.run_id == run_id).order_by(f.joined_at, f.id))
    return [from_signed64(r) for r in rows.scalars()]


def find_federated_run(session: Session, flower_run_id: int, role: str, experiment_name: str) -> int | None:
    """The id of this node's run in Flower run ``flower_run_id`` (a site's rounds all land in one run)."""
    return session.execute(
        select(runs_table.c.id)
        .join(flower_runs_table, flower_runs_table.c.run_id == runs_table.c.id)
        .where(
            flower_runs_table.c.flower_run_id == to_signed64(flower_run_id),
            runs_table.c.role == role,
            runs_table.c.experiment_name == experiment_name,
        )
        .order_by(runs_table.c.id)
    ).scalar()


def federated_runs(session: Session, flower_run_id: int) -> list[RunRecord]:
    """Every run (server and sites) recorded for Flower run ``flower_run_id``, server first."""
    server_first = case((runs_table.c.role == "server", 0), else_=1)
    rows = session.execute(
        select(*run_columns())
        .join(flower_runs_table, flower_runs_table.c.run_id == runs_table.c.id)
        .where(flower_runs_table.c.flower_run_id == to_signed64(flower_run_id))
        .order_by(server_first, runs_table.c.id)
    ).mappings()
    return [RunRecord(**dict(r)) for r in rows]
