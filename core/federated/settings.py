"""What a federation is configured with, and how each part reaches the Flower app processes.

Three channels, by who may see them:

- :class:`FederationConfig` travels as Flower's *run config*: the SuperLink sends it to every site, so it holds
  only what all sites share (rounds, local epochs, the model and optimiser settings).
- :class:`ServerSettings` stay on the server: a JSON file whose path is in ``PNEUMOFL_SERVER_SETTINGS`` in the
  SuperLink's environment (the ServerApp process inherits it). The database URL and the evaluation data live here.
- :class:`SiteSettings` stay on the site: Flower's *node config* of its SuperNode (data path, site name, database).

Live events go to a local hub named by ``PNEUMOFL_HUB_URL`` / ``PNEUMOFL_HUB_SECRET`` (see
:mod:`core.broadcast.producer`), also through the environment: the secret never enters a Flower message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.config import RunConfig, demo_config
from core.errors import ConfigError

SERVER_SETTINGS_ENV = "PNEUMOFL_SERVER_SETTINGS"
OWNER_PID_ENV = "PNEUMOFL_OWNER_PID"
PARTITION_SCHEMES = ("iid", "label-skew")

# Keys of the run config, declared with defaults in the app bundle's pyproject.toml (Flower rejects others).
RUN_CONFIG_KEYS = ("num-rounds", "local-epochs", "min-sites", "round-timeout", "federation-name", "training")


@dataclass(frozen=True)
class FederationConfig:
    """The federation's shared plan: what every site trains and how many rounds.

    Parameters
    ----------
    name
        Shown in the Runs page; each site's run is named ``"<name> · <site>"``.
    rounds
        Federated rounds.
    local_epochs
        Epochs each site trains per round.
    min_sites
        A round needs this many sites online to start and this many results to count.
    round_timeout
        Seconds a round waits for sites (to come online, and to reply) before it ends without them.
    training
        Model, image size, batch size, optimiser: the :class:`~core.config.RunConfig` every site trains with
        (its data fields are ignored: each site has its own data).
    """

    name: str = "federation"
    rounds: int = 3
    local_epochs: int = 1
    min_sites: int = 2
    round_timeout: float = 600.0
    training: RunConfig = field(default_factory=lambda: demo_config(experiment_name="federation"))

    def validate(self) -> FederationConfig:
        """Raise :class:`ConfigError` naming the first bad field."""
        checks = (
            (self.rounds >= 1, "rounds", "must be at least 1"),
            (self.local_epochs >= 1, "local epochs", "must be at least 1"),
            (self.min_sites >= 1, "min sites", "must be at least 1"),
            (self.round_timeout > 0, "round timeout", "must be a positive number of seconds"),
            (bool(self.name.strip()), "name", "must not be empty"),
        )
        for ok, name, message in checks:
            if not ok:
                raise ConfigError(f"Federation setting '{name}' {message}.")
        # Data fields are each site's own; check the shared ones only.
        self.training.with_overrides(demo=True, weights_path="").validate()
        return self

    def run_config(self) -> dict[str, Any]:
        """The Flower run config: TOML scalars only, so the training settings travel as one JSON string."""
        shared = {k: v for k, v in self.training.to_dict().items() if k not in _SITE_LOCAL_FIELDS}
        return {
            "num-rounds": self.rounds,
            "local-epochs": self.local_epochs,
            "min-sites": self.min_sites,
            "round-timeout": float(self.round_timeout),
            "federation-name": self.name,
            "training": json.dumps(shared, sort_keys=True),
        }

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederationConfig:
        """Rebuild the plan inside a Flower app process."""
        try:
            training = RunConfig.from_dict(json.loads(str(run_config["training"])))
            return cls(
                name=str(run_config["federation-name"]),
                rounds=int(run_config["num-rounds"]),
                local_epochs=int(run_config["local-epochs"]),
                min_sites=int(run_config["min-sites"]),
                round_timeout=float(run_config["round-timeout"]),
                training=training,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"The federation's run config is incomplete or invalid ({exc}).") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, stored with the server's run."""
        return {
            "name": self.name,
            "rounds": self.rounds,
            "local_epochs": self.local_epochs,
            "min_sites": self.min_sites,
            "round_timeout": self.round_timeout,
            "training": self.training.to_dict(),
        }


# Paths and data options belong to each site; they never go into the shared run config.
_SITE_LOCAL_FIELDS = frozenset(
    {"demo", "data_path", "data_kind", "csv_image_column", "csv_label_column", "csv_image_root", "weights_path"}
)


@dataclass(frozen=True)
class ServerSettings:
    """The server's own settings, never sent to sites.

    ``eval_split`` is ``"all"`` for an evaluation set of its own, or ``"val"``/``"test"`` to hold out one split
    of a dataset (the local demo federation holds out the demo's validation split, which no site trains on).
    """

    db_url: str
    eval_data: str = ""
    eval_split: str = "all"
    address: str = ""
    work_dir: str = ""
    cache_dir: str = ""  # the validated evaluation set, shared by the node's check and the ServerApp

    def save(self, path: Path) -> Path:
        """Write the settings file the ServerApp reads."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # the database URL may hold a password
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        return path

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Read the file named by ``PNEUMOFL_SERVER_SETTINGS``.

        Raises
        ------
        ConfigError
            If the variable is missing (the SuperLink was not started by PneumoFL) or the file is unreadable.
        """
        path = os.environ.get(SERVER_SETTINGS_ENV, "")
        if not path:
            raise ConfigError(
                f"{SERVER_SETTINGS_ENV} is not set: start the SuperLink with `pneumofl server start`, "
                "which writes the server settings."
            )
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, TypeError, ValueError) as exc:
            raise ConfigError(f"Cannot read the server settings {path}: {exc}") from exc


@dataclass(frozen=True)
class SiteSettings:
    """One site's own settings: its SuperNode's node config.

    ``partition_id``/``num_partitions`` are for the local federation only: the site then trains on its share
    of the source's train split (``partition`` scheme, seeded) instead of the whole folder.
    """

    site_name: str
    data_path: str
    db_url: str
    server_address: str = ""
    partition_id: int = -1
    num_partitions: int = 0
    partition: str = "iid"
    max_threads: int = 0
    cache_dir: str = ""  # where the validated dataset is kept between rounds (see core.federated.site_cache)

    def write_node_config(self, path: Path) -> Path:
        """Write the ``--node-config`` TOML file for ``flower-supernode``.

        A file, not ``key=value`` text: Flower splits that text on spaces and quotes, which paths and site
        names may contain. JSON's string escapes are valid TOML.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{key.replace('_', '-')} = {json.dumps(value)}" for key, value in asdict(self).items()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> SiteSettings:
        """Rebuild the settings inside the ClientApp process."""
        values = {
            name: node_config[name.replace("_", "-")]
            for name in cls.__dataclass_fields__
            if name.replace("_", "-") in node_config
        }
        missing = [n for n in ("site_name", "data_path", "db_url") if n not in values]
        if missing:
            raise ConfigError(
                f"The SuperNode's node config lacks {', '.join(m.replace('_', '-') for m in missing)}: "
                "start it with `pneumofl client join`."
            )
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"The SuperNode's node config is invalid: {exc}") from exc

    @property
    def partitioned(self) -> bool:
        """Whether this site trains on one partition of a shared source (local federation)."""
        return self.num_partitions > 1 and self.partition_id >= 0


def owner_pid() -> int | None:
    """The pid of the PneumoFL process that launched this node (it owns the node's runs), if known."""
    value = os.environ.get(OWNER_PID_ENV, "")
    return int(value) if value.isdigit() else None
