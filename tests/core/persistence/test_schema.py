"""Schema, engine and start-up behaviour on real SQLite and real PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, select, text

from core.errors import DatabaseError
from core.persistence import Database, default_database_url, url_for_display
from core.persistence.engine import MIGRATIONS_DIR, SCHEMA_HEAD, create_db_engine
from core.persistence.models import Base, runs_table
from core.persistence.runs import create_run, get_run


def test_migrations_match_models(db: Database) -> None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        assert context.get_current_revision() == head == SCHEMA_HEAD  # the fast path's head is Alembic's
    assert set(inspect(db.engine).get_table_names()) >= {"runs", "run_metrics", "sites", "flower_runs", "rounds"}


def test_open_twice_is_idempotent(db_url: str) -> None:
    Database.open(db_url).close()
    with Database.open(db_url) as again, again.begin() as session:
        run_id = create_run(session, experiment_name="x", config={})
    with Database.open(db_url) as third, third.begin() as session:
        assert get_run(session, run_id).experiment_name == "x"


def test_an_older_database_is_migrated_and_a_newer_one_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = create_db_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:  # the schema PneumoFL left before site_updates
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
    finally:
        engine.dispose()
    with Database.open(url) as db:
        assert "site_updates" in inspect(db.engine).get_table_names()
        with db.engine.connect() as connection:  # 0007 made the audit tables and the database's identity
            assert len(connection.execute(text("SELECT identity FROM database_identity")).scalar_one()) == 32
        indexes = {index["name"] for index in inspect(db.engine).get_indexes("run_metrics")}
        assert "ix_run_metrics_series" in indexes and "ix_run_metrics_run_context_name_step" not in indexes
        with db.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(DatabaseError, match=r"created by a newer PneumoFL.*Update PneumoFL"):
        Database.open(url)


def test_sqlite_file_is_in_wal_mode(tmp_path) -> None:
    with Database.open(f"sqlite:///{tmp_path / 'wal.db'}") as db, db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_timestamps_are_aware_utc(db: Database) -> None:
    with db.begin() as session:
        run = get_run(session, create_run(session, experiment_name="t", config={"a": 1}))
    assert run.start_time.tzinfo is not None and run.start_time.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - run.start_time).total_seconds()) < 60


def test_sqlite_folder_that_cannot_be_created(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseError) as info:
        Database.open(f"sqlite:///{blocker / 'sub' / 'pneumofl.db'}")
    message = str(info.value)
    assert str(blocker / "sub") in message and "--db" in message


def test_sqlite_path_that_cannot_be_opened(tmp_path) -> None:
    with pytest.raises(DatabaseError) as info:
        Database.open(f"sqlite:///{tmp_path}")  # a folder, not a file
    assert str(tmp_path) in str(info.value) and "writable" in str(info.value)


@pytest.mark.parametrize("url", ["garbage", "not a url at all://", "mysql://u:secret@host/db"])
def test_garbage_url(url: str) -> None:
    with pytest.raises(DatabaseError) as info:
        Database.open(url)
    message = str(info.value)
    assert "sqlite:///" in message and "secret" not in message


def test_unreachable_postgresql_names_masked_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    with pytest.raises(DatabaseError) as info:
        Database.open(f"postgresql://pneumo:s3cret@127.0.0.1:{port}/pneumo")
    message = str(info.value)
    assert f"postgresql+psycopg://pneumo:***@127.0.0.1:{port}/pneumo" in message
    assert "s3cret" not in message
    assert "server is running" in message and "--db" in message


def test_url_for_display_masks_password() -> None:
    assert url_for_display("postgresql://a:b@h:1/d") == "postgresql://a:***@h:1/d"
    assert "pw" not in url_for_display("weird://u:pw@h")


def test_default_url_honours_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PNEUMOFL_DB_URL", "sqlite:///x.db")
    assert default_database_url() == "sqlite:///x.db"
    monkeypatch.delenv("PNEUMOFL_DB_URL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    url = default_database_url()
    assert url.startswith("sqlite:///") and url.endswith("pneumofl.db")
    assert os.path.isdir(os.path.dirname(url[len("sqlite:///") :]))


def _insert_in_progress(db: Database, *, pid: int, host: str) -> int:
    with db.begin() as session:
        return int(
            session.execute(
                insert(runs_table)
                .values(
                    experiment_name=f"pid {pid}",
                    training_mode="centralized",
                    role="standalone",
                    status="in_progress",
                    start_time=datetime.now(UTC),
                    source_path="",
                    config={},
                    host=host,
                    pid=pid,
                )
                .returning(runs_table.c.id)
            ).scalar_one()
        )


def test_interrupted_runs_are_marked_on_open(db_url: str) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    with Database.open(db_url) as db:
        dead = _insert_in_progress(db, pid=dead_pid, host=socket.gethostname())
        alive = _insert_in_progress(db, pid=os.getpid(), host=socket.gethostname())
        elsewhere = _insert_in_progress(db, pid=dead_pid, host="some-other-host")
    with Database.open(db_url) as db, db.begin() as session:
        statuses = dict(session.execute(select(runs_table.c.id, runs_table.c.status)).all())
        assert statuses == {dead: "interrupted", alive: "in_progress", elsewhere: "in_progress"}
        record = get_run(session, dead)
        assert record.end_time is not None and record.error_message
