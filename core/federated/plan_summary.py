"""What a federation plan asks of this site, in numbers and sentences.

The consent screen and the terminal prompt show it, and the site's policy is checked against it
(:mod:`core.federated.policy_check`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass

from core.federated.policy import SitePolicy, format_fingerprint, normalize_fingerprint
from core.federated.settings import UNIFORM_KEY, WEIGHT_KEY, FederationConfig

# What a site's training reply carries (core.federated.site._reply_metrics and client_app.train): the last epoch's
# training loss and local validation statistics (core.model.module.make_metrics, flattened, plus the loss).
TRAIN_METRICS = ("train_loss",)
VAL_METRICS = tuple(
    f"val_{name}"
    for name in (
        "loss", "accuracy", "precision", "recall", "specificity", "f1", "auroc", "cm_tp", "cm_fp", "cm_tn", "cm_fn",
    )
)  # fmt: skip
# Cross-site evaluation (core.federated.site.evaluate_global_model): the received model on this site's images.
GLOBAL_METRICS = ("global_val_auroc", "global_val_sensitivity", "global_val_specificity", "global_val_loss")
# Flower's client-side adaptive clipping mod reports whether the site's update was clipped.
NORM_BIT = "norm_bit"


@dataclass(frozen=True)
class PlanSummary:
    """One federation plan from one server, as this site sees it.

    ``server_fingerprint`` is the SHA-256 of the server's CA certificate (64 lower-case hex digits), or None for
    a server without TLS; ``epsilon`` is what the plan will have spent when all its rounds are done (None without
    differential privacy); ``parameters_sent``/``bytes_sent`` are the weights this site sends each round.
    """

    server_name: str
    server_fingerprint: str | None
    insecure_loopback: bool
    federation: str
    backbone: str
    image_size: int
    strategy: str
    rounds: int
    local_epochs: int
    min_sites: int
    local_bn: bool
    dp_noise: float
    dp_clip: float
    dp_clipping: str
    dp_delta: float
    epsilon: float | None
    parameters_sent: int
    bytes_sent: int
    metrics_sent: tuple[str, ...]
    local_dp_noise: float
    local_clip_norm: float
    plan_hash: str
    wire_precision: str = "fp32"
    data_fingerprint_sent: bool = False

    @property
    def private(self) -> bool:
        """Whether the plan uses differential privacy."""
        return self.dp_noise > 0

    @property
    def server_key(self) -> str:
        """The server's key in the ledger: its CA fingerprint, or its address when it has none."""
        return server_key(self.server_fingerprint or self.server_name)

    @property
    def federation_key(self) -> str:
        """The federation's key in the ledger: its server and its name."""
        return federation_key(self.server_fingerprint or self.server_name, self.federation)

    def lines(self) -> list[str]:
        """Sentences for a terminal prompt or a consent dialog, one per line."""
        if self.server_fingerprint:
            server = f"Server {self.server_name}, whose CA certificate has SHA-256 fingerprint "
            server += format_fingerprint(self.server_fingerprint) + "."
        elif self.insecure_loopback:
            server = f"Server {self.server_name} on this machine, without TLS (a one-machine trial)."
        else:
            server = f"Server {self.server_name}, without TLS: nothing proves who runs it."
        lines = [
            server,
            f"Federation '{self.federation}': {self.rounds} rounds of {self.local_epochs} local epochs, "
            f"at least {self.min_sites} sites per round.",
            f"Model {self.backbone} on {self.image_size}x{self.image_size} pixel images, combined with {self.strategy}"
            + (" (normalisation layers stay at each site)." if self.local_bn else "."),
        ]
        if self.private:
            where = "on the server" if self.dp_clipping == "fixed" else "adaptively, at each site"
            lines.append(
                f"Differential privacy: noise multiplier {self.dp_noise:g}, clipping norm {self.dp_clip:g} "
                f"({where}), delta {self.dp_delta:g}; by the last round the server will have spent "
                f"epsilon {_epsilon_text(self.epsilon)}."
            )
        else:
            lines.append("No differential privacy: the server sees this site's update without added noise.")
        lines.append(
            f"Each round this site sends {self.parameters_sent:,} weights ({self.bytes_sent / 1e6:.1f} MB as "
            f"{'float16' if self.wire_precision == 'fp16' else 'float32'}) "
            f"with this site's name and the numbers {', '.join(self.metrics_sent)}."
        )
        if not any(name in self.metrics_sent for name in GLOBAL_METRICS):
            lines.append("How the received model does on this site's images (global_val_*) stays at this site.")
        if self.data_fingerprint_sent:
            lines.append(
                "With each reply: counts of this site's training images by modality, view, body part, manufacturer "
                "and age band, their size bounds and a histogram of mean intensities (no file, no patient)."
            )
        else:
            lines.append("The counts describing this site's training images (its data fingerprint) stay at this site.")
        if self.local_dp_noise > 0 or self.local_clip_norm > 0:
            lines.append(
                f"This site clips its update to norm {self.local_clip_norm:g} and adds noise of its own "
                f"(multiplier {self.local_dp_noise:g}) before sending it."
            )
        lines.append(f"Plan hash (SHA-256): {self.plan_hash}")
        return lines


