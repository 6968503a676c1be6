"""Lightning callbacks that turn training into events for the sinks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics.functional.classification import binary_accuracy, binary_f1_score, binary_recall

from core.errors import DataError, RunCancelled
from core.events import BatchMetrics, EpochEnd, Event, GradientStats, LrUpdate, RunError
from core.events import EarlyStopping as EarlyStoppingEvent
from core.model.checkpoint import save_checkpoint, shared_state
from core.model.module import PneumoniaClassifier
from core.sinks import EventSink
from core.training.selection import Key, selection_key


class _Publishing(pl.Callback):
    def __init__(self, sink: EventSink, run_id: int | None) -> None:
        self.sink = sink
        self.run_id = run_id

    def publish(self, event: Event) -> None:
        self.sink.handle(event.with_run(self.run_id))


class MetricsCollector(_Publishing):
    """Emits ``epoch_end`` with train and validation metrics of the same epoch, and tracks the best epoch.

    Lightning runs validation inside the training epoch, before ``on_train_epoch_end``, so both halves
    are final here. The best epoch is the greatest :func:`core.training.selection.selection_key`: the
    monitored metric, except that an epoch giving every validation image one class loses to any that does
    not, and Youden's J breaks ties.
    """

    def __init__(self, sink: EventSink, run_id: int | None, monitor: str, mode: str) -> None:
        super().__init__(sink, run_id)
        self.monitor, self.mode = monitor, mode
        self.best_epoch: int | None = None
        self.best_key: Key | None = None
        self.best_metrics: dict[str, float] = {}
        self.epochs_completed = 0
        self.improved = False  # whether the epoch just ended became the best

    @property
    def best_value(self) -> float | None:
        """The monitored value of the best epoch."""
        return self.best_metrics.get(self.monitor) if self.best_key is not None else None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Publish the epoch's metrics."""
        assert isinstance(pl_module, PneumoniaClassifier)
        metrics = pl_module.compute_split("train") | pl_module.last_val_metrics
        epoch = trainer.current_epoch + 1
        self.epochs_completed = epoch
        key = selection_key(metrics, self.monitor, self.mode)
        self.improved = key is not None and (self.best_key is None or key > self.best_key)
        if self.improved:
            self.best_epoch, self.best_key, self.best_metrics = epoch, key, metrics
        curves = {"val_roc": pl_module.last_val_roc} if pl_module.last_val_roc else {}
        self.publish(EpochEnd(epoch=epoch, metrics=metrics, curves=curves))

    def state_dict(self) -> dict[str, Any]:
        """The best epoch so far, for a resumed run (plain values: loadable with ``weights_only``)."""
        key = list(self.best_key) if self.best_key is not None else None
        return {
            "best_epoch": self.best_epoch,
            "best_key": key,
            "best_metrics": dict(self.best_metrics),
            "epochs_completed": self.epochs_completed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue ranking epochs against the best one before the interruption."""
        self.best_epoch = state_dict["best_epoch"]
        key = state_dict["best_key"]
        self.best_key = (bool(key[0]), float(key[1]), float(key[2])) if key is not None else None
        self.best_metrics = dict(state_dict["best_metrics"])
        self.epochs_completed = int(state_dict["epochs_completed"])


class BestCheckpoint(pl.Callback):
    """Saves the weights of the best epoch (as the collector ranks it) to ``path``; place it after the collector.

    Weights only (see :mod:`core.model.checkpoint`): the optimiser's moments would triple every save, and
    only the weights are ever reused.
    """

    def __init__(
        self, collector: MetricsCollector, path: Path, on_saved: Callable[[Path], None] | None = None
    ) -> None:
        self.collector, self.path, self.on_saved = collector, path, on_saved
        self.best_model_path = ""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save when the epoch just ended is the new best."""
        if not self.collector.improved:
            return
        backbone = str(pl_module.hparams.get("backbone", ""))
        save_checkpoint(self.path, shared_state(pl_module), self.collector.best_epoch, backbone)
        self.best_model_path = str(self.path)
        if self.on_saved is not None:
            self.on_saved(self.path)

    def state_dict(self) -> dict[str, Any]:
        """Whether a best checkpoint was written (a resumed run finds it at ``path`` again)."""
        return {"saved": bool(self.best_model_path)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Point at the best checkpoint of the interrupted run, when there was one and it is there."""
        self.best_model_path = str(self.path) if state_dict.get("saved") and self.path.is_file() else ""


class BatchMetricsSampler(_Publishing):
    """Every ``every`` batches, emits loss, accuracy, recall and F1 over exactly the batches since the last sample."""

    def __init__(self, sink: EventSink, run_id: int | None, every: int, threshold: float) -> None:
        super().__init__(sink, run_id)
        self.every, self.threshold = every, threshold
        self._reset()

    def _reset(self) -> None:
        self._probs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._loss_sum: torch.Tensor | float = 0.0  # a tensor on the model's device: no sync per batch
        self._count = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Windows never span epochs."""
        self._reset()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Add the batch to the window; publish when the window is full or the epoch ends."""
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        targets = outputs["targets"]
        self._probs.append(outputs["probs"])
        self._targets.append(targets)
        self._loss_sum = self._loss_sum + outputs.get("data_loss", outputs["loss"]).detach() * targets.numel()
        self._count += targets.numel()
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if len(self._probs) >= self.every or last_batch:
            self._emit(trainer)

    def _emit(self, trainer: pl.Trainer) -> None:
        probs, targets = torch.cat(self._probs), torch.cat(self._targets).int()
        metrics = {
            "train_loss": float(self._loss_sum) / max(1, self._count),
            "train_accuracy": float(binary_accuracy(probs, targets, threshold=self.threshold)),
            "train_f1": float(binary_f1_score(probs, targets, threshold=self.threshold)),
        }
        if int(targets.sum()) > 0:  # recall is undefined for a window without positives
            metrics["train_recall"] = float(binary_recall(probs, targets, threshold=self.threshold))
        self.publish(BatchMetrics(epoch=trainer.current_epoch + 1, step=trainer.global_step, metrics=metrics))
        self._reset()


class GradientMonitor(_Publishing):
    """Every ``every`` optimiser steps, emits the global L2 gradient norm and each parameter's norm (before clipping)."""

    def __init__(self, sink: EventSink, run_id: int | None, every: int) -> None:
        super().__init__(sink, run_id)
        self.every = every

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Measure gradients of the step about to be taken."""
        step = trainer.global_step + 1
        if step % self.every and step != 1:
            return
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        if not named:
            return
        norms = torch._foreach_norm([g.detach() for _, g in named])  # one fused kernel instead of N
        stacked = torch.stack(norms).float()
        global_norm = float(torch.linalg.vector_norm(stacked))
        layer_norms = {name.removeprefix("model."): float(v) for (name, _), v in zip(named, stacked.tolist())}
        self.publish(GradientStats(step=step, global_norm=global_norm, layer_norms=layer_norms))


class LearningRateMonitor(_Publishing):
    """Emits the learning rate at the start of every epoch (the schedule steps per epoch)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Publish the current rate of the first parameter group."""
        lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.publish(LrUpdate(epoch=trainer.current_epoch + 1, step=trainer.global_step, lr=lr))


class EventEarlyStopping(_Publishing):
    """Stops training after ``patience`` epochs without a new best epoch (as the collector ranks them).

    It runs after the collector, at the end of the training epoch (after validation), so the epoch's
    ``epoch_end`` event is published before the stop, which an ``early_stopping`` event announces.
    """

    def __init__(self, sink: EventSink, run_id: int | None, collector: MetricsCollector, patience: int) -> None:
        super().__init__(sink, run_id)
        self.collector, self.patience = collector, patience

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop, and say why, when the best epoch is ``patience`` epochs old."""
        epoch = self.collector.epochs_completed
        if epoch - (self.collector.best_epoch or 0) < self.patience or epoch >= (trainer.max_epochs or 0):
            return
        trainer.should_stop = True
        monitor, best = self.collector.monitor, self.collector.best_value
        shown = "none" if best is None else f"{best:.4f} at epoch {self.collector.best_epoch}"
        reason = f"{monitor} did not improve for {self.patience} epoch(s); best {shown}. Stopped after epoch {epoch}."
        self.publish(
            EarlyStoppingEvent(
                epoch=epoch,
                monitor=monitor,
                best_value=float("nan") if best is None else best,
                patience=self.patience,
                reason=reason,
            )
        )


class CancelOnRequest(pl.Callback):
    """Stops training within one batch when ``cancel`` is set, by raising :class:`RunCancelled`."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def _check(self) -> None:
        if self.cancel.is_set():
            raise RunCancelled()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        """Check before every training batch."""
        self._check()

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int, dataloader_idx: int = 0
    ) -> None:
        """Check before every validation batch."""
        self._check()


class UnreadableImageMonitor(_Publishing):
    """Records each image that became unreadable during training, and fails the run when too much is gone.

    The dataloader drops such images from their batch (see :class:`core.data.dataset.Batch`); each one gets a
    non-fatal ``run_error`` event (recorded with the run) the first time it is skipped.

    Parameters
    ----------
    total
        Images in the run (all splits).
    max_bad_fraction
        More unreadable images than this share of ``total`` fails the run with a sentence saying so.
    """

    def __init__(self, sink: EventSink, run_id: int | None, total: int, max_bad_fraction: float) -> None:
        super().__init__(sink, run_id)
        self.total, self.max_bad_fraction = max(1, total), max_bad_fraction
        self.unreadable: dict[str, str] = {}

    def _record(self, batch: Any) -> None:
        for path, reason in getattr(batch, "skipped", None) or ():
            if path in self.unreadable:
                continue
            self.unreadable[path] = reason
            self.publish(RunError(message=f"{reason} It is skipped for this run.", source="data", fatal=False))
        if len(self.unreadable) > self.max_bad_fraction * self.total:
            raise DataError(
                f"{len(self.unreadable)} of {self.total} images became unreadable during training, more than the "
                f"allowed {self.max_bad_fraction:.0%} (max_bad_fraction); the first was {next(iter(self.unreadable))}. "
                "Check that the data folder is still there (a network share?), then start the run again."
            )

    def state_dict(self) -> dict[str, Any]:
        """The images found unreadable so far (a resumed run does not warn about them twice)."""
        return {"unreadable": dict(self.unreadable)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Carry the unreadable images over from the interrupted run."""
        self.unreadable = dict(state_dict.get("unreadable", {}))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        """Record the batch's skipped images."""
        self._record(batch)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int, dataloader_idx: int = 0
    ) -> None:
        """Record the batch's skipped images."""
        self._record(batch)
