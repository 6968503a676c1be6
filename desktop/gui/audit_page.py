"""The Audit trail page: this database's audit entries, newest first; verify the chain; export it as JSON lines.

Loading, verifying and exporting run in the background (:func:`desktop.workers.run_in_thread`); the work is
core's (:mod:`core.audit`), and every failure is a sentence in the page's banner.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.audit import AuditEntry, VerifyResult, export_jsonl, iter_entries, verify
from core.persistence import Database
from desktop.gui.widgets import MessageBanner
from desktop.workers import run_in_thread

COLUMNS = ("Seq", "Time", "User", "Kind", "Details")
SHOWN = 5000  # the newest entries shown; Export writes them all
SUMMARY_WIDTH = 160


def load_newest(db: Database, limit: int = SHOWN) -> tuple[list[AuditEntry], int]:
    """The newest ``limit`` entries, newest first, and how many the trail holds (read in chunks)."""
    newest: deque[AuditEntry] = deque(maxlen=limit)
    total = 0
    with db.begin() as session:
        for entry in iter_entries(session):
            newest.append(entry)
            total += 1
    return list(reversed(newest)), total


def summarize(details: dict[str, Any]) -> str:
    """``key=value, ...`` on one line, cut to :data:`SUMMARY_WIDTH` characters."""
    parts = []
    for key, value in details.items():
        shown = value if isinstance(value, str) else f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
        parts.append(f"{key}={shown}")
    text = ", ".join(parts)
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 1] + "…"


class AuditPage(QWidget):
    """Who did what on this node: the hash-chained audit trail of the current database.

    Parameters
    ----------
    db
        The GUI's database (None when none could be opened).
    """

    def __init__(self, db: Database | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db = db
        self.entries: list[AuditEntry] = []
        self._loading = False
        self.banner = MessageBanner()
        self.summary = QLabel("Not loaded yet.")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)  # one line per entry; the whole details are the cell's tooltip
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.refresh_button = QPushButton("&Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.verify_button = QPushButton("&Verify")
        self.verify_button.setToolTip("Check every entry's hash and link, and the signature of the trail's head.")
        self.verify_button.clicked.connect(self.verify)
        self.export_button = QPushButton("&Export JSON lines…")
        self.export_button.setToolTip("Every entry with its hashes, one JSON object a line, checkable elsewhere.")
        self.export_button.clicked.connect(self.ask_export)
        buttons = QHBoxLayout()
        for button in (self.refresh_button, self.verify_button, self.export_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        self._set_enabled()

    def set_database(self, db: Database | None) -> None:
        """Show another database's trail (after the preferences changed it)."""
        self.db = db
        self.entries = []
        self.table.setRowCount(0)
        self.banner.hide()
        self.summary.setText("Not loaded yet.")
        self._set_enabled()

    def refresh(self) -> None:
        """Load the entries in the background, newest first."""
        if self.db is None:
            self.banner.show_message("No database is open: choose one in File → Preferences.")
            return
        if self._loading:  # shown again while it loads: one load is enough
            return
        self._loading = True
        self.refresh_button.setEnabled(False)
        self.summary.setText("Loading the audit trail…")
        run_in_thread(self, load_newest, self.db, on_result=self._loaded, on_error=self._load_failed)

    def verify(self) -> None:
        """Verify the whole trail in the background; the outcome is a sentence in the banner."""
        if self.db is None:
            return
        self.verify_button.setEnabled(False)
        self.summary.setText("Verifying the audit trail…")
        run_in_thread(self, verify, self.db, on_result=self._verified, on_error=self._verify_failed)

    def ask_export(self) -> None:
        """Ask for a file, then export every entry to it."""
        path, _ = QFileDialog.getSaveFileName(self, "Export the audit trail", "audit.jsonl", "JSON lines (*.jsonl)")
        if path:
            self.export(Path(path))

    def export(self, path: Path) -> None:
        """Write every entry to ``path`` as JSON lines, in the background."""
        if self.db is None:
            return
        self.export_button.setEnabled(False)
        run_in_thread(
            self,
            export_jsonl,
            self.db,
            path,
            on_result=lambda count: self._exported(count, path),
            on_error=self._export_failed,
        )

    # ------------------------------------------------------------------ results (GUI thread)
    def _loaded(self, result: tuple[list[AuditEntry], int]) -> None:
        self._loading = False
        self.entries, total = result
        self.table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries):
            when = entry.recorded_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            values = (str(entry.seq), when, entry.os_user, entry.kind, summarize(entry.details))
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                if column == len(COLUMNS) - 1:
                    item.setToolTip(json.dumps(entry.details, indent=2, ensure_ascii=False))
                self.table.setItem(row, column, item)
        for index in range(len(COLUMNS) - 1):  # once per load, not on every repaint (5,000 rows)
            self.table.resizeColumnToContents(index)
        shown = len(self.entries)
        noun = "entry" if total == 1 else "entries"
        self.summary.setText(
            f"{total} audit {noun}." if shown == total else f"The newest {shown} of {total} audit entries."
        )
        self.refresh_button.setEnabled(True)

    def _load_failed(self, message: str, details: str) -> None:
        self._loading = False
        self.summary.setText("The audit trail could not be read.")
        self.banner.show_message(f"Could not read the audit trail: {message}", details)
        self.refresh_button.setEnabled(True)

    def _verified(self, result: VerifyResult) -> None:
        self.summary.setText(result.reason)
        self.banner.show_message(result.reason, kind="info" if result.ok else "error")
        self.verify_button.setEnabled(True)

    def _verify_failed(self, message: str, details: str) -> None:
        self.summary.setText("The audit trail could not be verified.")
        self.banner.show_message(message, details)
        self.verify_button.setEnabled(True)

    def _exported(self, count: int, path: Path) -> None:
        self.banner.show_message(
            f"Exported {count} audit {'entry' if count == 1 else 'entries'} to {path}.", kind="info"
        )
        self.export_button.setEnabled(True)

    def _export_failed(self, message: str, details: str) -> None:
        self.banner.show_message(f"Export failed: {message}", details)
        self.export_button.setEnabled(True)

    def _set_enabled(self) -> None:
        for button in (self.refresh_button, self.verify_button, self.export_button):
            button.setEnabled(self.db is not None)
