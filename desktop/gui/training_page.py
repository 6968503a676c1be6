"""The Training page: choose data, check it, set the few settings that matter, Start/Stop, watch it live."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, Qt, QThread, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.config import RunConfig, demo_config
from core.events import BatchMetrics, EpochEnd, Event, TrainingEnd, TrainingStart
from core.sinks import EventSink
from desktop.bridge import QtEventBridge
from desktop.charts.dashboard import RunDashboard
from desktop.engine import LOADING
from desktop.gui.training_settings import TrainingSettings
from desktop.gui.widgets import MessageBanner
from desktop.workers import ProgressRelay, TrainingWorker, run_in_thread, start_worker

if TYPE_CHECKING:  # the data code (pydicom) loads when a dataset is first checked
    from core.data import PreparedDataset

if TYPE_CHECKING:  # Lightning loads when training starts (desktop.workers), never before the window shows
    from core.persistence.history import RunHistory
    from core.training.runner import RunResult



class TrainingPage(QWidget):
    """Train a model from the GUI. Emits ``run_finished(run_id)`` when a run ends (any status)."""

    run_finished = Signal(int)

    def __init__(self, db_url: str | None, config: RunConfig | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db_url = db_url
        self.bridge = QtEventBridge(self)
        self.bridge.event.connect(self._on_event)
        self.worker: TrainingWorker | None = None
        self.thread: QThread | None = None
        self.prepared: PreparedDataset | None = None
        self.last_result: RunResult | None = None
        self.extra_sinks: list[EventSink] = []  # e.g. the broadcast hub while sharing
        self.run_id: int | None = None
        self._check_thread: QThread | None = None
        self._check_cancel: threading.Event | None = None
        self._started_at = 0.0
        self._resumed_epoch = 0
        self._total_epochs = 0
        self._steps_per_epoch = 0
        self._build(config or demo_config())

    # ------------------------------------------------------------------ layout
    def _build(self, config: RunConfig) -> None:
        self.banner = MessageBanner()
        self.data_path = QLineEdit(config.data_path)
        self.data_path.setPlaceholderText("Demo data (built in)")
        self.data_path.setReadOnly(True)
        self.use_demo = config.demo
        browse_folder = QPushButton("F&older…")
        browse_folder.setToolTip("A folder with NORMAL and PNEUMONIA sub-folders (optionally inside train/val/test).")
        browse_csv = QPushButton("&CSV…")
        browse_csv.setToolTip("A CSV manifest with an image column and a label column.")
        demo_button = QPushButton("Use d&emo data")
        browse_folder.clicked.connect(self._choose_folder)
        browse_csv.clicked.connect(self._choose_csv)
        demo_button.clicked.connect(self.use_demo_data)
        self.csv_image_column = QLineEdit(config.csv_image_column)
        self.csv_label_column = QLineEdit(config.csv_label_column)
        self.csv_box = QWidget()
        csv_form = QFormLayout(self.csv_box)
        csv_form.setContentsMargins(0, 0, 0, 0)
        csv_form.addRow("Image column", self.csv_image_column)
        csv_form.addRow("Label column", self.csv_label_column)
        self.csv_box.setVisible(config.data_path.lower().endswith(".csv"))
        self.check_button = QPushButton("Chec&k dataset")
        self.check_button.clicked.connect(self.check_dataset)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setPlaceholderText("The dataset summary and any problems appear here before training starts.")
        self.summary.setMaximumHeight(96)
        path_row = QHBoxLayout()
        for w in (self.data_path, browse_folder, browse_csv, demo_button, self.check_button):
            path_row.addWidget(w, 1 if w is self.data_path else 0)
        data_box = QGroupBox("Data")
        data_layout = QVBoxLayout(data_box)
        data_layout.addLayout(path_row)
        data_layout.addWidget(self.csv_box)
        data_layout.addWidget(self.summary)

        settings_box = TrainingSettings(config)
        self.settings_box = settings_box
        # The fields by their old names: the page's callers (and its tests) reach them here.
        for name in ("backbone", "epochs", "batch_size", "learning_rate", "image_size", "patience", "monitor"):
            setattr(self, name, getattr(settings_box, name))
        self._base = config

        self.start_button = QPushButton("Start &training")
        self.start_button.setObjectName("primary")
        self.stop_button = QPushButton("Sto&p")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setFormat("Idle")
        self.progress.setValue(0)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        controls = QVBoxLayout()
        controls.addWidget(settings_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        controls.addLayout(buttons)
        controls.addWidget(self.progress)
        controls.addWidget(self.progress_label)
        controls.addStretch(1)
        left = QWidget()
        left.setLayout(controls)
        left.setMaximumWidth(380)

        self.dashboard = RunDashboard()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.dashboard)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(data_box)
        layout.addWidget(splitter, 1)

    # ------------------------------------------------------------------ configuration
    def set_config(self, config: RunConfig) -> None:
        """Fill the form from ``config``."""
        self.settings_box.set_config(config)
        self._base = config

    def config(self) -> RunConfig:
        """The configuration the form describes (validated by the caller)."""
        path = "" if self.use_demo else self.data_path.text()
        # torch's thread count is process-wide: leave one core to the GUI so it never stutters.
        threads = self._base.max_threads or max(1, (os.cpu_count() or 2) - 1)
        return self._base.with_overrides(
            max_threads=threads,
            demo=self.use_demo,
            data_path=path,
            csv_image_column=self.csv_image_column.text() or "image",
            csv_label_column=self.csv_label_column.text() or "label",
            experiment_name="demo" if self.use_demo else Path(path).stem or "pneumonia",
            **self.settings_box.overrides(),
        )

    def set_data_path(self, path: str) -> None:
        """Use the dataset at ``path`` (folder or CSV)."""
        self.use_demo = False
        self.data_path.setText(path)
        self.csv_box.setVisible(path.lower().endswith(".csv"))
        self.prepared = None
        self.summary.clear()

    def use_demo_data(self) -> None:
        """Switch to the built-in demo dataset."""
        self.use_demo = True
        self.data_path.clear()
        self.csv_box.hide()
        self.prepared = None
        self.summary.clear()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the X-ray folder")
        if folder:
            self.set_data_path(folder)

    def _choose_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the CSV manifest", "", "CSV files (*.csv)")
        if path:
            self.set_data_path(path)

    # ------------------------------------------------------------------ dataset check
    def check_dataset(self, then_start: bool = False) -> None:
        """Check the dataset off the GUI thread with progress, and show its report; optionally start when usable.

        While a check runs, the check button cancels it.
        """
        if self._check_cancel is not None:  # the button reads "Cancel check" while a check runs
            self._check_cancel.set()
            self.check_button.setEnabled(False)
            return
        try:
            config = self.config().validate()
        except Exception as exc:  # noqa: BLE001 - ConfigError: a sentence naming the field
            self.banner.show_message(str(exc))
            return
        self.banner.hide()
        self.summary.setPlainText("Checking the dataset…")
        self.check_button.setText("Cancel chec&k")
        self.start_button.setEnabled(False)
        cancel = self._check_cancel = threading.Event()
        relay = ProgressRelay(self)
        relay.progressed.connect(self._on_check_progress)

        def finished() -> None:  # as soon as the check's outcome is shown, not when its thread has wound down
            self._check_cancel = None
            self.check_button.setText("Chec&k dataset")
            self.check_button.setEnabled(True)
            if self.thread is None:
                self.start_button.setEnabled(True)

        def done(prepared: PreparedDataset) -> None:
            finished()
            report = prepared.summary.format(limit=None)
            self.summary.setPlainText(report)
            self.progress.setFormat("Dataset checked")
            if not prepared.summary.ok:
                first = prepared.summary.errors[0].message
                self.banner.show_message(f"The dataset cannot be used for training. {first}", report)
                return
            self.prepared = prepared
            if then_start:
                self.start_prepared(config, prepared)

        def failed(message: str, details: str) -> None:
            finished()
            cancelled = cancel.is_set()
            self.summary.setPlainText("The check was cancelled." if cancelled else message)
            self.progress.setFormat("Check cancelled" if cancelled else "Check failed")
            if not cancelled:
                self.banner.show_message("The dataset could not be checked. " + message.splitlines()[0], details)

        from core.data.validation import check_data  # pydicom and the decoders: on first use

        self._check_thread = run_in_thread(
            self, check_data, config, progress=relay.report, cancel=cancel, on_result=done, on_error=failed
        )
        self._check_thread.finished.connect(finished)

    def _on_check_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(f"Checking images: {done} of {total}")

    # ------------------------------------------------------------------ run control
    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self.thread is not None

    def engine_loading(self, loading: bool) -> None:
        """Say that torch and Lightning are still loading (a run started meanwhile waits for them)."""
        if loading:
            self.progress_label.setText(LOADING)
        elif self.progress_label.text() == LOADING:
            self.progress_label.setText("")

    def start(self) -> None:
        """Check the data (if not yet) and start a run."""
        if self.running:
            return
        self.check_dataset(then_start=True)

    def start_prepared(self, config: RunConfig, prepared: PreparedDataset) -> None:
        """Start a run on data already checked (the check's summary is on screen)."""
        self._total_epochs = config.epochs
        worker = TrainingWorker(config, self.db_url, self.bridge, data=prepared, sinks=list(self.extra_sinks))
        self._launch(worker, None, "Starting…")

    def resume_run(self, run_id: int) -> bool:
        """Continue run ``run_id`` after its last completed epoch; False (with a banner) if a run is training."""
        if self.running:
            self.banner.show_message(
                f"Run {self.run_id} is training; stop it before resuming run {run_id}.", kind="warning"
            )
            return False
        worker = TrainingWorker(
            self.config(), self.db_url, self.bridge, sinks=list(self.extra_sinks), resume_run_id=run_id
        )
        worker.resumed.connect(self._on_resumed)
        self._launch(worker, run_id, f"Resuming run {run_id}…")
        return True

    def _launch(self, worker: TrainingWorker, run_id: int | None, status: str) -> None:
        """Start ``worker`` on its thread with a clean dashboard; the progress bar says ``status`` until it runs."""
        self.dashboard.clear()
        self.last_result = None
        self.run_id = run_id
        self._started_at = time.monotonic()
        self._resumed_epoch = 0
        self.worker = worker
        worker.run_created.connect(self._on_run_created)
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_finished)
        self.thread = start_worker(worker, self)
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setFormat(status)

    def _on_resumed(self, history: RunHistory) -> None:
        """Show what the run kept; its next epochs follow live, after the resume mark."""
        self.dashboard.load_history(history)
        resumes = history.run.resumes or []
        epoch = resumes[-1]["from_epoch"] if resumes else 0
        self._resumed_epoch = epoch
        self.banner.show_message(f"Run {history.run.id} resumed after epoch {epoch}.", kind="info")

    def stop(self) -> None:
        """Ask the run to stop after the current batch (returns at once)."""
        if self.worker is not None:
            self.worker.cancel()
            self.stop_button.setEnabled(False)
            self.progress.setFormat("Stopping…")

    def stop_and_wait(self, timeout_ms: int = 60_000) -> bool:
        """Stop the run and block until its thread has finished and recorded it (used when the app closes)."""
        if self.thread is None:
            return True
        self.stop()
        finished = self.thread.wait(timeout_ms)
        # The worker's `finished` signal is queued to this thread; deliver it now that the thread is done.
        QCoreApplication.processEvents()
        return finished

    def _on_worker_error(self, message: str, details: str) -> None:
        self.banner.show_message(message, details)

    def _on_run_created(self, run_id: int) -> None:
        self.run_id = run_id
        self.progress_label.setText(f"Run {run_id}")

    def _on_finished(self, result: RunResult) -> None:
        self.last_result = result
        self.dashboard.refresh()
        if self.thread is not None:
            self.thread.wait()
        self.thread = None
        self.worker = None
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        labels = {"completed": "Completed", "cancelled": "Stopped", "failed": "Failed"}
        self.progress.setFormat(labels.get(result.status, result.status))
        if result.status == "completed":
            self.progress.setValue(100)
            resumed = f" (resumed after epoch {self._resumed_epoch})" if self._resumed_epoch else ""
            self.banner.show_message(
                f"Run {result.run_id}{resumed} completed: best epoch {result.best_epoch}, "
                f"validation recall {result.best_val_recall:.3f}."
                if result.best_val_recall is not None
                else f"Run {result.run_id}{resumed} completed.",
                kind="info",
            )
        elif result.status == "cancelled":
            self.banner.show_message(
                f"Run {result.run_id} was stopped after {result.epochs_completed} epoch(s); it is saved as cancelled. "
                "Resume it from the Runs page.",
                kind="warning",
            )
        if result.run_id is not None:
            self.run_finished.emit(result.run_id)

    # ------------------------------------------------------------------ live events
    def _on_event(self, event: Event) -> None:
        self.dashboard.handle_event(event)
        if isinstance(event, TrainingStart):
            self._total_epochs = event.total_epochs
            self._steps_per_epoch = event.steps_per_epoch
        elif isinstance(event, (BatchMetrics, EpochEnd)):
            self._update_progress(event)
        elif isinstance(event, TrainingEnd):
            self.progress_label.setText(f"Run {event.run_id} · {event.status} · {_clock(event.duration)}")

    def _update_progress(self, event: BatchMetrics | EpochEnd) -> None:
        total_steps = max(1, self._total_epochs * max(1, self._steps_per_epoch))
        if isinstance(event, EpochEnd):
            done, epoch, batch = event.epoch * self._steps_per_epoch, event.epoch, self._steps_per_epoch
        else:
            done, epoch = event.step, event.epoch
            batch = event.step - (event.epoch - 1) * self._steps_per_epoch
        elapsed = time.monotonic() - self._started_at
        since = done - self._resumed_epoch * self._steps_per_epoch  # a resumed run's ETA: only its own steps
        eta = elapsed / since * (total_steps - done) if since > 0 else 0.0
        self.progress.setValue(int(100 * min(done, total_steps) / total_steps))
        self.progress.setFormat(f"Epoch {epoch}/{self._total_epochs}")
        self.progress_label.setText(
            f"Run {self.run_id} · epoch {epoch}/{self._total_epochs} · batch {batch}/{self._steps_per_epoch}"
            f" · elapsed {_clock(elapsed)} · ETA {_clock(eta)}"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
