"""A federation's records: its sites, rounds, each site's outcome per round, and the runs of one Flower run.

Every function takes a session; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from core.jsonsafe import json_safe
from core.persistence.models import (
    clients_table,
    rounds_table,
    runs_table,
    site_updates_table,
)
from core.persistence.runs import RunRecord


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
