"""Flower's aggregation strategies, configured for PneumoFL, and Flower's differential-privacy wrappers around them.

Every strategy here is Flower's own (``flwr.serverapp.strategy``); recording is added around whichever one is
chosen by :class:`core.federated.recorder.RecordingStrategy`, not by subclassing it. Defaults that Flower leaves
to the user (server learning rates, the trimmed fraction) were chosen by measurement on the demo federation
(``tests/bench/fl_quality.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)

from core.federated.settings import UNIFORM_KEY, WEIGHT_KEY, FederationConfig

# Server learning rates by strategy, measured on the demo federation (Flower's FedAdam default of 0.1 moves
# every weight by about 0.1 per round, which wrecks a small CNN; BatchNorm variances then go negative).
SERVER_LR = {"fedavgm": 1.0, "fedadam": 0.01, "fedyogi": 0.01}
SERVER_MOMENTUM = 0.9
TRIMMED_FRACTION = 0.2


@dataclass
class Aggregation:
    """The strategy the server runs and, under differential privacy, Flower's accountant of what it released.

    Flower's fixed-clipping wrapper composes each release into the accountant itself; its adaptive wrapper has
    no accountant, so :meth:`released` composes the same Gaussian event for it.
    """

    strategy: Strategy
    weight_key: str
    sites_per_round: int
    accountant: Any = None
    noise_multiplier: float = 0.0
    wrapper_accounts: bool = False

    @property
    def private(self) -> bool:
        """Whether the sites' updates are protected with differential privacy."""
        return self.accountant is not None

    def released(self) -> None:
        """Note one aggregated (noised) model released to the sites."""
        if self.accountant is None or self.wrapper_accounts:
            return
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        self.accountant.compose(GaussianPrivacyEvent(self.noise_multiplier, self.sites_per_round, self.sites_per_round))

    def privacy_spent(self) -> dict[str, float] | None:
        """Epsilon at the plan's delta so far, from Flower's accountant (None without differential privacy)."""
        if self.accountant is None:
            return None
        spent = self.accountant.get_privacy_spent()
        epsilon = float(spent.epsilon)
        return {
            "dp_epsilon": epsilon if math.isfinite(epsilon) else float("inf"),
            "dp_delta": float(spent.delta),
            "dp_releases": float(spent.num_releases),
        }


def build_aggregation(
    plan: FederationConfig, metrics_fn: Callable[[list[RecordDict], str], MetricRecord]
) -> Aggregation:
    """Flower's strategy for ``plan`` (wrapped in Flower's differential-privacy wrapper when asked for).

    Parameters
    ----------
    plan
        The federation's plan: strategy, its settings, differential privacy.
    metrics_fn
        Aggregates the sites' metrics (``train_metrics_aggr_fn``).
    """
    private = plan.private
    # With differential privacy exactly `min_sites` sites are sampled per round (the accountant needs a fixed
    # sample); otherwise every online site takes part.
    common: dict[str, Any] = {
        "fraction_train": 1e-9 if private else 1.0,
        "fraction_evaluate": 0.0,  # sites evaluate in their training reply; the server evaluates centrally
        "min_train_nodes": plan.min_sites,
        "min_available_nodes": plan.min_sites,
        "weighted_by_key": UNIFORM_KEY if private else WEIGHT_KEY,
        "train_metrics_aggr_fn": metrics_fn,
    }
    server_lr = plan.server_lr or SERVER_LR.get(plan.strategy, 1.0)
    name = plan.strategy
    inner: Strategy
    if name == "fedavg":
        inner = FedAvg(**common)
    elif name == "fedprox":
        inner = FedProx(**common, proximal_mu=plan.proximal_mu)
    elif name == "fedavgm":
        inner = FedAvgM(**common, server_learning_rate=server_lr, server_momentum=SERVER_MOMENTUM)
    elif name == "fedadam":
        inner = FedAdam(**common, eta=server_lr, eta_l=server_lr)
    elif name == "fedyogi":
        inner = FedYogi(**common, eta=server_lr, eta_l=server_lr)
    elif name == "fedmedian":
        inner = FedMedian(**common)
    elif name == "fedtrimmedavg":
        inner = FedTrimmedAvg(**common, beta=TRIMMED_FRACTION)
    elif name == "krum":
        inner = Krum(**common, num_malicious_nodes=0)
    else:  # FederationConfig.validate() names the choices
        raise ValueError(f"unknown strategy {name!r}")
    aggregation = Aggregation(inner, common["weighted_by_key"], plan.min_sites)
    if private:
        _add_privacy(aggregation, plan)
    return aggregation


def _add_privacy(aggregation: Aggregation, plan: FederationConfig) -> None:
    """Wrap the strategy in Flower's DP wrapper and keep Flower's RDP accountant for the report."""
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    sites = aggregation.sites_per_round
    config = PrivacyConfig(
        target_delta=plan.dp_delta,
        population_size=sites,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )
    aggregation.accountant = RdpAccountant(config)
    aggregation.noise_multiplier = plan.dp_noise
    accountant = aggregation.accountant
    if plan.dp_clipping == "fixed":
        aggregation.wrapper_accounts = True
        aggregation.strategy = DifferentialPrivacyServerSideFixedClipping(
            aggregation.strategy, plan.dp_noise, plan.dp_clip, sites, accountant=accountant
        )
    else:
        # Flower's adaptive wrapper splits the noise between the update and the clipped-site count; with a
        # handful of sites its default count noise (sites / 20) is too small for any useful multiplier, so the
        # count gets as much noise as the update. The whole release is then as private as a Gaussian mechanism
        # with the requested multiplier (Andrew et al. 2021), which is what the accountant composes.
        aggregation.strategy = DifferentialPrivacyClientSideAdaptiveClipping(
            aggregation.strategy,
            plan.dp_noise,
            sites,
            initial_clipping_norm=plan.dp_clip,
            clipped_count_stddev=max(sites / 20, plan.dp_noise),
        )
