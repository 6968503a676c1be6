"""The Federation page's "Server" form: evaluation images, address, certificates, enrolled sites and the plan.

:meth:`ServerForm.inputs` reads the form back, checked, so the page only starts the server node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QWidget,
)

from core.errors import ConfigError
from core.federated.settings import FederationConfig
from desktop.gui.certs_dialog import CertsDialog
from desktop.gui.plan_form import PlanFields
from desktop.gui.widgets import form_row


@dataclass(frozen=True)
class ServerInputs:
    """What the form asks for, checked: where sites connect, the evaluation images, TLS material, keys, plan."""

    host: str
    port: int
    address: str
    eval_data: str
    certs: Path | None  # None: no TLS (a one-machine trial)
    keys: list[Path]
    plan: FederationConfig


class ServerForm(QWidget):
    """The server's fields. Emits ``key_chosen(Path)`` when the user picks a site's public key to enrol."""

    key_chosen = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.eval_data = QLineEdit()
        self.eval_data.setPlaceholderText("The server's held-out labelled images")
        browse = QPushButton("F&older…")
        browse.clicked.connect(self._browse_eval_data)
        form.addRow("Evaluation data", form_row(self.eval_data, browse))
        self.listen = QLineEdit("0.0.0.0:9092")
        form.addRow("Sites connect to", self.listen)
        self.certs_dir = QLineEdit()
        self.certs_dir.setPlaceholderText("Folder from 'Create certificates…'")
        create = QPushButton("&Create certificates…")
        create.clicked.connect(self._create_certs)
        form.addRow("Certificates", form_row(self.certs_dir, create))
        self.insecure = QCheckBox("&No TLS (only for sites on this machine, 127.0.0.1)")
        form.addRow(self.insecure)
        self.enrolled = QListWidget()
        self.enrolled.setMaximumHeight(70)
        enrol = QPushButton("&Enrol a site's key…")
        enrol.setToolTip("A site's public key (nodes/<site>.pub). Only enrolled sites can connect.")
        enrol.clicked.connect(self._choose_site_key)
        form.addRow("Enrolled sites", form_row(self.enrolled, enrol))
        self.online = QLabel("-")
        form.addRow("Online sites", self.online)
        self.server_plan = PlanFields(form)
        self.server_button = QPushButton("Start the server and &run")
        form.addRow(self.server_button)

    def inputs(self) -> ServerInputs:
        """The form's values, checked.

        Raises
        ------
        ConfigError
            A sentence naming what is missing or wrong (the address, the images, the certificates, the plan).
        """
        from desktop.cli.serving import parse_address

        try:
            host, port = parse_address(self.listen.text().strip())
        except Exception as exc:  # noqa: BLE001 - its sentence names the CLI flag
            raise ConfigError(str(exc).replace("--serve", "The address")) from None
        eval_data = self.eval_data.text().strip()
        if not eval_data or not Path(eval_data).exists():
            raise ConfigError("Choose the server's evaluation images (a folder that exists).")
        insecure = self.insecure.isChecked()
        if insecure and host not in ("127.0.0.1", "localhost"):
            raise ConfigError(f"Without TLS the server can only listen on 127.0.0.1, not {host}.")
        certs = Path(self.certs_dir.text().strip()).expanduser() if self.certs_dir.text().strip() else None
        if not insecure and (certs is None or not (certs / "ca.pem").is_file()):
            raise ConfigError("Choose the certificates folder (or create one), or tick 'No TLS' for a local trial.")
        keys = [Path(self.enrolled.item(i).text()) for i in range(self.enrolled.count())]
        return ServerInputs(
            host=host,
            port=port,
            address=self.listen.text().strip(),
            eval_data=eval_data,
            certs=None if insecure else certs,
            keys=keys,
            plan=self.server_plan.plan(),
        )

    def show_sites(self, names: list[str]) -> None:
        """Show which sites are online."""
        self.online.setText(f"{len(names)} online" + (f": {', '.join(sorted(names))}" if names else ""))

    def _browse_eval_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder")
        if folder:
            self.eval_data.setText(folder)

    def _choose_site_key(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A site's public key", "", "Public keys (*.pub)")
        if path:
            self.key_chosen.emit(Path(path))

    def _create_certs(self) -> None:
        dialog = CertsDialog(self)
        if dialog.exec() and dialog.created is not None:
            self.certs_dir.setText(str(dialog.created.ca_cert.parent))
            self.enrolled.clear()
            for key in dialog.created.nodes.values():
                self.enrolled.addItem(str(key.public_key))
