"""Typed, validated run configuration with defaults, saved as a versioned JSON file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

CONFIG_VERSION = 1

BACKBONES = ("resnet18", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v3_small", "small_cnn")
MONITORS = (
    "val_auroc",
    "val_recall",
    "val_f1",
    "val_accuracy",
    "val_precision",
    "val_specificity",
    "val_loss",
)
DATA_KINDS = ("auto", "folder", "csv")
LOSSES = ("bce", "focal")


@dataclass
class RunConfig:
    """Everything that defines a training run. Defaults suit real chest X-rays on a workstation.

    ``data_path`` is a dataset root folder (``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}`` or
    ``ROOT/{NORMAL,PNEUMONIA}``) or a CSV manifest; ``demo=True`` uses the built-in demo dataset.
    """

    experiment_name: str = "pneumonia"
    # data
    demo: bool = False
    data_path: str = ""
    data_kind: str = "auto"
    csv_image_column: str = "image"
    csv_label_column: str = "label"
    csv_image_root: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_bad_fraction: float = 0.05
    cache_images: bool = True
    # model
    backbone: str = "resnet18"
    weights_path: str = ""
    image_size: int = 224
    # optimisation
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "bce"
    focal_gamma: float = 2.0
    class_weighting: bool = True
    gradient_clip: float = 1.0
    threshold: float = 0.5
    # Fit a temperature on validation after training and use it for every reported and predicted probability.
    temperature_scaling: bool = False
    # callbacks
    early_stopping_patience: int = 5
    # AUROC, not recall: an all-positive epoch has perfect recall. Ties go to Youden's J, and an epoch that
    # gives every validation image one class never wins while another exists (core/training/selection.py).
    monitor: str = "val_auroc"
    monitor_mode: str = "max"
    batch_metrics_every: int = 10
    gradient_every: int = 50
    # execution
    seed: int = 42
    num_workers: int = 0
    accelerator: str = "auto"
    max_threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> RunConfig:
        """Check every field and return ``self``.

        Raises
        ------
        ConfigError
            Naming the first field that is wrong and what values it accepts.
        """
        _check(bool(self.experiment_name.strip()), "experiment_name", "must not be empty")
        _check(
            self.demo or bool(self.data_path),
            "data_path",
            "is empty: choose a data folder or CSV, or use the demo data",
        )
        _check(self.data_kind in DATA_KINDS, "data_kind", f"must be one of {', '.join(DATA_KINDS)}")
        _check(self.backbone in BACKBONES, "backbone", f"must be one of {', '.join(BACKBONES)}")
        _check(32 <= self.image_size <= 1024, "image_size", "must be between 32 and 1024 pixels")
        _check(1 <= self.epochs <= 10_000, "epochs", "must be between 1 and 10000")
        _check(1 <= self.batch_size <= 4096, "batch_size", "must be between 1 and 4096")
        _check(0 < self.learning_rate < 10, "learning_rate", "must be greater than 0 and below 10")
        _check(self.weight_decay >= 0, "weight_decay", "must not be negative")
        _check(self.loss in LOSSES, "loss", f"must be one of {', '.join(LOSSES)}")
        _check(self.focal_gamma >= 0, "focal_gamma", "must not be negative")
        _check(self.gradient_clip >= 0, "gradient_clip", "must not be negative (0 turns clipping off)")
        _check(0 < self.threshold < 1, "threshold", "must be between 0 and 1")
        _check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        _check(0 <= self.test_fraction < 1, "test_fraction", "must be in [0, 1)")
        _check(
            self.val_fraction + self.test_fraction < 0.9,
            "val_fraction",
            "plus test_fraction must leave data to train on",
        )
        _check(0 <= self.max_bad_fraction <= 1, "max_bad_fraction", "must be between 0 and 1")
        _check(self.early_stopping_patience >= 0, "early_stopping_patience", "must be 0 (off) or more")
        _check(self.monitor in MONITORS, "monitor", f"must be one of {', '.join(MONITORS)}")
        _check(self.monitor_mode in ("min", "max"), "monitor_mode", "must be min or max")
        _check(self.batch_metrics_every >= 1, "batch_metrics_every", "must be 1 or more")
        _check(self.gradient_every >= 1, "gradient_every", "must be 1 or more")
        _check(self.num_workers >= 0, "num_workers", "must not be negative")
        _check(self.max_threads >= 0, "max_threads", "must be 0 (automatic) or more")
        _check(
            self.accelerator in ("auto", "cpu", "gpu", "cuda", "mps"), "accelerator", "must be auto, cpu, gpu or mps"
        )
        if self.weights_path:
            _check(Path(self.weights_path).expanduser().is_file(), "weights_path", f"{self.weights_path} is not a file")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (without the file version)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build a config from a dict, rejecting unknown fields and wrong types by name."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known) - {"version"})
        if unknown:
            raise ConfigError(
                f"Unknown configuration field(s): {', '.join(unknown)}. Remove them or check the spelling."
            )
        defaults = cls()
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name == "version":
                continue
            values[name] = _coerce(name, value, getattr(defaults, name))
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """Return a copy with the given fields replaced (``None`` values are ignored)."""
        merged = self.to_dict() | {k: v for k, v in overrides.items() if v is not None}
        return RunConfig.from_dict(merged)


def demo_config(**overrides: Any) -> RunConfig:
    """The configuration of the built-in demo run: small images so a 2-core CPU finishes in minutes."""
    base = RunConfig(
        experiment_name="demo",
        demo=True,
        image_size=64,
        epochs=12,
        batch_size=32,
        learning_rate=2e-3,
        batch_metrics_every=5,
        gradient_every=10,
        early_stopping_patience=4,
    )
    return base.with_overrides(**overrides)


def load_config(path: str | Path) -> RunConfig:
    """Read a configuration file written by :func:`save_config`.

    Raises
    ------
    ConfigError
        If the file is missing, not JSON, from a newer version, or has a bad field.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Configuration file {path} does not exist.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Configuration file {path} is not valid JSON ({exc}). Fix or delete it.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Configuration file {path} must hold a JSON object.")
    version = data.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            f"Configuration file {path} has version {version}; this PneumoFL reads up to {CONFIG_VERSION}."
        )
    try:
        return RunConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as versioned JSON."""
    payload = {"version": CONFIG_VERSION, **config.to_dict()}
    Path(path).expanduser().write_text(json.dumps(payload, indent=2), encoding="utf-8")


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"Configuration field '{name}' {message}.")


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` or raise a ConfigError naming ``name``."""
    expected = type(default)
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"Configuration field '{name}' must be true or false, not {value!r}.")
    if expected in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"Configuration field '{name}' must be a number, not {value!r}.")
        try:
            number = expected(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Configuration field '{name}' must be a number, not {value!r}.") from None
        if expected is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"Configuration field '{name}' must be a whole number, not {value!r}.")
        return number
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"Configuration field '{name}' must be text, not {value!r}.")
        return value
    if expected is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"Configuration field '{name}' must be an object, not {value!r}.")
        return value
    return value
