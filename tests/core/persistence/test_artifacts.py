"""What runs made, kept in their database (SQLite and PostgreSQL): by run and kind, once per content, checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from core.errors import PneumoFLError
from core.persistence import Database
from core.persistence.artifacts import (
    artifact_bytes,
    artifact_file,
    collect_garbage,
    keep_file,
    list_artifacts,
    put_artifact,
    verify_artifacts,
)
from core.persistence.models import artifacts_table, blobs_table
from core.persistence.runs import create_run, delete_run


def _runs(db: Database, count: int) -> list[int]:
    with db.begin() as session:
        return [create_run(session, experiment_name=f"r{i}", config={}) for i in range(count)]


def test_a_runs_artifacts_are_its_own_stored_once_and_cleaned_up(db: Database, tmp_path: Path) -> None:
    first, second = _runs(db, 2)
    weights = os.urandom(300_000)
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(weights)
    assert keep_file(db, first, "best", checkpoint)
    with db.begin() as session:
        put_artifact(session, second, "best", weights)  # the same bytes: stored once
        put_artifact(session, second, "global_last", b"last global model")
        kept = list_artifacts(session)
        assert [(a.run_id, a.kind, a.size) for a in kept] == [
            (first, "best", 300_000),
            (second, "best", 300_000),
            (second, "global_last", 17),
        ]
        assert kept[0].sha256 == kept[1].sha256 and kept[0].name == "best.ckpt"
        assert artifact_bytes(session, first, "best") == weights
        assert artifact_bytes(session, first, "last") is None
        cached = artifact_file(session, first, "best", cache=tmp_path / "cache")
        assert cached is not None and cached.read_bytes() == weights and cached.stem == kept[0].sha256
        with pytest.raises(ValueError, match="artifact kind"):
            put_artifact(session, first, "anything", b"x")
    with db.begin() as session:
        delete_run(session, second)  # its own bytes go, the ones the first run shares stay
        assert artifact_bytes(session, first, "best") == weights
        assert [a.kind for a in list_artifacts(session)] == ["best"]
        assert collect_garbage(session) == (0, 0)
        delete_run(session, first)
        assert list_artifacts(session) == [] and collect_garbage(session) == (0, 0)


def test_altered_bytes_are_found_and_refused(db: Database) -> None:
    (run,) = _runs(db, 1)
    with db.begin() as session:
        digest = put_artifact(session, run, "best", b"the evaluated weights")
        assert verify_artifacts(session) == []
        session.execute(update(blobs_table).values(content=b"other weights"))  # someone with database access
    with db.begin() as session:
        problems = verify_artifacts(session)
        assert problems == [f"Artifact {digest[:12]} (run {run} best) no longer matches its SHA-256: it was altered."]
        with pytest.raises(PneumoFLError, match="no longer matches its SHA-256"):
            artifact_bytes(session, run, "best")


def test_a_replaced_artifact_frees_its_bytes_unless_another_run_shares_them(db: Database) -> None:
    first, second = _runs(db, 2)
    with db.begin() as session:
        put_artifact(session, first, "last", b"state after epoch 1")
        put_artifact(session, first, "last", b"state after epoch 2")  # a state replaced every epoch never piles up
        put_artifact(session, first, "best", b"shared best")
        put_artifact(session, second, "best", b"shared best")
        put_artifact(session, first, "best", b"a better best")
        stored = {row[0] for row in session.execute(select(blobs_table.c.content))}
        assert stored == {b"state after epoch 2", b"shared best", b"a better best"}
        assert artifact_bytes(session, second, "best") == b"shared best"


def test_gc_removes_only_what_no_run_refers_to(db: Database) -> None:
    (run,) = _runs(db, 1)
    with db.begin() as session:
        put_artifact(session, run, "best", b"first best")
        put_artifact(session, run, "last", b"kept state")
        # An older PneumoFL (or a crash between two statements elsewhere) left bytes no run refers to.
        session.execute(delete(artifacts_table).where(artifacts_table.c.kind == "best"))
        assert collect_garbage(session) == (1, len(b"first best"))
        assert artifact_bytes(session, run, "last") == b"kept state"
