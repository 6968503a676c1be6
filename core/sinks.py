"""Event sinks: where training events go. Training publishes to a :class:`SinkSet` and never knows who listens.

A sink that raises is reported once (as a non-fatal ``run_error`` event to the other sinks) and never
stops training.
"""

from __future__ import annotations

import logging
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TextIO

from core.events import EpochEnd, Event, RunError, TrainingEnd

log = logging.getLogger(__name__)


class EventSink(ABC):
    """Receives events. ``handle`` is called on the producer's thread and must be quick."""

    name: str = "sink"

    @abstractmethod
    def handle(self, event: Event) -> None:
        """Take one event."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources. Called once, after the last event."""


class SinkSet(EventSink):
    """Fans events out to several sinks, isolating each sink's failures from training and the others."""

    name = "sinks"

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self.sinks: list[EventSink] = list(sinks)
        self._failed: set[int] = set()
        self.run_id: int | None = None

    def add(self, sink: EventSink) -> None:
        """Attach another sink."""
        self.sinks.append(sink)

    def handle(self, event: Event) -> None:
        """Deliver ``event`` to every sink; a failing sink is reported once and kept."""
        for sink in list(self.sinks):
            try:
                sink.handle(event)
            except Exception as exc:  # noqa: BLE001 - a sink must never stop training
                self._report(sink, exc)

    def close(self) -> None:
        """Close every sink, reporting (not raising) failures."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001
                self._report(sink, exc)

    def _report(self, sink: EventSink, exc: BaseException) -> None:
        log.warning("event sink %s failed: %s", sink.name, exc, exc_info=exc)
        if id(sink) in self._failed:
            return
        self._failed.add(id(sink))
        error = RunError(
            run_id=self.run_id,
            message=f"The {sink.name} output failed and may be incomplete: {exc}. Training continues.",
            source=sink.name,
            fatal=False,
            details="".join(traceback.format_exception(exc)),
        )
        for other in self.sinks:
            if other is sink:
                continue
            try:
                other.handle(error)
            except Exception:
                log.exception("event sink %s failed while reporting an error", other.name)


class ListSink(EventSink):
    """Keeps every event in memory (tests, the bench, short-lived tools)."""

    name = "memory"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        """Append ``event``."""
        self.events.append(event)

    def of_type(self, cls: type[Event]) -> list[Event]:
        """Return the recorded events of one type, in order."""
        return [e for e in self.events if isinstance(e, cls)]


class ConsoleSink(EventSink):
    """Prints one line per epoch and the errors; the progress bar itself is Lightning's."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def handle(self, event: Event) -> None:
        """Print epoch summaries, early stopping and errors."""
        if isinstance(event, EpochEnd):
            m = event.metrics
            keys = ("train_loss", "val_loss", "val_accuracy", "val_recall", "val_specificity", "val_auroc")
            parts = [f"{k}={m[k]:.4f}" for k in keys if k in m]
            print(f"epoch {event.epoch}: " + "  ".join(parts), file=self.stream)
        elif isinstance(event, RunError):
            print(f"{'error' if event.fatal else 'warning'}: {event.message}", file=self.stream)
        elif isinstance(event, TrainingEnd) and event.status != "completed":
            print(f"run {event.run_id} {event.status}" + (f": {event.error}" if event.error else ""), file=self.stream)
        elif event.TYPE == "early_stopping":
            print(f"early stopping: {getattr(event, 'reason', '')}", file=self.stream)
