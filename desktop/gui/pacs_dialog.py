"""*From PACS* on the Read images page: search a PACS's studies and choose one to read.

The search is core's (:func:`core.pacs.study.search`, audited); this dialog runs it off the GUI thread and turns
every failure into a sentence in its banner. The chosen study is retrieved by the page, which reads each image as
it arrives (:func:`core.pacs.pipeline.read_study`).
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.errors import PneumoFLError
from core.pacs.network import StudyMatch, StudyQuery
from core.pacs.nodes import PacsNode, PacsSettings, load_settings
from core.persistence import Database
from desktop.gui.reading_dialogs import readings_table
from desktop.gui.widgets import MessageBanner
from desktop.workers import run_in_thread

STUDY_COLUMNS = ("Date", "Patient", "Accession", "Modalities", "Images", "Description")


class PacsStudyDialog(QDialog):
    """Search and choose a study; once accepted, :attr:`study` is the study chosen on :attr:`node`."""

    def __init__(self, db: Database, parent: QWidget | None = None, settings: PacsSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Read a study from the PACS")
        self.db = db
        self.settings = settings or load_settings()
        self.banner = MessageBanner()
        self.node_choice = QComboBox()
        for name, node in sorted(self.settings.nodes.items()):
            self.node_choice.addItem(f"{name} ({node.address})", name)
        self.patient = QLineEdit()
        self.accession = QLineEdit()
        self.date = QLineEdit()
        self.date.setPlaceholderText("20261201 or 20261201-20261205")
        self.modality = QLineEdit("CR,DX")
        self.search_button = QPushButton("&Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        self.table = readings_table(STUDY_COLUMNS)
        self.table.itemDoubleClicked.connect(lambda _item: self.choose())
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.buttons = QDialogButtonBox()
        self.retrieve_button = self.buttons.addButton("&Retrieve and read", QDialogButtonBox.ButtonRole.AcceptRole)
        self.retrieve_button.clicked.connect(self.choose)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel).clicked.connect(self.reject)
        form = QFormLayout()
        form.addRow("&PACS", self.node_choice)
        form.addRow("Patient &ID", self.patient)
        form.addRow("&Accession number", self.accession)
        form.addRow("Study &date", self.date)
        form.addRow("&Modalities", self.modality)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.search_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.buttons)
        self.studies: list[StudyMatch] = []
        self.study: StudyMatch | None = None
        self.busy = False
        if not self.settings.nodes:
            self.banner.show_message(
                "No PACS is set up yet: add one in File → Preferences (PACS), or with "
                "`pneumofl pacs add NAME --ae AE_TITLE --host HOST --port PORT`.",
                kind="info",
            )
            self.search_button.setEnabled(False)
        self.retrieve_button.setEnabled(False)
        self.resize(860, 560)

    @property
    def node(self) -> PacsNode:
        """The chosen PACS."""
        return self.settings.node(str(self.node_choice.currentData()))

    def search(self) -> None:
        """C-FIND with what the form says (audited), in the background."""
        try:
            query = StudyQuery.parse(
                self.patient.text(), "", self.accession.text(), self.date.text(), self.modality.text()
            )
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        from core.pacs.study import search

        self.banner.hide()
        self._busy(True, "Searching…")
        run_in_thread(self, search, self.db, self.node, query, on_result=self._found, on_error=self._failed)

    def _found(self, studies: list[StudyMatch]) -> None:
        self._busy(False)
        self.studies = studies
        self.table.setRowCount(len(studies))
        for row, study in enumerate(studies):
            cells = (
                study.date,
                study.patient_id,
                study.accession,
                ",".join(study.modalities),
                study.images,
                study.description,
            )
            for col, value in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem("" if value is None else str(value)))
        if studies:
            self.table.selectRow(0)
        else:
            self.banner.show_message("No study matches.", kind="info")
        self.retrieve_button.setEnabled(bool(studies))

    def choose(self) -> None:
        """Close with the selected study: the page retrieves it and reads each image as it arrives."""
        row = self.table.currentRow()
        if self.busy or not 0 <= row < len(self.studies):
            return
        self.study = self.studies[row]
        self.accept()

    def _failed(self, message: str, details: str) -> None:
        self._busy(False)
        self.banner.show_message(message, details)

    def _busy(self, busy: bool, text: str = "") -> None:
        self.busy = busy
        self.progress.setVisible(busy)
        self.progress.setRange(0, 0)  # pulsing: a PACS does not say how long a search takes
        self.progress.setFormat(text)
        for widget in (self.search_button, self.retrieve_button, self.node_choice):
            widget.setEnabled(not busy)
