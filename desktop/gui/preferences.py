"""Preferences dialog: database URL, default data folder, training-form defaults, the PACS."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from core.errors import PneumoFLError
from core.pacs.nodes import PacsSettings, load_settings, save_settings
from core.persistence import Database, default_database_url
from desktop.gui.pacs_preferences import PacsPreferences
from desktop.settings import Settings


class PreferencesDialog(QDialog):
    """Edit :class:`Settings` and the PACS settings. The database URL is tried before it is accepted."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.settings = settings
        self.db_url = QLineEdit(settings.db_url)
        self.db_url.setPlaceholderText(default_database_url())
        self.db_url.setToolTip(
            "Empty: the SQLite file in your user data folder. PostgreSQL: "
            "postgresql+psycopg://user:password@host:5432/database"
        )
        self.data_folder = QLineEdit(settings.data_folder)
        self.data_folder.setPlaceholderText("Demo data")
        browse = QPushButton("&Browse…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.data_folder, 1)
        folder_row.addWidget(browse)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color:#b00020")
        self.pacs_problem = ""
        try:
            self.pacs_base = load_settings()
        except PneumoFLError as exc:  # a broken pacs.json is said, and left as it is: nothing overwrites it
            self.pacs_base, self.pacs_problem = PacsSettings(), str(exc)
        self.pacs = PacsPreferences(self.pacs_base)
        self.pacs.setEnabled(not self.pacs_problem)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Database URL", self.db_url)
        form.addRow("Default data folder", folder_row)
        form.addRow(QLabel("Training defaults are taken from the Training page when you save from there."))
        form.addRow(self.pacs)
        form.addRow(self.error)
        self.error.setText(self.pacs_problem)
        form.addRow(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Default data folder")
        if folder:
            self.data_folder.setText(folder)

    def accept(self) -> None:
        """Check the database URL and the PACS settings, then keep the values."""
        url = self.db_url.text().strip()
        try:
            Database.open(url or None).close()
            pacs = self.pacs.settings(self.pacs_base) if not self.pacs_problem else None
            if pacs is not None and pacs != self.pacs_base:
                save_settings(pacs)
        except (PneumoFLError, OSError) as exc:
            self.error.setText(str(exc))
            return
        self.settings.db_url = url
        self.settings.data_folder = self.data_folder.text().strip()
        super().accept()
