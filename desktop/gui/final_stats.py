"""A run's final statistics for the run view: metrics with intervals, operating points, calibration.

Everything fits a column about 560 px wide (no horizontal scrolling at 1600 x 1000): metric rows by split,
operating points as columns, a small reliability diagram.
"""

from __future__ import annotations

from typing import Any

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

from core.stats.names import LABELS, OPERATING_POINTS, interval_text

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


def privacy_text(privacy: dict[str, Any]) -> str:
    """The privacy spent by a differentially private federation, in one paragraph."""
    return (
        f"<b>Differential privacy</b><br>ε = {privacy.get('epsilon', float('nan')):.2f} at δ = {privacy.get('delta')} "
        f"after {privacy.get('releases')} rounds; noise multiplier {privacy.get('noise_multiplier')}, "
        f"{privacy.get('clipping')} clipping at norm {privacy.get('clipping_norm')} ({privacy.get('accounting', '')})."
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
    """Shows :func:`core.training.evaluation.final_stats` (older runs: what they have)."""

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
        self.set_stats({})

    def set_stats(self, stats: dict[str, Any]) -> None:
        """Show ``stats`` (an empty dict says there are none)."""
        splits = [s for s in SPLITS if stats.get(s)]
        has = bool(splits)
        self.empty.setVisible(not has)
        self.warning.setVisible(bool(stats.get("degenerate")))
        self.warning.setText(DEGENERATE)
        for widget in (self.metrics_title, self.metrics):
            widget.setVisible(has)
        threshold = stats.get("threshold")
        title = "<b>Best checkpoint</b>" + (f" at threshold {threshold:.3f}" if threshold is not None else "")
        self.metrics_title.setText(title + (", 95% bootstrap intervals" if stats.get("intervals") else ""))
        intervals = stats.get("intervals") or {}
        for col, split in enumerate(SPLITS):
            values = stats.get(split) or {}
            for row, (key, _) in enumerate(METRICS):
                text = interval_text(values.get(key), intervals.get(split, {}).get(key)) if values else "–"
                self._set(self.metrics, row, col, text)
            counts = " / ".join(str(int(values.get(f"cm_{k}", 0))) for k in ("tp", "fp", "tn", "fn"))
            self._set(self.metrics, len(METRICS), col, counts if values else "–")
        self._show_points(stats)
        self._show_calibration(stats)
        privacy = stats.get("privacy") or {}
        self.privacy.setVisible(bool(privacy))
        if privacy:
            self.privacy.setText(privacy_text(privacy))
        for table in (self.metrics, self.points):
            table.resizeRowsToContents()
            table.setFixedHeight(table.horizontalHeader().height() + table.verticalHeader().length() + 4)

    def _show_points(self, stats: dict[str, Any]) -> None:
        points = stats.get("operating_points") or {}
        if not points and stats.get("youden"):  # runs recorded before operating points
            points = {"youden": {"threshold": stats["youden"]["threshold"], "val": stats["youden"].get("val") or {}}}
        for widget in (self.points_title, self.points):
            widget.setVisible(bool(points))
        for col, name in enumerate(OPERATING_POINTS):
            point = points.get(name) or {}
            self._set(self.points, 0, col, f"{point['threshold']:.3f}" if point else "–")
            for row, (split, key, _) in enumerate(POINT_ROWS, 1):
                value = (point.get(split) or {}).get(key)
                bounds = (point.get("intervals") or {}).get(split, {}).get(key)
                self._set(self.points, row, col, interval_text(value, bounds))

    def _show_calibration(self, stats: dict[str, Any]) -> None:
        calibration = stats.get("calibration") or {}
        lines = []
        for split, name in SPLITS.items():
            if split in calibration:
                c = calibration[split]
                lines.append(f"{name}: Brier {c['brier']:.4f}, ECE {c['ece']:.4f}")
        if calibration.get("temperature"):
            before = (calibration.get("before_scaling") or {}).get("val")
            extra = f" (validation ECE {before['ece']:.4f} before)" if before else ""
            lines.append(f"Temperature {calibration['temperature']:.3f} fitted on validation{extra}")
        self.calibration_text.setText("<b>Calibration</b><br>" + "<br>".join(lines))
        self.calibration_text.setVisible(bool(lines))
        self.reliability.setVisible(bool(lines))
        plot = self.reliability.plotItem
        plot.clear()
        self.reliability_legend.clear()
        plot.plot([0, 1], [0, 1], pen=pg.mkPen("#aaaaaa", width=1, style=Qt.PenStyle.DashLine))
        for split, colour in (("val", "#ff7f0e"), ("test", "#1f77b4")):
            bins = (calibration.get(split) or {}).get("bins")
            if not bins:
                continue
            pairs = [(p, o) for p, o in zip(bins["mean_probability"], bins["observed"]) if p is not None]
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
