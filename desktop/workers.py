"""All threading for the desktop in one place: a QThread worker that runs the core training function.

The worker only calls :func:`core.training.recorded.train_and_record`; stopping is cooperative through a
``threading.Event`` set directly from the GUI thread (a queued slot would never run while ``fit()`` blocks
the worker thread's loop).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from core.config import RunConfig
from core.errors import PneumoFLError, RunCancelled
from core.persistence import Database
from core.sinks import EventSink
from desktop.bridge import QtEventBridge

if TYPE_CHECKING:  # the data code (pydicom) loads when a dataset is checked, not at start-up
    from core.data import PreparedDataset
    from core.training.runner import RunResult

log = logging.getLogger(__name__)


class TrainingWorker(QObject):
    """Runs one recorded training in its own QThread.

    Signals
    -------
    run_created(int)
        The run id, before the first epoch.
    finished(object)
        The :class:`RunResult` (completed, cancelled or failed).
    errored(str, str)
        A message for the user and the technical details, when the run could not start or crashed.
    """

    run_created = Signal(int)
    resumed = Signal(object)  # the resumed run's history up to where it continues (a RunHistory)
    finished = Signal(object)
    errored = Signal(str, str)

    def __init__(
        self,
        config: RunConfig,
        db_url: str | None,
        bridge: QtEventBridge,
        data: PreparedDataset | None = None,
        sinks: list[EventSink] | None = None,
        resume_run_id: int | None = None,
    ) -> None:
        super().__init__()
        self.config, self.db_url, self.bridge, self.data = config, db_url, bridge, data
        self.resume_run_id = resume_run_id
        self.sinks = sinks or []
        self.cancel_event = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop after the current batch. Thread-safe; returns at once."""
        self.cancel_event.set()

    def run(self) -> None:
        """Body of the thread: open a database of its own, train, report."""
        # torch and Lightning load here, on the worker thread, when a run starts: never before the window shows.
        from core.training.recorded import train_and_record
        from core.training.runner import RunResult

        db: Database | None = None
        try:
            db = Database.open(self.db_url or None)
            sinks = [self.bridge.sink(), *self.sinks]
            if self.resume_run_id is not None:
                result = self._resume(db, self.resume_run_id, sinks)
            else:
                result = train_and_record(
                    self.config,
                    db,
                    sinks=sinks,
                    data=self.data,
                    cancel=self.cancel_event,
                    on_run_created=self.run_created.emit,
                )
        except PneumoFLError as exc:
            self.errored.emit(str(exc), traceback.format_exc())
            self.finished.emit(RunResult(run_id=None, status="failed", error=str(exc)))
            return
        except Exception as exc:
            log.exception("training worker crashed")
            self.errored.emit(f"Training stopped unexpectedly: {exc}", traceback.format_exc())
            self.finished.emit(RunResult(run_id=None, status="failed", error=str(exc)))
            return
        finally:
            if db is not None:
                db.close()
        if result.status == "failed":
            self.errored.emit(f"Training failed: {result.error}", result.error or "")
        self.finished.emit(result)

    def _resume(self, db: Database, run_id: int, sinks: list[EventSink]) -> RunResult:
        from core.persistence.history import load_run_history
        from core.training.recorded import plan_resume, resume_and_record

        plan = plan_resume(db, run_id)
        self.run_created.emit(run_id)

        def reopened(run_id: int) -> None:
            with db.begin() as session:
                self.resumed.emit(load_run_history(session, run_id))

        return resume_and_record(plan, db, sinks=sinks, cancel=self.cancel_event, on_reopened=reopened)


def start_worker(worker: TrainingWorker, parent: QObject) -> QThread:
    """Move ``worker`` to a new QThread owned by ``parent`` and start it; the thread quits when the worker ends."""
    thread = QThread(parent)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    # Direct: QThread.quit is thread-safe, and a queued quit could sit behind a GUI slot that waits on the thread.
    worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    thread.start()
    return thread


class FunctionWorker(QObject):
    """Runs one plain function off the GUI thread (dataset checks, exports, history loads).

    Signals ``returned(object)`` with the result or ``errored(str, str)`` with a user message and details,
    then ``done()``.
    """

    returned = Signal(object)
    errored = Signal(str, str)
    done = Signal()

    def __init__(self, fn, *args, **kwargs) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def run(self) -> None:
        """Call the function and report its outcome."""
        try:
            result = self.fn(*self.args, **self.kwargs)
        except RunCancelled:
            self.errored.emit("Cancelled.", "")
        except PneumoFLError as exc:
            self.errored.emit(str(exc), traceback.format_exc())
        except Exception as exc:
            log.exception("background task failed")
            self.errored.emit(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        else:
            self.returned.emit(result)
        self.done.emit()


class ProgressRelay(QObject):
    """Carries ``report(done, total)`` calls from a worker thread to the GUI thread as ``progressed``.

    Pass ``relay.report`` as a core function's ``progress`` callback; at most one signal per 1 % of the work
    (and the last one) is sent, so a check of 100,000 files does not flood the event loop.
    """

    progressed = Signal(int, int)

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self._last = -1

    def report(self, done: int, total: int) -> None:
        """Called from any thread."""
        step = max(1, total // 100)
        if done == total or done // step != self._last:
            self._last = done // step
            self.progressed.emit(done, total)


class SentenceRelay(QObject):
    """Carries sentences from any thread to the GUI thread as ``said`` (create it on the GUI thread).

    Pass ``relay.say`` as a core object's ``on_notice`` callback and connect ``said`` to a page's banner.
    """

    said = Signal(str)

    def say(self, sentence: str) -> None:
        """Called from any thread."""
        self.said.emit(sentence)


class _Relay(QObject):
    """Calls the callbacks on the GUI thread.

    A bare function connected to a worker's signal would run on the worker's thread and touch widgets from it.
    """

    def __init__(self, parent: QObject, on_result, on_error) -> None:
        super().__init__(parent)
        self.on_result, self.on_error = on_result, on_error

    @Slot(object)
    def returned(self, value: object) -> None:
        if self.on_result is not None:
            self.on_result(value)

    @Slot(str, str)
    def errored(self, message: str, details: str) -> None:
        if self.on_error is not None:
            self.on_error(message, details)


def run_in_thread(parent: QObject, fn, *args, on_result=None, on_error=None, **kwargs) -> QThread:
    """Run ``fn(*args, **kwargs)`` in a QThread owned by ``parent``; the callbacks run on the GUI thread."""
    worker = FunctionWorker(fn, *args, **kwargs)
    relay = _Relay(parent, on_result, on_error)
    thread = QThread(parent)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    worker.returned.connect(relay.returned)
    worker.errored.connect(relay.errored)
    thread.finished.connect(relay.deleteLater)
    thread._keep = (worker, relay)  # type: ignore[attr-defined]  # both live as long as the thread
    thread.start()
    return thread


def wait_for_threads(owner: QObject, timeout_ms: int) -> bool:
    """Wait, ``timeout_ms`` in all, for every thread ``owner`` or its children started; whether all ended.

    For when the app closes: a QThread still running when its owner is destroyed aborts the whole process
    ("QThread: Destroyed while thread is still running", exit code 134). Cancel what can be cancelled first.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    for thread in owner.findChildren(QThread):
        if not thread.wait(max(0, int((deadline - time.monotonic()) * 1000))):
            log.warning("a background task was still running when the app closed")
            return False
    return True
