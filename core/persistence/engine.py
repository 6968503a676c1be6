"""Connecting to the database: URLs, engines, migrations and the :class:`Database` session factory.

SQLite (the default, one file per user) runs in WAL mode with a 30 s busy timeout so a reader in the GUI
never blocks the training writer; PostgreSQL (shared or server sites) goes through psycopg 3. Every failure
to connect or migrate becomes a :class:`~core.errors.DatabaseError` whose message names the (password-masked)
URL and says what to do.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import DatabaseError
from core.persistence.models import runs_table, utcnow

ENV_URL = "PNEUMOFL_DB_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest migration's revision (revisions are the files' number prefixes; a test checks it is Alembic's head).
# A database already there skips Alembic altogether: importing it costs about half a second in every process,
# and a federated site starts a fresh one each round.
SCHEMA_HEAD = max(p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))
_HINT = "or use --db with another URL"
_URL_HELP = "Use sqlite:///path/to/pneumofl.db or postgresql://user:password@host:5432/dbname"
# Serialises concurrent start-ups migrating one PostgreSQL database (several federated nodes on one server).
_PG_MIGRATION_LOCK = 0x504E4555


def default_database_url() -> str:
    """Return ``$PNEUMOFL_DB_URL``, else a SQLite file in the user's data folder (created if missing).

    Raises
    ------
    DatabaseError
        If the data folder cannot be created.
    """
    env = os.environ.get(ENV_URL, "").strip()
    if env:
        return env
    folder = Path(platformdirs.user_data_dir("pneumofl"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"Cannot create the data folder {folder} for the default database: {exc.strerror or exc}. "
            f"Set {ENV_URL} or use --db with another URL."
        ) from None
    return f"sqlite:///{folder / 'pneumofl.db'}"


def url_for_display(url: str | URL) -> str:
    """Return ``url`` with its password replaced by ``***`` (also for URLs that do not parse)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def create_db_engine(url: str) -> Engine:
    """Create an engine for a SQLite or PostgreSQL URL, configured for PneumoFL's access pattern.

    Parameters
    ----------
    url
        ``sqlite:///file.db`` (``~`` is expanded, the folder is created) or ``postgresql://...``
        (``postgresql://`` and ``postgres://`` are run through psycopg 3).

    Raises
    ------
    DatabaseError
        If the URL does not parse, names another database system, or the SQLite folder cannot be created.
    """
    shown = url_for_display(url)
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseError(f"'{shown}' is not a database URL ({_first_line(exc)}). {_URL_HELP}.") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            # connect_timeout: an unreachable host must fail in seconds, not the OS's minutes.
            return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise DatabaseError(f"Cannot use the database URL {shown}: {_first_line(exc)}. {_URL_HELP}.") from None
    raise DatabaseError(f"'{shown}' is not a database PneumoFL supports (only SQLite and PostgreSQL). {_URL_HELP}.")


def _sqlite_engine(parsed: URL) -> Engine:
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"Cannot create the folder {path.parent} for the database at {url_for_display(parsed)}: "
                f"{exc.strerror or exc}. Choose a writable location, {_HINT}."
            ) from None
        parsed = parsed.set(database=str(path))
    engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a brief lock another process may hold.
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes under WAL; only an OS crash can lose the last commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return engine


def describe_failure(exc: BaseException, url: str | URL, action: str = "connect to") -> str:
    """Turn a driver or migration exception into one sentence for the user."""
    shown = url_for_display(url)
    reason = _first_line(getattr(exc, "orig", None) or exc)
    if type(exc).__name__ == "CommandError" and "Can't locate revision" in str(exc):  # Alembic's, imported lazily
        return f"The database at {shown} was created by a newer PneumoFL ({reason}). Update PneumoFL, {_HINT}."
    if make_url_backend(url) == "sqlite":
        return f"Cannot {action} the SQLite database at {shown}: {reason}. Check that the file and its folder are writable, {_HINT}."
    return (
        f"Cannot {action} the database at {shown}: {reason}. Check the address and that the server is running, {_HINT}."
    )


def make_url_backend(url: str | URL) -> str:
    """Return ``sqlite``/``postgresql``/... for ``url``, or an empty string if it does not parse."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).get_backend_name()
    except (ArgumentError, ValueError):
        return ""


def _first_line(exc: object) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def upgrade_database(engine: Engine) -> None:
    """Run Alembic ``upgrade head`` on ``engine`` (no alembic.ini needed).

    Raises
    ------
    DatabaseError
        If the database cannot be reached or migrated, or was made by a newer PneumoFL.
    """
    if _schema_revision(engine) == SCHEMA_HEAD:
        return
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            elif connection.dialect.name == "sqlite":
                # Take the write lock before Alembic reads the version, so two processes starting on a fresh
                # file run the migration one after the other instead of both creating the tables.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise DatabaseError(describe_failure(exc, engine.url, "prepare")) from exc


def _schema_revision(engine: Engine) -> str | None:
    """The database's Alembic revision, or None where it has none yet (or cannot say)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None  # a fresh database: Alembic creates the table


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _windows_pid_alive(pid: int) -> bool:
    # os.kill(pid, 0) on Windows would send CTRL_C_EVENT, so ask the kernel instead.
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def mark_interrupted_runs(session: Session) -> int:
    """Mark ``in_progress`` runs of dead processes on this host as ``interrupted``; return how many.

    Runs of other hosts are left alone: their processes cannot be checked from here.
    """
    rows = session.execute(
        select(runs_table.c.id, runs_table.c.pid).where(
            runs_table.c.status == "in_progress", runs_table.c.host == socket.gethostname()
        )
    ).all()
    dead = [run_id for run_id, pid in rows if not pid_alive(pid)]
    if not dead:
        return 0
    session.execute(
        update(runs_table)
        .where(runs_table.c.id.in_(dead), runs_table.c.status == "in_progress")
        .values(
            status="interrupted", end_time=utcnow(), error_message="The process recording this run ended unexpectedly."
        )
    )
    return len(dead)


class Database:
    """An engine plus one session factory. Each thread opens its own sessions; the caller owns transactions.

    Use ``with db.begin() as session:`` for a unit of work that commits on success and rolls back on error,
    or ``with db.session() as session:`` to manage the transaction yourself.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, migrate: bool = True) -> Database:
        """Connect to ``url`` (default: :func:`default_database_url`), migrate, and mark interrupted runs.

        Raises
        ------
        DatabaseError
            With a sentence naming the masked URL and what to do, if anything fails.
        """
        url = url or default_database_url()
        engine = create_db_engine(url)
        try:
            with engine.connect():
                pass
            if migrate:
                upgrade_database(engine)
            db = cls(engine)
            with db.begin() as session:
                mark_interrupted_runs(session)
        except DatabaseError:
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            engine.dispose()
            raise DatabaseError(describe_failure(exc, engine.url)) from exc
        return db

    @property
    def url_for_display(self) -> str:
        """The database URL with the password masked, for messages and logs."""
        return url_for_display(self.engine.url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def session(self) -> Session:
        """A new session; the caller begins and commits (``with db.session() as s, s.begin(): ...``)."""
        return self._sessions()

    def begin(self) -> AbstractContextManager[Session]:
        """A new session inside a transaction that commits on success and rolls back on error."""
        return self._sessions.begin()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.url_for_display})"


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
