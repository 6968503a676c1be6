"""Reading images for the Read images page, off the GUI thread: load the model, read, stream batches, record.

Images come from files, or from a PACS study that is read while it is still arriving.
"""

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
    from core.pacs.nodes import PacsNode

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
) -> tuple[ReadingModel, str, bool]:
    """Load the model, read every image (with heatmaps when the model can explain), stream, record.

    Returns the model, a note for the user, and False (reading files stops early only when cancelled).
    """
    from core.inference.reader import read_images

    model = _load_model(db, choice)
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
    notes = _notes(model)
    if cancel.is_set():
        notes.append(f"Stopped after {len(readings)} of {len(paths)} images.")
    _record(db, model, readings)
    return model, " ".join(notes), False


def read_study_in_background(
    db: Database,
    choice: tuple[str, Any],
    node: PacsNode,
    study_uid: str,
    folder: Path,
    operating_point: str,
    cancel: threading.Event,
    stream: ReadingStream,
) -> tuple[ReadingModel, str, bool]:
    """Load the model, retrieve the study into ``folder`` and read each image as it arrives, stream, record.

    Core's :func:`core.pacs.pipeline.read_study` overlaps the retrieval with the reading. What was read before the
    retrieval failed or was cancelled is still streamed and recorded, and the reason is the note.

    Returns the model, a note for the user, and whether the study stopped early.
    """
    from core.pacs.pipeline import read_study

    model = _load_model(db, choice)
    pending: list[Reading] = []

    def read_batch(done: int, expected: int) -> None:  # after each batch: its readings, then how far it is
        stream.batch.emit(pending[:])
        pending.clear()
        stream.progressed.emit(done, expected)

    study = read_study(
        db,
        node,
        study_uid,
        model,
        operating_point,
        cam=model.explains,
        cancel=cancel,
        progress=read_batch,
        on_reading=pending.append,
        folder=folder,
    )
    if pending:  # a batch cut short by a failure
        stream.batch.emit(pending[:])
    notes = _notes(model)
    if study.error is not None:
        problem = study.error
        notes.append(str(problem) if isinstance(problem, PneumoFLError) else f"{type(problem).__name__}: {problem}")
    _record(db, model, study.readings)
    return model, " ".join(notes), study.error is not None


def _load_model(db: Database | None, choice: tuple[str, Any]) -> ReadingModel:
    """A completed run's model (``("run", id)``) or an exported model file (``("file", path)``)."""
    from core.inference.models import load_exported_model, load_run_model

    kind, value = choice
    if kind == "run":
        if db is None:
            raise PneumoFLError("No database is open: open one in File → Preferences.")
        return load_run_model(db, int(value))
    return load_exported_model(Path(value))


def _notes(model: ReadingModel) -> list[str]:
    return [] if model.explains else ["This ONNX model shows no heatmaps (a TorchScript export or the run does)."]


def _record(db: Database | None, model: ReadingModel, readings: list[Reading]) -> None:
    from core.inference.reader import record_readings

    if db is not None:
        record_readings(db, model, readings)
