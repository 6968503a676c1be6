"""Watch a run on another node: the same dashboard, fed from a hub's WebSocket instead of a training thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from core.broadcast.viewer import ViewerClient
from core.events import Event
from desktop.charts.dashboard import RunDashboard


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
        self.url = url
        self.state = QLabel("connecting…")
        self.state.setObjectName("connectionState")
        self.dashboard = RunDashboard()
        self.events_seen = 0
        self.run_id: int | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self.state)
        layout.addWidget(self.dashboard, 1)
        self.event_received.connect(self._on_event)
        self.state_changed.connect(self._on_state)
        self.message_received.connect(self._on_message)
        self.client = ViewerClient(
            url,
            token,
            run=run,
            on_event=lambda event, seq: self.event_received.emit(event),
            on_state=self.state_changed.emit,
            on_message=self.message_received.emit,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="pneumofl-remote-viewer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._task = loop.create_task(self.client.run_forever())
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(self._task)
        loop.close()

    def disconnect_from_hub(self) -> None:
        """Close the connection and stop reconnecting."""
        self.client.stop()
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)
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
