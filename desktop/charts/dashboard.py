"""The run dashboard: epoch curves, batch loss, gradient norms, learning rate, confusion matrix and ROC.

The same widget serves the live view (fed event by event from the training thread) and the run viewer (fed a
whole history from the database). Events only append to numpy series; painting happens on a 20 Hz timer and only
for curves that changed, with pyqtgraph's peak-preserving downsampling and clip-to-view so a million points stay
smooth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRect, Qt, QTimer
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QBoxLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QLabel,
    QScrollArea,
    QWidget,
)

from core.events import BatchMetrics, EarlyStopping, EpochEnd, Event, GradientStats, LrUpdate, TrainingEnd
from core.persistence.history import RunHistory
from core.reporting import RunReport
from desktop.charts.palette import BLUE, GREEN, ORANGE, PURPLE, SKY, VERMILLION
from desktop.charts.series import SeriesStore

EPOCH_METRICS = (
    ("loss", "Loss"),
    ("accuracy", "Accuracy"),
    ("recall", "Recall (sensitivity)"),
    ("specificity", "Specificity"),
    ("f1", "F1"),
    ("auroc", "AUROC"),
)
SPLIT_PENS = {"train": pg.mkPen(BLUE, width=1), "val": pg.mkPen(VERMILLION, width=1)}
LAYER_COLOURS = (GREEN, PURPLE, ORANGE, SKY, VERMILLION)  # with the global norm in black
TOP_LAYERS = 5
COLUMN_PX = 200  # narrowest chart column: its title and axis labels stay whole
ROW_PX = 130  # shortest chart row: below this the area scrolls instead
LEGEND_PX = 30
SIDE_BESIDE_PX = 1000  # narrower than this, the confusion matrix and ROC go under the charts


class EpochAxis(pg.AxisItem):
    """A bottom axis that only labels whole epochs (1, 2, 3 … never 2.5)."""

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list:
        """Pyqtgraph's ticks with the fractional ones dropped."""
        ticks = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            whole = [v for v in values if float(v).is_integer()]
            if whole:
                ticks.append((max(1.0, spacing), whole))
        return ticks


def _curve(plot: pg.PlotItem, pen: Any, name: str | None = None, symbol: str | None = None) -> pg.PlotDataItem:
    item = plot.plot(
        [], [], pen=pen, name=name, symbol=symbol, symbolSize=5, symbolBrush=pen.color() if symbol else None
    )
    item.setDownsampling(auto=True, method="peak")
    item.setClipToView(True)
    item.setSkipFiniteCheck(True)
    return item


