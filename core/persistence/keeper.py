"""Keeping a training run's checkpoints in its database behind training, on a thread of their own.

A resnet18's training state is about 135 MB (weights and the optimiser's moments), kept after every epoch: written
on the training thread it would stall each epoch for a second or more on PostgreSQL. The training thread only
reads the file (from the page cache); the writer thread stores it. A newer file of the same kind replaces one
still waiting, so a slow database falls behind by at most one state, never by a queue of them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from core.persistence.artifacts import put_artifact
from core.persistence.engine import Database

log = logging.getLogger(__name__)


class ArtifactKeeper:
    """Stores run ``run_id``'s files as its artifacts, newest per kind, in the background; ``close()`` waits."""

    def __init__(self, db: Database, run_id: int) -> None:
        self.db, self.run_id = db, run_id
        self._pending: dict[str, tuple[str, bytes]] = {}
        self._cond = threading.Condition()
        self._closing = False
        self.failures = 0
        self._thread = threading.Thread(target=self._loop, name=f"pneumofl-artifacts-{run_id}", daemon=True)
        self._thread.start()

    def keep(self, kind: str, path: Path) -> None:
        """Queue the file at ``path`` (read now: the next epoch replaces it) as the run's ``kind``."""
        try:
            content = Path(path).read_bytes()
        except OSError:
            log.warning("could not read %s to keep it with run %s", path, self.run_id, exc_info=True)
            return
        self.keep_bytes(kind, Path(path).name, content)

    def keep_bytes(self, kind: str, name: str, content: bytes) -> None:
        """Queue ``content`` as the run's ``kind`` (replacing a ``kind`` still waiting)."""
        with self._cond:
            self._pending.pop(kind, None)  # re-queued at the end: states and best checkpoints stay in time order
            self._pending[kind] = (name, content)
            self._cond.notify()

    def close(self) -> None:
        """Store what is still waiting, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                kind = next(iter(self._pending))
                name, content = self._pending.pop(kind)
            try:
                with self.db.begin() as session:
                    put_artifact(session, self.run_id, kind, content, name=name)
            except SQLAlchemyError:
                # The working copy stays on disk: a model file is adopted on first read (core.inference.models).
                self.failures += 1
                log.warning("could not keep %s of run %s in the database", kind, self.run_id, exc_info=True)
