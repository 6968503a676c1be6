"""The federation plan as form fields: rounds, local epochs, sites per round, round timeout, model."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox

from core.config import BACKBONES, demo_config
from core.federated.settings import FederationConfig


class PlanFields:
    """Adds the plan's rows to a form; :meth:`plan` reads them back as a validated :class:`FederationConfig`."""

    def __init__(self, form: QFormLayout) -> None:
        self.rounds = _spin(1, 1000, 3)
        self.local_epochs = _spin(1, 100, 1)
        self.min_sites = _spin(1, 100, 2)
        self.min_sites.setToolTip("A round needs this many sites online to start and this many results to count.")
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(5, 86_400)
        self.timeout.setValue(600)
        self.timeout.setSuffix(" s")
        self.timeout.setToolTip("How long a round waits for sites before it ends without them.")
        self.backbone = QComboBox()
        self.backbone.addItems(BACKBONES)
        self.backbone.setCurrentText("small_cnn")
        self.backbone.setToolTip("small_cnn makes fast rounds; resnet18 is 45 MB sent each way per site and round.")
        form.addRow("Rounds", self.rounds)
        form.addRow("Local epochs per round", self.local_epochs)
        form.addRow("Sites needed per round", self.min_sites)
        form.addRow("Round timeout", self.timeout)
        form.addRow("Model", self.backbone)

    def plan(self) -> FederationConfig:
        """The plan the fields describe.

        Raises
        ------
        core.errors.ConfigError
            Naming the setting that is wrong.
        """
        return FederationConfig(
            rounds=self.rounds.value(),
            local_epochs=self.local_epochs.value(),
            min_sites=self.min_sites.value(),
            round_timeout=self.timeout.value(),
            training=demo_config(experiment_name="federation", backbone=self.backbone.currentText()),
        ).validate()


def _spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box
