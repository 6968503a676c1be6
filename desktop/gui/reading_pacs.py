"""The Read images page's PACS part: choose a study, read it as it arrives, answer it into its study.

A mixin of :class:`desktop.gui.reading_page.ReadingPage`, which owns the widgets and the reading thread this uses.
The work is core's: :func:`core.pacs.pipeline.read_study` (through
:func:`desktop.gui.reading_stream.read_study_in_background`) and :func:`core.pacs.study.answer_and_send`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QComboBox, QLabel, QPushButton

from core.errors import PneumoFLError
from core.persistence import Database
from desktop.gui.pacs_dialog import PacsStudyDialog
from desktop.gui.reading_stream import read_study_in_background
from desktop.gui.widgets import MessageBanner
from desktop.workers import run_in_thread

if TYPE_CHECKING:
    from core.inference.models import ReadingModel
    from core.inference.reader import Reading
    from core.pacs.nodes import PacsNode


class PacsStudyReading:
    """*From PACS* and *Send results to PACS* for the page that mixes this in."""

    # What the page provides.
    db: Database | None
    banner: MessageBanner
    model_choice: QComboBox
    images_label: QLabel
    send_button: QPushButton
    model: ReadingModel | None
    paths: list[Path]
    readings: list[Reading]
    clear: Callable[[], None]
    _start_reading: Callable[..., None]
    # What this keeps.
    pacs_node: PacsNode | None = None  # where the images came from (and the answers go)
    pacs_folder: Path | None = None  # their folder in the private cache
    pacs_dialog: PacsStudyDialog | None = None

    def from_pacs(self) -> None:
        """Open *From PACS*: search and choose a study, which is then read while it is retrieved."""
        if self.db is None:
            self.banner.show_message("No database is open: open one in File → Preferences.")
            return
        if self.model_choice.currentData() is None:
            self.banner.show_message("Choose a model first: a study from the PACS is read as it arrives.")
            return
        try:
            self.pacs_dialog = PacsStudyDialog(self.db, self)
        except PneumoFLError as exc:  # an unreadable pacs.json
            self.banner.show_message(str(exc))
            return
        dialog = self.pacs_dialog
        dialog.accepted.connect(lambda: self._use_study(dialog))
        dialog.open()

    def _use_study(self, dialog: PacsStudyDialog) -> None:
        """Retrieve the chosen study into a new cache folder and read each image as it arrives."""
        from core.pacs.study import retrieval_folder

        choice = self.model_choice.currentData()
        if dialog.study is None or choice is None or self.db is None:
            return
        self.clear()
        try:
            self.pacs_folder = retrieval_folder()
        except OSError as exc:
            self.banner.show_message(f"The PACS cache folder could not be made ({exc.strerror or exc}).")
            return
        except PneumoFLError as exc:  # pacs.json became unreadable since the dialog read it
            self.banner.show_message(str(exc))
            return
        self.pacs_node = node = dialog.node
        self.images_label.setText(f"Retrieving a study from PACS {node.name} and reading it as it arrives…")
        expected = dialog.study.images or 0
        self._start_reading(
            read_study_in_background,
            self.db,
            choice,
            node,
            dialog.study.study_uid,
            self.pacs_folder,
            expected_images=expected,
        )

    def send_to_pacs(self) -> None:
        """Answer each image read from the PACS with an SR and a heatmap capture, and send them into its study."""
        if self.pacs_node is None or self.model is None or self.db is None or not self.readings:
            return
        from core.pacs.nodes import load_settings
        from core.pacs.study import answer_and_send

        node, model, readings, db = self.pacs_node, self.model, list(self.readings), self.db

        def work() -> tuple[int, int]:
            answers, sent = answer_and_send(db, node, readings, model, load_settings().uid_root)
            return sent, len(answers.results)

        def sent(outcome: tuple[int, int]) -> None:
            objects, images = outcome
            self.send_button.setEnabled(True)
            self.banner.show_message(
                f"Sent {objects} DICOM object(s) ({images} reports, {images} heatmaps) to PACS {node.name}.",
                kind="info",
            )

        def failed(message: str, details: str) -> None:
            self.send_button.setEnabled(True)
            self.banner.show_message(message, details)

        self.send_button.setEnabled(False)
        run_in_thread(self, work, on_result=sent, on_error=failed)

    def _keep_study_images(self) -> None:
        """After reading a PACS study: its images (in the cache until the page is cleared) can be read again."""
        if self.pacs_node is not None:
            self.paths = [r.path for r in self.readings if r.path.exists()]
            self.images_label.setText(f"{len(self.paths)} image(s) of a study from PACS {self.pacs_node.name}.")

    def _forget_study(self) -> None:
        """Empty a retrieved study from the cache (unless the user keeps them)."""
        if self.pacs_folder is not None:
            from core.pacs.study import forget_retrieval

            forget_retrieval(self.pacs_folder)
            self.pacs_node = self.pacs_folder = None
        self.send_button.setEnabled(False)
