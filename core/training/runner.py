"""The run function: (config, data, sinks, cancel flag) -> result. Desktop and CLI only wrap this."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from core.config import RunConfig
from core.data import PreparedDataset, XrayDataset
from core.data.dataset import collate
from core.data.fingerprint import data_fingerprint
from core.errors import PneumoFLError, RunCancelled
from core.events import RunError, TrainingEnd, TrainingStart
from core.jsonsafe import json_safe
from core.model.checkpoint import LOCAL_STATE_PREFIXES, shared_state, weights_sha256
from core.model.module import PneumoniaClassifier
from core.reporting import ModelRecord, RunReport, SampleCounts
from core.reporting.evaluate import evaluate_report
from core.sinks import EventSink
from core.training.callbacks import (
    BatchMetricsSampler,
    BestCheckpoint,
    CancelOnRequest,
    EventEarlyStopping,
    GradientMonitor,
    LearningRateMonitor,
    MetricsCollector,
    UnreadableImageMonitor,
)
from core.training.evaluation import predict_logits
from core.training.resume import TrainingState, data_manifest

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished (or stopped, or failed) run leaves behind."""

    run_id: int | None
    status: str
    best_epoch: int | None = None
    best_val_recall: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)  # the best epoch's metrics
    duration: float = 0.0
    fit_seconds: float = 0.0  # Trainer.fit alone (no data preparation or final evaluation)
    epochs_completed: int = 0
    report: RunReport = field(default_factory=RunReport)  # the chosen weights evaluated (empty: not evaluated)
    data_fingerprint: dict[str, Any] = field(default_factory=dict)  # what it was trained on (core.data.fingerprint)
    checkpoint_path: str | None = None
    error: str | None = None
    weights: dict[str, torch.Tensor] | None = None  # the last epoch's weights, when asked for (federated rounds)

    @property
    def final_stats(self) -> dict[str, Any]:
        """The report as the stored document (see :class:`core.reporting.RunReport`), with the data fingerprint."""
        fingerprint = {"data_fingerprint": self.data_fingerprint} if self.data_fingerprint else {}
        return self.report.to_dict() | fingerprint


@dataclass
class Loaders:
    """The dataloaders of one run."""

    train: DataLoader
    val: DataLoader
    test: DataLoader | None
    generator: torch.Generator  # the training split's shuffle order (a resumed run restores it)


def build_loaders(config: RunConfig, data: PreparedDataset) -> Loaders:
    """Build seeded dataloaders for the prepared splits."""
    generator = torch.Generator().manual_seed(config.seed)
    common: dict[str, Any] = {"batch_size": config.batch_size, "num_workers": config.num_workers, "collate_fn": collate}
    if config.num_workers:
        common["persistent_workers"] = True

    def dataset(samples: list, train: bool) -> XrayDataset:
        return XrayDataset(samples, config.image_size, train=train, cache=config.cache_images)

    return Loaders(
        # A last batch of one sample breaks BatchNorm in training: drop it (it is reshuffled next epoch).
        train=DataLoader(
            dataset(data.train, True),
            shuffle=True,
            generator=generator,
            drop_last=len(data.train) % config.batch_size == 1,
            **common,
        ),
        val=DataLoader(dataset(data.val, False), shuffle=False, **common),
        test=DataLoader(dataset(data.test, False), shuffle=False, **common) if data.test else None,
        generator=generator,
    )


def positive_weight(data: PreparedDataset) -> float | None:
    """``negatives / positives`` of the training split, the BCE ``pos_weight`` that balances the classes."""
    positives = sum(s.label for s in data.train)
    negatives = len(data.train) - positives
    return negatives / positives if positives and negatives else None


def load_shared_weights(
    model: PneumoniaClassifier, weights: Mapping[str, torch.Tensor], allow_missing: Iterable[str] = ()
) -> None:
    """Load weights from :func:`~core.model.checkpoint.shared_state`; anything else missing or unexpected is an error.

    ``allow_missing`` names tensors the sender keeps to itself (site-local normalisation layers).
    """
    missing, unexpected = model.load_state_dict(dict(weights), strict=False)
    allowed = set(allow_missing)
    missing = [k for k in missing if not k.startswith(LOCAL_STATE_PREFIXES) and k not in allowed]
    if missing or unexpected:
        raise PneumoFLError(
            f"The received weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "every node must use the same backbone."
        )


