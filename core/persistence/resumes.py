"""Reopening an interrupted, cancelled or failed run so that it continues in place (``train --resume``).

The run keeps its id, its epochs up to the kept training state and its warnings. What was recorded after that
state (the rows of an epoch that never finished) is deleted, so the resumed epochs follow with no gap and no
duplicate; the run records when and from which epoch it was resumed (``runs.resumes``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import and_, delete, or_, update
from sqlalchemy.orm import Session

from core.errors import PneumoFLError
from core.jsonsafe import json_safe
from core.persistence.models import metrics_table, runs_table, utcnow
from core.persistence.runs import RunRecord, add_run_warning, get_run

RESUMABLE = ("interrupted", "cancelled", "failed")


class ResumeRefused(PneumoFLError):
    """A run that cannot be resumed, with the reason as a sentence."""


def resumable_run(session: Session, run_id: int) -> RunRecord:
    """The run ``run_id`` if ``train --resume`` can continue it.

    Raises
    ------
    core.persistence.runs.RunNotFoundError
        If there is no such run.
    ResumeRefused
        Saying why not: a federated run, a completed run, a run still in progress.
    """
    run = get_run(session, run_id)
    if run.training_mode != "centralized":
        raise ResumeRefused(f"Run {run_id} is part of a federation; `train --resume` continues centralized runs.")
    if run.status == "completed":
        raise ResumeRefused(f"Run {run_id} completed; there is nothing to resume.")
    if run.status == "in_progress":
        raise ResumeRefused(
            f"Run {run_id} is still in progress (process {run.pid} on {run.host}). Stop it first; if that process "
            f"is gone, open the database once on {run.host} and the run is marked interrupted."
        )
    return run


def reopen_run(
    session: Session,
    run: RunRecord,
    *,
    epochs_completed: int,
    global_step: int,
    best_epoch: int | None,
) -> None:
    """Put ``run`` back in progress, owned by this process, after its first ``epochs_completed`` epochs.

    Deletes the rows recorded after that point: epoch rows past it, batch rows past ``global_step``, and the
    learning rate logged at the start of the unfinished epoch (at ``global_step`` itself; it is logged again).
    """
    m = metrics_table.c
    session.execute(
        delete(metrics_table).where(
            m.run_id == run.id,
            or_(
                and_(m.context == "epoch_end", m.step > epochs_completed),
                and_(m.context == "batch", m.step > global_step),
                and_(m.context == "batch", m.metric_name == "lr", m.step >= global_step),
            ),
        )
    )
    reason = f": {run.error_message}" if run.error_message else ""
    sentence = f"Resumed after epoch {epochs_completed}; the run had been {run.status}{reason}"
    _reopen(session, run, {"from_epoch": epochs_completed}, sentence, os.getpid(), best_epoch=best_epoch)


def _reopen(
    session: Session, run: RunRecord, point: dict[str, int], sentence: str, owner: int, **values: Any
) -> None:
    """Put ``run`` back in progress, owned by ``owner`` on this host, noting the resume (``point``) and why."""
    resume = {
        "time": utcnow().isoformat(),
        **point,
        "previous_status": run.status,
        "previous_duration": run.duration,
        "host": socket.gethostname(),
    }
    add_run_warning(session, run.id, "resume", sentence)
    session.execute(
        update(runs_table)
        .where(runs_table.c.id == run.id)
        .values(
            status="in_progress",
            end_time=None,
            error_message=None,
            final_stats=None,
            host=socket.gethostname(),
            pid=owner,
            resumes=json_safe([*(run.resumes or []), resume]),
            **values,
        )
    )


def add_earlier_duration(session: Session, run: RunRecord) -> None:
    """Count the time the run trained before it was resumed into its duration."""
    if run.duration:
        session.execute(
            update(runs_table)
            .where(runs_table.c.id == run.id, runs_table.c.duration.is_not(None))
            .values(duration=runs_table.c.duration + run.duration)
        )


def resumable_server_run(session: Session, run_id: int, owner: int | None) -> RunRecord:
    """The server run ``run_id`` if a federation can continue it (``owner``: the pid of the node continuing it).

    A run still in progress can continue only when its owner is that very node (whose Flower processes were
    killed and started again); otherwise its owner must be gone (the run is then marked interrupted).

    Raises
    ------
    core.persistence.runs.RunNotFoundError, ResumeRefused
    """
    run = get_run(session, run_id)
    if run.role != "server":
        raise ResumeRefused(f"Run {run_id} is not a federation's server run; only a server run can be continued.")
    if run.status == "completed":
        raise ResumeRefused(f"Federation run {run_id} completed; there is nothing to resume.")
    if run.status == "in_progress" and not (owner and run.pid == owner and run.host == socket.gethostname()):
        raise ResumeRefused(
            f"Federation run {run_id} is still in progress (process {run.pid} on {run.host}). Stop that server first."
        )
    return run


def reopen_federation(
    session: Session, run: RunRecord, *, from_round: int, flower_run_id: int, owner: int | None
) -> None:
    """Put server run ``run`` back in progress after round ``from_round``, as part of Flower run ``flower_run_id``.

    What it recorded of later rounds (an unfinished round's replies and rows) is deleted: the rounds that follow
    are recorded again, so the run keeps one curve with no duplicate.
    """
    from core.persistence.federation_records import link_flower_run
    from core.persistence.models import rounds_table, site_updates_table

    for table in (metrics_table, rounds_table, site_updates_table):
        session.execute(delete(table).where(table.c.run_id == run.id, table.c.round_number > from_round))
    link_flower_run(session, run.id, flower_run_id)
    sentence = f"Resumed after round {from_round}; the federation had been {run.status}"
    _reopen(session, run, {"from_round": from_round}, sentence, owner or os.getpid())


def continue_site_run(session: Session, run_id: int, flower_run_id: int, server_round: int) -> None:
    """A site's run continues with its federation, in Flower run ``flower_run_id`` from round ``server_round``.

    What it recorded of that round or later (a round the server never finished) is recorded again.
    """
    from core.persistence.federation_records import link_flower_run

    session.execute(
        delete(metrics_table).where(metrics_table.c.run_id == run_id, metrics_table.c.round_number >= server_round)
    )
    link_flower_run(session, run_id, flower_run_id)
    add_run_warning(session, run_id, "resume", f"The federation continued at round {server_round}.")
    session.execute(
        update(runs_table)
        .where(runs_table.c.id == run_id)
        .values(status="in_progress", end_time=None, error_message=None)
    )
