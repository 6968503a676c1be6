"""The Federation page's "Join as a site" form.

The form gathers the site's settings (server, images, CA, key, name, the data steward's policy, unattended
approval) and checks them before anything starts: a bad policy file is its sentence at once, not a declined plan
later. The page starts the :class:`~core.federated.site_node.SiteNode`; this module only reads the form.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from core.errors import ConfigError
from core.federated.settings import SiteSettings
from core.federated.site_consent import site_policy
from desktop.gui.widgets import form_row

if TYPE_CHECKING:
    pass

UNATTENDED = "Approve plans within my policy without asking (&unattended site)"


class SiteForm(QWidget):
    """The fields a site joins a federation with; :meth:`site_settings` reads them back, checked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.server = QLineEdit()
        self.server.setPlaceholderText("fl.hospital.example:9092")
        self.data = QLineEdit()
        self.ca = QLineEdit()
        self.ca.setPlaceholderText("ca.pem from the server's administrator")
        self.key = QLineEdit()
        self.key.setPlaceholderText("this site's key, nodes/<site>.key")
        self.name = QLineEdit("my-site")
        self.policy = QLineEdit()
        self.policy.setPlaceholderText("Safe defaults (no file)")
        self.policy.setToolTip(
            "The data steward's policy: which servers, models, strategies, rounds and privacy this site accepts "
            "(`pneumofl site policy init` writes one). Every plan is checked against it before any training."
        )
        self.unattended = QCheckBox(UNATTENDED)
        self.unattended.setToolTip(
            "Plans within the policy are approved without a question; plans outside it are always declined."
        )
        form.addRow("Server address", self.server)
        form.addRow("This site's images", form_row(self.data, self._browse("F&older…", self.data, folder=True)))
        form.addRow("Federation CA", self.ca)
        form.addRow("Site key", self.key)
        form.addRow("Site name", self.name)
        form.addRow("Site policy", form_row(self.policy, self._browse("Site &policy…", self.policy, "Policy (*.toml)")))
        form.addRow(self.unattended)
        form.addRow(QLabel("Only the model's weights and aggregate numbers leave this computer."))
        self.join_button = QPushButton("Check my images and &join")
        form.addRow(self.join_button)

    def site_settings(self, db_url: str) -> SiteSettings:
        """The site's settings from the form, its policy file read and checked.

        Raises
        ------
        ConfigError
            A sentence: what is missing, or what is wrong with the policy file (naming the file and field).
        """
        address, data = self.server.text().strip(), self.data.text().strip()
        if not address or not data:
            raise ConfigError("Enter the server address and choose this site's images.")
        policy = self.policy.text().strip()
        site = SiteSettings(
            site_name=self.name.text().strip() or "site",
            data_path=data,
            db_url=db_url,
            server_address=address,
            policy_file=str(Path(policy).expanduser().resolve()) if policy else "",
            approve_within_policy=self.unattended.isChecked(),
        )
        site_policy(site)  # a bad policy file is a sentence now, not a declined plan later
        return site

    def ca_path(self) -> Path | None:
        """The federation CA file, if one is given."""
        return Path(self.ca.text().strip()) if self.ca.text().strip() else None

    def key_path(self) -> Path | None:
        """The site's private key file, if one is given."""
        return Path(self.key.text().strip()) if self.key.text().strip() else None

    def _browse(self, label: str, target: QLineEdit, filters: str = "", *, folder: bool = False) -> QPushButton:
        button = QPushButton(label)

        def choose() -> None:
            if folder:
                path = QFileDialog.getExistingDirectory(self, "Choose a folder")
            else:
                path, _ = QFileDialog.getOpenFileName(self, label.replace("&", "").rstrip("…"), "", filters)
            if path:
                target.setText(path)

        button.clicked.connect(choose)
        return button