def summarize_plan(
    plan: FederationConfig,
    *,
    server_name: str,
    server_fingerprint: str | None,
    insecure_loopback: bool,
    policy: SitePolicy,
) -> PlanSummary:
    """Summarise what ``plan`` asks of this site.

    Parameters
    ----------
    plan
        The federation plan the server sent.
    server_name
        The server's address or name, as the site reached it.
    server_fingerprint
        SHA-256 of the CA certificate the site verified the server with (any case, colons allowed); None
        without TLS.
    insecure_loopback
        Whether the server is on this machine and reached without TLS (the caller knows how it connected).
    policy
        This site's policy: whether ``global_val_*`` leave the site, and the privacy it adds itself.

    Raises
    ------
    core.errors.ConfigError
        If the plan itself is invalid (the message names its field).
    """
    plan.validate()
    fingerprint = normalize_fingerprint(server_fingerprint) if server_fingerprint else None
    count = parameters_sent(plan)
    return PlanSummary(
        server_name=server_name,
        server_fingerprint=fingerprint,
        insecure_loopback=insecure_loopback,
        federation=plan.name,
        backbone=plan.training.backbone,
        image_size=plan.training.image_size,
        strategy=plan.strategy,
        rounds=plan.rounds,
        local_epochs=plan.local_epochs,
        min_sites=plan.min_sites,
        local_bn=plan.local_bn,
        dp_noise=plan.dp_noise,
        dp_clip=plan.dp_clip,
        dp_clipping=plan.dp_clipping,
        dp_delta=plan.dp_delta,
        epsilon=plan_epsilon(plan),
        parameters_sent=count,
        bytes_sent=(2 if plan.wire_precision == "fp16" else 4) * count,
        metrics_sent=metrics_sent(plan, send_site_metrics=policy.send_site_metrics),
        local_dp_noise=policy.local_dp_noise,
        local_clip_norm=policy.local_clip_norm,
        plan_hash=plan_hash(plan, fingerprint),
        wire_precision=plan.wire_precision,
        data_fingerprint_sent=policy.send_data_fingerprint,
    )


def plan_epsilon(plan: FederationConfig, releases: int | None = None) -> float | None:
    """Epsilon at the plan's delta after ``releases`` rounds (all of them by default); None without DP.

    Flower's RDP accountant configured as :func:`core.federated.strategies.build_aggregation` configures it: one
    Gaussian release per round of exactly ``min_sites`` sites, without sampling amplification.
    """
    if not plan.private:
        return None
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    sites = plan.min_sites
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=plan.dp_delta,
            population_size=sites,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    count = plan.rounds if releases is None else releases
    if count > 0:
        accountant.compose(GaussianPrivacyEvent(plan.dp_noise, sites, sites), count=count)
    epsilon = float(accountant.get_privacy_spent().epsilon)
    return epsilon if math.isfinite(epsilon) else math.inf


def metrics_sent(plan: FederationConfig, *, send_site_metrics: bool) -> tuple[str, ...]:
    """Names of the numbers a site's training reply carries under ``plan``."""
    names = [WEIGHT_KEY, *TRAIN_METRICS, *VAL_METRICS]
    if send_site_metrics:
        names += GLOBAL_METRICS
    names += ["train_seconds", "worker_rss_mb", "worker_start_seconds"]  # the last in a worker's first round
    if plan.private:
        names.append(UNIFORM_KEY)
        if plan.dp_clipping == "adaptive":
            names.append(NORM_BIT)
    return tuple(names)


def parameters_sent(plan: FederationConfig) -> int:
    """Numbers in the weights a site sends each round: the model's tensors less the ones that stay at the site."""
    return _shared_numel(plan.training.backbone, plan.local_bn, plan.local_statistics)


def plan_hash(plan: FederationConfig, server_fingerprint: str | None) -> str:
    """SHA-256 (hex) of a canonical JSON of the plan and the server's CA fingerprint: which plan was agreed to."""
    fingerprint = normalize_fingerprint(server_fingerprint) if server_fingerprint else None
    canonical = json.dumps(
        {"plan": plan.to_dict(), "server_fingerprint": fingerprint}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def server_key(server_fingerprint_or_address: str) -> str:
    """A server's ledger key: ``sha256:<fingerprint>`` for a CA fingerprint, else ``address:<address>``."""
    try:
        return "sha256:" + normalize_fingerprint(server_fingerprint_or_address)
    except ValueError:
        return "address:" + server_fingerprint_or_address.strip().lower()


def federation_key(server_fingerprint_or_address: str, federation_name: str) -> str:
    """A federation's ledger key: its server's key and its name (rounds count per federation over all runs)."""
    return f"{server_key(server_fingerprint_or_address)}|{federation_name.strip()}"


@functools.cache
def _shared_numel(backbone: str, local_bn: bool, local_statistics: bool) -> int:
    # Build the model from scratch (nothing is downloaded) and count what core.federated.site sends.
    from core.federated.local_layers import site_local_keys
    from core.model.backbones import build_backbone

    model = build_backbone(backbone)
    local = site_local_keys(model, local_bn=local_bn, statistics=local_statistics)
    return sum(t.numel() for name, t in model.state_dict().items() if name not in local)


def _epsilon_text(epsilon: float | None) -> str:
    if epsilon is None:
        return "nothing"
    return "without bound (infinite)" if math.isinf(epsilon) else f"{epsilon:.3g}"
