"""Read a PACS study while it is still arriving: retrieval, reading and answering overlap.

The retrieval runs in a thread of its own and hands over each image once it is complete. Reading takes what has
arrived, a batch at a time, and each reading is answered (SR and capture) and sent while the next batch is read.
On a two-core workstation this hides most of the retrieval behind the model (``tests/bench/pacs_read.py``).

What was read before a failure or a cancel is still returned, with its answers, so the caller records it; the
retrieved files follow the retrieval's rule (a failed or cancelled retrieval removes them).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.pacs.nodes import PacsNode
from core.pacs.study import Answers, answer_one, fetch_study, retrieval_folder, sending
from core.persistence import Database

if TYPE_CHECKING:
    from core.inference.models import ReadingModel
    from core.inference.reader import Reading


@dataclass
class StudyReading:
    """What :func:`read_study` did: the cache folder, every reading in arrival order, the answers made and sent."""

    folder: Path
    readings: list[Reading] = field(default_factory=list)
    answers: Answers = field(default_factory=Answers)
    retrieved: int = 0
    error: Exception | None = None  # why it stopped early (a PacsError, or the cancel), if it did


def read_study(
    db: Database,
    node: PacsNode,
    study_uid: str,
    model: ReadingModel,
    operating_point: str = "youden",
    *,
    cam: bool = False,
    uid_root: str | None = None,
    send: bool = False,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_reading: Callable[[Reading], None] | None = None,
    folder: Path | None = None,
) -> StudyReading:
    """Retrieve ``study_uid`` from ``node`` into a new cache folder and read each image as it arrives.

    Parameters
    ----------
    uid_root
        Answer each DICOM reading with an SR and a secondary capture under this root (None: no answers).
    send
        C-STORE the answers on ``node`` while the next images are read (audited), as ``predict --store-results``.
    progress
        Called with ``(read, expected)`` after each batch; ``expected`` grows as the PACS says how many there are.
    on_reading
        Called with each reading as it is made, while the images are in the cache (e.g. to draw a heatmap).
    folder
        The empty cache folder to retrieve into (:func:`core.pacs.study.retrieval_folder`; a new one by default),
        for a caller that must know it before the retrieval ends (to empty it when the app closes).

    Returns
    -------
    StudyReading
        With :attr:`StudyReading.error` set when the retrieval, reading or sending stopped early; what was done
        before it is kept.
    """
    from core.inference.reader import BATCH_SIZE, read_images

    cancel = cancel or threading.Event()
    outcome = StudyReading(folder or retrieval_folder())
    arrivals: queue.Queue[Path | None] = queue.Queue()
    failure: list[BaseException] = []  # the retrieval's, once it failed: the files not yet read are gone
    expected = [0]

    def retrieve() -> None:
        def counted(done: int, total: int) -> None:
            outcome.retrieved, expected[0] = done, total

        try:
            fetch_study(
                db, node, study_uid, cancel=cancel, progress=counted, folder=outcome.folder, on_file=arrivals.put
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the reading side, which says it
            failure.append(exc)
        arrivals.put(None)

    retriever = threading.Thread(target=retrieve, name="pneumofl-retrieve", daemon=True)
    retriever.start()
    try:
        with sending(db, node) if send else contextlib.nullcontext() as sender:
            for batch in _arrived(arrivals, BATCH_SIZE):
                if failure:
                    raise failure[0]
                for reading in read_images(model, batch, operating_point, cam=cam, cancel=cancel):
                    outcome.readings.append(reading)
                    if on_reading is not None:
                        on_reading(reading)
                    if uid_root is not None:
                        answer_one(reading, model, uid_root, outcome.answers, sender)
                if progress is not None:
                    progress(len(outcome.readings), max(expected[0], len(outcome.readings)))
                if cancel.is_set():
                    break
        if failure:
            raise failure[0]
    except Exception as exc:  # noqa: BLE001 - a PacsError or a failure to send: what was done is kept
        outcome.error = exc
    finally:
        if outcome.error is not None:
            cancel.set()  # reading or sending failed: stop the retrieval too
        retriever.join()
    if outcome.error is None and cancel.is_set():
        from core.pacs.network import PacsError

        outcome.error = PacsError(f"Reading study {study_uid} from PACS {node.name} was cancelled.")
    return outcome


def _arrived(arrivals: queue.Queue[Path | None], most: int) -> Iterator[list[Path]]:
    """Batches of the files that have arrived: wait for one, then take up to ``most`` that are already there."""
    while (first := arrivals.get()) is not None:
        batch = [first]
        while len(batch) < most:
            try:
                item = arrivals.get_nowait()
            except queue.Empty:
                break
            if item is None:
                yield batch
                return
            batch.append(item)
        yield batch
