"""Watch a run on another node: the same dashboard, fed from the node's hub or loaded from its database.

A run that trains there streams live over the hub's WebSocket; any other run the node recorded is read over its
dashboard API (``/api/runs``) with the same token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from core.broadcast.remote_runs import RemoteRuns, history_from_snapshot
from core.broadcast.viewer import ViewerClient
from core.events import Event
from desktop.charts.dashboard import RunDashboard
from desktop.workers import run_in_thread


class RemoteViewer(QWidget):
    """Follows ``run`` (or the hub's current run) at ``url``; reconnects with backoff and resumes where it stopped.

    The socket lives in a thread of its own with its own asyncio loop; events and connection states reach the
    widgets through queued Qt signals.
    """

    event_received = Signal(object)
    state_changed = Signal(str)
    message_received = Signal(dict)

    def __init__(self, url: str, token: str, run: int | str = "current", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.url, self.token = url, token
        self.state = QLabel("connecting…")
        self.state.setObjectName("connectionState")
        self.runs = QComboBox()
        self.runs.setToolTip("Every run recorded on that node: live while it trains, else as recorded.")
        self.runs.setMinimumWidth(320)
        self.runs.activated.connect(lambda index: self.open_run(self.runs.itemData(index)))
        refresh = QPushButton("&Refresh")
        refresh.clicked.connect(self.refresh_runs)
        self.dashboard = RunDashboard()
        self.events_seen = 0
        self.run_id: int | None = None
        self.remote = RemoteRuns(url, token)
        bar = QHBoxLayout()
        bar.addWidget(self.state, 1)
        bar.addWidget(QLabel("Run"))
        bar.addWidget(self.runs)
        bar.addWidget(refresh)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.dashboard, 1)
        self.event_received.connect(self._on_event)
        self.state_changed.connect(self._on_state)
        self.message_received.connect(self._on_message)
        self.client: ViewerClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._thread: threading.Thread | None = None
        self._follow(run)
        self.refresh_runs()

    def _follow(self, run: int | str) -> None:
        """Follow ``run`` live at the hub (a new connection; the old one is closed)."""
        self.disconnect_from_hub(stop_timer=False)
        self.client = ViewerClient(
            self.url,
            self.token,
            run=run,
            on_event=lambda event, seq: self.event_received.emit(event),
            on_state=self.state_changed.emit,
            on_message=self.message_received.emit,
        )
        self._thread = threading.Thread(
            target=self._run, args=(self.client,), name="pneumofl-remote-viewer", daemon=True
        )
        self._thread.start()

    def refresh_runs(self) -> None:
        """List the node's recorded runs in the run chooser (in the background)."""
        run_in_thread(self, self.remote.list, on_result=self._show_runs, on_error=self._no_runs)

    def _no_runs(self, message: str, _details: str) -> None:
        self.runs.clear()
        self.runs.setPlaceholderText("no recorded runs")
        self.runs.setToolTip(message)

    def _show_runs(self, runs: list[dict]) -> None:
        self.runs.clear()
        for run in runs:
            self.runs.addItem(f"{run['id']} · {run['experiment_name']} ({run['role']}, {run['status']})", run["id"])

    def open_run(self, run_id: int) -> None:
        """Show ``run_id``: live if the node's hub streams it while it trains, else as the node recorded it."""
        live = {r.get("run_id"): r for r in (self.client.hello.get("runs", []) if self.client else [])}
        if run_id in live and live[run_id].get("status") == "in_progress":
            self.dashboard.clear()
            self._follow(run_id)
            return
        self.disconnect_from_hub(stop_timer=False)
        self.run_id = run_id
        self.state.setText(f"run {run_id}, as recorded on the node")
        run_in_thread(
            self,
            lambda: history_from_snapshot(self.remote.snapshot(run_id)),
            on_result=self.dashboard.load_history,
            on_error=lambda message, details: self.state.setText(message),
        )

    def _run(self, client: ViewerClient) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._task = loop.create_task(client.run_forever())
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(self._task)
        loop.close()

    def disconnect_from_hub(self, stop_timer: bool = True) -> None:
        """Close the connection and stop reconnecting."""
        if self.client is not None:
            self.client.stop()
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(5)
        self.client, self._thread = None, None
        if stop_timer:
            self.dashboard.stop_timer()

    def _on_event(self, event: Event) -> None:
        self.events_seen += 1
        self.dashboard.handle_event(event)

    def _on_state(self, state: str) -> None:
        self.state.setText(state)

    def _on_message(self, message: dict) -> None:
        if message.get("type") == "subscribed" and message.get("run_id") != self.run_id:
            self.run_id = message.get("run_id")
            self.dashboard.clear()  # a different run: start its charts afresh
