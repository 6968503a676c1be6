"""What a run report shows, read once from the database: the run, its epoch series and its final statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.errors import DatabaseError
from core.persistence import Database
from core.persistence.engine import describe_failure
from core.persistence.history import Arrays, load_run_history
from core.persistence.runs import RunRecord
from core.reporting import RunReport


@dataclass
class ReportContent:
    """One run as the report draws it; sections missing from older or unfinished runs are simply empty."""

    run: RunRecord
    report: RunReport = field(default_factory=RunReport)
    series: dict[str, Arrays] = field(default_factory=dict)
    roc: dict[str, list[float]] | None = None

    @property
    def training(self) -> dict[str, Any]:
        """The training configuration (a federated server run nests the sites' one under ``training``)."""
        config = self.run.config or {}
        return config.get("training", config)

    @property
    def step_name(self) -> str:
        """``round`` for a federation server (one point per round), ``epoch`` otherwise."""
        return "round" if self.run.role == "server" else "epoch"

    @property
    def splits(self) -> list[str]:
        """The evaluated splits (``val``, ``test``) with final metrics."""
        return self.report.evaluated

    @property
    def has_final_stats(self) -> bool:
        """Whether the run got as far as evaluating its chosen model."""
        return bool(self.splits)

    @property
    def threshold(self) -> float:
        """The run's decision threshold (pneumonia when the probability is above it)."""
        return self.report.threshold_or(float(self.training.get("threshold", 0.5)))


def load_content(db: Database, run_id: int) -> ReportContent:
    """Read everything the report of run ``run_id`` shows.

    Raises
    ------
    core.errors.RunNotFoundError
        If the run does not exist.
    core.errors.DatabaseError
        If the database cannot be read.
    """
    try:
        with db.begin() as session:
            history = load_run_history(session, run_id, include_batch=False)
    except SQLAlchemyError as exc:
        raise DatabaseError(describe_failure(exc, db.engine.url, "read from")) from exc
    report = history.report
    roc = report.roc.to_dict() if report.roc else history.roc
    return ReportContent(run=history.run, report=report, series=history.epoch_series, roc=roc)


def local_time(moment: datetime | None) -> str:
    """``2025-03-01 14:05 CET`` in this computer's time zone (stored times are UTC), or ``-``."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def generated_at() -> str:
    """The time the report is written, for its footer."""
    return local_time(datetime.now(UTC))
