"""SQLAlchemy 2.0 models of every table: the runs and their rows, the database's identity and its audit trail.

Runs: runs, flower_runs, run_metrics, sites, rounds, site_updates, run_warnings, predictions, and what runs made
(run_artifacts, referring to artifact_blobs by SHA-256). The database's identity and
its tamper-evident audit trail (see ``core.audit``): database_identity, audit_entries, audit_head.

The Alembic revisions in ``core/persistence/migrations`` must produce exactly this schema; a test compares
them with ``alembic.autogenerate.compare_metadata`` on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TRAINING_MODES = ("centralized", "federated")
ROLES = ("standalone", "server", "site")
RUN_STATUSES = ("in_progress", "completed", "failed", "cancelled", "interrupted")
DATASET_TYPES = ("train", "validation", "test", "other")
# Final statistics live only in ``runs.final_stats`` (migration 0008 folded the old final_epoch/curve rows in).
CONTEXTS = ("epoch_end", "batch", "aggregated", "server_eval")

# JSONB on PostgreSQL (indexable, compact); plain JSON text elsewhere.
JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for long federations.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite keeps no zone, so values are stored as naive UTC there and given ``timezone.utc`` back on load;
    PostgreSQL stores ``timestamptz`` and returns aware values, which are normalised to UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (naive values are taken as UTC already)."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every PneumoFL table."""


