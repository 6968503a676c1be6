"""The Training page's settings box: the few run settings that matter, each with a tooltip saying why."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QSpinBox, QWidget

from core.config import BACKBONES, MONITORS, RunConfig

TOOLTIPS = {
    "backbone": "Network architecture. resnet18 is a good default; larger ones need more time and memory.",
    "epochs": "Passes over the training images. Early stopping may end the run sooner.",
    "batch_size": "Images per training step. Lower it if the computer runs out of memory.",
    "learning_rate": "Step size of the optimiser (AdamW, cosine schedule).",
    "image_size": "Images are resized to this many pixels square. 224 for real X-rays; 64 is enough for the demo.",
    "early_stopping_patience": "Stop after this many epochs without improvement of the monitored metric (0 = never).",
    "monitor": "Metric that picks the best checkpoint and drives early stopping.",
    "batch_metrics_every": "Record loss/accuracy over every N training batches.",
    "gradient_every": "Record gradient norms every N optimiser steps.",
    "temperature_scaling": "After training, fit a temperature on the validation images so that a predicted 80% "
    "means pneumonia about 80% of the time. Readings and exports then use the calibrated probabilities.",
}
LABELS = {
    "backbone": "Backbone",
    "epochs": "Epochs",
    "batch_size": "Batch size",
    "learning_rate": "Learning rate",
    "image_size": "Image size (px)",
    "early_stopping_patience": "Early-stopping patience",
    "monitor": "Monitor",
    "batch_metrics_every": "Batch metrics every",
    "gradient_every": "Gradients every",
    "temperature_scaling": "Temperature scaling",
}


class TrainingSettings(QGroupBox):
    """The settings fields; :meth:`set_config` fills them, :meth:`overrides` reads them as RunConfig fields."""

    def __init__(self, config: RunConfig, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self.backbone = QComboBox()
        self.backbone.addItems(BACKBONES)
        self.epochs = _spin(1, 10_000)
        self.batch_size = _spin(1, 4096)
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(6)
        self.learning_rate.setRange(1e-6, 1.0)
        self.learning_rate.setSingleStep(1e-4)
        self.image_size = _spin(32, 1024)
        self.patience = _spin(0, 1000)
        self.monitor = QComboBox()
        self.monitor.addItems(MONITORS)
        self.batch_every = _spin(1, 100_000)
        self.grad_every = _spin(1, 100_000)
        self.temperature_scaling = QCheckBox("Calibrate p&robabilities")
        self.fields: dict[str, QWidget] = {
            "backbone": self.backbone,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "image_size": self.image_size,
            "early_stopping_patience": self.patience,
            "monitor": self.monitor,
            "batch_metrics_every": self.batch_every,
            "gradient_every": self.grad_every,
            "temperature_scaling": self.temperature_scaling,
        }
        form = QFormLayout(self)
        for name, widget in self.fields.items():
            widget.setToolTip(TOOLTIPS[name])
            form.addRow(LABELS[name], widget)
        self.set_config(config)

    def set_config(self, config: RunConfig) -> None:
        """Fill the fields from ``config``."""
        self.backbone.setCurrentText(config.backbone)
        self.epochs.setValue(config.epochs)
        self.batch_size.setValue(config.batch_size)
        self.learning_rate.setValue(config.learning_rate)
        self.image_size.setValue(config.image_size)
        self.patience.setValue(config.early_stopping_patience)
        self.monitor.setCurrentText(config.monitor)
        self.batch_every.setValue(config.batch_metrics_every)
        self.grad_every.setValue(config.gradient_every)
        self.temperature_scaling.setChecked(config.temperature_scaling)

    def overrides(self) -> dict[str, Any]:
        """The fields as :class:`~core.config.RunConfig` overrides."""
        return {
            "backbone": self.backbone.currentText(),
            "epochs": self.epochs.value(),
            "batch_size": self.batch_size.value(),
            "learning_rate": self.learning_rate.value(),
            "image_size": self.image_size.value(),
            "early_stopping_patience": self.patience.value(),
            "monitor": self.monitor.currentText(),
            "monitor_mode": "min" if self.monitor.currentText() == "val_loss" else "max",
            "batch_metrics_every": self.batch_every.value(),
            "gradient_every": self.grad_every.value(),
            "temperature_scaling": self.temperature_scaling.isChecked(),
        }


def _spin(low: int, high: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    return box
