"""Fixtures shared by every test folder: a throwaway PostgreSQL server and a database on each backend.

Persistence tests take ``db`` (or ``db_url``) and run once on SQLite and once on PostgreSQL. Without
PostgreSQL binaries the PostgreSQL half is skipped, a loud banner says so at the end, and under ``CI`` the
session fails: a CI run that silently tested one backend would be worse than a red one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.persistence import Database
from tests.pg import PostgresServer, find_pg_bindir

# Keys the code keeps outside the database (the audit trail's key, the site steward's signing key) go to a folder
# of the test session, never to the user's config folder; child processes (Flower's apps) inherit it.
_KEYS = Path(tempfile.mkdtemp(prefix="pneumofl-test-keys-"))
os.environ.setdefault("PNEUMOFL_STEWARD_DIR", str(_KEYS / "steward"))
os.environ.setdefault("PNEUMOFL_AUDIT_KEY_DIR", str(_KEYS / "audit"))

PG_MISSING_REASON = "PostgreSQL binaries not found"
_pg_problem: list[str] = []  # why PostgreSQL was not tested, if it was wanted


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, stopped (``-m immediate``) and deleted afterwards."""
    bindir = find_pg_bindir()
    if bindir is None:
        why = (
            f"{PG_MISSING_REASON} (looked at $PNEUMOFL_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin, "
            "PATH). Install the PostgreSQL server package"
        )
        if why not in _pg_problem:
            _pg_problem.append(why)
        if _in_ci():  # fail here, in the test: a worker process's session status does not reach pytest-xdist's
            pytest.fail(f"{why}. CI needs both backends tested.")
        pytest.skip(PG_MISSING_REASON)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a database on the session's PostgreSQL server (shared; create your own tables with care)."""
    return postgres_server.create_database("pneumofl_session")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in ``tmp_path``, or a new database on the shared server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pneumofl.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """``Database.open(db_url)``, migrated, closed after the test."""
    database = Database.open(db_url)
    try:
        yield database
    finally:
        database.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, a PostgreSQL that could not be tested fails the session."""
    if _pg_problem and _in_ci() and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Print a banner nobody can miss when the PostgreSQL half of the tests did not run."""
    if not _pg_problem:
        return
    consequence = (
        "CI is set, so this session FAILS." if _in_ci() else "Only SQLite was tested; set CI=true to make this fatal."
    )
    line = "!" * 100
    terminalreporter.write_line(line, red=True, bold=True)
    terminalreporter.write_line(f"POSTGRESQL WAS NOT TESTED: {_pg_problem[0]}. {consequence}", red=True, bold=True)
    terminalreporter.write_line(line, red=True, bold=True)


# Tests that run Flower federations: on two pytest-xdist workers they share one worker, one after another (two
# federations at once on 2 cores miss their round timeouts). Every other file is a group of its own, so module
# fixtures (trained runs) are built once, as with --dist loadfile.
FLOWER_FILES = ("test_federation_page.py",)


# Folders whose every test starts a federation, a browser or a CLI subprocess: the full gate runs them, the fast
# lane (`bash packaging/dev.sh test --fast`) does not. Single tests elsewhere carry @pytest.mark.full.
FULL_FOLDERS = ("federation", "web", "e2e", "packaging", "pacs")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each test in its xdist group (see ``--dist loadgroup`` in packaging/dev.sh); mark the full-gate tests;
    start the long groups first.

    First among the hooks: pytest-xdist reads the groups in its own ``pytest_collection_modifyitems``.
    tests/test_gate.py checks that the groups hold.
    """
    tests_root = Path(__file__).parent
    start: dict[str, int] = {}  # per file: 0 the federations, 1 long training, 2 processes and browsers, 3 the rest
    for item in items:
        path = Path(item.path)
        relative = path.relative_to(tests_root).parts if path.is_relative_to(tests_root) else ()
        if relative and relative[0] in FULL_FOLDERS:
            item.add_marker(pytest.mark.full)
        group = "flower" if "federation" in path.parts or path.name in FLOWER_FILES else str(path)
        item.add_marker(pytest.mark.xdist_group(group))
        kinds = (group == "flower", item.get_closest_marker("slow"), item.get_closest_marker("full"), True)
        rank = next(rank for rank, kind in enumerate(kinds) if kind)
        start[str(path)] = min(start.get(str(path), rank), rank)
    # dev.sh runs xdist with --no-loadscope-reorder, so groups are handed out in this order: a one-test file that
    # trains for two minutes must not be the last thing a worker starts. Whole files move, so module fixtures hold.
    items.sort(key=lambda item: start[str(item.path)])
