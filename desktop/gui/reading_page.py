"""The Read images page: pick a model (a run or an exported file) and images, read them, see where it looked.

Reading runs in a background thread and streams its results here batch by batch, so the window stays live
through hundreds of images. Changing the operating point re-decides the readings at once (the probabilities do
not change) and records what is now shown.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.errors import PneumoFLError
from core.persistence import Database
from core.persistence.runs import list_runs
from core.reporting import RunReport
from desktop.gui.image_view import HeatmapImageView
from desktop.gui.reading_dialogs import ask_csv, ask_folder, ask_images, ask_model, readings_table
from desktop.gui.reading_pacs import PacsStudyReading
from desktop.gui.reading_stream import ReadingStream, read_in_background
from desktop.gui.widgets import MessageBanner
from desktop.workers import run_in_thread

if TYPE_CHECKING:  # torch and captum load when images are first read, never before the window shows
    from core.inference.models import ReadingModel
    from core.inference.reader import Reading

POINTS = (
    ("youden", "Youden's J (best sensitivity + specificity)"),
    ("sens95", "Sensitivity >= 0.95"),
    ("spec95", "Specificity >= 0.95"),
    ("default", "The run's threshold"),
    ("manual", "Threshold…"),
)
COLUMNS = ("File", "Probability", "Decision")


class ReadingPage(QWidget, PacsStudyReading):
    """Read images with a model. ``select_run(id)`` preselects a run (the run view's *Read images* button)."""

    def __init__(self, db: Database | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db = db
        self.banner = MessageBanner()
        self.model_choice = QComboBox()
        self.model_choice.setMinimumContentsLength(28)
        self.model_file_button = QPushButton("E&xported model…")
        self.model_file_button.clicked.connect(self.choose_model_file)
        self.refresh_button = QPushButton("&Refresh")
        self.refresh_button.clicked.connect(self.refresh_runs)
        self.add_files_button = QPushButton("Add &images…")
        self.add_files_button.clicked.connect(lambda: self.add_paths(self.choose_images()))
        self.add_folder_button = QPushButton("Add f&older…")
        self.add_folder_button.clicked.connect(lambda: self.add_paths([p for p in [self.choose_folder()] if p]))
        self.clear_button = QPushButton("C&lear")
        self.clear_button.clicked.connect(self.clear)
        self.pacs_button = QPushButton("From &PACS…")
        self.pacs_button.clicked.connect(self.from_pacs)
        self.send_button = QPushButton("Send results &to PACS")
        self.send_button.clicked.connect(self.send_to_pacs)
        self.send_button.setEnabled(False)
        self.images_label = QLabel("No images chosen.")
        self.point = QComboBox()
        for key, label in POINTS:
            self.point.addItem(label, key)
        self.manual = QDoubleSpinBox()
        self.manual.setRange(0.001, 0.999)
        self.manual.setDecimals(3)
        self.manual.setSingleStep(0.05)
        self.manual.setValue(0.5)
        self.manual.setVisible(False)
        self.point.currentIndexChanged.connect(self._point_changed)
        self.manual.valueChanged.connect(lambda _v: self._point_changed())
        self.threshold_label = QLabel()
        self.read_button = QPushButton("Re&ad images")
        self.read_button.clicked.connect(self.start_or_cancel)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.table = readings_table(COLUMNS)
        self.table.currentCellChanged.connect(lambda row, *_: self.show_reading(row))
        self.export_button = QPushButton("&Export CSV…")
        self.export_button.clicked.connect(self.export_csv)
        self.export_button.setEnabled(False)
        self.view = HeatmapImageView()
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.previous_button = QPushButton("◀ Pre&vious")
        self.next_button = QPushButton("&Next ▶")
        self.previous_button.clicked.connect(lambda: self.show_reading(self.current - 1))
        self.next_button.clicked.connect(lambda: self.show_reading(self.current + 1))
        self._build_layout()

        self.model: ReadingModel | None = None
        self.model_file: Path | None = None
        self.paths: list[Path] = []
        self.readings: list[Reading] = []
        self.current = -1
        self.cancel: threading.Event | None = None
        self.reading = False
        self.batches_received = 0
        # Replaceable hooks for the file dialogs (tests answer them directly).
        self.choose_images: Callable[[], list[str]] = lambda: ask_images(self)
        self.choose_folder: Callable[[], str] = lambda: ask_folder(self)
        self.choose_model: Callable[[], str] = lambda: ask_model(self)
        self.choose_csv_path: Callable[[], str] = lambda: ask_csv(self)
        self.refresh_runs()

    def _build_layout(self) -> None:
        form = QFormLayout()
        rows = (
            ("Model", [(self.model_choice, 1), (self.model_file_button, 0), (self.refresh_button, 0)]),
            (
                "Images",
                [
                    (self.add_files_button, 0),
                    (self.add_folder_button, 0),
                    (self.pacs_button, 0),
                    (self.clear_button, 0),
                    (self.images_label, 1),
                ],
            ),
            ("Operating point", [(self.point, 1), (self.manual, 0), (self.threshold_label, 0)]),
        )
        for label, widgets in rows:
            row = QHBoxLayout()
            for widget, stretch in widgets:
                row.addWidget(widget, stretch)
            form.addRow(label, row)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addLayout(form)
        run_row = QHBoxLayout()
        run_row.addWidget(self.read_button)
        run_row.addWidget(self.progress, 1)
        left_layout.addLayout(run_row)
        left_layout.addWidget(self.table, 1)
        answers_row = QHBoxLayout()
        answers_row.addWidget(self.export_button)
        answers_row.addWidget(self.send_button)
        left_layout.addLayout(answers_row)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.caption)
        right_layout.addWidget(self.view, 1)
        nav = QHBoxLayout()
        nav.addWidget(self.previous_button)
        nav.addStretch(1)
        nav.addWidget(self.next_button)
        right_layout.addLayout(nav)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([560, 800])
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)

    # ------------------------------------------------------------------ choosing
    def set_database(self, db: Database | None) -> None:
        """Use another database's runs."""
        self.db = db
        self.refresh_runs()

    def refresh_runs(self) -> None:
        """List the completed runs that kept an evaluated model."""
        current = self.model_choice.currentData()
        self.model_choice.clear()
        if self.model_file is not None:
            self.model_choice.addItem(f"File: {self.model_file.name}", ("file", str(self.model_file)))
        if self.db is not None:
            try:
                with self.db.begin() as session:
                    runs = list_runs(session, status="completed", limit=500)
            except Exception as exc:  # noqa: BLE001 - a dropped connection must not break the page
                self.banner.show_message(f"The runs could not be listed: {exc}")
                runs = []
            for run in runs:
                if RunReport.from_dict(run.final_stats).model is None:
                    continue
                auroc = f" · val AUROC {run.best_val_auroc:.3f}" if run.best_val_auroc is not None else ""
                self.model_choice.addItem(f"Run {run.id} · {run.experiment_name}{auroc}", ("run", run.id))
        index = self.model_choice.findData(current)
        self.model_choice.setCurrentIndex(max(0, index))
        if not self.model_choice.count():
            self.model_choice.addItem("No trained model yet: train a run or open an exported model", None)

    def select_run(self, run_id: int) -> None:
        """Choose run ``run_id`` as the model."""
        self.refresh_runs()
        index = self.model_choice.findData(("run", run_id))
        if index < 0:
            self.banner.show_message(f"Run {run_id} kept no evaluated model to read images with.")
            return
        self.model_choice.setCurrentIndex(index)

    def choose_model_file(self) -> None:
        """Pick an exported .onnx or .pt file (its card must be next to it)."""
        path = self.choose_model()
        if not path:
            return
        self.model_file = Path(path)
        self.refresh_runs()
        self.model_choice.setCurrentIndex(0)

    def add_paths(self, items: list[str] | list[Path]) -> None:
        """Add image files and folders (searched recursively)."""
        if not items:
            return
        try:
            from core.inference.reader import image_paths

            found = image_paths(items)
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        known = set(self.paths)
        self.paths += [p for p in found if p not in known]
        self.images_label.setText(f"{len(self.paths)} image(s) chosen.")

    def shutdown(self) -> None:
        """The app closes: a reading stops, and a retrieved study leaves the cache (unless the user keeps them)."""
        if self.cancel is not None:
            self.cancel.set()
        self._forget_study()

    def clear(self) -> None:
        """Forget the chosen images and the readings (a retrieved study leaves the cache)."""
        self._forget_study()
        self.paths, self.readings = [], []
        self.images_label.setText("No images chosen.")
        self.table.setRowCount(0)
        self.export_button.setEnabled(False)
        self.show_reading(-1)

    # ------------------------------------------------------------------ reading
    def operating_point(self) -> str:
        """The operating point as ``read_images`` takes it (a name, or the manual threshold)."""
        key = self.point.currentData()
        return f"{self.manual.value():.6g}" if key == "manual" else key

    def start_or_cancel(self) -> None:
        """Read the chosen images, or stop the reading in progress."""
        if self.reading:
            if self.cancel is not None:
                self.cancel.set()
            return
        choice = self.model_choice.currentData()
        if choice is None:
            self.banner.show_message("Choose a model first: a completed run, or an exported model file.")
            return
        if not self.paths:
            self.banner.show_message("Choose the images to read first (Add images… or Add folder…).", kind="info")
            return
        self._start_reading(read_in_background, self.db, choice, list(self.paths), expected_images=len(self.paths))

    def _start_reading(self, reader: Callable[..., object], *args: object, expected_images: int) -> None:
        """Run ``reader(*args, operating_point, cancel, stream)`` in the background, its readings streamed here."""
        self.banner.hide()
        self.readings, self.current, self.batches_received = [], -1, 0
        self.table.setRowCount(0)
        self.cancel = threading.Event()
        stream = ReadingStream(self)
        stream.batch.connect(self._add_batch)
        stream.progressed.connect(self._progressed)
        self._progressed(0, expected_images)  # a study's count grows as the PACS says how many there are
        self.progress.setVisible(True)
        self._set_reading(True)
        run_in_thread(
            self,
            reader,
            *args,
            self.operating_point(),
            self.cancel,
            stream,
            on_result=self._finished,
            on_error=self._failed,
        )

    def _progressed(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, done, 1))
        self.progress.setValue(done)

    def _set_reading(self, reading: bool) -> None:
        self.reading = reading
        self.read_button.setText("&Cancel" if reading else "Re&ad images")
        for w in (
            self.model_choice,
            self.model_file_button,
            self.add_files_button,
            self.add_folder_button,
            self.pacs_button,
            self.clear_button,
        ):
            w.setEnabled(not reading)

    def _add_batch(self, batch: list) -> None:
        first = self.table.rowCount()
        self.readings += batch
        self.batches_received += 1
        self.table.setRowCount(len(self.readings))
        for row, reading in enumerate(batch, first):
            self._fill_row(row, reading)
        if self.current < 0 and self.readings:
            self.table.selectRow(0)

    def _finished(self, outcome: tuple[ReadingModel, str, bool]) -> None:
        self.model, note, stopped = outcome
        self._set_reading(False)
        self.progress.setVisible(False)
        self._keep_study_images()
        self.export_button.setEnabled(bool(self.readings))
        self.send_button.setEnabled(self.pacs_node is not None and bool(self.paths))  # the images still there
        self._show_threshold()
        failed = sum(r.error is not None for r in self.readings)
        positives = sum(r.decision == "PNEUMONIA" for r in self.readings)
        text = f"{len(self.readings)} image(s) read with {self.model.name}: {positives} PNEUMONIA"
        text += f", {len(self.readings) - positives - failed} NORMAL" + (f", {failed} unreadable" if failed else "")
        self.banner.show_message(f"{text}. {note}".strip(), kind="warning" if failed or stopped else "info")

    def _failed(self, message: str, details: str) -> None:
        self._set_reading(False)
        self.progress.setVisible(False)
        self._keep_study_images()
        self.export_button.setEnabled(bool(self.readings))
        self.banner.show_message(message, details)

    def _point_changed(self) -> None:
        self.manual.setVisible(self.point.currentData() == "manual")
        if self.model is None or not self.readings or self.reading:
            return
        try:
            point, threshold = self.model.threshold(self.operating_point())
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        from core.inference.reader import at_threshold, record_readings

        self.readings = at_threshold(self.readings, point, threshold)
        for row, reading in enumerate(self.readings):
            self._fill_row(row, reading)
        self._show_threshold()
        self.show_reading(self.current)
        if self.db is not None:  # what is shown now is a reading too
            run_in_thread(self, record_readings, self.db, self.model, list(self.readings), on_error=self._failed)

    def _show_threshold(self) -> None:
        if self.readings:
            self.threshold_label.setText(f"threshold {self.readings[0].threshold:.3f}")

    def _fill_row(self, row: int, reading: Reading) -> None:
        probability = "–" if reading.probability is None else f"{reading.probability:.3f}"
        decision = reading.decision or "unreadable"
        for col, text in enumerate((reading.path.name, probability, decision)):
            item = QTableWidgetItem(text)
            if reading.error:
                item.setToolTip(reading.error)
            self.table.setItem(row, col, item)

    # ------------------------------------------------------------------ viewing
    def show_reading(self, index: int) -> None:
        """Show reading ``index`` (clamped; -1 shows nothing)."""
        if not self.readings or index < 0:
            self.current = -1
            self.view.set_image(None, None)
            self.caption.setText("")
            self._update_nav()
            return
        index = max(0, min(index, len(self.readings) - 1))
        changed = index != self.current
        self.current = index
        reading = self.readings[index]
        if changed and self.table.currentRow() != index:
            self.table.selectRow(index)
        self.view.set_image(reading.path, reading.heatmap)
        if reading.error:
            self.caption.setText(f"<b>{reading.path.name}</b>: {reading.error}")
        else:
            self.caption.setText(
                f"<b>{reading.path.name}</b> — probability of pneumonia <b>{reading.probability:.3f}</b>, "
                f"<b>{reading.decision}</b> at threshold {reading.threshold:.3f} ({reading.operating_point})"
                + "".join(f"<br><span style='color:#b00020'>⚠ {html.escape(w)}</span>" for w in reading.warnings)
            )
        self._update_nav()

    def _update_nav(self) -> None:
        self.previous_button.setEnabled(self.current > 0)
        self.next_button.setEnabled(0 <= self.current < len(self.readings) - 1)

    def export_csv(self) -> None:
        """Write the readings as shown to a CSV file."""
        path = self.choose_csv_path()
        if not path:
            return
        try:
            from core.inference.reader import reading_row, write_csv

            write_csv(Path(path), [reading_row(r) for r in self.readings])
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        self.banner.show_message(f"{len(self.readings)} reading(s) written to {path}.", kind="info")
