"""The federation view: server evaluation, cross-site heatmap, site curves, privacy spent, who returned what when.

The server's evaluation per round; a site x round heatmap of how each round's global model does on each site's
validation images; each site's training curve; and a table of every site's reply per round.

Fed live with :meth:`FederationDashboard.handle_event`, or with a finished server run's history
(:meth:`FederationDashboard.load_history`, the same events rebuilt from the database). Charts redraw from a timer.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, QTimer
from PySide6.QtWidgets import QHeaderView, QLabel, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from core.events import ClientUpdate, Event, RoundMetrics, RoundStart, TrainingStart
from core.persistence.federation import FederationHistory
from desktop.charts.dashboard import EpochAxis
from desktop.charts.palette import BLACK, BLUE, GREEN, ORANGE, PURPLE, SKY, VERMILLION, YELLOW

SERVER_CURVES = (("val_auroc", "AUROC", BLUE), ("val_recall", "sensitivity", VERMILLION))
SERVER_CURVES += (("val_specificity", "specificity", GREEN),)
UPDATE_COLUMNS = (
    "Round",
    "Site",
    "Returned after (s)",
    "Training (s)",
    "Waiting (s)",
    "Worker start (s)",
    "Worker memory (MB)",
    "Images",
    "To site (MB)",
    "From site (MB)",
    "Train loss",
    "Global model AUROC here",
    "Status",
)
STATUS_COLUMN = UPDATE_COLUMNS.index("Status")
SITE_COLOURS = (ORANGE, SKY, PURPLE, BLACK, GREEN, BLUE, VERMILLION, YELLOW)  # all eight Okabe-Ito colours
FAILED = "#b00020"
WIDE_PX = 900  # narrower than this, one chart per row (the heatmap's site names need the width)
MAX_CELL_LABELS = 80  # above this many heatmap cells the values are left to the colour scale


class FederationDashboard(QWidget):
    """Draws federation events; feed it with :meth:`handle_event` on the GUI thread (redraws from a timer)."""

    def __init__(self, parent: QWidget | None = None, refresh_hz: float = 5.0) -> None:
        super().__init__(parent)
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground("w")
        self.server_plot = pg.PlotItem(
            title="Server evaluation (held-out set) per round", axisItems={"bottom": EpochAxis("bottom")}
        )
        self.server_plot.setLabel("bottom", "round")
        self.server_plot.setYRange(0, 1)
        self.heatmap_plot = pg.PlotItem(title="AUROC at each site (global model)")
        self.heatmap_plot.setLabel("bottom", "round")
        self.heatmap_plot.setMouseEnabled(x=False, y=False)
        self.heatmap = pg.ImageItem(axisOrder="row-major")
        self.heatmap.setColorMap(pg.colormap.get("viridis"))
        self.heatmap_plot.addItem(self.heatmap)
        self._cell_labels: list[pg.TextItem] = []
        # Per round, from what each site sent the server: the same view for a local federation, a real one (whose
        # sites' epochs never reach the server) and a recorded one.
        self.site_plot = pg.PlotItem(
            title="Each site's training loss per round", axisItems={"bottom": EpochAxis("bottom")}
        )
        self.site_plot.setLabel("bottom", "round")
        # Legends in cells of their own, beside their charts, never over the curves.
        self.server_legend = self._legend(self.server_plot)
        self.site_legend = self._legend(self.site_plot)
        # Wide: the server's chart and the heatmap side by side, the sites' chart under the server's. Narrow (the
        # heatmap's site names and the titles no longer fit beside each other): one chart per row.
        self.wide: bool | None = None
        self._place(wide=True)
        self.plots.installEventFilter(self)
        self.privacy = QLabel("")
        self.privacy.setObjectName("privacy")
        self.privacy.setVisible(False)
        self.updates = QTableWidget(0, len(UPDATE_COLUMNS))
        self.updates.setHorizontalHeaderLabels(UPDATE_COLUMNS)
        self.updates.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.updates.horizontalHeader().setStretchLastSection(True)
        self.updates.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.updates.verticalHeader().setVisible(False)
        split = QSplitter()
        split.setOrientation(pg.QtCore.Qt.Orientation.Vertical)
        split.addWidget(self.plots)
        split.addWidget(self.updates)
        split.setSizes([480, 200])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.privacy)
        layout.addWidget(split)

        self.server: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _, _ in SERVER_CURVES}
        self.sites: dict[str, tuple[list[float], list[float]]] = {}
        self.cross_site: dict[tuple[str, int], float] = {}  # (site, round) -> global model's AUROC there
        self.site_names: dict[int, str] = {}
        self.server_runs: set[int] = set()
        self.epsilon: dict[int, float] = {}
        self._round_started: dict[int, float] = {}
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._dirty = False
        for name, label, colour in SERVER_CURVES:
            pen = pg.mkPen(colour, width=1)
            self._curves[name] = self.server_plot.plot([], [], name=label, pen=pen, symbol="o", symbolSize=5)
            self._curves[name].setSymbolBrush(colour)
        self._notes = {
            "server": self._note(self.server_plot, "No federation yet"),
            "heatmap": self._note(self.heatmap_plot, "No cross-site evaluation yet"),
            "site": self._note(self.site_plot, "No site has trained a round yet"),
        }
        self._shown_empty: dict[str, bool] = {}
        self._update_empty()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(int(1000 / refresh_hz))

    def _update_empty(self) -> None:
        empty = {
            "server": not any(xs for xs, _ in self.server.values()),
            "heatmap": not self.cross_site,
            "site": not any(xs for xs, _ in self.sites.values()),
        }
        plots = {"server": self.server_plot, "heatmap": self.heatmap_plot, "site": self.site_plot}
        for key, is_empty in empty.items():
            if self._shown_empty.get(key) != is_empty:  # only on a change: autorange is the user's after that
                self._show_empty(plots[key], self._notes[key], is_empty)
                self._shown_empty[key] = is_empty

    def is_empty(self, chart: str) -> bool:
        """Whether ``chart`` (``server``, ``heatmap``, ``site``) shows its sentence instead of axes, for tests."""
        return self._notes[chart].isVisible()

    def _note(self, plot: pg.PlotItem, sentence: str) -> pg.TextItem:
        """A sentence in the middle of ``plot``, shown instead of its axes while it has nothing to draw."""
        note = pg.TextItem(sentence, color="#666666", anchor=(0.5, 0.5))
        note.setPos(0.5, 0.5)
        plot.addItem(note, ignoreBounds=True)
        return note

    def _show_empty(self, plot: pg.PlotItem, note: pg.TextItem, empty: bool) -> None:
        """Axes only around data: an empty chart says so instead of drawing meaningless ranges."""
        for side in ("left", "bottom"):
            plot.showAxis(side, not empty)
        note.setVisible(empty)
        legend = getattr(plot, "legend", None)
        if legend is not None:  # a key with nothing to key: hidden until the chart has data
            legend.setVisible(not empty)
        if empty:
            plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        else:
            plot.enableAutoRange()
            if plot is self.server_plot:
                plot.setYRange(0, 1)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """One chart per row when the view is narrower than ``WIDE_PX``."""
        if watched is self.plots and event.type() == QEvent.Type.Resize:
            self._place(wide=event.size().width() >= WIDE_PX)
        return super().eventFilter(watched, event)

    def _place(self, wide: bool) -> None:
        if wide == self.wide:
            return
        grid = self.plots.ci
        holders = {self.server_plot: self.server_legend.parentItem(), self.site_plot: self.site_legend.parentItem()}
        for item in (self.server_plot, self.heatmap_plot, self.site_plot, *holders.values()):
            if item in grid.items:
                grid.removeItem(item)
        if wide:
            cells = {self.server_plot: (0, 0), self.heatmap_plot: (0, 1), self.site_plot: (1, 0)}
            legends = {self.server_plot: (0, 2), self.site_plot: (1, 2)}
        else:
            cells = {self.server_plot: (0, 0), self.site_plot: (1, 0), self.heatmap_plot: (2, 0)}
            legends = {self.server_plot: (0, 1), self.site_plot: (1, 1)}
        for item, (row, col) in cells.items():
            grid.addItem(item, row=row, col=col, colspan=1 if wide or item is not self.heatmap_plot else 2)
        for plot, (row, col) in legends.items():
            grid.addItem(holders[plot], row=row, col=col)
        for row in range(3):
            grid.layout.setRowStretchFactor(row, 1)
        self.wide = wide

    def _legend(self, plot: pg.PlotItem) -> pg.LegendItem:
        holder = pg.ViewBox(enableMouse=False)
        holder.setMaximumWidth(130)
        legend = pg.LegendItem(offset=(0, 0), labelTextColor="#333333")
        legend.setParentItem(holder)
        plot.legend = legend  # PlotItem adds named curves to its .legend
        return legend

    # ------------------------------------------------------------------ input
    def clear(self) -> None:
        """Forget everything drawn (a new federation starts)."""
        for xs, ys in self.server.values():
            xs.clear()
            ys.clear()
        for name in list(self.sites):
            item = self._curves.pop(f"site:{name}", None)
            if item is not None:
                self.site_plot.removeItem(item)
                self.site_legend.removeItem(item)
        self.sites.clear()
        self.cross_site.clear()
        self.site_names.clear()
        self.server_runs.clear()
        self.epsilon.clear()
        self.privacy.setVisible(False)
        self.updates.setRowCount(0)
        self._dirty = True

    def load_history(self, history: FederationHistory) -> None:
        """Show a recorded federation (a finished or running server run opened from the database)."""
        self.clear()
        for event in history.events():
            self.handle_event(event)
        self.refresh()

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
            epsilon = event.server_metrics.get("dp_epsilon")
            if epsilon is not None:
                self.epsilon[event.round_number or 0] = float(epsilon)
                delta = event.server_metrics.get("dp_delta", float("nan"))
                self.privacy.setText(
                    f"Privacy spent after round {event.round_number}: ε = {_number(epsilon)} at δ = {delta:g} "
                    "(Flower's Rényi accountant)"
                )
                self.privacy.setVisible(True)
            self._dirty = True
        elif isinstance(event, ClientUpdate):
            self._add_update(event)

    def _add_update(self, event: ClientUpdate) -> None:
        name = event.client_name or event.client_id or "?"
        metrics = event.metrics
        if "train_loss" in metrics and event.round_number is not None:
            xs, ys = self.sites.setdefault(name, ([], []))
            xs.append(float(event.round_number))
            ys.append(float(metrics["train_loss"]))
            self._dirty = True
        auroc = metrics.get("global_val_auroc")
        if auroc is not None and event.round_number is not None:
            self.cross_site[(name, event.round_number)] = float(auroc)
            self._dirty = True
        returned = metrics.get("round_trip_seconds")
        if returned is None:
            returned = event.timestamp - self._round_started.get(event.round_number or 0, event.timestamp)
        values = (
            str(event.round_number),
            name,
            _fixed(returned, 1),
            _fixed(metrics.get("train_seconds"), 1),
            _fixed(metrics.get("wait_seconds"), 1),
            _fixed(metrics.get("worker_start_seconds"), 1),
            _fixed(metrics.get("worker_rss_mb"), 0),
            "" if event.failed else str(event.num_examples),
            _megabytes(metrics.get("bytes_to_site")),
            _megabytes(metrics.get("bytes_from_site")),
            _fixed(metrics.get("train_loss"), 3),
            _fixed(auroc, 3),
            f"FAILED: {event.error}" if event.failed else "ok",
        )
        row = self.updates.rowCount()
        self.updates.insertRow(row)
        for col, text in enumerate(values):
            item = QTableWidgetItem(text)
            if event.failed:
                item.setForeground(pg.mkColor(FAILED))
            if col == STATUS_COLUMN and event.failed:
                item.setToolTip(event.error or "")
            self.updates.setItem(row, col, item)
        self.updates.scrollToBottom()

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        """Redraw what changed since the last tick."""
        if not self._dirty:
            return
        self._dirty = False
        for name, (xs, ys) in self.server.items():
            self._curves[name].setData(xs, ys)
        for i, (name, (xs, ys)) in enumerate(sorted(self.sites.items())):
            key = f"site:{name}"
            if key not in self._curves:
                colour = SITE_COLOURS[i % len(SITE_COLOURS)]
                self._curves[key] = self.site_plot.plot(
                    [], [], name=name, pen=pg.mkPen(colour, width=1), symbol="o", symbolSize=4, symbolBrush=colour
                )
            self._curves[key].setData(xs, ys)
        self._draw_heatmap()
        self._update_empty()

    def _draw_heatmap(self) -> None:
        sites = self.heatmap_sites()
        rounds = sorted({r for _, r in self.cross_site})
        for label in self._cell_labels:
            self.heatmap_plot.removeItem(label)
        self._cell_labels = []
        if not sites or not rounds:
            self.heatmap.clear()
            return
        first, last = rounds[0], rounds[-1]
        grid = np.full((len(sites), last - first + 1), np.nan, dtype=np.float32)
        for (site, number), value in self.cross_site.items():
            grid[sites.index(site), number - first] = value
        self.heatmap.setImage(grid, levels=(0.5, 1.0))
        self.heatmap.setRect(QRectF(first - 0.5, -0.5, grid.shape[1], grid.shape[0]))
        self.heatmap_plot.getAxis("left").setTicks([list(enumerate(sites))])
        self.heatmap_plot.getAxis("bottom").setTicks([[(r, str(r)) for r in range(first, last + 1)]])
        if grid.size <= MAX_CELL_LABELS:
            for (site, number), value in self.cross_site.items():
                label = pg.TextItem(f"{value:.2f}", color="w" if value < 0.8 else "k", anchor=(0.5, 0.5))
                label.setPos(number, sites.index(site))
                self.heatmap_plot.addItem(label)
                self._cell_labels.append(label)

    def heatmap_sites(self) -> list[str]:
        """The heatmap's rows, top to bottom: sites by name."""
        return sorted({site for site, _ in self.cross_site})

    def curve(self, name: str) -> tuple[list[float], list[float]]:
        """The points of a server curve (``val_auroc``...) or a site's loss (``site:<name>``), for tests."""
        if name.startswith("site:"):
            return self.sites.get(name[5:], ([], []))
        return self.server[name]

    def shutdown(self) -> None:
        """Stop redrawing (the page is closing)."""
        self.timer.stop()


def _fixed(value: float | None, digits: int) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _megabytes(value: float | None) -> str:
    return "" if value is None else f"{value / 1e6:.2f}"


def _number(value: float) -> str:
    return "∞" if not math.isfinite(value) else f"{value:.2f}"
