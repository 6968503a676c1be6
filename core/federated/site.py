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

import platformdirs
import torch

from core.config import RunConfig
from core.data import PreparedDataset
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
from core.federated.local_layers import LocalLayerStore, site_local_keys, split_state
from core.federated.settings import FederationConfig, SiteSettings, owner_pid
from core.federated.site_data import prepare_site_data, site_training_config
from core.model.checkpoint import run_folder, save_checkpoint
from core.model.module import PneumoniaClassifier
from core.persistence import Database, DatabaseSink
from core.persistence.artifacts import keep_file
from core.persistence.federation_records import find_federated_run
from core.persistence.identity import database_identity
from core.persistence.resumes import continue_site_run
from core.persistence.runs import create_run
from core.sinks import EventSink, SinkSet
from core.training.runner import RunResult, run_training

log = logging.getLogger(__name__)


@dataclass
class SiteRoundResult:
    """What a site sends back: weights (without its local tensors), its train-set size, aggregate metrics."""

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


@dataclass
class RoundInput:
    """What the server sent a site for one round."""

    server_round: int
    weights: Mapping[str, torch.Tensor]
    proximal_mu: float = 0.0


def train_site_round(
    plan: FederationConfig,
    site: SiteSettings,
    flower_run_id: int,
    received: RoundInput,
    *,
    sinks: tuple[EventSink, ...] = (),
    data: PreparedDataset | None = None,
) -> SiteRoundResult:
    """Evaluate the received global model, train one round from it and record both in the site's database.

    Parameters
    ----------
    plan
        The federation's shared plan.
    site
        This site's own settings.
    flower_run_id
        Flower's run id: all rounds of one federation land in one site run.
    received
        The round number, the global weights (without site-local tensors) and FedProx's mu.
    sinks
        Further listeners (the local hub).
    data
        The site's prepared dataset when the caller keeps it (the warm worker); prepared here otherwise.

    Raises
    ------
    core.errors.PneumoFLError
        For data or configuration problems (logged at the site; the message never leaves it).
    RuntimeError
        If local training failed.
    """
    server_round = received.server_round
    config = site_training_config(plan, site).validate()
    data = data if data is not None else prepare_site_data(config, site)
    model = PneumoniaClassifier(backbone=config.backbone, threshold=config.threshold)
    local = site_local_keys(model, local_bn=plan.local_bn, statistics=plan.local_statistics)
    store = LocalLayerStore(site_state_dir(site), flower_run_id)
    start = {**received.weights, **store.load()}  # the site's own layers over the global weights
    # Cross-site evaluation: how the global model does on this site's validation images, before it trains.
    global_metrics = evaluate_global_model(model, config, data, start, local)
    db = Database.open(site.db_url, migrate=False)  # the node migrated it before starting
    try:
        run_id, created = _site_run(db, plan, site, config, flower_run_id, data.summary.source, server_round)
        with db.begin() as session:
            folder = run_folder(run_id, database_identity(session))
        fanout = SinkSet([DatabaseSink(db, run_id), *sinks])
        fanout.run_id = run_id
        if created:
            fanout.handle(
                TrainingStart(
                    run_id=run_id,
                    experiment_name=config.experiment_name,
                    training_mode="federated",
                    role="site",
                    total_epochs=plan.rounds * plan.local_epochs,
                    steps_per_epoch=math.ceil(len(data.train) / config.batch_size),
                    config=config.to_dict(),
                )
            )
        steps_per_round = plan.local_epochs * math.ceil(len(data.train) / config.batch_size)
        round_sink = RoundSink(
            fanout, server_round, (server_round - 1) * plan.local_epochs, (server_round - 1) * steps_per_round
        )
        last = server_round >= plan.rounds
        try:
            result = run_training(
                config,
                data,
                round_sink,
                run_id=run_id,
                initial_weights=start,
                keep_last_weights=True,
                final_evaluation=last,
                proximal_mu=received.proximal_mu,
                allow_missing=local,
            )
            if result.status != "completed" or result.weights is None:
                # Not the run's end: the site may take part in later rounds.
                fanout.handle(
                    RunError(run_id=run_id, round_number=server_round, message=f"Round {server_round}: {result.error}")
                )
                raise RuntimeError(f"local training {result.status}: {result.error or 'no weights'}")
            shared, own = split_state(result.weights, local)
            if own:
                store.save(own)
            if last:
                _finish_site_run(fanout, run_id, plan, server_round, result, folder)
        finally:
            fanout.close()
        if last:  # the site's model (with its own layers), kept with its run
            keep_file(db, run_id, "best", folder / "best.ckpt")
        return SiteRoundResult(
            weights=shared,
            num_examples=len(data.train),
            metrics=_reply_metrics(round_sink.last_epoch_metrics)
            | global_metrics
            | {"train_seconds": result.fit_seconds},
            run_id=run_id,
        )
    finally:
        db.close()