class ConfusionMatrixView(QGroupBox):
    """A 2x2 confusion matrix with counts and row percentages."""

    def __init__(self, title: str = "Validation confusion matrix", parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        grid = QGridLayout(self)
        grid.addWidget(QLabel(""), 0, 0)
        grid.addWidget(QLabel("<b>Predicted normal</b>"), 0, 1, alignment=Qt.AlignmentFlag.AlignCenter)
        grid.addWidget(QLabel("<b>Predicted pneumonia</b>"), 0, 2, alignment=Qt.AlignmentFlag.AlignCenter)
        grid.addWidget(QLabel("<b>Normal</b>"), 1, 0)
        grid.addWidget(QLabel("<b>Pneumonia</b>"), 2, 0)
        self.cells = {key: QLabel("-") for key in ("tn", "fp", "fn", "tp")}
        for key, (row, col) in {"tn": (1, 1), "fp": (1, 2), "fn": (2, 1), "tp": (2, 2)}.items():
            self.cells[key].setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.cells[key].setObjectName(f"cm_{key}")
            grid.addWidget(self.cells[key], row, col)
        self.values: dict[str, float] = {}

    def set_counts(self, counts: dict[str, float]) -> None:
        """Show ``{"tp", "fp", "tn", "fn"}`` counts."""
        self.values = dict(counts)
        negatives = counts.get("tn", 0) + counts.get("fp", 0)
        positives = counts.get("tp", 0) + counts.get("fn", 0)
        for key, label in self.cells.items():
            value = counts.get(key)
            total = negatives if key in ("tn", "fp") else positives
            share = f" ({100 * value / total:.0f}%)" if value is not None and total else ""
            label.setText("-" if value is None else f"{int(value)}{share}")


class RunDashboard(QWidget):
    """Every chart of one run. Feed it with :meth:`handle_event` (live) or :meth:`load_history` (from the database)."""

    def __init__(self, parent: QWidget | None = None, refresh_hz: float = 20.0) -> None:
        super().__init__(parent)
        self.store = SeriesStore()
        self.repaints = 0
        self.best_epoch: int | None = None
        self.stop_epoch: int | None = None
        self.report = RunReport()
        self._roc: tuple[np.ndarray, np.ndarray] | None = None
        self._roc_drawn: tuple[np.ndarray, np.ndarray] | None = None
        self._legend_layers: list[str] | None = None
        self._drawn: dict[str, int] = {}
        self._dirty = False
        self._latest_layer_norms: dict[str, float] = {}

        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground("w")
        self.epoch_plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.markers: dict[str, list[pg.InfiniteLine]] = {"best": [], "stop": []}
        self.resume_epochs: list[int] = []  # epochs after which the run was resumed (marked on the epoch charts)
        self._resume_lines: list[tuple[pg.PlotItem, pg.InfiniteLine]] = []
        # Legends sit in layout cells of their own, never over the curves: one train/val key above the epoch
        # charts (it holds for all six), and the gradient key under its chart (its layers change as it runs).
        self.split_legend = pg.LegendItem(colCount=2)
        for i, (metric, title) in enumerate(EPOCH_METRICS):
            plot = pg.PlotItem(title=title, axisItems={"bottom": EpochAxis("bottom")})
            plot.legend = self.split_legend if i == 0 else None  # PlotItem adds named curves to its .legend
            plot.setLabel("bottom", "epoch")
            self.epoch_plots[metric] = plot
            for split in ("train", "val"):
                self.curves[f"{split}_{metric}"] = _curve(plot, SPLIT_PENS[split], split, symbol="o")
            best = pg.InfiniteLine(angle=90, pen=pg.mkPen(GREEN, width=1, style=Qt.PenStyle.DashLine))
            stop = pg.InfiniteLine(angle=90, pen=pg.mkPen(VERMILLION, width=1, style=Qt.PenStyle.DotLine))
            for line, key in ((best, "best"), (stop, "stop")):
                line.setVisible(False)
                plot.addItem(line, ignoreBounds=True)
                self.markers[key].append(line)
        self.batch_plot = pg.PlotItem(title="Batch loss (sampled)")
        self.batch_plot.setLabel("bottom", "step")
        self.curves["batch/train_loss"] = _curve(self.batch_plot, pg.mkPen(BLUE, width=1))
        self.grad_plot = pg.PlotItem(title="Gradient norm")
        self.grad_plot.setLabel("bottom", "step")
        # Across every column: long layer names would otherwise widen the middle column past the view.
        self.grad_plot.legend = pg.LegendItem(colCount=3)
        self.curves["grad_norm"] = _curve(self.grad_plot, pg.mkPen("k", width=1), "global")
        self.layer_curves = [_curve(self.grad_plot, pg.mkPen(c, width=1)) for c in LAYER_COLOURS]
        self.lr_plot = pg.PlotItem(title="Learning rate")
        self.lr_plot.setLabel("bottom", "step")
        self.curves["lr"] = _curve(self.lr_plot, pg.mkPen(PURPLE, width=1))
        # pyqtgraph's Y auto-range rescans the visible points on every pan/zoom frame (≈70 ms at 1M points);
        # step charts instead fit Y to the data when it changes (see _fit_y), so panning stays cheap.
        self.step_plots = {
            self.batch_plot: ["batch/train_loss"],
            self.grad_plot: ["grad_norm"],
            self.lr_plot: ["lr"],
        }
        for plot in self.step_plots:
            plot.enableAutoRange(y=False)

        self.cm_view = ConfusionMatrixView()
        self.roc_widget = pg.PlotWidget(title="Validation ROC")
        self.roc_widget.setBackground("w")
        self.roc_widget.setLabel("bottom", "1 - specificity")
        self.roc_widget.setLabel("left", "sensitivity")
        self.roc_widget.plot([0, 1], [0, 1], pen=pg.mkPen("#aaaaaa", width=1, style=Qt.PenStyle.DashLine))
        self.roc_curve = self.roc_widget.plot([], [], pen=pg.mkPen(VERMILLION, width=1))
        # The operating points of a finished run, where they sit on its validation ROC.
        self.roc_points = pg.ScatterPlotItem(size=9, pen=pg.mkPen("k"), brush=pg.mkBrush(GREEN))
        self.roc_widget.addItem(self.roc_points)
        self.roc_labels: list[pg.TextItem] = []
        self.roc_widget.setXRange(0, 1)
        self.roc_widget.setYRange(0, 1)

        side = self._side = QBoxLayout(QBoxLayout.Direction.TopToBottom)
        side.addWidget(self.cm_view)
        side.addWidget(self.roc_widget, 1)
        # The charts reflow into fewer columns when the view is narrow, and the area scrolls (vertically, as a
        # whole) when the rows would be too short to read (issue 24: the third column was cut off at 1280 px).
        self.columns = 0
        self._place(3)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.plots)
        self.scroll.viewport().installEventFilter(self)
        layout = self._root = QBoxLayout(QBoxLayout.Direction.LeftToRight, self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll, 4)
        layout.addLayout(side, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / refresh_hz))
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    # ------------------------------------------------------------------ feeding
    def clear(self) -> None:
        """Forget everything shown."""
        self.store.clear()
        self.best_epoch = self.stop_epoch = None
        self.resume_epochs = []
        self.report = RunReport()
        self._roc = None
        self._latest_layer_norms = {}
        self.cm_view.set_counts({})
        self._show_operating_points(self.report)
        self._dirty = True

    def handle_event(self, event: Event) -> None:
        """Add one live event; the charts repaint on the next timer tick."""
        if isinstance(event, EpochEnd):
            for name, value in event.metrics.items():
                self.store[name].append(event.epoch, value)
            self._set_cm_from(event.metrics, "val")
            roc = event.curves.get("val_roc") if event.curves else None
            if roc:
                self._roc = (np.asarray(roc["fpr"]), np.asarray(roc["tpr"]))
        elif isinstance(event, BatchMetrics):
            for name, value in event.metrics.items():
                self.store[f"batch/{name}"].append(event.step, value)
        elif isinstance(event, GradientStats):
            self.store["grad_norm"].append(event.step, event.global_norm)
            for layer, value in event.layer_norms.items():
                self.store[f"grad_norm/{layer}"].append(event.step, value)
            self._latest_layer_norms = event.layer_norms
        elif isinstance(event, LrUpdate):
            self.store["lr"].append(event.step, event.lr)
        elif isinstance(event, EarlyStopping):
            self.stop_epoch = event.epoch
        elif isinstance(event, TrainingEnd):
            self.best_epoch = event.best_epoch
            self.report = RunReport.from_dict(event.final_stats)
            self._show_operating_points(self.report)
        else:
            return
        self._dirty = True

    def load_history(self, history: RunHistory) -> None:
        """Show a recorded run (replaces what is shown)."""
        self.clear()
        for name, (xs, ys) in history.epoch_series.items():
            self.store[name].replace(xs, ys)
        self.set_batch_series(history.batch_series)
        self.best_epoch = history.run.best_epoch
        self.stop_epoch = history.early_stopping_epoch
        self.resume_epochs = [int(r["from_epoch"]) for r in history.run.resumes or []]
        self.report = history.report
        best = self.report.metrics("val")
        if best:
            self._set_cm_from({f"val_{k}": v for k, v in best.values.items()}, "val")
        else:
            self._set_cm_from({n: float(ys[-1]) for n, (_, ys) in history.epoch_series.items() if len(ys)}, "val")
        roc = history.roc
        if roc:
            self._roc = (np.asarray(roc["fpr"]), np.asarray(roc["tpr"]))
        self._show_operating_points(self.report)
        self._dirty = True
        self.refresh()

    def _show_operating_points(self, report: RunReport) -> None:
        for label in self.roc_labels:
            self.roc_widget.removeItem(label)
        self.roc_labels = []
        spots = []
        for name, point in report.operating_points.items():
            val = point.metrics("val")
            recall, specificity = val.get("recall"), val.get("specificity")
            if recall is None or specificity is None:
                continue
            x, y = 1 - specificity, recall
            spots.append({"pos": (x, y), "data": name})
            label = pg.TextItem(f"{name} t={point.threshold:.2f}", color=GREEN, anchor=(-0.05, 1.1))
            label.setPos(x, y)
            self.roc_widget.addItem(label)
            self.roc_labels.append(label)
        self.roc_points.setData(spots)

    def set_batch_series(self, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Show batch-level series loaded from the database (``train_loss``, ``grad_norm``, ``grad_norm/<layer>``, ``lr``)."""
        for name, (xs, ys) in series.items():
            key = name if name.startswith(("grad_norm", "lr")) else f"batch/{name}"
            self.store[key].replace(xs, ys)
        self._latest_layer_norms = {
            n.removeprefix("grad_norm/"): float(ys[-1])
            for n, (_, ys) in series.items()
            if n.startswith("grad_norm/") and len(ys)
        }
        self._dirty = True

    def _set_cm_from(self, metrics: dict[str, float], split: str) -> None:
        counts = {k: metrics[f"{split}_cm_{k}"] for k in ("tp", "fp", "tn", "fn") if f"{split}_cm_{k}" in metrics}
        if len(counts) == 4:
            self.cm_view.set_counts(counts)

    # ------------------------------------------------------------------ painting
    def refresh(self) -> None:
        """Repaint whatever changed since the last tick (called by the timer)."""
        if not self._dirty:
            return
        self._dirty = False
        changed = set()
        for name, curve in self.curves.items():
            series = self.store[name]
            if self._drawn.get(name) != series.version:
                curve.setData(series.x, series.y)
                self._drawn[name] = series.version
                changed.add(name)
        top = sorted(self._latest_layer_norms, key=self._latest_layer_norms.__getitem__, reverse=True)[:TOP_LAYERS]
        for plot, names in self.step_plots.items():
            if changed.intersection(names):
                self._fit_y(plot, names + ([f"grad_norm/{layer}" for layer in top] if plot is self.grad_plot else []))
        for i, (curve, layer) in enumerate(zip(self.layer_curves, top + [None] * TOP_LAYERS)):
            series = self.store[f"grad_norm/{layer}"] if layer is not None else None
            drawn = (layer, series.version if series is not None else None)
            if self._drawn.get(f"layer {i}") != drawn:  # repaint a layer curve only when it or its data changed
                if series is None:
                    curve.setData([], [])
                else:
                    curve.setData(series.x, series.y)
                self._drawn[f"layer {i}"] = drawn
        if top != self._legend_layers:
            self._update_grad_legend(top)
        for key, epoch in (("best", self.best_epoch), ("stop", self.stop_epoch)):
            for line in self.markers[key]:
                line.setVisible(epoch is not None)
                if epoch is not None:
                    line.setValue(epoch)
        self._draw_resume_marks()
        if self._roc is not self._roc_drawn:
            if self._roc is None:
                self.roc_curve.setData([], [])
            else:
                self.roc_curve.setData(*self._roc)
            self._roc_drawn = self._roc
        self.repaints += 1

    def _draw_resume_marks(self) -> None:
        """A grey line half way between the last epoch before each resume and the first after it."""
        wanted = [(plot, epoch) for epoch in self.resume_epochs for plot in self.epoch_plots.values()]
        if [line.value() for _, line in self._resume_lines] == [epoch + 0.5 for _, epoch in wanted]:
            return
        for plot, line in self._resume_lines:
            plot.removeItem(line)
        self._resume_lines = []
        for plot, epoch in wanted:
            line = pg.InfiniteLine(
                pos=epoch + 0.5,
                angle=90,
                pen=pg.mkPen("#7f7f7f", width=1, style=Qt.PenStyle.DashDotLine),
                label="resumed",
                labelOpts={"position": 0.92, "color": "#555555"},
            )
            plot.addItem(line, ignoreBounds=True)
            self._resume_lines.append((plot, line))

    def _fit_y(self, plot: pg.PlotItem, names: list[str]) -> None:
        """Fit Y to the data's extent, unless the user has zoomed or panned this chart."""
        if not plot.getViewBox().autoRangeEnabled()[0]:
            return
        values = [self.store[n].y for n in names if len(self.store[n])]
        if not values:
            return
        lo = min(float(np.nanmin(v)) for v in values)
        hi = max(float(np.nanmax(v)) for v in values)
        if np.isfinite(lo) and np.isfinite(hi):
            plot.setYRange(lo, hi if hi > lo else lo + 1e-9, padding=0.05)

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Below ``SIDE_BESIDE_PX`` the confusion matrix and ROC move under the charts, side by side."""
        narrow = event.size().width() < SIDE_BESIDE_PX
        root = QBoxLayout.Direction.TopToBottom if narrow else QBoxLayout.Direction.LeftToRight
        if self._root.direction() != root:
            self._root.setDirection(root)
            self._side.setDirection(QBoxLayout.Direction.LeftToRight if narrow else QBoxLayout.Direction.TopToBottom)
        super().resizeEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Reflow the charts when the scroll area's viewport changes width."""
        if watched is self.scroll.viewport() and event.type() == QEvent.Type.Resize:
            width = event.size().width()
            self._place(max(1, min(3, width // COLUMN_PX)))
        return super().eventFilter(watched, event)

    def _place(self, columns: int) -> None:
        """Lay the charts out in ``columns`` columns.

        The train/val key on top, the six epoch charts, the three step charts, the gradient key under them. Rows
        never get shorter than ``ROW_PX``: the area scrolls instead.
        """
        if columns == self.columns:
            return
        grid = self.plots.ci
        steps = (self.batch_plot, self.grad_plot, self.lr_plot)
        for item in (self.split_legend, *self.epoch_plots.values(), *steps, self.grad_plot.legend):
            if item in grid.items:
                grid.removeItem(item)
        epoch_rows = math.ceil(len(self.epoch_plots) / columns)
        step_rows = math.ceil(len(steps) / columns)
        grid.addItem(self.split_legend, row=0, col=0, colspan=columns)
        for i, plot in enumerate(self.epoch_plots.values()):
            grid.addItem(plot, row=1 + i // columns, col=i % columns)
        for j, plot in enumerate(steps):
            grid.addItem(plot, row=1 + epoch_rows + j // columns, col=j % columns)
        legend_row = 1 + epoch_rows + step_rows
        self.grad_plot.legend.setColumnCount(columns)  # long layer names must not widen the grid past the view
        grid.addItem(self.grad_plot.legend, row=legend_row, col=0, colspan=columns)
        for row in range(legend_row + 1):  # keys as tall as their entries; the charts take the rest
            grid.layout.setRowStretchFactor(row, 0 if row in (0, legend_row) else 1)
        for col in range(3):  # equal columns, whatever a key or a title asks for
            grid.layout.setColumnStretchFactor(col, 1 if col < columns else 0)
        self.plots.setMinimumHeight((epoch_rows + step_rows) * ROW_PX + 2 * LEGEND_PX)
        self.columns = columns

    def chart_rectangles(self) -> dict[str, QRect]:
        """Each chart's rectangle in the view's coordinates, for layout checks (see :meth:`visible_width`)."""
        charts = {**{f"epoch:{k}": p for k, p in self.epoch_plots.items()}, "batch": self.batch_plot}
        charts |= {"grad": self.grad_plot, "lr": self.lr_plot}
        return {name: self.plots.mapFromScene(plot.sceneBoundingRect()).boundingRect() for name, plot in charts.items()}

    def visible_width(self) -> int:
        """The width of the charts' viewport: anything right of it is cut off."""
        return self.plots.viewport().width()

    def _update_grad_legend(self, top: list[str]) -> None:
        self._legend_layers = top
        legend = self.grad_plot.legend
        if legend is None:
            return
        legend.clear()
        legend.addItem(self.curves["grad_norm"], "global")
        for curve, layer in zip(self.layer_curves, top):
            legend.addItem(curve, layer)

    def curve_data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The (x, y) data currently drawn for ``name`` (``val_recall``, ``batch/train_loss``, ``grad_norm``...)."""
        xs, ys = self.curves[name].getOriginalDataset()
        return (np.asarray(xs if xs is not None else []), np.asarray(ys if ys is not None else []))

    def stop_timer(self) -> None:
        """Stop repainting (before the widget is destroyed)."""
        self._timer.stop()
