"""The federation's live view: server evaluation per round, each site's training curve, who returned what when."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHeaderView, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from core.events import ClientUpdate, EpochEnd, Event, RoundMetrics, RoundStart, TrainingStart
from desktop.charts.dashboard import EpochAxis

SERVER_CURVES = (("val_auroc", "AUROC"), ("val_recall", "sensitivity"), ("val_specificity", "specificity"))
UPDATE_COLUMNS = ("Round", "Site", "After (s)", "Images", "Train loss", "Val AUROC", "Status")


class FederationDashboard(QWidget):
    """Draws federation events; feed it with :meth:`handle_event` on the GUI thread (redraws from a timer)."""

    def __init__(self, parent: QWidget | None = None, refresh_hz: float = 5.0) -> None:
        super().__init__(parent)
        self.server_plot = pg.PlotWidget(
            title="Server evaluation (held-out set) per round", axisItems={"bottom": EpochAxis("bottom")}
        )
        self.server_plot.addLegend(offset=(-10, 10))
        self.server_plot.setLabel("bottom", "round")
        self.server_plot.setYRange(0, 1)
        self.site_plot = pg.PlotWidget(title="Site training loss per epoch", axisItems={"bottom": EpochAxis("bottom")})
        self.site_plot.addLegend(offset=(-10, 10))
        self.site_plot.setLabel("bottom", "epoch (all rounds)")
        self.updates = QTableWidget(0, len(UPDATE_COLUMNS))
        self.updates.setHorizontalHeaderLabels(UPDATE_COLUMNS)
        self.updates.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.updates.horizontalHeader().setStretchLastSection(True)
        self.updates.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        charts = QSplitter()
        charts.addWidget(self.server_plot)
        charts.addWidget(self.site_plot)
        split = QSplitter()
        split.setOrientation(pg.QtCore.Qt.Orientation.Vertical)
        split.addWidget(charts)
        split.addWidget(self.updates)
        split.setSizes([400, 200])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)
        self.server: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in SERVER_CURVES}
        self.sites: dict[str, tuple[list[float], list[float]]] = {}
        self.site_names: dict[int, str] = {}
        self.server_runs: set[int] = set()
        self._round_started: dict[int, float] = {}
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._dirty = False
        pens = ("#1f77b4", "#d62728", "#2ca02c")
        for (name, label), color in zip(SERVER_CURVES, pens):
            self._curves[name] = self.server_plot.plot(
                [], [], name=label, pen=pg.mkPen(color, width=1), symbol="o", symbolSize=5
            )
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(int(1000 / refresh_hz))

    def clear(self) -> None:
        """Forget everything drawn (a new federation starts)."""
        for xs, ys in self.server.values():
            xs.clear()
            ys.clear()
        for name in list(self.sites):
            self.site_plot.removeItem(self._curves.pop(f"site:{name}"))
        self.sites.clear()
        self.site_names.clear()
        self.server_runs.clear()
        self.updates.setRowCount(0)
        self._dirty = True

    def handle_event(self, event: Event) -> None:
        """Take one event of the server's or a site's run."""
        if isinstance(event, TrainingStart):
            if event.role == "server":
                self.server_runs.add(event.run_id or 0)
            else:
                self.site_names[event.run_id or 0] = event.experiment_name.rsplit(" · ", 1)[-1]
        elif isinstance(event, RoundStart):
            self._round_started[event.round_number or 0] = event.timestamp
        elif isinstance(event, RoundMetrics):
            for name, (xs, ys) in self.server.items():
                if name in event.server_metrics:
                    xs.append(float(event.round_number or 0))
                    ys.append(float(event.server_metrics[name]))
            self._dirty = True
        elif isinstance(event, EpochEnd) and event.run_id not in self.server_runs and "train_loss" in event.metrics:
            name = self.site_names.get(event.run_id or 0, f"run {event.run_id}")
            xs, ys = self.sites.setdefault(name, ([], []))
            xs.append(float(event.epoch))
            ys.append(float(event.metrics["train_loss"]))
            self._dirty = True
        elif isinstance(event, ClientUpdate):
            self._add_update(event)

    def _add_update(self, event: ClientUpdate) -> None:
        waited = event.timestamp - self._round_started.get(event.round_number or 0, event.timestamp)
        status = f"FAILED: {event.error}" if event.failed else "ok"
        values = (
            str(event.round_number),
            event.client_name or event.client_id or "?",
            f"{waited:.0f}",
            str(event.num_examples) if not event.failed else "",
            _fmt(event.metrics.get("train_loss")),
            _fmt(event.metrics.get("val_auroc")),
            status,
        )
        row = self.updates.rowCount()
        self.updates.insertRow(row)
        for col, text in enumerate(values):
            item = QTableWidgetItem(text)
            if event.failed:
                item.setForeground(pg.mkColor("#b00020"))
            self.updates.setItem(row, col, item)
        self.updates.scrollToBottom()

    def refresh(self) -> None:
        """Redraw what changed since the last tick."""
        if not self._dirty:
            return
        self._dirty = False
        for name, (xs, ys) in self.server.items():
            self._curves[name].setData(xs, ys)
        colors = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
        for i, (name, (xs, ys)) in enumerate(sorted(self.sites.items())):
            key = f"site:{name}"
            if key not in self._curves:
                pen = pg.mkPen(colors[i % len(colors)], width=1)
                self._curves[key] = self.site_plot.plot([], [], name=name, pen=pen, symbol="o", symbolSize=4)
            self._curves[key].setData(xs, ys)

    def curve(self, name: str) -> tuple[list[float], list[float]]:
        """The points of a server curve (``val_auroc``...) or a site's loss (``site:<name>``), for tests."""
        if name.startswith("site:"):
            return self.sites.get(name[5:], ([], []))
        return self.server[name]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
