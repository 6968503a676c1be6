"""A run's final statistics for the run view: metrics with intervals, operating points, calibration.

Everything fits a column about 560 px wide (no horizontal scrolling at 1600 x 1000): metric rows by split,
operating points as columns, a small reliability diagram.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractScrollArea,
    QFrame,
    QHeaderView,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.reporting import Calibration, Privacy, RunReport
from core.stats.names import LABELS, OPERATING_POINTS
from desktop.charts.palette import BLUE, VERMILLION

METRICS = (
    ("auroc", "AUROC"),
    ("recall", "Sensitivity"),
    ("specificity", "Specificity"),
    ("precision", "Precision"),
    ("f1", "F1"),
    ("accuracy", "Accuracy"),
)
POINT_ROWS = (
    ("val", "recall", "Val sensitivity"),
    ("val", "specificity", "Val specificity"),
    ("test", "recall", "Test sensitivity"),
    ("test", "specificity", "Test specificity"),
    ("test", "precision", "Test precision"),
)
SPLITS = {"val": "Validation", "test": "Test"}
PANEL_WIDTH = 560
DEGENERATE = (
    "At its threshold this model gives every validation image the same decision, and no epoch (or round) did "
    "better: it is not usable at that threshold. Read images at an operating point below, or train longer or on "
    "more data."
)


def privacy_text(privacy: Privacy) -> str:
    """The privacy spent by a differentially private federation, in one paragraph."""
    return (
        f"<b>Differential privacy</b><br>ε = {privacy.epsilon:.2f} at δ = {privacy.delta} "
        f"after {privacy.releases} rounds; noise multiplier {privacy.noise_multiplier}, "
        f"{privacy.clipping} clipping at norm {privacy.clipping_norm} ({privacy.accounting})."
    )


def _table(rows: int, headers: list[str], row_labels: list[str]) -> QTableWidget:
    table = QTableWidget(rows, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setVerticalHeaderLabels(row_labels)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
    table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    return table


class FinalStatsPanel(QScrollArea):
    """Shows a run's :class:`core.reporting.RunReport` (older runs: what they have)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setFixedWidth(PANEL_WIDTH)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("background:#fdecea; border:1px solid #f5c2c0; color:#611a15; padding:6px;")
        self.metrics_title = QLabel()
        self.metrics = _table(len(METRICS) + 1, list(SPLITS.values()), [m[1] for m in METRICS] + ["TP / FP / TN / FN"])
        self.points_title = QLabel("<b>Operating points</b> (chosen on validation, applied to test)")
        self.points = _table(
            len(POINT_ROWS) + 1, [LABELS[p] for p in OPERATING_POINTS], ["Threshold"] + [r[2] for r in POINT_ROWS]
        )
        self.calibration_text = QLabel()
        self.calibration_text.setWordWrap(True)
        self.reliability = pg.PlotWidget(title="Reliability (10 bins)")
        self.reliability.setBackground("w")
        self.reliability.setLabel("bottom", "predicted probability")
        self.reliability.setLabel("left", "observed pneumonia rate")
        self.reliability.setFixedHeight(240)
        self.reliability.setXRange(0, 1)
        self.reliability.setYRange(0, 1)
        self.reliability.setMouseEnabled(False, False)
        self.reliability_legend = pg.LegendItem(colCount=3)  # in its own cell under the plot, never over it
        self.reliability.plotItem.layout.addItem(self.reliability_legend, 4, 1)
        self.empty = QLabel("No final statistics: the run ended before a validation epoch completed.")
        self.empty.setWordWrap(True)
        self.privacy = QLabel()
        self.privacy.setObjectName("privacy")
        self.privacy.setWordWrap(True)
        body = QWidget()
        layout = QVBoxLayout(body)
        for widget in (
            self.warning,
            self.empty,
            self.metrics_title,
            self.metrics,
            self.points_title,
            self.points,
            self.calibration_text,
            self.reliability,
            self.privacy,
        ):
            layout.addWidget(widget)
        layout.addStretch(1)
        self.setWidget(body)
        self.set_report(RunReport())

    def set_report(self, report: RunReport) -> None:
        """Show ``report`` (an empty report says there are none)."""
        has = bool(report.evaluated)
        self.empty.setVisible(not has)
        self.warning.setVisible(bool(report.degenerate))
        self.warning.setText(DEGENERATE)
        for widget in (self.metrics_title, self.metrics):
            widget.setVisible(has)
        title = report.headline().replace("Best checkpoint", "<b>Best checkpoint</b>", 1)
        self.metrics_title.setText(title + (", 95% bootstrap intervals" if report.has_intervals else ""))
        for col, split in enumerate(SPLITS):
            metrics = report.metrics(split)
            for row, (key, _) in enumerate(METRICS):
                self._set(self.metrics, row, col, metrics.text(key) if metrics else "–")
            self._set(self.metrics, len(METRICS), col, metrics.counts_text() if metrics else "–")
        self._show_points(report)
        self._show_calibration(report.calibration or Calibration())
        privacy = report.privacy
        self.privacy.setVisible(privacy is not None)
        if privacy is not None:
            self.privacy.setText(privacy_text(privacy))
        for table in (self.metrics, self.points):
            table.resizeRowsToContents()
            table.setFixedHeight(table.horizontalHeader().height() + table.verticalHeader().length() + 4)

    def _show_points(self, report: RunReport) -> None:
        points = report.operating_points
        for widget in (self.points_title, self.points):
            widget.setVisible(bool(points))
        for col, name in enumerate(OPERATING_POINTS):
            point = points.get(name)
            self._set(self.points, 0, col, f"{point.threshold:.3f}" if point else "–")
            for row, (split, key, _) in enumerate(POINT_ROWS, 1):
                self._set(self.points, row, col, point.metrics(split).text(key) if point else "-")

    def _show_calibration(self, calibration: Calibration) -> None:
        lines = calibration.lines()
        if calibration.temperature:
            before = calibration.before_scaling.get("val")
            extra = f" (validation ECE {before.ece:.4f} before)" if before else ""
            lines.append(f"Temperature {calibration.temperature:.3f} fitted on validation{extra}")
        self.calibration_text.setText("<b>Calibration</b><br>" + "<br>".join(lines))
        self.calibration_text.setVisible(bool(lines))
        self.reliability.setVisible(bool(lines))
        plot = self.reliability.plotItem
        plot.clear()
        self.reliability_legend.clear()
        plot.plot([0, 1], [0, 1], pen=pg.mkPen("#aaaaaa", width=1, style=Qt.PenStyle.DashLine))
        for split, colour in (("val", VERMILLION), ("test", BLUE)):
            pairs = calibration.splits[split].points() if split in calibration.splits else []
            if pairs:
                xs, ys = zip(*pairs)
                item = plot.plot(
                    list(xs), list(ys), pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6, symbolBrush=colour
                )
                self.reliability_legend.addItem(item, SPLITS[split])

    def cell(self, table: QTableWidget, row: int, col: int) -> str:
        """The text shown in a cell (for tests and accessibility)."""
        item = table.item(row, col)
        return item.text() if item else ""

    @staticmethod
    def _set(table: QTableWidget, row: int, col: int, text: str) -> None:
        item = QTableWidgetItem(text)
        item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
        table.setItem(row, col, item)