def _finish_site_run(
    fanout: EventSink, run_id: int, plan: FederationConfig, server_round: int, result: RunResult, folder: Path
) -> None:
    """End the site's run after the last round; keep its model (with its own layers) so it can read images."""
    report = result.report
    if report.model is not None and result.weights is not None:
        path = folder / "best.ckpt"
        save_checkpoint(path, result.weights, server_round * plan.local_epochs, plan.training.backbone)
        report = dataclasses.replace(report, model=dataclasses.replace(report.model, checkpoint=str(path.resolve())))
    val = report.metrics("val")
    fanout.handle(
        TrainingEnd(
            run_id=run_id,
            status="completed",
            round_number=server_round,
            best_epoch=server_round * plan.local_epochs,
            best_val_recall=val.get("recall"),
            best_metrics={f"val_{k}": v for k, v in val.values.items()},
            duration=result.duration,
            final_stats=report.to_dict(),
        )
    )


def site_state_dir(site: SiteSettings) -> Path:
    """Where a site keeps what lasts between rounds (its own layers): next to its dataset cache."""
    if site.cache_dir:
        return Path(site.cache_dir).parent / "site-state"
    return Path(platformdirs.user_data_dir("pneumofl")) / "federation" / f"site-state-{site.site_name}"


def evaluate_global_model(
    model: torch.nn.Module,
    config: RunConfig,
    data: PreparedDataset,
    weights: Mapping[str, torch.Tensor],
    allowed_missing: set[str],
) -> dict[str, float]:
    """``global_val_*``: AUROC, sensitivity, specificity and loss of ``weights`` on the site's validation split."""
    if not data.val:
        return {}
    from torch.utils.data import DataLoader

    from core.data import XrayDataset
    from core.data.dataset import collate
    from core.training.evaluation import metrics_at, predict_logits
    from core.training.runner import load_shared_weights

    load_shared_weights(model, weights, allowed_missing)
    loader = DataLoader(
        XrayDataset(data.val, config.image_size, train=False), batch_size=config.batch_size, collate_fn=collate
    )
    logits, targets = predict_logits(model, loader)
    if not len(targets):
        return {}
    probs = torch.sigmoid(logits)
    values = metrics_at(probs, targets, config.threshold)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float())
    out = {
        "global_val_sensitivity": values.get("recall"),
        "global_val_specificity": values.get("specificity"),
        "global_val_loss": float(loss),
    }
    if len(set(targets.tolist())) > 1:
        out["global_val_auroc"] = values.get("auroc")
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _site_run(
    db: Database,
    plan: FederationConfig,
    site: SiteSettings,
    config: RunConfig,
    flower_run_id: int,
    source: str,
    server_round: int,
) -> tuple[int, bool]:
    with db.begin() as session:
        existing = find_federated_run(session, flower_run_id, "site", config.experiment_name)
        if existing is not None:
            return existing, False
        for earlier in plan.continued_flower_runs:  # a federation its server continued: so does this site's run
            continued = find_federated_run(session, earlier, "site", config.experiment_name)
            if continued is not None:
                continue_site_run(session, continued, flower_run_id, server_round)
                return continued, False
        run_id = create_run(
            session,
            experiment_name=config.experiment_name,
            training_mode="federated",
            role="site",
            config=config.to_dict() | {"federation": plan.to_dict(), "site_name": site.site_name},
            source_path=source,
            flower_run_id=flower_run_id,
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
