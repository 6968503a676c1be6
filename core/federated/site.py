"""A site's part of a round, free of Flower: validate the local data, train from the global weights, record it.

The ClientApp (:mod:`core.federated.client_app`) only converts Flower records to and from what this returns.
Everything here runs with the same training code, callbacks and sinks as a centralized run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.config import RunConfig
from core.data import PreparedDataset
from core.data.partitions import partition_samples
from core.data.splits import stratified_split
from core.events import (
    BatchMetrics,
    EpochEnd,
    Event,
    GradientStats,
    LrUpdate,
    RunError,
    TrainingEnd,
    TrainingStart,
)
from core.federated.settings import FederationConfig, SiteSettings, owner_pid
from core.federated.site_cache import prepare_data_cached
from core.persistence import Database, DatabaseSink
from core.persistence.repository import create_run, find_federated_run
from core.sinks import EventSink, SinkSet
from core.training.runner import run_training

log = logging.getLogger(__name__)


@dataclass
class SiteRoundResult:
    """What a site sends back: weights, its train-set size, and aggregate metrics (numbers only)."""

    weights: dict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: int | None = None


class RoundSink(EventSink):
    """Places one round's local training inside the site's whole run.

    Epochs and steps restart at 1 and 0 in every round's trainer; they are shifted so rows of different rounds
    never collide, and every event carries the round number. The per-round ``training_start``/``training_end``
    are held back: the site's run spans the federation, not one round.
    """

    def __init__(self, inner: EventSink, round_number: int, epoch_offset: int, step_offset: int) -> None:
        self.inner = inner
        self.round_number = round_number
        self.epoch_offset, self.step_offset = epoch_offset, step_offset
        self.last_epoch_metrics: dict[str, float] = {}

    def handle(self, event: Event) -> None:
        """Shift, stamp and pass on."""
        if isinstance(event, (TrainingStart, TrainingEnd)):
            return
        changes: dict[str, Any] = {"round_number": self.round_number}
        if isinstance(event, EpochEnd):
            changes["epoch"] = event.epoch + self.epoch_offset
            self.last_epoch_metrics = dict(event.metrics)
        elif isinstance(event, (BatchMetrics, LrUpdate)):
            changes |= {"epoch": event.epoch + self.epoch_offset, "step": event.step + self.step_offset}
        elif isinstance(event, GradientStats):
            changes["step"] = event.step + self.step_offset
        elif hasattr(event, "epoch"):
            changes["epoch"] = event.epoch + self.epoch_offset
        self.inner.handle(dataclasses.replace(event, **changes))


def site_training_config(plan: FederationConfig, site: SiteSettings) -> RunConfig:
    """The shared training settings with this site's data, local epochs and no early stopping."""
    return plan.training.with_overrides(
        experiment_name=f"{plan.name} · {site.site_name}",
        demo=False,
        data_path=site.data_path,
        epochs=plan.local_epochs,
        early_stopping_patience=0,
        max_threads=site.max_threads or plan.training.max_threads,
    )


def prepare_site_data(config: RunConfig, site: SiteSettings) -> PreparedDataset:
    """Validate the site's data; a local-federation site keeps its partition of the source's train split.

    Raises
    ------
    core.errors.DataError
        With every problem that blocks training, naming the file or folder.
    """
    data = prepare_data_cached(config, Path(site.cache_dir) if site.cache_dir else None)
    if not site.partitioned:
        return data
    shards = partition_samples(data.train, site.num_partitions, site.partition, seed=config.seed)
    share = shards[site.partition_id]
    train, val, _ = stratified_split(share, config.val_fraction, 0.0, config.seed)
    return dataclasses.replace(data, train=train, val=val, test=[])


