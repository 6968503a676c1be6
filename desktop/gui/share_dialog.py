"""Sharing: serve the live view to remote viewers from the app's own event loop, and connect to another node."""

from __future__ import annotations

import asyncio
import ssl

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from core.broadcast import BroadcastHub, load_or_create_token, rotate_token
from core.broadcast.hub import server_ssl_context
from core.persistence import default_database_url


class ShareDialog(QDialog):
    """Start or stop the hub, and show the address and token viewers need (copyable, rotatable).

    Emits ``sharing_changed(hub or None)`` whenever the hub starts or stops.
    """

    sharing_changed = Signal(object)

    def __init__(self, hub: BroadcastHub | None, parent: QWidget | None = None, db_url: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Share live view")
        self.hub = hub
        self.db_url = db_url  # the runs the browser page lists
        self._task: asyncio.Task[None] | None = None
        self.host = QLineEdit(hub.host if hub else "127.0.0.1")
        self.host.setToolTip("127.0.0.1 shares with this computer only; 0.0.0.0 with your network (use TLS then).")
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(hub.port if hub else 8765)
        self.cert = QLineEdit()
        self.cert.setPlaceholderText("optional: certificate (PEM) for wss://")
        self.key = QLineEdit()
        self.key.setPlaceholderText("optional: private key (PEM)")
        self.url = QLineEdit()
        self.url.setReadOnly(True)
        self.page = QLineEdit()
        self.page.setReadOnly(True)
        self.page.setToolTip("Any browser opens every recorded run here, live while it trains (sign in with the token).")
        copy_page = QPushButton("Copy")
        copy_page.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.page.text()))
        self.token = QLineEdit(load_or_create_token())
        self.token.setReadOnly(True)
        copy_url, copy_token, rotate = QPushButton("Copy"), QPushButton("Copy"), QPushButton("Rotate token")
        copy_url.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.url.text()))
        copy_token.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.token.text()))
        rotate.clicked.connect(self.rotate)
        self.toggle = QPushButton()
        self.toggle.clicked.connect(self.toggle_sharing)
        self.status = QLabel()
        self.status.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Listen on", self.host)
        form.addRow("Port", self.port)
        form.addRow("TLS certificate", self.cert)
        form.addRow("TLS key", self.key)
        form.addRow(self.toggle)
        form.addRow("Address", _row(self.url, copy_url))
        form.addRow("In a browser", _row(self.page, copy_page))
        form.addRow("Viewer token", _row(self.token, copy_token, rotate))
        form.addRow(self.status)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        form.addRow(close)
        self._refresh()

    def _refresh(self) -> None:
        running = self.hub is not None and self.hub.running
        self.toggle.setText("Stop sharing" if running else "Start sharing")
        self.url.setText(self.hub.url if running and self.hub else "")
        self.page.setText((self.hub.page_url or "") if running and self.hub else "")
        for field in (self.host, self.port, self.cert, self.key):
            field.setEnabled(not running)

    def toggle_sharing(self) -> None:
        """Start the hub in the app's event loop, or stop it."""
        loop = asyncio.get_event_loop()
        if self.hub is not None and self.hub.running:
            self._task = loop.create_task(self._stop())
            return
        try:
            context = server_ssl_context(self.cert.text(), self.key.text()) if self.cert.text() else None
        except (OSError, ssl.SSLError) as exc:
            self.status.setText(f"The TLS certificate or key cannot be used: {exc}")
            return
        self.hub = BroadcastHub(
            self.host.text().strip(),
            self.port.value(),
            load_or_create_token,
            ssl_context=context,
            db_url=self.db_url or default_database_url(),
        )
        self._task = loop.create_task(self._start())  # kept: the loop holds tasks only weakly

    async def _start(self) -> None:
        assert self.hub is not None
        try:
            await self.hub.start()
        except OSError as exc:
            self.status.setText(
                f"Cannot listen on {self.hub.host}:{self.hub.port}: {exc.strerror or exc}. "
                "Choose another port or address."
            )
            self.hub = None
        else:
            self.status.setText("Sharing. Viewers connect with the address and token above.")
        self._refresh()
        self.sharing_changed.emit(self.hub)

    async def _stop(self) -> None:
        assert self.hub is not None
        await self.hub.stop()
        self.status.setText("Sharing stopped.")
        self._refresh()
        self.sharing_changed.emit(None)

    def rotate(self) -> None:
        """New token; viewers holding the old one are refused from now on."""
        self.token.setText(rotate_token(db_url=self.db_url or default_database_url()))
        self.status.setText("Token rotated: give the new one to your viewers.")


class ConnectDialog(QDialog):
    """Ask for a remote node's address and token."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to remote node")
        self.url = QLineEdit("ws://")
        self.url.setPlaceholderText("ws://host:8765 or wss://host:8765")
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.error = QLabel()
        self.error.setStyleSheet("color:#b00020")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Address", self.url)
        form.addRow("Token", self.token)
        form.addRow(self.error)
        form.addRow(buttons)

    def accept(self) -> None:
        """Check the fields before closing."""
        if not self.url.text().startswith(("ws://", "wss://")) or len(self.url.text()) < 8:
            self.error.setText("The address must look like ws://host:8765 or wss://host:8765.")
            return
        if not self.token.text().strip():
            self.error.setText(
                "Enter the viewer token shown by the other node (Share live view, or pneumofl token show)."
            )
            return
        super().accept()


def _row(*widgets: QWidget) -> QWidget:
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if i == 0 else 0)
    return box
