"""The PACS part of Preferences: known nodes, a *Test* (C-ECHO) for each, the results' and cache's settings.

The settings are the results' UID root, whether the cache keeps retrieved studies, and C-MOVE's port. What is checked and saved is core's (:mod:`core.pacs.nodes`, the same ``pacs.json`` as ``pneumofl pacs``); this
module only lays it out and runs the echo off the GUI thread.
"""

from __future__ import annotations

import dataclasses
import time

from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.errors import PneumoFLError
from core.pacs.nodes import (
    DEFAULT_OUR_AE,
    PacsNode,
    PacsSettings,
    check_move_port,
    check_uid_root,
    new_node,
)
from desktop.gui.widgets import MessageBanner
from desktop.workers import run_in_thread

NODE_COLUMNS = ("Name", "PACS", "Our AE title", "Retrieve", "TLS")
RETRIEVE_CHOICES = (("C-GET", "get"), ("C-MOVE to this workstation", "move"))


class PacsNodeDialog(QDialog):
    """Add or change one node; :attr:`node` holds it once accepted (checked by core, with a sentence if wrong)."""

    def __init__(self, node: PacsNode | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS node" if node is None else f"PACS node {node.name}")
        self.node: PacsNode | None = None
        self.banner = MessageBanner()
        self.banner.hide()
        self.name = QLineEdit(node.name if node else "")
        self.name.setPlaceholderText("main")
        self.ae_title = QLineEdit(node.ae_title if node else "")
        self.ae_title.setPlaceholderText("ORTHANC")
        self.host = QLineEdit(node.host if node else "")
        self.host.setPlaceholderText("pacs.hospital.example")
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(node.port if node else 104)
        self.our_ae = QLineEdit(node.our_ae if node else DEFAULT_OUR_AE)
        self.retrieve = QComboBox()
        for label, value in RETRIEVE_CHOICES:
            self.retrieve.addItem(label, value)
        self.retrieve.setCurrentIndex(1 if node is not None and node.retrieve == "move" else 0)
        self.tls = {key: QLineEdit(getattr(node, key) if node else "") for key in ("tls_ca", "tls_cert", "tls_key")}
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("&Name", self.name)
        form.addRow("PACS &AE title", self.ae_title)
        form.addRow("&Host", self.host)
        form.addRow("&Port", self.port)
        form.addRow("&Our AE title", self.our_ae)
        form.addRow("&Retrieve with", self.retrieve)
        rows = (
            ("TLS &CA certificate", "tls_ca", "Bro&wse…"),
            ("Our certi&ficate", "tls_cert", "Brow&se…"),
            ("Our &key", "tls_key", "Brows&e…"),
        )  # each Browse has an Alt+letter of its own
        for label, key, browse in rows:
            form.addRow(label, self._file_row(self.tls[key], label.replace("&", ""), browse))
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(form)
        layout.addWidget(QLabel("Leave the TLS files empty for a PACS that talks plain DICOM."))
        layout.addWidget(buttons)

    def _file_row(self, edit: QLineEdit, title: str, browse_label: str) -> QWidget:
        browse = QPushButton(browse_label)
        browse.clicked.connect(lambda: self._browse(edit, title))
        row = QWidget()
        row.setFocusProxy(edit)  # the row's label (its Alt+letter) puts the cursor in the field
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(edit, 1)
        line.addWidget(browse)
        return row

    def _browse(self, edit: QLineEdit, title: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, title)
        if path:
            edit.setText(path)

    def accept(self) -> None:
        """Keep the node if core accepts it; otherwise say what is wrong and stay open."""
        try:
            self.node = new_node(
                self.name.text(),
                self.ae_title.text(),
                self.host.text(),
                self.port.value(),
                self.our_ae.text(),
                retrieve=str(self.retrieve.currentData()),
                **{key: edit.text() for key, edit in self.tls.items()},
            )
        except PneumoFLError as exc:
            self.banner.show_message(str(exc))
            return
        super().accept()


class PacsPreferences(QGroupBox):
    """The nodes (add, change, remove, test) and the PACS settings; :meth:`settings` returns them checked."""

    def __init__(self, settings: PacsSettings, parent: QWidget | None = None) -> None:
        super().__init__("PACS", parent)
        self.nodes: dict[str, PacsNode] = dict(settings.nodes)
        self.node_dialog: PacsNodeDialog | None = None  # the one open, if any
        self.table = QTableWidget(0, len(NODE_COLUMNS))
        self.table.setHorizontalHeaderLabels(NODE_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemDoubleClicked.connect(lambda _item: self.edit_node())
        self.add_button = QPushButton("&Add…")
        self.edit_button = QPushButton("&Change…")
        self.remove_button = QPushButton("Re&move")
        self.test_button = QPushButton("&Test")
        self.test_button.setToolTip("Check that the PACS answers and accepts this workstation (C-ECHO)")
        self.add_button.clicked.connect(self.add_node)
        self.edit_button.clicked.connect(self.edit_node)
        self.remove_button.clicked.connect(self.remove_node)
        self.test_button.clicked.connect(self.test_node)
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.uid_root = QLineEdit(settings.uid_root)
        self.uid_root.setToolTip("Your site's DICOM UID root: the UIDs of the reports and captures are made under it")
        self.keep_retrieved = QCheckBox("&Keep retrieved studies in the cache after reading")
        self.keep_retrieved.setChecked(settings.keep_retrieved)
        self.move_port = QSpinBox()
        self.move_port.setRange(1024, 65535)
        self.move_port.setValue(settings.move_port)
        self.move_port.setToolTip(
            "Where a PACS that retrieves with C-MOVE sends images; its administrator must know it"
        )
        buttons = QHBoxLayout()
        for button in (self.add_button, self.edit_button, self.remove_button, self.test_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        form = QFormLayout()
        form.addRow("Results' &UID root", self.uid_root)
        form.addRow("C-MOVE &port", self.move_port)
        form.addRow(self.keep_retrieved)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.result)
        layout.addLayout(form)
        self.table.itemSelectionChanged.connect(self._enable)
        self._fill()

    @property
    def chosen(self) -> PacsNode | None:
        """The node selected in the table."""
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return self.nodes.get(item.text()) if item is not None else None

    def _fill(self, select: str | None = None) -> None:
        self.table.setRowCount(len(self.nodes))
        for row, node in enumerate(sorted(self.nodes.values(), key=lambda n: n.name)):
            cells = (
                node.name,
                node.address,
                node.our_ae,
                "C-MOVE" if node.retrieve == "move" else "C-GET",
                "yes" if node.tls_ca else "no",
            )
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
            if node.name == select:
                self.table.selectRow(row)
        self.table.resizeColumnsToContents()
        self._enable()

    def _enable(self) -> None:
        chosen = self.chosen is not None
        for button in (self.edit_button, self.remove_button, self.test_button):
            button.setEnabled(chosen)

    def add_node(self) -> None:
        """Ask for a new node."""
        self._edit(None)

    def edit_node(self) -> None:
        """Change the chosen node (renaming it replaces it)."""
        if self.chosen is not None:
            self._edit(self.chosen)

    def _edit(self, node: PacsNode | None) -> None:
        dialog = self.node_dialog = PacsNodeDialog(node, self)
        dialog.accepted.connect(lambda: self._keep(node, dialog.node))
        dialog.open()

    def _keep(self, old: PacsNode | None, new: PacsNode | None) -> None:
        if new is None:
            return
        if old is not None:
            self.nodes.pop(old.name, None)
        self.nodes[new.name] = new
        self.result.clear()
        self._fill(select=new.name)

    def remove_node(self) -> None:
        """Forget the chosen node (saved with Preferences)."""
        node = self.chosen
        if node is not None:
            del self.nodes[node.name]
            self.result.clear()
            self._fill()

    def test_node(self) -> None:
        """C-ECHO the chosen node in the background; say the outcome in a sentence."""
        from core.pacs.network import echo

        node = self.chosen
        if node is None:
            return
        self.test_button.setEnabled(False)
        self.result.setStyleSheet("")
        self.result.setText(f"Testing {node.name}…")
        started = time.monotonic()

        def answered(_none: None) -> None:
            milliseconds = (time.monotonic() - started) * 1000
            self._said(f"PACS {node.name} ({node.address}) answered and accepts {node.our_ae} ({milliseconds:.0f} ms).")

        run_in_thread(
            self, echo, node, on_result=answered, on_error=lambda message, _details: self._said(message, True)
        )

    def _said(self, text: str, failed: bool = False) -> None:
        self.result.setStyleSheet("color:#b00020" if failed else "color:#1b5e20")
        self.result.setText(text)
        self._enable()

    def settings(self, base: PacsSettings) -> PacsSettings:
        """``base`` with this panel's nodes and settings, checked.

        Raises
        ------
        PneumoFLError
            For a UID root or port that cannot be used.
        """
        return dataclasses.replace(
            base,
            nodes=dict(self.nodes),
            uid_root=check_uid_root(self.uid_root.text().strip()),
            keep_retrieved=self.keep_retrieved.isChecked(),
            move_port=check_move_port(self.move_port.value()),
        )
