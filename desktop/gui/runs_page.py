"""The Runs page: every recorded run, filter/sort, open one, overlay a metric across several, export, delete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.errors import PneumoFLError
from core.persistence import Database, export_runs
from core.persistence.federation import load_federation
from core.persistence.history import RunHistory, load_batch_series, load_run_history
from core.persistence.metric_reads import metric_series
from core.persistence.resumes import RESUMABLE
from core.persistence.runs import delete_run, get_run
from desktop.charts.dashboard import EpochAxis, RunDashboard
from desktop.charts.federation import FederationDashboard
from desktop.charts.palette import OKABE_ITO
from desktop.gui.final_stats import FinalStatsPanel
from desktop.gui.runs_model import RunsTableModel
from desktop.gui.widgets import MessageBanner
from desktop.workers import run_in_thread

PALETTE = OKABE_ITO  # compared runs: one colour each, distinguishable with colour-vision deficiencies
COMPARE_METRICS = (
    "val_recall",
    "val_auroc",
    "val_specificity",
    "val_f1",
    "val_accuracy",
    "val_precision",
    "val_loss",
    "train_loss",
    "train_recall",
    "train_accuracy",
)


# The buttons' labels with their Alt+letter (D and M are the banner's, F and S the menus').
RUNS_MNEMONICS = {
    "Open": "&Open",
    "Compare": "&Compare",
    "Resume": "Res&ume",
    "Export…": "E&xport…",
    "Delete…": "De&lete…",
    "Refresh": "&Refresh",
}


class RunsPage(QWidget):
    """Browse runs. Emits ``open_requested(run_id)`` and ``compare_requested([run ids])``."""

    open_requested = Signal(int)
    compare_requested = Signal(list)
    resume_requested = Signal(int)
    resume_federation_requested = Signal(int)

    def __init__(self, db: Database | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db = db
        self.banner = MessageBanner()
        self.model = RunsTableModel(db)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)  # the experiment name takes the slack
        self.table.verticalHeader().setVisible(False)
        self.table.doubleClicked.connect(lambda index: self.open_requested.emit(self.model.run_at(index.row()).id))

        self.mode_filter = QComboBox()
        self.mode_filter.addItems(["Any mode", "centralized", "federated"])
        self.status_filter = QComboBox()
        self.status_filter.addItems(["Any status", "completed", "in_progress", "failed", "cancelled", "interrupted"])
        self.name_filter = QLineEdit()
        self.name_filter.setPlaceholderText("Filter by experiment name")
        for combo in (self.mode_filter, self.status_filter):
            combo.currentIndexChanged.connect(self.apply_filters)
        self.name_filter.returnPressed.connect(self.apply_filters)
        self.name_filter.textChanged.connect(lambda text: self.apply_filters() if not text else None)

        self.count_label = QLabel()
        buttons = {
            "Open": self.open_selected,
            "Compare": self.compare_selected,
            "Resume": self.resume_selected,
            "Export…": self.export_selected,
            "Delete…": self.delete_selected,
            "Refresh": self.refresh,
        }
        bar = QHBoxLayout()
        for w in (self.mode_filter, self.status_filter, self.name_filter):
            bar.addWidget(w)
        bar.addStretch(1)
        self.buttons: dict[str, QPushButton] = {}
        for text, slot in buttons.items():
            self.buttons[text] = QPushButton(RUNS_MNEMONICS[text])
            self.buttons[text].clicked.connect(slot)
            bar.addWidget(self.buttons[text])
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.count_label)
        # Replaceable hooks for the modal dialogs (tests answer them directly).
        self.confirm: Callable[[str], bool] = self._ask
        self.choose_export_path: Callable[[str], str] = self._ask_export_path
        self.refresh()

    def set_database(self, db: Database | None) -> None:
        """Show another database's runs."""
        self.db = db
        self.model.set_database(db)
        self._update_count()

    def refresh(self) -> None:
        """Reload from the database."""
        try:
            self.model.reload()
        except Exception as exc:  # noqa: BLE001 - DatabaseError or a dropped connection
            self.banner.show_message(f"The runs could not be loaded: {exc}")
        self._update_count()

    def apply_filters(self) -> None:
        """Apply the filter bar."""
        self.model.set_filters(
            training_mode=self.mode_filter.currentText() if self.mode_filter.currentIndex() else None,
            status=self.status_filter.currentText() if self.status_filter.currentIndex() else None,
            name_contains=self.name_filter.text().strip() or None,
        )
        self._update_count()

    def _update_count(self) -> None:
        self.count_label.setText(f"{self.model.total} run(s)" if self.db else "No database open.")

    def selected_ids(self) -> list[int]:
        """Ids of the selected runs, top to bottom."""
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.run_at(r).id for r in rows]

    def select_ids(self, ids: list[int]) -> None:
        """Select the rows of ``ids`` (those loaded)."""
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row, run in enumerate(self.model.rows):
            if run.id in ids:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def open_selected(self) -> None:
        """Open the first selected run."""
        ids = self.selected_ids()
        if not ids:
            self.banner.show_message("Select a run to open.", kind="info")
            return
        self.open_requested.emit(ids[0])

    def compare_selected(self) -> None:
        """Overlay the selected runs."""
        ids = self.selected_ids()
        if len(ids) < 2:
            self.banner.show_message("Select two or more runs to compare (Ctrl-click).", kind="info")
            return
        self.compare_requested.emit(ids)

    def resume_selected(self) -> None:
        """Continue the selected interrupted, cancelled or failed run (a federation's: its server, on that page)."""
        ids = self.selected_ids()
        if len(ids) != 1:
            self.banner.show_message("Select one interrupted, cancelled or failed run to resume.", kind="info")
            return
        run = next(r for r in self.model.rows if r.id == ids[0])
        if run.role == "site":
            self.banner.show_message(
                f"Run {run.id} is a site's part of a federation: it continues by itself when the federation's server "
                "resumes.",
                kind="info",
            )
        elif run.status not in RESUMABLE:
            self.banner.show_message(
                f"Run {run.id} is {run.status}; only an interrupted, cancelled or failed run can resume.", kind="info"
            )
        elif run.role == "server":
            self.resume_federation_requested.emit(run.id)
        else:
            self.resume_requested.emit(run.id)

    def export_selected(self) -> None:
        """Export the selected runs (or every run when none is selected) to CSV or JSON."""
        if self.db is None:
            return
        ids = self.selected_ids() or [r.id for r in self.model.rows]
        if not ids:
            self.banner.show_message("There are no runs to export.", kind="info")
            return
        path = self.choose_export_path(f"runs-{ids[0]}" if len(ids) == 1 else "runs")
        if not path:
            return
        fmt = "json" if path.lower().endswith(".json") else "csv"
        run_in_thread(
            self,
            export_runs,
            self.db,
            ids,
            fmt,
            Path(path),
            on_result=lambda out: self.banner.show_message(f"Exported {len(ids)} run(s) to {out}.", kind="info"),
            on_error=lambda msg, details: self.banner.show_message(f"Export failed: {msg}", details),
        )

    def delete_selected(self) -> None:
        """Delete the selected runs after confirmation."""
        ids = self.selected_ids()
        if not ids or self.db is None:
            return
        if not self.confirm(
            f"Delete {len(ids)} run(s) ({', '.join(map(str, ids))}) and all their metrics? This cannot be undone."
        ):
            return
        with self.db.begin() as session:
            for run_id in ids:
                delete_run(session, run_id)
        self.refresh()
        self.banner.show_message(f"Deleted {len(ids)} run(s).", kind="info")

    def _ask(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Delete runs", text)
        return answer == QMessageBox.StandardButton.Yes

    def _ask_export_path(self, stem: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Export runs", f"{stem}.csv", "CSV (*.csv);;JSON (*.json)")
        return path


class RunViewer(QWidget):
    """One recorded run: the live dashboard's charts rebuilt from the database, plus its final statistics.

    Emits ``read_requested(run_id)`` when the user asks to read images with the run's model.
    """

    read_requested = Signal(int)

    def __init__(self, db: Database, run_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db, self.run_id = db, run_id
        self.banner = MessageBanner()
        self.title = QLabel()
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dashboard = RunDashboard()
        # A federation server's run: its rounds, each site per round and the failures, as the live view drew them.
        self.federation = FederationDashboard()
        self.federation.hide()
        self.stats = FinalStatsPanel()
        self.read_button = QPushButton("Read images with this model…")
        self.read_button.clicked.connect(lambda: self.read_requested.emit(self.run_id))
        self.report_button = QPushButton("Report…")
        self.report_button.setToolTip("Save the run's report as a self-contained HTML page or a PDF")
        self.report_button.clicked.connect(self.save_report)
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.read_button)
        header.addWidget(self.report_button)
        body = QHBoxLayout()
        body.addWidget(self.dashboard, 1)
        body.addWidget(self.federation, 1)
        body.addWidget(self.stats)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(header)
        layout.addLayout(body, 1)
        self.history: RunHistory | None = None
        self.full_loaded = False
        # Replaceable hook for the save dialog (tests answer it directly).
        self.choose_report_path: Callable[[str], str] = self._ask_report_path
        self.load()

    def load(self) -> None:
        """Paint the epoch charts and final statistics at once; load the batch series in the background."""
        with self.db.begin() as session:
            history = load_run_history(session, self.run_id, include_batch=False)
        self._show(history)
        run_in_thread(
            self,
            self._load_batches,
            on_result=self._show_batches,
            on_error=lambda msg, details: self.banner.show_message(msg, details),
        )

    def _load_batches(self) -> dict:
        with self.db.begin() as session:
            return load_batch_series(session, self.run_id)

    def _show_batches(self, series: dict) -> None:
        self.dashboard.set_batch_series(series)
        if self.history is not None:
            self.history.batch_series, self.history.batch_loaded = series, True
        self.full_loaded = True
        self.dashboard.refresh()

    def _show(self, history: RunHistory) -> None:
        self.history = history
        run = history.run
        self.title.setText(
            f"<b>Run {run.id}</b> · {run.experiment_name} · {run.training_mode}/{run.role} · {run.status}"
            + (f" · best epoch {run.best_epoch}" if run.best_epoch else "")
        )
        if run.error_message:
            self.banner.show_message(f"This run failed: {run.error_message}")
        if run.role == "server":
            with self.db.begin() as session:
                federation = load_federation(session, run.id)
            self.dashboard.hide()
            self.federation.show()
            self.federation.load_history(federation)
        else:
            self.dashboard.load_history(history)
        report = history.report
        self.stats.set_report(report)
        self.read_button.setEnabled(report.model is not None)
        if not self.read_button.isEnabled():
            self.read_button.setToolTip("This run kept no evaluated model to read images with.")

    def save_report(self) -> None:
        """Ask where, then write the report (HTML or PDF by the file's suffix) in the background."""
        path = self.choose_report_path(f"run-{self.run_id}-report")
        if not path:
            return
        from desktop.report import write_report

        self.report_button.setEnabled(False)

        def done(out: Path) -> None:
            self.report_button.setEnabled(True)
            self.banner.show_message(f"Report saved to {out}.", kind="info")

        def failed(message: str, details: str) -> None:
            self.report_button.setEnabled(True)
            self.banner.show_message(f"The report could not be written: {message}", details)

        if path.lower().endswith(".pdf"):  # Qt paints PDFs on the GUI thread only
            try:
                done(write_report(self.db, self.run_id, Path(path)))
            except PneumoFLError as exc:
                failed(str(exc), "")
            return
        run_in_thread(self, write_report, self.db, self.run_id, Path(path), on_result=done, on_error=failed)

    def _ask_report_path(self, stem: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Save report", f"{stem}.html", "HTML page (*.html);;PDF (*.pdf)")
        return path


class CompareView(QWidget):
    """One metric overlaid across several runs (e.g. val_recall of a centralized run vs a federated one)."""

    def __init__(self, db: Database, run_ids: list[int], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db, self.run_ids = db, list(run_ids)
        self.metric = QComboBox()
        self.metric.addItems(COMPARE_METRICS)
        self.metric.currentTextChanged.connect(self.plot_metric)
        self.plot = pg.PlotWidget(axisItems={"bottom": EpochAxis("bottom")})
        self.plot.setBackground("w")
        self.plot.setLabel("bottom", "epoch")
        self.plot.addLegend()
        bar = QHBoxLayout()
        bar.addWidget(QLabel(f"Comparing runs {', '.join(map(str, self.run_ids))} on"))
        bar.addWidget(self.metric)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.plot, 1)
        self.curves: dict[int, pg.PlotDataItem] = {}
        self.plot_metric(self.metric.currentText())

    def plot_metric(self, name: str) -> None:
        """Draw ``name`` for every run."""
        self.plot.clear()
        self.plot.setTitle(name)
        self.curves = {}
        with self.db.begin() as session:
            for i, run_id in enumerate(self.run_ids):
                run = get_run(session, run_id)
                # A federation server has no epochs: its global model is evaluated once per round.
                server = run.role == "server"
                steps, values = metric_series(session, run_id, name, "server_eval" if server else "epoch_end")
                pen = pg.mkPen(PALETTE[i % len(PALETTE)], width=1)
                kind = "federated server, per round" if server else run.training_mode
                label = f"Run {run_id} · {run.experiment_name} ({kind})"
                self.curves[run_id] = self.plot.plot(
                    steps, values, pen=pen, name=label, symbol="o", symbolSize=5, symbolBrush=PALETTE[i % len(PALETTE)]
                )
