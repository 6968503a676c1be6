"""How a federation run ended, and closing its records at the server (and, in a local federation, the sites)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.persistence import Database
from core.persistence.federation_records import federated_runs
from core.persistence.runs import finish_run, set_run_status


@dataclass
class FederationOutcome:
    """How a federation run ended, with the runs it recorded."""

    flower_run_id: int
    status: str  # completed, failed, cancelled
    message: str = ""
    server_run_id: int | None = None
    site_run_ids: list[int] = field(default_factory=list)
    inbound_bytes: int = 0
    outbound_bytes: int = 0
    seconds: float = 0.0


def close_federation_runs(db_url: str, outcome: FederationOutcome) -> FederationOutcome:
    """Close the runs of ``outcome``'s Flower run still ``in_progress`` with how it ended; fill in their ids.

    A completed Flower run whose ServerApp recorded a failure (a failed round) ends as the ServerApp said; a
    cancelled federation is cancelled everywhere, keeping what each run recorded.
    """
    db = Database.open(db_url)
    try:
        with db.begin() as session:
            runs = federated_runs(session, outcome.flower_run_id)
            completed = outcome.status == "completed"
            for run in runs:
                if run.role == "server":
                    outcome.server_run_id = run.id
                    if run.status != "in_progress" and completed:
                        outcome.status = run.status  # e.g. the ServerApp recorded a failed round
                        outcome.message = run.error_message or outcome.message
                else:
                    outcome.site_run_ids.append(run.id)
            for run in runs:
                if run.status == "in_progress":
                    finish_run(session, run.id, status=outcome.status, error_message=outcome.message or None)
            if outcome.status == "cancelled":
                # A stopped federation is stopped everywhere: a site that had finished its last round
                # trained for a federation that did not complete. What each run recorded is kept.
                done = [r.id for r in runs if r.status not in ("in_progress", "cancelled")]
                set_run_status(session, done, "cancelled", outcome.message or "Stopped by the user.")
    finally:
        db.close()
    return outcome
