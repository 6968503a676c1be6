"""Guides a server's administrator through a federation's certificates: what to create, and what goes where."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.federated.certs import CertificateError, FederationCerts, init_federation_certs, public_key_fingerprint


class CertsDialog(QDialog):
    """Create the CA, the server certificate and one key pair per site; then say what to give each site."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Create federation certificates")
        self.created: FederationCerts | None = None
        self.folder = QLineEdit()
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._browse)
        self.hosts = QLineEdit()
        self.hosts.setPlaceholderText("fl.hospital.example, 10.0.0.5")
        self.sites = QLineEdit()
        self.sites.setPlaceholderText("north, south, east")
        self.result = QPlainTextEdit()
        self.result.setReadOnly(True)
        self.result.setPlaceholderText("What to give each site appears here.")
        self.error = QLabel()
        self.error.setStyleSheet("color:#b00020")
        self.error.setWordWrap(True)
        form = QFormLayout()
        row = QWidget()
        row_layout = QVBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.folder)
        row_layout.addWidget(browse)
        form.addRow("Folder (keep it private)", row)
        form.addRow("Server names or addresses", self.hosts)
        form.addRow("Site names", self.sites)
        create = QPushButton("Create")
        create.clicked.connect(self.create)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        self.buttons = buttons
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(create)
        layout.addWidget(self.error)
        layout.addWidget(self.result, 1)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the federation's certificates")
        if folder:
            self.folder.setText(folder)

    def create(self) -> None:
        """Write the material; show what goes where, or one sentence on what to fix."""
        folder = self.folder.text().strip()
        hosts = [h.strip() for h in self.hosts.text().split(",") if h.strip()]
        sites = [s.strip() for s in self.sites.text().split(",") if s.strip()]
        if not folder or not hosts:
            self.error.setText("Choose a folder and give the name or address sites will use to reach the server.")
            return
        try:
            self.created = init_federation_certs(Path(folder).expanduser(), hosts, sites)
        except CertificateError as exc:
            self.error.setText(str(exc))
            return
        self.error.setText("")
        lines = [f"Created in {folder}. The CA key (ca.key) never leaves the server's administrator.", ""]
        for name, key in self.created.nodes.items():
            lines.append(
                f"Site {name}: give it ca.pem and {key.private_key.name} (its private key, by a safe channel)."
            )
            lines.append(
                f"    Enrolled here by its public key {key.public_key.name}, fingerprint "
                f"{public_key_fingerprint(key.public_key)} — read it to the site to confirm."
            )
        self.result.setPlainText("\n".join(lines))
        self.buttons.setStandardButtons(QDialogButtonBox.StandardButton.Ok)