def train_site_round(
    plan: FederationConfig,
    site: SiteSettings,
    federation_run_id: str,
    server_round: int,
    global_weights: Mapping[str, torch.Tensor],
    *,
    sinks: tuple[EventSink, ...] = (),
) -> SiteRoundResult:
    """Train one round at this site and record it in the site's database.

    Parameters
    ----------
    plan
        The federation's shared plan.
    site
        This site's own settings.
    federation_run_id
        Flower's run id: all rounds of one federation land in one site run.
    server_round
        The round (1-based).
    global_weights
        The global model's state dict.
    sinks
        Further listeners (the local hub).

    Raises
    ------
    core.errors.PneumoFLError
        For data or configuration problems (logged at the site; the message never leaves it).
    RuntimeError
        If local training failed.
    """
    config = site_training_config(plan, site).validate()
    data = prepare_site_data(config, site)
    db = Database.open(site.db_url, migrate=False)  # the node migrated it before starting
    try:
        run_id, created = _site_run(db, plan, site, config, federation_run_id, data.summary.source)
        fanout = SinkSet([DatabaseSink(db, run_id), *sinks])
        fanout.run_id = run_id
        if created:
            fanout.handle(
                TrainingStart(
                    run_id=run_id,
                    experiment_name=config.experiment_name,
                    training_mode="federated",
                    role="client",
                    total_epochs=plan.rounds * plan.local_epochs,
                    steps_per_epoch=math.ceil(len(data.train) / config.batch_size),
                    config=config.to_dict(),
                )
            )
        steps_per_round = plan.local_epochs * math.ceil(len(data.train) / config.batch_size)
        round_sink = RoundSink(
            fanout, server_round, (server_round - 1) * plan.local_epochs, (server_round - 1) * steps_per_round
        )
        try:
            result = run_training(
                config,
                data,
                round_sink,
                run_id=run_id,
                initial_weights=global_weights,
                keep_last_weights=True,
                final_evaluation=server_round >= plan.rounds,
            )
            if result.status != "completed" or result.weights is None:
                # Not the run's end: the site may take part in later rounds.
                fanout.handle(
                    RunError(run_id=run_id, round_number=server_round, message=f"Round {server_round}: {result.error}")
                )
                raise RuntimeError(f"local training {result.status}: {result.error or 'no weights'}")
            if server_round >= plan.rounds:
                fanout.handle(
                    TrainingEnd(
                        run_id=run_id,
                        status="completed",
                        round_number=server_round,
                        best_epoch=server_round * plan.local_epochs,
                        best_val_recall=(result.final_stats.get("val") or {}).get("recall"),
                        best_metrics={f"val_{k}": v for k, v in (result.final_stats.get("val") or {}).items()},
                        duration=result.duration,
                        final_stats=result.final_stats,
                    )
                )
        finally:
            fanout.close()
        return SiteRoundResult(
            weights=result.weights,
            num_examples=len(data.train),
            metrics=_reply_metrics(round_sink.last_epoch_metrics),
            run_id=run_id,
        )
    finally:
        db.close()


def _site_run(
    db: Database, plan: FederationConfig, site: SiteSettings, config: RunConfig, federation_run_id: str, source: str
) -> tuple[int, bool]:
    with db.begin() as session:
        existing = find_federated_run(session, federation_run_id, "client", config.experiment_name)
        if existing is not None:
            return existing, False
        run_id = create_run(
            session,
            experiment_name=config.experiment_name,
            training_mode="federated",
            role="client",
            config=config.to_dict() | {"federation": plan.to_dict(), "site_name": site.site_name},
            source_path=source,
            federation_run_id=federation_run_id,
            server_address=site.server_address or None,
            owner_pid=owner_pid(),
        )
        return run_id, True


def _reply_metrics(epoch_metrics: Mapping[str, float]) -> dict[str, float]:
    """Aggregate numbers only: the last epoch's training loss and local validation statistics."""
    return {
        name: float(value)
        for name, value in epoch_metrics.items()
        if (name == "train_loss" or name.startswith("val_")) and math.isfinite(float(value))
    }
