"""User preferences: a versioned JSON file in the user config dir, migrated on load.

Only window geometry lives in QSettings; everything a user chooses is here, so it is readable and portable.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from core.config import RunConfig, demo_config

SETTINGS_VERSION = 2
log = logging.getLogger(__name__)

# Fields of the training form that the preferences may preset.
FORM_FIELDS = (
    "backbone",
    "epochs",
    "batch_size",
    "learning_rate",
    "image_size",
    "early_stopping_patience",
    "monitor",
    "batch_metrics_every",
    "gradient_every",
    "temperature_scaling",
)


@dataclass
class Settings:
    """What the user chose: database, default data folder and training-form defaults."""

    db_url: str = ""  # empty: PNEUMOFL_DB_URL or the SQLite file in the user data dir
    data_folder: str = ""  # empty: the demo data
    training: dict[str, Any] = field(default_factory=dict)  # overrides of the form's defaults, by RunConfig field

    def run_config(self) -> RunConfig:
        """The training form's starting configuration."""
        base = demo_config() if not self.data_folder else RunConfig(data_path=self.data_folder)
        return base.with_overrides(**{k: v for k, v in self.training.items() if k in FORM_FIELDS})


def settings_path() -> Path:
    """``settings.json`` in the user config dir."""
    return Path(platformdirs.user_config_dir("pneumofl")) / "settings.json"


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older settings dict up to :data:`SETTINGS_VERSION`."""
    version = int(data.get("version", 1))
    if version < 2:  # v1 called the database field "database"
        data["db_url"] = data.pop("database", "")
        version = 2
    data["version"] = version
    return data


def load_settings(path: Path | None = None) -> tuple[Settings, str | None]:
    """Read the settings; on a broken file return defaults and a sentence saying what was ignored."""
    path = path or settings_path()
    if not path.exists():
        return Settings(), None
    try:
        data = migrate(json.loads(path.read_text(encoding="utf-8")))
        known = {k: data[k] for k in ("db_url", "data_folder", "training") if k in data}
        settings = Settings(**known)
        RunConfig().with_overrides(**{k: v for k, v in settings.training.items() if k in FORM_FIELDS})
        return settings, None
    except Exception as exc:  # noqa: BLE001 - any unreadable file: fall back, say so, keep the file
        log.warning("settings file %s ignored: %s", path, exc)
        return Settings(), f"Your settings file {path} could not be read ({exc}); defaults are used until you save."


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write the settings atomically."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": SETTINGS_VERSION, **asdict(settings)}, indent=2), encoding="utf-8")
    tmp.replace(path)