def run_training(
    config: RunConfig,
    data: PreparedDataset,
    sink: EventSink,
    *,
    run_id: int | None = None,
    cancel: threading.Event | None = None,
    work_dir: str | Path | None = None,
    progress_bar: bool = False,
    initial_weights: Mapping[str, torch.Tensor] | None = None,
    keep_last_weights: bool = False,
    final_evaluation: bool = True,
    proximal_mu: float = 0.0,
    allow_missing: Iterable[str] = (),
    keep: Callable[[str, Path], None] | None = None,
    resume_from: Path | None = None,
) -> RunResult:
    """Train one model and publish every step of it as events to ``sink``.

    Parameters
    ----------
    config
        A validated run configuration.
    data
        The prepared splits (see :func:`core.data.prepare_dataset`).
    sink
        Receives every event; its failures never stop training.
    run_id
        Stamped on every event (the database run id, when recording).
    cancel
        Set it from any thread to stop within one batch; the run ends ``cancelled``.
    work_dir
        Where the best checkpoint is kept (a temporary folder when omitted).
    progress_bar
        Show Lightning's console progress bar (epoch, batch, loss, ETA).
    initial_weights
        Start from this state dict (a federated round starts from the global model).
    keep_last_weights
        Evaluate and return the last epoch's weights instead of the best checkpoint's (what a federated
        client sends back: FedAvg averages where each site ended, not where it peaked).
    final_evaluation
        Compute the run's ``report`` after fitting (a federated site skips it in all but the last round: the
        epoch-end validation already has the numbers it reports).
    proximal_mu
        FedProx's proximal term, anchored at ``initial_weights``.
    allow_missing
        Tensors ``initial_weights`` may lack (they keep the model's own initial values).
    keep
        Called with ``("best", path)`` for each new best checkpoint and ``("last", path)`` for the training
        state after every epoch (then the last weights): a recorded run keeps them in its database. Without it
        no training state is written.
    resume_from
        A training state (see :mod:`core.training.resume`) to continue from, checked by the caller.

    Returns
    -------
    RunResult
        Never raises for training failures: they end the run ``failed`` with the error text.
    """
    cancel = cancel or threading.Event()
    started = time.monotonic()
    collector = MetricsCollector(sink, run_id, config.monitor, config.monitor_mode)
    checkpoint: BestCheckpoint | None = None
    result = RunResult(run_id=run_id, status="failed")
    with _work_dir(work_dir) as folder, _threads(config.max_threads), _quiet_lightning():
        try:
            pl.seed_everything(config.seed, workers=True, verbose=False)
            loaders = build_loaders(config, data)
            model = PneumoniaClassifier(
                backbone=config.backbone,
                weights_path=config.weights_path or None,
                learning_rate=config.learning_rate,
                weight_decay=config.weight_decay,
                epochs=config.epochs,
                loss=config.loss,
                focal_gamma=config.focal_gamma,
                pos_weight=positive_weight(data) if config.class_weighting else None,
                threshold=config.threshold,
                proximal_mu=proximal_mu,
            )
            if initial_weights is not None:
                load_shared_weights(model, initial_weights, allow_missing)
                model.anchor_proximal_term()
            callbacks: list[pl.Callback] = [
                CancelOnRequest(cancel),
                LearningRateMonitor(sink, run_id),
                BatchMetricsSampler(sink, run_id, config.batch_metrics_every, config.threshold),
                GradientMonitor(sink, run_id, config.gradient_every),
                UnreadableImageMonitor(
                    sink, run_id, len(data.train) + len(data.val) + len(data.test), config.max_bad_fraction
                ),
                collector,
            ]
            if not keep_last_weights:
                kept_best = (lambda path: keep("best", path)) if keep else None
                checkpoint = BestCheckpoint(collector, Path(folder) / "best.ckpt", kept_best)
                callbacks.append(checkpoint)
            if keep is not None:
                manifest = data_manifest(config, data)
                state = TrainingState(
                    Path(folder) / "last.ckpt",
                    loaders.generator,
                    manifest,
                    json_safe(config.to_dict()),
                    lambda path: keep("last", path),
                )
                callbacks.insert(0, state)  # first: its state is saved before the epoch's first event
            if config.early_stopping_patience:
                callbacks.append(EventEarlyStopping(sink, run_id, collector, config.early_stopping_patience))
            trainer = pl.Trainer(
                max_epochs=config.epochs,
                accelerator=config.accelerator,
                devices=1,
                logger=False,
                callbacks=callbacks,
                gradient_clip_val=config.gradient_clip or None,
                num_sanity_val_steps=0,
                enable_progress_bar=progress_bar,
                enable_model_summary=False,
                default_root_dir=folder,
                # BestCheckpoint keeps the best weights; Lightning's would save weights and optimiser every epoch.
                enable_checkpointing=False,
            )
            sink.handle(
                TrainingStart(
                    run_id=run_id,
                    experiment_name=config.experiment_name,
                    total_epochs=config.epochs,
                    steps_per_epoch=len(loaders.train),
                    config=config.to_dict(),
                )
            )
            fit_started = time.monotonic()
            try:
                trainer.fit(model, loaders.train, loaders.val, ckpt_path=resume_from, weights_only=True)
            finally:
                result.fit_seconds = time.monotonic() - fit_started
            result.status = "completed"
            if keep_last_weights:
                result.weights = shared_state(model)
            if final_evaluation:
                train = SampleCounts(total=len(data.train), positive=sum(s.label for s in data.train))
                kept = checkpoint.best_model_path if checkpoint and work_dir is not None else ""
                result.report = _best_checkpoint_report(model, checkpoint, loaders, config, cancel, train, kept)
                result.data_fingerprint = data_fingerprint([sample.path for sample in data.train], seed=config.seed)
        except RunCancelled:
            result.status = "cancelled"
        except Exception as exc:
            result.status = "cancelled" if cancel.is_set() else "failed"
            result.error = str(exc) if isinstance(exc, PneumoFLError) else f"{type(exc).__name__}: {exc}"
            if result.status == "failed":
                log.exception("training run %s failed", run_id)
                sink.handle(
                    RunError(
                        run_id=run_id,
                        message=f"Training failed: {result.error}",
                        fatal=True,
                        details=traceback.format_exc(),
                    )
                )
        result.duration = time.monotonic() - started
        result.best_epoch = collector.best_epoch
        result.best_val_recall = collector.best_metrics.get("val_recall")
        result.best_metrics = {k: v for k, v in collector.best_metrics.items() if k.startswith("val_")}
        result.epochs_completed = collector.epochs_completed
        if checkpoint is not None and checkpoint.best_model_path:
            result.checkpoint_path = checkpoint.best_model_path if work_dir is not None else None
        sink.handle(
            TrainingEnd(
                run_id=run_id,
                status=result.status,
                best_epoch=result.best_epoch,
                best_val_recall=result.best_val_recall,
                best_metrics=result.best_metrics,
                duration=result.duration,
                final_stats=result.final_stats,
                error=result.error,
            )
        )
    return result


