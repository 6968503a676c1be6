"""The federation plan as form fields: rounds, local epochs, sites per round, timeout, model, strategy, privacy."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QSpinBox

from core.config import BACKBONES
from core.federated.settings import (
    DEFAULT_PROXIMAL_MU,
    DP_CLIPPING,
    STRATEGIES,
    WIRE_PRECISIONS,
    FederationConfig,
    federation_training,
)

TOOLTIPS = {
    "strategy": "How the server combines the sites' models (Flower's strategies). fedavg averages them weighted "
    "by each site's number of images; fedprox also keeps each site close to the global model, which helps when "
    "sites' images differ; fedmedian, fedtrimmedavg and krum resist a site sending a broken model.",
    "proximal_mu": "FedProx: how strongly each site is pulled towards the global model while it trains.",
    "local_bn": "FedBN: normalisation layers stay at each site, which helps when sites' scanners differ. "
    "The server evaluates with statistics it estimates on its own images.",
    "privacy": "Differential privacy: every site's update is clipped and the average is noised, so no single "
    "site's contribution can be told apart. The run records the privacy spent (epsilon) each round.",
    "dp_noise": "Noise multiplier: 1.0 or more gives meaningful privacy; more noise, less accuracy.",
    "dp_clip": "Largest change one site may make to the model per round (the initial value when adaptive).",
    "dp_clipping": "fixed: the server clips each update. adaptive: each site clips its own update, and the "
    "clipping norm follows the updates' sizes.",
    "wire_precision": "fp32 sends the weights exactly. fp16 sends them at half precision, half the bytes each way; "
    "the server still averages in full precision. Not with differential privacy.",
}


class PlanFields:
    """Adds the plan's rows to a form; :meth:`plan` reads them back as a validated :class:`FederationConfig`."""

    def __init__(self, form: QFormLayout) -> None:
        default = FederationConfig()
        self.rounds = _spin(1, 1000, default.rounds)
        self.local_epochs = _spin(1, 100, default.local_epochs)
        self.min_sites = _spin(1, 100, default.min_sites)
        self.min_sites.setToolTip("A round needs this many sites online to start and this many results to count.")
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(5, 86_400)
        self.timeout.setValue(default.round_timeout)
        self.timeout.setSuffix(" s")
        self.timeout.setToolTip("How long a round waits for sites before it ends without them.")
        self.backbone = QComboBox()
        self.backbone.addItems(BACKBONES)
        self.backbone.setCurrentText(default.training.backbone)
        self.backbone.setToolTip("small_cnn makes fast rounds; resnet18 is 45 MB sent each way per site and round.")
        self.strategy = QComboBox()
        self.strategy.addItems(STRATEGIES)
        self.strategy.setCurrentText(default.strategy)
        self.proximal_mu = _decimal(0.0, 10.0, DEFAULT_PROXIMAL_MU, 4)
        self.local_bn = QCheckBox("Keep normalisation layers at each site (Fed&BN)")
        self.wire_precision = QComboBox()
        self.wire_precision.addItems(WIRE_PRECISIONS)
        self.privacy = QGroupBox("Differential privacy")
        self.privacy.setCheckable(True)
        self.privacy.setChecked(False)
        self.dp_noise = _decimal(0.01, 100.0, 1.0, 2)
        self.dp_clip = _decimal(0.001, 1000.0, default.dp_clip, 3)
        self.dp_clipping = QComboBox()
        self.dp_clipping.addItems(DP_CLIPPING)
        privacy_form = QFormLayout(self.privacy)
        privacy_form.addRow("Noise multiplier", self.dp_noise)
        privacy_form.addRow("Clipping norm", self.dp_clip)
        privacy_form.addRow("Clipping", self.dp_clipping)
        for name, widget in (
            ("strategy", self.strategy),
            ("proximal_mu", self.proximal_mu),
            ("local_bn", self.local_bn),
            ("wire_precision", self.wire_precision),
            ("privacy", self.privacy),
            ("dp_noise", self.dp_noise),
            ("dp_clip", self.dp_clip),
            ("dp_clipping", self.dp_clipping),
        ):
            widget.setToolTip(TOOLTIPS[name])
        self.strategy.currentTextChanged.connect(lambda name: self.proximal_mu.setEnabled(name == "fedprox"))
        self.proximal_mu.setEnabled(default.strategy == "fedprox")
        form.addRow("Rounds", self.rounds)
        form.addRow("Local epochs per round", self.local_epochs)
        form.addRow("Sites needed per round", self.min_sites)
        form.addRow("Round timeout", self.timeout)
        form.addRow("Model", self.backbone)
        form.addRow("Strategy", self.strategy)
        form.addRow("FedProx mu", self.proximal_mu)
        form.addRow(self.local_bn)
        form.addRow("Weights sent as", self.wire_precision)
        form.addRow(self.privacy)

    def plan(self) -> FederationConfig:
        """The plan the fields describe.

        Raises
        ------
        core.errors.ConfigError
            Naming the setting that is wrong.
        """
        strategy = self.strategy.currentText()
        return FederationConfig(
            rounds=self.rounds.value(),
            local_epochs=self.local_epochs.value(),
            min_sites=self.min_sites.value(),
            round_timeout=self.timeout.value(),
            training=federation_training(backbone=self.backbone.currentText()),
            strategy=strategy,
            proximal_mu=self.proximal_mu.value() if strategy == "fedprox" else 0.0,
            local_bn=self.local_bn.isChecked(),
            dp_noise=self.dp_noise.value() if self.privacy.isChecked() else 0.0,
            dp_clip=self.dp_clip.value(),
            dp_clipping=self.dp_clipping.currentText(),
            wire_precision=self.wire_precision.currentText(),
        ).validate()


def _spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box


def _decimal(low: float, high: float, value: float, decimals: int) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setValue(value)
    return box
