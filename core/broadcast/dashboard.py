"""The browser dashboard's data: the database's runs as JSON documents, read off the event loop.

The documents are those of :mod:`core.persistence.snapshot` (batch series thinned inside the database, peaks kept);
a run's document also says where the hub's live replay of it starts and ends, so the page can follow the run from a
little before the snapshot's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_web_root() -> Path | None:
    """The dashboard's static files shipped with PneumoFL, if present.

    They are ``resources/web`` next to ``core/`` in a checkout, an installed wheel and the frozen bundle alike.
    """
    candidate = Path(__file__).resolve().parents[2] / "resources" / "web"
    return candidate if (candidate / "index.html").is_file() else None


class DashboardData:
    """Read-only access to one database's runs for the page.

    Parameters
    ----------
    root
        The static files (``index.html``, scripts, styles, vendored libraries).
    db_url
        The database whose runs the page lists and opens.
    live_runs
        Returns ``{run_id: {"first_seq", "last_seq", ...}}`` of the runs the hub is streaming.
    """

    def __init__(self, root: Path, db_url: str, live_runs: Callable[[], dict[int, dict[str, Any]]]) -> None:
        self.root, self.db_url, self.live_runs = root.resolve(), db_url, live_runs
        self._db: Any = None

    async def runs(self, mode: str | None, status: str | None, name: str | None) -> list[dict[str, Any]]:
        """Every run's summary, newest first, filtered as asked."""
        return await asyncio.to_thread(self._runs, mode, status, name)

    async def run(self, run_id: int) -> dict[str, Any]:
        """One run's document with its live replay range (raises :class:`~core.errors.RunNotFoundError`)."""
        live = self.live_runs().get(run_id)  # taken before the database: the live replay overlaps the snapshot
        document = await asyncio.to_thread(self._run, run_id)
        document["live"] = {"known": live is not None} | (live or {})
        return document

    def _database(self) -> Any:
        if self._db is None:
            from core.persistence import Database

            self._db = Database.open(self.db_url, migrate=False)
        return self._db

    def _runs(self, mode: str | None, status: str | None, name: str | None) -> list[dict[str, Any]]:
        from core.persistence.snapshot import run_summaries

        with self._database().begin() as session:
            return run_summaries(session, mode=mode, status=status, name=name)

    def _run(self, run_id: int) -> dict[str, Any]:
        from core.persistence.snapshot import run_snapshot

        with self._database().begin() as session:
            return run_snapshot(session, run_id)

    def close(self) -> None:
        """Release the database connection."""
        if self._db is not None:
            self._db.close()
            self._db = None
