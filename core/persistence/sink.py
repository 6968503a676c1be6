"""The database sink: the durable record of a run, written behind training on its own thread.

``handle()`` runs on the training thread and only turns an event into row dicts in a buffer. A writer thread
with its own session inserts them with Core ``insert()`` executemany (ORM inserts would hold the GIL long enough
to stall the GUI), one transaction per flush. Flushes happen at every epoch end, round, training end, when the
buffer reaches ``flush_rows`` and on ``close()``. The sink never stops training: a failing database keeps rows
pending and retries; a backlog past ``max_pending_rows`` drops the oldest batch-level rows (never epoch or final
rows); each problem is raised once from ``handle()`` so the :class:`~core.sinks.SinkSet` reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session

from core.errors import DatabaseError
from core.events import (
    ClientUpdate,
    EpochEnd,
    Event,
    RoundMetrics,
    RoundStart,
    RunError,
    TrainingEnd,
)
from core.persistence.engine import Database, describe_failure, iter_chunks
from core.persistence.federation_records import record_round, record_site_update, upsert_site
from core.persistence.models import RUN_STATUSES, metrics_table
from core.persistence.rows import COLUMNS, CONTEXT_INDEX, Row, event_rows
from core.persistence.runs import add_run_warning, finish_run, set_run_error
from core.sinks import EventSink

log = logging.getLogger(__name__)
Op = Callable[[Session], None]
MAX_WARNINGS = 1000
"""Warnings kept per run: enough to name every file that vanished, bounded against a sink failing in a loop."""


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


class DatabaseSink(EventSink):
    """Persists one run's events to ``db`` (the run row must exist: see ``repository.create_run``).

    Parameters
    ----------
    db
        The database; the writer thread opens its own sessions from it.
    run_id
        The run every row belongs to (events' own ``run_id`` is ignored).
    flush_rows
        Hand the buffer to the writer once it holds this many rows.
    max_pending_rows
        Above this backlog (database slow or down) the oldest batch-context rows are dropped.
    chunk_rows
        Rows per INSERT statement.
    epoch_wait_s
        How long ``handle(EpochEnd)`` waits for a previous flush still running before carrying on regardless.
    """

    name = "database"

    def __init__(
        self,
        db: Database,
        run_id: int,
        *,
        flush_rows: int = 5000,
        max_pending_rows: int = 200_000,
        chunk_rows: int = 5000,
        epoch_wait_s: float = 60.0,
        retry_after_s: float = 2.0,
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.max_pending_rows = max_pending_rows
        self.chunk_rows = chunk_rows
        self.epoch_wait_s = epoch_wait_s
        self.retry_after_s = retry_after_s
        self.dropped_rows = 0
        self.written_rows = 0
        self._cond = threading.Condition()
        self._pending: list[Row] = []
        self._ops: list[Op] = []
        self._in_flight = 0
        self._requested = 0  # generation of the latest flush request
        self._handled = 0  # latest generation the writer finished (written or failed)
        self._written = 0  # latest generation written successfully
        self._last_error: BaseException | None = None
        self._failed_at = 0.0
        self._problems: list[str] = []
        self._error_reported = False
        self._drop_reported = False
        self._next_drop_check = 0
        self._round_starts: dict[int, float] = {}
        self._stopping = False
        self._closed = False
        self._warnings_kept = 0
        self._statement = insert(metrics_table)
        self._positional_sql: str | None = None
        if db.engine.dialect.name == "sqlite":
            compiled = self._statement.compile(dialect=db.engine.dialect, column_keys=list(COLUMNS))
            if list(compiled.positiontup or []) == list(COLUMNS):
                self._positional_sql = str(compiled)
        self._thread = threading.Thread(target=self._writer_loop, name=f"pneumofl-db-sink-{run_id}", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- training thread
    def handle(self, event: Event) -> None:
        """Buffer ``event``'s rows; raise once if the writer failed or rows were dropped since the last call."""
        if self._closed:
            return
        rows = event_rows(event, self.run_id)
        if isinstance(event, EpochEnd):
            # At most one epoch in flight: a kill -9 during the next epoch loses nothing already completed.
            self._wait_idle(self.epoch_wait_s)
            self._add(rows, flush=True)
        elif isinstance(event, RunError):
            message = event.message
            if event.fatal:
                self._add([], ops=[lambda s: set_run_error(s, self.run_id, message)])
            elif self._warnings_kept < MAX_WARNINGS:
                self._warnings_kept += 1
                source, time = event.source, _utc(event.timestamp)
                self._add([], ops=[lambda s: add_run_warning(s, self.run_id, source, message, time)])
        elif isinstance(event, TrainingEnd):
            self._training_end(event, rows)
        elif isinstance(event, RoundStart) and event.round_number is not None:
            self._round_starts[event.round_number] = event.timestamp
        elif isinstance(event, ClientUpdate):
            site = event.client_id or "unknown"
            name = event.client_name or site
            update = {
                "run_id": self.run_id,
                "round_number": event.round_number or 0,
                "site_id": site,
                "site_name": name,
                "failed": event.failed,
                "error": event.error,
                "num_examples": event.num_examples,
                "time": _utc(event.timestamp),
            }
            self._add(
                rows,
                ops=[lambda s: upsert_site(s, self.run_id, site, name), lambda s: record_site_update(s, update)],
            )
        elif isinstance(event, RoundMetrics):
            number = event.round_number or 0
            server, aggregated = dict(event.server_metrics), dict(event.aggregated_client_metrics)
            start, end = _utc(self._round_starts.pop(number, None)), _utc(event.timestamp)
            op: Op = lambda s: record_round(s, self.run_id, number, server, aggregated, start, end)  # noqa: E731
            self._add(rows, ops=[op], flush=True)
        elif rows:
            self._add(rows)
        self._raise_problems()

    def _training_end(self, event: TrainingEnd, rows: list[Row]) -> None:
        status = event.status if event.status in RUN_STATUSES else "failed"
        args = {
            "status": status,
            "best_epoch": event.best_epoch,
            "final_stats": event.final_stats,
            "duration": event.duration,
            "error_message": event.error,
        }
        self._add(rows, ops=[lambda s: finish_run(s, self.run_id, **args)])
        self.flush(wait=True)
        if status != event.status:
            raise ValueError(f"unknown run status {event.status!r}; recorded the run as failed")

    def _add(self, rows: list[Row], *, ops: list[Op] | None = None, flush: bool = False) -> None:
        with self._cond:
            self._pending.extend(rows)
            if ops:
                self._ops.extend(ops)
            backlog = len(self._pending) + self._in_flight
            if backlog > self.max_pending_rows and backlog >= self._next_drop_check:
                self._drop_batch_rows()
            if flush:
                self._request()
            elif len(self._pending) >= self.flush_rows and self._requested == self._handled:
                # While the database is failing, size-triggered retries wait a little to avoid a busy loop.
                if self._last_error is None or time.monotonic() - self._failed_at >= self.retry_after_s:
                    self._request()

    def _drop_batch_rows(self) -> None:
        # Drop down to 90 % of the bound so the scan runs once per ~10 % of growth, not on every event.
        excess = len(self._pending) + self._in_flight - int(self.max_pending_rows * 0.9)
        kept: list[Row] = []
        dropped = 0
        for row in self._pending:
            if dropped < excess and row[CONTEXT_INDEX] == "batch":
                dropped += 1
            else:
                kept.append(row)
        if not dropped:
            # Only epoch/final rows left: don't rescan on every event, only after another 10 % of growth.
            self._next_drop_check = len(self._pending) + self._in_flight + self.max_pending_rows // 10
            return
        self._pending = kept
        self.dropped_rows += dropped
        log.warning("database sink: backlog over %d rows; dropped %d batch rows", self.max_pending_rows, dropped)
        if not self._drop_reported:
            self._drop_reported = True
            self._problems.append(
                f"the database at {self.db.url_for_display} cannot keep up; dropped the oldest batch-level metrics "
                f"({self.dropped_rows} rows so far) to bound memory. Epoch and final metrics are kept"
            )

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._requested > self._handled and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("database sink: previous flush still running after %.0f s; continuing", timeout)
                    return
                self._cond.wait(remaining)

    def _request(self) -> int:
        self._requested += 1
        self._cond.notify_all()
        return self._requested

    def _raise_problems(self) -> None:
        if not self._problems:
            return
        with self._cond:
            problems, self._problems = self._problems, []
        if problems:
            raise DatabaseError("; ".join(problems))

    def flush(self, wait: bool = True) -> None:
        """Hand everything buffered to the writer; with ``wait``, block until it is committed.

        Raises
        ------
        DatabaseError
            If ``wait`` and the write failed (the rows stay pending and are retried on the next flush).
        """
        with self._cond:
            if not self._thread.is_alive():  # closed: nothing will write any more
                if self._pending or self._ops:
                    raise DatabaseError(self._failure_message())
                return
            generation = self._request()
            if not wait:
                return
            while self._handled < generation:
                self._cond.wait()
            if self._written < generation:
                raise DatabaseError(self._failure_message())

    def close(self) -> None:
        """Flush everything, wait until it is committed, and stop the writer thread.

        Raises
        ------
        DatabaseError
            If rows could still not be written after one retry (they are lost when the process exits).
        """
        if self._closed:
            return
        try:
            try:
                self.flush(wait=True)
            except DatabaseError:
                time.sleep(min(self.retry_after_s, 1.0))
                self.flush(wait=True)  # one retry: a brief outage should not lose the run's tail
        finally:
            self._closed = True
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._thread.join(timeout=60)

    @property
    def pending_rows(self) -> int:
        """Rows buffered or being written, not yet committed."""
        with self._cond:
            return len(self._pending) + self._in_flight

    def _failure_message(self) -> str:
        reason = describe_failure(self._last_error, self.db.engine.url, "write to") if self._last_error else "unknown"
        return f"{len(self._pending)} metric rows are not saved yet. {reason}"

    # ----------------------------------------------------------------- writer thread
    def _writer_loop(self) -> None:
        while True:
            with self._cond:
                while self._requested == self._handled and not self._stopping:
                    self._cond.wait()
                if self._requested == self._handled:
                    return  # stopping, nothing left
                generation = self._requested
                rows, self._pending = self._pending, []
                ops, self._ops = self._ops, []
                self._in_flight = len(rows)
            error = self._write(rows, ops)
            with self._cond:
                self._in_flight = 0
                self._handled = generation
                if error is None:
                    self._written = generation
                    self._last_error = None
                    self.written_rows += len(rows)
                    if len(self._pending) >= self.flush_rows:
                        self._request()  # rows that piled up during this write: the size trigger skipped them
                else:
                    # Keep them, oldest first, for the next flush.
                    self._pending = rows + self._pending
                    self._ops = ops + self._ops
                    self._last_error = error
                    self._failed_at = time.monotonic()
                    if not self._error_reported:
                        self._error_reported = True
                        self._problems.append(self._failure_message())
                self._cond.notify_all()

    def _insert(self, connection: Connection, chunk: list[Row]) -> None:
        if self._positional_sql is not None:
            # The Core statement compiled once, fed positional tuples: about a third faster than dict rows here.
            connection.exec_driver_sql(self._positional_sql, chunk)
        else:
            connection.execute(self._statement, [dict(zip(COLUMNS, row)) for row in chunk])

    def _write(self, rows: list[Row], ops: list[Op]) -> BaseException | None:
        try:
            with self.db.begin() as session:
                connection = session.connection()
                for chunk in iter_chunks(rows, self.chunk_rows):
                    self._insert(connection, chunk)
                for op in ops:
                    op(session)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the rows for a retry
            log.warning("database sink: writing %d rows failed: %s", len(rows), exc)
            return exc
        return None