def model_record(model: PneumoniaClassifier, config: RunConfig, checkpoint: str) -> ModelRecord:
    """What ``predict`` and ``model export`` need to find and check the evaluated weights (``""``: not kept)."""
    return ModelRecord(
        backbone=config.backbone,
        image_size=config.image_size,
        weights_sha256=weights_sha256(shared_state(model)),
        checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
    )


def _best_checkpoint_report(
    model: PneumoniaClassifier,
    checkpoint: BestCheckpoint | None,
    loaders: Loaders,
    config: RunConfig,
    cancel: threading.Event,
    train: SampleCounts,
    kept: str,
) -> RunReport:
    """Reload the best checkpoint's weights (if any) and evaluate them on validation and test."""
    if checkpoint is not None and checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"], strict=False)
    device = next(model.parameters()).device
    logits = {"val": predict_logits(model, loaders.val, device)}
    if loaders.test is not None and not cancel.is_set():
        logits["test"] = predict_logits(model, loaders.test, device)
    return evaluate_report(
        logits,
        config.threshold,
        temperature_scaling=config.temperature_scaling,
        model=model_record(model, config, kept),
        samples={"train": train},
    )


@contextlib.contextmanager
def _work_dir(work_dir: str | Path | None) -> Iterator[str]:
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        yield str(work_dir)
        return
    with tempfile.TemporaryDirectory(prefix="pneumofl-run-") as folder:
        yield folder


@contextlib.contextmanager
def _threads(max_threads: int) -> Iterator[None]:
    """Cap torch's intra-op threads for this run (it is process-wide, so restore it after)."""
    previous = torch.get_num_threads()
    if max_threads:
        torch.set_num_threads(max_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's hints that are noise for our users (worker counts, GPU availability)."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
        warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
