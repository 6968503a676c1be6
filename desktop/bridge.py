"""The one bridge from core events to Qt: a sink whose signal carries each event to the GUI thread."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from core.events import Event
from core.sinks import EventSink


class QtEventBridge(QObject):
    """Emits ``event`` for every core event; connect it to GUI slots (queued across threads by Qt)."""

    event = Signal(object)

    def sink(self) -> EventSink:
        """A core sink that forwards to this bridge; safe to call from any thread."""
        return _BridgeSink(self)


class _BridgeSink(EventSink):
    name = "live view"

    def __init__(self, bridge: QtEventBridge) -> None:
        self._bridge = bridge

    def handle(self, event: Event) -> None:
        self._bridge.event.emit(event)