class Run(Base):
    """One training run (centralized, or one node's view of a federated run)."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_start_time", "start_time"),
        Index("ix_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_name: Mapped[str] = mapped_column(String(255))
    training_mode: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    source_path: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)
    server_address: Mapped[str | None] = mapped_column(String(255))
    # The best epoch's (or round's) validation numbers are its rows in run_metrics; see runs.BEST_VAL.
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    # The whole final statistics document (intervals, operating points, calibration, temperature).
    final_stats: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    duration: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    # Each time the run was resumed: ``{"time", "from_epoch", "previous_status", "host"}`` (NULL: never).
    resumes: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType)


class FlowerRun(Base):
    """A Flower run that a PneumoFL run took part in.

    One federation is one PneumoFL run at the server and one at each site, but Flower gives every submission
    its own run id: a resumed federation is a new Flower run, so a PneumoFL run may have several of these.
    """

    __tablename__ = "flower_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "flower_run_id", name="uq_flower_runs_run_flower"),
        Index("ix_flower_runs_flower_run_id", "flower_run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    # Flower's run ids are unsigned 64-bit; they are kept as the signed value of the same bits.
    flower_run_id: Mapped[int] = mapped_column(BigInteger)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RunMetric(Base):
    """One metric value. Written only through Core ``insert()`` executemany (never ORM unit-of-work)."""

    __tablename__ = "run_metrics"
    __table_args__ = (
        Index("ix_run_metrics_run_name_step", "run_id", "metric_name", "step"),
        Index("ix_run_metrics_run_round", "run_id", "round_number"),
        # Opening a run reads its epoch, final and curve rows by context: without this index that scans every
        # batch row of the run (millions on a long one). It covers series reads (site and value included), so
        # thinning a million batch points never visits the table (migration 0006).
        Index("ix_run_metrics_series", "run_id", "context", "metric_name", "step", "site_id", "metric_value"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    metric_name: Mapped[str] = mapped_column(String(255))
    # Nullable because SQLite stores a NaN float as NULL; readers turn NULL back into NaN.
    metric_value: Mapped[float | None] = mapped_column(Float)
    step: Mapped[int] = mapped_column(Integer)
    dataset_type: Mapped[str] = mapped_column(String(16))
    context: Mapped[str] = mapped_column(String(16))
    # The site a federated row belongs to (NULL: the run's own number); see Site.
    site_id: Mapped[str | None] = mapped_column(String(64))
    round_number: Mapped[int | None] = mapped_column(Integer)


class Site(Base):
    """A site seen by a federated run: its id in the federation (Flower's node id, as text) and its name."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("run_id", "site_id", name="uq_sites_run_site"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    site_id: Mapped[str] = mapped_column(String(64))
    site_name: Mapped[str] = mapped_column(String(255))


class Round(Base):
    """One federated round's summary."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "round_number", name="uq_rounds_run_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    round_number: Mapped[int] = mapped_column(Integer)
    server_metrics: Mapped[dict[str, Any]] = mapped_column(JsonType)
    aggregated_site_metrics: Mapped[dict[str, Any]] = mapped_column(JsonType)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SiteUpdate(Base):
    """One site's outcome in one federated round at the server: replied, or failed and why.

    Its numbers (training loss, time, traffic, the global model's AUROC at the site) are ``run_metrics`` rows
    with the same run, site and round; this row says whether the site answered at all.
    """

    __tablename__ = "site_updates"
    __table_args__ = (Index("ix_site_updates_run_round", "run_id", "round_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    round_number: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[str] = mapped_column(String(64))
    site_name: Mapped[str] = mapped_column(String(255))
    failed: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    num_examples: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(UTCDateTime())


class RunWarning(Base):
    """Something a run went on despite (an image that became unreadable, a sink that failed), as a sentence."""

    __tablename__ = "run_warnings"
    __table_args__ = (Index("ix_run_warnings_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class Prediction(Base):
    """One image read by a model: who read it, what it said, at which threshold. Never pixel data.

    ``run_id`` is set when the model came from a recorded run (kept, as NULL, if the run is deleted);
    ``model_sha256`` identifies the weights either way, so readings by an exported model can be traced too.
    """

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_run_id", "run_id"),
        Index("ix_predictions_image_sha256", "image_sha256"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    model_sha256: Mapped[str] = mapped_column(String(64))
    image_sha256: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(255))
    probability: Mapped[float] = mapped_column(Float)
    operating_point: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    warnings: Mapped[str | None] = mapped_column(Text)  # how the image differs from the training data, if it does
    report_uid: Mapped[str | None] = mapped_column(String(64))  # the DICOM SR that answered the image, if any
    capture_uid: Mapped[str | None] = mapped_column(String(64))  # and its Grad-CAM secondary capture


class ArtifactBlob(Base):
    """The bytes of one artifact (a checkpoint, a global model), stored once whatever refers to it.

    Kept in the database, so every workstation of a shared PostgreSQL reads a run's model, and another
    database's run with the same number can never overwrite it.
    """

    __tablename__ = "artifact_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RunArtifact(Base):
    """What one run made, by kind (``best``, ``global_last``...): a reference to its bytes by SHA-256."""

    __tablename__ = "run_artifacts"
    __table_args__ = (
        UniqueConstraint("run_id", "kind", name="uq_run_artifacts_run_kind"),
        Index("ix_run_artifacts_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(ForeignKey("artifact_blobs.sha256"))
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DatabaseIdentity(Base):
    """The one row (``id`` 1) naming this database: a uuid4 hex made when the table was created.

    The audit trail's key file is named after it, so each database has its own key.
    """

    __tablename__ = "database_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    identity: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditRecord(Base):
    """One entry of the append-only, hash-chained audit trail (see :mod:`core.audit`).

    ``entry_hash`` is SHA-256 over the entry's canonical JSON, which includes ``prev_hash``; rows are never
    updated or deleted, and no migration may ever rewrite this table (that would break every hash after it).
    """

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_recorded_at", "recorded_at"),)

    # Given by the writer (1, 2, 3, ... without gaps), never by the database.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    os_user: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JsonType)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The one row (``id`` 1) naming the trail's last entry, with an HMAC by a key kept outside the database.

    Updated in the same transaction as each append; whoever rewrites the chain without the key cannot forge it.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


# Core handles for fast inserts and selects (reads never load metric rows as ORM objects).
runs_table = cast(Table, Run.__table__)
metrics_table = cast(Table, RunMetric.__table__)
sites_table = cast(Table, Site.__table__)
flower_runs_table = cast(Table, FlowerRun.__table__)
rounds_table = cast(Table, Round.__table__)
warnings_table = cast(Table, RunWarning.__table__)
site_updates_table = cast(Table, SiteUpdate.__table__)
predictions_table = cast(Table, Prediction.__table__)
identity_table = cast(Table, DatabaseIdentity.__table__)
blobs_table = cast(Table, ArtifactBlob.__table__)
artifacts_table = cast(Table, RunArtifact.__table__)
audit_entries_table = cast(Table, AuditRecord.__table__)
audit_head_table = cast(Table, AuditHead.__table__)
