"""What runs made (checkpoints, global models), kept in the database itself and addressed by SHA-256.

A run refers to its artifacts by kind (``run_artifacts``); the bytes are stored once in ``artifact_blobs`` however
many runs refer to them. Being in the database, they belong to that database's run: no other database's run with
the same number can overwrite them, and every workstation of a shared PostgreSQL reads them. To load one, it is
written to a cache file named by its hash (:func:`artifact_file`), so a model read twice is fetched once.

Every function takes a session; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import platformdirs
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.errors import PneumoFLError
from core.persistence.engine import Database
from core.persistence.models import artifacts_table, blobs_table, utcnow

log = logging.getLogger(__name__)

KINDS = ("best", "last", "global_last", "server_state", "local_layers", "export")
"""``last`` is a run's training state (weights, optimiser, callbacks, RNG) while it can be resumed; once the run
completes, the last epoch's weights alone. ``server_state`` is a federation server's state after its last round
(see ``core.federated.server_state``)."""
_A, _B = artifacts_table.c, blobs_table.c


@dataclass(frozen=True)
class ArtifactRecord:
    """One artifact of a run: its kind, name, hash, size and when it was kept."""

    run_id: int
    kind: str
    name: str
    sha256: str
    size: int
    created_at: datetime


def put_artifact(session: Session, run_id: int, kind: str, content: bytes, name: str = "") -> str:
    """Keep ``content`` as run ``run_id``'s artifact ``kind`` (replacing an earlier one); return its SHA-256."""
    if kind not in KINDS:
        raise ValueError(f"artifact kind must be one of {', '.join(KINDS)}, not {kind!r}")
    digest = hashlib.sha256(content).hexdigest()
    if session.execute(select(_B.sha256).where(_B.sha256 == digest)).scalar() is None:
        session.execute(
            insert(blobs_table).values(sha256=digest, size=len(content), content=content, created_at=utcnow())
        )
    values = {"sha256": digest, "name": name[:255], "created_at": utcnow()}
    where = (_A.run_id == run_id) & (_A.kind == kind)
    previous = session.execute(select(_A.sha256).where(where)).scalar()
    if previous is None:
        session.execute(insert(artifacts_table).values(run_id=run_id, kind=kind, **values))
    else:
        session.execute(update(artifacts_table).where(where).values(**values))
        # A training state replaced every epoch must not pile up until the next `artifacts gc`.
        if previous != digest and session.execute(select(_A.id).where(_A.sha256 == previous)).first() is None:
            session.execute(delete(blobs_table).where(_B.sha256 == previous))
    return digest


def keep_file(db: Database, run_id: int, kind: str, path: str | Path | None) -> bool:
    """Keep the file ``path`` (a checkpoint) as run ``run_id``'s artifact ``kind``; whether it was kept.

    The file stays as a working copy; what is read later is the database's. A database that fails here costs
    the run nothing it recorded: the file is adopted on first use instead (see ``core.inference.models``).
    """
    if path is None or not Path(path).is_file():
        return False
    try:
        with db.begin() as session:
            put_artifact(session, run_id, kind, Path(path).read_bytes(), name=Path(path).name)
    except (SQLAlchemyError, OSError):
        log.warning("could not keep %s of run %s in the database; the file %s stays", kind, run_id, path, exc_info=True)
        return False
    return True


def list_artifacts(session: Session, run_id: int | None = None) -> list[ArtifactRecord]:
    """The artifacts of run ``run_id`` (every run's when None), by run then kind."""
    query = (
        select(_A.run_id, _A.kind, _A.name, _A.sha256, _B.size, _A.created_at)
        .join(blobs_table, _B.sha256 == _A.sha256)
        .order_by(_A.run_id, _A.kind)
    )
    if run_id is not None:
        query = query.where(_A.run_id == run_id)
    return [ArtifactRecord(*row) for row in session.execute(query)]


def artifact_bytes(session: Session, run_id: int, kind: str) -> bytes | None:
    """The bytes of run ``run_id``'s artifact ``kind``, checked against their hash; None if it kept none.

    Raises
    ------
    PneumoFLError
        If the stored bytes no longer match their hash.
    """
    row = session.execute(
        select(_B.sha256, _B.content)
        .join(artifacts_table, _A.sha256 == _B.sha256)
        .where(_A.run_id == run_id, _A.kind == kind)
    ).first()
    if row is None:
        return None
    digest, content = row
    if hashlib.sha256(content).hexdigest() != digest:
        raise PneumoFLError(
            f"The stored {kind} artifact of run {run_id} no longer matches its SHA-256 {digest[:12]}: the database "
            "was altered. `pneumofl artifacts verify` lists every damaged artifact."
        )
    return bytes(content)


def artifact_file(session: Session, run_id: int, kind: str, cache: Path | None = None) -> Path | None:
    """A file holding run ``run_id``'s artifact ``kind`` (None if it kept none), fetched once into the cache.

    The cache file is named by the hash, so runs of different databases never share one by mistake.
    """
    digest = session.execute(select(_A.sha256).where(_A.run_id == run_id, _A.kind == kind)).scalar()
    if digest is None:
        return None
    folder = cache or Path(platformdirs.user_cache_dir("pneumofl")) / "artifacts"
    path = folder / f"{digest}.bin"
    if path.is_file() and _file_sha256(path) == digest:
        return path
    content = artifact_bytes(session, run_id, kind)
    assert content is not None
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    partial.replace(path)
    return path


def verify_artifacts(session: Session) -> list[str]:
    """Re-hash every stored artifact; a sentence for each whose bytes no longer match (empty: all intact)."""
    problems = []
    for digest, size, content in session.execute(select(_B.sha256, _B.size, _B.content).order_by(_B.sha256)):
        actual = hashlib.sha256(content).hexdigest()
        if actual != digest or len(content) != size:
            users = session.execute(select(_A.run_id, _A.kind).where(_A.sha256 == digest).order_by(_A.run_id)).all()
            named = ", ".join(f"run {run} {kind}" for run, kind in users) or "no run"
            problems.append(f"Artifact {digest[:12]} ({named}) no longer matches its SHA-256: it was altered.")
    return problems


def collect_garbage(session: Session) -> tuple[int, int]:
    """Delete the stored bytes no run refers to any more; return ``(artifacts, bytes)`` removed."""
    orphans = select(_B.sha256).where(~select(_A.id).where(_A.sha256 == _B.sha256).exists())
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(_B.size), 0)).where(_B.sha256.in_(orphans))
    ).one()
    session.execute(delete(blobs_table).where(_B.sha256.in_(orphans)))
    return int(count), int(size)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
