"""What a federation is configured with, and how each part reaches the Flower app processes.

Three channels, by who may see them:

- :class:`FederationConfig` travels as Flower's *run config*: the SuperLink sends it to every site, so it holds
  only what all sites share (rounds, local epochs, the model and optimiser settings).
- :class:`ServerSettings` stay on the server: a JSON file whose path is in ``PNEUMOFL_SERVER_SETTINGS`` in the
  SuperLink's environment (the ServerApp process inherits it). The database URL and the evaluation data live here.
- :class:`SiteSettings` stay on the site: a JSON file only the site's user can read, named by
  ``PNEUMOFL_SITE_SETTINGS`` in its SuperNode's environment (data path, database, policy). Flower's *node config*
  carries only the site's name: Flower hands it to whatever app it runs.

Live events go to a local hub named by ``PNEUMOFL_HUB_URL`` / ``PNEUMOFL_HUB_SECRET`` (see
:mod:`core.broadcast.producer`), also through the environment: the secret never enters a Flower message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.config import RunConfig, demo_config
from core.errors import ConfigError

SERVER_SETTINGS_ENV = "PNEUMOFL_SERVER_SETTINGS"
SITE_SETTINGS_ENV = "PNEUMOFL_SITE_SETTINGS"
OWNER_PID_ENV = "PNEUMOFL_OWNER_PID"
PARTITION_SCHEMES = ("iid", "label-skew")
# The aggregation strategies of flwr.serverapp.strategy a federation can use (see core.federated.strategies).
STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum")
# Differential privacy: Flower's server-side fixed clipping, or its client-side adaptive clipping.
DP_CLIPPING = ("fixed", "adaptive")
# How weights travel: float32 as they are, or half precision (half the bytes; aggregation stays float32).
WIRE_PRECISIONS = ("fp32", "fp16")
SERVER_OPTIMIZERS = ("fedavgm", "fedadam", "fedyogi")  # the server steps the model with an optimizer of its own
DEFAULT_PROXIMAL_MU = 0.01  # FedProx's mu when --strategy fedprox is chosen without --proximal-mu
# What a site's reply is weighted by: its number of training images, or (under differential privacy, where
# every site must count the same for Flower's accounting) this key, which every site sends as 1.
WEIGHT_KEY = "num-examples"
UNIFORM_KEY = "uniform-weight"
FINGERPRINT_KEY = "data-fingerprint"  # a reply's site record: its training data's coarse counts, as JSON
# The record of the plan question before round 1 (core.federated.plan_query asks, the ClientApp answers).
PLAN_KEY = "plan"

# Keys of the run config, declared with defaults in the app bundle's pyproject.toml (Flower rejects others).
RUN_CONFIG_KEYS = (
    "num-rounds",
    "local-epochs",
    "min-sites",
    "round-timeout",
    "federation-name",
    "training",
    "strategy",
    "proximal-mu",
    "server-lr",
    "local-bn",
    "dp-noise",
    "dp-clip",
    "dp-clipping",
    "dp-delta",
    "wire-precision",
)


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
    strategy
        How the server combines the sites' models: one of :data:`STRATEGIES` (Flower's implementations).
    proximal_mu
        FedProx's proximal term (0 = none): sites are pulled towards the global model while they train.
    server_lr
        The server's learning rate for FedAvgM, FedAdam and FedYogi (0 = PneumoFL's measured default).
    local_bn
        FedBN: normalisation layers stay at each site; only the other weights travel.
    dp_noise, dp_clip, dp_clipping, dp_delta
        Differential privacy of the sites' updates (off while ``dp_noise`` is 0): Gaussian noise multiplier,
        clipping norm (the initial one for adaptive clipping), ``fixed`` (server-side) or ``adaptive``
        (client-side) clipping, and the delta at which the privacy budget spent (epsilon) is reported.
    wire_precision
        ``fp32``, or ``fp16`` to send the weights as half precision both ways (half the bytes; the server
        aggregates in float32 and the sites train in float32). Not with differential privacy, whose noise and
        clipping are calibrated on the exact update.
    """

    name: str = "federation"
    # Measured (tests/bench/fl_quality.py, 3 demo sites on 2 cores): 5 rounds of 10 local epochs reach a server
    # AUROC of 0.96 (iid) and 0.95 (label skew) in about 4 minutes; a round's fixed cost (a fresh ClientApp
    # process per site) is far above a small_cnn epoch's, so few long rounds learn more per minute.
    rounds: int = 5
    local_epochs: int = 10
    min_sites: int = 2
    round_timeout: float = 600.0
    training: RunConfig = field(default_factory=lambda: federation_training())
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    server_lr: float = 0.0
    local_bn: bool = False
    dp_noise: float = 0.0
    dp_clip: float = 1.0
    dp_clipping: str = "fixed"
    dp_delta: float = 1e-5
    wire_precision: str = "fp32"
    # The Flower runs this federation continues (comma-separated ids; empty for a new one): each site finds its
    # own run of the interrupted federation by them, and continues it.
    continues: str = ""

    def __post_init__(self) -> None:
        """FedProx without a mu uses (and records) the default one."""
        if self.strategy == "fedprox" and not self.proximal_mu:
            object.__setattr__(self, "proximal_mu", DEFAULT_PROXIMAL_MU)

    def with_changes(self, **changes: Any) -> FederationConfig:
        """A copy with ``changes`` applied (not validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def private(self) -> bool:
        """Whether the sites' updates are protected with differential privacy."""
        return self.dp_noise > 0

    @property
    def local_statistics(self) -> bool:
        """Whether BatchNorm running statistics stay at the sites (see ``site_local_keys``)."""
        return self.private or self.strategy in SERVER_OPTIMIZERS

    def validate(self) -> FederationConfig:
        """Raise :class:`ConfigError` naming the first bad field."""
        checks = (
            (self.rounds >= 1, "rounds", "must be at least 1"),
            (self.local_epochs >= 1, "local epochs", "must be at least 1"),
            (self.min_sites >= 1, "min sites", "must be at least 1"),
            (self.round_timeout > 0, "round timeout", "must be a positive number of seconds"),
            (bool(self.name.strip()), "name", "must not be empty"),
            (self.strategy in STRATEGIES, "strategy", f"must be one of {', '.join(STRATEGIES)}"),
            (self.proximal_mu >= 0, "proximal mu", "must not be negative"),
            (self.server_lr >= 0, "server lr", "must not be negative"),
            (self.dp_noise >= 0, "dp noise", "must not be negative (0 turns differential privacy off)"),
            (self.dp_clip > 0, "dp clip", "must be a positive clipping norm"),
            (self.dp_clipping in DP_CLIPPING, "dp clipping", f"must be one of {', '.join(DP_CLIPPING)}"),
            (0 < self.dp_delta < 1, "dp delta", "must be between 0 and 1"),
            (self.wire_precision in WIRE_PRECISIONS, "wire precision", f"must be one of {', '.join(WIRE_PRECISIONS)}"),
        )
        for ok, name, message in checks:
            if not ok:
                raise ConfigError(f"Federation setting '{name}' {message}.")
        if self.private and self.strategy not in ("fedavg", "fedprox"):
            raise ConfigError(
                "Differential privacy (dp noise) works with the fedavg or fedprox strategy only: Flower's privacy "
                "accounting assumes a plain average of the clipped updates."
            )
        if self.private and self.wire_precision != "fp32":
            raise ConfigError(
                "Differential privacy needs --wire-precision fp32: its clipping and noise are calibrated on the "
                "exact update, which half precision would round."
            )
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
            "strategy": self.strategy,
            "proximal-mu": float(self.proximal_mu),
            "server-lr": float(self.server_lr),
            "local-bn": bool(self.local_bn),
            "dp-noise": float(self.dp_noise),
            "dp-clip": float(self.dp_clip),
            "dp-clipping": self.dp_clipping,
            "dp-delta": float(self.dp_delta),
            "wire-precision": self.wire_precision,
            "continues": self.continues,
        }

    @property
    def continued_flower_runs(self) -> list[int]:
        """The Flower run ids of :attr:`continues`."""
        return [int(part) for part in self.continues.split(",") if part.strip()]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FederationConfig:
        """Rebuild the plan a server run recorded (:meth:`to_dict`).

        Raises
        ------
        ConfigError
            If the stored plan lacks a field or has a wrong one.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"training"}
        try:
            fields = {k: v for k, v in data.items() if k in known}
            return cls(**fields, training=RunConfig.from_dict(dict(data["training"])))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"The federation's recorded plan is incomplete or invalid ({exc}).") from exc

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
                strategy=str(run_config.get("strategy", "fedavg")),
                proximal_mu=float(run_config.get("proximal-mu", 0.0)),
                server_lr=float(run_config.get("server-lr", 0.0)),
                local_bn=bool(run_config.get("local-bn", False)),
                dp_noise=float(run_config.get("dp-noise", 0.0)),
                dp_clip=float(run_config.get("dp-clip", 1.0)),
                dp_clipping=str(run_config.get("dp-clipping", "fixed")),
                dp_delta=float(run_config.get("dp-delta", 1e-5)),
                wire_precision=str(run_config.get("wire-precision", "fp32")),
                continues=str(run_config.get("continues", "")),
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
            "strategy": self.strategy,
            "proximal_mu": self.proximal_mu,
            "server_lr": self.server_lr,
            "local_bn": self.local_bn,
            "dp_noise": self.dp_noise,
            "dp_clip": self.dp_clip,
            "dp_clipping": self.dp_clipping,
            "dp_delta": self.dp_delta,
            "wire_precision": self.wire_precision,
            "training": self.training.to_dict(),
        }


def federation_training(**overrides: Any) -> RunConfig:
    """What sites train by default: the demo's settings with small_cnn.

    small_cnn has 0.1 M weights: 0.4 MB each way per site and round, where a ResNet-18 moves 45 MB.
    """
    return demo_config(**({"experiment_name": "federation", "backbone": "small_cnn"} | overrides))


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
    sites_file: str = ""  # site names by Flower node id (see core.federated.site_names)
    resume_run_id: int = 0  # the server run the next federation continues (0: a new one)

    def save(self, path: Path) -> Path:
        """Write the settings file the ServerApp reads (the database URL may hold a password: 0600)."""
        write_private_json(path, asdict(self))
        return path

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Read the file named by ``PNEUMOFL_SERVER_SETTINGS``.

        Raises
        ------
        ConfigError
            If the variable is missing (the SuperLink was not started by PneumoFL) or the file is unreadable.
        """
        return _from_env(cls, SERVER_SETTINGS_ENV, "start the SuperLink with `pneumofl server start`", "server")


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
    cache_dir: str = ""  # where the validated dataset is kept between rounds (see core.data.cache)
    # The data steward's side (see core.federated.site_consent): the policy file ("" = the safe defaults), the
    # server's CA fingerprint ("" without TLS), where plans wait for the site's decision, and unattended approval.
    policy_file: str = ""
    server_fingerprint: str = ""
    consent_dir: str = ""
    approve_within_policy: bool = False
    # The node's warm training worker (see core.federated.site_worker); "" trains inside the ClientApp.
    worker_dir: str = ""

    def write_node_config(self, path: Path) -> Path:
        """Write the ``--node-config`` TOML file for ``flower-supernode``: the site's name and nothing else.

        Flower hands the node config to every app it runs; paths, the database URL and keys stay out of it and
        reach our own ClientApp through :meth:`save`/:meth:`from_env`. A file, not ``key=value`` text: Flower
        splits that text on spaces and quotes. JSON's string escapes are valid TOML.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"site-name = {json.dumps(self.site_name)}\n", encoding="utf-8")
        return path

    def save(self, path: Path) -> Path:
        """Write the settings file the site's ClientApp reads, readable by the site's user only."""
        write_private_json(path, asdict(self))
        return path

    @classmethod
    def from_env(cls) -> SiteSettings:
        """Read the file named by ``PNEUMOFL_SITE_SETTINGS`` (set by the site node for its SuperNode).

        Raises
        ------
        ConfigError
            If the variable is missing (the SuperNode was not started by PneumoFL) or the file is unreadable.
        """
        return _from_env(cls, SITE_SETTINGS_ENV, "start the site with `pneumofl site join`", "site")

    @property
    def partitioned(self) -> bool:
        """Whether this site trains on one partition of a shared source (local federation)."""
        return self.num_partitions > 1 and self.partition_id >= 0


_Settings = TypeVar("_Settings")


def write_private_json(path: Path, value: object) -> None:
    """Write ``value`` as JSON, readable by this user only, atomically (a reader never sees half a file).

    Each writer has its own temporary file (``mkstemp`` makes it 0600): two threads writing the same file at once
    must not rename each other's half-written temporary away.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=2)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _from_env(cls: type[_Settings], variable: str, how: str, whose: str) -> _Settings:
    """``cls`` from the JSON file named by ``variable``; a missing variable or bad file is a :class:`ConfigError`."""
    path = os.environ.get(variable, "")
    if not path:
        raise ConfigError(f"{variable} is not set: {how}, which writes the {whose}'s settings.")
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the {whose} settings {path}: {exc}") from exc
    try:
        return cls(**values)
    except TypeError as exc:  # not an object, or fields this version does not know
        raise ConfigError(f"The {whose} settings {path} do not fit this PneumoFL version: {exc}") from exc


def owner_pid() -> int | None:
    """The pid of the PneumoFL process that launched this node (it owns the node's runs), if known."""
    value = os.environ.get(OWNER_PID_ENV, "")
    return int(value) if value.isdigit() else None
