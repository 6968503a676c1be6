"""Reading images for the Read images page, off the GUI thread: load the model, read, stream batches, record."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from core.errors import PneumoFLError
from core.persistence import Database

if TYPE_CHECKING:  # torch and captum load when images are first read, never before the window shows
    from core.inference.models import ReadingModel
    from core.inference.reader import Reading

STREAM_EVERY = 16  # readings per update of the table


class ReadingStream(QObject):
    """Carries readings from the reading thread to the page (signals cross threads as queued calls)."""

    batch = Signal(list)
    progressed = Signal(int, int)


def read_in_background(
    db: Database | None,
    choice: tuple[str, Any],
    paths: list[Path],
    operating_point: str,
    cancel: threading.Event,
    stream: ReadingStream,
) -> tuple[ReadingModel, str]:
    """Load the model, read every image (with heatmaps when the model can explain), stream, record."""
    from core.inference.models import load_exported_model, load_run_model
    from core.inference.reader import read_images, record_readings

    kind, value = choice
    if kind == "run":
        if db is None:
            raise PneumoFLError("No database is open: open one in File → Preferences.")
        model = load_run_model(db, int(value))
    else:
        model = load_exported_model(Path(value))
    readings: list[Reading] = []
    pending: list[Reading] = []
    for reading in read_images(
        model, paths, operating_point, cam=model.explains, cancel=cancel, progress=stream.progressed.emit
    ):
        pending.append(reading)
        if len(pending) >= STREAM_EVERY:
            stream.batch.emit(pending)
            readings += pending
            pending = []
    if pending:
        stream.batch.emit(pending)
        readings += pending
    notes = []
    if not model.explains:
        notes.append("This ONNX model shows no heatmaps (a TorchScript export or the run does).")
    if cancel.is_set():
        notes.append(f"Stopped after {len(readings)} of {len(paths)} images.")
    if db is not None:
        record_readings(db, model, readings)
    return model, " ".join(notes)
